"""The snapshot state encoding (docs/SNAPSHOT.md): round trips of every kind of plain
data, the byte layout the format documents, and malformed input refused with
EncodingError (never another exception)."""
import random

import pytest

from pyvisor.snapshot.encoding import EncodingError, decode, encode

VALUES = [None, True, False, 0, -1, 255, 1 << 64, -(1 << 100), 1.5, "", "naïve", b"",
          bytes(range(256)), [], [1, [2, [3]]], {}, {"a": {"b": [b"x", None]}}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip(value):
    assert decode(encode(value)) == value


def test_layout_is_the_documented_one():
    # tag, u32 little-endian length, payload
    assert encode(b"ab") == b"b\x02\x00\x00\x00ab"
    assert encode("é") == b"s\x02\x00\x00\x00\xc3\xa9"
    assert encode(1) == b"i\x01\x00\x00\x00\x01"
    assert encode(-1) == b"i\x01\x00\x00\x00\xff"
    assert encode(128) == b"i\x02\x00\x00\x00\x80\x00"
    assert encode([None, True]) == b"l\x02\x00\x00\x00NT"
    assert encode({"k": False}) == b"d\x01\x00\x00\x00s\x01\x00\x00\x00kF"


def test_what_cannot_be_kept_is_refused():
    with pytest.raises(EncodingError, match="cannot keep a set"):
        encode({1, 2})
    with pytest.raises(EncodingError, match="not a string"):
        encode({1: 2})
    deep = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(EncodingError, match="nested"):
        encode(deep)


@pytest.mark.parametrize("data", [b"", b"x", b"b\xff\xff\xff\xff", b"l\x05\x00\x00\x00N",
                                  b"d\x01\x00\x00\x00i\x01\x00\x00\x00\x01N", b"NN",
                                  b"i\x03\x00\x00"], ids=repr)
def test_malformed_input_is_an_encoding_error(data):
    with pytest.raises(EncodingError):
        decode(data)


def test_random_corruption_never_raises_anything_else():
    good = encode({"vcpus": [{"regs": bytes(range(144)), "msrs": [[16, 12345]]}],
                   "devices": {"serial (COM1)": {"rx": b"abc", "_ier": 3}}})
    rng = random.Random(1)
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[:rng.randint(0, len(data))] if rng.random() < 0.3 else data
        try:
            decode(bytes(data))
        except EncodingError:
            pass
