"""The pause protocol: every vCPU thread out of KVM_RUN and parked, and back again.

To pause, the controller sets `immediate_exit` in each vCPU's kvm_run and kicks the threads
with a signal: a thread inside KVM_RUN returns EINTR at once, a thread busy with an exit
sees immediate_exit on its next KVM_RUN, which first completes the pending port or MMIO
access (so registers are consistent, at an instruction boundary) and then returns EINTR.
On EINTR the thread asks `wants_park()` and parks in `park()`. While parked it runs
commands handed to it (a single step is KVM_RUN, which must run on the vCPU's own thread).
Resuming clears immediate_exit and wakes the threads. Stopping is a pause that never ends.

No lock here is ever taken from a signal handler.
"""
from __future__ import annotations

# _signal: the C module; `signal` only adds enums, and enum costs every start 3 ms here
import _signal as signal
import threading
import time
from collections.abc import Callable, Sequence

from ..kvm.vcpu import Vcpu

# Signal used to interrupt a vCPU thread blocked in KVM_RUN.
KICK_SIGNAL = int(signal.SIGRTMIN) + 2


class _Command:
    """A function to run on a parked vCPU's thread, and its result."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class RunControl:
    """Shared by the vCPU threads and whoever pauses, resumes or stops them."""

    def __init__(self, vcpus: Sequence[Vcpu]) -> None:
        self._vcpus = list(vcpus)
        self._cond = threading.Condition()
        self.pausing = False
        self.stopping = False
        self._parked: set[int] = set()
        self._threads: dict[int, int] = {}        # vCPU index -> thread ident, while alive
        self._commands: dict[int, list[_Command]] = {}
        self._aborting: set[int] = set()          # vCPUs whose running command must give up

    # --- the vCPU thread's side -------------------------------------------------------
    def enter(self, index: int) -> None:
        with self._cond:
            self._threads[index] = threading.get_ident()

    def leave(self, index: int) -> None:
        with self._cond:
            self._threads.pop(index, None)
            self._parked.discard(index)
            self._cond.notify_all()

    def wants_park(self) -> bool:
        """Asked on EINTR only: plain attribute reads, no lock."""
        return self.pausing or self.stopping

    def park(self, index: int) -> bool:
        """Wait here while the machine is paused, running commands for this vCPU; False
        once the machine is stopping (the thread should end)."""
        with self._cond:
            while self.pausing and not self.stopping:
                self._parked.add(index)
                self._cond.notify_all()
                commands = self._commands.pop(index, None)
                if commands:
                    self._cond.release()
                    try:
                        for command in commands:
                            _execute(command)
                    finally:
                        self._cond.acquire()
                    self._cond.notify_all()
                    continue
                self._cond.wait()
            self._parked.discard(index)
            return not self.stopping

    def on_vcpu_thread(self, index: int) -> bool:
        return self._threads.get(index) == threading.get_ident()

    def current_vcpu(self) -> int | None:
        """The index of the vCPU whose thread is calling, if any."""
        me = threading.get_ident()
        return next((i for i, t in self._threads.items() if t == me), None)

    # --- the controller's side --------------------------------------------------------
    def pause(self) -> None:
        """Return once every vCPU thread is parked. From a vCPU thread (a hook), only ask:
        every vCPU, the caller's included, parks as soon as it next looks."""
        with self._cond:
            if self.stopping:
                return
            me = self.current_vcpu()
            if self.pausing and me is not None and me in self._parked:
                return   # asked by a command (a step) running while the machine is paused
            self.pausing = True
            self._interrupt_all()
            if me is not None:
                return   # two vCPUs pausing each other must not wait for each other
            while not self.stopping and any(i not in self._parked for i in self._threads):
                self._cond.wait(0.05)
                self._kick_unparked(None)

    def resume(self) -> None:
        with self._cond:
            if not self.pausing or self.stopping:
                return
            self.pausing = False
            # No vCPU counts as parked from here on, even before its thread wakes: state
            # may not be touched (is_parked) while it could be entering KVM_RUN.
            self._parked.clear()
            for vcpu in self._vcpus:
                vcpu.request_immediate_exit(False)
            self._cond.notify_all()

    def stop(self) -> None:
        """Every vCPU thread leaves its loop; parked ones wake and end."""
        with self._cond:
            self.stopping = True
            self._interrupt_all()
            self._cond.notify_all()

    def run_on(self, index: int, fn: Callable[[], object], timeout: float | None = None) -> object:
        """Run fn on vCPU index's parked thread and return its result; inline when there is
        no such thread (not started) or the caller is that thread. After timeout seconds
        the thread is kicked and `aborting(index)` is true until fn returns."""
        with self._cond:
            if index not in self._threads or self.on_vcpu_thread(index):
                inline = True
            else:
                if index not in self._parked:
                    raise RuntimeError(f"vCPU {index} is not paused")
                inline = False
                command = _Command(fn)
                self._commands.setdefault(index, []).append(command)
                self._cond.notify_all()
                deadline = None if timeout is None else time.monotonic() + timeout
                while not command.done:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0 and index not in self._aborting:
                        self._aborting.add(index)
                        self._vcpus[index].request_immediate_exit(True)
                        self._kick(index)
                    self._cond.wait(None if left is None or left <= 0 else left)
                self._aborting.discard(index)
        if inline:
            command = _Command(fn)
            _execute(command)
        if command.error is not None:
            raise command.error
        return command.result

    def aborting(self, index: int) -> bool:
        return index in self._aborting

    def _kick(self, index: int) -> None:
        try:
            signal.pthread_kill(self._threads[index], KICK_SIGNAL)
        except (KeyError, ProcessLookupError):
            pass

    def is_parked(self, index: int) -> bool:
        return index in self._parked

    @property
    def all_parked(self) -> bool:
        with self._cond:
            return all(i in self._parked for i in self._threads)

    def _interrupt_all(self) -> None:
        for vcpu in self._vcpus:
            vcpu.request_immediate_exit(True)
        self._kick_unparked(self.current_vcpu())

    def _kick_unparked(self, me: int | None) -> None:
        for index in list(self._threads):
            if index != me and index not in self._parked:
                self._kick(index)


def _execute(command: _Command) -> None:
    try:
        command.result = command.fn()
    except BaseException as e:  # handed to the caller, who raises it
        command.error = e
    command.done = True
