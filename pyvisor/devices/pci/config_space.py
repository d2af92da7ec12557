"""A PCI function's 256-byte type-0 configuration space.

Per-byte write masks keep read-only fields read-only and give the BAR sizing protocol for
free: a BAR's mask covers only its address bits, so writing all ones reads back the size
mask with the (read-only) type bits. Status error bits are write-1-to-clear. The device
builds the space with the helpers here; the guest reaches it only through `read`/`write`.
"""
from __future__ import annotations

from collections.abc import Callable

from ...value import Value
from ..state import DeviceStateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    BarKind = Literal["mem32", "mem64", "io"]

CONFIG_SPACE_SIZE = 256

VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_CODE = 0x09           # 3 bytes: programming interface, subclass, base class
CACHE_LINE_SIZE = 0x0C
HEADER_TYPE = 0x0E
BAR0 = 0x10
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D        # 0 none, 1..4 INTA#..INTD#

COMMAND_IO = 0x0001
COMMAND_MEMORY = 0x0002
COMMAND_BUS_MASTER = 0x0004
COMMAND_INTX_DISABLE = 0x0400
COMMAND_WRITABLE = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE

STATUS_INTERRUPT = 0x0008
STATUS_CAP_LIST = 0x0010
# Master data parity error, signaled/received target abort, received master abort,
# signaled system error, detected parity error: set by the device, cleared by writing 1.
STATUS_RW1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000

HEADER_MULTIFUNCTION = 0x80

BAR_COUNT = 6
BAR_IO = 0x1
BAR_MEM64 = 0x4
BAR_PREFETCHABLE = 0x8

FIRST_CAPABILITY = 0x40     # the type-0 header ends at 0x3F

IO_SPACE_SIZE = 0x10000     # x86 port space: an I/O BAR above it decodes nothing

# on_bar_change(index, old address, new address); None = not decoded.
BarChangeHook = Callable[[int, int | None, int | None], None]

_MIN_SIZE = {"mem32": 16, "mem64": 16, "io": 4}
_MAX_SIZE = {"mem32": 1 << 31, "mem64": 1 << 63, "io": IO_SPACE_SIZE}
_BAR_AREA = range(COMMAND, BAR0 + 4 * BAR_COUNT)   # writes here may move a BAR


class _Bar(Value):
    """width_mask: all ones over the BAR's 32 or 64 bits."""

    __slots__ = ("kind", "size", "width_mask")

    def __init__(self, kind: BarKind, size: int, width_mask: int) -> None:
        self.kind, self.size, self.width_mask = kind, size, width_mask


