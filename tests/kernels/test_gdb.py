"""The gdb stub with the real gdb (Debian's `gdb`, batch mode) against the gdb_target tiny
kernel, built with symbols: break on a function, continue, read registers and variables,
step, watch a variable, change one and continue to the exit — with 1 and 2 vCPUs, through
the library (`gdbstub.serve`) and through `pyvisor run --gdb`. Then the protocol edges
gdb's batch mode cannot reach (Ctrl-C, a second client, kill) over a raw socket.

On a PVM host the guest runs in KVM's instruction emulator, which runs no int3, so the
breakpoints are `hbreak` (Z1); watchpoints (Z2) work there through page protection."""
from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import time

import pytest

from helpers import PYVISOR, guest, needs_kvm
from pyvisor import Machine
from pyvisor.debug.gdbstub import serve
from pyvisor.debug.gdbstub.protocol import PacketReader, Packet, frame

GDB = shutil.which("gdb")
pytestmark = [needs_kvm, pytest.mark.kvm,
              pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")]

# 2 * (1 + 2 + 3) + 1: gdb sets rounds from 5 to 3 before work() runs.
CHANGED_STATUS = 13


def gdb_commands(cpus: int) -> list[str]:
    commands = [
        "info threads",
        "print rounds",
        "set var rounds = 3",
        "hbreak work",
        "continue",
        "info registers rip rdi",
        "print/x marker",
        "print/x $cr0",
        "print/x $efer",
        "print $cs",
        "stepi",
        "info registers rip",
        "next",
    ]
    if cpus > 1:
        commands += ["thread 2", "info registers rip", "thread 1"]
    commands += ["watch counter", "continue", "print counter", "delete", "continue"]
    return commands


def symbol(name: str) -> int:
    """The address of a global of gdb_target, from its symbol table."""
    table = subprocess.run(["nm", guest("gdb_target")], capture_output=True, text=True,
                           check=True).stdout
    return int(re.search(rf"^([0-9a-f]+) \w {name}$", table, re.M).group(1), 16)


def run_gdb(target: str, commands: list[str], timeout: float = 90) -> str:
    args = [GDB, "-nx", "-batch", guest("gdb_target"),
            "-ex", "set confirm off", "-ex", f"target remote {target}"]
    for command in commands:
        args += ["-ex", command]
    result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout)
    return result.stdout + result.stderr


def check_session(out: str, cpus: int) -> None:
    threads = re.findall(r"^\*?\s+(\d+)\s+Thread (\d+) \(vCPU (\d+)\)", out, re.M)
    assert [t[0] for t in threads][:cpus] == [str(i + 1) for i in range(cpus)], out
    assert "$1 = 5" in out, out                              # rounds, read before the change
    assert re.search(r"Breakpoint 1, work \(n=3\) at kernels/gdb_target.c", out), out
    assert re.search(r"^rip\s+0x100080\s+0x100080 <work>", out, re.M), out
    assert re.search(r"^rdi\s+0x3\s+3$", out, re.M), out     # the argument, as changed
    assert "= 0x600dcafe" in out, out                         # marker
    cr0 = int(re.search(r"^\$3 = (0x[0-9a-f]+)$", out, re.M).group(1), 16)
    assert cr0 & 0x80000001 == 0x80000001, out               # PG and PE
    efer = int(re.search(r"^\$4 = (0x[0-9a-f]+)$", out, re.M).group(1), 16)
    assert efer & 0x500 == 0x500, out                        # LME and LMA
    assert "$5 = 16" in out, out                              # CS: __BOOT_CS, 0x10
    assert re.search(r"^rip\s+0x100083\s+0x100083 <work\+3>", out, re.M), out   # stepi
    assert "Old value = 0" in out and "New value = 1" in out, out
    assert re.search(r"in tick \(n=n@entry=1\)", out), out
    assert f"exited with code {CHANGED_STATUS:03o}" in out, out
    if cpus > 1:
        assert "[Switching to thread 2 (Thread 2)]" in out, out


