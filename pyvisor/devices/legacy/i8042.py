"""i8042 keyboard controller with nothing behind it: enough for Linux's i8042 probe to
finish at once, and the 0xFE pulse that Linux (reboot=k, the default) uses to reset.

Everything a command returns lands in the one-byte output buffer (status OBF) before the
OUT that issued it completes, so input-buffer-full is never set and every polling loop in
the guest ends on its first read.

The AUX (mouse) channel is modelled as absent, and absent quickly: Linux's
i8042_check_aux() would otherwise wait 500 ms for an unanswered AUX loopback (0xD3) or
250 ms for an IRQ 12 that this device cannot raise. So the loopback byte comes back without
the AUX-data status bit (Linux reports "auxerr" immediately) and the AUX interface test
(0xA9) answers 0x02, "clock line stuck high", which makes Linux drop the AUX port.
"""
from __future__ import annotations

from typing import Callable

from ..state import capture, restore_fields

DATA_PORT = 0x60
COMMAND_PORT = 0x64   # status on read

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
    sends 0xFE up to ten times, so it may be called more than once.

    The guest serialises access itself (Linux holds i8042_lock), as it must on hardware,
    so there is no lock here.
    """

    def __init__(self, request_reset: Callable[[], None]) -> None:
        self._request_reset = request_reset
        self.data_port = I8042Port(self.read_data, self.write_data)
        self.command_port = I8042Port(self.read_status, self.write_command)
        self._ctr = CTR_POWER_ON
        self._outport = OUTPORT_POWER_ON
        self._output = 0          # last byte put in the output buffer
        self._obf = False
        self._last_was_command = False
        self._param_for = 0       # command waiting for a byte at DATA_PORT, or 0

    _STATE = ("_ctr", "_outport", "_output", "_obf", "_last_was_command", "_param_for")

    def snapshot_state(self) -> dict:
        """The command byte, output port, output buffer and a command awaiting its byte."""
        return capture(self, self._STATE)

    def restore_state(self, state: dict) -> None:
        restore_fields(self, state, self._STATE, "i8042")

    def read_status(self) -> int:
        status = STATUS_UNLOCKED | (self._ctr & CTR_SYS)
        if self._obf:
            status |= STATUS_OBF   # never with STATUS_AUXDATA: no AUX device answers
        if self._last_was_command:
            status |= STATUS_CMD
        return status

    def read_data(self) -> int:
        # With the buffer empty hardware returns the previous byte again.
        self._obf = False
        return self._output

    def write_command(self, cmd: int) -> None:
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
        # CMD_AUX_SEND and bytes for the keyboard go to devices that are not there: no reply.

    def _put(self, value: int) -> None:
        self._output = value
        self._obf = True
