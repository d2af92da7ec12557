"""The nested test host: a QEMU TCG machine with AMD SVM + nested paging running Debian's
generic kernel with kvm-amd, so that its /dev/kvm is a genuine hardware-style KVM.

This machine's root is shared read-only over 9p and, with a RAM overlay on top, becomes the
root of each command (`chroot`), so the repo, its .venv and the cache are at the same paths
inside. Commands are handed in as a small cpio appended to the cached initramfs; their
output comes back on the serial console between markers that carry a per-run token.
"""
from __future__ import annotations

import compileall
import hashlib
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from . import debian, initramfs
from .debian import KernelPackage
from .initramfs import INIT_PREAMBLE, Cpio, busybox_base
from .kernel_image import extract_vmlinux
from .qemu import L1Qemu, l1_qemu

L1_KERNEL_SERIES = "6.1"      # bookworm's; 6.12 (backports) was tried, see README.md
L1_MODULES = [
    "kvm_amd",                                   # pulls irqbypass, kvm, ccp
    "virtio_pci", "9pnet_virtio", "9p",          # pulls virtio*, 9pnet, netfs, fscache
    "overlay",
    "tun",                                       # tap devices for virtio-net tests
]
# Without vGIF: with it, L1 wedged in about one boot-module session in four to ten (TCG
# stopped delivering L1's interrupts while an L2 vCPU spun, see NestedHostWedged); without
# it, one wedge in the thirteen sessions since: rarer perhaps, not gone.
L1_MODULE_PARAMETERS = {"kvm-amd": "vgif=0"}

# The L1 init: modules, the 9p root under a RAM overlay at /host, then /nested/run.sh (the
# per-run commands), then power off. Kernel messages are kept off the console (`dmesg -n 1`)
# so they do not interleave with command output; `dmesg` still has them.
L1_INIT = INIT_PREAMBLE + r"""
dmesg -n 1
fail() { echo "nested-init: $*"; poweroff -f; }
mkdir -p /lower /rw /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
    || fail "cannot mount the host root over 9p"
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /host \
    || fail "cannot mount the overlay root"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs tmpfs /host/run
diagnostics() {   # to COM2: the kernel log, then every 15 s what is running or stuck
    cat /dev/kmsg &
    while sleep 15; do
        echo "== uptime $(cut -d' ' -f1 /proc/uptime) load $(cat /proc/loadavg)"
        for t in /proc/[0-9]*/task/[0-9]*; do
            state=$(sed 's/.*) //' $t/stat 2>/dev/null | cut -d' ' -f1)
            case "$state" in R|D)
                echo "-- $t $(cat $t/comm 2>/dev/null) $state wchan=$(cat $t/wchan 2>/dev/null)"
                cat $t/stack 2>/dev/null;;
            esac
        done
    done
}
diagnostics >/dev/ttyS1 2>&1 &
[ -e /nested/run.sh ] && . /nested/run.sh
poweroff -f
"""

# What each command sees: a clean environment, HOME on the RAM overlay, no stdin.
COMMAND_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "TERM": "dumb",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}

PACKAGE = Path(__file__).resolve().parents[3] / "pyvisor"


def compile_pyvisor() -> None:
    """Bytecode for the pyvisor tree, as an installed pyvisor has it. L1 sees this
    machine's root read-only and runs commands with PYTHONDONTWRITEBYTECODE, so without
    it every pyvisor start there compiles every module from source under TCG (measured:
    2.6-3.6 s from import to the guest's first instruction, against 1.4-1.6 s)."""
    compileall.compile_dir(PACKAGE, quiet=1)


MARK = "@@pyvisor-nested"
CPU_MODEL = "EPYC,+svm,+npt"     # an AMD CPU with SVM and nested paging, which TCG emulates


@dataclass(frozen=True)
class NestedResult:
    """One command's outcome: exit status, output (stdout+stderr), seconds inside L1."""
    status: int
    output: str
    duration: float


@dataclass
class NestedRun:
    """Facts about the last boot, for timing reports and error messages."""
    wall: float = 0.0           # QEMU start to exit, host seconds
    boot: float = 0.0           # L1 uptime when the first command started
    console: str = ""           # the whole serial console
    results: list[NestedResult] = field(default_factory=list)


class NestedHostError(RuntimeError):
    """The nested host did not report a command's end (crash, hang, timeout)."""


