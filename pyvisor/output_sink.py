"""Writing guest output to a file descriptor that may stall or fail: a terminal nobody
reads (a stopped pager, a pipe into a reader that stopped), a full disk, /dev/full.

A sink waits at most STALL_SECONDS for the fd to take more; then it drops output (counted,
one warning) until the fd is writable again, so the console thread, and through it the
guest, never waits on the outside for long. A write error is reported once and ends the
sink's output. Writes go in chunks a writable pipe or terminal takes without blocking.
"""
from __future__ import annotations

import os
import select
import threading

from .log import get_logger

log = get_logger("pyvisor.console")

STALL_SECONDS = 0.5
_CHUNK = 512


class FdSink:
    def __init__(self, fd: int, name: str) -> None:
        self._fd: int | None = fd
        self._name = name
        self._lock = threading.Lock()
        self._stalled = False
        self.dropped = 0

    def write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view and self._fd is not None:
                if not self._writable(0 if self._stalled else STALL_SECONDS):
                    self._drop(len(view))
                    return
                try:
                    written = os.write(self._fd, view[:_CHUNK])
                except BlockingIOError:
                    continue
                except OSError as e:
                    log.warning("writing guest output to the %s failed (%s): no more output "
                                "goes there", self._name, e.strerror)
                    self.dropped += len(view)
                    self._fd = None
                    return
                view = view[written:]

    def _writable(self, timeout: float) -> bool:
        try:
            ready = select.select([], [self._fd], [], timeout)[1]
        except (OSError, ValueError):
            return True   # let the write report what is wrong with the fd
        if ready and self._stalled:
            self._stalled = False
            log.warning("the %s takes output again (%d bytes were dropped)", self._name,
                        self.dropped)
        return bool(ready)

    def _drop(self, count: int) -> None:
        if not self._stalled:
            self._stalled = True
            log.warning("the %s is not taking output: guest output is being dropped",
                        self._name)
        self.dropped += count
