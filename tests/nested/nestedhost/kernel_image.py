"""Kernel images: the uncompressed vmlinux ELF inside a bzImage, and its PVH entry note.

pyvisor loads ELF kernels, and QEMU boots an ELF with a PVH note directly, skipping the
bzImage's self-decompression, which costs about 2.7 s under TCG for Debian's XZ kernel.
"""
from __future__ import annotations

import lzma
import struct
import subprocess
import zlib
from pathlib import Path

XEN_ELFNOTE_PHYS32_ENTRY = 18


class ImageError(RuntimeError):
    """Not a bzImage / vmlinux we understand."""


def bzimage_payload(bzimage: bytes) -> bytes:
    """The compressed kernel: `payload_offset`/`payload_length` of the setup header (0x248,
    0x24c), counted from the protected-mode code after `(setup_sects + 1) * 512` bytes."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise ImageError("not a bzImage (no HdrS setup header)")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start:start + length]


def decompress_payload(payload: bytes) -> bytes:
    """Decompress by magic; the kernel build appends the 4-byte uncompressed size."""
    body = payload[:-4]
    if payload[:4] == b"\x02\x21\x4c\x18":            # LZ4 legacy frames (`lz4 -l`)
        result = subprocess.run(["lz4", "-dc"], input=body, capture_output=True)
        if result.returncode != 0:
            raise ImageError(f"lz4 -d failed: {result.stderr.decode().strip()}")
        return result.stdout
    if payload[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor().decompress(payload)
    if payload[:2] == b"\x1f\x8b":
        return zlib.decompressobj(31).decompress(payload)
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dc"], input=body, capture_output=True,
                              check=True).stdout
    raise ImageError(f"unknown kernel compression (magic {payload[:6].hex()})")


def extract_vmlinux(bzimage: Path, out: Path) -> Path:
    """Write the bzImage's vmlinux ELF to `out` (atomically) and check it has a PVH entry."""
    elf = decompress_payload(bzimage_payload(bzimage.read_bytes()))
    if elf[:4] != b"\x7fELF":
        raise ImageError(f"{bzimage}: the payload is not an ELF file")
    if pvh_entry(elf) is None:
        raise ImageError(f"{bzimage}: the vmlinux has no PVH entry note")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)
    return out


def elf_notes(elf: bytes) -> list[tuple[str, int, bytes]]:
    """(name, type, desc) of every note in the PT_NOTE segments of an ELF64 file."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    notes = []
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:                                  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            pos += 12
            name = elf[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
            pos += (namesz + 3) & ~3
            notes.append((name, n_type, elf[pos:pos + descsz]))
            pos += (descsz + 3) & ~3
    return notes


def pvh_entry(elf: bytes | Path) -> int | None:
    """The 32-bit PVH entry point (Xen note XEN_ELFNOTE_PHYS32_ENTRY), or None."""
    if isinstance(elf, Path):
        elf = elf.read_bytes()
    for name, n_type, desc in elf_notes(elf):
        if name == "Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
            return int.from_bytes(desc[:8], "little")
    return None
