"""Shared by the tests: where things are, and how to run the pyvisor command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guests" / "out"
PYVISOR = str(Path(sys.executable).parent / "pyvisor")
KVM = "/dev/kvm"


def kvm_usable() -> bool:
    return os.path.exists(KVM) and os.access(KVM, os.R_OK | os.W_OK)


needs_kvm = pytest.mark.skipif(not kvm_usable(), reason="no accessible /dev/kvm on this machine")


def guest(name: str, image: str = "elf") -> str:
    """Path of a built tiny kernel ("elf", or "bzImage" for the boot-protocol wrapper);
    `make test` builds them first."""
    path = GUESTS / f"{name}.{image}"
    if not path.exists():
        pytest.fail(f"{path} is missing: build the guests with `make guests`")
    return str(path)


def pyvisor(*args: str, input: bytes | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess:
    """Run the pyvisor command; stdin is /dev/null unless input is given."""
    return subprocess.run([PYVISOR, *args], input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert the run failed with exactly one line on stderr, no traceback; return it."""
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
