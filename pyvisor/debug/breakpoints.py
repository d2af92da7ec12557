"""Breakpoints and watchpoints, set through KVM_SET_GUEST_DEBUG on every vCPU.

Hardware breakpoints and watchpoints share the four debug address registers DR0-DR3
(DR7 says what each one watches). Software breakpoints write int3 (0xCC) over the first
byte of the instruction and let KVM turn the guest's #BP into an exit; KVM's instruction
emulator cannot run int3, so on a PVM host a software breakpoint becomes a hardware one
(with a warning; `kind` says which it is). Continuing from an instruction breakpoint
steps over it with the breakpoints lifted, as gdb does.

Watchpoints are hardware ones (kind "hw") where the debug registers can watch data; on a
PVM host, whose instruction emulator never checks data breakpoints, they are page
protections instead (kind "page", see page_watch.py).

Addresses are guest-virtual (linear), as the debug registers and gdb see them.
"""
from __future__ import annotations

from collections.abc import Callable

from .._native import lib
from ..errors import PyvisorError
from ..log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger("pyvisor.debug")

HW_SLOTS = 4
INT3 = 0xCC
DR6_BS = 1 << 14                  # single-step trap
_DR7_RW = {"exec": 0b00, "write": 0b01, "rw": 0b11}
_DR7_LEN = {1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10}
BP_VECTOR = 3


class _Point:
    """What breakpoints and watchpoints share: an address, a callback, a hit count."""

    def __init__(self, table: "DebugTable", address: int,
                 callback: Callable[..., Any] | None) -> None:
        self._table = table
        self.address = address
        self.callback = callback
        self.hits = 0
        self.slot: int | None = None

    def remove(self) -> None:
        self._table.remove(self)


class Breakpoint(_Point):
    def __init__(self, table: "DebugTable", address: int, kind: str,
                 callback: Callable[..., Any] | None) -> None:
        super().__init__(table, address, callback)
        self.kind = kind
        self.original: int | None = None   # the byte under an int3
        self.physical: int | None = None

    def __repr__(self) -> str:
        return f"Breakpoint({self.address:#x}, kind={self.kind!r}, hits={self.hits})"


class Watchpoint(_Point):
    def __init__(self, table: "DebugTable", address: int, length: int, access: str,
                 callback: Callable[..., Any] | None) -> None:
        super().__init__(table, address, callback)
        self.length = length
        self.access = access
        self.kind = "hw"
        self.physical: int | None = None   # where a "page" watchpoint watches

    def __repr__(self) -> str:
        return (f"Watchpoint({self.address:#x}, length={self.length}, access={self.access!r}, "
                f"hits={self.hits})")


