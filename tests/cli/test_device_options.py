"""Bad device options end in one clear line before the guest starts."""
import os

from helpers import guest, needs_kvm, one_line_error, pyvisor
from unprivileged import as_user, needs_root, own_kvm  # noqa: F401 (a fixture)

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


@needs_root
def test_unreadable_disk(own_kvm):
    """As an ordinary user (root reads any file), next to a device node of its own."""
    image = os.path.join(os.path.dirname(own_kvm), "secret.img")
    with open(image, "wb") as f:
        f.write(bytes(512))
    os.chmod(image, 0)
    line = one_line_error(as_user("cli", "run", guest("hello"), "--mem", "16M",
                                  "--kvm-device", own_kvm, "--disk", image))
    assert line == f"pyvisor: disk {image!r}: Permission denied"


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
