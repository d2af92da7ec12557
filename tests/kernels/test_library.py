"""The library API: Machine built from the same config as the CLI."""
import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine, MachineConfig
from pyvisor.errors import ConfigError, KernelError

pytestmark = [needs_kvm, pytest.mark.kvm]


def test_machine_runs_hello_and_captures_console():
    with Machine(kernel=guest("hello"), mem="64M", cmdline="x=1") as machine:
        outcome = machine.run(timeout=60)
        assert outcome.kind == "reset" and outcome.status == 0
        assert "RAM: 64 MiB" in machine.console_text
        assert "cmdline: x=1" in machine.console_text
        # polled output (LSR until THRE, then THR) never leaves the native loop
        assert machine.console_pipe.fast_bytes == len(machine.console_output)
        assert machine.console_pipe.native.lsr_reads >= len(machine.console_output)


def test_machine_reports_triple_fault():
    with Machine(kernel=guest("triple"), mem="32M") as machine:
        outcome = machine.run(timeout=60)
    assert outcome.kind == "fault" and outcome.status == 2
    assert outcome.report is not None
    assert "triple fault" in outcome.report.reason
    assert outcome.report.code, outcome.report.format()
    assert outcome.report.regs["rip"] == outcome.report.code[0].address


def test_machine_timeout_and_send_input():
    with Machine(kernel=guest("shell"), mem="32M") as machine:
        machine.send_input(b"echo from-the-library\r")
        outcome = machine.run(timeout=5)
    assert outcome.kind == "timeout" and outcome.status == 124
    assert "from-the-library" in machine.console_text


def test_machine_exit_status_from_shell():
    with Machine(kernel=guest("shell"), mem="32M") as machine:
        machine.send_input(b"exit 5\r")
        outcome = machine.run(timeout=60)
    assert outcome.kind == "exit" and outcome.status == 5


def test_config_errors_are_the_cli_errors():
    with pytest.raises(ConfigError, match="greater than zero"):
        MachineConfig.build(guest("hello"), mem="0")
    with pytest.raises(KernelError, match="No such file"):
        Machine(kernel="/nonexistent.elf", mem="16M")


def test_machine_runs_once():
    with Machine(kernel=guest("hello"), mem="16M") as machine:
        machine.run(timeout=60)
        with pytest.raises(Exception, match="already run"):
            machine.run()


def _open_fds() -> set[str]:
    import os

    return set(os.listdir("/proc/self/fd"))


def test_no_fd_or_thread_leaked():
    import threading

    before_fds, before_threads = _open_fds(), threading.active_count()
    for kernel in ("hello", "triple"):
        with Machine(kernel=guest(kernel), mem="16M", cpus=2) as machine:
            machine.run(timeout=60)
    assert _open_fds() == before_fds
    assert threading.active_count() == before_threads


def test_console_file_output_and_stop_from_another_thread(tmp_path):
    import threading

    log = tmp_path / "console.txt"
    with Machine(kernel=guest("shell"), mem="16M", console=str(log)) as machine:
        timer = threading.Timer(3, machine.stop, kwargs={"kind": "stopped", "status": 0})
        timer.start()
        outcome = machine.run(timeout=60)
        timer.join()
    assert outcome.kind == "stopped"
    assert "pyvisor> " in log.read_text()
