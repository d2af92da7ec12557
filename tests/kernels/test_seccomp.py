"""The sandbox (pyvisor.sandbox) inside a process with a machine built and running: what
the seccomp filter forbids fails with EPERM, and the guest still runs to its end with
virtio-blk writes, MSI-X interrupts, the I/O thread, two vCPU threads and console output
to a file, all started after the filter went in. With a stdio console (Ctrl-A s), every
thread's writes stay beneath the save directory (Landlock), even through an absolute path
relative to its fd; where Landlock is missing, writes fail there too and Ctrl-A s says so
in one line."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT, guest, needs_kvm
from sandbox_calls import child_env

pytestmark = [needs_kvm, pytest.mark.kvm]

SCRIPT = textwrap.dedent("""
    import errno, json, os, subprocess, sys
    from pyvisor import Machine
    from pyvisor.sandbox import seccomp
    from sandbox_calls import attempt

    kernel, disk, console, scratch, options = sys.argv[1:]
    machine = Machine(kernel=kernel, mem="64M", cpus=2, disks=[disk + options], console=console,
                      cmdline="write=1 irq=1")
    assert seccomp.install()
    assert not seccomp.install()        # once per process

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
        "utime": attempt(lambda: os.utime(disk, (0, 0))),
        "setxattr": attempt(lambda: os.setxattr(disk, "user.pyvisor", b"1")),
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


@pytest.mark.parametrize("options", ["", ",aio=threads"])
def test_forbidden_calls_fail_and_the_guest_runs_on(tmp_path, options):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 << 10))
    console = tmp_path / "console.log"
    scratch = tmp_path / "scratch"
    result = subprocess.run([sys.executable, "-c", SCRIPT, guest("virtio_blk"), str(disk),
                             str(console), str(scratch), options],
                            capture_output=True, timeout=90, cwd=ROOT, env=child_env())
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().splitlines()[-1])
    outcome = report.pop("outcome")
    assert report == {"execv": "EPERM", "fork": "EPERM", "subprocess": "EPERM",
                      "open_write": "EPERM", "open_append": "EPERM", "open_rdwr": "EPERM",
                      "open_read": "allowed", "unlink": "EPERM", "mkdir": "EPERM",
                      "utime": "EPERM", "setxattr": "EPERM",
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


# A machine as `pyvisor run` makes it (seccomp on, stdio console: stdin a pipe, stdout a
# file), the shell guest waiting at its prompt, a thread that was running before the
# sandbox went in, a disk on aio=threads (whose C workers Landlock must reach too), then
# writes tried every way the filter lets through to the save directory's fd, and Ctrl-A s
# typed on the console.
SAVE_SCRIPT = textwrap.dedent("""
    import errno, glob, json, os, sys, threading, time
    from pyvisor import Machine
    from pyvisor.sandbox import landlock
    from sandbox_calls import attempt

    kernel, save_dir, console, outside, victim, disk, mode = sys.argv[1:]
    if mode == "no-landlock":
        landlock.abi_version = lambda: -errno.ENOSYS     # as a kernel without Landlock says
    os.chdir(save_dir)
    keys, typed = os.pipe()
    os.dup2(keys, 0)
    os.dup2(os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)

    report, go = {}, threading.Event()

    def write_outside(key):
        report[key] = attempt(lambda: os.close(os.open(
            outside, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=machine._save_dir)))

    early = threading.Thread(target=lambda: (go.wait(), write_outside("early_thread")))
    early.start()
    machine = Machine(kernel=kernel, mem="64M", console="stdio", seccomp=True,
                      disks=[disk + ",aio=threads"])
    machine.start()
    fd = machine._save_dir
    write_outside("absolute_via_save_dir")
    report["absolute"] = attempt(lambda: open(outside, "w"))
    report["truncate_via_save_dir"] = attempt(lambda: os.close(os.open(
        victim, os.O_RDONLY | os.O_TRUNC, dir_fd=fd)))
    report["create_in_save_dir"] = attempt(lambda: os.close(os.open(
        "probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd)))
    report["rename_out_of_save_dir"] = attempt(lambda: os.rename(
        "probe", outside, src_dir_fd=fd, dst_dir_fd=fd))
    report["unlink_in_save_dir"] = attempt(lambda: os.unlink("probe", dir_fd=fd))
    go.set()
    early.join()
    late = threading.Thread(target=write_outside, args=("late_thread",))
    late.start()
    late.join()
    os.write(typed, b"\\x01s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = [l for l in open(console, "rb").read().split(b"\\r\\n") if b"[pyvisor:" in l]
        if lines:
            break
        time.sleep(0.05)
    time.sleep(0.2)                      # a second answer, if any, would be here by now
    report["answers"] = [l.decode() for l in open(console, "rb").read().split(b"\\r\\n")
                         if b"[pyvisor:" in l]
    report["snapshots"] = sorted(os.path.basename(p) for p in glob.glob("pyvisor-*.snap"))
    report["state"] = machine.state
    machine.close()
    print(json.dumps(report), file=sys.stderr)
""")


def run_save_script(tmp_path, mode: str) -> tuple[dict, object]:
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("intact")
    outside = tmp_path / "outside"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 << 10))
    result = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, guest("shell"), str(save_dir),
                             str(tmp_path / "console.log"), str(outside), str(victim),
                             str(disk), mode],
                            capture_output=True, timeout=120, cwd=ROOT,
                            env=child_env())
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stderr.decode().splitlines()[-1])
    assert not outside.exists()
    assert victim.read_text() == "intact"
    assert report.pop("state") == "running"     # the guest ran on through all of it
    return report, save_dir


def test_writes_stay_beneath_the_save_directory_and_ctrl_a_s_saves(tmp_path):
    report, save_dir = run_save_script(tmp_path, "landlock")
    snapshots = report.pop("snapshots")
    answers = report.pop("answers")
    assert report == {"absolute_via_save_dir": "EACCES", "absolute": "EPERM",
                      "truncate_via_save_dir": "EPERM", "create_in_save_dir": "allowed",
                      "rename_out_of_save_dir": "EACCES", "unlink_in_save_dir": "allowed",
                      "early_thread": "EACCES", "late_thread": "EACCES"}
    assert len(snapshots) == 1 and answers == [f"[pyvisor: saved {save_dir / snapshots[0]}]"]
    assert sorted(p.name for p in save_dir.iterdir()) == snapshots   # no temporary left


def test_without_landlock_nothing_is_written_and_ctrl_a_s_says_why(tmp_path):
    report, save_dir = run_save_script(tmp_path, "no-landlock")
    assert report.pop("snapshots") == [] and list(save_dir.iterdir()) == []
    answers = report.pop("answers")
    assert set(report.values()) == {"EPERM"}, report
    assert answers == ["[pyvisor: cannot save a snapshot: the seccomp filter forbids writing "
                       "files, since this kernel has no Landlock (Linux 5.13 or later with "
                       "CONFIG_SECURITY_LANDLOCK); pyvisor run --seccomp off can save]"]
