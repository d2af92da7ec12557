"""A bounded run of every fuzz target (fuzz/, `make fuzz` runs them for longer): each
worker starts from its seeds, runs a fixed number of cases with a fixed libFuzzer seed
(the same cases every time) and must finish with none failing. A failure prints the
runner's report: the exception and the command that replays the input."""
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT))
from fuzz.targets import TARGETS  # noqa: E402

CASES = 300


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(target, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--runs", str(CASES), "--seed", "1",
         "--out", str(tmp_path), target],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "none failed" in proc.stdout, proc.stdout + proc.stderr
