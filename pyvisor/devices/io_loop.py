"""The I/O thread: one epoll loop over eventfds (queue kicks from KVM's ioeventfd), tap fds
and the console's stdin, so device work never runs on, or stops, a vCPU thread."""
from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from ..log import get_logger
from .ratelimit import RateLimitedLog

log = get_logger("pyvisor.io")


class IoLoop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failures = RateLimitedLog(log)   # a handler failing over and over

    def add(self, fd: int, handler: Callable[[], None]) -> None:
        """Call handler() on the I/O thread whenever fd is readable (level-triggered: the
        handler must consume what made it readable). Any thread may add, before or after
        start(). epoll refuses fds that are always readable (regular files, /dev/null) with
        PermissionError."""
        self._handlers[fd] = handler
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except OSError:
            del self._handlers[fd]
            raise

    def add_eventfd(self, fd: int, handler: Callable[[], None]) -> None:
        """Call handler() after each signal of eventfd fd (the counter is drained first)."""
        def drain_then_handle() -> None:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                return
            handler()
        self.add(fd, drain_then_handle)

    def remove(self, fd: int) -> None:
        """Stop watching fd (from any thread, the handler itself included)."""
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:   # fd already closed (EBADF): nothing to unregister
                pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="io", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            for fd, _events in self._epoll.poll():
                handler = self._handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler()
                except Exception:   # a device bug must not take every other device down
                    self._failures.error("I/O handler for fd %d failed", fd, exc_info=True)

    def stop(self) -> None:
        """Stop the thread (handlers in progress finish first)."""
        self._stopping = True
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._wake >= 0:
            self._epoll.close()
            os.close(self._wake)
            self._wake = -1
