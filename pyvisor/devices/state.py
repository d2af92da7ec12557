"""Device state for snapshots, as plain data (ints, bools, floats, str, bytes, None, lists
and str-keyed dicts) that a file can hold.

A device lists the attributes that make up its state; `capture` copies them out and
`restore_fields` puts them back, refusing a value whose type (or, for byte buffers, length)
differs from what the device holds: a snapshot file is input, and a device must never end
up holding something its code does not expect. What a device cannot capture (a frame read
from a tap but not yet delivered) raises DeviceStateError.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import PyvisorError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class DeviceStateError(PyvisorError):
    """A device cannot be snapshotted now, or a saved state does not fit it."""


class Captured(dict):
    """A state `capture` took of a live device. `restore_fields` puts it back without the
    checks a file's state (a plain dict) needs: its values are ones the device held, of the
    types it holds (restore_fields lets in no others), and `copies` names the byte buffers
    it turns back into bytearrays. A reset loop restores the same captures many times a
    second."""
    __slots__ = ("names", "copies")


def capture(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    state, copies = Captured(), []
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, (bytearray, memoryview)):
            copies.append(name)
            if isinstance(value, memoryview):
                names = None            # restore_fields refuses it back: let it say so
            value = bytes(value)
        state[name] = value
    state.names, state.copies = names, tuple(copies)
    return state


def _plain(value: Any) -> Any:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def restore_fields(obj: Any, state: dict[str, Any], names: Iterable[str], what: str) -> None:
    """Set each named attribute from state, checked against the current value's type
    unless capture took state with the same names (the device's own list)."""
    if type(state) is Captured and state.names is names:
        for name in names:
            setattr(obj, name, state[name])
        for name in state.copies:
            setattr(obj, name, bytearray(state[name]))
        return
    values = {}
    for name in names:
        if name not in state:
            raise DeviceStateError(f"{what}: the saved state has no {name.lstrip('_')}")
        current, saved = getattr(obj, name), state[name]
        if isinstance(current, bytearray):
            if not isinstance(saved, bytes) or len(saved) != len(current):
                raise DeviceStateError(f"{what}: saved {name.lstrip('_')} does not fit")
            saved = bytearray(saved)
        elif type(current) is not type(saved) and not (
                type(current) in (int, float) and type(saved) in (int, float)):
            raise DeviceStateError(f"{what}: saved {name.lstrip('_')} is a "
                                   f"{type(saved).__name__}, not a {type(current).__name__}")
        values[name] = saved
    for name, value in values.items():
        setattr(obj, name, value)
