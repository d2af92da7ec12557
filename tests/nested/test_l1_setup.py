"""Choosing the nested host's QEMU and L1 kernel, and the bookworm-backports source they
may come from (no network, no QEMU: these run in the default suite)."""
from __future__ import annotations

import pytest

from nestedhost.debian import PrepareError
from nestedhost.debian import SERIES, backports_entry, debian_mirror
from nestedhost.qemu import L1Qemu, l1_qemu

# `apt-cache policy` on a bookworm machine with one-line sources and a local mirror
POLICY = """Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://mirror.example/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
     origin mirror.example
 500 http://mirror.example/debian bookworm-updates/main amd64 Packages
     release v=12-updates,o=Debian,a=oldstable-updates,n=bookworm-updates,l=Debian,c=main,b=amd64
     origin mirror.example
 500 https://other.example/apt bookworm/main amd64 Packages
     release o=Someone,a=bookworm,n=bookworm,l=Someone,c=main,b=amd64
     origin other.example
 500 http://mirror.example/debian bookworm/main amd64 Packages
     release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
     origin mirror.example
Pinned packages:
"""


def test_mirror_is_the_debian_bookworm_main_archive() -> None:
    assert debian_mirror(POLICY) == "http://mirror.example/debian"


def test_no_bookworm_archive_is_a_clear_error() -> None:
    trixie = POLICY.replace("bookworm", "trixie")
    with pytest.raises(PrepareError, match="no Debian bookworm main archive"):
        debian_mirror(trixie)


def test_backports_entry_is_deb822() -> None:
    entry = backports_entry("http://mirror.example/debian")
    fields = dict(line.split(": ", 1) for line in entry.splitlines())
    assert fields["Types"] == "deb"
    assert fields["URIs"] == "http://mirror.example/debian"
    assert fields["Suites"] == "bookworm-backports"
    assert fields["Components"] == "main"
    assert set(fields) <= {"Types", "URIs", "Suites", "Components", "Signed-By"}


def test_unknown_choice_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("PYVISOR_NESTED_QEMU", "9.1")
    with pytest.raises(PrepareError, match=r"^L1 QEMU '9.1' \(PYVISOR_NESTED_QEMU or --qemu\): expected 7.2, 10 "):
        l1_qemu()


def test_a_path_that_is_not_executable_is_refused(tmp_path) -> None:
    with pytest.raises(PrepareError, match="not an executable file"):
        l1_qemu(str(tmp_path / "qemu-system-x86_64"))


def test_firmware_directories_become_dash_l(tmp_path) -> None:
    qemu = L1Qemu("/q", (tmp_path / "a", tmp_path / "b"))
    assert qemu.arguments() == ["-L", str(tmp_path / "a"), "-L", str(tmp_path / "b")]


@pytest.mark.parametrize("series, flavour, name, matches", [
    ("6.1", "amd64", "linux-image-6.1.0-57-amd64", True),
    ("6.1", "amd64", "linux-image-6.1.0-57-cloud-amd64", False),
    ("6.1", "cloud-amd64", "linux-image-6.1.0-57-cloud-amd64", True),
    ("6.1", "amd64", "linux-image-6.1.0-57-amd64-dbg", False),
    ("6.12", "amd64", "linux-image-6.12.73+deb12-amd64", True),
    ("6.12", "amd64", "linux-image-6.12.73+deb12-rt-amd64", False),
    ("6.12", "amd64", "linux-image-6.12-amd64-dbg", False),
])
def test_kernel_series_package_names(series, flavour, name, matches) -> None:
    assert bool(SERIES[series].pattern(flavour).match(name)) is matches


def test_kernel_series_order_by_their_number() -> None:
    found = SERIES["6.12"].pattern("amd64").match("linux-image-6.12.73+deb12-amd64")
    assert found.group(1) == "73"
    assert SERIES["6.12"].backports and not SERIES["6.1"].backports
