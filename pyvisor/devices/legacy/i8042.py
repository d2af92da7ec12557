"""i8042 keyboard controller with a PS/2 keyboard behind it (ps2_keyboard.py): enough for
Linux's i8042 probe and atkbd to finish at once, the 0xFE pulse that Linux (reboot=k) uses
to reset, and Ctrl-Alt-Del typed from the host (Firecracker's SendCtrlAltDel), which
Linux's keyboard driver turns into a reboot or a signal to init.

Everything a command returns lands in the one-byte output buffer (status OBF) before the
OUT that issued it completes, so input-buffer-full is never set and every polling loop in
the guest ends on its first read. A controller reply replaces what the buffer holds (a
driver that left a byte unread gets the reply it asked for); a keyboard byte it replaces
goes back to the head of the keyboard's queue, so no key is lost. Keyboard bytes wait
while the guest disables the keyboard port (CTR KBDDIS). While the buffer is full and the
command byte enables it (KBDINT), IRQ 1 is raised; reading the data port lowers it, and
the next byte raises it again (an edge per byte, as Linux's IOAPIC routing of ISA IRQ 1
expects).

The AUX (mouse) channel is modelled as absent, and absent quickly: Linux's
i8042_check_aux() would otherwise wait 500 ms for an unanswered AUX loopback (0xD3) or
250 ms for an IRQ 12 that this device cannot raise. So the loopback byte comes back without
the AUX-data status bit (Linux reports "auxerr" immediately) and the AUX interface test
(0xA9) answers 0x02, "clock line stuck high", which makes Linux drop the AUX port.
"""
from __future__ import annotations

from collections.abc import Callable

from ..changes import CountingLock
from ..state import DeviceStateError, capture, restore_fields
from .ps2_keyboard import CTRL_ALT_DEL, Ps2Keyboard

DATA_PORT = 0x60
COMMAND_PORT = 0x64   # status on read
KBD_IRQ = 1

STATUS_OBF = 0x01        # output buffer full: a byte waits at DATA_PORT
STATUS_IBF = 0x02        # input buffer full: never, commands complete immediately
STATUS_SYS = 0x04        # system flag, mirrors CTR bit 2
STATUS_CMD = 0x08        # last write went to COMMAND_PORT (1) or DATA_PORT (0)
STATUS_UNLOCKED = 0x10   # keylock switch off; Linux warns "Keylock active" without it
STATUS_AUXDATA = 0x20    # the output byte came from the AUX channel

CTR_KBDINT = 0x01
CTR_AUXINT = 0x02
CTR_SYS = 0x04
CTR_KBDDIS = 0x10
CTR_AUXDIS = 0x20
CTR_XLATE = 0x40

# As firmware leaves it: POST passed, keyboard interrupt on, scancode translation on,
# AUX disabled.
CTR_POWER_ON = CTR_XLATE | CTR_AUXDIS | CTR_SYS | CTR_KBDINT

OUTPORT_RESET = 0x01     # low = CPU held in reset
OUTPORT_A20 = 0x02
OUTPORT_POWER_ON = 0xCC | OUTPORT_A20 | OUTPORT_RESET   # 0xCC: unused lines read 1 (QEMU)

CMD_READ_CTR = 0x20
CMD_WRITE_CTR = 0x60
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_OUTPORT = 0xD0
CMD_WRITE_OUTPORT = 0xD1
CMD_AUX_LOOP = 0xD3
CMD_AUX_SEND = 0xD4
CMD_RESET = 0xFE

SELF_TEST_OK = 0x55
INTERFACE_OK = 0x00
AUX_CLOCK_STUCK_HIGH = 0x02


class I8042Port:
    """One of the controller's two ports as a bus device; the offset is always 0 because
    each is registered with length 1, so the port itself says which register it is."""

    __slots__ = ("_read", "_write")

    def __init__(self, read: Callable[[], int], write: Callable[[int], None]) -> None:
        self._read = read
        self._write = write

    def pio_read(self, offset: int, size: int) -> int:
        return self._read()

    def pio_write(self, offset: int, size: int, value: int) -> None:
        self._write(value & 0xFF)

    @property
    def state_owner(self) -> "I8042":
        """The controller whose state a snapshot keeps (both ports are views of it)."""
        return self._read.__self__