class PciConfigSpace:
    """The configuration space of one function. Writable by the guest: the command bits
    in COMMAND_WRITABLE, the status RW1C bits, cache line size, interrupt line, BAR
    address bits and capability bytes given a write mask; everything else only through
    `set_raw`.

    `on_bar_change`, when set, is called after a guest write changes where a BAR
    decodes (its address, or the command bit that enables its space), so a device can
    move its bus registration; it runs on the writing vCPU's thread with the PCI root's
    lock held, so it must not access configuration space through the ports.
    """

    def __init__(self, vendor_id: int, device_id: int, class_code: int, *, revision: int = 0,
                 subsystem_vendor_id: int = 0, subsystem_id: int = 0, header_type: int = 0,
                 interrupt_pin: int = 0) -> None:
        self._data = bytearray(CONFIG_SPACE_SIZE)
        self._wmask = bytearray(CONFIG_SPACE_SIZE)
        self._w1cmask = bytearray(CONFIG_SPACE_SIZE)
        self._bars: dict[int, _Bar] = {}
        self._bar_slots: set[int] = set()
        self._bar_addresses: dict[int, int | None] = {}
        self._last_capability = 0
        self._free = FIRST_CAPABILITY
        self.on_bar_change: BarChangeHook | None = None
        self.set_raw(VENDOR_ID, 2, vendor_id)
        self.set_raw(DEVICE_ID, 2, device_id)
        self.set_raw(REVISION_ID, 1, revision)
        self.set_raw(CLASS_CODE, 3, class_code)
        self.set_raw(HEADER_TYPE, 1, header_type)
        self.set_raw(SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
        self.set_raw(SUBSYSTEM_ID, 2, subsystem_id)
        self.set_raw(INTERRUPT_PIN, 1, interrupt_pin)
        self._wmask[COMMAND:COMMAND + 2] = COMMAND_WRITABLE.to_bytes(2, "little")
        self._w1cmask[STATUS:STATUS + 2] = STATUS_RW1C.to_bytes(2, "little")
        self._wmask[CACHE_LINE_SIZE] = 0xFF
        self._wmask[INTERRUPT_LINE] = 0xFF

    # --- guest side -----------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Little-endian read of `size` bytes at any offset; bytes past the end read as
        ones (a word access at 0xFF through CONFIG_DATA)."""
        value = 0
        for a in reversed(range(offset, offset + size)):
            value = value << 8 | (self._data[a] if a < CONFIG_SPACE_SIZE else 0xFF)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Guest write: only bits in the write mask change, RW1C bits written 1 clear."""
        for i, a in enumerate(range(offset, min(offset + size, CONFIG_SPACE_SIZE))):
            byte = value >> (8 * i) & 0xFF
            wmask = self._wmask[a]
            self._data[a] = (self._data[a] & ~wmask | byte & wmask) & ~(byte & self._w1cmask[a])
        if offset < _BAR_AREA.stop and offset + size > _BAR_AREA.start:
            self._refresh_bars()

    # --- device side ----------------------------------------------------------------------

    def set_raw(self, offset: int, size: int, value: int) -> None:
        """Store a value whatever the write masks say (device-owned fields)."""
        self._data[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    @property
    def command(self) -> int:
        return self.read(COMMAND, 2)

    def add_bar(self, index: int, size: int, kind: BarKind = "mem32",
                prefetchable: bool = False) -> None:
        """Declare BAR `index` (a mem64 BAR takes index and index + 1) of `size` bytes, a
        power of two. It starts unassigned (address 0); the guest or the machine places it."""
        if kind not in _MIN_SIZE:
            raise ValueError(f"BAR {index}: kind must be mem32, mem64 or io, not {kind!r}")
        slots = {index, index + 1} if kind == "mem64" else {index}
        if not 0 <= index <= BAR_COUNT - len(slots) or slots & self._bar_slots:
            raise ValueError(f"BAR {index} ({kind}) is out of range or already taken")
        if size & (size - 1) or not _MIN_SIZE[kind] <= size <= _MAX_SIZE[kind]:
            raise ValueError(f"BAR {index}: size {size:#x} is not a power of two in "
                             f"{_MIN_SIZE[kind]:#x}..{_MAX_SIZE[kind]:#x}")
        if prefetchable and kind == "io":
            raise ValueError(f"BAR {index}: an I/O BAR cannot be prefetchable")
        if kind == "io":
            flags = BAR_IO
        else:
            flags = BAR_MEM64 if kind == "mem64" else 0
            if prefetchable:
                flags |= BAR_PREFETCHABLE
        width_mask = (1 << 32 * len(slots)) - 1
        offset = BAR0 + 4 * index
        self.set_raw(offset, 4 * len(slots), flags)
        # The minimum sizes keep the type bits out of the mask.
        self._wmask[offset:offset + 4 * len(slots)] = (
            ~(size - 1) & width_mask).to_bytes(4 * len(slots), "little")
        self._bar_slots |= slots
        self._bars[index] = _Bar(kind, size, width_mask)
        self._bar_addresses[index] = None

    def bar_address(self, index: int) -> int | None:
        """Where BAR `index` decodes now, or None: its space is off in the command register,
        it is unassigned (0), or it holds the sizing pattern."""
        return self._bar_addresses[index]

    def add_capability(self, cap_id: int, body: bytes, writable: bytes | None = None) -> int:
        """Append a capability (ID, next pointer, then `body`) to the list, dword-aligned
        from 0x40, and return its offset. `writable`, as long as `body`, is the guest write
        mask for the body (read-only when None)."""
        offset = self._free
        end = offset + 2 + len(body)
        if end > CONFIG_SPACE_SIZE:
            raise ValueError(f"capability {cap_id:#x} ({len(body)} bytes) does not fit")
        if writable is not None and len(writable) != len(body):
            raise ValueError("the write mask must be as long as the capability body")
        self._data[offset] = cap_id
        self._data[offset + 1] = 0
        self._data[offset + 2:end] = body
        if writable is not None:
            self._wmask[offset + 2:end] = writable
        if self._last_capability:
            self._data[self._last_capability + 1] = offset
        else:
            self._data[CAPABILITIES_POINTER] = offset
            self._data[STATUS] |= STATUS_CAP_LIST
        self._last_capability = offset
        self._free = (end + 3) & ~3
        return offset

    # --- snapshots ------------------------------------------------------------------------

    def snapshot_state(self) -> dict:
        """The 256 bytes (BAR addresses and decoding follow from them)."""
        return {"data": bytes(self._data)}

    def restore_state(self, state: dict) -> None:
        """Put the bytes back; only those the guest can write may differ (a saved state
        never changes what the device is). Moved BARs are reported to on_bar_change."""
        data = state.get("data")
        if not isinstance(data, bytes) or len(data) != CONFIG_SPACE_SIZE:
            raise DeviceStateError("PCI configuration space: the saved bytes do not fit")
        if data == self._data:
            return
        for a, (old, new) in enumerate(zip(self._data, data)):
            if old != new and not (self._wmask[a] | self._w1cmask[a]):
                raise DeviceStateError(f"PCI configuration space: saved read-only byte "
                                       f"{a:#04x} differs ({new:#04x}, not {old:#04x})")
        self._data[:] = data
        self._refresh_bars()

    # --- internals ------------------------------------------------------------------------

    def _decode_bar(self, index: int) -> int | None:
        bar = self._bars[index]
        offset = BAR0 + 4 * index
        raw = int.from_bytes(self._data[offset:offset + (8 if bar.kind == "mem64" else 4)],
                             "little")
        io = bar.kind == "io"
        address = raw & ~(0x3 if io else 0xF)
        if not self.command & (COMMAND_IO if io else COMMAND_MEMORY):
            return None
        if address == 0 or address == ~(bar.size - 1) & bar.width_mask:
            return None
        if io and address + bar.size > IO_SPACE_SIZE:
            return None
        return address

    def _refresh_bars(self) -> None:
        for index in self._bars:
            new = self._decode_bar(index)
            old = self._bar_addresses[index]
            if new != old:
                self._bar_addresses[index] = new
                if self.on_bar_change is not None:
                    self.on_bar_change(index, old, new)
