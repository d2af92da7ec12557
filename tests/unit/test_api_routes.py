"""Firecracker's API as pyvisor's Router answers it, without a socket or a guest: every
refusal is 400 with a fault_message that says what was wrong (firecracker.yaml answers
all bad input with 400 and an Error body)."""
import json

import pytest

from pyvisor.api import Instance, Router
from pyvisor.api.config_file import load_config_file
from pyvisor.errors import ConfigError


@pytest.fixture
def api():
    router = Router(Instance())

    def call(method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return router.handle(method, path, data)

    return call


def fault(result) -> str:
    status, body = result
    assert status == 400, result
    assert set(body) == {"fault_message"}
    return body["fault_message"]


def test_instance_info_and_defaults(api):
    assert api("GET", "/") == (200, {"id": "anonymous-instance", "state": "Not started",
                                     "vmm_version": "0.1.0", "app_name": "pyvisor"})
    assert api("GET", "/version") == (200, {"firecracker_version": "0.1.0"})
    # Firecracker's defaults: 1 vCPU, 128 MiB, no SMT.
    assert api("GET", "/machine-config") == (200, {"vcpu_count": 1, "mem_size_mib": 128,
                                                   "smt": False})


def test_configuration_round_trips_through_vm_config(api):
    boot = {"kernel_image_path": "/k.elf", "boot_args": "console=ttyS0", "initrd_path": "/i"}
    assert api("PUT", "/boot-source", boot) == (204, None)
    assert api("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256,
                                          "smt": False, "huge_pages": "None"}) == (204, None)
    drive = {"drive_id": "rootfs", "path_on_host": "/r.img", "is_root_device": True,
             "is_read_only": False, "cache_type": "Unsafe", "io_engine": "Sync"}
    assert api("PUT", "/drives/rootfs", drive) == (204, None)
    net = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}
    assert api("PUT", "/network-interfaces/eth0", net) == (204, None)
    assert api("PUT", "/entropy", {}) == (204, None)
    status, config = api("GET", "/vm/config")
    assert status == 200
    assert config["boot-source"] == boot
    assert config["machine-config"]["vcpu_count"] == 2
    assert config["drives"] == [drive] and config["network-interfaces"] == [net]
    assert config["entropy"] == {}
    # A trailing slash is the same resource.
    assert api("GET", "/machine-config/")[0] == 200


def test_patch_machine_config_changes_only_what_it_names(api):
    api("PUT", "/machine-config", {"vcpu_count": 4, "mem_size_mib": 256})
    assert api("PATCH", "/machine-config", {"mem_size_mib": 512}) == (204, None)
    assert api("GET", "/machine-config") == (200, {"vcpu_count": 4, "mem_size_mib": 512,
                                                   "smt": False})
    assert fault(api("PATCH", "/machine-config", {"smt": True})) == \
        "machine-config: pyvisor does not support smt"
    assert fault(api("PATCH", "/machine-config", {"vcpu_count": 0})) == \
        "machine-config: vcpu_count: 0 is below the minimum 1"


def test_the_machine_config_becomes_pyvisors_own():
    instance = Instance()
    router = Router(instance)
    router.handle("PUT", "/boot-source", b'{"kernel_image_path": "k.elf", "boot_args": "quiet"}')
    router.handle("PUT", "/machine-config", b'{"vcpu_count": 3, "mem_size_mib": 96}')
    router.handle("PUT", "/drives/data", b'{"drive_id": "data", "path_on_host": "d.img", '
                                         b'"is_root_device": false, "is_read_only": true}')
    router.handle("PUT", "/drives/root", b'{"drive_id": "root", "path_on_host": "r.img", '
                                         b'"is_root_device": true}')
    router.handle("PUT", "/entropy", b"{}")
    config = instance.build_config()
    assert (config.kernel, config.mem, config.cpus) == ("k.elf", 96 << 20, 3)
    # The root drive is vda and gets Firecracker's root= argument.
    assert [(d.path, d.readonly, d.serial) for d in config.disks] == [
        ("r.img", False, "root"), ("d.img", True, "data")]
    assert config.cmdline == "quiet root=/dev/vda rw"
    assert config.rng


