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


@needs_kvm
def test_check_lists_what_virtio_needs_as_required():
    """run cannot do without ioeventfd, irqfd and GSI routing (every virtio device)."""
    out = pyvisor("check").stdout.decode()
    required = out.partition("required capabilities:")[2].partition("optional capabilities:")[0]
    for cap in ("KVM_CAP_IOEVENTFD", "KVM_CAP_IRQFD", "KVM_CAP_IRQ_ROUTING"):
        assert f"  {cap} " in required, out
