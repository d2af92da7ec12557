"""Device state for snapshots (pyvisor/devices/**: snapshot_state / restore_state): plain
data, round trips, interrupt lines driven again only when the restored state says so, and
saved state that does not fit the device refused with DeviceStateError."""
import pytest

from pyvisor.devices.legacy.i8042 import I8042
from pyvisor.devices.legacy.serial import Uart16550
from pyvisor.devices.pci.config_space import BAR0, COMMAND, COMMAND_MEMORY, PciConfigSpace
from pyvisor.devices.pci.msix import Msix
from pyvisor.devices.state import DeviceStateError
from pyvisor.snapshot.encoding import decode, encode
from virtio_driver import FakeRouter, FakeVm

IER, LCR, SCR = 1, 3, 7


def test_uart_registers_and_fifo_come_back_and_the_line_follows():
    levels = []
    uart = Uart16550(levels.append, lambda data: None)
    uart.pio_write(SCR, 1, 0x5A)
    uart.pio_write(IER, 1, 0x01)                  # receive interrupt on
    uart.receive(b"hi")
    assert levels[-1] is True
    saved = decode(encode(uart.snapshot_state()))  # survives the file encoding
    uart.pio_read(0, 1), uart.pio_read(0, 1)      # the guest reads both bytes: line low
    uart.pio_write(SCR, 1, 0)
    assert levels[-1] is False
    count = len(levels)
    uart.restore_state(saved)
    assert uart.pio_read(SCR, 1) == 0x5A
    assert levels[count:] == [True]               # pending input again: the line goes up
    uart.restore_state(saved)
    assert levels[count:] == [True]               # unchanged: nothing driven twice
    assert bytes([uart.pio_read(0, 1), uart.pio_read(0, 1)]) == b"hi"


def test_saved_state_of_the_wrong_shape_is_refused():
    uart = Uart16550(lambda level: None, lambda data: None)
    state = uart.snapshot_state()
    with pytest.raises(DeviceStateError, match="serial: saved ier is a str"):
        uart.restore_state({**state, "_ier": "x"})
    with pytest.raises(DeviceStateError, match="no lcr"):
        uart.restore_state({k: v for k, v in state.items() if k != "_lcr"})
    i8042 = I8042(lambda: None)
    with pytest.raises(DeviceStateError):
        i8042.restore_state({**i8042.snapshot_state(), "_obf": 3})


def test_pci_config_space_restores_writable_bytes_only_and_moves_bars():
    moves = []
    config = PciConfigSpace(0x1AF4, 0x1041, 0xFF0000)
    config.add_bar(0, 0x8000, "mem64")
    config.on_bar_change = lambda index, old, new: moves.append((old, new))
    config.write(BAR0, 4, 0xC0000000)
    config.write(COMMAND, 2, COMMAND_MEMORY)
    saved = config.snapshot_state()
    config.write(BAR0, 4, 0xC0010000)
    config.restore_state(saved)
    assert config.bar_address(0) == 0xC0000000 and moves[-1] == (0xC0010000, 0xC0000000)
    forged = bytearray(saved["data"])
    forged[0] ^= 1                                  # the vendor ID is not the guest's
    with pytest.raises(DeviceStateError, match="read-only byte 0x00"):
        config.restore_state({"data": bytes(forged)})


def test_msix_table_comes_back_with_its_routes():
    config = PciConfigSpace(0x1AF4, 0x1041, 0xFF0000)
    router, vm = FakeRouter(), FakeVm()
    msix = Msix(config, 2, 0, 0x4000, 0x5000, router, vm)
    try:
        msix.table_write(16 + 8, 4, 0x41)            # vector 1's data
        saved = msix.snapshot_state()
        msix.table_write(16 + 8, 4, 0x99)
        msix.restore_state(saved)
        assert msix.table_read(16 + 8, 4) == 0x41
        assert router.routes[router.allocated[1]][1] == 0x41
        with pytest.raises(DeviceStateError):
            msix.restore_state({**saved, "table": saved["table"][:-1]})
    finally:
        msix.close()
