"""How a run ended. The CLI exits with `status`; the library returns the whole Outcome.

Statuses: the exit device gives (v << 1) | 1 (always odd); guest reset, power-off and
Ctrl-A x give 0; a guest fault or host error gives 2; a timeout gives 124; a signal
gives 128 + its number."""
from __future__ import annotations

from ..value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:   # built on a fault only (vcpu_runner)
    from .report import FaultReport

FAULT_STATUS = 2
TIMEOUT_STATUS = 124


def signalled(signo: int) -> Outcome:
    """How a run that signal signo (SIGINT, SIGTERM) ended looks."""
    from signal import Signals   # enum (3 ms to import): only once a signal came

    return Outcome("signal", 128 + signo, f"terminated by {Signals(signo).name}")


class Outcome(Value):
    """kind: 'exit' (exit device), 'reset', 'poweroff', 'quit' (Ctrl-A x), 'signal',
    'timeout', 'fault' (the guest broke: triple fault, emulation failure, failed entry) or
    'error' (the host side failed: a hook that raised carries its `traceback`).

    A machine that paused itself on a debug event nobody handled reports it from
    `Machine.wait()` as kind 'breakpoint' or 'watchpoint', with the `vcpu` and the
    `address`; the machine is then paused, not stopped."""
    __slots__ = ("kind", "status", "detail", "report", "vcpu", "address", "traceback", "point")

    def __init__(self, kind: str, status: int, detail: str = "",
                 report: FaultReport | None = None, vcpu: int | None = None,
                 address: int | None = None, traceback: str = "",
                 point: object = None) -> None:   # point: the Breakpoint or Watchpoint
        self.kind, self.status, self.detail, self.report = kind, status, detail, report
        self.vcpu, self.address, self.traceback, self.point = vcpu, address, traceback, point

    def describe(self) -> str:
        if self.report is not None:
            return self.report.format()
        if self.traceback:
            return f"pyvisor: {self.kind}: {self.detail}\n{self.traceback.rstrip()}"
        return f"pyvisor: {self.kind}" + (f": {self.detail}" if self.detail else "")
