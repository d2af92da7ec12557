"""Python callbacks on port and MMIO ranges, consulted before the devices on the bus.

When no hook is set the vCPU loop calls the bus directly and pays nothing for this module;
once one is, the loop's read/write functions become a `RangeHooks` in front of the bus.
A callback is `callback(cpu, address, size, value, is_write)`; it runs on the vCPU thread.
Returning anything but None handles the access (for a read, the value the guest reads);
returning None passes it on to the device, so a hook can watch without emulating.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    HookCallback = Callable[[Any, int, int, int, bool], Any]

_current = threading.local()


def set_current_cpu(cpu: Any) -> None:
    """Called once by each vCPU thread, so callbacks learn which vCPU exited."""
    _current.cpu = cpu


def current_cpu() -> Any:
    return getattr(_current, "cpu", None)


class HookError(Exception):
    """A user callback raised: the machine stops and the Outcome carries the traceback."""

    def __init__(self, where: str, error: BaseException) -> None:
        import traceback   # only a failing hook needs it (2 ms of imports at start-up)

        super().__init__(f"{where} raised {error!r}")
        self.traceback = "".join(traceback.format_exception(error))


class Hook:
    """One registered callback; `remove()` takes it off again."""

    def __init__(self, first: int, last: int, callback: HookCallback,
                 owner: "RangeHooks") -> None:
        self.first, self.last, self.callback = first, last, callback
        self._owner = owner

    def remove(self) -> None:
        self._owner.remove(self)


class RangeHooks:
    """The hooks of one address space (ports or MMIO) in front of that space's bus."""

    def __init__(self, kind: str, bus_read: Callable[[int, int], int],
                 bus_write: Callable[[int, int, int], None],
                 on_change: Callable[[], None]) -> None:
        self.kind = kind
        self._bus_read, self._bus_write = bus_read, bus_write
        self._on_change = on_change
        # Replaced, never changed in place: a vCPU reading it sees the old or the new list.
        self._hooks: tuple[Hook, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def add(self, first: int, last: int, callback: HookCallback) -> Hook:
        if last < first:
            raise ValueError(f"{self.kind} hook range {first:#x}..{last:#x} is empty")
        hook = Hook(first, last, callback, self)
        self._hooks = self._hooks + (hook,)
        self._on_change()
        return hook

    def remove(self, hook: Hook) -> None:
        self._hooks = tuple(h for h in self._hooks if h is not hook)
        self._on_change()

    def ranges(self) -> tuple[Hook, ...]:
        return self._hooks

    def covers(self, first: int, last: int) -> bool:
        return any(h.first <= last and first <= h.last for h in self._hooks)

    def _hooked(self, addr: int, size: int, value: int, is_write: bool) -> Any:
        """What the first hook on addr that handles the access returned; None when none
        does. One call per access on the vCPU thread: the hot path of a hooked exit."""
        cpu = getattr(_current, "cpu", None)
        for hook in self._hooks:
            if hook.first <= addr <= hook.last:
                try:
                    result = hook.callback(cpu, addr, size, value, is_write)
                except Exception as e:
                    raise HookError(f"the {self.kind} hook at {addr:#x}", e) from e
                if result is not None:
                    return result
        return None

    def read(self, addr: int, size: int) -> int:
        value = self._hooked(addr, size, 0, False)
        if value is not None:
            return int(value) & ((1 << (8 * size)) - 1)
        return self._bus_read(addr, size)

    def write(self, addr: int, size: int, value: int) -> None:
        if self._hooked(addr, size, value, True) is None:
            self._bus_write(addr, size, value)
