import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.legacy.debugcon import DEBUGCON_PORT, DebugConsole
from pyvisor.devices.legacy.exit_device import EXIT_PORT, ExitDevice


def test_debugcon_outputs_low_byte():
    out = []
    bus = PioBus()
    bus.register(DEBUGCON_PORT, 1, DebugConsole(out.append))
    bus.write(0xE9, 1, ord("o"))
    bus.write(0xE9, 1, ord("k"))
    bus.write(0xE9, 2, 0x120A)
    assert out == [b"o", b"k", b"\n"]


def test_debugcon_read_identifies_itself():
    dev = DebugConsole(lambda b: None)
    assert dev.pio_read(0, 1) == 0xE9


@pytest.mark.parametrize("size,value,status", [
    (1, 0, 1), (1, 1, 3), (1, 0x10, 0x21), (1, 0xFF, 0x1FF),
    (2, 0x1234, 0x2469), (4, 0xFFFFFFFF, 0x1FFFFFFFF), (1, 0x1FF, 0x1FF)])
def test_exit_device_status(size, value, status):
    got = []
    bus = PioBus()
    bus.register(EXIT_PORT, 1, ExitDevice(got.append))
    bus.write(0xF4, size, value)
    assert got == [status]


@pytest.mark.parametrize("size,ones", [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)])
def test_exit_device_reads_all_ones(size, ones):
    got = []
    assert ExitDevice(got.append).pio_read(0, size) == ones
    assert got == []
