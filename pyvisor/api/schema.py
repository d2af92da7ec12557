"""The request bodies of Firecracker's API (src/firecracker/swagger/firecracker.yaml) that
pyvisor accepts, checked field by field.

Every object lists all the fields Firecracker defines. A field pyvisor implements is
checked for its JSON type; one it does not is refused with a message naming it, unless
its value is Firecracker's own default (`"smt": false`, `"io_engine": "Sync"`): asking for
the default asks for nothing pyvisor lacks. Fields Firecracker does not know are refused
as Firecracker refuses them (its serde structs deny unknown fields)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .faults import ApiError

_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_UNSET = object()


@dataclass(frozen=True)
class Field:
    """kind: "string", "boolean", "integer" or "object"; supported: pyvisor implements
    it; default: the value that needs no support (for unsupported fields); choices: the
    enum values pyvisor accepts."""
    kind: str
    required: bool = False
    supported: bool = True
    default: Any = _UNSET
    choices: tuple = ()
    minimum: int | None = None
    maximum: int | None = None


_TYPES = {"string": str, "boolean": bool, "integer": int, "object": dict}

BOOT_SOURCE = {
    "kernel_image_path": Field("string", required=True),
    "boot_args": Field("string"),
    "initrd_path": Field("string"),
}
MACHINE_CONFIG = {
    "vcpu_count": Field("integer", required=True, minimum=1, maximum=32),
    "mem_size_mib": Field("integer", required=True, minimum=1),
    "smt": Field("boolean", supported=False, default=False),
    "track_dirty_pages": Field("boolean", supported=False, default=False),
    "huge_pages": Field("string", supported=False, default="None"),
    "cpu_template": Field("string", supported=False, default="None"),
}
# PATCH /machine-config: the same fields, each optional.
MACHINE_CONFIG_UPDATE = {name: Field(f.kind, False, f.supported, f.default, f.choices,
                                     f.minimum, f.maximum)
                         for name, f in MACHINE_CONFIG.items()}
DRIVE = {
    "drive_id": Field("string", required=True),
    "is_root_device": Field("boolean", required=True),
    "path_on_host": Field("string"),
    "is_read_only": Field("boolean"),
    # pyvisor always honours the guest's flushes (fdatasync), which either mode allows.
    "cache_type": Field("string", choices=("Unsafe", "Writeback")),
    "partuuid": Field("string", supported=False),
    "rate_limiter": Field("object", supported=False),
    "io_engine": Field("string", supported=False, default="Sync"),
    "socket": Field("string", supported=False),
}
PARTIAL_DRIVE = {
    "drive_id": Field("string", required=True),
    "path_on_host": Field("string"),
    "rate_limiter": Field("object", supported=False),
}
NETWORK_INTERFACE = {
    "iface_id": Field("string", required=True),
    "host_dev_name": Field("string", required=True),
    "guest_mac": Field("string"),
    "mtu": Field("integer", supported=False),
    "rx_rate_limiter": Field("object", supported=False),
    "tx_rate_limiter": Field("object", supported=False),
}
ENTROPY = {
    "rate_limiter": Field("object", supported=False),
}
VM_STATE = {
    "state": Field("string", required=True, choices=("Paused", "Resumed")),
}
ACTION = {
    "action_type": Field("string", required=True,
                         choices=("InstanceStart", "SendCtrlAltDel", "FlushMetrics")),
}
# PUT /pyvisor/actions: pyvisor's own actions, beside Firecracker's.
PYVISOR_ACTION = {
    "action_type": Field("string", required=True, choices=("PowerButton",)),
}
SNAPSHOT_CREATE = {
    "snapshot_path": Field("string", required=True),
    "mem_file_path": Field("string", required=True),
    "snapshot_type": Field("string", choices=("Full",)),
}
MEMORY_BACKEND = {
    "backend_path": Field("string", required=True),
    "backend_type": Field("string", required=True, choices=("File",)),
}
SNAPSHOT_LOAD = {
    "snapshot_path": Field("string", required=True),
    "mem_backend": Field("object"),
    "mem_file_path": Field("string"),
    "resume_vm": Field("boolean"),
    "track_dirty_pages": Field("boolean", supported=False, default=False),
    "enable_diff_snapshots": Field("boolean", supported=False, default=False),
    "network_overrides": Field("object", supported=False),
    "vsock_override": Field("object", supported=False),
    "clock_realtime": Field("boolean", supported=False, default=False),
}


def check(body: Any, fields: dict[str, Field], what: str) -> dict[str, Any]:
    """The body as a dict of the fields given, every problem a 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(f"{what}: expected a JSON object, got {_json_type(body)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(f"{what}: unknown field{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(unknown)} (expected one of {', '.join(fields)})")
    missing = [name for name, f in fields.items() if f.required and name not in body]
    if missing:
        raise ApiError(f"{what}: missing field{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(missing)}")
    unsupported = []
    for name, value in body.items():
        f = fields[name]
        _check_type(value, f, f"{what}: {name}")
        if not f.supported and not (f.default is not _UNSET and value == f.default):
            unsupported.append(name)
    if unsupported:
        raise ApiError(f"{what}: pyvisor does not support {', '.join(unsupported)}")
    return dict(body)


def check_id(path_id: str, body: dict[str, Any], key: str) -> str:
    """Firecracker's resource IDs: 1-64 letters, digits or underscores, and the one in
    the body the same as the one in the path."""
    if not _ID.fullmatch(path_id):
        raise ApiError("API Resource IDs can only contain alphanumeric characters and "
                       "underscores (at most 64).")
    if body.get(key, path_id) != path_id:
        raise ApiError("The id from the path does not match the id from the body!")
    return path_id


def _check_type(value: Any, f: Field, what: str) -> None:
    python = _TYPES[f.kind]
    # JSON true is not a number, and 1.0 is not an integer, whatever Python thinks.
    if not isinstance(value, python) or (python is int and isinstance(value, bool)):
        raise ApiError(f"{what}: expected {'an' if f.kind[0] in 'aeiou' else 'a'} "
                       f"{f.kind}, got {_json_type(value)}")
    if isinstance(value, str):
        if "\0" in value:
            raise ApiError(f"{what}: contains a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ApiError(f"{what}: contains a lone surrogate (not valid Unicode)") from None
    if f.choices and value not in f.choices:
        raise ApiError(f"{what}: {value!r} is not one of {', '.join(f.choices)}")
    if f.minimum is not None and value < f.minimum:
        raise ApiError(f"{what}: {value} is below the minimum {f.minimum}")
    if f.maximum is not None and value > f.maximum:
        raise ApiError(f"{what}: {value} is above the maximum {f.maximum}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
