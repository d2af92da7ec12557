"""What a call made in a sandboxed child process came to: "allowed", or the name of the
errno it failed with. The sandbox tests' child scripts import it (PYTHONPATH=CHILD_PATH)."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

CHILD_PATH = str(Path(__file__).resolve().parent)


def attempt(call: Callable[[], object]) -> str:
    try:
        call()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "allowed"


def child_env() -> dict[str, str]:
    """The environment a child script needs to import this module."""
    return {**os.environ, "PYTHONPATH": CHILD_PATH}
