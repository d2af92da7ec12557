"""Port 0xE9 debug console (QEMU's isa-debugcon, Bochs' 0xE9 hack): the cheapest way for
early boot code to print, one OUT per byte with no UART setup."""
from __future__ import annotations

from collections.abc import Callable

DEBUGCON_PORT = 0xE9

# bytes objects for every value, so a write allocates nothing.
_BYTE = tuple(bytes((i,)) for i in range(256))


class DebugConsole:
    """Register on the PioBus at DEBUGCON_PORT, length 1. `output` gets each byte written,
    on the writing vCPU's thread."""

    stateless = True   # snapshots: nothing to keep

    def __init__(self, output: Callable[[bytes], None]) -> None:
        self._output = output

    def pio_read(self, offset: int, size: int) -> int:
        # Reads identify the device, as QEMU's debugcon: guests probe for it this way.
        return DEBUGCON_PORT

    def pio_write(self, offset: int, size: int, value: int) -> None:
        self._output(_BYTE[value & 0xFF])
