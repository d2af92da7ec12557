"""Firecracker's API with stock Linux in the nested test host. The Debian guest is
described and started with the curl sequence of Firecracker's getting-started guide (boot
source, root drive, machine config, InstanceStart), boots to its shell on ttyS0, is paused,
snapshotted to a file and resumed, answers, and SendCtrlAltDel ends it: Ctrl-Alt-Del on
the i8042 keyboard makes Linux reboot (its init, a shell script, leaves the kernel's
hard Ctrl-Alt-Del on), and pyvisor ends with it, as Firecracker does. A new `pyvisor serve`
loads that snapshot (resume_vm), the shell answers and Ctrl-Alt-Del ends it again. A
Firecracker config file boots the same guest with `pyvisor run --config-file --api-sock`,
driven by the Python client of the fast suite; there init asks for Ctrl-Alt-Del itself
(kernel.ctrl-alt-del = 0), so the keys reach it as SIGINT and it powers off.

Run as a script (inside the nested host) this module is the driver of those machines:
    python test_nested_api.py curl|load|client KERNEL INITRD DISK WORK
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

QUIET = "console=ttyS0 panic=-1 quiet"
MODULES = ["virtio_pci", "virtio_blk"]
PROMPT = "api# "
DISK_SECTORS = 32768          # 16 MiB
INIT = r"""
echo "DISK-SECTORS=$(cat /sys/block/vda/size 2>/dev/null || echo none)"
case "$(cat /proc/cmdline)" in
    *pv.cad=init*)
        echo 0 > /proc/sys/kernel/ctrl-alt-del
        trap 'echo "init: ctrl-alt-del reached init"; poweroff -f' INT ;;
