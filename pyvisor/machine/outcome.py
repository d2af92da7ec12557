"""How a run ended. The CLI exits with `status`; the library returns the whole Outcome.

Statuses: the exit device gives (v << 1) | 1 (always odd); guest reset, power-off and
Ctrl-A x give 0; a guest fault or host error gives 2; a timeout gives 124; a signal
gives 128 + its number."""
from __future__ import annotations

from dataclasses import dataclass

from .report import FaultReport

FAULT_STATUS = 2
TIMEOUT_STATUS = 124


@dataclass(frozen=True)
class Outcome:
    """kind: 'exit' (exit device), 'reset', 'poweroff', 'quit' (Ctrl-A x), 'signal',
    'timeout', 'fault' (the guest broke: triple fault, emulation failure, failed entry) or
    'error' (the host side failed: a hook that raised carries its `traceback`).

    A machine that paused itself on a debug event nobody handled reports it from
    `Machine.wait()` as kind 'breakpoint' or 'watchpoint', with the `vcpu` and the
    `address`; the machine is then paused, not stopped."""
    kind: str
    status: int
    detail: str = ""
    report: FaultReport | None = None
    vcpu: int | None = None
    address: int | None = None
    traceback: str = ""
    point: object = None      # the Breakpoint or Watchpoint of a debug event

    def describe(self) -> str:
        if self.report is not None:
            return self.report.format()
        if self.traceback:
            return f"pyvisor: {self.kind}: {self.detail}\n{self.traceback.rstrip()}"
        return f"pyvisor: {self.kind}" + (f": {self.detail}" if self.detail else "")
