"""Every script in examples/ runs and does what its docstring says."""
import subprocess
import sys

import pytest

from helpers import ROOT, guest, needs_kvm

pytestmark = [needs_kvm, pytest.mark.kvm]


def example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_count_ports_sees_the_uart_and_the_reset():
    out = example("count_ports.py", guest("hello"))
    assert "reset (status 0)" in out
    assert "0x03f8 out" in out          # COM1's THR: the banner
    assert "0x0064 out 1" in out        # the i8042 reset that ends hello


def test_trace_boot_shows_the_first_instructions():
    out = example("trace_boot.py", guest("hello"), "5").splitlines()
    assert out[0].endswith("64-bit entry at 0x100000")
    assert len(out) == 6
    assert out[1].split()[:3] == ["0x000000100000", "fa", "cli"]


def test_break_and_dump_stops_three_times():
    out = example("break_and_dump.py")
    for call in range(3):
        assert f"call {call}: target_function(x={call})" in out
    assert "counter=3 watched=2" in out


def test_python_device_answers_the_guest():
    out = example("python_device.py")
    assert "pio answer 42" in out and "mmio answer 56" in out
    assert out.rstrip().endswith("exit status 3")
