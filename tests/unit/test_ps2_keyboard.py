"""The PS/2 keyboard behind the i8042, driven through the controller's ports as Linux's
atkbd drives it, and Ctrl-Alt-Del typed from the host. Expected bytes are from the
scancode tables of the PS/2 keyboard specification (Microsoft's "Keyboard Scan Code
Specification", rev. 1.3a: left Ctrl 1D / 14, left Alt 38 / 11, Delete E0 53 / E0 71)."""
import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.legacy.i8042 import COMMAND_PORT, DATA_PORT, STATUS_OBF, I8042
from pyvisor.devices.legacy.ps2_keyboard import QUEUE_LIMIT, KeyboardError
from pyvisor.devices.state import DeviceStateError

# Set 1 (what a translating controller delivers) and set 2, press then release.
CAD_SET1 = [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]
CAD_SET2 = [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14]


class Kbd:
    def __init__(self):
        self.irqs = []
        self.dev = I8042(lambda: None, irq=self.irqs.append)
        self.bus = PioBus()
        self.bus.register(DATA_PORT, 1, self.dev.data_port, "i8042-data")
        self.bus.register(COMMAND_PORT, 1, self.dev.command_port, "i8042-cmd")

    def send(self, *data):
        """Bytes to the keyboard; returns everything it answers."""
        for b in data:
            self.bus.write(DATA_PORT, 1, b)
        return self.drain()

    def drain(self):
        out = []
        while self.bus.read(COMMAND_PORT, 1) & STATUS_OBF:
            out.append(self.bus.read(DATA_PORT, 1))
            assert len(out) <= 2 * QUEUE_LIMIT
        return out

    def ctr(self, value):
        self.bus.write(COMMAND_PORT, 1, 0x60)
        self.bus.write(DATA_PORT, 1, value)


@pytest.fixture
def k():
    return Kbd()


def test_atkbd_probe_sequence_translated(k):
    """atkbd_probe / atkbd_select_set / atkbd_activate on a translating controller."""
    assert k.send(0xF2) == [0xFA, 0xAB, 0x41]     # GETID: MF2, as the translation shows it
    assert k.send(0xF5) == [0xFA]                  # reset to defaults, disable scanning
    assert k.send(0xF0, 0x00) == [0xFA, 0xFA, 0x41]   # which set? 2, translated
    assert k.send(0xED, 0x00) == [0xFA, 0xFA]      # LEDs
    assert k.send(0xF3, 0x00) == [0xFA, 0xFA]      # typematic rate
    assert k.send(0xF4) == [0xFA]                  # enable
    assert k.send(0xEE) == [0xEE]                  # echo
    assert k.send(0xFF) == [0xFA, 0xAA]            # reset: ACK, then BAT passed


def test_untranslated_identity_and_set(k):
    k.ctr(0x05)                                    # KBDINT, SYS; no XLATE
    assert k.send(0xF2) == [0xFA, 0xAB, 0x83]
    assert k.send(0xF0, 0x00) == [0xFA, 0xFA, 0x02]
    assert k.send(0xF0, 0x01) == [0xFA, 0xFA]
    assert k.send(0xF0, 0x00) == [0xFA, 0xFA, 0x01]
    assert k.send(0xF0, 0x03) == [0xFA, 0xFE]      # set 3 is not offered
    assert k.send(0x88) == [0xFE]                  # nor unknown commands
    assert k.send(0xFE) == [0xFE]                  # resend: the last byte again


def test_ctrl_alt_del_in_each_set(k):
    k.dev.send_ctrl_alt_del()                      # power-on: set 2 translated
    assert k.drain() == CAD_SET1
    k.ctr(0x05)
    k.dev.send_ctrl_alt_del()
    assert k.drain() == CAD_SET2
    k.send(0xF0, 0x01)
    k.dev.send_ctrl_alt_del()
    assert k.drain() == CAD_SET1


def test_each_byte_is_an_irq1_edge_while_kbdint_is_set(k):
    k.dev.send_ctrl_alt_del()
    assert k.irqs == [True]
    k.bus.read(DATA_PORT, 1)
    assert k.irqs == [True, False, True]           # lowered by the read, raised by the next
    k.drain()
    assert k.irqs[-1] is False and k.irqs.count(True) == len(CAD_SET1)
    k.ctr(0x44)                                    # KBDINT off: polled, no interrupt
    k.irqs.clear()
    k.dev.send_ctrl_alt_del()
    assert k.drain() == CAD_SET1 and k.irqs == []


def test_keys_wait_while_the_keyboard_port_is_disabled(k):
    k.bus.write(COMMAND_PORT, 1, 0xAD)
    k.dev.send_ctrl_alt_del()
    assert not k.bus.read(COMMAND_PORT, 1) & STATUS_OBF
    k.bus.write(COMMAND_PORT, 1, 0xAE)
    assert k.drain() == CAD_SET1


def test_a_controller_reply_displaces_no_key(k):
    k.dev.send_ctrl_alt_del()
    k.bus.write(COMMAND_PORT, 1, 0x20)             # read CTR with a scancode unread
    assert k.bus.read(DATA_PORT, 1) == 0x65
    assert k.drain() == CAD_SET1


def test_the_buffer_is_bounded_and_a_chord_goes_whole_or_not_at_all(k):
    k.dev.send_ctrl_alt_del()
    k.dev.send_ctrl_alt_del()                      # 16 bytes: the first in the buffer
    with pytest.raises(KeyboardError, match="buffer is full"):
        k.dev.send_ctrl_alt_del()
    assert k.drain() == CAD_SET1 * 2
    for _ in range(100):                           # a guest that never reads its replies
        k.bus.write(DATA_PORT, 1, 0xF2)
    assert len(k.drain()) <= QUEUE_LIMIT + 1


def test_no_keys_while_scanning_is_off(k):
    k.send(0xF5)
    with pytest.raises(KeyboardError, match="scanning is off"):
        k.dev.send_ctrl_alt_del()
    k.send(0xF4)
    k.dev.send_ctrl_alt_del()
    assert k.drain() == CAD_SET1


def test_snapshot_keeps_queued_keys_and_modes(k):
    k.ctr(0x05)
    k.send(0xF0, 0x01)
    k.dev.send_ctrl_alt_del()
    first = k.bus.read(DATA_PORT, 1)
    state = k.dev.snapshot_state()
    other = Kbd()
    other.dev.restore_state(state)
    assert other.irqs == [True]                    # a byte waits: the line goes up again
    assert [first] + other.drain() == CAD_SET1
    assert other.send(0xF0, 0x00) == [0xFA, 0xFA, 0x01]


@pytest.mark.parametrize("change", [{"_queue": bytes(QUEUE_LIMIT + 1)}, {"_set": 3},
                                    {"_param_for": 0x12}])
def test_restore_refuses_a_keyboard_out_of_range(k, change):
    state = k.dev.snapshot_state()
    state["keyboard"] = {**state["keyboard"], **change}
    with pytest.raises(DeviceStateError, match="PS/2 keyboard"):
        Kbd().dev.restore_state(state)
