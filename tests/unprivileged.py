"""Running pyvisor as an ordinary user from a suite that runs as root (as CI does): a user
with no capabilities and no groups, and a /dev/kvm node of its own."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from helpers import ROOT

USER = GROUP = 65534   # nobody / nogroup
KVM_MAJOR, KVM_MINOR = 10, 232   # devices.txt: misc 232 = /dev/kvm

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="making a device node and another user needs root")

# The child drops to USER before pyvisor does anything. It starts as root only because
# the interpreter may live where USER cannot read (pyenv under /root): what it loads
# lazily is loaded first. Everything pyvisor does - opening the device, mapping guest
# RAM, KVM ioctls, threads, signals, the filter - happens as USER. argv[1] is "cli"
# (the rest is pyvisor's command line) or a script to run after the drop.
CHILD = textwrap.dedent("""
    import importlib, logging, os, sys   # logging: pyvisor/log.py imports it for the first
    # record; importlib: pyvisor.__getattr__ (lazy Machine)
    import pyvisor.cli, pyvisor.machine.machine, pyvisor.devices.virtio.blk, pyvisor.sandbox.seccomp
    import pyvisor.console, pyvisor.sandbox.landlock   # console stdio's: termios, Landlock

    os.setgroups([])
    os.setresgid({group}, {group}, {group})
    os.setresuid({user}, {user}, {user})
    with open("/proc/self/status") as f:
        caps = dict(line.split(":") for line in f if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, caps
    if sys.argv[1] == "cli":
        pyvisor.cli.main(sys.argv[2:])
    exec(sys.argv[1], {{"args": sys.argv[2:]}})
""").format(user=USER, group=GROUP)


def user_folder() -> str:
    """A fresh directory under /tmp that USER may enter (pytest's tmp_path is root's, 0700)."""
    folder = tempfile.mkdtemp(prefix="pyvisor-user-")
    os.chmod(folder, 0o755)
    return folder


@pytest.fixture
def own_kvm():
    """A /dev/kvm node owned by USER, mode 0600."""
    folder = user_folder()
    try:
        node = os.path.join(folder, "kvm")
        os.mknod(node, 0o600 | 0o020000, os.makedev(KVM_MAJOR, KVM_MINOR))
        os.chown(node, USER, GROUP)
        yield node
    finally:
        shutil.rmtree(folder)


def as_user(*args: str) -> subprocess.CompletedProcess:
    """Run CHILD as USER: `as_user("cli", "run", ...)` or `as_user(script, *args)`."""
    return subprocess.run([sys.executable, "-c", CHILD, *args], cwd="/",
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
