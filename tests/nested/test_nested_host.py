"""The nested test host works: genuine SVM /dev/kvm, this machine's root and venv inside,
pyvisor running a tiny kernel on it, and the Linux guest builder's outputs."""
from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from helpers import guest
from nestedhost import NestedHost, NestedHostError, NestedHostWedged, again_if_wedged
from nestedhost.host import WEDGE_ATTEMPTS
from nestedhost.kernel_image import pvh_entry
from nestedhost.qemu import BACKPORTS_NAMES, DEFAULT

pytestmark = pytest.mark.nested


def test_nested_host_offers_svm_kvm(nested_host: NestedHost) -> None:
    result = nested_host.run(
        "uname -r; ls -l /dev/kvm; cat /sys/module/kvm_amd/parameters/npt; "
        "grep -c -w svm /proc/cpuinfo; cat /sys/module/kvm_amd/parameters/vgif; "
        "dmesg | grep -i 'nested paging'", timeout=120)
    assert result.status == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == nested_host.kernel.version
    assert lines[1].startswith("crw") and lines[1].endswith("/dev/kvm")
    assert lines[2] in ("1", "Y")
    assert int(lines[3]) >= 1
    assert lines[4] == "0"      # L1_MODULE_PARAMETERS reached insmod
    assert "Nested Paging enabled" in result.output


def test_l1_qemu_is_the_chosen_one_and_the_reference_qemu_the_system_one(
        nested_host: NestedHost) -> None:
    """L1 runs on the QEMU chosen (by default bookworm-backports' 10, unpacked in the
    cache); inside L1 `qemu-system-x86_64`, the reference the benchmarks compare against,
    is still the installed package from bookworm's main archive."""
    chosen = os.environ.get("PYVISOR_NESTED_QEMU") or DEFAULT
    if chosen in BACKPORTS_NAMES:
        assert nested_host.qemu.version().startswith("10.")
        assert "~bpo12" in nested_host.qemu.version()
        assert nested_host.qemu.binary.startswith(str(nested_host.image.parents[1]))
    system = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "qemu-system-x86"],
                            capture_output=True, text=True, check=True).stdout
    assert "bpo" not in system
    result = nested_host.run("qemu-system-x86_64 --version | head -n 1", timeout=120)
    assert result.status == 0, result.output
    assert f"(Debian {system})" in result.output


