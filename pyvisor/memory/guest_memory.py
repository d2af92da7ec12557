"""Guest RAM: one anonymous host mapping per RAM region, with bounds-checked accessors.

Every access goes through ``_locate``, which only succeeds for a range lying entirely inside
one region, so a bad guest-physical address (from a device descriptor, a page walk, a kernel
image) raises GuestMemoryError instead of touching host memory outside the mappings.

Mappings are owned by ``ffi.gc`` pointers and are unmapped when the last reference goes away:
``close()`` drops this object's references (unmapping at once in the normal case), while a
view returned by ``buffer()`` that a device still holds keeps its mapping alive rather than
turning into a dangling pointer.

Every page pyvisor writes is marked in a map of one byte per page (``written_map``): KVM's
dirty log only sees the guest's own writes, and a snapshot restore must also put back what
the devices wrote (virtio rings, disk reads, rng bytes). ``buffer()`` hands out writable
views, so it marks its whole range when it is called; a view kept for longer (a virtqueue's
used ring) is the holder's to declare again (see pyvisor.snapshot).
"""

import os
import struct

from pyvisor._native import ffi, lib
from pyvisor.errors import ConfigError, GuestMemoryError
from pyvisor.memory.layout import MemoryLayout
from pyvisor.units import format_size

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
FILL_CHUNK = 1 << 20
_ZEROS = bytes(FILL_CHUNK)


def check_host_can_back(ram_size: int, meminfo: str) -> None:
    """Refuse RAM sizes beyond MemTotal + SwapTotal (``meminfo`` is /proc/meminfo's text).

    Linux overcommits anonymous memory, so such a mapping may well succeed and the guest
    would only be OOM-killed later; failing up front gives the user a clear message.
    """
    fields = _meminfo_bytes(meminfo, ("MemTotal", "SwapTotal"))
    if "MemTotal" not in fields:
        return  # not Linux's format: nothing to judge by, let mmap decide
    memory, swap = fields["MemTotal"], fields.get("SwapTotal", 0)
    if ram_size > memory + swap:
        raise ConfigError(
            f"cannot back {format_size(ram_size)} of guest RAM on this host: it has "
            f"{format_size(memory)} of memory and {format_size(swap)} of swap")


def _meminfo_bytes(meminfo: str, names: tuple[str, ...]) -> dict[str, int]:
    """The named "Name:   123 kB" lines of meminfo, in bytes (split by hand: `re` costs
    every start of pyvisor 4 ms)."""
    fields = {}
    for line in meminfo.splitlines():
        name, _, value = line.partition(":")
        kib, _, unit = value.strip().partition(" ")
        if name in names and kib.isdecimal() and unit == "kB":
            fields[name] = int(kib) * 1024
    return fields


def _read_meminfo() -> str:
    try:
        with open("/proc/meminfo", "rb") as f:   # a text file would import the ascii codec
            return f.read().decode("ascii")
    except OSError:
        return ""


def _map_region(size: int):
    ptr = lib.pv_mmap_ram(size)
    if ptr == ffi.NULL:
        raise ConfigError(f"cannot back {format_size(size)} of guest RAM on this host: "
                          f"{os.strerror(ffi.errno)}")
    return ffi.gc(ptr, lambda p: lib.pv_munmap(p, size))


