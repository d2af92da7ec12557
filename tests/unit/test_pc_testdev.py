"""QEMU's pc-testdev (hw/misc/pc-testdev.c): the scratch register and its byte view, the
scratch memory window, the IRQ-line ports and the flush-page port."""
import pytest

from pyvisor.devices.legacy.pc_testdev import IrqLines, PageFlusher, PcTestdev
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


@pytest.fixture
def dev():
    flushed = []
    d = PcTestdev(lambda gpa: flushed.append(gpa) or True)
    d.flushed = flushed
    return d


def test_scratch_register_any_size_and_the_byte_view(dev):
    dev.pio_write(0, 4, 0x12345678)                # outl 0xE0
    assert dev.pio_read(0, 4) == 0x12345678
    assert dev.pio_read(8 + 1, 1) == 0x56          # inb 0xE9
    dev.pio_write(8 + 2, 1, 0xAB)                  # outb 0xEA
    assert dev.pio_read(0, 4) == 0x12AB5678
    dev.pio_write(2, 2, 0xBEEF)                    # outw 0xE2
    assert dev.pio_read(0, 4) == 0xBEEF5678
    assert dev.pio_read(3, 4) == 0xBE              # past the register: only its bytes
    assert dev.pio_read(8, 4) == 0xBEEF5678        # the byte view, 4 bytes at once


def test_flush_port_takes_the_written_address(dev):
    dev.pio_write(4, 4, 0x00123456)                # outl 0xE4
    assert dev.flushed == [0x00123456]
    assert dev.pio_read(4, 4) == 0


def test_iomem_window(dev):
    dev.mmio_write(0x100, 8, 0x1122334455667788)
    assert dev.mmio_read(0x104, 4) == 0x11223344
    dev.mmio_write(0xFFFE, 4, 0xDDCCBBAA)          # clipped at the window's end
    assert dev.mmio_read(0xFFFC, 4) == 0xBBAA0000
    assert dev.mmio_read(0xFFFF, 8) == 0xBB


def test_irq_lines():
    calls = []
    lines = IrqLines(lambda n, level: calls.append((n, level)))
    lines.pio_write(10, 1, 1)
    lines.pio_write(23, 1, 0)
    lines.pio_write(17, 4, 0x100)
    assert calls == [(10, True), (23, False), (17, True)]


def test_snapshot_round_trip(dev):
    dev.pio_write(0, 4, 0xCAFEF00D)
    dev.mmio_write(0x20, 2, 0x4242)
    other = PcTestdev(lambda gpa: True)
    other.restore_state(dev.snapshot_state())
    assert other.pio_read(0, 4) == 0xCAFEF00D and other.mmio_read(0x20, 2) == 0x4242


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return len(f.readlines())


def test_flushing_keeps_the_page_its_contents_and_the_mappings():
    with GuestMemory(MemoryLayout(16 * MIB)) as mem:
        mem.write(0x200000, b"kept across a flush")
        flusher = PageFlusher(mem.regions)
        before = _maps()
        assert all(flusher.flush(0x200000 + i * 4096 + 12) for i in range(64))
        assert _maps() == before                   # the split mappings merged back
        assert mem.read(0x200000, 19) == b"kept across a flush"
        mem.write(0x200010, b"!")                  # still writable
        assert not flusher.flush(32 * MIB)         # not guest RAM
