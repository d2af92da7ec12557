"""Port 0xF4 exit device (QEMU's isa-debug-exit): lets a test kernel end the VMM with a
status of its choosing, which is how the tiny kernels report pass/fail."""
from __future__ import annotations

from collections.abc import Callable

EXIT_PORT = 0xF4


class ExitDevice:
    """Register on the PioBus at EXIT_PORT, length 1. A write of v (size 1, 2 or 4) calls
    `request_exit((v << 1) | 1)`; the status is odd, so a guest can never fake a clean 0."""

    stateless = True   # snapshots: nothing to keep

    def __init__(self, request_exit: Callable[[int], None]) -> None:
        self._request_exit = request_exit

    def pio_read(self, offset: int, size: int) -> int:
        return (1 << (size * 8)) - 1

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= (1 << (size * 8)) - 1
        self._request_exit((value << 1) | 1)
