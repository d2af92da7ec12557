"""Everything the bootstrap processor finds in memory at its first instruction: the kernel
and initrd, the command line, the ACPI tables, the boot GDT and page tables, and the boot
protocol's own structure (the Linux zero page or the PVH start info); then the entry state.

The protocols differ only in that structure and in the CPU mode at entry:

- "linux64": long mode with the identity map, RSI = the zero page (boot.rst, 64-bit);
- "pvh": 32-bit protected mode with paging off, EBX = hvm_start_info;
- "multiboot": the same 32-bit state, EAX = the Multiboot magic, EBX = the boot
  information, whose command line starts with the kernel's file name (as QEMU's).
"""
from __future__ import annotations

from collections.abc import Sequence

from ..acpi import build_acpi
from ..kvm.vcpu import Vcpu
from ..loader.bzimage import fill_zero_page
from ..loader.kernel import BootImage, load_kernel
from ..memory.guest_memory import GuestMemory
from ..memory.layout import MemoryLayout
from ..value import Value
from ..x86.boot_layout import CMDLINE_ADDR, ZERO_PAGE_ADDR
from ..x86.bootparams import ZeroPage
from ..x86.cpuid import CpuidEntry, cpuid_has_1g_pages
from ..x86.gdt import write_gdt
from ..x86.paging import build_identity_map
from ..x86.vcpu_setup import enter_long_mode
from .config import MachineConfig
from .virtio_devices import mmio_placements


class BootPlan(Value):
    """What prepare_boot wrote, and what enter_kernel needs to start the BSP. boot_info:
    the zero page, the hvm_start_info or the Multiboot information."""

    __slots__ = ("image", "rsdp", "gdt_base", "gdt_limit", "cr3", "boot_info")

    def __init__(self, image: BootImage, rsdp: int, gdt_base: int, gdt_limit: int, cr3: int,
                 boot_info: int) -> None:
        self.image, self.rsdp, self.gdt_base, self.gdt_limit = image, rsdp, gdt_base, gdt_limit
        self.cr3, self.boot_info = cr3, boot_info


def prepare_boot(cfg: MachineConfig, memory: GuestMemory, layout: MemoryLayout,
                 supported_cpuid: Sequence[CpuidEntry]) -> BootPlan:
    """Load the kernel and write every boot structure into guest memory."""
    mmio = mmio_placements(cfg)
    params = " ".join(f"virtio_mmio.device={length:#x}@{base:#x}:{gsi}"
                      for base, length, gsi in mmio)
    text = " ".join(filter(None, (cfg.cmdline, params)))
    cmdline = text.encode() + b"\0"
    image = load_kernel(cfg.kernel, memory, cmdline=cmdline, initrd=cfg.initrd,
                        boot_protocol=cfg.boot_protocol)
    memory.write(CMDLINE_ADDR, cmdline)
    rsdp = build_acpi(memory, cfg.cpus, virtio_mmio=mmio, hpet=cfg.hpet)
    gdt_base, gdt_limit = write_gdt(memory)
    cr3 = build_identity_map(memory, layout.top, cpuid_has_1g_pages(supported_cpuid))
    if image.protocol == "pvh":
        from ..x86.pvh import build_start_info

        boot_info = build_start_info(memory, layout.e820(), CMDLINE_ADDR, image.initrd, rsdp)
    elif image.multiboot is not None:
        from ..loader.multiboot import kernel_cmdline, write_boot_info
        from ..loader.multiboot2 import RSDP_V2_SIZE

        boot_info = write_boot_info(memory, image.multiboot, kernel_cmdline(cfg.kernel, text),
                                    layout.e820(), memory.read(rsdp, RSDP_V2_SIZE))
    else:
        zero_page = ZeroPage()
        if image.bzimage is not None:
            fill_zero_page(zero_page, image.bzimage, CMDLINE_ADDR, len(cmdline), image.initrd)
        else:
            zero_page.set_cmdline(CMDLINE_ADDR, len(cmdline))
            if image.initrd is not None:
                zero_page.set_initrd(*image.initrd)
        zero_page.set_e820(layout.e820())
        zero_page.set_acpi_rsdp(rsdp)
        memory.write(ZERO_PAGE_ADDR, zero_page.to_bytes())
        boot_info = ZERO_PAGE_ADDR
    return BootPlan(image, rsdp, gdt_base, gdt_limit, cr3, boot_info)


def enter_kernel(bsp: Vcpu, plan: BootPlan) -> None:
    """Put the bootstrap processor in the protocol's entry state."""
    if plan.image.protocol == "pvh":
        from ..x86.pvh import enter_protected_mode

        enter_protected_mode(bsp, plan.gdt_base, plan.gdt_limit, plan.image.entry,
                             plan.boot_info)
    elif plan.image.multiboot is not None:
        from ..x86.pvh import enter_protected_mode

        enter_protected_mode(bsp, plan.gdt_base, plan.gdt_limit, plan.image.entry,
                             plan.boot_info, eax=plan.image.multiboot.magic)
    else:
        enter_long_mode(bsp, plan.cr3, plan.gdt_base, plan.gdt_limit, plan.image.entry,
                        plan.boot_info)
