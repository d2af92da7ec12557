"""The seccomp filter (pyvisor.sandbox.seccomp) inside a process with a machine built and
running: what it forbids fails with EPERM, and the guest still runs to its end with
virtio-blk writes, MSI-X interrupts, the I/O thread, two vCPU threads and console output
to a file, all started after the filter went in."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT, guest, needs_kvm

pytestmark = [needs_kvm, pytest.mark.kvm]

SCRIPT = textwrap.dedent("""
    import errno, json, os, subprocess, sys
    from pyvisor import Machine
    from pyvisor.sandbox import seccomp

    kernel, disk, console, scratch = sys.argv[1:]
    machine = Machine(kernel=kernel, mem="64M", cpus=2, disks=[disk], console=console,
                      cmdline="write=1 irq=1")
    assert seccomp.install()
    assert not seccomp.install()        # once per process

    def attempt(call):
        try:
            call()
        except OSError as e:
            return errno.errorcode[e.errno]
        return "allowed"

    def child():
        if os.fork() == 0:
            os._exit(0)

    report = {
        "execv": attempt(lambda: os.execv("/bin/true", ["true"])),
        "fork": attempt(child),
        "subprocess": attempt(lambda: subprocess.run(["/bin/true"])),
        "open_write": attempt(lambda: open(scratch, "w")),
        "open_append": attempt(lambda: open(scratch, "a")),
        "open_rdwr": attempt(lambda: os.open(disk, os.O_RDWR)),
        "open_read": attempt(lambda: open(kernel, "rb").close()),
        "unlink": attempt(lambda: os.unlink(disk)),
        "mkdir": attempt(lambda: os.mkdir(scratch + ".d")),
        "chroot": attempt(lambda: os.chroot("/")),
        "kill_parent": attempt(lambda: os.kill(os.getppid(), 0)),
        "kill_self": attempt(lambda: os.kill(os.getpid(), 0)),
    }
    # Raw calls with arguments that would fail anyway (EFAULT, EINVAL, EBADF, ESRCH...)
    # if the filter let them through: only the filter answers EPERM (clone3: ENOSYS).
    import ctypes
    from pyvisor._native import lib
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    bad = (ctypes.c_long(-1),) * 6
    for name in ("ptrace process_vm_readv process_vm_writev mount umount2 pivot_root "
                 "init_module finit_module kexec_load bpf perf_event_open keyctl execveat "
                 "tkill pidfd_open clone3").split():
        ctypes.set_errno(0)
        ret = libc.syscall(ctypes.c_long(getattr(lib, "__NR_" + name)), *bad)
        report[name] = errno.errorcode.get(ctypes.get_errno(), "none") if ret < 0 else "allowed"
    with machine:
        machine.start()
        outcome = machine.wait(60)
        report["outcome"] = [outcome.kind, outcome.status, outcome.detail]
    print(json.dumps(report))
""")


def test_forbidden_calls_fail_and_the_guest_runs_on(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 << 10))
    console = tmp_path / "console.log"
    scratch = tmp_path / "scratch"
    result = subprocess.run([sys.executable, "-c", SCRIPT, guest("virtio_blk"), str(disk),
                             str(console), str(scratch)],
                            capture_output=True, timeout=90, cwd=ROOT)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().splitlines()[-1])
    outcome = report.pop("outcome")
    assert report == {"execv": "EPERM", "fork": "EPERM", "subprocess": "EPERM",
                      "open_write": "EPERM", "open_append": "EPERM", "open_rdwr": "EPERM",
                      "open_read": "allowed", "unlink": "EPERM", "mkdir": "EPERM",
                      "chroot": "EPERM", "kill_parent": "EPERM", "kill_self": "allowed",
                      "clone3": "ENOSYS",
                      **{name: "EPERM" for name in (
                          "ptrace", "process_vm_readv", "process_vm_writev", "mount",
                          "umount2", "pivot_root", "init_module", "finit_module",
                          "kexec_load", "bpf", "perf_event_open", "keyctl", "execveat",
                          "tkill", "pidfd_open")}}
    assert outcome[:2] == ["reset", 0], outcome   # how virtio_blk ends when all went well
    log = console.read_text(errors="replace")
    assert "write ok" in log, log
    assert disk.exists() and not scratch.exists()
    written = bytes((i * 7 + 1) & 0xFF for i in range(2 * 512))
    assert disk.read_bytes()[8 * 512:10 * 512] == written
