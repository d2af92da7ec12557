"""The loop each vCPU thread runs: KVM_RUN, hand the exit to a device, repeat.

Everything in `_run` is paid on every port or MMIO exit, so it binds what it calls to locals
and handles nothing else inline: a pending read's value goes into the next pv_run (one
crossing per exit), counting happens in C (struct pv_stats), and the rarer exits (debug,
shutdown, internal errors) go to `_unusual_exit`. The loop returns to `RunControl.park`
whenever KVM_RUN is interrupted for a pause or a stop.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

from .._native import ffi, lib
from ..debug.breakpoints import DR6_BS, Breakpoint, DebugTable, Watchpoint
from ..errors import PyvisorError
from ..kvm.backend import Backend
from ..kvm.vcpu import EXIT_REASON_NAMES, Vcpu
from ..log import get_logger
from ..memory.guest_memory import GuestMemory
from .coalesced_ring import CoalescedRing
from .hooks import HookError, set_current_cpu
from .outcome import FAULT_STATUS, Outcome
from .run_control import RunControl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger("pyvisor.machine")

EXIT_NAMES = {name.lower(): number for number, name in EXIT_REASON_NAMES.items()}


class StepAborted(PyvisorError):
    """A single step that did not complete in time (the vCPU halted with interrupts off,
    or waits for a SIPI): it was interrupted, and the vCPU is where it was."""


class Routing:
    """Where the vCPU loop sends accesses: the buses, or hooks in front of them, and the
    native UART shortcut (NULL when a hook covers the UART's ports)."""

    __slots__ = ("pio_read", "pio_write", "mmio_read", "mmio_write", "uart")

    def __init__(self, pio_read: Callable[[int, int], int],
                 pio_write: Callable[[int, int, int], None], mmio_read: Callable[[int, int], int],
                 mmio_write: Callable[[int, int, int], None], uart: Any) -> None:
        self.pio_read, self.pio_write = pio_read, pio_write
        self.mmio_read, self.mmio_write = mmio_read, mmio_write
        self.uart = uart


class VcpuRunner:
    """One vCPU's thread body, its single-step, and how its unusual exits end."""

    def __init__(self, vcpu: Vcpu, cpu: Any, control: RunControl, routing: Callable[[], Routing],
                 debug: DebugTable, exit_hooks: dict[int, list[Callable]],
                 memory: GuestMemory, backend: Backend,
                 finish: Callable[[Outcome], None],
                 report_event: Callable[[Outcome], None],
                 coalesced: CoalescedRing | None = None) -> None:
        self.vcpu, self.cpu, self.control = vcpu, cpu, control
        self._routing = routing
        self._debug = debug
        self._exit_hooks = exit_hooks
        self._memory, self._backend = memory, backend
        self._finish, self._report_event = finish, report_event
        self._coalesced = coalesced
        self.active_seconds = 0.0        # time spent in the run loop (not parked)
        self._step_over: Breakpoint | None = None   # paused on this breakpoint's address
        self._debug_generation = 0   # the DebugTable generation this vCPU is programmed for

    # --- the thread ---------------------------------------------------------------------
    def main(self) -> None:
        index = self.vcpu.index
        set_current_cpu(self.cpu)
        self.control.enter(index)
        outcome = None
        try:
            while outcome is None and self.control.park(index):
                started = time.monotonic()
                try:
                    if self._step_over is not None:
                        outcome = self._pass_breakpoint()
                    if outcome is None:
                        outcome = self._run()
                    if outcome is None and self._coalesced is not None:
                        self._drain(self._routing())   # parking: devices hold every write
                finally:
                    self.active_seconds += time.monotonic() - started
        except HookError as e:
            outcome = Outcome("error", FAULT_STATUS, str(e), traceback=e.traceback)
        except PyvisorError as e:
            outcome = Outcome("error", FAULT_STATUS, str(e))
        except Exception as e:  # a pyvisor bug: report it, never leave the VM hanging
            log.exception("vCPU %d thread failed", index)
            outcome = Outcome("error", FAULT_STATUS, f"internal error on vCPU {index}: {e!r}")
        finally:
            self.control.leave(index)
        if outcome is not None:
            self._finish(outcome)

    def _run(self) -> Outcome | None:
        """The per-exit path: until KVM_RUN is interrupted for a park, or the vCPU stops."""
        r = self._routing()
        run = lib.pv_run
        vcpu = self.vcpu
        self._sync_debug()
        fd, kvm_run, ex, uart = vcpu.fd, vcpu.kvm_run, vcpu.exit, r.uart
        vcpu.stats.last_exit_ns = 0      # time parked is not time serving an exit
        pio_read, pio_write, mmio_read, mmio_write = r.pio_read, r.pio_write, r.mmio_read, r.mmio_write
        wants_park = self.control.wants_park
        PIO_WRITE, PIO_READ = lib.PV_RUN_PIO_WRITE, lib.PV_RUN_PIO_READ
        MMIO_WRITE, MMIO_READ = lib.PV_RUN_MMIO_WRITE, lib.PV_RUN_MMIO_READ
        EXIT_IO, EXIT_MMIO, EXIT_INTR = lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO, lib.KVM_EXIT_INTR
        EXIT_COALESCED = lib.PV_EXIT_COALESCED
        EINTR, EAGAIN = -errno.EINTR, -errno.EAGAIN
        value = 0
        while True:
            ret = run(fd, kvm_run, ex, uart, value)
            if ret == PIO_WRITE:     # pv_run says which single access it is: no field read
                pio_write(ex.addr, ex.size, ex.value)
            elif ret == PIO_READ:
                value = pio_read(ex.addr, ex.size)
            elif ret == MMIO_WRITE:
                mmio_write(ex.addr, ex.size, ex.value)
            elif ret == MMIO_READ:
                value = mmio_read(ex.addr, ex.size)
            elif ret < 0:
                if ret == EINTR or ret == EAGAIN:
                    if wants_park():
                        return None
                    continue
                return Outcome("error", FAULT_STATUS, f"KVM_RUN failed on vCPU {vcpu.index}: "
                                                      f"{os.strerror(-ret)}")
            else:
                reason = ex.reason
                if reason == EXIT_COALESCED:   # queued writes first, then the exit itself
                    self._drain(r)
                    reason = ex.kvm_reason
                if reason == EXIT_IO or reason == EXIT_MMIO:   # string I/O, or after a drain
                    value = _device_access(reason, ex, r)
                elif reason != EXIT_INTR:
                    outcome = self._unusual_exit(reason)
                    if outcome is not None:
                        return outcome
                    if wants_park():
                        return None

    def _drain(self, r: Routing) -> None:
        """Hand the writes KVM queued in the coalesced ring to the devices."""
        self._coalesced.drain(r.pio_write, r.mmio_write, self.vcpu.exit.ports, self.vcpu.stats)

    def _sync_debug(self) -> None:
        if self._debug_generation != self._debug.generation:
            self._debug_generation = self._debug.generation
            self._debug.apply(self.vcpu)

    # --- single-stepping ----------------------------------------------------------------
    def step(self, count: int) -> Outcome | None:
        """Execute exactly count instructions (the vCPU is parked, or not started). Port
        and MMIO accesses on the way go to the devices as usual."""
        vcpu = self.vcpu
        vcpu.request_immediate_exit(False)
        self._debug.apply(vcpu, stepping=True)
        try:
            for _ in range(count):
                outcome = self._step_one()
                if outcome is not None:
                    self._finish(outcome)
                    return outcome
            self._step_over = None
        finally:
            if self._coalesced is not None:   # what the steps wrote, before anyone looks
                self._drain(self._routing())
            self._debug_generation = self._debug.generation
            self._debug.apply(vcpu)
            vcpu.request_immediate_exit(self.control.pausing or self.control.stopping)
        return None

    def _step_one(self) -> Outcome | None:
        """KVM_RUN with single-step on until its #DB: one instruction done. A software
        breakpoint under RIP is lifted for the step and put back after."""
        rip = self.vcpu.get_regs().rip
        bp = self._debug.software_at(rip)
        if bp is not None:
            self._debug.lift_software(bp)
        try:
            r = self._routing()
            ex = self.vcpu.exit
            value = 0
            self.vcpu.stats.last_exit_ns = 0   # the pause before this step is not counted
            while True:
                ret = lib.pv_run(self.vcpu.fd, self.vcpu.kvm_run, ex, r.uart, value)
                if ret < 0:
                    if ret in (-errno.EINTR, -errno.EAGAIN):
                        if self.control.stopping or self.control.aborting(self.vcpu.index):
                            raise StepAborted(f"vCPU {self.vcpu.index} did not finish its step")
                        # A pause asked for meanwhile (a watched page's access during this
                        # step reports itself that way) set immediate_exit: the step is
                        # what the paused machine is doing, so it goes on.
                        self.vcpu.request_immediate_exit(False)
                        continue
                    return Outcome("error", FAULT_STATUS, f"KVM_RUN failed: {os.strerror(-ret)}")
                reason = ex.reason
                if reason == lib.PV_EXIT_COALESCED:
                    self._drain(r)
                    reason = ex.kvm_reason
                if reason == lib.KVM_EXIT_DEBUG:
                    # The step's trap, and with it a hardware watchpoint the step touched.
                    point = self._debug.hit(ex.exception, ex.pc, ex.dr6)
                    if isinstance(point, Watchpoint):
                        self._point_hit(point, ex.pc)
                    return None
                if reason in (lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO):
                    value = _device_access(reason, ex, r)
                    if reason == lib.KVM_EXIT_MMIO and ex.is_write:
                        # KVM finishes emulating an MMIO write before it exits, and then
                        # loses the single-step trap ("FIXME: return into emulator if
                        # single-stepping" in its complete_emulated_mmio): the step is done.
                        # An immediate-exit KVM_RUN takes the completion without running on.
                        self.vcpu.request_immediate_exit(True)
                        lib.pv_run(self.vcpu.fd, self.vcpu.kvm_run, ex, r.uart, 0)
                        return None
                elif reason != lib.KVM_EXIT_INTR:
                    outcome = self._stop_exit(reason)
                    if outcome is not None:
                        return outcome
        finally:
            if bp is not None:
                self._debug.restore_software(bp)

    def _pass_breakpoint(self) -> Outcome | None:
        """Resuming on the breakpoint that paused us: step over it first."""
        bp, self._step_over = self._step_over, None
        if self.vcpu.get_regs().rip != bp.address:
            return None   # someone moved RIP while paused
        return self.step(1)

    # --- exits that are not device accesses -----------------------------------------------
    def _unusual_exit(self, reason: int) -> Outcome | None:
        for callback in self._exit_hooks.get(reason, ()):
            try:
                handled = callback(self.cpu, EXIT_REASON_NAMES.get(reason, str(reason)).lower())
            except Exception as e:
                raise HookError(f"the on_exit hook for {EXIT_REASON_NAMES.get(reason)}", e) from e
            if handled:
                return None
        if reason == lib.KVM_EXIT_DEBUG:
            return self._debug_exit()
        return self._stop_exit(reason)

    def _debug_exit(self) -> Outcome | None:
        ex = self.vcpu.exit
        point = self._debug.hit(ex.exception, ex.pc, ex.dr6)
        if point is None:
            if not ex.dr6 & DR6_BS:
                log.debug("vCPU %d: debug exit at %#x matched no breakpoint", self.vcpu.index, ex.pc)
            return None
        return self._point_hit(point, ex.pc)

    def page_watch_hit(self, point: Watchpoint) -> None:
        """A page-protection watchpoint saw an access (during this vCPU's MMIO exit; the
        instruction completes when the vCPU next enters the guest)."""
        point.hits += 1
        self._point_hit(point, self.vcpu.get_regs().rip)

    def _point_hit(self, point: Breakpoint | Watchpoint, rip: int) -> Outcome | None:
        """Run the point's callback, or pause the machine and report the event. Going on
        from an instruction breakpoint steps over it."""
        is_breakpoint = isinstance(point, Breakpoint)
        if point.callback is not None:
            try:
                point.callback(self.cpu, point)
            except Exception as e:
                raise HookError(f"the callback of {point!r}", e) from e
            if is_breakpoint:
                self._step_over = point
                if not self.control.wants_park():
                    return self._pass_breakpoint()
            return None
        if is_breakpoint:
            self._step_over = point
        what = "breakpoint" if is_breakpoint else f"{point.access} watchpoint"
        self._report_event(Outcome(what.split()[-1], 0,
                                   f"vCPU {self.vcpu.index} hit the {what} at "
                                   f"{point.address:#x} (RIP {rip:#x})",
                                   vcpu=self.vcpu.index, address=point.address, point=point))
        return None

    def _stop_exit(self, reason: int) -> Outcome | None:
        ex = self.vcpu.exit
        if reason == lib.KVM_EXIT_SHUTDOWN:
            return self._fault("triple fault (KVM_EXIT_SHUTDOWN)",
                               "the guest hit an exception it could not handle and the CPU shut down")
        if reason == lib.KVM_EXIT_INTERNAL_ERROR:
            from .report import INTERNAL_ERROR_NAMES
            what = INTERNAL_ERROR_NAMES.get(ex.suberror, f"suberror {ex.suberror}")
            data = " ".join(f"{ex.idata[i]:#x}" for i in range(ex.ndata))
            return self._fault(f"KVM internal error: {what} (KVM_EXIT_INTERNAL_ERROR)",
                               f"suberror {ex.suberror}" + (f", data {data}" if data else ""))
        if reason == lib.KVM_EXIT_FAIL_ENTRY:
            return self._fault("VM entry failed (KVM_EXIT_FAIL_ENTRY)",
                               f"hardware entry failure reason {ex.hw_reason:#x}")
        if reason == lib.KVM_EXIT_SYSTEM_EVENT:
            if ex.event_type == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
                return Outcome("poweroff", 0, "the guest powered off")
            if ex.event_type == lib.KVM_SYSTEM_EVENT_RESET:
                return Outcome("reset", 0, "the guest reset the machine")
            return self._fault(f"system event {ex.event_type} (KVM_EXIT_SYSTEM_EVENT)")
        if reason in (lib.KVM_EXIT_IRQ_WINDOW_OPEN, lib.KVM_EXIT_DEBUG):
            return None
        name = EXIT_REASON_NAMES.get(reason, str(reason))
        return self._fault(f"unexpected exit KVM_EXIT_{name}")

    def _fault(self, reason: str, detail: str = "") -> Outcome:
        # The report (with its page walk) is loaded by the first fault, not by every run.
        from .report import build_report
        report = build_report(self.vcpu, self._memory, reason, detail, self._backend)
        return Outcome("fault", FAULT_STATUS, reason, report, vcpu=self.vcpu.index)


def _device_access(reason: int, ex, r: Routing) -> int:
    """One port or MMIO exit off the hot path (string I/O, single steps, an exit that came
    with coalesced writes: reason is the KVM exit's); the read value, else 0.
    `VcpuRunner._run` serves single accesses inline, since they are paid on every exit."""
    if reason == lib.KVM_EXIT_IO:
        if ex.count != 1:
            _string_pio(ex, r.pio_read, r.pio_write)
        elif ex.is_write:
            r.pio_write(ex.addr, ex.size, ex.value)
        else:
            return r.pio_read(ex.addr, ex.size)
    elif ex.is_write:
        r.mmio_write(ex.addr, ex.size, ex.value)
    else:
        return r.mmio_read(ex.addr, ex.size)
    return 0


def _string_pio(ex, pio_read: Callable[[int, int], int],
                pio_write: Callable[[int, int, int], None]) -> None:
    """rep ins/outs: KVM hands over `count` elements at once in the data area."""
    size, port = ex.size, ex.addr
    data = ffi.buffer(ex.data, size * ex.count)
    for i in range(ex.count):
        element = slice(i * size, (i + 1) * size)
        if ex.is_write:
            pio_write(port, size, int.from_bytes(data[element], "little"))
        else:
            data[element] = pio_read(port, size).to_bytes(size, "little")
