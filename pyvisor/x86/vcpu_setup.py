"""Put a vCPU into the state the 64-bit boot protocol promises a kernel: long mode with
paging, flat segments from the boot GDT, RSI at the zero page; plus its CPUID, boot MSRs
and LAPIC wiring. Only the bootstrap processor gets the entry
state: application processors stay in the in-kernel LAPIC's wait-for-SIPI state."""
from __future__ import annotations

from collections.abc import Collection, Sequence

from ..kvm.vcpu import Vcpu
from .boot_layout import BOOT_STACK_TOP, ZERO_PAGE_ADDR
from .cpuid import CpuidEntry, shape_cpuid
from .gdt import (BOOT_GDT, CODE64_SELECTOR, DATA_SELECTOR, TSS_SELECTOR,
                  Segment, segment_from_descriptor)
from .msrs import boot_msrs
from .registers import (CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA,
                        EFER_LME, EFER_SCE)


# LAPIC register offsets and delivery modes for LINT0/LINT1 (Intel SDM vol. 3, 11.5.1).
_APIC_LVT_LINT0 = 0x350
_APIC_LVT_LINT1 = 0x360
_APIC_MODE_NMI = 0x4
_APIC_MODE_EXTINT = 0x7


def _load_segment(dst, seg: Segment) -> None:
    dst.base, dst.limit, dst.selector = seg.base, seg.limit, seg.selector
    dst.type, dst.present, dst.dpl = seg.type, seg.present, seg.dpl
    dst.db, dst.s, dst.l, dst.g, dst.avl = seg.db, seg.s, seg.l, seg.g, seg.avl
    dst.unusable = 0 if seg.present else 1


def boot_segment(selector: int) -> Segment:
    return segment_from_descriptor(selector, BOOT_GDT[selector >> 3])


def enter_boot_state(vcpu: Vcpu, code_selector: int, gdt_base: int, gdt_limit: int, *,
                     cr0: int, cr3: int, cr4: int, efer: int, entry: int,
                     **gprs: int) -> None:
    """Flat segments from the boot GDT, the given control registers, RIP at entry, the boot
    stack, the given general registers, and the power-on FPU state: what every boot
    protocol's entry has in common."""
    sregs = vcpu.get_sregs()
    _load_segment(sregs.cs, boot_segment(code_selector))
    data = boot_segment(DATA_SELECTOR)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _load_segment(seg, data)
    _load_segment(sregs.tr, boot_segment(TSS_SELECTOR))
    sregs.gdt.base, sregs.gdt.limit = gdt_base, gdt_limit
    sregs.idt.base, sregs.idt.limit = 0, 0
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = cr0, cr3, cr4, efer
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    regs.rflags = 0x2
    regs.rip = entry
    regs.rsp = regs.rbp = BOOT_STACK_TOP
    for name, value in gprs.items():
        setattr(regs, name, value)
    vcpu.set_regs(regs)

    fpu = vcpu.get_fpu()
    fpu.fcw = 0x37F  # the power-on x87 control word
    fpu.mxcsr = 0x1F80  # all SSE exceptions masked
    vcpu.set_fpu(fpu)


def enter_long_mode(vcpu: Vcpu, cr3: int, gdt_base: int, gdt_limit: int, entry: int,
                    zero_page: int = ZERO_PAGE_ADDR) -> None:
    """The Linux 64-bit boot protocol entry state (Documentation/arch/x86/boot.rst)."""
    enter_boot_state(vcpu, CODE64_SELECTOR, gdt_base, gdt_limit,
                     cr0=CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG, cr3=cr3,
                     cr4=CR4_PAE, efer=EFER_LME | EFER_LMA | EFER_SCE, entry=entry,
                     rsi=zero_page)


def configure_cpu(vcpu: Vcpu, supported_cpuid: Sequence[CpuidEntry], cpu_count: int,
                  supported_msrs: Collection[int]) -> None:
    """CPUID (with this vCPU's APIC ID and the topology) and the boot MSRs; every vCPU."""
    vcpu.set_cpuid(shape_cpuid(supported_cpuid, vcpu.index, cpu_count))
    vcpu.set_msrs(boot_msrs(supported_msrs))


def configure_lapic(vcpu: Vcpu) -> None:
    """Wire LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as firmware does on a PC."""
    state = bytearray(vcpu.get_lapic())

    def set_mode(offset: int, mode: int) -> None:
        value = int.from_bytes(state[offset:offset + 4], "little")
        value = (value & ~0x700) | (mode << 8)
        state[offset:offset + 4] = value.to_bytes(4, "little")

    set_mode(_APIC_LVT_LINT0, _APIC_MODE_EXTINT)
    set_mode(_APIC_LVT_LINT1, _APIC_MODE_NMI)
    vcpu.set_lapic(bytes(state))