class I8042:
    """Register `data_port` at DATA_PORT and `command_port` at COMMAND_PORT, length 1 each,
    leaving 0x61-0x63 to the in-kernel PIT. `request_reset()` is called for the 0xFE (or
    any even 0xF0-0xFE) pulse command and for an output-port write with bit 0 clear; Linux
    sends 0xFE up to ten times, so it may be called more than once. `irq(level)` drives
    IRQ 1.

    The guest serialises its own accesses (Linux holds i8042_lock), but keys typed from
    the host arrive on another thread, so one lock covers the controller and the keyboard
    (also held by a snapshot, and counted: `state_changes`). Port accesses are rare (probe,
    reset), so it costs nothing on the exit path that matters.
    """

    def __init__(self, request_reset: Callable[[], None],
                 irq: Callable[[bool], None] = lambda level: None) -> None:
        self._request_reset = request_reset
        self._irq = irq
        self._lock = self.state_changes = CountingLock()
        self.keyboard = Ps2Keyboard(translating=lambda: bool(self._ctr & CTR_XLATE))
        self.data_port = I8042Port(self.read_data, self.write_data)
        self.command_port = I8042Port(self.read_status, self.write_command)
        self._ctr = CTR_POWER_ON
        self._outport = OUTPORT_POWER_ON
        self._output = 0          # last byte put in the output buffer
        self._obf = False
        self._from_keyboard = False   # the buffer's byte came from the keyboard
        self._irq_level = False   # IRQ 1 as last driven
        self._last_was_command = False
        self._param_for = 0       # command waiting for a byte at DATA_PORT, or 0

    _STATE = ("_ctr", "_outport", "_output", "_obf", "_from_keyboard",
              "_last_was_command", "_param_for")

    def snapshot_state(self) -> dict:
        """The command byte, output port, output buffer, a command awaiting its byte and
        the keyboard's queue and modes. IRQ 1's level follows from them."""
        with self._lock.held():
            state = capture(self, self._STATE)
            state["keyboard"] = self.keyboard.snapshot_state()
            return state

    def restore_state(self, state: dict) -> None:
        with self._lock.held():
            if not isinstance(state.get("keyboard"), dict):
                raise DeviceStateError("i8042: the saved state has no keyboard")
            restore_fields(self, state, self._STATE, "i8042")
            self.keyboard.restore_state(state["keyboard"])
            # The line as driven stays what KVM has now: only a difference goes out.
            self._update_irq()

    def send_ctrl_alt_del(self) -> None:
        """Press and release Ctrl, Alt and Delete (KeyboardError if the guest's keyboard
        cannot take them now)."""
        with self._lock:
            self.keyboard.type_chord(CTRL_ALT_DEL)
            self._fill()

    def read_status(self) -> int:
        with self._lock:
            status = STATUS_UNLOCKED | (self._ctr & CTR_SYS)
            if self._obf:
                status |= STATUS_OBF   # never with STATUS_AUXDATA: no AUX device answers
            if self._last_was_command:
                status |= STATUS_CMD
            return status

    def read_data(self) -> int:
        # With the buffer empty hardware returns the previous byte again.
        with self._lock:
            output, self._obf = self._output, False
            self._update_irq()       # lowered first: the next byte is a new edge
            self._fill()
            return output

    def write_command(self, cmd: int) -> None:
        with self._lock:
            self._command(cmd)
            self._fill()

    def _command(self, cmd: int) -> None:
        self._last_was_command = True
        self._param_for = 0
        if cmd == CMD_READ_CTR:
            self._put(self._ctr)
        elif cmd in (CMD_WRITE_CTR, CMD_WRITE_OUTPORT, CMD_AUX_LOOP, CMD_AUX_SEND):
            self._param_for = cmd
        elif cmd == CMD_SELF_TEST:
            self._ctr |= CTR_SYS
            self._put(SELF_TEST_OK)
        elif cmd == CMD_KBD_TEST:
            self._put(INTERFACE_OK)
        elif cmd == CMD_AUX_TEST:
            self._put(AUX_CLOCK_STUCK_HIGH)
        elif cmd == CMD_KBD_DISABLE:
            self._ctr |= CTR_KBDDIS
        elif cmd == CMD_KBD_ENABLE:
            self._ctr &= ~CTR_KBDDIS
        elif cmd == CMD_AUX_DISABLE:
            self._ctr |= CTR_AUXDIS
        elif cmd == CMD_AUX_ENABLE:
            self._ctr &= ~CTR_AUXDIS
        elif cmd == CMD_READ_OUTPORT:
            self._put(self._outport)
        elif cmd & 0xF1 == 0xF0:
            # Pulse output-port lines 3:0 low for each clear bit; bit 0 is CPU reset.
            self._request_reset()

    def write_data(self, value: int) -> None:
        with self._lock:
            self._data(value)
            self._fill()

    def _data(self, value: int) -> None:
        self._last_was_command = False
        cmd, self._param_for = self._param_for, 0
        if cmd == CMD_WRITE_CTR:
            self._ctr = value
        elif cmd == CMD_WRITE_OUTPORT:
            self._outport = value
            if not value & OUTPORT_RESET:
                self._request_reset()
        elif cmd == CMD_AUX_LOOP:
            self._put(value)   # without STATUS_AUXDATA: see the module docstring
        elif cmd == 0:
            # A byte for the keyboard; sending one enables the keyboard port, as on an 8042.
            self._ctr &= ~CTR_KBDDIS
            self.keyboard.write(value)
        # CMD_AUX_SEND: for a mouse that is not there, so no reply.

    def _put(self, value: int) -> None:
        if self._obf and self._from_keyboard:
            self.keyboard.unread(self._output)
        self._output, self._obf, self._from_keyboard = value, True, False

    def _fill(self) -> None:
        """Move the next keyboard byte into an empty output buffer; set IRQ 1's level."""
        if not self._obf and self.keyboard.pending() and not self._ctr & CTR_KBDDIS:
            self._output, self._obf, self._from_keyboard = self.keyboard.pop(), True, True
        self._update_irq()

    def _update_irq(self) -> None:
        level = self._obf and bool(self._ctr & CTR_KBDINT)
        if level != self._irq_level:
            self._irq_level = level
            self._irq(level)
