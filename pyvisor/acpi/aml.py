"""A minimal AML encoder (ACPI 6.x, chapter 20): just what pyvisor's DSDT needs.

Every function returns the encoded bytes of one term, so a table body is a concatenation:

    scope("\\_SB", device("PCI0", name("_HID", eisaid("PNP0A03")), ...))

Names are written as in ASL ("\\_SB.PCI0", "^FOO", "_S5"); short segments are padded with
'_' as iasl does ("_S5" -> "_S5_").
"""
from __future__ import annotations

import struct

# Opcodes (ACPI 6.x, 20.3).
ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
METHOD_OP = 0x14
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82      # after EXT_OP_PREFIX
ROOT_CHAR = 0x5C      # '\'
PARENT_PREFIX = 0x5E  # '^'
RETURN_OP = 0xA4

PKG_LENGTH_MAX = (1 << 28) - 1

_LEAD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME = _LEAD | frozenset(b"0123456789")


def pkg_length(body_len: int) -> bytes:
    """The PkgLength for a body of body_len bytes. The encoded value counts the PkgLength
    bytes themselves, so the encoding is 1 byte for bodies up to 62 bytes, 2 up to
    4093, 3 up to 2**20 - 4, 4 beyond."""
    if body_len < 0:
        raise ValueError("negative package length")
    if body_len + 1 <= 0x3F:
        return bytes((body_len + 1,))
    for extra in (1, 2, 3):
        total = body_len + 1 + extra
        if total < 1 << (4 + 8 * extra):
            out = [(extra << 6) | (total & 0x0F)]
            out += [(total >> (4 + 8 * i)) & 0xFF for i in range(extra)]
            return bytes(out)
    raise ValueError(f"package of {body_len} bytes is too large for a PkgLength")


def name_seg(seg: str) -> bytes:
    """One 4-character NameSeg, padded with '_'."""
    raw = seg.encode("ascii")
    if not 1 <= len(raw) <= 4 or raw[0] not in _LEAD or any(c not in _NAME for c in raw):
        raise ValueError(f"invalid AML name segment {seg!r}")
    return raw.ljust(4, b"_")


def name_string(path: str) -> bytes:
    """A NameString: optional root '\\' or parent '^' prefixes, then dot-separated segments."""
    prefix = b""
    rest = path
    if rest.startswith("\\"):
        prefix, rest = bytes((ROOT_CHAR,)), rest[1:]
    else:
        while rest.startswith("^"):
            prefix += bytes((PARENT_PREFIX,))
            rest = rest[1:]
    segs = [name_seg(s) for s in rest.split(".")] if rest else []
    if not segs:
        body = b"\x00"                      # NullName
    elif len(segs) == 1:
        body = segs[0]
    elif len(segs) == 2:
        body = bytes((DUAL_NAME_PREFIX,)) + segs[0] + segs[1]
    else:
        if len(segs) > 255:
            raise ValueError("too many name segments")
        body = bytes((MULTI_NAME_PREFIX, len(segs))) + b"".join(segs)
    return prefix + body


def integer(value: int) -> bytes:
    """The shortest ComputationalData for an unsigned integer (up to 64 bits)."""
    if value < 0 or value >> 64:
        raise ValueError(f"AML integer out of range: {value}")
    if value == 0:
        return bytes((ZERO_OP,))
    if value == 1:
        return bytes((ONE_OP,))
    if value <= 0xFF:
        return bytes((BYTE_PREFIX, value))
    if value <= 0xFFFF:
        return bytes((WORD_PREFIX,)) + struct.pack("<H", value)
    if value <= 0xFFFFFFFF:
        return bytes((DWORD_PREFIX,)) + struct.pack("<I", value)
    return bytes((QWORD_PREFIX,)) + struct.pack("<Q", value)


def string(text: str) -> bytes:
    """A String (ASCII, NUL-terminated)."""
    raw = text.encode("ascii")
    if b"\x00" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes((STRING_PREFIX,)) + raw + b"\x00"


def eisaid_value(pnp_id: str) -> int:
    """The 32-bit compressed EISA id of e.g. "PNP0A03" (what ASL's EISAID() yields)."""
    if (len(pnp_id) != 7 or not all("A" <= c <= "Z" for c in pnp_id[:3])
            or any(c not in "0123456789ABCDEF" for c in pnp_id[3:])):
        raise ValueError(f"invalid EISA id {pnp_id!r}")
    c1, c2, c3 = (ord(c) - 0x40 for c in pnp_id[:3])
    product = int(pnp_id[3:], 16)
    raw = bytes(((c1 << 2) | (c2 >> 3), ((c2 & 7) << 5) | c3, product >> 8, product & 0xFF))
    return int.from_bytes(raw, "little")


def eisaid(pnp_id: str) -> bytes:
    """EISAID("PNP0A03") as an AML integer (always DWordConst, as iasl emits it)."""
    return bytes((DWORD_PREFIX,)) + struct.pack("<I", eisaid_value(pnp_id))