class GuestMemory:
    """Host memory backing a MemoryLayout, addressed by guest-physical address."""

    def __init__(self, layout: MemoryLayout):
        check_host_can_back(layout.ram_size, _read_meminfo())
        self.layout = layout
        self._ptrs = [_map_region(region.size) for region in layout.regions]
        self._written = [ffi.new("uint8_t[]", region.size // PAGE) for region in layout.regions]
        # (start, end, view, written) tuples: the fast path of every access only walks this.
        self._slots = tuple(
            (region.gpa, region.end, memoryview(ffi.buffer(ptr, region.size)),
             memoryview(ffi.buffer(written)))
            for region, ptr, written in zip(layout.regions, self._ptrs, self._written))

    @property
    def regions(self) -> list[tuple[int, int, int]]:
        """(gpa, size, host_addr) per RAM region, for KVM_SET_USER_MEMORY_REGION."""
        return [(start, end - start, int(ffi.cast("uintptr_t", ptr)))
                for (start, end, _, _), ptr in zip(self._slots, self._ptrs)]

    @property
    def written_maps(self) -> list:
        """Per RAM region, the cffi uint8_t array marking the pages pyvisor wrote."""
        return list(self._written)

    def _locate(self, gpa: int, size: int) -> tuple[memoryview, int]:
        for start, end, view, _ in self._slots:
            if start <= gpa and gpa + size <= end and size >= 0:
                return view, gpa - start
        raise GuestMemoryError(
            f"guest-physical access {gpa:#x} (+{size} bytes) is outside guest RAM")

    def _locate_write(self, gpa: int, size: int) -> tuple[memoryview, int]:
        """_locate, marking the pages as written by pyvisor."""
        for start, end, view, written in self._slots:
            if start <= gpa and gpa + size <= end and size >= 0:
                off = gpa - start
                if size:
                    first, last = off >> PAGE_SHIFT, (off + size - 1) >> PAGE_SHIFT
                    if first == last:
                        written[first] = 1
                    else:
                        written[first:last + 1] = b"\1" * (last + 1 - first)
                return view, off
        raise GuestMemoryError(
            f"guest-physical access {gpa:#x} (+{size} bytes) is outside guest RAM")

    def mark_written(self, gpa: int, size: int) -> None:
        """Mark pages as written by pyvisor (a long-lived view written through later)."""
        self._locate_write(gpa, size)

    def contains(self, gpa: int, size: int) -> bool:
        """Whether [gpa, gpa + size) lies entirely inside one RAM region."""
        return any(start <= gpa and gpa + size <= end and size >= 0
                   for start, end, _, _ in self._slots)

    def read(self, gpa: int, size: int) -> bytes:
        view, off = self._locate(gpa, size)
        return bytes(view[off:off + size])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray)):
            data = memoryview(data).cast("B")
        view, off = self._locate_write(gpa, len(data))
        view[off:off + len(data)] = data

    def fill(self, gpa: int, size: int, byte: int = 0) -> None:
        """Set [gpa, gpa + size) to `byte`, FILL_CHUNK bytes at a time (the host never
        allocates in proportion to size). A zero fill leaves chunks that already read
        zero alone: fresh RAM is zero, so a huge BSS there costs no host memory at all
        (reading untouched anonymous memory maps only the shared zero page)."""
        view, off = self._locate(gpa, size)
        pattern = _ZEROS if byte == 0 else bytes([byte]) * min(size, FILL_CHUNK)
        for start in range(off, off + size, FILL_CHUNK):
            chunk = view[start:min(start + FILL_CHUNK, off + size)]
            if byte == 0 and chunk.tobytes() == _ZEROS[:len(chunk)]:
                continue
            self._locate_write(gpa + start - off, len(chunk))
            chunk[:] = pattern[:len(chunk)]

    def buffer(self, gpa: int, size: int) -> memoryview:
        """A writable zero-copy view onto guest RAM (for device data paths); its pages
        count as written by pyvisor from now on."""
        view, off = self._locate_write(gpa, size)
        return view[off:off + size]

    def read_u8(self, gpa: int) -> int:
        view, off = self._locate(gpa, 1)
        return view[off]

    def read_u16(self, gpa: int) -> int:
        view, off = self._locate(gpa, 2)
        return _U16.unpack_from(view, off)[0]

    def read_u32(self, gpa: int) -> int:
        view, off = self._locate(gpa, 4)
        return _U32.unpack_from(view, off)[0]

    def read_u64(self, gpa: int) -> int:
        view, off = self._locate(gpa, 8)
        return _U64.unpack_from(view, off)[0]

    def write_u8(self, gpa: int, value: int) -> None:
        view, off = self._locate_write(gpa, 1)
        view[off] = value

    def write_u16(self, gpa: int, value: int) -> None:
        view, off = self._locate_write(gpa, 2)
        _U16.pack_into(view, off, value)

    def write_u32(self, gpa: int, value: int) -> None:
        view, off = self._locate_write(gpa, 4)
        _U32.pack_into(view, off, value)

    def write_u64(self, gpa: int, value: int) -> None:
        view, off = self._locate_write(gpa, 8)
        _U64.pack_into(view, off, value)

    def close(self) -> None:
        """Forget the mappings; they are unmapped once no buffer() view references them."""
        slots, self._slots, self._ptrs = self._slots, (), []
        for _, _, view, written in slots:
            view.release()
            written.release()

    def __enter__(self) -> "GuestMemory":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
