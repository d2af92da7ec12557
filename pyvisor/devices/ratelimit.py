"""Rate-limited logging for messages a guest can trigger at will (a driver that keeps
posting bad chains and resetting the device): a few lines per interval, then a count of
what was left out, so stderr stays readable and cheap whatever the guest does."""
from __future__ import annotations

import threading
import time

from ..log import ERROR, WARNING, Logger

BURST = 10             # lines allowed per interval ...
INTERVAL = 5.0         # ... of this many seconds


class RateLimitedLog:
    """Logs through `logger` at most `burst` lines per `interval` seconds; the first line
    after a quiet spell says how many were suppressed."""

    def __init__(self, logger: Logger, burst: int = BURST,
                 interval: float = INTERVAL, clock=time.monotonic) -> None:
        self._log = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = float("-inf")
        self._sent = 0
        self.suppressed = 0

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self._interval:
                self._window_start, self._sent = now, 0
            if self._sent >= self._burst:
                self.suppressed += 1
                return
            self._sent += 1
            dropped, self.suppressed = self.suppressed, 0
        if dropped:
            msg += " (%d similar messages suppressed)"
            args += (dropped,)
        self._log.log(level, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.log(ERROR, msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, *args)
