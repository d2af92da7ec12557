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


def capture(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: _plain(getattr(obj, name)) for name in names}


def _plain(value: Any) -> Any:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def restore_fields(obj: Any, state: dict[str, Any], names: Iterable[str], what: str) -> None:
    """Set each named attribute from state, checked against the current value's type."""
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
