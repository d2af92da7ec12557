import os

import pytest

from helpers import needs_kvm, pyvisor


@needs_kvm
def test_check_reports_backend_and_capabilities():
    result = pyvisor("check")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "API version: 12" in out
    assert "KVM_CAP_IRQCHIP" in out
    if os.path.exists("/sys/module/kvm_pvm"):
        assert "PVM" in out and "emulator" in out


def test_check_fails_without_device():
    result = pyvisor("check", "--device", "/nonexistent/kvm")
    assert result.returncode != 0
    assert "pyvisor cannot run" in result.stdout.decode()
    assert "Traceback" not in result.stderr.decode()
