"""Which (method, path) does what: Firecracker's paths and pyvisor's own under /pyvisor/
(a prefix Firecracker has no use for). `Router.handle` takes a decoded request and returns
(status, JSON body or None); it never touches the HTTP connection, so it is tested alone."""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from .. import __version__
from . import schema
from ..log import get_logger
from .faults import ApiError
from .instance import Instance

OK = 200
NO_CONTENT = 204
INTERNAL_ERROR = 500

log = get_logger("pyvisor.api")

# Firecracker paths pyvisor has no device or feature for: refused by name, not as unknown.
_UNSUPPORTED = re.compile(r"/(balloon(/.*)?|cpu-config|logger|metrics|mmds(/config)?|vsock|"
                          r"pmem/[^/]+|serial|hotplug/memory)/?$")

Handler = Callable[[Instance, dict[str, str], Any], Any]


def _get(fn: Callable[[Instance], Any]) -> Handler:
    return lambda inst, _params, _body: fn(inst)


def _boot_source(inst: Instance, _p: dict, body: Any) -> None:
    inst.set_boot_source(schema.check(body, schema.BOOT_SOURCE, "boot-source"))


def _machine_config(inst: Instance, _p: dict, body: Any) -> None:
    inst.set_machine_config(schema.check(body, schema.MACHINE_CONFIG, "machine-config"))


def _patch_machine_config(inst: Instance, _p: dict, body: Any) -> None:
    inst.update_machine_config(schema.check(body, schema.MACHINE_CONFIG_UPDATE, "machine-config"))


def _drive(inst: Instance, params: dict, body: Any) -> None:
    body = schema.check(body, schema.DRIVE, "drive")
    inst.set_drive(schema.check_id(params["id"], body, "drive_id"), body)


def _patch_drive(inst: Instance, params: dict, body: Any) -> None:
    body = schema.check(body, schema.PARTIAL_DRIVE, "drive")
    inst.patch_drive(schema.check_id(params["id"], body, "drive_id"), body)


def _network_interface(inst: Instance, params: dict, body: Any) -> None:
    body = schema.check(body, schema.NETWORK_INTERFACE, "network-interface")
    inst.set_network_interface(schema.check_id(params["id"], body, "iface_id"), body)


def _entropy(inst: Instance, _p: dict, body: Any) -> None:
    inst.set_entropy(schema.check(body, schema.ENTROPY, "entropy"))


def _vm(inst: Instance, _p: dict, body: Any) -> None:
    inst.set_vm_state(schema.check(body, schema.VM_STATE, "vm")["state"])


def _action(inst: Instance, _p: dict, body: Any) -> None:
    action = schema.check(body, schema.ACTION, "action")["action_type"]
    if action == "InstanceStart":
        inst.start()
    elif action == "SendCtrlAltDel":
        inst.send_ctrl_alt_del()
    else:
        raise ApiError(f"action {action}: pyvisor has no metrics file to flush "
                       f"(GET /pyvisor/stats returns its exit statistics)")


def _pyvisor_action(inst: Instance, _p: dict, body: Any) -> None:
    schema.check(body, schema.PYVISOR_ACTION, "pyvisor/actions")
    inst.press_power_button()


def _snapshot_create(inst: Instance, _p: dict, body: Any) -> None:
    inst.create_snapshot(schema.check(body, schema.SNAPSHOT_CREATE, "snapshot/create"))


def _snapshot_load(inst: Instance, _p: dict, body: Any) -> None:
    body = schema.check(body, schema.SNAPSHOT_LOAD, "snapshot/load")
    if "mem_backend" in body:
        schema.check(body["mem_backend"], schema.MEMORY_BACKEND, "snapshot/load: mem_backend")
    inst.load_snapshot(body)


_ROUTES: list[tuple[str, re.Pattern[str], Handler, int]] = [
    (method, re.compile(pattern + r"/?$"), handler, status)
    for method, pattern, handler, status in [
        ("GET", r"/", _get(Instance.info), OK),
        ("GET", r"/version", _get(lambda _i: {"firecracker_version": __version__}), OK),
        ("GET", r"/machine-config", _get(Instance.machine_config), OK),
        ("GET", r"/vm/config", _get(Instance.vm_config), OK),
        ("PUT", r"/boot-source", _boot_source, NO_CONTENT),
        ("PUT", r"/machine-config", _machine_config, NO_CONTENT),
        ("PATCH", r"/machine-config", _patch_machine_config, NO_CONTENT),
        ("PUT", r"/drives/(?P<id>[^/]*)", _drive, NO_CONTENT),
        ("PATCH", r"/drives/(?P<id>[^/]*)", _patch_drive, NO_CONTENT),
        ("PUT", r"/network-interfaces/(?P<id>[^/]*)", _network_interface, NO_CONTENT),
        ("PUT", r"/entropy", _entropy, NO_CONTENT),
        ("PUT", r"/actions", _action, NO_CONTENT),
        ("PATCH", r"/vm", _vm, NO_CONTENT),
        ("PUT", r"/snapshot/create", _snapshot_create, NO_CONTENT),
        ("PUT", r"/snapshot/load", _snapshot_load, NO_CONTENT),
        ("GET", r"/pyvisor/stats", _get(Instance.stats), OK),
        ("GET", r"/pyvisor/console", _get(Instance.console), OK),
        ("PUT", r"/pyvisor/actions", _pyvisor_action, NO_CONTENT),
    ]
]
_WITH_BODY = ("PUT", "PATCH")


class Router:
    """Requests for one Instance."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            return self._dispatch(method, path.split("?", 1)[0], body)
        except ApiError as e:
            return e.status, e.body
        except Exception as e:   # a bug of pyvisor's: the client still gets an answer
            log.exception("api: %s %s failed", method, path)
            return INTERNAL_ERROR, {"fault_message": f"Internal error: {e!r}"}

    def _dispatch(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        known_path = False
        for route_method, pattern, handler, status in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            known_path = True
            if route_method != method:
                continue
            body = self._decode(raw) if method in _WITH_BODY else None
            if method not in _WITH_BODY and raw:
                raise ApiError(f"{method} {path}: a {method} request takes no body")
            result = handler(self.instance, match.groupdict(), body)
            return status, (result if status == OK else None)
        if not known_path and _UNSUPPORTED.match(path):
            raise ApiError(f"{method} {path}: pyvisor does not implement Firecracker's "
                           f"{path.split('/')[1]} API")
        raise ApiError(f"Invalid request method and/or path: {method} {path.lstrip('/')}.")

    @staticmethod
    def _decode(raw: bytes) -> Any:
        if not raw.strip():
            raise ApiError("Empty request body: expected a JSON object.")
        try:
            return json.loads(raw.decode("utf-8"))   # bytes would also be tried as UTF-16/32
        except UnicodeDecodeError:
            raise ApiError("The request body is not UTF-8.") from None
        except json.JSONDecodeError as e:
            raise ApiError(f"Malformed JSON in the request body: {e}") from None
        except RecursionError:
            raise ApiError("Malformed JSON in the request body: nested too deeply.") from None
