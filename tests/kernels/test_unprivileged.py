"""pyvisor needs no root: a user with no capabilities and no groups, whose only way into
KVM is a device node of its own (made with mknod, char 10:232, passed as --kvm-device),
boots a tiny kernel, under the seccomp filter too; the host's root-only /dev/kvm is
refused to it in one line."""
from __future__ import annotations

import os
import textwrap

import pytest

from helpers import KVM, guest, needs_kvm
from unprivileged import as_user, needs_root, own_kvm  # noqa: F401 (a fixture)

pytestmark = [needs_kvm, pytest.mark.kvm, needs_root]

LIBRARY = textwrap.dedent("""
    from pyvisor import Machine
    from pyvisor.sandbox import seccomp

    kernel, device = args
    with Machine(kernel=kernel, mem="16M", kvm_path=device, cmdline="who=nobody") as m:
        seccomp.install()
        outcome = m.run(timeout=30)
    print(outcome.kind, outcome.status, m.console_text.splitlines()[-1])
""")


def test_cli_boots_with_a_device_node_of_its_own(own_kvm):
    result = as_user("cli", "run", guest("hello"), "--mem", "16M", "--console", "stdio",
                     "--append", "who=nobody", "--kvm-device", own_kvm)
    assert result.returncode == 0, result.stderr.decode()
    assert b"cmdline: who=nobody" in result.stdout
    assert result.stderr == b""


def test_library_with_the_seccomp_filter(own_kvm):
    result = as_user(LIBRARY, guest("hello"), own_kvm)
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
