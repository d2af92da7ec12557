"""Fault reports: what a guest was doing when it stopped in a way it should not have.

A report is built from the vCPU's registers and the guest bytes at RIP (translated through
the guest's own page tables) and disassembled with capstone, so a triple fault or an
emulation failure reads like a debugger stop, not like a hang."""
from __future__ import annotations

from .._native import lib
from ..errors import GuestMemoryError
from ..kvm.backend import Backend
from ..kvm.vcpu import Vcpu
from ..memory.guest_memory import GuestMemory
from ..x86.pagewalk import translate
from ..value import Value
from ..x86.registers import EFER_LMA

_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_CODE_BYTES = 48
_INSTRUCTIONS = 8

INTERNAL_ERROR_NAMES = {
    lib.KVM_INTERNAL_ERROR_EMULATION: "instruction emulation failed",
    lib.KVM_INTERNAL_ERROR_SIMUL_EX: "exception while delivering an exception",
    lib.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failed",
    lib.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected exit reason",
}


class Instruction(Value):
    __slots__ = ("address", "raw", "text")

    def __init__(self, address: int, raw: bytes, text: str) -> None:
        self.address, self.raw, self.text = address, raw, text


class FaultReport(Value):
    """Why the guest stopped, with enough CPU state to start debugging. build_report fills
    it in as it reads the vCPU: regs, control, segments and code may stay empty."""

    __slots__ = ("reason", "vcpu", "detail", "regs", "control", "segments", "code_address",
                 "code", "code_error", "note")

    def __init__(self, reason: str, vcpu: int, detail: str = "",
                 regs: dict[str, int] | None = None, control: dict[str, int] | None = None,
                 segments: dict[str, tuple[int, int, int]] | None = None,
                 code_address: int | None = None, code: list[Instruction] | None = None,
                 code_error: str = "", note: str = "") -> None:
        self.reason, self.vcpu, self.detail = reason, vcpu, detail
        self.regs = {} if regs is None else regs
        self.control = {} if control is None else control
        self.segments = {} if segments is None else segments
        self.code_address, self.code = code_address, [] if code is None else code
        self.code_error, self.note = code_error, note

    def format(self) -> str:
        lines = [f"pyvisor: guest stopped: {self.reason} on vCPU {self.vcpu}"]
        if self.detail:
            lines.append(f"  {self.detail}")
        names = list(self.regs)
        for i in range(0, len(names), 4):
            lines.append("  " + "  ".join(f"{n.upper():>6}={self.regs[n]:016x}"
                                          for n in names[i:i + 4]))
        if self.control:
            lines.append("  " + "  ".join(f"{n.upper()}={v:x}" for n, v in self.control.items()))
        if self.segments:
            lines.append("  " + "  ".join(f"{n.upper()}={sel:04x}(base {base:x})"
                                          for n, (sel, base, _) in self.segments.items()))
        if self.code:
            lines.append(f"  code at RIP (guest-physical {self.code_address:#x}):")
            for i, ins in enumerate(self.code):
                marker = "=>" if i == 0 else "  "
                lines.append(f"  {marker} {ins.address:016x}  {ins.raw.hex():<20} {ins.text}")
        elif self.code_error:
            lines.append(f"  code at RIP: {self.code_error}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def code_bits(sregs) -> int:
    """Code size for the current CS: 64-bit (CS.L in long mode), 32-bit (CS.D) or 16-bit."""
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return 64
    return 32 if sregs.cs.db else 16


def disassemble(code: bytes, address: int, bits: int = 64, count: int = _INSTRUCTIONS
                ) -> list[Instruction]:
    """Disassemble up to count instructions (Intel syntax) of guest code. capstone is
    imported here, on the rare fault path, because importing it costs more than the rest
    of pyvisor's start-up."""
    import capstone

    mode = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32, 16: capstone.CS_MODE_16}[bits]
    md = capstone.Cs(capstone.CS_ARCH_X86, mode)
    out = []
    for ins in md.disasm(code, address):
        out.append(Instruction(ins.address, bytes(ins.bytes), f"{ins.mnemonic} {ins.op_str}".strip()))
        if len(out) == count:
            break
    return out


def read_guest_code(mem: GuestMemory, sregs, rip: int, size: int = _CODE_BYTES
                    ) -> tuple[int, bytes]:
    """Guest-physical address of RIP and up to `size` bytes from there (stops at a page
    boundary, since the next page may map elsewhere)."""
    linear = rip if sregs.efer & EFER_LMA and sregs.cs.l else (sregs.cs.base + rip) & 0xFFFFFFFF
    gpa = translate(mem.read_u64, linear, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
    if gpa is None:
        raise GuestMemoryError(f"RIP {rip:#x} is not mapped by the guest's page tables")
    size = min(size, 0x1000 - (gpa & 0xFFF))
    while size and not mem.contains(gpa, size):
        size -= 1
    if not size:
        raise GuestMemoryError(f"RIP {rip:#x} (guest-physical {gpa:#x}) is outside guest RAM")
    return gpa, mem.read(gpa, size)


def build_report(vcpu: Vcpu, mem: GuestMemory, reason: str, detail: str = "",
                 backend: Backend | None = None) -> FaultReport:
    report = FaultReport(reason=reason, vcpu=vcpu.index, detail=detail)
    try:
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    except Exception as e:  # the vCPU may be unusable after a failed entry
        report.code_error = f"registers unavailable: {e}"
        return report
    report.regs = {n: getattr(regs, n) for n in _GPRS}
    report.control = {"cr0": sregs.cr0, "cr2": sregs.cr2, "cr3": sregs.cr3,
                      "cr4": sregs.cr4, "efer": sregs.efer}
    report.segments = {n: (getattr(sregs, n).selector, getattr(sregs, n).base,
                           getattr(sregs, n).limit) for n in ("cs", "ds", "ss")}
    bits = code_bits(sregs)
    try:
        gpa, code = read_guest_code(mem, sregs, regs.rip)
        report.code_address = gpa
        report.code = disassemble(code, regs.rip, bits)
        if not report.code:
            report.code_error = f"bytes {code[:16].hex()} do not decode as {bits}-bit code"
    except GuestMemoryError as e:
        report.code_error = str(e)
    if backend is not None and backend.name == "pvm" and "emulation" in reason:
        report.note = backend.explanation
    return report
