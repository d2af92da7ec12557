"""Which QEMU runs the nested host (L1): bookworm's 7.2 or bookworm-backports' 10.

The backports QEMU is not installed over the system's: its packages are `apt-get
download`ed with a private apt state in the cache (debian.Apt: a sources entry for
bookworm-backports on the mirror this machine's own apt uses) and unpacked there, so both
stay selectable and the system QEMU, the reference the benchmarks compare pyvisor against
inside L1, stays bookworm's main-archive one. Its binary runs with bookworm's libraries (those of the system
QEMU, which is installed anyway); `-L` points it at its own firmware.

Choose with $PYVISOR_NESTED_QEMU: `7.2` (or `system`), `10` (or `backports`), or the path of
a qemu-system-x86_64 binary. Unset means DEFAULT.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import debian
from .debian import BACKPORTS_SUITE, Apt, PrepareError, ToolsUnavailable

# tests/nested/soak.py, 40 sessions each: 7.2 wedged in none, 10 in one and was no faster
DEFAULT = "7.2"
SYSTEM_NAMES = ("7.2", "system")
BACKPORTS_NAMES = ("10", "backports")
# qemu-system-x86 needs these from backports too (same version, or newer firmware than
# bookworm's); its shared libraries are bookworm's, as the system QEMU's are.
BACKPORTS_PACKAGES = ["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"]


@dataclass(frozen=True)
class L1Qemu:
    """A QEMU binary for L1 and what it needs to run: firmware directories, environment."""
    binary: str
    firmware: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def arguments(self) -> list[str]:
        return [arg for path in self.firmware for arg in ("-L", str(path))]

    def version(self) -> str:
        """E.g. '10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)', for reports."""
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 env={**os.environ, **self.env}, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrepareError(f"cannot run {self.binary}: {exc}") from exc
        found = re.search(r"version (.*)", out)
        if not found:
            raise PrepareError(f"{self.binary} --version says: {out.strip()[:200]!r}")
        return found.group(1).strip()


def l1_qemu(choice: str | None = None, cache: Path | None = None) -> L1Qemu:
    """The L1 QEMU for `choice` (default: $PYVISOR_NESTED_QEMU, else DEFAULT), fetched and
    unpacked into the cache if it is the backports one."""
    choice = choice or os.environ.get("PYVISOR_NESTED_QEMU") or DEFAULT
    if choice in SYSTEM_NAMES:
        debian.ensure_tools()
        return L1Qemu("qemu-system-x86_64")
    if choice in BACKPORTS_NAMES:
        debian.ensure_tools()   # the system QEMU brings the libraries the backports one uses
        return backports_qemu(cache or debian.cache_dir())
    if "/" in choice:
        if not os.access(choice, os.X_OK):
            raise PrepareError(f"L1 QEMU {choice}: not an executable file")
        return L1Qemu(choice)
    raise PrepareError(f"L1 QEMU {choice!r} (PYVISOR_NESTED_QEMU or --qemu): expected 7.2, "
                       f"10 or a path to qemu-system-x86_64")


def _unpacked(root: Path) -> L1Qemu:
    return L1Qemu(str(root / "usr" / "bin" / "qemu-system-x86_64"),
                  (root / "usr" / "share" / "qemu", root / "usr" / "share" / "seabios"),
                  {"QEMU_MODULE_DIR": str(root / "usr" / "lib" / "x86_64-linux-gnu" / "qemu")})


def backports_qemu(cache: Path) -> L1Qemu:
    """bookworm-backports' QEMU, unpacked under cache/qemu-backports (once)."""
    root = cache / "qemu-backports"
    with debian.locked(cache / ".lock-qemu"):
        if (root / ".unpacked").exists():
            return _unpacked(root)
        debs = cache / "debs-qemu"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        try:
            Apt(cache, backports=True).download(
                [f"{p}/{BACKPORTS_SUITE}" for p in BACKPORTS_PACKAGES], debs)
        except PrepareError as exc:
            raise ToolsUnavailable(f"cannot fetch QEMU from {BACKPORTS_SUITE}: {exc}") from exc
        tmp = cache / ".qemu-backports.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for deb in sorted(debs.glob("*.deb")):
            debian.run("dpkg-deb", "-x", str(deb), str(tmp))
        shutil.rmtree(debs)
        qemu = _unpacked(tmp)
        version = qemu.version()   # fails here, not in a test, if it cannot run
        (tmp / ".unpacked").write_text(version + "\n")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        return _unpacked(root)