class NestedHostWedged(NestedHostError):
    """L1's own kernel stopped running: its COM2 heartbeat went silent.

    Seen in about one boot-module session in four to ten, and still now and then with vGIF
    off (L1_MODULE_PARAMETERS; soak.py: none in 40 sessions on QEMU 7.2, one in 40 on QEMU
    10, so a newer QEMU is no cure): QEMU's TCG keeps executing an L2 vCPU that spins (for example in
    stop_machine) and L1 never again takes an interrupt, so nothing in L1 (not the
    heartbeat, not a command's own timeout) runs. That is the emulator, not a command; the
    caller may start the session afresh."""


T = TypeVar("T")


# Sessions a wedge may cost: every wedge seen here left L1 halted with its timer's vector
# pending in IRR and deliverable, never taken (tests/nested/README.md), an emulator bug
# that struck up to two sessions of one module in a CI run.
WEDGE_ATTEMPTS = 3


def again_if_wedged(session: Callable[[], T]) -> T:
    """Run a nested-host session; while L1's own kernel wedges (the emulator, not a
    command), run it again from scratch, WEDGE_ATTEMPTS times in all. `session` must build
    its inputs afresh on each call. The last attempt's wedge fails like any other error."""
    for attempt in range(1, WEDGE_ATTEMPTS):
        try:
            return session()
        except NestedHostWedged as exc:
            warnings.warn(f"nested host wedged (attempt {attempt} of {WEDGE_ATTEMPTS}), "
                          f"running the session again: {str(exc)[:300]}")
    return session()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# What a hang report keeps of the monitor's answers: L1's registers, and of its local APIC
# the timer (armed or not), the in-service and requested vectors and the priorities, which
# tell whether L1 halted with no timer set or with its interrupts held back.
REGISTER_LINES = ("CPU#", "RAX", "RSI", "R8 ", "R12", "RIP", "CS ", "CR0", "EFER")
LAPIC_LINES = ("LVTT", "Timer", "ISR", "IRR", "APR")


