"""What the start-up and memory benchmarks share: the paths, and the environment their
Python processes run in.

A user's pyvisor imports from cached bytecode (pip compiles an install; an editable one
writes __pycache__ on its first import). This project's sessions may set
PYTHONDONTWRITEBYTECODE=1, which would make every timed run compile every module from
source (about three times the import time). So the timed processes keep their bytecode
under bench/out/pycache (PYTHONPYCACHEPREFIX, out of the source tree), and one untimed run
of each command fills it first."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUEST = ROOT / "guests" / "out" / "boot_timer.elf"
PYVISOR = Path(sys.executable).parent / "pyvisor"   # the console script of this venv
PYCACHE = ROOT / "bench" / "out" / "pycache"


def build() -> None:
    for folder in ("guests", "bench"):
        subprocess.run(["make", "-s", "-C", str(ROOT / folder)], check=True)


def user_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(PYCACHE))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
