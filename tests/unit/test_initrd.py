import os

import pytest

from pyvisor.errors import KernelError
from pyvisor.loader.initrd import place_initrd
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        yield m


def initrd(tmp_path, size, name="initrd.img"):
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_placed_at_the_top_page_aligned(tmp_path, mem):
    path = initrd(tmp_path, 5000)
    gpa, size = place_initrd(mem, path, 0x7FFFFFFF, 2 * MIB)
    assert size == 5000
    assert gpa % 4096 == 0
    assert gpa == (64 * MIB - 5000) // 4096 * 4096  # as high as possible
    assert gpa + size <= 64 * MIB
    assert mem.read(gpa, size) == path.read_bytes()


def test_below_addr_max(tmp_path, mem):
    gpa, size = place_initrd(mem, initrd(tmp_path, 8192), 32 * MIB - 1, 2 * MIB)
    assert gpa + size <= 32 * MIB  # addr_max is the last byte it may occupy
    assert gpa == 32 * MIB - 8192


def test_unaligned_addr_max(tmp_path, mem):
    gpa, size = place_initrd(mem, initrd(tmp_path, 100), 0x1234567, 2 * MIB)
    assert gpa % 4096 == 0 and gpa + size - 1 <= 0x1234567 and gpa == 0x1234000


def test_avoids_the_kernel(tmp_path, mem):
    # Exactly the room between the kernel's end and the top of RAM.
    gpa, size = place_initrd(mem, initrd(tmp_path, 4 * MIB), 0x7FFFFFFF, 60 * MIB)
    assert gpa == 60 * MIB


def test_too_large(tmp_path, mem):
    path = initrd(tmp_path, 4 * MIB + 1)
    with pytest.raises(KernelError) as info:
        place_initrd(mem, path, 0x7FFFFFFF, 60 * MIB)
    message = str(info.value)
    assert message.startswith(f"initrd {str(path)!r} is too large: 4 MiB")
    assert "4194305 bytes" in message and "only 4 MiB of RAM free" in message
    assert "\n" not in message


def test_too_large_below_addr_max(tmp_path, mem):
    with pytest.raises(KernelError, match="too large"):
        place_initrd(mem, initrd(tmp_path, 2 * MIB), 3 * MIB - 1, 2 * MIB)


def test_stays_below_4g_and_skips_the_mmio_hole(tmp_path):
    layout = MemoryLayout(4 * GIB + 64 * MIB)  # RAM 0-3 GiB and 4-5 GiB, sparse mappings
    try:
        m = GuestMemory(layout)
    except Exception as e:  # a small test host may refuse to back it
        pytest.skip(f"cannot map {layout.ram_size} bytes here: {e}")
    with m:
        gpa, size = place_initrd(m, initrd(tmp_path, 4096), 0xFFFFFFFF, 2 * MIB)
        assert gpa + size <= 3 * GIB and gpa == 3 * GIB - 4096


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "No such file or directory"),
    (lambda p: p, "Is a directory|not a regular file"),
    (lambda p: (p / "empty").write_bytes(b"") or p / "empty", "the file is empty"),
])
def test_file_errors(tmp_path, mem, make, message):
    path = make(tmp_path)
    with pytest.raises(KernelError, match=message) as info:
        place_initrd(mem, path, 0x7FFFFFFF, 2 * MIB)
    assert str(info.value).startswith(f"initrd {str(path)!r}")


def test_kernel_that_takes_no_initrd(tmp_path, mem):
    """initrd_addr_max 0 leaves no room anywhere: said as such, not as 'too large'."""
    with pytest.raises(KernelError, match=r"initrd_addr_max is 0x0\).*cannot be given an initrd"):
        place_initrd(mem, initrd(tmp_path, 4096), 0, 2 * MIB)


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path, mem):
    import os

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KernelError, match=r"not a regular file \(a FIFO\)"):
        place_initrd(mem, tmp_path / "fifo", 0x7FFFFFFF, 2 * MIB)
