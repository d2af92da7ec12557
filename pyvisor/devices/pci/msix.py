"""MSI-X (PCI Local Bus 3.0, 6.8.2): the capability, the vector table and the pending bits.

Each vector gets a GSI and an eventfd bound to it with KVM_IRQFD at construction, so
signalling an unmasked vector is one eventfd write from any thread and KVM delivers the
message; the guest's table writes only change the GSI's MSI route. A masked vector (or a
masked function) sets its pending bit instead, and is delivered when unmasked.
"""
from __future__ import annotations

import os
import struct
import threading
from ..state import DeviceStateError
from .config_space import PciConfigSpace

CAP_ID_MSIX = 0x11
ENTRY_SIZE = 16
CTRL_ENABLE = 1 << 15
CTRL_FUNCTION_MASK = 1 << 14
VECTOR_MASKED = 1 << 0

_ENTRY = struct.Struct("<IIII")    # address low, address high, data, vector control


TYPE_CHECKING = False
if TYPE_CHECKING:   # what the table needs of the machine: GsiRouter and Vm have these
    from typing import Protocol

    class Router(Protocol):
        def allocate(self) -> int: ...
        def set_msi(self, gsi: int, address: int, data: int) -> None: ...

    class IrqfdBinder(Protocol):
        def irqfd(self, fd: int, gsi: int, *, deassign: bool = False) -> None: ...


class Msix:
    """`vectors` MSI-X vectors whose table and PBA live in BAR `bar` at the given offsets;
    the transport forwards BAR accesses there to table_read/table_write/pba_read and
    capability writes to config_written."""

    def __init__(self, config: PciConfigSpace, vectors: int, bar: int, table_offset: int,
                 pba_offset: int, router: Router, vm: IrqfdBinder) -> None:
        self.vectors = vectors
        self.table_offset, self.table_size = table_offset, vectors * ENTRY_SIZE
        self.pba_offset, self.pba_size = pba_offset, 8 * ((vectors + 63) // 64)
        self._config = config
        self._router = router
        self._vm = vm
        self._lock = threading.Lock()
        self._table = bytearray(self.table_size)
        for v in range(vectors):                  # power-on state: every vector masked
            _ENTRY.pack_into(self._table, v * ENTRY_SIZE, 0, 0, 0, VECTOR_MASKED)
        self._pending = 0
        self._enabled = False
        self._function_masked = False
        self._gsis = [router.allocate() for _ in range(vectors)]
        self._fds = []
        for gsi in self._gsis:
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._fds.append(fd)
            vm.irqfd(fd, gsi)
        body = struct.pack("<HII", vectors - 1, table_offset | bar, pba_offset | bar)
        self.cap_offset = config.add_capability(
            CAP_ID_MSIX, body, writable=struct.pack("<HII", CTRL_ENABLE | CTRL_FUNCTION_MASK, 0, 0))

    @property
    def enabled(self) -> bool:
        return self._enabled

    def config_written(self) -> None:
        """After a guest write to configuration space: pick up enable and function mask."""
        ctrl = self._config.read(self.cap_offset + 2, 2)
        with self._lock:
            self._enabled = bool(ctrl & CTRL_ENABLE)
            self._function_masked = bool(ctrl & CTRL_FUNCTION_MASK)
            self._deliver_pending()

    def signal(self, vector: int) -> bool:
        """Raise `vector`; False when MSI-X is off (the caller falls back to INTx)."""
        with self._lock:
            if not self._enabled:
                return False
            if vector >= self.vectors:
                return True         # NO_VECTOR or out of range: the driver asked for none
            if self._function_masked or self._masked(vector):
                self._pending |= 1 << vector
            else:
                os.eventfd_write(self._fds[vector], 1)
            return True

    # --- BAR accesses ---------------------------------------------------------------------
    def table_read(self, offset: int, size: int) -> int:
        with self._lock:
            return int.from_bytes(self._table[offset:offset + size], "little")

    def table_write(self, offset: int, size: int, value: int) -> None:
        if offset + size > self.table_size:
            return
        vector = offset // ENTRY_SIZE
        with self._lock:
            self._table[offset:offset + size] = value.to_bytes(size, "little")
            lo, hi, data, _ctrl = _ENTRY.unpack_from(self._table, vector * ENTRY_SIZE)
            self._router.set_msi(self._gsis[vector], hi << 32 | lo, data)
            self._deliver_pending()

    def pba_read(self, offset: int, size: int) -> int:
        with self._lock:
            return (self._pending >> (8 * offset)) & ((1 << 8 * size) - 1)

    # --- snapshots --------------------------------------------------------------------------
    def snapshot_state(self) -> dict:
        """The vector table, the pending bits, enable and function mask."""
        with self._lock:
            return {"table": bytes(self._table), "pending": self._pending,
                    "enabled": self._enabled, "function_masked": self._function_masked}

    def restore_state(self, state: dict) -> None:
        """Put the table back and route each vector's GSI to its message again."""
        table, pending = state.get("table"), state.get("pending")
        if not isinstance(table, bytes) or len(table) != self.table_size or \
                not isinstance(pending, int) or not 0 <= pending < 1 << self.vectors:
            raise DeviceStateError("MSI-X: the saved table does not fit")
        with self._lock:
            self._table[:] = table
            self._pending = pending
            self._enabled = bool(state.get("enabled"))
            self._function_masked = bool(state.get("function_masked"))
            for vector, gsi in enumerate(self._gsis):
                lo, hi, data, _ctrl = _ENTRY.unpack_from(self._table, vector * ENTRY_SIZE)
                self._router.set_msi(gsi, hi << 32 | lo, data)

    # --- internals (lock held) ------------------------------------------------------------
    def _masked(self, vector: int) -> bool:
        return bool(self._table[vector * ENTRY_SIZE + 12] & VECTOR_MASKED)

    def _deliver_pending(self) -> None:
        if not self._enabled or self._function_masked:
            return
        for vector in range(self.vectors):
            if self._pending >> vector & 1 and not self._masked(vector):
                self._pending &= ~(1 << vector)
                os.eventfd_write(self._fds[vector], 1)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
