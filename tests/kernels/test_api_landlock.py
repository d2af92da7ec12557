"""`pyvisor serve --files-dir DIR`: from InstanceStart on, the files the API names are
written only beneath DIR (Landlock), as Firecracker's jailer keeps its VMM in a chroot;
what was opened before (the drives at boot) stays as it is, and the guest runs on."""
from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from api_client import Client, listening
from helpers import PYVISOR, guest, needs_kvm
from pyvisor.api import runner
from pyvisor.errors import PyvisorError
from pyvisor.sandbox import landlock

pytestmark = [needs_kvm, pytest.mark.kvm]
PROMPT = "pyvisor> "


def image(path) -> str:
    path.write_bytes(bytes(1 << 20))
    return str(path)


def test_api_writes_stay_beneath_the_files_dir(tmp_path):
    jail = tmp_path / "jail"
    jail.mkdir()
    outside, inside = image(tmp_path / "outside.img"), image(jail / "inside.img")
    other = image(tmp_path / "other.img")
    sock = str(tmp_path / "api.sock")
    proc = subprocess.Popen([PYVISOR, "serve", "--api-sock", sock, "--console", "stdio",
                             "--files-dir", str(jail)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not listening(sock):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        api = Client(sock)
        api("PUT", "/boot-source", {"kernel_image_path": guest("shell"),
                                    "boot_args": "mode=interactive"})
        api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
        # Opened for writing at InstanceStart, before the rules: anywhere, as chosen.
        api("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": outside,
                                      "is_root_device": True, "is_read_only": False})
        assert api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
        api.wait_console(PROMPT)
        assert api("PATCH", "/vm", {"state": "Paused"}) == (204, None)
        out = {"snapshot_path": str(tmp_path / "vm.snap"),
               "mem_file_path": str(tmp_path / "vm.mem"), "snapshot_type": "Full"}
        assert api("PUT", "/snapshot/create", out) == (400, {
            "fault_message": f"Create snapshot error: cannot write snapshot "
                             f"{out['snapshot_path']}: Permission denied"})
        into = {"snapshot_path": str(jail / "vm.snap"), "mem_file_path": str(jail / "vm.mem"),
                "snapshot_type": "Full"}
        assert api("PUT", "/snapshot/create", into) == (204, None)
        assert os.path.samefile(jail / "vm.snap", jail / "vm.mem")
        status, fault = api("PATCH", "/drives/rootfs", {"drive_id": "rootfs",
                                                        "path_on_host": other})
        assert status == 400 and "Permission denied" in fault["fault_message"], fault
        assert api("PATCH", "/drives/rootfs", {"drive_id": "rootfs",
                                               "path_on_host": inside}) == (204, None)
        assert api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
        proc.stdin.write(b"exit 3\r")
        proc.stdin.flush()
        assert proc.wait(30) == 3
        # The socket lies outside the directory: left for the next run to replace.
        assert proc.stderr.read().decode() == f"pyvisor: API on {sock}\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdin.close()
        proc.stderr.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.sock", "jail", "other.img",
                                                             "outside.img"]
    assert sorted(p.name for p in jail.iterdir()) == ["inside.img", "vm.mem", "vm.snap"]


def test_a_files_dir_that_cannot_be_enforced_is_one_line(tmp_path, monkeypatch):
    result = subprocess.run([PYVISOR, "serve", "--api-sock", str(tmp_path / "api.sock"),
                             "--files-dir", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (
        1, f"pyvisor: --files-dir {tmp_path / 'missing'}: no such directory\n")
    monkeypatch.setattr(landlock, "abi_version", lambda: -errno.EOPNOTSUPP)
    with pytest.raises(PyvisorError, match="^--files-dir cannot be enforced: Landlock is not "
                                           "enabled in this kernel"):
        runner._check_files_dir(str(tmp_path))
