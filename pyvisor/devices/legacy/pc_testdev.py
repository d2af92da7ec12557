"""QEMU's pc-testdev (hw/misc/pc-testdev.c), the device kvm-unit-tests and other test
kernels written for QEMU poke at; pyvisor adds it with --testdev.

    0xE0-0xE3    a 32-bit scratch register, any access size; an access at 0xE0 + n
                 reads or writes its bytes from n on
    0xE4-0xE7    flush page: a 32-bit write of a guest-physical address drops the
                 hypervisor's mapping of that page (the host's page-table entries change
                 protection and back, so KVM's MMU notifier forgets the page; the guest
                 next touches it through a fresh fault, its contents unchanged)
    0xE8-0xEB    the scratch register again, byte by byte (QEMU's byte view)
    0x2000-0x2017  IRQ lines: writing v to 0x2000 + n sets interrupt line n (ISA IRQs,
                 then the IOAPIC's pins 16-23) to v != 0
    0xFF000000   a 64 KiB scratch memory window, reads and writes of 1 to 8 bytes

isa-debug-exit (port 0xF4) is pyvisor's exit device, always present.
"""
from __future__ import annotations

import ctypes
import mmap
from typing import Callable, Sequence

from ..state import capture, restore_fields

SCRATCH_PORT = 0xE0
FLUSH_PORT = 0xE4
BYTE_VIEW_PORT = 0xE8
PORTS = 12                    # 0xE0-0xEB: scratch, flush page, byte view
IRQ_PORT = 0x2000
IRQ_LINES = 24
IOMEM_BASE = 0xFF000000
IOMEM_SIZE = 0x10000
PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _bytes_of(offset: int, size: int, limit: int) -> range:
    """The byte positions an access of ``size`` at ``offset`` covers inside ``limit``."""
    return range(offset, min(offset + size, limit))


class PageFlusher:
    """Drops KVM's mapping of one guest page without ever making it inaccessible: an
    mprotect that adds PROT_EXEC and one that takes it away again each invalidate the
    range in KVM's MMU notifier, and every thread may go on reading and writing the page
    throughout (an mprotect to PROT_NONE, as QEMU does, would let a device thread fault)."""

    def __init__(self, regions: Sequence[tuple[int, int, int]]) -> None:
        self._regions = list(regions)     # (gpa, size, host address)

    def flush(self, gpa: int) -> bool:
        """Flush the page holding ``gpa``; False when it is not guest RAM or the host
        refused (e.g. a policy against writable and executable pages)."""
        page = gpa & ~(PAGE - 1)
        for start, size, host in self._regions:
            if start <= page < start + size:
                addr = host + page - start
                rw = mmap.PROT_READ | mmap.PROT_WRITE
                return (_libc.mprotect(addr, PAGE, rw | mmap.PROT_EXEC) == 0
                        and _libc.mprotect(addr, PAGE, rw) == 0)
        return False


class PcTestdev:
    """Register on the PioBus at SCRATCH_PORT for PORTS ports and on the MmioBus at
    IOMEM_BASE for IOMEM_SIZE bytes; IrqLines goes at IRQ_PORT."""

    _STATE = ("scratch", "iomem")

    def __init__(self, flush_page: Callable[[int], bool]) -> None:
        self._flush_page = flush_page
        self.scratch = bytearray(4)
        self.iomem = bytearray(IOMEM_SIZE)

    def _scratch_at(self, offset: int) -> int | None:
        """Byte index into the scratch register for a port offset, or None (flush)."""
        if offset < FLUSH_PORT - SCRATCH_PORT:
            return offset
        if offset >= BYTE_VIEW_PORT - SCRATCH_PORT:
            return offset - (BYTE_VIEW_PORT - SCRATCH_PORT)
        return None

    def pio_read(self, offset: int, size: int) -> int:
        at = self._scratch_at(offset)
        if at is None:
            return 0
        return sum(self.scratch[i] << 8 * (i - at) for i in _bytes_of(at, size, 4))

    def pio_write(self, offset: int, size: int, value: int) -> None:
        at = self._scratch_at(offset)
        if at is None:
            if offset == FLUSH_PORT - SCRATCH_PORT:
                self._flush_page(value & 0xFFFFFFFF)
            return
        for i in _bytes_of(at, size, 4):
            self.scratch[i] = value >> 8 * (i - at) & 0xFF

    def mmio_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.iomem[offset:offset + size], "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        n = len(_bytes_of(offset, size, IOMEM_SIZE))
        self.iomem[offset:offset + n] = (value & ((1 << 8 * n) - 1)).to_bytes(n, "little")

    def snapshot_state(self) -> dict:
        return capture(self, self._STATE)

    def restore_state(self, state: dict) -> None:
        restore_fields(self, state, self._STATE, "pc-testdev")


class IrqLines:
    """pc-testdev's IRQ-line ports: the line levels live in KVM's irqchip (and its saved
    state), so this view keeps nothing itself."""

    stateless = True

    def __init__(self, irq_line: Callable[[int, bool], None]) -> None:
        self._irq_line = irq_line

    def pio_read(self, offset: int, size: int) -> int:
        return 0

    def pio_write(self, offset: int, size: int, value: int) -> None:
        self._irq_line(offset, bool(value & ((1 << size * 8) - 1)))
