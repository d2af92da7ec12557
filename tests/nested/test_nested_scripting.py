"""The scripting tests that need hardware virtualization, on the nested host's SVM
/dev/kvm: software breakpoints (int3, which PVM's emulator cannot run) and debug-register
watchpoints (which it does not check), next to the rest of tests/kernels/test_scripting.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestedhost import NestedHost

pytestmark = pytest.mark.nested


def test_scripting_with_int3_and_data_breakpoints_on_svm(nested_host: NestedHost,
                                                         repo: Path) -> None:
    result = nested_host.run(
        f"cd {repo} && PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -q "
        f"-p no:cacheprovider tests/kernels/test_scripting.py "
        f"-k 'breakpoint or watchpoint or step or registers' 2>&1", timeout=900)
    assert result.status == 0, result.output
    assert " passed" in result.output and "skipped" not in result.output, result.output
