"""GDB remote serial protocol framing: `$payload#cs` packets, `+`/`-` acknowledgments,
the out-of-band interrupt byte, and the binary-data escape.

Pure byte handling, no sockets: the session feeds received bytes to a PacketReader and
frames replies with frame(). The reader's buffer is bounded, so a client that never
sends `#` costs at most MAX_PACKET bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

INTERRUPT = 0x03        # Ctrl-C, sent by gdb outside any packet
ESCAPE = 0x7D           # '}': the next byte is XORed with 0x20
HEX_DIGITS = b"0123456789abcdefABCDEF"
# Payloads longer than this are dropped (and nacked). The stub advertises a smaller
# PacketSize; the slack covers escaped binary data of an X packet that size.
MAX_PACKET = 0x8000


class ProtocolError(ValueError):
    """A packet that is well framed but says something malformed."""


@dataclass(frozen=True)
class Packet:
    payload: bytes      # between '$' and '#', binary data still escaped


@dataclass(frozen=True)
class BadPacket:
    """A packet whose checksum did not match, or that was too long: ack mode answers '-'."""
    reason: str


@dataclass(frozen=True)
class Ack:
    positive: bool      # '+' or '-'


@dataclass(frozen=True)
class Interrupt:
    pass


Event = Packet | BadPacket | Ack | Interrupt


def checksum(payload: bytes) -> int:
    """The modulo-256 sum of the bytes between '$' and '#'."""
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def escape_binary(data: bytes) -> bytes:
    """Escape binary reply data: '#', '$' and '}' always, '*' too because in a reply it
    would start a run-length sequence."""
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    """Undo the '}' escape of binary packet data (the X packet's body)."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == ESCAPE:
            nxt = next(it, None)
            if nxt is None:
                raise ProtocolError("binary data ends in an escape character")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class PacketReader:
    """Turns a byte stream from gdb into Events. Bytes outside a packet other than
    '+', '-', '$' and 0x03 are ignored (line noise); a '$' inside a packet restarts it,
    as gdb's own reader does."""

    def __init__(self, max_packet: int = MAX_PACKET):
        self._max = max_packet
        self._buf = bytearray()
        self._cs = bytearray()
        self._state = "idle"        # idle | payload | checksum
        self._overlong = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for b in data:
            if b == ord("$"):
                self._buf.clear()
                self._overlong = False
                self._state = "payload"
            elif self._state == "idle":
                if b in b"+-":
                    events.append(Ack(b == ord("+")))
                elif b == INTERRUPT:
                    events.append(Interrupt())
            elif self._state == "payload":
                if b == ord("#"):
                    self._cs.clear()
                    self._state = "checksum"
                elif len(self._buf) < self._max:
                    self._buf.append(b)
                else:
                    self._overlong = True
            else:
                self._cs.append(b)
                if len(self._cs) == 2:
                    self._state = "idle"
                    events.append(self._finish())
        return events

    def _finish(self) -> Event:
        payload = bytes(self._buf)
        self._buf.clear()
        if self._overlong:
            return BadPacket(f"packet longer than {self._max} bytes")
        if any(c not in HEX_DIGITS for c in self._cs):
            return BadPacket(f"malformed checksum {bytes(self._cs)!r}")
        sent = int(self._cs, 16)
        if sent != checksum(payload):
            return BadPacket(f"checksum {sent:02x}, computed {checksum(payload):02x}")
        return Packet(payload)


def hex_encode(data: bytes) -> bytes:
    return data.hex().encode("ascii")


def hex_decode(text: bytes) -> bytes:
    if len(text) % 2 or any(c not in HEX_DIGITS for c in text):
        raise ProtocolError(f"not hex data: {text[:40]!r}")
    return bytes.fromhex(text.decode("ascii"))


def parse_hex(text: bytes) -> int:
    """An unsigned hex number as packets carry addresses, lengths and thread ids."""
    if not text or any(c not in HEX_DIGITS for c in text):
        raise ProtocolError(f"not a hex number: {text[:40]!r}")
    return int(text, 16)