def test_run_many_keeps_commands_apart(nested_host: NestedHost, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    out = tmp_path / "out"
    out.mkdir()
    results = nested_host.run_many([
        "echo one; exit 3",
        "printf 'no newline'",
        "echo to-stderr >&2; echo $HOME; pwd",
        f"cat {tmp_path}/in.txt; touch /usr/overlay-is-writable && echo ok",
        f"echo written > {out}/result.txt",
    ], timeout=120, shares=[out])
    assert [r.status for r in results] == [3, 0, 0, 0, 0]
    assert results[0].output == "one\n"
    assert results[1].output == "no newline"
    assert results[2].output == "to-stderr\n/root\n/\n"
    assert results[3].output == "from the host\nok\n"
    assert (out / "result.txt").read_text() == "written\n"
    assert not Path("/usr/overlay-is-writable").exists()
    assert all(r.duration >= 0 for r in results)


def test_timeout_is_a_clear_error(nested_host: NestedHost) -> None:
    with pytest.raises(NestedHostError, match=r"timed out after 8 s.*sleep 600"):
        nested_host.run("echo started; sleep 600", timeout=8)
    assert "started" in nested_host.last.console


@pytest.mark.timeout(WEDGE_ATTEMPTS * 200)   # three boots, each up to the 200 s asserted below
def test_silent_heartbeat_is_reported_as_a_wedge(nested_host: NestedHost, monkeypatch) -> None:
    """Stopping L1's COM2 writers looks, from outside, like L1 wedged: the run ends within
    wedge_seconds with L1's registers, well before its timeout; the retry helper runs the
    session WEDGE_ATTEMPTS times in all, then lets the last wedge through."""
    monkeypatch.setattr(nested_host, "wedge_seconds", 30)
    silence = ('for p in /proc/[0-9]*; do [ "$(readlink $p/fd/1)" = /dev/ttyS1 ] && '
               'kill -STOP ${p#/proc/}; done; echo silenced; sleep 600')
    calls = []

    def session():
        calls.append(1)
        return nested_host.run(silence, timeout=400)

    with pytest.warns(UserWarning, match="wedged"):
        with pytest.raises(NestedHostWedged, match=r"no heartbeat from its kernel for 30 s"
                                                   r"(.|\n)*L1 CPU state(.|\n)*RIP="
                                                   r"(.|\n)*L1 local APIC(.|\n)*LVTT"):
            again_if_wedged(session)
    assert len(calls) == WEDGE_ATTEMPTS == 3
    assert "silenced" in nested_host.last.console
    assert nested_host.last.wall < 200


def test_repo_venv_python_runs_inside(nested_host: NestedHost, repo: Path) -> None:
    import pyvisor
    result = nested_host.run(
        f"{repo}/.venv/bin/python -c 'import pyvisor, sys; print(pyvisor.__version__)'",
        timeout=180)
    assert (result.status, result.output) == (0, pyvisor.__version__ + "\n")


def test_pyvisor_runs_a_tiny_kernel_on_svm_kvm(nested_host: NestedHost, repo: Path) -> None:
    hello = guest("hello")
    check, run = nested_host.run_many([
        f"{repo}/.venv/bin/pyvisor check",
        f"{repo}/.venv/bin/pyvisor run {hello} --mem 64M --append x=1 --console stdio "
        f"--timeout 60",
    ], timeout=240)
    assert check.status == 0, check.output
    assert "AMD-V" in check.output
    assert run.status == 0, run.output
    assert "RAM: 64 MiB" in run.output
    assert "x=1" in run.output


def test_linux_guest_builder(guest_kernel, tmp_path: Path) -> None:
    bz = guest_kernel.bzimage.read_bytes()
    assert bz[0x202:0x206] == b"HdrS"
    elf = guest_kernel.vmlinux.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2          # ELF64
    assert pvh_entry(elf) is not None
    assert (guest_kernel.modules_dir / "kernel").is_dir()
    image = guest_kernel.initramfs(tmp_path / "initrd.gz", "echo hi",
                                   ["virtio_blk", "virtio_pci"], {"etc/motd": "hello\n"})
    data = gzip.decompress(image.read_bytes())
    for name in (b"init", b"bin/busybox", b"etc/motd", b"lib/modules/virtio_blk.ko",
                 b"lib/modules/virtio_ring.ko", b"lib/modules/virtio_pci_modern_dev.ko"):
        assert name + b"\0" in data, name
    assert data.index(b"lib/modules/virtio_ring.ko") < data.index(b"lib/modules/virtio_blk.ko")


def test_linux_guest_boots_on_nested_kvm(nested_host: NestedHost, guest_kernel,
                                         tmp_path: Path) -> None:
    """Reference boot with QEMU/KVM inside the nested host: the guest kit is sound."""
    initrd = guest_kernel.initramfs(
        tmp_path / "initrd.gz",
        "echo GUEST-UP $(uname -r); ls /sys/bus/virtio/devices; poweroff -f",
        ["virtio_pci", "virtio_rng"])
    result = nested_host.run(
        f"qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config "
        f"-display none -no-reboot -serial stdio -device virtio-rng-pci "
        f"-kernel {guest_kernel.vmlinux} -initrd {initrd} "
        f"-append 'console=ttyS0 panic=-1 quiet'", timeout=180)
    assert result.status == 0, result.output
    assert f"GUEST-UP {guest_kernel.version}" in result.output
    assert "virtio0" in result.output
