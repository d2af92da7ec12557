"""QEMU's firmware configuration device (fw_cfg), its traditional I/O interface
(docs/specs/fw_cfg.rst in QEMU): kernels and firmware written for QEMU ask it for the
machine's RAM size and CPU count, and find named blobs in its file directory.

    FW_CFG_PORT      16-bit write: select an item (the read position goes back to 0)
    FW_CFG_PORT + 1  8-bit read: the selected item's next byte (0 past its end)

Items: the "QEMU" signature, the interface ID (traditional interface only: no DMA), a zero
UUID, RAM_SIZE (u64), NB_CPUS and MAX_CPUS (u16), all little-endian, and the file directory
(big-endian count, then {u32 size, u16 select, u16 reserved, char name[56]} per file, as
the specification says) with one file, "etc/e820": the memory map as QEMU gives it
({u64 address, u64 length, u32 type} per entry, little-endian). Writes to data and
selectors of items that do not exist are ignored; those items read as zeros. Every item is
built once, so a guest reading costs a bounded table lookup per byte.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from ..._native import ffi, lib
from ...memory.layout import E820Entry
from ..changes import CountingLock
from ..state import capture, restore_fields

FW_CFG_PORT = 0x510
FW_CFG_PORTS = lib.FW_CFG_CTL_SIZE   # the selector's two bytes; the data port is the second
FW_CFG_ACPI_HID = ffi.string(lib.FW_CFG_ACPI_DEVICE_ID).decode()   # the DSDT's _HID
E820_FILE = "etc/e820"


def file_directory(files: Iterable[tuple[str, int, int]]) -> bytes:
    """The FW_CFG_FILE_DIR item for (name, selector, size) entries."""
    entries = list(files)
    return struct.pack(">I", len(entries)) + b"".join(
        struct.pack(">IHH", size, select, 0)
        + name.encode().ljust(lib.FW_CFG_MAX_FILE_PATH, b"\0")
        for name, select, size in entries)


def build_items(ram_size: int, cpus: int, e820: Iterable[E820Entry]) -> dict[int, bytes]:
    """selector -> contents, for a machine with this RAM, CPU count and memory map."""
    e820_blob = b"".join(struct.pack("<QQI", e.addr, e.size, e.type) for e in e820)
    files = [(E820_FILE, lib.FW_CFG_FILE_FIRST, e820_blob)]
    return {
        lib.FW_CFG_SIGNATURE: b"QEMU",
        lib.FW_CFG_ID: struct.pack("<I", lib.FW_CFG_VERSION),
        lib.FW_CFG_UUID: bytes(16),
        lib.FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
        lib.FW_CFG_NB_CPUS: struct.pack("<H", cpus),
        lib.FW_CFG_MAX_CPUS: struct.pack("<H", cpus),
        lib.FW_CFG_FILE_DIR: file_directory((n, s, len(b)) for n, s, b in files),
        **{select: blob for _, select, blob in files},
    }


class FwCfg:
    """Register on the PioBus at FW_CFG_PORT for FW_CFG_PORTS ports. Its lock is counted
    (state_changes): a restore leaves an fw_cfg the guest did not read since alone."""

    _STATE = ("_selector", "_offset")

    def __init__(self, items: dict[int, bytes]) -> None:
        self._items = items
        self._lock = self.state_changes = CountingLock()
        self._selector = 0
        self._offset = 0

    def pio_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 2:
            with self._lock:
                self._selector = value & 0xFFFF
                self._offset = 0

    def pio_read(self, offset: int, size: int) -> int:
        if size != 1:
            return (1 << (size * 8)) - 1
        with self._lock:
            # The write-channel and arch-local bits are part of the key: such items do not
            # exist.
            item = self._items.get(self._selector, b"")
            at = self._offset
            if at >= len(item):
                return 0
            self._offset = at + 1
            return item[at]

    def snapshot_state(self) -> dict:
        with self._lock.held():
            return capture(self, self._STATE)

    def restore_state(self, state: dict) -> None:
        with self._lock.held():
            restore_fields(self, state, self._STATE, "fw_cfg")
