import struct

import pytest

from pyvisor.errors import KernelError
from pyvisor.loader.elf import LoadSegment, load_elf, parse_elf
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20
EHDR = "<16sHHIQQQIHHHHHH"
PHDR = "<IIQQQQQQ"
PT_LOAD, PT_NOTE = 1, 4
KERNEL_VIRT = 0xFFFF_FFFF_8000_0000


def note(name: bytes, type_: int, desc: bytes) -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), type_) + pad(name) + pad(desc)


def build_elf(segments, entry=0x100000, notes=b"", *, ident_class=2, ident_data=1,
              e_type=2, machine=62, phentsize=56, phoff=64):
    """segments: (paddr, data, memsz) for PT_LOAD; data placed after the headers."""
    phdrs = [(PT_LOAD, paddr, data, memsz) for paddr, data, memsz in segments]
    if notes:
        phdrs.append((PT_NOTE, 0, notes, 0))
    offset = phoff + 56 * len(phdrs)
    table, blobs = b"", b""
    for p_type, paddr, data, memsz in phdrs:
        vaddr = paddr | KERNEL_VIRT if p_type == PT_LOAD else 0  # only p_paddr matters
        table += struct.pack(PHDR, p_type, 5, offset + len(blobs), vaddr, paddr, len(data),
                             memsz if p_type == PT_LOAD else len(data), 0x1000)
        blobs += data
    ident = b"\x7fELF" + bytes([ident_class, ident_data, 1]) + bytes(9)
    header = struct.pack(EHDR, ident, e_type, machine, 1, entry, phoff, 0, 0, 64,
                         phentsize, len(phdrs), 64, 0, 0)
    return header + bytes(phoff - 64) + table + blobs


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        yield m