def name(path: str, value: bytes) -> bytes:
    """Name(path, value); value is an encoded data object (integer(), package(), ...)."""
    return bytes((NAME_OP,)) + name_string(path) + value


def package(*elements: bytes) -> bytes:
    """Package(){elements}; each element an encoded data object."""
    if len(elements) > 255:
        raise ValueError("PackageOp holds at most 255 elements")
    body = bytes((len(elements),)) + b"".join(elements)
    return bytes((PACKAGE_OP,)) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    """Buffer(){data}."""
    body = integer(len(data)) + bytes(data)
    return bytes((BUFFER_OP,)) + pkg_length(len(body)) + body


def scope(path: str, *terms: bytes) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes((SCOPE_OP,)) + pkg_length(len(body)) + body


def device(path: str, *terms: bytes) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes((EXT_OP_PREFIX, DEVICE_OP)) + pkg_length(len(body)) + body


def method(path: str, nargs: int, *terms: bytes, serialized: bool = False,
           sync_level: int = 0) -> bytes:
    if not 0 <= nargs <= 7 or not 0 <= sync_level <= 15:
        raise ValueError("method takes 0-7 arguments and sync level 0-15")
    flags = nargs | (0x08 if serialized else 0) | (sync_level << 4)
    body = name_string(path) + bytes((flags,)) + b"".join(terms)
    return bytes((METHOD_OP,)) + pkg_length(len(body)) + body


def return_(value: bytes) -> bytes:
    return bytes((RETURN_OP,)) + value


# --- resource descriptors (ACPI 6.x, 6.4) ---------------------------------------------------

# General flags of address space descriptors.
RES_CONSUMER = 0x01     # clear: ResourceProducer (what a host bridge's windows are)
RES_SUB_DECODE = 0x02
RES_MIN_FIXED = 0x04
RES_MAX_FIXED = 0x08
_PRODUCER_FIXED = RES_MIN_FIXED | RES_MAX_FIXED

_TYPE_MEMORY = 0
_TYPE_IO = 1
_TYPE_BUS = 2

IO_ENTIRE_RANGE = 0x03   # type-specific flags of an I/O range
MEM_READ_WRITE = 0x01    # type-specific flags of a memory range
MEM_NON_CACHEABLE = 0x00
MEM_CACHEABLE = 0x02
MEM_PREFETCHABLE = 0x06


def io_port(minimum: int, maximum: int, alignment: int, length: int) -> bytes:
    """IO(Decode16, min, max, alignment, length): small descriptor 0x47."""
    return struct.pack("<BBHHBB", 0x47, 0x01, minimum, maximum, alignment, length)


def irq_noflags(*irqs: int) -> bytes:
    """IRQNoFlags(){irqs}: small descriptor 0x22 (ISA: edge, active-high, exclusive)."""
    mask = 0
    for irq in irqs:
        if not 0 <= irq <= 15:
            raise ValueError(f"ISA IRQ {irq} out of range")
        mask |= 1 << irq
    return struct.pack("<BH", 0x22, mask)


def _word_address(rtype: int, tflags: int, minimum: int, maximum: int,
                  general: int = _PRODUCER_FIXED) -> bytes:
    length = maximum - minimum + 1
    return struct.pack("<BHBBBHHHHH", 0x88, 13, rtype, general, tflags,
                       0, minimum, maximum, 0, length)


def word_bus_number(minimum: int, maximum: int) -> bytes:
    """WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)."""
    return _word_address(_TYPE_BUS, 0, minimum, maximum)


def word_io(minimum: int, maximum: int) -> bytes:
    """WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)."""
    return _word_address(_TYPE_IO, IO_ENTIRE_RANGE, minimum, maximum)


def dword_memory(minimum: int, maximum: int,
                 tflags: int = MEM_READ_WRITE | MEM_NON_CACHEABLE) -> bytes:
    """DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
    0, min, max, 0, len)."""
    length = maximum - minimum + 1
    return struct.pack("<BHBBBIIIII", 0x87, 23, _TYPE_MEMORY, _PRODUCER_FIXED, tflags,
                       0, minimum, maximum, 0, length)


def memory32_fixed(base: int, length: int) -> bytes:
    """Memory32Fixed(ReadWrite, base, length): large descriptor 0x86."""
    return struct.pack("<BHBII", 0x86, 9, MEM_READ_WRITE, base, length)


def interrupt_edge_high(gsi: int) -> bytes:
    """Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive){gsi}: extended interrupt
    descriptor 0x89 (flags: bit 0 consumer, bit 1 edge)."""
    return struct.pack("<BHBBI", 0x89, 6, 0x03, 1, gsi)


def resource_template(*descriptors: bytes) -> bytes:
    """ResourceTemplate(){...}: a Buffer ending with an End Tag whose checksum byte is 0
    (meaning "treat as checksummed", as iasl emits)."""
    return buffer(b"".join(descriptors) + b"\x79\x00")
