"""GuestVM: a running Machine with pexpect-style console matching, for tests.

`expect` needs output it has not consumed yet, while `Machine.console_output` is the whole
(bounded) history; so GuestVM keeps its own unconsumed text, fed by `Machine.on_output`
on the console thread. That buffer is bounded too (the guest may print forever while a test
waits for something else): beyond `search_limit` characters the oldest are dropped, as
pexpect's searchwindowsize does.
"""
from __future__ import annotations

import codecs
import re
import threading
import time
from typing import Any

from ..machine.machine import Machine
from ..machine.outcome import Outcome

DEFAULT_EXPECT_TIMEOUT = 10.0
DEFAULT_SEARCH_LIMIT = 1 << 20
TAIL_LINES = 30


def summary(outcome: Outcome) -> str:
    """One line on how a run ended (a fault's full report is a section of its own)."""
    return f"{outcome.kind}: {outcome.detail}" if outcome.detail else outcome.kind


class ExpectTimeout(AssertionError):
    """expect() found no match in time, or the guest stopped first; the message ends with
    the last lines of console output."""


class GuestVM:
    """A started Machine under test. `expect`, `send` and `wait` drive the console; every
    other attribute is the Machine's (vcpus, memory, on_pio, add_breakpoint, stats, ...),
    and `machine` is the Machine itself."""

    def __init__(self, machine: Machine, search_limit: int = DEFAULT_SEARCH_LIMIT) -> None:
        self.machine = machine
        self.before = ""          # the text expect() consumed before its last match
        self._search_limit = search_limit
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._arrived = threading.Condition()
        machine.on_output(self._feed)

    def __getattr__(self, name: str) -> Any:
        if name == "machine":          # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.machine, name)

    def __repr__(self) -> str:
        return f"<GuestVM {self.machine.config.kernel} {self.machine.state}>"

    def _feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        with self._arrived:
            self._pending += text
            extra = len(self._pending) - self._search_limit
            if extra > 0:
                self._pending = self._pending[extra:]
            self._arrived.notify_all()

    def expect(self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_EXPECT_TIMEOUT
               ) -> re.Match[str]:
        """Wait until console output not yet consumed matches the regular expression;
        consume it up to the end of the match and return the match (`before` holds what
        preceded it). Raises ExpectTimeout, naming the last console lines, when timeout
        seconds pass or the guest stops without a match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        drained = False
        with self._arrived:
            while True:
                match = regex.search(self._pending)
                if match is not None:
                    self.before = self._pending[:match.start()]
                    self._pending = self._pending[match.end():]
                    return match
                if drained:
                    break
                if self.machine.state == "stopped":
                    # The rest of its output is delivered by wait()'s teardown.
                    self._arrived.release()
                    try:
                        self.machine.wait()
                    finally:
                        self._arrived.acquire()
                    drained = True
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(min(left, 0.05))
        if self.machine.state == "stopped":
            why = f"the guest stopped ({summary(self.machine.outcome)}) before printing it"
        else:
            why = f"not printed within {timeout:g} s"
        raise ExpectTimeout(f"expect({regex.pattern!r}): {why}\n{self.tail_block()}")

    def send(self, data: str | bytes) -> None:
        """Type into the guest's console (the UART, or hvc0 with console "virtio")."""
        self.machine.send_input(data.encode() if isinstance(data, str) else bytes(data))

    def wait(self, timeout: float | None = None) -> Outcome:
        """Until the guest stops or pauses itself on a breakpoint (Machine.wait); a guest
        still running after timeout seconds fails the test instead of returning None."""
        outcome = self.machine.wait(timeout)
        if outcome is None:
            raise ExpectTimeout(f"the guest was still running after {timeout:g} s\n"
                                f"{self.tail_block()}")
        return outcome

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of console output, whether consumed by expect or not."""
        text = self.machine.console_text.replace("\r\n", "\n")
        return "\n".join(text.splitlines()[-lines:])

    def tail_block(self, lines: int = TAIL_LINES) -> str:
        """The console tail under a heading, for failure messages and reports."""
        tail = self.tail(lines)
        return f"console (last {lines} lines):\n{tail}" if tail else "(no console output)"
