import gc

import pytest

from pyvisor._native import ffi
from pyvisor.errors import ConfigError, GuestMemoryError
from pyvisor.memory.guest_memory import GuestMemory, check_host_can_back
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20
GIB = 1 << 30
MEMINFO = """MemTotal:        8000000 kB
MemFree:         4000000 kB
SwapTotal:       2000000 kB
SwapFree:        2000000 kB
"""


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(4 * MIB)) as m:
        yield m


def test_regions_give_host_addresses(mem):
    [(gpa, size, host)] = mem.regions
    assert (gpa, size) == (0, 4 * MIB)
    assert host and host % 4096 == 0


def vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping that starts at `address` (proc(5): hg is
    MADV_HUGEPAGE, nh MADV_NOHUGEPAGE)."""
    with open("/proc/self/smaps") as f:
        mapping = None
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                mapping = int(line.split("-")[0], 16)
            elif line.startswith("VmFlags:") and mapping == address:
                return line.split()[1:]
    raise AssertionError(f"no mapping starts at {address:#x}")


def test_ram_is_2mib_aligned_and_asks_for_huge_pages():
    """As QEMU's: KVM maps a guest 2 MiB page with one large page only where the host
    address is congruent to the guest-physical one."""
    with GuestMemory(MemoryLayout(4 * GIB)) as m:
        for gpa, size, host in m.regions:
            assert host % (2 * MIB) == 0 and gpa % (2 * MIB) == 0
            assert "hg" in vm_flags(host)


def test_snapshot_copies_of_ram_stay_sparse(mem):
    from pyvisor.snapshot.memory import MemoryImage
    image = MemoryImage(mem)
    assert "nh" in vm_flags(int(ffi.cast("uintptr_t", image.saved[0])))


def test_fresh_memory_is_zero(mem):
    assert mem.read(0, 4096) == bytes(4096)


def test_read_write_round_trip(mem):
    mem.write(0x1000, b"hello")
    assert mem.read(0x1000, 5) == b"hello"
    mem.write(0x2000, bytearray(b"ab"))
    mem.write(0x2002, memoryview(b"cd"))
    assert mem.read(0x2000, 4) == b"abcd"


def test_write_accepts_other_buffers(mem):
    import array
    mem.write(0x3000, array.array("I", [0x11223344]))
    assert mem.read_u32(0x3000) == 0x11223344


def test_integer_accessors_are_little_endian(mem):
    mem.write_u64(0x100, 0x1122334455667788)
    assert mem.read(0x100, 8) == bytes.fromhex("8877665544332211")
    assert mem.read_u32(0x100) == 0x55667788
    assert mem.read_u16(0x100) == 0x7788
    assert mem.read_u8(0x107) == 0x11
    mem.write_u8(0x200, 0xAB)
    mem.write_u16(0x202, 0xBEEF)
    mem.write_u32(0x204, 0xDEADBEEF)
    assert mem.read_u64(0x200) == 0xDEADBEEF_BEEF00AB


def test_fill(mem):
    mem.fill(0x10, 8, 0xCC)
    assert mem.read(0xF, 10) == b"\0" + b"\xcc" * 8 + b"\0"
    mem.fill(0x10, 8)
    assert mem.read(0x10, 8) == bytes(8)


def test_fill_across_chunks_with_stale_bytes(mem):
    """A fill longer than a chunk, over memory with stale bytes in some chunks only."""
    from pyvisor.memory.guest_memory import FILL_CHUNK
    mem.write(0x1000, b"\xaa" * 16)
    mem.write(0x1000 + FILL_CHUNK + 5, b"\xbb")
    mem.fill(0x1000, 2 * FILL_CHUNK + 7)
    assert mem.read(0x1000, 16) == bytes(16)
    assert mem.read_u8(0x1000 + FILL_CHUNK + 5) == 0
    mem.fill(0x1000, FILL_CHUNK + 3, 0x5A)
    assert mem.read(0x1000 + FILL_CHUNK - 1, 5) == b"\x5a" * 4 + b"\0"


def test_zero_fill_of_fresh_ram_allocates_nothing():
    """A 1 GiB BSS on fresh RAM: no host allocation in proportion to it, and the guest's
    pages stay untouched (the peak RSS hardly moves)."""
    import resource
    import tracemalloc
    from pyvisor.memory.layout import MemoryLayout
    with GuestMemory(MemoryLayout(1 << 30)) as big:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        try:
            big.fill(0, 1 << 30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert peak < 4 << 20
    assert grown < 32 << 10          # KiB: far below the 1 GiB filled


def test_buffer_is_zero_copy_and_writable(mem):
    view = mem.buffer(0x4000, 16)
    view[0:4] = b"abcd"
    assert mem.read(0x4000, 4) == b"abcd"
    mem.write(0x4004, b"efgh")
    assert bytes(view[4:8]) == b"efgh"


def test_contains(mem):
    assert mem.contains(0, 4 * MIB)
    assert mem.contains(4 * MIB - 8, 8)
    assert not mem.contains(4 * MIB - 7, 8)
    assert not mem.contains(4 * MIB, 1)
    assert not mem.contains(-1, 1)
    assert not mem.contains(0, -1)


@pytest.mark.parametrize("access", [
    lambda m: m.read(4 * MIB - 4, 8),
    lambda m: m.read(4 * MIB, 1),
    lambda m: m.read(-8, 8),
    lambda m: m.read(0, -1),
    lambda m: m.write(4 * MIB - 1, b"xy"),
    lambda m: m.read_u64(4 * MIB - 4),
    lambda m: m.write_u32(4 * MIB - 2, 0),
    lambda m: m.read_u8(4 * MIB),
    lambda m: m.fill(4 * MIB - 10, 11),
    lambda m: m.buffer(4 * MIB - 10, 11),
    lambda m: m.read(1 << 64, 1),
])
def test_out_of_bounds_raises(mem, access):
    with pytest.raises(GuestMemoryError, match=r"^guest-physical access .* is outside guest RAM$"):
        access(mem)


def test_error_message_format(mem):
    with pytest.raises(GuestMemoryError) as exc:
        mem.read(0x400000, 16)
    assert str(exc.value) == "guest-physical access 0x400000 (+16 bytes) is outside guest RAM"


def test_out_of_bounds_write_does_not_write_partially(mem):
    with pytest.raises(GuestMemoryError):
        mem.write(4 * MIB - 2, b"abcd")
    assert mem.read(4 * MIB - 2, 2) == b"\0\0"


def test_close_is_idempotent_and_blocks_access():
    m = GuestMemory(MemoryLayout(2 * MIB))
    m.write_u32(0, 1)
    m.close()
    m.close()
    assert m.regions == []
    with pytest.raises(GuestMemoryError):
        m.read_u32(0)
    with pytest.raises(GuestMemoryError):
        m.write(0, b"x")
    assert not m.contains(0, 1)


def test_buffer_outlives_close_without_crashing():
    m = GuestMemory(MemoryLayout(2 * MIB))
    view = m.buffer(0, 8)
    m.close()
    del m
    gc.collect()
    view[0:4] = b"live"  # the mapping stays until the view goes away
    assert bytes(view[0:4]) == b"live"


def _mapped_bytes() -> int:
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            total += end - start
    return total


def test_close_unmaps():
    before = _mapped_bytes()
    m = GuestMemory(MemoryLayout(64 * MIB))
    assert _mapped_bytes() >= before + 64 * MIB
    m.close()
    assert _mapped_bytes() < before + 64 * MIB


def test_split_layout_rejects_access_in_the_hole():
    # A 4 GiB + 4 MiB layout maps only what it needs: anonymous mappings are lazily backed.
    layout = MemoryLayout(3 * GIB + 4 * MIB)
    try:
        m = GuestMemory(layout)
    except ConfigError:
        pytest.skip("host cannot map 3 GiB of address space")
    with m:
        assert [(g, s) for g, s, _ in m.regions] == [(0, 3 * GIB), (4 * GIB, 4 * MIB)]
        m.write_u64(4 * GIB, 42)
        assert m.read_u64(4 * GIB) == 42
        m.write_u32(3 * GIB - 4, 7)
        with pytest.raises(GuestMemoryError):
            m.read(3 * GIB - 4, 8)  # straddles the start of the hole
        with pytest.raises(GuestMemoryError):
            m.read_u8(3 * GIB + 5)
        with pytest.raises(GuestMemoryError):
            m.read(4 * GIB - 4, 8)  # straddles the end of the hole
        with pytest.raises(GuestMemoryError):
            m.read(4 * GIB + 4 * MIB - 4, 8)


def test_host_limit_check_accepts_what_fits():
    check_host_can_back(9 * GIB, MEMINFO)
    check_host_can_back(10 * 1024 ** 3, "")  # unknown format: no judgement


def test_host_limit_check_rejects_too_much():
    with pytest.raises(ConfigError) as exc:
        check_host_can_back(1000 * GIB, MEMINFO)
    message = str(exc.value)
    assert message.startswith("cannot back 1000 GiB of guest RAM on this host:")
    assert "7.63 GiB of memory" in message and "1.91 GiB of swap" in message


def test_host_limit_check_without_swap_line():
    with pytest.raises(ConfigError):
        check_host_can_back(8 * GIB, "MemTotal:  1000 kB\n")


def test_impossible_size_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^cannot back 1000 GiB of guest RAM on this host"):
        GuestMemory(MemoryLayout(1000 * GIB))


def test_failed_mapping_is_a_config_error(monkeypatch):
    import pyvisor.memory.guest_memory as gm
    monkeypatch.setattr(gm, "_read_meminfo", lambda: "")
    with pytest.raises(ConfigError, match=r"^cannot back 1024 TiB of guest RAM on this host: "
                                          r"Cannot allocate memory$"):
        GuestMemory(MemoryLayout(1 << 50))  # beyond any x86-64 user address space
