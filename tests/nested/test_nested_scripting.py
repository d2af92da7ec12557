"""The scripting tests on the nested host's SVM /dev/kvm, where the guest runs natively:
breakpoints and watchpoints in the debug registers (KVM's emulator, which runs every guest
on a PVM host, checks no data breakpoints), single steps, registers.

Software breakpoints are left out: QEMU's TCG, which emulates the nested host's SVM,
delivers a nested guest's int3 to that guest's own IDT without checking the #BP exception
intercept that KVM_GUESTDBG_USE_SW_BP sets (measured: the guest takes #BP at the int3 with
QEMU 7.2 and 10 alike), so no KVM under it can catch one. Hardware breakpoints of a nested
guest fire with QEMU 10 only (7.2 ignores the nested guest's DR7), so this module boots its
nested host on bookworm-backports' QEMU 10 whatever the default (README.md here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestedhost import NestedHost

pytestmark = pytest.mark.nested


@pytest.fixture(scope="module")
def nested_host_qemu10() -> NestedHost:
    return NestedHost.prepare(qemu="10")


def test_debug_registers_and_steps_on_svm(nested_host_qemu10: NestedHost, repo: Path) -> None:
    result = nested_host_qemu10.run(
        f"cd {repo} && PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -q "
        f"-p no:cacheprovider tests/kernels/test_scripting.py "
        f"-k '(breakpoint or watchpoint or step or registers) and not software' 2>&1",
        timeout=900)
    assert result.status == 0, result.output
    assert " passed" in result.output and "skipped" not in result.output, result.output