esac
PS1='api# ' sh -i </dev/ttyS0 >/dev/ttyS0 2>&1 &
wait
poweroff -f
"""
BOOT_WAIT = 300               # an L2 Linux boot takes 10-20 s in L1, more when busy
ANSWER_WAIT = 60


# --- the driver, inside the nested host --------------------------------------------------

class Terminal:
    """A command on a pty whose output a thread keeps reading, so the guest's console
    never stalls while the driver talks to the API."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.master = master
        self.output = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:            # EIO: the command has gone
                return
            if not data:
                return
            with self._lock:
                self.output += data

    def text(self) -> str:
        with self._lock:
            return self.output.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float, start: int = 0) -> int:
        """Where needle ends in the output (searching from start)."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.text().find(needle, start)
            if at >= 0:
                return at + len(needle)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"{needle!r} not seen (pyvisor status {self.proc.poll()}); "
                                 f"console:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def answer(self, command: str, expected: str, start: int) -> int:
        """Type a shell command; where its expected answer ends."""
        os.write(self.master, command.encode() + b"\r")
        return self.wait_for(expected, ANSWER_WAIT, start)

    def exit_status(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit(f"pyvisor did not end; console:\n{self.text()[-3000:]}")


def _serve(*args: str) -> tuple[Terminal, str]:
    from api_client import listening
    sock = f"/run/pyvisor-api-{os.getpid()}-{time.monotonic_ns()}.sock"
    term = Terminal([f"{REPO}/.venv/bin/pyvisor", *args, "--api-sock", sock,
                     "--console", "stdio"])
    deadline = time.monotonic() + 120
    while not listening(sock):
        if term.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"no API socket; output:\n{term.text()[-3000:]}")
        time.sleep(0.1)
    return term, sock


def _report(results: dict) -> None:
    print("RESULTS " + json.dumps(results), flush=True)


def _curl(kernel: str, initrd: str, disk: str, work: str) -> None:
    """The getting-started sequence, pause, snapshot, resume, Ctrl-Alt-Del."""
    from api_client import curl
    term, sock = _serve("serve")
    codes = {
        "boot-source": curl(sock, "PUT", "/boot-source", {
            "kernel_image_path": kernel, "boot_args": QUIET, "initrd_path": initrd})[0],
        "drive": curl(sock, "PUT", "/drives/rootfs", {
            "drive_id": "rootfs", "path_on_host": disk, "is_root_device": True,
            "is_read_only": False})[0],
        "machine-config": curl(sock, "PUT", "/machine-config",
                               {"vcpu_count": 1, "mem_size_mib": 256})[0],
        "start": curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"})[0],
    }
    at = term.wait_for(PROMPT, BOOT_WAIT)
    at = term.answer("echo ans-$((6*7))", "ans-42\r", at)
    codes["pause"] = curl(sock, "PATCH", "/vm", {"state": "Paused"})[0]
    state = json.loads(curl(sock, "GET", "/")[1])["state"]
    started = time.monotonic()
    codes["snapshot"] = curl(sock, "PUT", "/snapshot/create", {
        "snapshot_path": f"{work}/linux.snap", "mem_file_path": f"{work}/linux.mem",
        "snapshot_type": "Full"})[0]
    snapshot_seconds = time.monotonic() - started
    codes["resume"] = curl(sock, "PATCH", "/vm", {"state": "Resumed"})[0]
    at = term.answer("echo after-$((2+3))", "after-5\r", at)
    codes["ctrl-alt-del"] = curl(sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0]
    status = term.exit_status()
    _report({"codes": codes, "paused_state": state, "status": status,
             "snapshot_seconds": round(snapshot_seconds, 2),
             "same_file": os.path.samefile(f"{work}/linux.snap", f"{work}/linux.mem"),
             "socket_left": os.path.exists(sock), "console": term.text()[-4000:]})


def _load(kernel: str, initrd: str, disk: str, work: str) -> None:
    """The snapshot in a new pyvisor serve, resumed: the shell answers; Ctrl-Alt-Del."""
    from api_client import curl
    term, sock = _serve("serve")
    code, text = curl(sock, "PUT", "/snapshot/load", {
        "snapshot_path": f"{work}/linux.snap",
        "mem_backend": {"backend_path": f"{work}/linux.mem", "backend_type": "File"},
        "resume_vm": True})
    codes = {"load": code}
    info = json.loads(curl(sock, "GET", "/")[1])
    if code == 204:
        term.answer("echo loaded-$((3*4))", "loaded-12\r", 0)
    codes["ctrl-alt-del"] = curl(sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0]
    status = term.exit_status()
    _report({"codes": codes, "load_fault": text, "state": info["state"], "status": status,
             "console": term.text()[-4000:]})


def _client(kernel: str, initrd: str, disk: str, work: str) -> None:
    """A Firecracker config file, with the Python client: init takes Ctrl-Alt-Del."""
    from api_client import Client
    config = Path(work) / "vm.json"
    config.write_text(json.dumps({
        "boot-source": {"kernel_image_path": kernel, "initrd_path": initrd,
                        "boot_args": f"{QUIET} pv.cad=init"},
        "drives": [{"drive_id": "data", "path_on_host": disk, "is_root_device": False,
                    "is_read_only": True}],
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}}))
    term, sock = _serve("run", "--config-file", str(config))
    api = Client(sock, timeout=60)
    results = {"state": api("GET", "/")[1]["state"],
               "vm_config": api("GET", "/vm/config")[1]}
    at = term.wait_for(PROMPT, BOOT_WAIT)
    at = term.answer("echo client-$((5*5)) $(nproc)", "client-25 2\r", at)
    results["pause"] = api("PATCH", "/vm", {"state": "Paused"})[0]
    results["paused_state"] = api("GET", "/")[1]["state"]
    results["resume"] = api("PATCH", "/vm", {"state": "Resumed"})[0]
    at = term.answer("echo again-$((1+1))", "again-2\r", at)
    results["console_tail_has_answer"] = "again-2" in api.console()
    results["ctrl-alt-del"] = api("PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0]
    results["status"] = term.exit_status()
    results["console"] = term.text()[-4000:]
    _report(results)


# --- the tests, outside ------------------------------------------------------------------

if __name__ != "__main__":
    from nestedhost import LinuxGuest, NestedHost, again_if_wedged

    pytestmark = [pytest.mark.nested, pytest.mark.timeout(1800)]

    def session(nested_host: NestedHost, guest: LinuxGuest, repo: Path, work: Path) -> dict:
        initrd = guest.initramfs(work / "initrd.gz", INIT, MODULES)
        disk = work / "rootfs.img"
        disk.write_bytes(bytes(DISK_SECTORS * 512))
        py, me = f"{repo}/.venv/bin/python", f"{repo}/tests/nested/{Path(__file__).name}"
        snapshots = "/run/pyvisor-api-snapshots"     # L1's RAM: hard links work there
        args = f"{guest.bzimage} {initrd} {disk} {snapshots}"
        commands = [f"command -v curl; mkdir -p {snapshots}; {py} {me} curl {args}",
                    f"{py} {me} load {args}",
                    f"{py} {me} client {args}"]
        results = nested_host.run_many(commands, timeout=1700, shares=[work])
        print("nested-api: seconds inside L1: "
              + ", ".join(f"{name} {r.duration:.1f}" for name, r in
                          zip(("curl", "load", "client"), results)))   # shown with -s
        return {name: _results(r.output) for name, r in zip(("curl", "load", "client"), results)}

    def _results(output: str) -> dict:
        for line in output.splitlines():
            if line.startswith("RESULTS "):
                return {**json.loads(line[len("RESULTS "):]), "output": output}
        raise AssertionError(f"the driver reported nothing:\n{output[-3000:]}")

    @pytest.fixture(scope="module")
    def run(nested_host, guest_kernel, repo, tmp_path_factory):
        return again_if_wedged(lambda: session(
            nested_host, guest_kernel, repo, tmp_path_factory.mktemp("nested-api")))

    def test_getting_started_with_curl_boots_linux_snapshots_it_and_ctrl_alt_del_ends_it(run):
        r = run["curl"]
        assert r["output"].startswith("/usr/bin/curl"), r["output"][:300]   # curl in L1
        assert r["codes"] == {"boot-source": 204, "drive": 204, "machine-config": 204,
                              "start": 204, "pause": 204, "snapshot": 204, "resume": 204,
                              "ctrl-alt-del": 204}, r["console"]
        assert r["paused_state"] == "Paused"
        assert r["same_file"]                       # mem_file_path names the snapshot file
        console = r["console"]
        assert f"DISK-SECTORS={DISK_SECTORS}" in console     # the root drive is vda
        # Linux's keyboard driver took the keys and rebooted; pyvisor ended with it.
        assert "reboot: Restarting system" in console, console
        assert r["status"] == 0 and not r["socket_left"]
        print(f"nested-api: PUT /snapshot/create of the 256 MiB guest: "
              f"{r['snapshot_seconds']} s inside L1")

    def test_a_new_serve_loads_the_snapshot_and_the_shell_answers(run):
        r = run["load"]
        assert r["codes"] == {"load": 204, "ctrl-alt-del": 204}, (r["load_fault"], r["console"])
        assert r["state"] == "Running"
        assert "loaded-12" in r["console"]
        assert "reboot: Restarting system" in r["console"], r["console"]
        assert r["status"] == 0

    def test_config_file_and_python_client_with_ctrl_alt_del_for_init(run):
        r = run["client"]
        assert r["state"] == "Running"
        assert r["vm_config"]["machine-config"]["vcpu_count"] == 2
        assert (r["pause"], r["paused_state"], r["resume"]) == (204, "Paused", 204)
        assert r["console_tail_has_answer"]
        assert r["ctrl-alt-del"] == 204
        console = r["console"]
        assert "init: ctrl-alt-del reached init" in console, console
        assert "reboot: Power down" in console and r["status"] == 0, console


if __name__ == "__main__":
    REPO = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(REPO / "tests"))            # api_client
    mode, *args = sys.argv[1:]
    {"curl": _curl, "load": _load, "client": _client}[mode](*args)
