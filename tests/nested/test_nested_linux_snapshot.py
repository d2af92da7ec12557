"""Snapshots of stock Linux in the nested test host: the Debian guest boots to a shell on
ttyS0 with an ext4 virtio disk; it is saved to a file and its pyvisor killed, then
`pyvisor restore` in a new process gets the shell to answer, with `date` within a minute of
the host's and the disk readable and writable; and an in-place restore of the booted guest
100 times, each run answering a shell command.

Run as a script (inside the nested host) this module is the driver of those machines:
    python test_nested_linux_snapshot.py save|inplace KERNEL INITRD DISK SNAPSHOT|COUNT
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUIET = "console=ttyS0 panic=-1 quiet"
MODULES = ["virtio_pci", "virtio_blk"]
PROMPT = "snap# "
INIT = r"""
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt && echo "DISK-MOUNTED"
PS1='snap# ' sh -i </dev/ttyS0 >/dev/ttyS0 2>&1
poweroff -f
"""
HELLO = b"hello from before the snapshot\n"
# After the restore: one command line, then Ctrl-A x.
RESTORED_STEPS = [["pyvisor: restored", "echo ans-$((6*7)) T=$(date +%s); cat /mnt/hello.txt; "
                       "echo after-restore > /mnt/new.txt; sync; echo WROTE-$((2+3))\r"],
                  ["WROTE-5", "\x01x"]]


# --- the driver, inside the nested host --------------------------------------------------

def _booted(kernel: str, initrd: str, disk: str):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pyvisor import Machine
    m = Machine(kernel=kernel, initrd=initrd, mem="256M", disks=[disk],
                cmdline=f"{QUIET} pv.test=snap")
    m.start()
    deadline = time.monotonic() + 300
    while PROMPT not in m.console_text:
        if time.monotonic() > deadline or m.state == "stopped":
            raise SystemExit(f"no shell prompt; console:\n{m.console_text[-3000:]}")
        time.sleep(0.1)
    return m


def _save(kernel: str, initrd: str, disk: str, path: str) -> None:
    m = _booted(kernel, initrd, disk)
    m.pause()
    print("SAVED", m.save(path), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)          # pyvisor killed: only the file remains


def _inplace(kernel: str, initrd: str, disk: str, count: str) -> None:
    m = _booted(kernel, initrd, disk)
    m.pause()
    snap = m.snapshot()
    for i in range(int(count)):
        m.restore(snap)
        mark = len(m.console_text)
        m.resume()
        m.send_input(f"echo ans-$(({i}*3))\n".encode())
        deadline = time.monotonic() + 60
        while f"ans-{i * 3}\r" not in m.console_text[mark:]:
            if time.monotonic() > deadline:
                raise SystemExit(f"run {i}: no answer; console:\n{m.console_text[-2000:]}")
            time.sleep(0.01)
        m.pause()
    print("INPLACE-OK", count, flush=True)
    m.stop()
    m.close()


# --- the tests, outside ------------------------------------------------------------------

if __name__ != "__main__":
    from nestedhost import LinuxGuest, NestedHost, again_if_wedged

    pytestmark = [pytest.mark.nested, pytest.mark.timeout(1800)]

    def prepare(guest: LinuxGuest, work: Path) -> tuple[Path, Path]:
        """The guest's initramfs and its ext4 disk (holding hello.txt)."""
        initrd = guest.initramfs(work / "initrd.gz", INIT, MODULES)
        tree = work / "tree"
        tree.mkdir()
        (tree / "hello.txt").write_bytes(HELLO)
        disk = work / "disk.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(disk), "16M"],
                       check=True, capture_output=True)
        return initrd, disk

    def saved_session(nested_host: NestedHost, guest: LinuxGuest, repo: Path,
                      work: Path) -> dict:
        initrd, disk = prepare(guest, work)
        py, me = f"{repo}/.venv/bin/python", f"{repo}/tests/nested/{Path(__file__).name}"
        snap = work / "linux.snap"
        commands = [
            f"{py} {me} save {guest.bzimage} {initrd} {disk} {snap}; echo driver-status=$?",
            (f"{py} {repo}/tests/nested/console_session.py "
             f"{shlex.quote(json.dumps(RESTORED_STEPS))} 300 -- "
             f"{repo}/.venv/bin/pyvisor restore {snap} --console stdio; echo HOST-T=$(date +%s)"),
        ]
        results = nested_host.run_many(commands, timeout=900, shares=[work])
        return {"save": results[0].output, "restore": results[1].output, "disk": disk}

    def inplace_session(nested_host: NestedHost, guest: LinuxGuest, repo: Path,
                        work: Path) -> str:
        initrd, disk = prepare(guest, work)
        py, me = f"{repo}/.venv/bin/python", f"{repo}/tests/nested/{Path(__file__).name}"
        command = f"{py} {me} inplace {guest.bzimage} {initrd} {disk} 100; echo driver-status=$?"
        return nested_host.run_many([command], timeout=1200, shares=[work])[0].output

    # Two L1 boots, not one: every wedge of this module's nested host (tests/nested/README.md,
    # "The snapshot module's wedges") struck in the in-place driver's L2 boot when it came
    # right after `pyvisor restore` in the same L1.
    @pytest.fixture(scope="module")
    def run(nested_host, guest_kernel, repo, tmp_path_factory):
        return again_if_wedged(lambda: saved_session(
            nested_host, guest_kernel, repo, tmp_path_factory.mktemp("linux-snap")))

    @pytest.fixture(scope="module")
    def inplace(nested_host, guest_kernel, repo, tmp_path_factory):
        return again_if_wedged(lambda: inplace_session(
            nested_host, guest_kernel, repo, tmp_path_factory.mktemp("linux-inplace")))

    def test_saved_linux_answers_in_a_new_process_with_its_disk_and_time(run):
        assert "SAVED" in run["save"], run["save"][-3000:]
        out = run["restore"]
        assert "session-status=0" in out, out[-3000:]
        assert "ans-42" in out and HELLO.decode().strip() in out, out[-3000:]
        guest_t = int(re.search(r"ans-42 T=(\d+)", out).group(1))
        host_t = int(re.search(r"HOST-T=(\d+)", out).group(1))
        assert abs(host_t - guest_t) < 60, (guest_t, host_t)
        written = subprocess.run(["debugfs", "-R", "cat /new.txt", str(run["disk"])],
                                 check=True, capture_output=True).stdout
        assert written == b"after-restore\n"

    def test_linux_restored_in_place_100_times_answers_each_time(inplace):
        assert "INPLACE-OK 100" in inplace, inplace[-3000:]


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"save": _save, "inplace": _inplace}[mode](*args)