@pytest.mark.parametrize("method, path, body, message", [
    ("PUT", "/machine-config", {"vcpu_count": 1}, "machine-config: missing field mem_size_mib"),
    ("PUT", "/machine-config", {"vcpu_count": "2", "mem_size_mib": 64},
     "machine-config: vcpu_count: expected an integer, got a string"),
    ("PUT", "/machine-config", {"vcpu_count": True, "mem_size_mib": 64},
     "machine-config: vcpu_count: expected an integer, got a boolean"),
    ("PUT", "/machine-config", {"vcpu_count": 1.5, "mem_size_mib": 64},
     "machine-config: vcpu_count: expected an integer, got a number"),
    ("PUT", "/machine-config", {"vcpu_count": 0, "mem_size_mib": 64},
     "machine-config: vcpu_count: 0 is below the minimum 1"),
    ("PUT", "/machine-config", {"vcpu_count": 33, "mem_size_mib": 64},
     "machine-config: vcpu_count: 33 is above the maximum 32"),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "bogus": 1},
     "machine-config: unknown field bogus (expected one of vcpu_count, mem_size_mib, smt, "
     "track_dirty_pages, huge_pages, cpu_template)"),
    ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64, "smt": True,
                                "track_dirty_pages": True},
     "machine-config: pyvisor does not support smt, track_dirty_pages"),
    ("PUT", "/machine-config", [1, 2], "machine-config: expected a JSON object, got an array"),
    ("PUT", "/boot-source", {"boot_args": "x"}, "boot-source: missing field kernel_image_path"),
    ("PUT", "/boot-source", {"kernel_image_path": None},
     "boot-source: kernel_image_path: expected a string, got null"),
    ("PUT", "/drives/root", {"drive_id": "root", "is_root_device": True, "path_on_host": "r",
                             "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}},
                             "io_engine": "Async"},
     "drive: pyvisor does not support rate_limiter, io_engine"),
    ("PUT", "/drives/root", {"drive_id": "root", "is_root_device": True, "socket": "/vhost"},
     "drive: pyvisor does not support socket"),
    ("PUT", "/drives/root", {"drive_id": "root", "is_root_device": True},
     "drive root: missing field path_on_host (pyvisor has no vhost-user block devices)"),
    ("PUT", "/drives/root", {"drive_id": "other", "is_root_device": True, "path_on_host": "r"},
     "The id from the path does not match the id from the body!"),
    ("PUT", "/drives/ro-ot", {"drive_id": "ro-ot", "is_root_device": True, "path_on_host": "r"},
     "API Resource IDs can only contain alphanumeric characters and underscores (at most 64)."),
    ("PUT", "/drives/root", {"drive_id": "root", "is_root_device": True, "path_on_host": "r",
                             "cache_type": "Sometimes"},
     "drive: cache_type: 'Sometimes' is not one of Unsafe, Writeback"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                         "mtu": 9000},
     "network-interface: pyvisor does not support mtu"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0"},
     "network-interface: missing field host_dev_name"),
    ("PUT", "/entropy", {"rate_limiter": {}}, "entropy: pyvisor does not support rate_limiter"),
    ("PUT", "/boot-source", {"kernel_image_path": "k\0.elf"},
     "boot-source: kernel_image_path: contains a NUL character"),
    ("PUT", "/boot-source", {"kernel_image_path": "k\ud800.elf"},
     "boot-source: kernel_image_path: contains a lone surrogate (not valid Unicode)"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                         "guest_mac": "01:00:5e:00:00:01"},
     "network interface eth0: invalid --net 'tap=tap0,mac=01:00:5e:00:00:01': "
     "01:00:5e:00:00:01 is a multicast address"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "t" * 16},
     "network interface eth0: invalid --net 'tap=" + "t" * 16 + "': an interface name has at "
     "most 15 bytes"),
    ("PUT", "/actions", {"action_type": "Reboot"},
     "action: action_type: 'Reboot' is not one of InstanceStart, SendCtrlAltDel, FlushMetrics"),
    ("PUT", "/actions", {"action_type": "FlushMetrics"},
     "action FlushMetrics: pyvisor has no metrics file to flush (GET /pyvisor/stats returns "
     "its exit statistics)"),
    ("PUT", "/actions", {"action_type": "InstanceStart"},
     "Cannot start microvm without kernel configuration."),
    ("PUT", "/actions", {"action_type": "SendCtrlAltDel"},
     "The requested operation is not supported before starting the microVM."),
    ("PATCH", "/vm", {"state": "Paused"},
     "The requested operation is not supported before starting the microVM."),
    ("PUT", "/pyvisor/actions", {"action_type": "PowerButton"},
     "The requested operation is not supported before starting the microVM."),
    ("PUT", "/pyvisor/actions", {"action_type": "SendCtrlAltDel"},
     "pyvisor/actions: action_type: 'SendCtrlAltDel' is not one of PowerButton"),
    ("PATCH", "/vm", {"state": "Stopped"}, "vm: state: 'Stopped' is not one of Paused, Resumed"),
    ("PATCH", "/drives/root", {"drive_id": "root", "path_on_host": "new.img"},
     "The requested operation is not supported before starting the microVM."),
    ("PUT", "/vm", {"state": "Paused"}, "Invalid request method and/or path: PUT vm."),
    ("GET", "/no/such/path", None, "Invalid request method and/or path: GET no/such/path."),
    ("DELETE", "/drives/root", None, "Invalid request method and/or path: DELETE drives/root."),
    ("PUT", "/balloon", {"amount_mib": 1, "deflate_on_oom": True},
     "PUT /balloon: pyvisor does not implement Firecracker's balloon API"),
    ("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/v"},
     "PUT /vsock: pyvisor does not implement Firecracker's vsock API"),
    ("GET", "/pyvisor/stats", None,
     "The requested operation is not supported before starting the microVM."),
])
def test_refusals(api, method, path, body, message):
    assert fault(api(method, path, body)) == message


