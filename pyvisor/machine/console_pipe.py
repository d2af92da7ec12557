"""The console UART's output path, shared by the native fast path and the Python UART.

A verbose Linux boot writes tens of kilobytes to ttyS0, one LSR read and one THR write per
character. The native shim serves those two registers inside pv_run when the UART model
says that is exact (struct pv_uart), writing each byte to this pipe; bytes the Python UART
transmits go into the same pipe, so the order is the guest's. A pump thread drains the pipe
into the machine's console sinks.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from .._native import ffi

log = logging.getLogger("pyvisor.console")

_READ_SIZE = 65536
# After each delivery the pump waits this long so that bytes arrive in batches: waking a
# Python thread for every byte of a verbose boot would take CPU time from the vCPUs, and
# a few milliseconds of console latency is imperceptible.
_COALESCE_SECONDS = 0.004
# How long finish() waits for the pump: a terminal that stopped reading (a stopped pager,
# a wedged tty) must not keep pyvisor from exiting once the guest is done.
_DRAIN_SECONDS = 10.0


class ConsolePipe:
    def __init__(self, uart_base: int, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._r, self._w = os.pipe2(os.O_CLOEXEC)
        self.native = ffi.new("struct pv_uart *")
        self.native.out_fd = self._w
        self.native.base = uart_base
        self._pump: threading.Thread | None = None

    def write(self, data: bytes) -> None:
        """The Python UART's output callback (a vCPU thread)."""
        os.write(self._w, data)

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
        try:
            while data := os.read(self._r, _READ_SIZE):
                self._deliver(data)
                time.sleep(_COALESCE_SECONDS)
        except OSError:
            pass   # closed under a pump that finish() gave up waiting for

    def finish(self) -> None:
        """Once no vCPU runs: close the write end and wait until every byte is delivered."""
        if self._w >= 0:
            self.native.out_fd = -1
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
