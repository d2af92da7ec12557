"""pyvisor needs no root: a user with no capabilities and no groups, whose only way into
KVM is a device node of its own (made with mknod, char 10:232, passed as --kvm-device),
boots a tiny kernel, under the seccomp filter too; the host's root-only /dev/kvm is
refused to it in one line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from helpers import KVM, ROOT, guest, needs_kvm

pytestmark = [needs_kvm, pytest.mark.kvm,
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="making a device node and another user needs root")]

USER = GROUP = 65534   # nobody / nogroup
KVM_MAJOR, KVM_MINOR = 10, 232   # devices.txt: misc 232 = /dev/kvm

# The child drops to USER before pyvisor does anything. It starts as root only because
# the interpreter may live where USER cannot read (pyenv under /root): what it loads
# lazily is loaded first. Everything pyvisor does - opening the device, mapping guest
# RAM, KVM ioctls, threads, signals, the filter - happens as USER.
CHILD = textwrap.dedent("""
    import encodings.ascii, os, sys
    import pyvisor.cli
    from pyvisor import Machine
    from pyvisor.sandbox import seccomp

    os.setgroups([])
    os.setresgid({group}, {group}, {group})
    os.setresuid({user}, {user}, {user})
    with open("/proc/self/status") as f:
        caps = dict(line.split(":") for line in f if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, caps
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cli":
        pyvisor.cli.main(args)
    kernel, device = args
    with Machine(kernel=kernel, mem="16M", kvm_path=device, cmdline="who=nobody") as m:
        seccomp.install()
        outcome = m.run(timeout=30)
    print(outcome.kind, outcome.status, m.console_text.splitlines()[-1])
""").format(user=USER, group=GROUP)


@pytest.fixture
def own_kvm():
    """A /dev/kvm node owned by USER, mode 0600, in a directory USER may enter."""
    folder = tempfile.mkdtemp(prefix="pyvisor-kvm-")
    try:
        os.chmod(folder, 0o755)
        node = os.path.join(folder, "kvm")
        os.mknod(node, 0o600 | 0o020000, os.makedev(KVM_MAJOR, KVM_MINOR))
        os.chown(node, USER, GROUP)
        yield node
    finally:
        shutil.rmtree(folder)


def as_user(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *args], cwd="/",
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


def test_cli_boots_with_a_device_node_of_its_own(own_kvm):
    result = as_user("cli", "run", guest("hello"), "--mem", "16M", "--console", "stdio",
                     "--append", "who=nobody", "--kvm-device", own_kvm)
    assert result.returncode == 0, result.stderr.decode()
    assert b"cmdline: who=nobody" in result.stdout
    assert result.stderr == b""


def test_library_with_the_seccomp_filter(own_kvm):
    result = as_user("library", guest("hello"), own_kvm)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["reset", "0", "cmdline:", "who=nobody"]


def test_the_hosts_root_only_device_is_one_line():
    if os.stat(KVM).st_mode & 0o006:
        pytest.skip(f"{KVM} is open to every user on this host")
    result = as_user("cli", "run", guest("hello"), "--mem", "16M", "--console", "none")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"pyvisor: no permission to open {KVM}: add your user to the 'kvm' group "
        "(or run as root)")
