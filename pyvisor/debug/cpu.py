"""`Cpu`: one vCPU as a script sees it (`machine.vcpus[i]`): registers, MSRs, memory
through the guest's page tables, disassembly, single steps.

State can be read and changed only while the vCPU is out of KVM_RUN: the machine is
created, paused or stopped, or the caller is a hook running on this vCPU's own thread
(KVM's vCPU ioctls would otherwise wait for the guest to exit, which may be never).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from .._native import ffi
from ..errors import GuestMemoryError, PyvisorError
from ..kvm.vcpu import Vcpu
from ..memory.guest_memory import GuestMemory
from ..x86.registers import EFER_LMA

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..machine.outcome import Outcome
    from ..machine.report import Instruction

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
TABLES = ("gdt", "idt")
_PAGE = 0x1000


class _StructView:
    """Attribute access to one snapshot of a KVM register struct; assignments write the
    whole struct back at once (write-through), so `cpu.regs.rax = 5` is one get + one set."""

    _fields: tuple[str, ...] = ()

    def __init__(self, struct: Any, store: Callable[[Any], None]) -> None:
        object.__setattr__(self, "_struct", struct)
        object.__setattr__(self, "_store", store)

    def __getattr__(self, name: str) -> Any:
        if name in self._fields:
            return getattr(self._struct, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._fields:
            raise AttributeError(f"no register {name!r}")
        setattr(self._struct, name, value)
        self._store(self._struct)

    def update(self, **values: Any) -> None:
        """Set several registers and write the struct back once, for changes KVM refuses
        one field at a time (leaving long mode changes CR0, CR4 and EFER together)."""
        for name, value in values.items():
            if name not in self._fields:
                raise AttributeError(f"no register {name!r}")
            setattr(self._struct, name, value)
        self._store(self._struct)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={v:#x}' for n, v in self._ints())})"

    def _ints(self):
        return ((n, v) for n, v in self.as_dict().items() if isinstance(v, int))


class Regs(_StructView):
    """General registers, RIP and RFLAGS (struct kvm_regs)."""
    _fields = GPRS


class Sregs(_StructView):
    """Control registers, EFER and APIC base as ints; segments (`cs` … `ldt`: selector,
    base, limit, type, present, dpl, db, s, l, g, avl) and descriptor tables (`gdt`, `idt`:
    base, limit) as the kvm_segment / kvm_dtable structs. Change a segment field and
    assign the segment back: `s = cpu.sregs; s.cs.base = 0; cpu.sregs.cs = s.cs` or
    `cpu.set_sregs(s)`."""
    _fields = CONTROL + SEGMENTS + TABLES

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SEGMENTS + TABLES:
            if ffi.typeof(value) is not ffi.typeof(getattr(self._struct, name)):
                raise TypeError(f"sregs.{name} takes a {ffi.typeof(getattr(self._struct, name)).cname}")
            ffi.memmove(ffi.addressof(self._struct, name), ffi.addressof(value), ffi.sizeof(value))
            self._store(self._struct)
            return
        super().__setattr__(name, value)

    def _ints(self):
        return ((n, getattr(self, n)) for n in CONTROL)


class Msrs:
    """`cpu.msrs[index]` reads one MSR (KeyError if KVM does not know it) and
    `cpu.msrs[index] = value` writes it."""

    def __init__(self, cpu: "Cpu") -> None:
        self._cpu = cpu

    def __getitem__(self, index: int) -> int:
        values = self._cpu._vcpu_checked().get_msrs([index])
        if index not in values:
            raise KeyError(f"MSR {index:#x} is not readable on this vCPU")
        return values[index]

    def __setitem__(self, index: int, value: int) -> None:
        self._cpu._vcpu_checked().set_msrs({index: value})

    def get(self, index: int, default: int | None = None) -> int | None:
        try:
            return self[index]
        except KeyError:
            return default


class Cpu:
    """A vCPU of a running (or paused, or built) machine."""

    def __init__(self, vcpu: Vcpu, memory: GuestMemory, accessible: Callable[[int], bool],
                 stepper: Callable[[int, int, float | None], "Outcome | None"]) -> None:
        self._vcpu = vcpu
        self._memory = memory
        self._accessible = accessible
        self._stepper = stepper
        self.index = vcpu.index
        self.msrs = Msrs(self)

    def __repr__(self) -> str:
        return f"<Cpu {self.index}>"

    def _vcpu_checked(self) -> Vcpu:
        if not self._accessible(self.index):
            raise PyvisorError(f"vCPU {self.index} is running: pause the machine first")
        return self._vcpu

    # --- registers ----------------------------------------------------------------------
    @property
    def regs(self) -> Regs:
        vcpu = self._vcpu_checked()
        return Regs(vcpu.get_regs(), self._set_regs)

    @regs.setter
    def regs(self, value: Regs) -> None:
        self._set_regs(value._struct)

    def _set_regs(self, struct: Any) -> None:
        self._vcpu_checked().set_regs(struct)

    @property
    def sregs(self) -> Sregs:
        vcpu = self._vcpu_checked()
        return Sregs(vcpu.get_sregs(), self._set_sregs)

    def set_sregs(self, value: Sregs) -> None:
        self._set_sregs(value._struct)

    def _set_sregs(self, struct: Any) -> None:
        self._vcpu_checked().set_sregs(struct)

    @property
    def mp_state(self) -> int:
        """KVM's multiprocessing state (lib.KVM_MP_STATE_*): runnable, halted, or waiting
        for INIT or SIPI."""
        return self._vcpu_checked().get_mp_state()

    @mp_state.setter
    def mp_state(self, value: int) -> None:
        self._vcpu_checked().set_mp_state(value)

    @property
    def fpu(self) -> Any:
        """struct kvm_fpu (x87 registers, XMM0-15, MXCSR); hand it back with set_fpu."""
        return self._vcpu_checked().get_fpu()

    def set_fpu(self, fpu: Any) -> None:
        self._vcpu_checked().set_fpu(fpu)

    @property
    def mode(self) -> int:
        """16, 32 or 64: the code size of the current CS."""
        from ..machine.report import code_bits   # the report modules: on first use
        return code_bits(self._vcpu_checked().get_sregs())

    # --- guest-virtual memory -----------------------------------------------------------
    def translate(self, vaddr: int) -> int | None:
        """The guest-physical address vaddr maps to through the guest's page tables, or None."""
        from ..x86.pagewalk import translate
        s = self._vcpu_checked().get_sregs()
        return translate(self._memory.read_u64, vaddr, s.cr0, s.cr3, s.cr4, s.efer)

    def _pages(self, vaddr: int, size: int) -> Iterator[tuple[int, int, int]]:
        """(guest-physical address, offset into the request, length) per page touched."""
        from ..x86.pagewalk import translate
        s = self._vcpu_checked().get_sregs()
        done = 0
        while done < size:
            va = vaddr + done
            chunk = min(size - done, _PAGE - (va & (_PAGE - 1)))
            gpa = translate(self._memory.read_u64, va, s.cr0, s.cr3, s.cr4, s.efer)
            if gpa is None or not self._memory.contains(gpa, chunk):
                raise GuestMemoryError(f"guest-virtual {va:#x} is not mapped to guest RAM")
            yield gpa, done, chunk
            done += chunk

    def read_virt(self, vaddr: int, size: int) -> bytes:
        return b"".join(self._memory.read(gpa, n) for gpa, _, n in self._pages(vaddr, size))

    def write_virt(self, vaddr: int, data: bytes) -> None:
        data = bytes(data)
        for gpa, offset, n in list(self._pages(vaddr, len(data))):
            self._memory.write(gpa, data[offset:offset + n])

    def disassemble(self, addr: int | None = None, count: int = 10) -> list[Instruction]:
        """capstone's view of count instructions at addr (default RIP), in the CPU's mode."""
        vcpu = self._vcpu_checked()
        sregs = vcpu.get_sregs()
        if addr is None:
            addr = vcpu.get_regs().rip
            if not (sregs.efer & EFER_LMA and sregs.cs.l):
                addr = (sregs.cs.base + addr) & 0xFFFFFFFF
        code, want = b"", count * 15      # an x86 instruction is at most 15 bytes
        while len(code) < want:
            va = addr + len(code)
            try:
                code += self.read_virt(va, min(want - len(code), _PAGE - (va & (_PAGE - 1))))
            except GuestMemoryError:
                if not code:
                    raise
                break
        from ..machine.report import code_bits, disassemble
        return disassemble(code, addr, code_bits(sregs), count)

    # --- execution ----------------------------------------------------------------------
    def step(self, count: int = 1, timeout: float | None = None) -> "Outcome | None":
        """Execute exactly count instructions on this vCPU (the others stay paused);
        returns an Outcome if the guest stopped on the way. A step that cannot finish (a
        halted vCPU with interrupts off) raises StepAborted after timeout seconds."""
        self._vcpu_checked()
        if count < 1:
            raise ValueError("step count must be at least 1")
        return self._stepper(self.index, count, timeout)

    def trace(self, count: int) -> Iterator[tuple[int, Instruction]]:
        """Step count instructions, yielding (rip, instruction) before each one runs."""
        from ..machine.report import Instruction
        for _ in range(count):
            rip = self._vcpu_checked().get_regs().rip
            insns = self.disassemble(count=1)
            yield rip, (insns[0] if insns else Instruction(rip, b"", "(undecodable)"))
            if self.step() is not None:
                return
