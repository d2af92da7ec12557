"""The PS/2 keyboard behind the i8042: an MF2 keyboard as Linux's atkbd probes it, whose
only keys are the ones the host types into it (Firecracker's SendCtrlAltDel).

It answers the commands a driver sends it (reset, identify, scancode set, LEDs, typematic
rate, enable and disable scanning, echo, resend) and queues its bytes for the controller,
at most QUEUE_LIMIT of them: a guest that never reads cannot make it hold more. Scancodes
come in set 2 (the power-on set) or set 1 (after F0 01); while the controller translates
(its command byte's XLATE bit, as firmware leaves it and Linux keeps it) the bytes are the
set 1 codes the translation of set 2 yields, and the identify and scancode-set replies are
translated too. As in QEMU's keyboard, the translation is done here rather than in the
controller; the keyboard knows each key's code in both sets, so no 256-byte table is
needed. Set 3, which Linux only asks for with atkbd.set=3, is refused (RESEND).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ...errors import PyvisorError
from ...value import Value
from ..state import DeviceStateError, capture, restore_fields

QUEUE_LIMIT = 16        # bytes; Firecracker's i8042 buffers 16 as well

ACK = 0xFA
RESEND = 0xFE
BAT_OK = 0xAA           # basic assurance test passed, sent after a reset
ECHO = 0xEE
ID = (0xAB, 0x83)              # MF2 keyboard
ID_TRANSLATED = (0xAB, 0x41)   # what the controller's translation makes of it
SET_REPLY_TRANSLATED = {1: 0x43, 2: 0x41}   # F0 00's answer under translation

CMD_SET_LEDS = 0xED
CMD_ECHO = 0xEE
CMD_SCANCODE_SET = 0xF0
CMD_GET_ID = 0xF2
CMD_SET_TYPEMATIC = 0xF3
CMD_ENABLE = 0xF4
CMD_DISABLE = 0xF5      # and restore the defaults
CMD_DEFAULTS = 0xF6     # and keep scanning
CMD_RESEND = 0xFE
CMD_RESET = 0xFF

EXTENDED = 0xE0         # prefix of the keys added by the 101-key layout
SET2_BREAK = 0xF0       # set 2 prefix of a key release; set 1 sets bit 7 instead
SET1_BREAK = 0x80


class Key(Value):
    """A key's make code in scancode sets 1 and 2 (the E0 prefix when extended)."""

    __slots__ = ("set1", "set2", "extended")

    def __init__(self, set1: int, set2: int, extended: bool = False) -> None:
        self.set1, self.set2, self.extended = set1, set2, extended

    def make(self, set1: bool) -> bytes:
        return bytes([EXTENDED] * self.extended + [self.set1 if set1 else self.set2])

    def release(self, set1: bool) -> bytes:
        if set1:
            return bytes([EXTENDED] * self.extended + [self.set1 | SET1_BREAK])
        return bytes([EXTENDED] * self.extended + [SET2_BREAK, self.set2])


LEFT_CTRL = Key(0x1D, 0x14)
LEFT_ALT = Key(0x38, 0x11)
DELETE = Key(0x53, 0x71, extended=True)
CTRL_ALT_DEL = (LEFT_CTRL, LEFT_ALT, DELETE)


def chord(keys: Iterable[Key], set1: bool) -> bytes:
    """Press the keys in order, then release them in reverse, as a person's hand does."""
    keys = list(keys)
    return (b"".join(k.make(set1) for k in keys)
            + b"".join(k.release(set1) for k in reversed(keys)))


class KeyboardError(PyvisorError):
    """Keys typed from the host could not reach the guest."""


class Ps2Keyboard:
    """`translating()` says whether the controller translates (read at each byte, since
    the guest may change it). The controller takes bytes with `pending()` / `pop()` and
    hands it what the guest writes to the data port with `write()`; it serialises calls."""

    def __init__(self, translating: Callable[[], bool]) -> None:
        self._translating = translating
        self._queue = b""
        self._set = 2
        self._scanning = True
        self._param_for = 0       # command waiting for its parameter byte, or 0
        self._last = 0            # last byte sent, for CMD_RESEND

    _STATE = ("_queue", "_set", "_scanning", "_param_for", "_last")

    def snapshot_state(self) -> dict:
        return capture(self, self._STATE)

    def restore_state(self, state: dict) -> None:
        restore_fields(self, state, self._STATE, "PS/2 keyboard")
        if (len(self._queue) > QUEUE_LIMIT or self._set not in (1, 2)
                or self._param_for not in (0, CMD_SET_LEDS, CMD_SCANCODE_SET,
                                           CMD_SET_TYPEMATIC)):
            raise DeviceStateError("PS/2 keyboard: the saved state is out of range")

    # --- the controller's side ---------------------------------------------------------
    def pending(self) -> bool:
        return bool(self._queue)

    def pop(self) -> int:
        byte, self._queue = self._queue[0], self._queue[1:]
        self._last = byte
        return byte

    def unread(self, byte: int) -> None:
        """Put back a popped byte the controller could not deliver (a reply displaced it)."""
        self._queue = (bytes([byte]) + self._queue)[:QUEUE_LIMIT]

    def write(self, value: int) -> None:
        """A byte from the guest: a command, or the parameter of the previous one."""
        cmd, self._param_for = self._param_for, 0
        if cmd == CMD_SCANCODE_SET:
            if value == 0:
                self._send(ACK, SET_REPLY_TRANSLATED[self._set] if self._translating()
                           else self._set)
            elif value in (1, 2):
                self._set = value
                self._send(ACK)
            else:
                self._send(RESEND)
        elif cmd in (CMD_SET_LEDS, CMD_SET_TYPEMATIC):
            self._send(ACK)           # no LEDs to light, no key repeats to time
        elif value in (CMD_SET_LEDS, CMD_SCANCODE_SET, CMD_SET_TYPEMATIC):
            self._param_for = value
            self._send(ACK)
        elif value == CMD_RESET:
            self._defaults(scanning=True)
            self._send(ACK, BAT_OK)
        elif value == CMD_GET_ID:
            self._send(ACK, *(ID_TRANSLATED if self._translating() else ID))
        elif value == CMD_ENABLE:
            self._scanning = True
            self._send(ACK)
        elif value in (CMD_DISABLE, CMD_DEFAULTS):
            self._defaults(scanning=value == CMD_DEFAULTS)
            self._send(ACK)
        elif value == CMD_ECHO:
            self._send(ECHO)
        elif value == CMD_RESEND:
            self._send(self._last)
        else:
            self._send(RESEND)        # set 3's commands and anything else

    def _defaults(self, scanning: bool) -> None:
        self._queue = b""
        self._set = 2
        self._scanning = scanning

    def _send(self, *data: int) -> None:
        # Replies to the guest's own commands; it reads them before its next command, so
        # they never need more room than the limit (a hostile guest loses the excess).
        self._queue = (self._queue + bytes(data))[:QUEUE_LIMIT]

    # --- the host's side ---------------------------------------------------------------
    def type_chord(self, keys: Iterable[Key]) -> None:
        """Queue the presses and releases whole, or raise KeyboardError and queue none."""
        if not self._scanning:
            raise KeyboardError("the guest has not enabled its keyboard (scanning is off)")
        data = chord(keys, set1=self._set == 1 or self._translating())
        if len(self._queue) + len(data) > QUEUE_LIMIT:
            raise KeyboardError(f"the keyboard buffer is full: the guest has not read "
                                f"{len(self._queue)} bytes yet")
        self._queue += data