class DebugTable:
    """Every breakpoint and watchpoint of a machine, and the guest-debug state they imply.

    Changes bump `generation`; each vCPU thread reprograms its own vCPU with `apply`
    before it next enters the guest (KVM_SET_GUEST_DEBUG from another thread would wait
    for the vCPU to leave KVM_RUN). Software breakpoints write guest memory, so they are
    added and removed with every vCPU paused."""

    def __init__(self, native_debug: bool, translate: Callable[[int], int | None],
                 memory, page_watches) -> None:
        """native_debug: int3 and data breakpoints work (VT-x / AMD-V, not KVM's emulator)."""
        self.generation = 0
        self._sw_allowed = native_debug
        self._hw_watch = native_debug
        self._page_watches = page_watches
        self._translate = translate
        self._memory = memory
        self._slots: list[_Point | None] = [None] * HW_SLOTS
        self.software: list[Breakpoint] = []
        self.watches: list[Watchpoint] = []     # page watchpoints
        self.blockirq = lib.KVM_GUESTDBG_BLOCKIRQ

    # --- adding and removing ------------------------------------------------------------
    def add_breakpoint(self, address: int, kind: str,
                       callback: Callable[..., Any] | None) -> Breakpoint:
        if kind not in ("hw", "sw"):
            raise ValueError(f"breakpoint kind {kind!r}: expected 'hw' or 'sw'")
        if kind == "sw" and not self._sw_allowed:
            log.warning("software breakpoints (int3) do not run on this KVM backend (PVM); "
                        "%#x is a hardware breakpoint instead", address)
            kind = "hw"
        bp = Breakpoint(self, address, kind, callback)
        if kind == "hw":
            self._take_slot(bp)
        else:
            physical = self._translate(address)
            if physical is None:
                raise PyvisorError(f"breakpoint address {address:#x} is not mapped")
            bp.physical = physical
            bp.original = self._memory.read(physical, 1)[0]
            self._memory.write(physical, bytes([INT3]))
            self.software.append(bp)
        self.generation += 1
        return bp

    def add_watchpoint(self, address: int, length: int, access: str,
                       callback: Callable[..., Any] | None) -> Watchpoint:
        if access not in ("write", "rw"):
            raise ValueError(f"watchpoint access {access!r}: expected 'write' or 'rw'")
        if length not in _DR7_LEN:
            raise ValueError(f"watchpoint length {length}: expected 1, 2, 4 or 8")
        if address % length:
            raise ValueError(f"watchpoint address {address:#x} is not aligned to {length}")
        wp = Watchpoint(self, address, length, access, callback)
        if self._hw_watch:
            self._take_slot(wp)
            self.generation += 1
            return wp
        wp.kind = "page"
        wp.physical = self._translate(address)
        if wp.physical is None:
            raise PyvisorError(f"watchpoint address {address:#x} is not mapped")
        self._page_watches.add(wp)
        self.watches.append(wp)
        return wp

    def _take_slot(self, point: _Point) -> None:
        for i, taken in enumerate(self._slots):
            if taken is None:
                self._slots[i] = point
                point.slot = i
                return
        raise PyvisorError(f"all {HW_SLOTS} hardware debug registers are in use")

    def remove(self, point: _Point) -> None:
        if point.slot is not None and self._slots[point.slot] is point:
            self._slots[point.slot] = None
            point.slot = None
        elif isinstance(point, Breakpoint) and point in self.software:
            self.software.remove(point)
            self._memory.write(point.physical, bytes([point.original]))
        elif point in self.watches:
            self.watches.remove(point)
            self._page_watches.remove(point)
        self.generation += 1

    # --- what KVM is told ---------------------------------------------------------------
    def guest_debug(self, stepping: bool) -> tuple[int, list[int]]:
        """KVM_SET_GUEST_DEBUG's control word and debug registers. A single step lifts
        the instruction breakpoints, so that it never stops before executing its
        instruction; data watchpoints stay armed."""
        control = 0
        regs = [0] * 8
        armed = [(i, p) for i, p in enumerate(self._slots)
                 if p is not None and not (stepping and isinstance(p, Breakpoint))]
        if stepping:
            control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP | self.blockirq
        if armed:
            control |= lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
            dr7 = 0
            for i, point in armed:
                regs[i] = point.address
                if isinstance(point, Watchpoint):
                    rw, length = _DR7_RW[point.access], _DR7_LEN[point.length]
                else:
                    rw, length = _DR7_RW["exec"], 0
                dr7 |= 1 << (2 * i) | rw << (16 + 4 * i) | length << (18 + 4 * i)
            regs[7] = dr7
        if self.software:
            control |= lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_SW_BP
        return control, regs

    def apply(self, vcpu, stepping: bool = False) -> None:
        control, regs = self.guest_debug(stepping)
        vcpu.set_guest_debug(control, regs)


    @property
    def active(self) -> bool:
        return bool(self.software) or any(self._slots)

    # --- what a debug exit means ----------------------------------------------------------
    def hit(self, exception: int, pc: int, dr6: int) -> _Point | None:
        """The breakpoint or watchpoint a KVM_EXIT_DEBUG reports, counted; None for
        a stray single-step trap."""
        if exception == BP_VECTOR:
            point = next((bp for bp in self.software if bp.address == pc), None)
        else:
            point = next((self._slots[i] for i in range(HW_SLOTS)
                          if dr6 & (1 << i) and self._slots[i] is not None), None)
        if point is not None:
            point.hits += 1
        return point

    def software_at(self, address: int) -> Breakpoint | None:
        return next((bp for bp in self.software if bp.address == address), None)

    def lift_software(self, bp: Breakpoint) -> None:
        self._memory.write(bp.physical, bytes([bp.original]))

    def restore_software(self, bp: Breakpoint) -> None:
        if bp in self.software:
            self._memory.write(bp.physical, bytes([INT3]))
