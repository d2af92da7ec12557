"""restore_fields puts a state capture() took back without checking it again (the reset
loop's fast path), and checks every other state (a file's, or a changed copy) as before."""
import pytest

from pyvisor.devices.state import Captured, DeviceStateError, capture, restore_fields
from pyvisor.snapshot.encoding import decode, encode


class Holder:
    NAMES = ("_count", "_buffer", "_label", "_ratio")

    def __init__(self) -> None:
        self._count, self._buffer, self._label, self._ratio = 7, bytearray(b"abcd"), "x", 0.5


def test_a_capture_comes_back_exactly_with_its_buffers_copied():
    h = Holder()
    saved = capture(h, Holder.NAMES)
    assert type(saved) is Captured and saved["_buffer"] == b"abcd"
    h._count, h._label, h._ratio = 8, "y", 1.5
    h._buffer[0:2] = b"ZZ"
    restore_fields(h, saved, Holder.NAMES, "holder")
    assert (h._count, bytes(h._buffer), h._label, h._ratio) == (7, b"abcd", "x", 0.5)
    assert type(h._buffer) is bytearray
    h._buffer[0] = 0x41                     # the device's buffer is its own, not the capture's
    restore_fields(h, saved, Holder.NAMES, "holder")
    assert bytes(h._buffer) == b"abcd" and saved["_buffer"] == b"abcd"


def test_states_that_are_not_that_capture_are_still_checked():
    h = Holder()
    saved = capture(h, Holder.NAMES)
    with pytest.raises(DeviceStateError, match="label is a int"):
        restore_fields(h, {**saved, "_label": 3}, Holder.NAMES, "holder")
    from_file = decode(encode(saved))
    assert type(from_file) is dict
    with pytest.raises(DeviceStateError, match="buffer does not fit"):
        restore_fields(h, {**from_file, "_buffer": b"toolong"}, Holder.NAMES, "holder")
    other_names = ("_count", "_label")      # a capture of other fields: checked
    partial = capture(h, other_names)
    with pytest.raises(DeviceStateError, match="has no buffer"):
        restore_fields(h, partial, Holder.NAMES, "holder")
    assert bytes(h._buffer) == b"abcd"
