"""pyvisor's loggers, which import `logging` only once a record is to be emitted: with the
traceback, string and weakref modules it pulls in, `import logging` is about 5 ms of `pyvisor
run`'s start-up, and a run without -v usually logs nothing.

Until something imports logging nobody can have configured it, so its defaults decide:
records below WARNING go nowhere, the rest to stderr. Once logging is loaded (a script or
pytest configured it, or a record was emitted), every record goes through it as usual:
`get_logger(name)` stands for `logging.getLogger(name)`."""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

# logging's level numbers (fixed by its documentation).
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_threshold = WARNING   # the lowest level emitted while logging is not loaded
_pending: tuple[int, str] | None = None   # to_stderr's configuration, not yet applied


def to_stderr(level: int, fmt: str) -> None:
    """Log records of level and above to stderr in fmt (logging.basicConfig), at once when
    that needs logging (a level below WARNING, or logging is loaded), else when the first
    record is emitted."""
    global _threshold, _pending
    _threshold, _pending = level, (level, fmt)
    if level < WARNING or "logging" in sys.modules:
        _logging()


def _logging():
    """The logging module, configured as to_stderr asked."""
    global _pending
    import logging

    if _pending is not None:
        (level, fmt), _pending = _pending, None
        logging.basicConfig(level=level, format=fmt)
    return logging


class Logger:
    """What pyvisor uses of a logging.Logger, by name: one is made on the first record."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        if self._logger is None:
            self._logger = _logging().getLogger(self.name)
        return self._logger

    def isEnabledFor(self, level: int) -> bool:
        if "logging" in sys.modules:
            return self._real().isEnabledFor(level)
        return level >= _threshold

    def _emit(self, level: int, msg: str, args: tuple, exc_info: bool) -> None:
        if "logging" in sys.modules or level >= _threshold:
            # stacklevel 3: the record names the caller of debug(), info(), ... or log()
            self._real().log(level, msg, *args, exc_info=exc_info, stacklevel=3)

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(level, msg, args, exc_info)

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(DEBUG, msg, args, exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(INFO, msg, args, exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(WARNING, msg, args, exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(ERROR, msg, args, exc_info)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the exception being handled, as logging.Logger.exception."""
        self._emit(ERROR, msg, args, True)


def get_logger(name: str) -> Logger:
    return Logger(name)
