"""Bad device options end in one clear line before the guest starts."""
import os

import pytest

from helpers import guest, needs_kvm, one_line_error, pyvisor

pytestmark = [needs_kvm]


def run_with(*options: str) -> str:
    return one_line_error(pyvisor("run", guest("hello"), "--mem", "16M", *options))


def test_disk_errors(tmp_path):
    assert "No such file" in run_with("--disk", str(tmp_path / "missing.img"))
    assert "Is a directory" in run_with("--disk", str(tmp_path))
    assert "not a regular file" in run_with("--disk", "/dev/null,ro")
    odd = tmp_path / "odd.img"
    odd.write_bytes(bytes(1000))
    assert "not a multiple of 512" in run_with("--disk", str(odd))
    good = tmp_path / "good.img"
    good.write_bytes(bytes(4096))
    assert "unknown option 'rw'" in run_with("--disk", f"{good},rw")
    assert "at most 20 bytes" in run_with("--disk", f"{good},serial={'x' * 21}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; the check needs a user")
def test_unreadable_disk(tmp_path):
    image = tmp_path / "secret.img"
    image.write_bytes(bytes(512))
    image.chmod(0)
    assert "Permission denied" in run_with("--disk", str(image))


def test_net_errors():
    assert "expected tap=NAME" in run_with("--net", "bridge=br0")
    assert "multicast" in run_with("--net", "tap=pvx0,mac=01:00:00:00:00:01")
    assert "MAC must look like" in run_with("--net", "tap=pvx0,mac=zz")
    assert "at most 15 bytes" in run_with("--net", "tap=" + "t" * 16)


def test_too_many_mmio_devices(tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(512))
    disks = [arg for _ in range(8) for arg in ("--disk", f"{image},ro")]
    assert "interrupt lines for 7 devices" in run_with("--virtio-transport", "mmio", *disks)