@pytest.mark.parametrize("cpus", [1, 2])
def test_gdb_session_through_the_library(cpus):
    with Machine(kernel=guest("gdb_target"), mem="64M", cpus=cpus) as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start(paused=True)
            out = run_gdb(f"127.0.0.1:{server.address.port}", gdb_commands(cpus))
            outcome = machine.wait(timeout=30, events=False)
    check_session(out, cpus)
    assert outcome.kind == "exit" and outcome.status == CHANGED_STATUS, outcome
    assert "gdb_target: rounds=3" in machine.console_text


@pytest.mark.parametrize("cpus", [1, 2])
def test_gdb_session_through_the_cli(cpus, tmp_path):
    console = tmp_path / "console.txt"
    proc = subprocess.Popen([PYVISOR, "run", guest("gdb_target"), "--mem", "64M",
                             "--cpus", str(cpus), "--console", str(console), "--timeout", "60",
                             "--gdb", "tcp:127.0.0.1:0", "--gdb-wait"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        notice = proc.stderr.readline()
        found = re.match(r"pyvisor: gdb stub on tcp:127\.0\.0\.1:(\d+), the guest waits for gdb$",
                         notice)
        assert found, notice
        out = run_gdb(f"127.0.0.1:{found.group(1)}", gdb_commands(cpus))
        status = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    errors = proc.stderr.read()
    check_session(out, cpus)
    assert status == CHANGED_STATUS, errors
    assert "Traceback" not in errors, errors
    assert "gdb_target: rounds=3" in console.read_text()


def test_detach_leaves_the_guest_running_without_breakpoints():
    with Machine(kernel=guest("gdb_target"), mem="64M") as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start(paused=True)
            out = run_gdb(f"127.0.0.1:{server.address.port}",
                          ["hbreak tick", "continue", "print n", "detach"])
            outcome = machine.wait(timeout=30, events=False)
    assert "Breakpoint 1, tick (n=n@entry=1)" in out and "$1 = 1" in out, out
    assert "[Inferior 1 (Remote target) detached]" in out, out
    assert outcome.kind == "exit" and outcome.status == 31, outcome   # 5 rounds, no stop


def test_break_z0_and_continuing_over_it():
    """gdb's `break` is Z0: int3 where the backend runs it, a hardware breakpoint on PVM.
    Each continue steps over the breakpoint it stopped at and stops at the next call."""
    with Machine(kernel=guest("gdb_target"), mem="64M") as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start(paused=True)
            out = run_gdb(f"127.0.0.1:{server.address.port}",
                          ["break tick", "continue", "continue", "continue", "print n",
                           "info breakpoints", "delete", "continue"])
            outcome = machine.wait(timeout=30, events=False)
    assert "Breakpoint 1, tick (n=n@entry=3)" in out and "$1 = 3" in out, out
    assert re.search(r"breakpoint already hit 3 times", out), out
    assert "exited with code 037" in out, out
    assert outcome.kind == "exit" and outcome.status == 31, outcome


# --- raw protocol against a real machine ------------------------------------------------
class Client:
    """Just enough of a gdb to drive the edges: sends packets, acks, reads replies."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = PacketReader()
        self.pending: list = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def reply(self, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.pending):
                if isinstance(event, Packet):
                    del self.pending[:i + 1]
                    self.sock.sendall(b"+")
                    return event.payload
            left = deadline - time.monotonic()
            assert left > 0, "no reply from the stub"
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                data = self.sock.recv(4096)
                assert data, "the stub closed the connection"
                self.pending += self.reader.feed(data)

    def request(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def test_ctrl_c_pauses_and_the_guest_survives_a_second_client_and_a_drop():
    with Machine(kernel=guest("shell"), mem="32M", cpus=2) as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start()
            gdb = Client(server.address.port)
            assert gdb.request(b"?") == b"T02thread:1;"       # attaching stopped it
            assert machine.state == "paused"
            assert gdb.request(b"qfThreadInfo") == b"m1,2"
            gdb.send(b"vCont;c")
            time.sleep(0.3)
            assert machine.state == "running"
            other = socket.create_connection(("127.0.0.1", server.address.port), timeout=10)
            assert other.recv(16) == b""                      # refused: one client at a time
            other.close()
            gdb.sock.sendall(b"\x03")
            assert gdb.reply() == b"T02thread:1;"
            assert machine.state == "paused"
            gdb.close()                                       # dropped without detaching
            for _ in range(100):
                if machine.state == "running":
                    break
                time.sleep(0.05)
            assert machine.state == "running"
            machine.send_input(b"exit 7\r")
            outcome = machine.wait(timeout=30, events=False)
    assert outcome.kind == "exit" and outcome.status == 7, outcome


def test_register_and_memory_round_trips_on_a_real_vcpu():
    with Machine(kernel=guest("gdb_target"), mem="64M") as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start(paused=True)
            gdb = Client(server.address.port)
            g = gdb.request(b"g")
            assert len(g) == 2 * 600
            rip = int.from_bytes(bytes.fromhex(g[256:272].decode()), "little")
            assert rip == machine.vcpus[0].regs.rip and rip >= 0x100000
            assert gdb.request(b"G" + g) == b"OK"             # unchanged: accepted
            assert gdb.request(b"P39=0050000000000000") == b"OK"   # fs_base = 0x5000
            assert gdb.request(b"p39") == b"0050000000000000"
            assert machine.vcpus[0].sregs.fs.base == 0x5000
            assert gdb.request(b"P0=efbeadde00000000") == b"OK"    # rax
            assert machine.vcpus[0].regs.rax == 0xDEADBEEF
            marker, rounds = symbol("marker"), symbol("rounds")
            assert gdb.request(b"m%x,4" % marker) == b"feca0d60"    # through the page tables
            assert gdb.request(b"M%x,8:0300000000000000" % rounds) == b"OK"
            assert gdb.request(b"mffff800000000000,8") == b"E14"   # not mapped
            assert gdb.request(b"D") == b"OK"
            gdb.close()
            outcome = machine.wait(timeout=30, events=False)
    assert outcome.kind == "exit" and outcome.status == CHANGED_STATUS, outcome


def test_a_step_that_cannot_finish_is_interrupted():
    """vCPU 1 waits for a SIPI that never comes: its step cannot complete, and Ctrl-C
    answers it; the machine is still usable afterwards."""
    with Machine(kernel=guest("gdb_target"), mem="64M", cpus=2) as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start(paused=True)
            gdb = Client(server.address.port)
            gdb.send(b"vCont;s:2")
            time.sleep(0.5)
            gdb.sock.sendall(b"\x03")
            assert gdb.reply() == b"T02thread:2;"
            assert gdb.request(b"vCont;s:1") == b"T05thread:1;"
            gdb.close()
            outcome = machine.wait(timeout=30, events=False)
    assert outcome.kind == "exit" and outcome.status == 31, outcome


def test_kill_stops_the_machine():
    with Machine(kernel=guest("shell"), mem="32M") as machine:
        with serve(machine, "tcp:127.0.0.1:0") as server:
            machine.start()
            gdb = Client(server.address.port)
            assert gdb.request(b"?")[:3] == b"T02"
            gdb.send(b"k")
            outcome = machine.wait(timeout=30, events=False)
            gdb.close()
    assert outcome.kind == "quit" and "gdb" in outcome.detail, outcome


def test_unix_socket(tmp_path):
    path = str(tmp_path / "gdb.sock")
    with Machine(kernel=guest("gdb_target"), mem="64M") as machine:
        with serve(machine, f"unix:{path}"):
            machine.start(paused=True)
            out = run_gdb(path, ["hbreak work", "continue", "print n", "detach"])
            outcome = machine.wait(timeout=30, events=False)
    assert "Breakpoint 1, work (n=5)" in out and "$1 = 5" in out, out
    assert outcome.kind == "exit" and outcome.status == 31, outcome
