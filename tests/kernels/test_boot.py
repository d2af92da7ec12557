"""Tiny kernels booted on this machine's /dev/kvm, through the CLI and the library."""
import re

import pytest

from helpers import guest, needs_kvm, pyvisor

pytestmark = [needs_kvm, pytest.mark.kvm]


def test_hello_prints_memory_and_command_line():
    result = pyvisor("run", guest("hello"), "--mem", "256M", "--append", "hello=world")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "pyvisor hello" in out
    assert "RAM: 256 MiB" in out
    assert "cmdline: hello=world" in out


def test_hello_above_the_mmio_hole():
    """4 GiB of RAM: 3 GiB below the hole, 1 GiB above 4 GiB; the guest sees all of it."""
    result = pyvisor("run", guest("hello"), "--mem", "4G", "--console", "stdio")
    assert result.returncode == 0, result.stderr.decode()
    assert "RAM: 4096 MiB" in result.stdout.decode()


def test_hello_with_two_cpus():
    result = pyvisor("run", guest("hello"), "--mem", "64M", "--cpus", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert "RAM: 64 MiB" in result.stdout.decode()


def test_console_to_file(tmp_path):
    log = tmp_path / "console.log"
    result = pyvisor("run", guest("hello"), "--mem", "32M", "--console", str(log))
    assert result.returncode == 0
    assert result.stdout == b""
    assert "pyvisor hello" in log.read_text()


def test_console_none_prints_nothing():
    result = pyvisor("run", guest("hello"), "--mem", "32M", "--console", "none")
    assert result.returncode == 0
    assert result.stdout == b""


def test_stats_on_stderr_at_the_end():
    """hello prints through the UART: its data port leads the port list, served in C."""
    result = pyvisor("run", guest("hello"), "--mem", "32M", "--console", "none", "--stats")
    assert result.returncode == 0
    err = result.stderr.decode()
    assert re.search(r"exits: \d+ \((\d+) served in C\)", err), err
    assert re.search(r"^  io +\d+ +[\d.]+ s serving, +[\d.]+ µs each$", err, re.M), err
    assert re.search(r"busiest ports:\n  0x03f8  \d+", err), err


def test_triple_fault_reports_registers_and_code():
    result = pyvisor("run", guest("triple"), "--mem", "32M")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "triple fault" in err
    assert re.search(r"RIP=[0-9a-f]{16}", err), err
    # The disassembly line at RIP: marker, address, bytes, mnemonic.
    assert re.search(r"=> [0-9a-f]{16}  [0-9a-f]+ +\w+", err), err
    assert "Traceback" not in err


def test_selftest_passes_with_input():
    result = pyvisor("run", guest("selftest"), "--mem", "64M", input=b"ping\n", timeout=120)
    out = result.stdout.decode()
    assert "FAIL" not in out, out
    assert "selftest: all passed" in out, out
    assert result.returncode == 0, out + result.stderr.decode()


def test_selftest_reports_missing_input():
    """Without input the UART receive check must fail: the test can fail."""
    result = pyvisor("run", guest("selftest"), "--mem", "32M", timeout=120)
    out = result.stdout.decode()
    assert "FAIL" in out and "selftest: all passed" not in out, out
    assert result.returncode != 0


def test_timeout_stops_a_running_guest():
    result = pyvisor("run", guest("shell"), "--mem", "32M", "--timeout", "2")
    assert result.returncode == 124
    assert "still running" in result.stderr.decode()


def test_sse_is_native_or_a_clear_emulation_failure():
    """Under PVM the emulator cannot run addsd: a report with the PVM note; elsewhere the
    instruction runs and the guest exits 0."""
    import os

    result = pyvisor("run", guest("sse"), "--mem", "16M")
    err = result.stderr.decode()
    if os.path.exists("/sys/module/kvm_pvm"):
        assert result.returncode == 2, err
        assert "instruction emulation failed (KVM_EXIT_INTERNAL_ERROR)" in err
        assert re.search(r"=> [0-9a-f]{16}  f20f58c1 +addsd xmm0, xmm1", err), err
        assert "note: PVM" in err and "emulator" in err
    else:
        assert result.returncode == 0, err
        assert "addsd ran natively" in result.stdout.decode()
