"""The raw system calls the sandbox makes and Python's os module lacks (seccomp,
landlock_*, prctl), through libc's syscall() in pyvisor._native: ctypes would cost
every `pyvisor run` a millisecond and a half of imports for three calls."""
from __future__ import annotations

from .._native import ffi, lib


def raw_syscall(number: int, *args: object) -> int:
    """The call's result, or -errno. Integers are passed as long; a cffi pointer as it is."""
    result = lib.syscall(ffi.cast("long", number),
                         *(ffi.cast("long", a) if isinstance(a, int) else a for a in args))
    return -ffi.errno if result < 0 else result
