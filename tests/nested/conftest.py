"""Fixtures for tests that need the nested test host (see README.md in this folder)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `nestedhost` package

from nestedhost import LinuxGuest, NestedHost, ToolsUnavailable, linux_guest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def nested_host() -> NestedHost:
    """The prepared nested host (tools, kernel and L1 initramfs cached across sessions).

    Skips only when QEMU cannot be had on this machine at all; any other preparation
    failure is an error.
    """
    try:
        return NestedHost.prepare()
    except ToolsUnavailable as exc:
        if shutil.which("qemu-system-x86_64") is None:
            pytest.skip(f"the nested host needs QEMU: {exc}")
        raise


@pytest.fixture(scope="session")
def guest_kernel(nested_host: NestedHost) -> LinuxGuest:
    """The stock Debian cloud kernel for L2 guests (cached)."""
    return linux_guest()


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repo's absolute path: the same path inside the nested host's chroot."""
    return REPO
