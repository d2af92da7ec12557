"""GDB remote protocol framing, against the protocol's own rules (GDB manual, appendix
"Remote Serial Protocol", Overview): `$data#cs` with cs the modulo-256 sum of data as two
hex digits, '+'/'-' acknowledgments, 0x03 as the out-of-band interrupt, and binary data
escaped with 0x7d followed by the byte XOR 0x20 ('#', '$', '}' always, '*' in replies)."""
import pytest

from pyvisor.debug.gdbstub.protocol import (Ack, BadPacket, Interrupt, Packet, PacketReader,
                                            ProtocolError, checksum, escape_binary, frame,
                                            hex_decode, hex_encode, parse_hex,
                                            unescape_binary)


def test_checksum_is_the_byte_sum_mod_256():
    assert checksum(b"OK") == 0x9A                # 'O' 0x4f + 'K' 0x4b
    assert checksum(b"g") == 0x67
    assert checksum(b"") == 0
    assert checksum(bytes([0xFF, 0x02])) == 0x01  # wraps


def test_frame():
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"
    assert frame(b"T05thread:01;") == b"$T05thread:01;#" + b"%02x" % checksum(b"T05thread:01;")


def test_reader_packets_acks_and_interrupt():
    r = PacketReader()
    events = r.feed(b"+$g#67-\x03$qC#b4")
    assert events == [Ack(True), Packet(b"g"), Ack(False), Interrupt(), Packet(b"qC")]


def test_reader_accepts_upper_case_checksum_and_split_input():
    r = PacketReader()
    payload = b"qSupported:swbreak+;hwbreak+"
    data = b"$" + payload + b"#" + b"%02X" % checksum(payload)
    events = []
    for i in range(len(data)):
        events += r.feed(data[i:i + 1])
    assert events == [Packet(payload)]


def test_reader_bad_checksum_is_reported_not_dropped():
    r = PacketReader()
    (event,) = r.feed(b"$g#00")
    assert isinstance(event, BadPacket)
    (event,) = r.feed(b"$g#zz")
    assert isinstance(event, BadPacket)
    assert r.feed(b"$g#67") == [Packet(b"g")]     # and the reader recovers


def test_reader_restarts_on_dollar_and_ignores_noise():
    r = PacketReader()
    assert r.feed(b"garbage$partial$m0,4#fd") == [Packet(b"m0,4")]


def test_reader_bounds_an_overlong_packet():
    r = PacketReader(max_packet=16)
    payload = b"M0,40:" + b"00" * 64
    (event,) = r.feed(b"$" + payload + b"#" + b"%02x" % checksum(payload))
    assert isinstance(event, BadPacket)
    assert len(r._buf) == 0
    assert r.feed(b"$g#67") == [Packet(b"g")]


def test_binary_escape_follows_the_spec():
    assert escape_binary(b"\x7d") == b"\x7d\x5d"              # the manual's example
    assert escape_binary(b"#$}*") == b"}\x03}\x04}\x5d}\x0a"
    assert escape_binary(b"abc\x00\xff") == b"abc\x00\xff"
    for data in (bytes(range(256)), b"", b"}}}"):
        assert unescape_binary(escape_binary(data)) == data


def test_unescape_rejects_a_trailing_escape():
    with pytest.raises(ProtocolError):
        unescape_binary(b"ab}")


def test_hex_helpers_are_strict():
    assert hex_encode(b"\x01\xab") == b"01ab"
    assert hex_decode(b"01AB") == b"\x01\xab"
    assert parse_hex(b"ffffffff81000000") == 0xFFFFFFFF81000000
    for bad in (b"1", b"zz", b"0 1"):
        with pytest.raises(ProtocolError):
            hex_decode(bad)
    for bad in (b"", b"-1", b"+1", b"0x10", b" 1"):
        with pytest.raises(ProtocolError):
            parse_hex(bad)
