"""The two ways pyvisor calls an ioctl: with a pointer, or with an integer argument.

Both raise KvmError naming the ioctl, so a failure anywhere reads as one line."""
from __future__ import annotations

from .._native import lib
from ..errors import KvmError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def ioctl(fd: int, request: int, arg: Any, name: str) -> int:
    """ioctl(fd, request, pointer); returns the non-negative result."""
    ret = lib.pv_ioctl(fd, request, arg)
    if ret < 0:
        raise KvmError(name, -ret)
    return ret


def ioctl_int(fd: int, request: int, arg: int, name: str) -> int:
    """ioctl(fd, request, integer); returns the non-negative result."""
    ret = lib.pv_ioctl_int(fd, request, arg)
    if ret < 0:
        raise KvmError(name, -ret)
    return ret
