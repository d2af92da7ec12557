"""`make run-linux` on a host that cannot boot stock Linux says why, in two lines, and stops
before downloading anything. (Where it can boot Linux, tests/nested runs it.)"""
import subprocess
import sys

import pytest

from helpers import ROOT
from pyvisor.kvm.backend import detect_backend


@pytest.mark.skipif(detect_backend().runs_stock_linux,
                    reason="this host's KVM boots stock Linux; the refusal is for PVM hosts")
def test_run_linux_refuses_on_pvm():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "run_linux.py")],
                            capture_output=True, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" not in err
    assert "stock Linux cannot boot here" in err and "make test-nested" in err