def write(tmp_path, data, name="kernel.elf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_valid_load(tmp_path, mem):
    text, rodata = b"\x90" * 100 + b"\xf4", b"hello, world"
    path = write(tmp_path, build_elf([(0x100000, text, len(text)),
                                      (0x200000, rodata, 0x3000)], entry=0x100010))
    mem.fill(0x200000, 0x4000, 0xAA)  # BSS must be zeroed even over stale bytes
    kernel = load_elf(path, mem)
    assert (kernel.entry, kernel.pvh_entry) == (0x100010, None)
    assert (kernel.low, kernel.high) == (0x100000, 0x203000)
    assert mem.read(0x100000, len(text)) == text
    assert mem.read(0x200000, len(rodata)) == rodata
    assert mem.read(0x200000 + len(rodata), 0x3000 - len(rodata)) == bytes(0x3000 - len(rodata))
    assert mem.read_u8(0x203000) == 0xAA


def test_parse_describes_segments():
    image = parse_elf(build_elf([(0x100000, b"abc", 0x10)]), "k")
    assert image.segments == [LoadSegment(paddr=0x100000, offset=64 + 56, filesz=3, memsz=0x10)]
    assert image.entry == 0x100000


@pytest.mark.parametrize("desc", [struct.pack("<I", 0x100040), struct.pack("<Q", 0x100040)])
def test_pvh_entry_note(tmp_path, mem, desc):
    notes = note(b"GNU\0", 3, b"12345678") + note(b"Xen\0", 18, desc)
    kernel = load_elf(write(tmp_path, build_elf([(0x100000, bytes(0x100), 0x100)],
                                                entry=0xFFFF_FFFF_8100_0000, notes=notes)), mem)
    assert kernel.pvh_entry == 0x100040
    assert kernel.entry == 0xFFFF_FFFF_8100_0000  # not checked: the PVH entry is


def test_other_xen_notes_are_ignored():
    notes = note(b"Xen\0", 17, b"\1\2\3")
    assert parse_elf(build_elf([(0x100000, b"x", 1)], notes=notes), "k").pvh_entry is None


def expect(match, data=None, path=None, mem=None):
    with pytest.raises(KernelError, match=match) as exc:
        if path is None:
            parse_elf(data, "bad.elf")
        else:
            load_elf(path, mem)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_missing_file(tmp_path, mem):
    path = tmp_path / "nope.elf"
    message = expect("No such file or directory", path=path, mem=mem)
    assert message == f"kernel '{path}': No such file or directory"


def test_directory(tmp_path, mem):
    expect(r"^kernel '.*': Is a directory$", path=tmp_path, mem=mem)


def test_unreadable(tmp_path, mem, monkeypatch):
    """open() refusing, as it does for a non-root user on a mode-000 file (root reads anything)."""
    import errno
    import os

    path = write(tmp_path, build_elf([(0x100000, b"x", 1)]))
    real_open = os.open

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    expect("Permission denied", path=path, mem=mem)


@pytest.mark.parametrize("data, match", [
    (b"", "not an ELF file"),
    (b"MZ\x90\x00" + bytes(100), "not an ELF file"),
    (b"\x7fELF\x01\x01\x01" + bytes(45), "not a 64-bit ELF file"),
    (b"\x7fELF\x02\x02\x01" + bytes(60), "not a little-endian ELF file"),
    (b"\x7fELF\x02\x01\x01" + bytes(20), "truncated: the ELF header needs 64 bytes"),
])
def test_bad_identification(data, match):
    expect(f"^kernel 'bad.elf': {match}", data)


def test_wrong_machine():
    expect(r"not an x86-64 ELF file \(e_machine 183",
           build_elf([(0x100000, b"x", 1)], machine=183))


def test_not_executable():
    expect(r"not an executable ELF file \(e_type 3", build_elf([(0x100000, b"x", 1)], e_type=3))


def test_program_headers_truncated():
    data = build_elf([(0x100000, b"x", 1)])
    expect(r"truncated: the program headers need bytes up to 120 but the file has 100",
           data[:100])


def test_bad_program_header_size():
    expect("unexpected program header size 32", build_elf([(0x100000, b"x", 1)], phentsize=32))


def test_segment_data_truncated():
    data = build_elf([(0x100000, b"a" * 16, 16), (0x200000, b"b" * 100, 100)])
    message = expect("truncated", data[:-10])
    assert message == (f"kernel 'bad.elf': truncated: segment 1 needs bytes up to {len(data)} "
                       f"but the file has {len(data) - 10}")


def test_filesz_larger_than_memsz():
    expect(r"segment 0 has more file bytes \(16\) than memory bytes \(8\)",
           build_elf([(0x100000, b"a" * 16, 8)]))


def test_no_load_segments():
    expect(r"no loadable \(PT_LOAD\) segments", build_elf([]))
    expect(r"no loadable \(PT_LOAD\) segments", build_elf([(0x100000, b"", 0)]))


def test_segment_below_1m():
    expect(r"segment 0 at 0x9000 overlaps the boot structures below 1 MiB",
           build_elf([(0x9000, b"x", 1)], entry=0x9000))


def test_overlapping_segments():
    expect(r"segments 0 and 1 overlap at guest-physical 0x101000",
           build_elf([(0x101000, b"a", 0x1000), (0x100800, b"b", 0x1000)], entry=0x101000))


def test_adjacent_segments_are_fine():
    parse_elf(build_elf([(0x100000, b"a", 0x1000), (0x101000, b"b", 0x1000)]), "k")


def test_entry_outside_segments():
    expect(r"entry point 0x200000 is not inside any loaded segment",
           build_elf([(0x100000, b"a", 0x1000)], entry=0x200000))
    expect(r"entry point 0x101000 is not inside any loaded segment",
           build_elf([(0x100000, b"a", 0x1000)], entry=0x101000))


def test_pvh_entry_outside_segments():
    notes = note(b"Xen\0", 18, struct.pack("<I", 0x300000))
    expect(r"PVH entry point 0x300000 is not inside any loaded segment",
           build_elf([(0x100000, b"a", 0x1000)], notes=notes))


def test_bad_notes():
    expect("4 or 8", build_elf([(0x100000, b"a", 1)],
                               notes=note(b"Xen\0", 18, b"\1\2")))
    expect("truncated note", build_elf([(0x100000, b"a", 1)],
                                       notes=struct.pack("<III", 4, 64, 18) + b"Xen\0"))


def test_segment_beyond_ram(tmp_path, mem):
    path = write(tmp_path, build_elf([(0x100000, b"a", 1), (0x3F00000, b"b", 0x200000)]))
    message = expect("needs guest RAM", path=path, mem=mem)
    assert message == (f"kernel '{path}': needs guest RAM up to 0x4100000 "
                       f"but the guest has 64 MiB")
    assert mem.read_u8(0x100000) == 0  # nothing written when any segment is refused


def test_segment_in_mmio_hole(tmp_path):
    try:
        mem = GuestMemory(MemoryLayout(3 * 1024 * MIB + 4 * MIB))
    except Exception:
        pytest.skip("host cannot map 3 GiB of address space")
    with mem:
        path = write(tmp_path, build_elf([(0xFFF0_0000, b"a", 0x1000)], entry=0xFFF0_0000))
        expect("is in the MMIO hole", path=path, mem=mem)


def test_accepts_str_paths(tmp_path, mem):
    path = write(tmp_path, build_elf([(0x100000, b"\xf4", 1)]))
    assert load_elf(str(path), mem).high == 0x100001
