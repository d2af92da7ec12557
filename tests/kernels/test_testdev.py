"""pc-testdev behind --testdev: a tiny kernel's round trips through the scratch register,
its byte view and the scratch memory, a flushed page, and interrupts raised and lowered
through the IRQ-line ports (edge-triggered IOAPIC pins: one interrupt per rising edge)."""
import pytest

from helpers import guest, needs_kvm, pyvisor

pytestmark = [needs_kvm, pytest.mark.kvm]


def test_testdev_round_trips_and_irq_lines():
    result = pyvisor("run", guest("testdev"), "--mem", "32M", "--testdev", "--console", "stdio")
    out = result.stdout.decode().replace("\r\n", "\n")
    assert result.returncode == 0, result.stderr.decode() + out
    assert ("scratch=0x12345678 byte1=0x56 after_byte=0x12ab5678 after_word=0xbeef5678\n"
            in out), out
    assert "flush before=0xc0ffee11 after=0xc0ffee11\n" in out
    assert "irq line=10 raised=1 lowered=1 again=2\n" in out
    assert "irq line=17 raised=1 lowered=1 again=2\n" in out
    assert "iomem quad=0x1122334455667788 last=0xaa tail=0xaa000000\n" in out
    assert "testdev: done" in out


def test_without_testdev_the_ports_are_not_there():
    """Unclaimed ports read as all ones: the scratch register holds nothing, the IRQ-line
    ports raise nothing, and 0xE9 is the debug console again (it reads 0xE9, as QEMU's)."""
    result = pyvisor("run", guest("testdev"), "--mem", "32M", "--console", "stdio",
                     "--timeout", "20")
    out = result.stdout.decode().replace("\r\n", "\n")
    assert "scratch=0xffffffff byte1=0xe9 after_byte=0xffffffff" in out, out
    assert "irq line=10 raised=0 lowered=0 again=0\n" in out
