"""GuestMemory's written map (what snapshots copy back besides KVM's dirty log): every
write path marks exactly the pages it touches, reads mark nothing."""
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

PAGE = 4096


def marked(mem: GuestMemory) -> set[int]:
    written = mem.written_maps[0]
    return {p for p in range(len(written)) if written[p]}


def test_reads_mark_nothing_and_each_write_marks_its_pages():
    with GuestMemory(MemoryLayout(4 << 20)) as mem:
        mem.read(0x1000, 100)
        mem.read_u64(0x2000)
        assert marked(mem) == set()
        mem.write_u8(0x3000, 1)
        mem.write_u64(0x4FFC, 1 << 40)            # straddles pages 4 and 5
        mem.write(0x9000 - 1, b"ab")              # pages 8 and 9
        assert marked(mem) == {3, 4, 5, 8, 9}


def test_buffer_views_count_as_written_and_fill_marks_only_what_it_changes():
    with GuestMemory(MemoryLayout(4 << 20)) as mem:
        mem.buffer(0x10000, 3 * PAGE)
        mem.fill(0x100000, 1 << 20)               # zero fill of zero RAM: nothing written
        assert marked(mem) == {0x10, 0x11, 0x12}
        mem.fill(0x200000, 2 * PAGE, 0xAA)
        assert {0x200, 0x201} <= marked(mem)
        mem.mark_written(0x300000, 1)
        assert 0x300 in marked(mem)
