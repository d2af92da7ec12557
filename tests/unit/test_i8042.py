import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.legacy.i8042 import (
    COMMAND_PORT, DATA_PORT, STATUS_AUXDATA, STATUS_CMD, STATUS_IBF, STATUS_OBF,
    STATUS_SYS, STATUS_UNLOCKED, I8042)


class Kbc:
    """The controller on a real PioBus, driven the way Linux's __i8042_command() does."""

    def __init__(self):
        self.resets = 0
        self.irqs = []
        self.dev = I8042(self._reset, irq=self.irqs.append)
        self.bus = PioBus()
        self.bus.register(DATA_PORT, 1, self.dev.data_port, "i8042-data")
        self.bus.register(COMMAND_PORT, 1, self.dev.command_port, "i8042-cmd")

    def _reset(self):
        self.resets += 1

    def status(self):
        return self.bus.read(COMMAND_PORT, 1)

    def command(self, cmd, params=(), nread=0):
        """Returns the bytes read, or None where Linux's wait_read would time out."""
        assert not self.status() & STATUS_IBF
        self.bus.write(COMMAND_PORT, 1, cmd)
        for p in params:
            assert not self.status() & STATUS_IBF
            self.bus.write(DATA_PORT, 1, p)
        out = []
        for _ in range(nread):
            if not self.status() & STATUS_OBF:
                return None
            out.append(self.bus.read(DATA_PORT, 1))
        return out

    def flush(self):
        n = 0
        while self.status() & STATUS_OBF:
            self.bus.read(DATA_PORT, 1)
            n += 1
            assert n < 16
        return n


@pytest.fixture
def k():
    return Kbc()


def test_power_on_status(k):
    s = k.status()
    assert s & STATUS_OBF == 0           # Linux's i8042_flush ends at once
    assert s & STATUS_IBF == 0
    assert s & STATUS_UNLOCKED           # else Linux warns "Keylock active"
    assert s & STATUS_SYS
    assert k.flush() == 0


def test_pit_ports_between_are_not_claimed(k):
    for port in (0x61, 0x62, 0x63):
        assert k.bus.read(port, 1) == 0xFF
    assert k.bus.unclaimed_reads == 3


def test_self_test_and_interface_test(k):
    assert k.command(0xAA, nread=1) == [0x55]
    assert k.command(0xAB, nread=1) == [0x00]
    assert k.status() & STATUS_OBF == 0


def test_command_data_flag(k):
    k.bus.write(COMMAND_PORT, 1, 0xAD)
    assert k.status() & STATUS_CMD
    k.bus.write(DATA_PORT, 1, 0xF4)      # a byte for the keyboard: enable scanning
    assert not k.status() & STATUS_CMD
    assert k.bus.read(DATA_PORT, 1) == 0xFA      # the keyboard's ACK


def test_ctr_read_write(k):
    (ctr,) = k.command(0x20, nread=1)
    assert ctr == 0x65
    assert k.command(0x20, nread=1) == [ctr]   # Linux wants two equal reads
    k.command(0x60, params=[0x74])
    assert k.command(0x20, nread=1) == [0x74]
    assert k.status() & STATUS_SYS
    k.command(0x60, params=[0x70])
    assert not k.status() & STATUS_SYS   # status SYS follows CTR bit 2


def test_port_enable_disable_commands_track_ctr(k):
    k.command(0x60, params=[0x00])
    k.command(0xAD)
    assert k.command(0x20, nread=1) == [0x10]
    k.command(0xA7)
    assert k.command(0x20, nread=1) == [0x30]
    k.command(0xAE)
    assert k.command(0x20, nread=1) == [0x20]
    k.command(0xA8)
    assert k.command(0x20, nread=1) == [0x00]


def test_output_port(k):
    assert k.command(0xD0, nread=1) == [0xCF]
    k.command(0xD1, params=[0xDF])
    assert k.resets == 0
    assert k.command(0xD0, nread=1) == [0xDF]
    k.command(0xD1, params=[0xDE])       # bit 0 low: CPU reset
    assert k.resets == 1


@pytest.mark.parametrize("cmd,resets", [(0xFE, 1), (0xF0, 1), (0xFC, 1), (0xFF, 0), (0xF1, 0)])
def test_pulse_reset(k, cmd, resets):
    k.command(cmd)
    assert k.resets == resets


def test_reset_write_to_data_port_does_not_reset(k):
    k.bus.write(DATA_PORT, 1, 0xFE)
    assert k.resets == 0


def test_linux_probe_drops_aux_without_timeouts(k):
    """i8042_controller_check / init and i8042_check_aux(), as Linux runs them."""
    assert k.flush() == 0
    ctr = [k.command(0x20, nread=1), k.command(0x20, nread=1)]
    assert ctr[0] == ctr[1] is not None
    ctr = (ctr[0][0] | 0x10) & ~0x01
    k.command(0x60, params=[ctr])
    assert k.flush() == 0
    # check_aux: the loopback answers at once, but not as AUX data ("auxerr")...
    k.flush()
    k.bus.write(COMMAND_PORT, 1, 0xD3)
    k.bus.write(DATA_PORT, 1, 0x5A)
    status = k.status()
    assert status & STATUS_OBF and not status & STATUS_AUXDATA
    # ...so Linux runs the AUX interface test, whose error code drops the AUX port.
    (aux_test,) = k.command(0xA9, nread=1)
    assert aux_test not in (0x00, 0xFA, 0xFF)
    assert k.flush() == 0


def test_aux_send_gets_no_reply(k):
    assert k.command(0xD4, params=[0xF2], nread=1) is None


def test_new_command_cancels_pending_parameter(k):
    k.bus.write(COMMAND_PORT, 1, 0x60)
    k.bus.write(COMMAND_PORT, 1, 0xAA)
    k.bus.write(DATA_PORT, 1, 0x00)      # not taken as the CTR
    assert k.bus.read(DATA_PORT, 1) == 0x55
    assert k.command(0x20, nread=1) == [0x65]


def test_data_read_clears_obf_and_repeats_last_byte(k):
    k.command(0xAA)
    assert k.status() & STATUS_OBF
    assert k.bus.read(DATA_PORT, 1) == 0x55
    assert not k.status() & STATUS_OBF
    assert k.bus.read(DATA_PORT, 1) == 0x55
