"""The console UART's output path, shared by the native fast path and the Python UART.

A verbose Linux boot writes tens of kilobytes to ttyS0, one LSR read and one THR write per
character. The native shim serves those two registers inside pv_run when the UART model
says that is exact (struct pv_uart), writing each byte to this pipe; bytes the Python UART
transmits go into the same pipe, so the order is the guest's. A pump thread drains the pipe
into the machine's console sinks; sync() lets a pause hand over what is still in the pipe,
so a paused machine's console holds everything its vCPUs wrote.

Nothing outside may block a vCPU: the pipe's write end is non-blocking, and what does not
fit (nobody drains it: the sinks stalled) is dropped and counted, with one warning. The
sinks themselves never block for long either (output_sink.FdSink).
"""
from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from collections.abc import Callable

from .._native import ffi
from ..log import get_logger

log = get_logger("pyvisor.console")

_READ_SIZE = 65536
# After each delivery the pump waits this long so that bytes arrive in batches: waking a
# Python thread for every byte of a verbose boot would take CPU time from the vCPUs, and
# a few milliseconds of console latency is imperceptible.
_COALESCE_SECONDS = 0.004
# How long finish() waits for the pump: a terminal that stopped reading (a stopped pager,
# a wedged tty) must not keep pyvisor from exiting once the guest is done.
_DRAIN_SECONDS = 1.0
# The pipe's capacity: bursts of output (a verbose boot) while the pump sleeps.
_PIPE_BYTES = 1 << 20
# What the library keeps of the console output by default (MachineConfig.console_limit).
DEFAULT_CONSOLE_LIMIT = 4 << 20


class OutputRing:
    """The last `limit` bytes of console output (a guest printing forever costs a bounded
    amount of host memory)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.discarded = 0

    def append(self, data: bytes) -> None:
        self._data += data
        extra = len(self._data) - self._limit
        if extra > 0:
            del self._data[:extra]
            self.discarded += extra

    def data(self) -> bytes:
        return bytes(self._data)


class ConsolePipe:
    def __init__(self, uart_base: int, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self._w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass   # over /proc/sys/fs/pipe-max-size for this user: keep the default size
        self._dropped = 0
        self._warned = False
        self.native = ffi.new("struct pv_uart *")
        self.native.out_fd = self._w
        self.native.base = uart_base
        # The port table pv_run serves (native_ports.py fills in the actions); its
        # console port writes into this pipe too.
        self.ports = ffi.new("struct pv_ports *")
        self.ports.console_fd = self._w
        self._pump: threading.Thread | None = None
        # Held to read from the pipe and deliver what was read, so the pump and sync()
        # deliver in the guest's order.
        self._delivering = threading.Lock()

    def write(self, data: bytes) -> None:
        """The console devices' output callback (a vCPU or the I/O thread): never blocks."""
        try:
            written = os.write(self._w, data)
        except BlockingIOError:
            written = 0
        except OSError:   # finish() closed the pipe: the machine is stopping
            return
        if written < len(data):
            self._dropped += len(data) - written
            self._warn_dropped()

    @property
    def dropped(self) -> int:
        """Bytes of guest output dropped because nothing drained the pipe."""
        return self._dropped + self.native.dropped + self.ports.console_dropped

    def _warn_dropped(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("the console output is not keeping up with the guest (or nothing "
                        "reads it): guest output is being dropped")

    def set_fast_path(self, thr: bool, lsr: bool) -> None:
        """The UART model's fast_path callback: publish which shortcuts are exact."""
        self.native.thr_fast = thr
        self.native.lsr_fast = lsr

    @property
    def fast_bytes(self) -> int:
        """Bytes the native path transmitted (the rest went through Python)."""
        return self.native.tx_bytes

    def start(self) -> None:
        self._pump = threading.Thread(target=self._run_pump, name="console-pump", daemon=True)
        self._pump.start()

    def _run_pump(self) -> None:
        waiting = select.poll()
        waiting.register(self._r, select.POLLIN)
        try:
            while True:
                waiting.poll()
                with self._delivering:
                    data = self._deliver_ready()
                if data == 0:
                    return   # finish() closed the write end and everything is delivered
                # a burst is drained at once, the rest batched
                if data is not None and data < _READ_SIZE:
                    time.sleep(_COALESCE_SECONDS)
        except OSError:
            pass   # closed under a pump that finish() gave up waiting for

    def _deliver_ready(self) -> int | None:
        """Read what the pipe holds (up to _READ_SIZE) and deliver it: the bytes read, 0
        at the end of the output, None if the pipe was empty (sync() took it)."""
        try:
            data = os.read(self._r, _READ_SIZE)
        except BlockingIOError:
            return None
        if data:
            try:
                self._deliver(data)
            except Exception:   # a sink's bug must not stop the console for the rest
                log.exception("delivering console output failed")
        return len(data)

    def sync(self) -> None:
        """Deliver every byte written so far before returning (the vCPUs are paused, so
        the console is then complete). A pump stuck on a stalled sink is not waited for
        beyond _DRAIN_SECONDS: pausing must not depend on the terminal."""
        if self._r < 0 or not self._delivering.acquire(timeout=_DRAIN_SECONDS):
            return
        try:
            while self._deliver_ready():
                pass
        except OSError:
            pass   # closed: the machine stopped meanwhile
        finally:
            self._delivering.release()

    def finish(self) -> None:
        """Once no vCPU runs: close the write end and wait until every byte is delivered."""
        if self.native.dropped or self.ports.console_dropped:
            self._warn_dropped()
        if self._w >= 0:
            self.native.out_fd = -1
            self.ports.console_fd = -1
            os.close(self._w)
            self._w = -1
        if self._pump is not None:
            self._pump.join(_DRAIN_SECONDS)
            if self._pump.is_alive():
                log.warning("the console output is not being read; the rest is dropped")
            self._pump = None

    def close(self) -> None:
        self.finish()
        if self._r >= 0:
            os.close(self._r)
            self._r = -1
