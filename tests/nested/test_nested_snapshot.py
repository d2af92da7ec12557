"""The snapshot tests on the nested host's SVM /dev/kvm, where guests run natively (not in
KVM's instruction emulator, as on a PVM host): in-place restores from hooks and while
paused, many snapshots, two vCPUs, virtio-blk and virtio-rng across a restore, the state a
reset leaves to the next KVM_RUN (where port exits complete on KVM's fast path, not in its
emulator), snapshots taken in a hook's exit (an OUT is finished only by the next KVM_RUN
here: the snapshot must still be after it, as on PVM), and snapshot files restored in a
new process. Left to the fast suite: test_snapshot.py's 1,000-reset loop (Python runs
about 16 times slower inside; test_snapshot_in_exit.py's 1,000 resets to a write hook are
cheaper and do run) and the tests that take their snapshot at a hardware breakpoint
(virtio-blk/rng, the changed disk): QEMU 7.2's SVM ignores a nested guest's DR7, so those
breakpoints never fire there (see test_nested_scripting.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestedhost import NestedHost

pytestmark = [pytest.mark.nested, pytest.mark.timeout(1500)]


def test_snapshots_on_svm(nested_host: NestedHost, repo: Path) -> None:
    result = nested_host.run(
        f"cd {repo} && PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -q "
        f"-p no:cacheprovider tests/kernels/test_snapshot.py tests/kernels/test_snapshot_file.py "
        f"tests/kernels/test_snapshot_reset_state.py tests/kernels/test_snapshot_in_exit.py "
        f"-k 'not thousand and not virtio and not changed_disk' 2>&1", timeout=1200)
    assert result.status == 0, result.output
    assert " passed" in result.output and "skipped" not in result.output, result.output