def test_snapshot_requests_checked_before_any_machine(api, tmp_path):
    assert fault(api("PUT", "/snapshot/create", {"snapshot_path": "s"})) == \
        "snapshot/create: missing field mem_file_path"
    assert fault(api("PUT", "/snapshot/create", {"snapshot_path": "s", "mem_file_path": "m",
                                                 "snapshot_type": "Diff"})) == \
        "snapshot/create: snapshot_type: 'Diff' is not one of Full"
    assert fault(api("PUT", "/snapshot/create", {"snapshot_path": "s", "mem_file_path": "m"})) \
        == "The requested operation is not supported before starting the microVM."
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": "s", "mem_backend":
                                               {"backend_path": "m", "backend_type": "Uffd"}})) \
        == "snapshot/load: mem_backend: backend_type: 'Uffd' is not one of File"
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": "s", "track_dirty_pages": True,
                                               "mem_file_path": "m"})) == \
        "snapshot/load: pyvisor does not support track_dirty_pages"
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": "s"})) == \
        "Load snapshot error: give exactly one of mem_backend and mem_file_path."
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": "s", "mem_file_path": "m",
                                               "mem_backend": {"backend_path": "m",
                                                               "backend_type": "File"}})) == \
        "Load snapshot error: give exactly one of mem_backend and mem_file_path."
    missing = str(tmp_path / "nope.snap")
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": missing,
                                               "mem_file_path": missing})) == \
        f"Load snapshot error: {missing}: No such file or directory"
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    assert "is not the memory of" in fault(api("PUT", "/snapshot/load", {
        "snapshot_path": str(a), "mem_backend": {"backend_path": str(b), "backend_type": "File"}}))
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": str(a), "mem_file_path": str(a)})) \
        == f"Load snapshot error: {a} is not a pyvisor snapshot"


def test_no_snapshot_load_after_configuring(api, tmp_path):
    api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
    assert fault(api("PUT", "/snapshot/load", {"snapshot_path": "s", "mem_file_path": "s"})) == \
        "Loading a microVM snapshot not allowed after configuring boot-specific resources."


@pytest.mark.parametrize("raw, message", [
    (b"", "Empty request body: expected a JSON object."),
    (b"  \r\n", "Empty request body: expected a JSON object."),
    (b'{"kernel_image_path": ', "Malformed JSON in the request body: Expecting value: "
                                "line 1 column 23 (char 22)"),
    (b"\xff\xfe{}", "The request body is not UTF-8."),
    (b"[" * 50000, "Malformed JSON in the request body: nested too deeply."),
])
def test_malformed_bodies(api, raw, message):
    assert fault(api("PUT", "/boot-source", raw=raw)) == message


def test_a_get_takes_no_body(api):
    assert fault(api("GET", "/", raw=b"{}")) == "GET /: a GET request takes no body"


def test_a_second_root_drive_is_refused(api):
    api("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "a", "is_root_device": True})
    assert fault(api("PUT", "/drives/b", {"drive_id": "b", "path_on_host": "b",
                                          "is_root_device": True})) == \
        "A root block device already exists!"
    # Replacing the root drive itself is an update, not a second root.
    assert api("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "a2",
                                    "is_root_device": True}) == (204, None)


def test_config_file(tmp_path):
    path = tmp_path / "vm.json"
    path.write_text(json.dumps({
        "boot-source": {"kernel_image_path": "k.elf", "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 64},
        "drives": [{"drive_id": "rootfs", "path_on_host": "r.img", "is_root_device": True,
                    "is_read_only": True}],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap7"}],
        "entropy": {}}))
    instance = Instance()
    load_config_file(instance, str(path))
    config = instance.build_config()
    assert (config.kernel, config.cpus, config.mem) == ("k.elf", 2, 64 << 20)
    assert config.cmdline == "console=ttyS0 root=/dev/vda ro"
    assert [n.tap for n in config.nets] == ["tap7"] and config.rng


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"machine-config": {"vcpu_count": 1, "mem_size_mib": 8}}', "missing section boot-source"),
    ('{"boot-source": {"kernel_image_path": "k"}, "logger": {}, "vsock": {}}',
     "pyvisor does not support logger, vsock"),
    ('{"boot-source": {"kernel_image_path": "k"}, "disks": []}',
     "unknown section disks (expected boot-source, machine-config, drives, "
     "network-interfaces, entropy)"),
    ('{"boot-source": {"kernel_image_path": "k"}, "drives": {}}', "drives: expected an array"),
    ('{"boot-source": {"kernel_image_path": "k", "initrd": "i"}}',
     "boot-source: unknown field initrd"),
])
def test_config_file_errors(tmp_path, content, message):
    path = tmp_path / "vm.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"^--config-file {path}: .*") as e:
        load_config_file(Instance(), str(path))
    assert message in str(e.value)


def test_config_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_config_file(Instance(), str(tmp_path / "nope.json"))


def test_a_failure_inside_pyvisor_is_a_500_with_a_message():
    instance = Instance()
    instance._machine_config = None          # a stand-in for a bug
    status, body = Router(instance).handle("GET", "/machine-config", b"")
    assert status == 500
    assert body["fault_message"].startswith("Internal error: TypeError(")
