"""`pyvisor run` imports only what the chosen devices and options need, and the boot timer
(--boot-timer) stamps the guest's first instruction. guests/out/boot_timer.elf writes port
0x99 with its first instruction, then resets."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from helpers import ROOT, guest, needs_kvm, pyvisor
from pyvisor import Machine
from pyvisor.machine.boot_timer import BOOT_TIMER_PORT, BootTimer

pytestmark = [needs_kvm, pytest.mark.kvm]

# A run through the CLI's own entry point, in a fresh interpreter that then names every
# module it loaded (on stderr: the seccomp filter forbids opening files for writing).
RUN = """
import json, sys
from pyvisor.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    status = e.code
sys.stderr.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(status)
"""
# pathlib too: the run path uses os.path (pathlib and what it imports are a few ms); a
# module the interpreter itself loaded first (site may, for an editable install) does not
# count. dataclasses (with inspect and ast) and click: the records are pyvisor.value's,
# the command line command_line.py's; argparse and shutil: only --help; decimal:
# only a size with a fraction (1.5G); pyvisor.console: only the terminal's consoles;
# logging, typing and traceback: pyvisor/log.py, collections.abc, a failing hook; ctypes:
# the sandbox's system calls go through pyvisor._native (sandbox/syscall.py).
OPTIONAL = ("pyvisor.api", "pyvisor.debug.gdbstub", "pyvisor.snapshot",
            "pyvisor.devices.virtio", "pyvisor.devices.legacy.pc_testdev", "capstone",
            "http.server", "pathlib", "dataclasses", "inspect", "click", "shutil", "decimal",
            "pyvisor.console", "logging", "typing", "traceback", "argparse", "ctypes")


def interpreter_modules() -> set[str]:
    out = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sorted("
                          "sys.modules)))"], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=60).stdout
    return set(json.loads(out))


def modules_of_run(*args: str) -> set[str]:
    """What the run loaded beyond what the bare interpreter holds."""
    result = subprocess.run([sys.executable, "-c", RUN, "run", guest("boot_timer"),
                             "--mem", "32M", "--console", "none", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES "))) - interpreter_modules()


def test_a_plain_run_loads_no_optional_part():
    modules = modules_of_run()
    assert sorted(m for m in modules if m.startswith(OPTIONAL)) == []
    assert "pyvisor.machine.boot_timer" not in modules


def test_a_run_loads_the_devices_it_is_given(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    modules = modules_of_run("--disk", str(image), "--rng", "--boot-timer")
    assert {"pyvisor.devices.virtio.blk", "pyvisor.devices.virtio.rng",
            "pyvisor.devices.virtio.pci", "pyvisor.machine.boot_timer"} <= modules
    assert "pyvisor.devices.virtio.net" not in modules
    assert "pyvisor.devices.virtio.mmio" not in modules


def test_boot_timer_on_the_cli():
    before = time.monotonic_ns()
    result = pyvisor("run", guest("boot_timer"), "--mem", "32M", "--console", "none",
                     "--boot-timer")
    after = time.monotonic_ns()
    assert result.returncode == 0, result.stderr
    line = result.stderr.decode().strip()
    found = re.fullmatch(r"pyvisor: boot timer: the guest wrote port 0x99 ([\d.]+) ms after "
                         r"pyvisor was imported \(CLOCK_MONOTONIC (\d+) ns\)", line)
    assert found, line
    assert before < int(found.group(2)) < after
    assert 0 < float(found.group(1)) < (after - before) / 1e6


def test_boot_timer_without_a_mark_says_so():
    result = pyvisor("run", guest("hello"), "--mem", "32M", "--console", "none", "--boot-timer")
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().strip() == "pyvisor: boot timer: the guest never wrote port 0x99"


def test_boot_timer_is_not_for_the_api(tmp_path):
    result = pyvisor("run", "--api-sock", str(tmp_path / "s"), "--boot-timer")
    assert result.returncode == 2
    assert "--boot-timer are not for --api-sock" in result.stderr.decode()


def test_boot_timer_stamps_the_first_write_only():
    """The library: the mark falls between start() and the end, and the guest's own later
    writes to the port (a second machine of a restart loop) leave it alone."""
    timer = BootTimer()
    with Machine(kernel=guest("boot_timer"), mem="32M") as m:
        timer.attach(m)
        started = time.monotonic_ns()
        assert m.run(timeout=30).kind == "reset"
        ended = time.monotonic_ns()
    first = timer.marked_ns
    assert first is not None and started < first < ended
    with Machine(kernel=guest("boot_timer"), mem="32M") as m:
        timer.attach(m)
        assert m.run(timeout=30).kind == "reset"
        assert m.stats.ports.get(BOOT_TIMER_PORT) == 1   # the guest did write it again
    assert timer.marked_ns == first