def _ask_monitor(path: Path, command: str, keep: tuple[str, ...]) -> str:
    """The lines of one QEMU monitor command's answer that start with one of keep (best
    effort: for a hang report)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            answer = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                answer += chunk
                if answer.count(b"(qemu)") >= 2:
                    break
    except OSError as e:
        return f"(no answer from the QEMU monitor: {e})"
    return "\n".join(line for line in answer.decode(errors="replace").splitlines()
                     if line.startswith(keep))


class NestedHost:
    """A prepared nested host; `run` / `run_many` boot it once per call."""

    # L1 counts as wedged after this long without a word on COM2, where it writes a
    # heartbeat every 15 s of its time (its clock runs somewhat slower than the wall's).
    wedge_seconds = 90

    def __init__(self, kernel: KernelPackage, image: Path, initrd: Path, *, cpus: int = 1,
                 mem_mb: int = 3072, qemu: L1Qemu | None = None,
                 cpu_model: str = CPU_MODEL, qemu_args: Sequence[str] = ()) -> None:
        self.kernel = kernel
        self.image = image
        self.initrd = initrd
        self.cpus = cpus
        self.mem_mb = mem_mb
        self.qemu = qemu or L1Qemu("qemu-system-x86_64")
        self.cpu_model = cpu_model
        self.qemu_args = tuple(qemu_args)   # more L1 settings to try (tests/nested/soak.py)
        self.last = NestedRun()

    @classmethod
    def prepare(cls, cache: Path | None = None, qemu: str | None = None,
                kernel_series: str | None = None, **options) -> "NestedHost":
        """Install the tools, fetch the generic kernel, build the L1 initramfs (all cached).

        `qemu` picks L1's QEMU (see qemu.py: "7.2", "10" or a binary's path; default
        $PYVISOR_NESTED_QEMU, else qemu.DEFAULT); `kernel_series` L1's Debian kernel
        (debian.SERIES: "6.1", or "6.12" from bookworm-backports; default
        $PYVISOR_NESTED_L1_KERNEL, else L1_KERNEL_SERIES).

        L1 boots the kernel's vmlinux through its PVH note rather than the bzImage: the
        bzImage's XZ self-decompression costs about 2.7 s under TCG.
        """
        debian.ensure_tools()
        compile_pyvisor()
        cache = cache or debian.cache_dir()
        l1 = l1_qemu(qemu, cache)
        series = (kernel_series or os.environ.get("PYVISOR_NESTED_L1_KERNEL")
                  or L1_KERNEL_SERIES)
        kernel = debian.kernel_package("amd64", cache, series)
        initrd = cache / "l1" / f"initramfs-{kernel.version}.cpio.gz"
        stamp = initrd.with_suffix(".stamp")
        # rebuild when the init, the module list, busybox or the archive writer change
        key = hashlib.sha256(repr((L1_INIT, L1_MODULES, L1_MODULE_PARAMETERS,
                                   os.path.getsize(debian.BUSYBOX),
                                   Path(initramfs.__file__).read_text())).encode()).hexdigest()
        image = cache / "l1" / f"vmlinux-{kernel.version}"
        with debian.locked(cache / ".lock-l1"):
            if not image.exists():
                image.parent.mkdir(parents=True, exist_ok=True)
                extract_vmlinux(kernel.vmlinuz, image)
            if not initrd.exists() or not stamp.exists() or stamp.read_text() != key:
                initrd.parent.mkdir(parents=True, exist_ok=True)
                data = busybox_base(L1_INIT, kernel, L1_MODULES, L1_MODULE_PARAMETERS).gzip()
                tmp = initrd.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.rename(initrd)
                stamp.write_text(key)
        return cls(kernel, image, initrd, qemu=l1, **options)

    def describe(self) -> str:
        """Which QEMUs a report's figures come from: L1's, and the `qemu-system-x86_64` on
        PATH (the system's) that reference boots and benchmarks run inside L1."""
        return (f"nested host: L1 on QEMU {self.qemu.version()} "
                f"({' '.join(self.qemu_settings())}, kernel {self.kernel.version}); "
                f"reference QEMU inside L1: {L1Qemu('qemu-system-x86_64').version()}")

    def qemu_settings(self) -> list[str]:
        """The L1 settings that vary, for reports."""
        return [f"-cpu {self.cpu_model}", f"-smp {self.cpus}", *self.qemu_args]

    def qemu_command(self, initrd: Path, console: Path, shares: Sequence[Path]) -> list[str]:
        cmd = [
            self.qemu.binary, *self.qemu.arguments(),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", "tcg,thread=multi" if self.cpus > 1 else "tcg",
            "-cpu", self.cpu_model, "-m", str(self.mem_mb), "-smp", str(self.cpus),
            *self.qemu_args,
            "-kernel", str(self.image), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet",
            "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
            "-chardev", f"file,id=diag,path={console.with_name('diagnostics.log')}",
            "-serial", "chardev:diag",
            "-monitor", f"unix:{console.with_name('monitor')},server=on,wait=off",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ]
        for i, path in enumerate(shares):
            cmd += ["-virtfs", f"local,path={path},mount_tag=share{i},security_model=none"]
        return cmd

    @staticmethod
    def _script(token: str, commands: Sequence[str], shares: Sequence[Path]) -> str:
        """/nested/run.sh: mount the writable shares, then each command between markers."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in COMMAND_ENV.items())
        lines = []
        for i, path in enumerate(shares):
            p = shlex.quote(f"/host{path}")
            lines.append(f"mkdir -p {p}; mount -t 9p -o trans=virtio,version=9p2000.L,"
                         f"msize=512000 share{i} {p} || fail 'cannot mount share {path}'")
        for i, _ in enumerate(commands):
            lines += [
                f'echo "{MARK}:{token}:begin:{i}:$(cut -d" " -f1 /proc/uptime)@@"',
                f'chroot /host /usr/bin/env -i {env} /bin/sh -c "$(cat /nested/cmd{i})" '
                f'</dev/null 2>&1; status=$?',
                f'echo "\n{MARK}:{token}:end:{i}:$status:$(cut -d" " -f1 /proc/uptime)@@"',
            ]
        return "\n".join(lines) + "\n"

    def run_many(self, commands: Sequence[str], timeout: float = 300,
                 shares: Sequence[Path | str] = ()) -> list[NestedResult]:
        """Boot once and run the commands in turn (as root, in a chroot of this machine).

        `timeout` bounds the whole boot; `shares` are host directories mounted writable at
        their own paths, for commands that must leave files behind. Raises NestedHostError
        with the console tail if any command's end marker did not appear.
        """
        share_paths = [Path(s).resolve() for s in shares]
        token = secrets.token_hex(6)
        per_run = Cpio()
        for i, command in enumerate(commands):
            per_run.file(f"nested/cmd{i}", command)
        per_run.file("nested/run.sh", self._script(token, commands, share_paths))
        with tempfile.TemporaryDirectory(prefix="pyvisor-nested-") as tmp:
            initrd = Path(tmp) / "initrd"
            with open(initrd, "wb") as out, open(self.initrd, "rb") as base:
                shutil.copyfileobj(base, out)
                # an uncompressed archive after a compressed one must start 4-aligned;
                # the kernel skips the zero padding
                out.write(b"\0" * (-out.tell() % 512))
                out.write(bytes(per_run))
            console = Path(tmp) / "console.log"
            console.touch()
            diagnostics_log = console.with_name("diagnostics.log")
            diagnostics_log.touch()
            qemu_log = console.with_name("qemu.out")
            start = time.monotonic()
            with open(qemu_log, "wb") as qemu_stdout:
                proc = subprocess.Popen(self.qemu_command(initrd, console, share_paths),
                                        stdin=subprocess.DEVNULL, stdout=qemu_stdout,
                                        stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.qemu.env})
            timed_out, wedged = self._wait(proc, start + timeout, diagnostics_log,
                                           self.wedge_seconds)
            stopped_report = ""
            if timed_out or wedged:   # L1's own state, while QEMU still has it
                monitor = console.with_name("monitor")
                stopped_report = ("\n--- L1 CPU state at the end:\n"
                                  + _ask_monitor(monitor, "info registers", REGISTER_LINES)
                                  + "\n--- L1 local APIC at the end:\n"
                                  + _ask_monitor(monitor, "info lapic", LAPIC_LINES))
                proc.kill()
            proc.wait()
            wall = time.monotonic() - start
            qemu_out = qemu_log.read_bytes()
            text = console.read_bytes().decode(errors="replace").replace("\r\n", "\n")
            if stopped_report:
                diagnostics = diagnostics_log.read_bytes().decode(
                    errors="replace").replace("\r\n", "\n")
                stopped_report = (f"\n--- L1 kernel log and busy tasks (tail):\n"
                                  f"{_tail(diagnostics, 80)}{stopped_report}")
        self.last = NestedRun(wall=wall, console=text)
        results = self._parse(token, len(commands), text)
        if len(results) < len(commands):
            why = (f"stopped: no heartbeat from its kernel for {self.wedge_seconds} s" if wedged
                   else f"timed out after {timeout:.0f} s" if timed_out
                   else f"QEMU exited with status {proc.returncode}")
            qemu_msg = "\n".join(  # TCG's warnings about EPYC's CPUID bits are noise
                line for line in qemu_out.decode(errors="replace").splitlines()
                if "TCG doesn't support requested feature" not in line)
            raise (NestedHostWedged if wedged else NestedHostError)(
                f"nested host {why} before command {len(results)} of {len(commands)} "
                f"finished ({shlex.quote(commands[len(results)])[:200]})\n"
                + (f"--- QEMU says:\n{_tail(qemu_msg, 10)}\n" if qemu_msg else "")
                + f"--- console tail:\n{_tail(text)}{stopped_report}")
        self.last.results = results
        return results

    @staticmethod
    def _wait(proc: subprocess.Popen, deadline: float, heartbeat: Path,
              wedge_seconds: float) -> tuple[bool, bool]:
        """Wait for QEMU to exit; (timed out, wedged) when it must be stopped instead."""
        last_size, last_change = -1, time.monotonic()
        while True:
            try:
                proc.wait(timeout=5)
                return False, False
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= deadline:
                return True, False
            size = heartbeat.stat().st_size
            if size != last_size:
                last_size, last_change = size, now
            elif now - last_change > wedge_seconds:
                return False, True

    def _parse(self, token: str, count: int, text: str) -> list[NestedResult]:
        results = []
        for i in range(count):
            begin = re.search(rf"{MARK}:{token}:begin:{i}:([\d.]+)@@\n", text)
            end = re.search(rf"\n{MARK}:{token}:end:{i}:(\d+):([\d.]+)@@", text)
            if not begin or not end:
                break
            if i == 0:
                self.last.boot = float(begin.group(1))
            output = text[begin.end():end.start()]
            results.append(NestedResult(int(end.group(1)), output,
                                        float(end.group(2)) - float(begin.group(1))))
        return results

    def run(self, command: str, timeout: float = 300,
            shares: Sequence[Path | str] = ()) -> NestedResult:
        """Boot, run one shell command in the chroot, power off; see run_many."""
        return self.run_many([command], timeout, shares)[0]
