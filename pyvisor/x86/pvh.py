"""The Xen PVH direct boot ABI, as used by Linux (and QEMU/Firecracker/cloud-hypervisor).

An ELF kernel carrying XEN_ELFNOTE_PHYS32_ENTRY is entered at that address in 32-bit
protected mode with paging off (xen/docs/misc/pvh.pandoc), with EBX = the guest-physical
address of ``struct hvm_start_info`` (xen/include/public/arch-x86/hvm/start_info.h), which
carries the command line, the modules (the initrd) and the memory map in place of the
Linux zero page.

The start info, its module list and its memory map live in one page of the boot area,
START_INFO_ADDR (0x6000: between the TSS ending at 0x668 and the zero page at 0x7000, see
boot_layout.py), laid out as

    0x6000  struct hvm_start_info          (56 bytes)
    0x6040  struct hvm_modlist_entry[]     (32 bytes each; one for the initrd)
    0x6080  struct hvm_memmap_table_entry[] (24 bytes each; up to MEMMAP_MAX_ENTRIES)
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from ..errors import ConfigError
from ..kvm.vcpu import Vcpu
from ..memory.guest_memory import GuestMemory
from .boot_layout import START_INFO_ADDR, START_INFO_END
from .gdt import CODE32_SELECTOR
from .registers import CR0_ET, CR0_PE
from .vcpu_setup import enter_boot_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .bootparams import E820Like

MODLIST_ADDR = START_INFO_ADDR + 0x40
MEMMAP_ADDR = START_INFO_ADDR + 0x80

HVM_START_MAGIC = 0x336EC578  # "xEn3" with the 0x80 bit of the "E" set
HVM_START_VERSION = 1         # version 1 adds memmap_paddr / memmap_entries

# struct hvm_start_info: magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr,
# rsdp_paddr, memmap_paddr, memmap_entries, reserved
START_INFO = struct.Struct("<IIIIQQQQII")
# struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved
MODLIST_ENTRY = struct.Struct("<QQQQ")
# struct hvm_memmap_table_entry: addr, size, type (e820 types), reserved
MEMMAP_ENTRY = struct.Struct("<QQII")

MAX_MODULES = (MEMMAP_ADDR - MODLIST_ADDR) // MODLIST_ENTRY.size
MEMMAP_MAX_ENTRIES = (START_INFO_END - MEMMAP_ADDR) // MEMMAP_ENTRY.size


def build_start_info(mem: GuestMemory, e820: Iterable[E820Like], cmdline_gpa: int,
                     initrd: tuple[int, int] | None, rsdp_gpa: int = 0) -> int:
    """Write hvm_start_info, the module list (the initrd, if any) and the memory map (from
    the e820 map) at START_INFO_ADDR; return that address, for EBX.

    ``cmdline_gpa`` is the NUL-terminated command line (0 for none); ``rsdp_gpa`` the ACPI
    RSDP (0: none, the kernel then scans the BIOS area itself).
    """
    entries = list(e820)
    if len(entries) > MEMMAP_MAX_ENTRIES:
        raise ConfigError(f"the e820 map has {len(entries)} entries; the PVH start info "
                          f"holds at most {MEMMAP_MAX_ENTRIES}")
    modules = [initrd] if initrd is not None else []
    modlist = b"".join(MODLIST_ENTRY.pack(gpa, size, 0, 0) for gpa, size in modules)
    memmap = b"".join(MEMMAP_ENTRY.pack(e.addr, e.size, e.type, 0) for e in entries)
    header = START_INFO.pack(
        HVM_START_MAGIC, HVM_START_VERSION, 0, len(modules),
        MODLIST_ADDR if modules else 0, cmdline_gpa, rsdp_gpa,
        MEMMAP_ADDR, len(entries), 0)
    mem.fill(START_INFO_ADDR, START_INFO_END - START_INFO_ADDR)
    mem.write(START_INFO_ADDR, header)
    mem.write(MODLIST_ADDR, modlist)
    mem.write(MEMMAP_ADDR, memmap)
    return START_INFO_ADDR


def enter_protected_mode(vcpu: Vcpu, gdt_base: int, gdt_limit: int, entry: int,
                         ebx: int, eax: int = 0) -> None:
    """The PVH entry state: 32-bit protected mode, paging off, flat segments. Multiboot 1
    and 2 ask for the very same state, with EAX their magic (``eax``).

    CS = 0x08 (flat 32-bit code), DS = ES = FS = GS = SS = 0x18 (flat data), TR = 0x20 from
    the boot GDT; CR0 = PE | ET, CR4 = 0, EFER = 0, RFLAGS = 0x2 (IF, TF, VM clear), EBX =
    the start info. The ABI asks for a TR with base 0 and limit 0x67; ours has limit 0x67
    and the boot TSS's base, matching the descriptor in the GDT (the kernel loads its own
    TR before any task switch could use it). ESP is the boot stack, though the kernel must
    set its own.
    """
    enter_boot_state(vcpu, CODE32_SELECTOR, gdt_base, gdt_limit, cr0=CR0_PE | CR0_ET,
                     cr3=0, cr4=0, efer=0, entry=entry, rbx=ebx, rax=eax)
