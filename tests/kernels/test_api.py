"""The Firecracker-compatible API socket with tiny kernels: Firecracker's getting-started
sequence from a Python client and from curl, the config file, the socket's own rules
(0600, a live path refused), malformed HTTP, many clients and clients that vanish."""
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from api_client import Client, curl, listening
from helpers import PYVISOR, guest, needs_kvm, one_line_error, pyvisor
from pyvisor.api import Instance, Router
from pyvisor.api.instance import HostOptions
from pyvisor.devices.legacy.acpi_pm import PM1_STS
from pyvisor.devices.virtio.blk import DiskSpec, open_disk

pytestmark = [needs_kvm, pytest.mark.kvm]
PROMPT = "pyvisor> "
PWRBTN_STS = 1 << 8          # ACPI 6.x, 4.8.3.1.1 (PM1 status register)


class Served:
    """A pyvisor process serving the API; its stdin is the guest's serial input."""

    def __init__(self, sock: str, *args: str, command: str = "serve"):
        self.sock = sock
        self.proc = subprocess.Popen([PYVISOR, command, "--api-sock", sock, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not listening(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no API socket: {self.proc.stderr.read().decode()}")
            time.sleep(0.02)
        self.api = Client(sock)

    def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stderr.close()


@pytest.fixture
def served(tmp_path):
    made = []

    def make(*args: str, command: str = "serve") -> Served:
        made.append(Served(str(tmp_path / f"api{len(made)}.sock"), "--console", "stdio",
                           *args, command=command))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def disk(tmp_path) -> str:
    path = tmp_path / "rootfs.img"
    path.write_bytes(bytes(1 << 20))
    return str(path)


def test_getting_started_with_a_python_client(served, disk):
    s = served()
    api = s.api
    assert api("GET", "/")[1]["state"] == "Not started"
    assert api("PUT", "/boot-source", {"kernel_image_path": guest("shell"),
                                       "boot_args": "mode=interactive"}) == (204, None)
    assert api("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk,
                                         "is_root_device": True, "is_read_only": False}) == (204, None)
    assert api("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}) == (204, None)
    assert api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    assert api("GET", "/")[1]["state"] == "Running"
    assert seccomp_mode(s.proc.pid) == 2           # the API's filter, from the start on
    api.wait_console(PROMPT)
    s.type("info\r")
    # Firecracker's root= argument follows the boot arguments.
    info = api.wait_console("cmdline: mode=interactive root=/dev/vda rw\r\n")
    assert "CPUs: 2" in info and "RAM: 64 MiB" in info
    # Pre-boot resources are closed once the guest runs.
    assert api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}) == (
        400, {"fault_message": "The requested operation is not supported after starting "
                               "the microVM."})

    assert api("PATCH", "/vm", {"state": "Paused"}) == (204, None)
    assert api("GET", "/")[1]["state"] == "Paused"
    before = api.console()
    s.type("echo while paused\r")
    time.sleep(0.5)
    assert api.console() == before                  # a paused guest echoes nothing
    assert api("PATCH", "/vm", {"state": "Paused"}) == (204, None)   # idempotent
    assert api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    assert api("GET", "/")[1]["state"] == "Running"
    api.wait_console("while paused\r\n")
    other = disk + ".2"                              # opened under the filter
    with open(other, "wb") as f:
        f.write(bytes(2 << 20))
    assert api("PATCH", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": other}) == (
        204, None)
    stats = api("GET", "/pyvisor/stats")[1]
    assert stats["exits"]["io"] > 0 and stats["ports"]["0x3f8"] > 0
    assert stats["handled_seconds"]["io"] > 0
    s.type("exit 3\r")
    assert s.wait() == 3
    assert not os.path.exists(s.sock)               # removed when pyvisor ends


def seccomp_mode(pid: int) -> int:
    """The Seccomp line of /proc/PID/status: 0 none, 2 a filter."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(l for l in status if l.startswith("Seccomp:")).split()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_getting_started_with_curl(served, disk, tmp_path):
    s = served()
    assert curl(s.sock, "PUT", "/boot-source", {"kernel_image_path": guest("shell"),
                                                "boot_args": "mode=interactive"}) == (204, "")
    assert curl(s.sock, "PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk,
                                                  "is_root_device": True,
                                                  "is_read_only": False}) == (204, "")
    assert curl(s.sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32}) == (204, "")
    assert curl(s.sock, "PUT", "/actions", {"action_type": "InstanceStart"}) == (204, "")
    s.api.wait_console(PROMPT)
    assert curl(s.sock, "PATCH", "/vm", {"state": "Paused"}) == (204, "")
    code, text = curl(s.sock, "GET", "/")
    assert code == 200 and json.loads(text)["state"] == "Paused"
    assert curl(s.sock, "PUT", "/snapshot/create", {
        "snapshot_path": str(tmp_path / "snap"), "mem_file_path": str(tmp_path / "mem"),
        "snapshot_type": "Full"}) == (204, "")
    assert os.path.samefile(tmp_path / "snap", tmp_path / "mem")   # memory is in the one file
    assert curl(s.sock, "PATCH", "/vm", {"state": "Resumed"}) == (204, "")
    assert curl(s.sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == (204, "")
    code, text = curl(s.sock, "GET", "/vm/config")
    assert code == 200 and json.loads(text)["machine-config"]["mem_size_mib"] == 32
    code, text = curl(s.sock, "GET", "/nope")
    assert (code, json.loads(text)) == (400, {"fault_message": "Invalid request method "
                                                               "and/or path: GET nope."})
    s.type("exit 0\r")                 # the shell's exit 0 resets the machine
    assert s.wait() == 0


def raw_request(sock: str, data: bytes, timeout: float = 10) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(sock)
        c.sendall(data)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
        return reply


def status_and_fault(reply: bytes) -> tuple[int, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["fault_message"]


def test_malformed_http_is_refused_and_the_guest_runs_on(served):
    s = served()
    api = s.api
    api("PUT", "/boot-source", {"kernel_image_path": guest("shell")})
    api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
    api("PUT", "/actions", {"action_type": "InstanceStart"})
    api.wait_console(PROMPT)
    assert status_and_fault(raw_request(s.sock, b"PUT /vm HTTP/1.1\r\nContent-Length: 60000\r\n\r\n")) \
        == (400, "Request payload with size 60000 is larger than the limit of 51200 allowed "
                 "by server.")
    assert status_and_fault(raw_request(s.sock, b"PATCH /vm HTTP/1.1\r\nTransfer-Encoding: "
                                                b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")) \
        == (400, "Chunked request bodies are not supported: send Content-Length.")
    assert status_and_fault(raw_request(s.sock, b"PATCH /vm HTTP/1.1\r\nContent-Length: -1\r\n\r\n")) \
        == (400, "Invalid Content-Length '-1'.")
    status, message = status_and_fault(raw_request(s.sock, b"HELLO\r\n\r\n"))
    assert status == 400 and "Bad request syntax" in message
    status, _ = status_and_fault(raw_request(s.sock, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"))
    assert status == 414
    status, _ = status_and_fault(raw_request(s.sock, b"GET / HTTP/1.1\r\n" +
                                             b"X: y\r\n" * 200 + b"\r\n"))
    assert status == 431

    # A client that sends half a body and goes away changes nothing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(s.sock)
        c.sendall(b'PATCH /vm HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"state": "Pau')
    # More clients than the server takes at once, all idle: the rest are turned away, and
    # requests work again once they leave.
    idle = []
    for _ in range(40):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(s.sock)
        idle.append(c)
    time.sleep(0.3)
    for c in idle:
        c.close()
    time.sleep(0.3)
    assert api("GET", "/")[1]["state"] == "Running"
    # Many clients at once, each with its own requests.
    errors = []

    def client():
        try:
            mine = Client(s.sock)
            for _ in range(10):
                assert mine("GET", "/machine-config")[1]["mem_size_mib"] == 32
        except Exception as e:   # reported below, with the thread's error
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s.type("echo still here\r")
    api.wait_console("still here\r\n")
    s.type("exit 5\r")
    assert s.wait() == 5


def test_a_bad_machine_is_a_400_and_can_be_fixed(served, tmp_path):
    s = served()
    api = s.api
    api("PUT", "/boot-source", {"kernel_image_path": str(tmp_path / "missing.elf")})
    status, body = api("PUT", "/actions", {"action_type": "InstanceStart"})
    assert status == 400 and "missing.elf" in body["fault_message"]
    assert api("GET", "/")[1]["state"] == "Not started"
    api("PUT", "/boot-source", {"kernel_image_path": guest("hello")})
    assert api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    assert s.wait() == 0                  # hello resets the machine at once: pyvisor ends


def test_the_socket_is_private_and_a_live_one_is_refused(served, tmp_path):
    s = served()
    assert stat.S_IMODE(os.stat(s.sock).st_mode) == 0o600
    line = one_line_error(pyvisor("serve", "--api-sock", s.sock, timeout=20))
    assert line == f"pyvisor: --api-sock {s.sock}: another process is serving on it"
    regular = tmp_path / "file"
    regular.write_text("keep me")
    line = one_line_error(pyvisor("serve", "--api-sock", str(regular), timeout=20))
    assert line == f"pyvisor: --api-sock {regular}: the path exists and is not a socket"
    assert regular.read_text() == "keep me"
    # A socket nobody listens on (its process is gone) is replaced.
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(stale)
    t = Served(stale, "--console", "none")
    try:
        assert t.api("GET", "/")[0] == 200
    finally:
        t.close()


def test_run_a_kernel_with_the_api(served):
    s = served(guest("shell"), "--mem", "48M", "--cpus", "2", "--append", "mode=interactive",
               command="run")
    assert s.api("GET", "/machine-config")[1] == {"vcpu_count": 2, "mem_size_mib": 48, "smt": False}
    assert s.api("GET", "/")[1]["state"] == "Running"
    assert seccomp_mode(s.proc.pid) == 2
    s.api.wait_console(PROMPT)
    assert s.api("PATCH", "/vm", {"state": "Paused"}) == (204, None)
    assert s.api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    s.type("exit 7\r")
    assert s.wait() == 7


def test_config_file_boots_alone_and_with_the_api(served, tmp_path, disk):
    config = tmp_path / "vm.json"
    config.write_text(json.dumps({
        "boot-source": {"kernel_image_path": guest("hello"), "boot_args": "from=file"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 40},
        "drives": [{"drive_id": "rootfs", "path_on_host": disk, "is_root_device": True,
                    "is_read_only": True}]}))
    result = pyvisor("run", "--config-file", str(config), "--console", "stdio", timeout=30)
    assert result.returncode == 0, result.stderr
    assert b"RAM: 40 MiB" in result.stdout
    assert b"cmdline: from=file root=/dev/vda ro" in result.stdout

    config.write_text(json.dumps({"boot-source": {"kernel_image_path": guest("shell")},
                                  "machine-config": {"vcpu_count": 2, "mem_size_mib": 32}}))
    s = served("--config-file", str(config), "--seccomp", "off")
    assert s.api("GET", "/")[1]["state"] == "Running"
    assert seccomp_mode(s.proc.pid) == 0
    assert s.api("GET", "/vm/config")[1]["machine-config"]["vcpu_count"] == 2
    s.api.wait_console(PROMPT)
    s.type("exit 1\r")
    assert s.wait() == 1

    config.write_text('{"boot-source": {"kernel_image_path": "k"}, "balloon": {}}')
    line = one_line_error(pyvisor("run", "--config-file", str(config), timeout=20))
    assert line == f"pyvisor: --config-file {config}: pyvisor does not support balloon"


def test_api_options_that_do_not_combine():
    line = one_line_error(pyvisor("run", "--api-sock", "/tmp/x.sock", "--disk", "d.img",
                                  timeout=20))
    assert "--disk, --net, --rng, --gdb" in line


@pytest.mark.parametrize("mode,codes", [
    ("xlate", "1d 38 e0 53 e0 d3 b8 9d irqs=8"),            # set 2 translated: set 1
    ("raw", "14 11 e0 71 e0 f0 71 f0 11 f0 14 irqs=11"),    # set 2
    ("set1", "1d 38 e0 53 e0 d3 b8 9d irqs=8")])
def test_send_ctrl_alt_del_types_on_the_i8042_keyboard(mode, codes):
    """Firecracker's SendCtrlAltDel: the keys arrive as scancodes on IRQ 1, one interrupt
    per byte, in the set the guest chose (keyboard guest: Microsoft's scancode tables)."""
    instance = Instance(host=HostOptions(console="none"))
    router = Router(instance)
    router.handle("PUT", "/boot-source", json.dumps({"kernel_image_path": guest("keyboard"),
                                                     "boot_args": f"mode={mode}"}).encode())
    router.handle("PUT", "/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 32}')
    assert router.handle("PUT", "/actions", b'{"action_type": "InstanceStart"}') == (204, None)
    machine = instance.machine
    try:
        deadline = time.monotonic() + 30
        while "keyboard: ready" not in machine.console_text:
            assert time.monotonic() < deadline and machine.state != "stopped", \
                machine.console_text
            time.sleep(0.02)
        assert router.handle("PUT", "/actions", b'{"action_type": "SendCtrlAltDel"}') == (204, None)
        outcome = machine.wait(30)
        assert (outcome.kind, outcome.status) == ("reset", 0), machine.console_text
        assert f"scancodes: {codes}\r\n" in machine.console_text
        assert "keyboard: ctrl-alt-del" in machine.console_text
    finally:
        machine.close()
    assert router.handle("PUT", "/actions", b'{"action_type": "SendCtrlAltDel"}') == (
        400, {"fault_message": "The microVM has stopped."})


def test_keys_a_guest_never_reads_are_bounded_and_the_power_button_is_pyvisors():
    instance = Instance(host=HostOptions(console="none"))
    router = Router(instance)
    router.handle("PUT", "/boot-source", json.dumps({"kernel_image_path": guest("shell")}).encode())
    router.handle("PUT", "/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 32}')
    assert router.handle("PUT", "/actions", b'{"action_type": "InstanceStart"}') == (204, None)
    machine = instance.machine
    cad = b'{"action_type": "SendCtrlAltDel"}'
    try:
        # The shell guest has no keyboard driver: 8 bytes a chord, 16 held at most.
        assert router.handle("PUT", "/actions", cad) == (204, None)
        assert router.handle("PUT", "/actions", cad) == (204, None)
        status, body = router.handle("PUT", "/actions", cad)
        assert status == 400 and body["fault_message"].startswith(
            "Cannot send Ctrl-Alt-Del: the keyboard buffer is full")
        assert not machine.acpi_pm.pio_read(PM1_STS, 2) & PWRBTN_STS
        assert router.handle("PUT", "/pyvisor/actions",
                             b'{"action_type": "PowerButton"}') == (204, None)
        assert machine.acpi_pm.pio_read(PM1_STS, 2) & PWRBTN_STS
        assert machine.state == "running"
    finally:
        machine.close()


def test_patch_drive_swaps_the_backing_file(tmp_path):
    first, second = tmp_path / "first.img", tmp_path / "second.img"
    first.write_bytes(bytes(64 << 10))
    second.write_bytes(bytes(192 << 10))
    instance = Instance(host=HostOptions(console="none"))
    router = Router(instance)
    put = lambda path, body: router.handle("PUT", path, json.dumps(body).encode())
    put("/boot-source", {"kernel_image_path": guest("shell")})
    put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
    put("/drives/data", {"drive_id": "data", "path_on_host": str(first), "is_root_device": False})
    assert put("/actions", {"action_type": "InstanceStart"}) == (204, None)
    machine = instance.machine
    try:
        disk = next(f.device for f in machine.pci_functions if f.device.name.startswith("blk"))
        generation = disk.config_generation
        patch = lambda body: router.handle("PATCH", "/drives/data", json.dumps(body).encode())
        assert patch({"drive_id": "data", "path_on_host": str(second)}) == (204, None)
        # The capacity in the device's configuration space (512-byte sectors) is the new one.
        assert disk.read_config(0, 8) == (192 << 10) // 512
        assert disk.config_generation == generation + 1
        fd, _ = open_disk(DiskSpec(str(first)))      # the old image is no longer locked
        os.close(fd)
        assert router.handle("GET", "/vm/config", b"")[1]["drives"][0]["path_on_host"] == str(second)
        status, body = patch({"drive_id": "data", "path_on_host": str(tmp_path / "gone.img")})
        assert status == 400 and "No such file" in body["fault_message"]
        assert patch({"drive_id": "nope", "path_on_host": str(first)}) == (
            400, {"fault_message": "The id from the path does not match the id from the body!"})
        assert router.handle("PATCH", "/drives/nope", b'{"drive_id": "nope"}') == (
            400, {"fault_message": "Unable to patch the block device: drive nope does not exist."})
    finally:
        machine.close()


def test_sigterm_ends_pyvisor_before_and_after_the_start(served):
    waiting = served()
    waiting.proc.terminate()
    assert waiting.wait() == 128 + 15
    assert not os.path.exists(waiting.sock)
    running = served(guest("shell"), "--mem", "32M", command="run")
    running.api.wait_console(PROMPT)
    running.proc.terminate()
    assert running.wait() == 128 + 15
    assert b"terminated by SIGTERM" in running.proc.stderr.read()
    assert not os.path.exists(running.sock)


def test_snapshot_create_and_load_in_a_new_pyvisor(served, tmp_path, disk):
    snap, mem = str(tmp_path / "vm.snap"), str(tmp_path / "vm.mem")
    first = served()
    api = first.api
    api("PUT", "/boot-source", {"kernel_image_path": guest("shell"),
                                "boot_args": "mode=interactive"})
    api("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk,
                                  "is_root_device": True, "is_read_only": True})
    api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
    api("PUT", "/actions", {"action_type": "InstanceStart"})
    api.wait_console(PROMPT)
    create = {"snapshot_path": snap, "mem_file_path": mem, "snapshot_type": "Full"}
    assert api("PUT", "/snapshot/create", create) == (400, {
        "fault_message": 'Create snapshot error: the microVM must be paused first '
                         '(PATCH /vm {"state": "Paused"}).'})
    api("PATCH", "/vm", {"state": "Paused"})
    assert api("PUT", "/snapshot/create", create) == (204, None)
    assert os.path.samefile(snap, mem)
    api("PATCH", "/vm", {"state": "Resumed"})
    first.type("exit 1\r")
    assert first.wait() == 1

    second = served()
    load = {"snapshot_path": snap, "mem_backend": {"backend_path": mem, "backend_type": "File"},
            "resume_vm": False}
    assert seccomp_mode(second.proc.pid) == 0
    assert second.api("PUT", "/snapshot/load", load) == (204, None)
    assert second.api("GET", "/")[1]["state"] == "Paused"
    assert seccomp_mode(second.proc.pid) == 2      # from the load on
    config = second.api("GET", "/vm/config")[1]
    assert config["machine-config"] == {"vcpu_count": 1, "mem_size_mib": 32, "smt": False}
    assert config["drives"] == [{"drive_id": "rootfs", "path_on_host": disk,
                                 "is_root_device": True, "is_read_only": True}]
    assert second.api("PUT", "/snapshot/load", load)[1] == {
        "fault_message": "The requested operation is not supported after starting the microVM."}
    assert second.api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    # The restored shell answers: it was waiting at its prompt.
    second.type("echo restored\r")
    second.api.wait_console("restored\r\n")
    second.type("exit 3\r")
    assert second.wait() == 3
