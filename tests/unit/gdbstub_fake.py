"""A fake of the scripting API's Machine and Cpu (docs: SCRIPTING_API) for the gdb stub's
unit tests: registers in plain attributes, a real `struct kvm_fpu`, guest-virtual memory as
a dict of mapped pages, breakpoints and watchpoints that only record themselves, and
scripted wait()/step() outcomes. Every call that changes the machine is logged in
`machine.calls` so tests can check what the stub asked for."""
from __future__ import annotations

from types import SimpleNamespace

from pyvisor._native import ffi
from pyvisor.errors import GuestMemoryError, PyvisorError
from pyvisor.machine.vcpu_runner import StepAborted

PAGE = 0x1000
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


class _Regs(SimpleNamespace):
    """Plain attributes that refuse what a 64-bit struct field cannot hold, as cffi does."""

    def __setattr__(self, name, value):
        if not 0 <= value < 1 << 64:
            raise OverflowError(f"{name}: {value:#x} does not fit in 64 bits")
        super().__setattr__(name, value)


def outcome(kind: str, status: int = 0, vcpu: int = 0, point=None):
    """An Outcome as Machine.wait() gives it; a debug event names its point."""
    address = getattr(point, "address", None)
    return SimpleNamespace(kind=kind, status=status, detail="", vcpu=vcpu, address=address,
                           point=point)


class FakeCpu:
    def __init__(self, machine: "FakeMachine", index: int):
        self.machine = machine
        self.index = index
        self.regs = _Regs(**{name: 0 for name in GPRS})
        self.regs.rflags = 0x2
        self.sregs = SimpleNamespace(
            cr0=0x80050033, cr2=0, cr3=0x9000, cr4=0x20, cr8=0, efer=0x500, apic_base=0,
            **{s: SimpleNamespace(selector=0, base=0, limit=0xFFFFFFFF) for s in SEGMENTS})
        self._fpu = ffi.new("struct kvm_fpu *")
        self._fpu.fcw = 0x37F
        self._fpu.mxcsr = 0x1F80
        self.fpu_sets = 0
        self.msrs: dict[int, int] = {}
        self.step_outcomes: list = []

    @property
    def fpu(self):
        copy = ffi.new("struct kvm_fpu *")
        ffi.memmove(copy, self._fpu, ffi.sizeof("struct kvm_fpu"))
        return copy

    def set_fpu(self, fpu) -> None:
        ffi.memmove(self._fpu, fpu, ffi.sizeof("struct kvm_fpu"))
        self.fpu_sets += 1

    def read_virt(self, vaddr: int, n: int) -> bytes:
        out = bytearray()
        for a in range(vaddr, vaddr + n):
            page = self.machine.pages.get(a // PAGE)
            if page is None:
                raise GuestMemoryError(f"{a:#x} is not mapped")
            out.append(page[a % PAGE])
        return bytes(out)

    def write_virt(self, vaddr: int, data: bytes) -> None:
        self.read_virt(vaddr, len(data))      # all or nothing, like the real one
        for i, b in enumerate(data):
            self.machine.pages[(vaddr + i) // PAGE][(vaddr + i) % PAGE] = b

    def step(self, count: int = 1, timeout: float | None = None):
        """step_outcomes: what the next steps return; a StepAborted in it is raised (the
        instruction did not complete within timeout)."""
        assert self.machine.state == "paused", "step while not paused"
        self.machine.calls.append(("step", self.index, count))
        result = self.step_outcomes.pop(0) if self.step_outcomes else None
        if isinstance(result, StepAborted):
            raise result
        self.regs.rip += 1
        return result


class FakePoint:
    def __init__(self, machine: "FakeMachine", **fields):
        self.machine = machine
        self.__dict__.update(fields)

    def remove(self) -> None:
        self.machine.points.remove(self)
        self.machine.calls.append(("remove", self.address))


class FakeMachine:
    def __init__(self, cpus: int = 1, state: str = "paused", sw_allowed: bool = True,
                 hw_slots: int = 4):
        self.state = state
        self.vcpus = [FakeCpu(self, i) for i in range(cpus)]
        self.pages: dict[int, bytearray] = {}
        self.points: list[FakePoint] = []
        self.calls: list = []
        self.wait_outcomes: list = []
        self.sw_allowed = sw_allowed
        self.hw_slots = hw_slots

    def map(self, vaddr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.pages.setdefault((vaddr + i) // PAGE, bytearray(PAGE))[(vaddr + i) % PAGE] = b

    def start(self, paused: bool = False) -> None:
        self.calls.append(("start", paused))
        self.state = "paused" if paused else "running"

    def pause(self) -> None:
        self.calls.append(("pause",))
        if self.state == "running":
            self.state = "paused"

    def resume(self) -> None:
        self.calls.append(("resume",))
        if self.state == "paused":
            self.state = "running"

    def stop(self, kind: str = "stopped", status: int = 0, detail: str = "") -> None:
        self.calls.append(("stop", kind))
        self.state = "stopped"

    def wait(self, timeout: float | None = None):
        if not self.wait_outcomes:
            return None
        result = self.wait_outcomes.pop(0)
        if result is not None:
            self.state = "paused" if result.kind in ("breakpoint", "watchpoint", "step") \
                else "stopped"
        return result

    def _hw_in_use(self) -> int:
        return sum(1 for p in self.points if getattr(p, "kind", "hw") == "hw")

    def add_breakpoint(self, addr: int, kind: str = "hw", callback=None) -> FakePoint:
        if kind == "sw" and not self.sw_allowed:
            kind = "hw"
        if kind == "hw" and self._hw_in_use() >= self.hw_slots:
            raise PyvisorError("all hardware debug registers are in use")
        bp = FakePoint(self, address=addr, kind=kind)
        self.points.append(bp)
        self.calls.append(("breakpoint", addr, kind))
        return bp

    def add_watchpoint(self, addr: int, length: int = 8, access: str = "write",
                       callback=None) -> FakePoint:
        if length not in (1, 2, 4, 8) or addr % length:
            raise ValueError("unaligned watchpoint")
        if self._hw_in_use() >= self.hw_slots:
            raise PyvisorError("all hardware debug registers are in use")
        wp = FakePoint(self, address=addr, length=length, access=access)
        self.points.append(wp)
        self.calls.append(("watchpoint", addr, length, access))
        return wp
