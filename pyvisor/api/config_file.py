"""Firecracker's `--config-file vm.json`: the bodies of the pre-boot API calls in one JSON
object, applied to an Instance through the same checks as the API's."""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError
from . import schema
from .faults import ApiError
from .instance import Instance

_SECTIONS = ("boot-source", "machine-config", "drives", "network-interfaces", "entropy")
# The rest of Firecracker's FullVmConfiguration.
_FIRECRACKER_ONLY = ("balloon", "cpu-config", "logger", "metrics", "memory-hotplug",
                     "mmds-config", "pmem", "vsock", "serial")
MAX_CONFIG_BYTES = 1 << 20


def load_config_file(instance: Instance, path: str) -> None:
    """Describe instance from the file; any problem is one ConfigError line naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"--config-file {path}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config-file {path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"--config-file {path}: not valid JSON ({e})") from None
    try:
        apply_config(instance, config)
    except ApiError as e:
        raise ConfigError(f"--config-file {path}: {e}") from None


def apply_config(instance: Instance, config: Any) -> None:
    if not isinstance(config, dict):
        raise ApiError("expected a JSON object")
    unsupported = sorted(set(config) & set(_FIRECRACKER_ONLY))
    if unsupported:
        raise ApiError(f"pyvisor does not support {', '.join(unsupported)}")
    unknown = sorted(set(config) - set(_SECTIONS))
    if unknown:
        raise ApiError(f"unknown section{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                       f"(expected {', '.join(_SECTIONS)})")
    if "boot-source" not in config:
        raise ApiError("missing section boot-source")
    instance.set_boot_source(schema.check(config["boot-source"], schema.BOOT_SOURCE, "boot-source"))
    if "machine-config" in config:
        instance.set_machine_config(schema.check(config["machine-config"], schema.MACHINE_CONFIG,
                                                 "machine-config"))
    for section, fields, key, setter in (
            ("drives", schema.DRIVE, "drive_id", instance.set_drive),
            ("network-interfaces", schema.NETWORK_INTERFACE, "iface_id",
             instance.set_network_interface)):
        items = config.get(section, [])
        if not isinstance(items, list):
            raise ApiError(f"{section}: expected an array")
        for item in items:
            body = schema.check(item, fields, section)
            setter(schema.check_id(body[key], body, key), body)
    if "entropy" in config:
        instance.set_entropy(schema.check(config["entropy"], schema.ENTROPY, "entropy"))
