"""The boot timer (`pyvisor run --boot-timer`): a guest writes port 0x99 at the moment of
its boot it wants timed, and pyvisor says how long after it started that came. The
start-up benchmark's guest (guests/kernels/boot_timer.S) writes it with its very first
instruction, which makes the figure "process start to the guest's first instruction".
Firecracker's boot timer is the same idea on an MMIO page; a port is one instruction for
a tiny kernel, and a Linux guest reaches it through /dev/port.

It is a port hook (Machine.on_pio), so a machine without it pays nothing, and only the
guest's first write counts: a guest that keeps writing costs one hook call per exit."""
from __future__ import annotations

import threading
import time

from .. import _imported_ns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BOOT_TIMER_PORT = 0x99


class BootTimer:
    """`attach(machine)` before the machine starts; after the guest's first write to
    BOOT_TIMER_PORT, `marked_ns` is CLOCK_MONOTONIC (time.monotonic_ns) as the vCPU thread
    took that exit. One timer may serve the machines of a restart loop: the first mark
    stays."""

    def __init__(self) -> None:
        self.marked_ns: int | None = None
        self._lock = threading.Lock()

    def attach(self, machine: Any) -> None:
        machine.on_pio(BOOT_TIMER_PORT, callback=self._access)

    def _access(self, cpu: Any, port: int, size: int, value: int, is_write: bool) -> None:
        if is_write and self.marked_ns is None:
            now = time.monotonic_ns()
            with self._lock:
                if self.marked_ns is None:
                    self.marked_ns = now
        return None   # reads and writes go on to the bus: nothing claims the port

    def describe(self) -> str:
        """One line: since `import pyvisor` (what the VMM costs on top of the interpreter's
        own start) and the raw CLOCK_MONOTONIC stamp, for a harness that took its own
        before it ran pyvisor."""
        if self.marked_ns is None:
            return f"boot timer: the guest never wrote port {BOOT_TIMER_PORT:#x}"
        since = (self.marked_ns - _imported_ns) / 1e6
        return (f"boot timer: the guest wrote port {BOOT_TIMER_PORT:#x} {since:.1f} ms after "
                f"pyvisor was imported (CLOCK_MONOTONIC {self.marked_ns} ns)")
