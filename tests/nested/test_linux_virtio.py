"""Stock Linux drives pyvisor's virtio devices in the nested test host, with the Debian
cloud kernel's own virtio modules: an ext4 disk, two disks with one read-only, a
multi-queue disk (2 vCPUs, cache=none, aio=io_uring), data that survives `kill -9` once
flushed, /dev/hwrng and a shell on hvc0. One nested host run
serves every boot; the images live in a directory shared writable with the nested host."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from nestedhost import LinuxGuest, NestedHost, again_if_wedged

pytestmark = [pytest.mark.nested, pytest.mark.timeout(1500)]  # one nested run serves all

MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_rng", "virtio_console", "virtio_net"]
GUEST_IP, HOST_IP = "10.0.2.15", "10.0.2.1"   # the nested host's own tap network
QUIET = "console=ttyS0 panic=-1 quiet"
HELLO = b"hello from the host image\n" * 100
BIG = bytes((i * 7919 >> 3) & 0xFF for i in range(1 << 20))   # served over HTTP to the guest

INIT = r"""
case "$(cat /proc/cmdline)" in
*pv.test=disks*)
    mkdir -p /mnt /ro
    mount -t ext4 /dev/vda /mnt && echo "HELLO-SHA $(sha256sum /mnt/hello.txt)"
    echo written-by-the-guest > /mnt/new.txt && sync && umount /mnt && echo "VDA-WRITTEN"
    echo "VDB-RO $(cat /sys/block/vdb/ro) SERIAL $(cat /sys/block/vdb/serial)"
    dd if=/dev/zero of=/dev/vdb bs=512 count=1 oflag=direct 2>/dev/null; echo "VDB-WRITE-STATUS $?"
    mount -t ext4 -o ro /dev/vdb /ro && echo "VDB-HELLO-SHA $(sha256sum /ro/hello.txt)"
    echo "HWRNG $(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
    echo "RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current)"
    ;;
*pv.test=mq*)
    echo "MQ-QUEUES $(ls /sys/block/vda/mq | wc -l) CPUS $(grep -c ^processor /proc/cpuinfo)"
    mount -t ext4 /dev/vda /mnt && echo "MQ-HELLO-SHA $(sha256sum /mnt/hello.txt)"
    for i in 0 1; do   # one writer per vCPU, so that both queues carry requests
        (taskset -c $i dd if=/dev/urandom of=/mnt/f$i bs=64k count=48 2>/dev/null ||
         dd if=/dev/urandom of=/mnt/f$i bs=64k count=48 2>/dev/null) &
    done
    wait
    sync && echo "MQ-SYNCED"
    echo 3 > /proc/sys/vm/drop_caches
    echo "MQ-F0 $(sha256sum /mnt/f0)"
    echo "MQ-F1 $(sha256sum /mnt/f1)"
    umount /mnt && echo "MQ-UMOUNTED"
    grep 'req\.' /proc/interrupts | sed 's/^/MQ-IRQ /'
    ;;
*pv.test=kill*)
    echo flushed-before-the-kill | dd of=/dev/vda bs=512 seek=10 conv=sync,fsync 2>/dev/null
    echo "FLUSHED"
    sleep 600
    ;;
*pv.test=mmio*)
    echo "MMIO-DEVICES $(ls /sys/bus/platform/drivers/virtio-mmio | grep -c LNRO0005)"
    mount -t ext4 -o ro /dev/vda /mnt && echo "MMIO-HELLO-SHA $(sha256sum /mnt/hello.txt)"
    echo "MMIO-HWRNG $(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
    ;;
*pv.test=net*)
    ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
    echo "NET-MAC $(cat /sys/class/net/eth0/address) CARRIER $(cat /sys/class/net/eth0/carrier)"
    ping -c 3 -W 5 10.0.2.1 >/dev/null; echo "PING-HOST-STATUS $?"
    ping -c 2 -W 5 -s 4000 10.0.2.1 >/dev/null; echo "PING-BIG-STATUS $?"
    echo "WGET-SHA $(wget -q -O - http://10.0.2.1:8000/big.bin | sha256sum)"
    echo "NET-UP"
    sleep 8
    ;;
*pv.test=hvc*)
    echo "HVC-SHELL $(cat /sys/class/tty/hvc0/dev)"
    PS1='hvc# ' sh -i </dev/hvc0 >/dev/hvc0 2>&1
    ;;
esac
poweroff -f
"""

HVC_STEPS = [["hvc# ", "echo $((6*7))\r"], ["\n42\r", "\x01x"]]


def make_ext4(path: Path, files: dict[str, bytes], size_mb: int = 16) -> Path:
    """An ext4 image holding `files`, built without root by mkfs.ext4 -d."""
    tree = path.with_suffix(".tree")
    tree.mkdir()
    for name, data in files.items():
        (tree / name).write_bytes(data)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(path), f"{size_mb}M"],
                   check=True, capture_output=True)
    return path


def debugfs_cat(image: Path, name: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], check=True,
                          capture_output=True).stdout


def virtio_session(nested_host: NestedHost, guest_kernel: LinuxGuest, repo: Path,
                   work: Path) -> dict:
    """Build the images in `work`, boot each configuration in one nested-host run."""
    initrd = guest_kernel.initramfs(work / "initrd.gz", INIT, MODULES)
    data = make_ext4(work / "data.img", {"hello.txt": HELLO})
    ro = make_ext4(work / "ro.img", {"hello.txt": HELLO})
    mq = make_ext4(work / "mq.img", {"hello.txt": HELLO}, size_mb=32)
    raw = work / "raw.img"
    raw.write_bytes(bytes(1 << 20))
    (work / "big.bin").write_bytes(BIG)
    pyvisor = f"{repo}/.venv/bin/pyvisor run {guest_kernel.bzimage} --initrd {initrd} --mem 256M"
    commands = {
        "disks": (f"{pyvisor} --disk {data} --disk {ro},ro,serial=ro-disk --rng "
                  f"--console stdio --timeout 300 --append '{QUIET} pv.test=disks'; "
                  f"echo pyvisor-status=$?"),
        # two vCPUs, a queue each, O_DIRECT through io_uring (the image is on a 9p share,
        # which takes O_DIRECT)
        "mq": (f"{pyvisor} --cpus 2 --disk {mq},cache=none,aio=io_uring --console stdio "
               f"--timeout 300 --append '{QUIET} pv.test=mq'; echo pyvisor-status=$?"),
        # pyvisor in the background; SIGKILL once the guest says its write is flushed
        "kill": (f"{pyvisor} --disk {raw} --console stdio --timeout 300 "
                 f"--append '{QUIET} pv.test=kill' > {work}/kill.out 2>&1 & pid=$!; "
                 f"for i in $(seq 600); do grep -q FLUSHED {work}/kill.out && break; sleep 0.5; "
                 f"done; kill -9 $pid; wait $pid; echo pyvisor-status=$?; cat {work}/kill.out"),
        "mmio": (f"{pyvisor} --virtio-transport mmio --disk {ro},ro --rng --console stdio "
                 f"--timeout 300 --append '{QUIET} pv.test=mmio'; echo pyvisor-status=$?"),
        # a tap with the nested host's address, a web server on it, pyvisor behind it
        "net": (f"ip tuntap add dev pv0 mode tap && ip addr add {HOST_IP}/24 dev pv0 && "
                f"ip link set pv0 up && cd {work} && "
                f"(python3 -m http.server --bind {HOST_IP} 8000 >/dev/null 2>&1 &) && "
                f"{pyvisor} --net tap=pv0,mac=52:54:00:ab:cd:ef --console stdio --timeout 300 "
                f"--append '{QUIET} pv.test=net' > {work}/net.out 2>&1 & pid=$!; "
                f"for i in $(seq 600); do grep -q NET-UP {work}/net.out && break; sleep 0.5; "
                f"done; busybox ping -c 3 -W 5 {GUEST_IP} >/dev/null; echo PING-GUEST-STATUS $?; "
                f"wait $pid; echo pyvisor-status=$?; cat {work}/net.out"),
        "hvc": (f"{repo}/.venv/bin/python {repo}/tests/nested/console_session.py "
                f"{shlex.quote(json.dumps(HVC_STEPS))} 300 -- {pyvisor} --console virtio "
                f"--append '{QUIET} pv.test=hvc'; echo pyvisor-status=$?"),
    }
    results = nested_host.run_many(list(commands.values()), timeout=1200, shares=[work])
    return {"images": {"data": data, "ro": ro, "raw": raw, "mq": mq},
            **{name: r.output for name, r in zip(commands, results)}}


@pytest.fixture(scope="module")
def run(nested_host: NestedHost, guest_kernel: LinuxGuest, repo: Path, tmp_path_factory):
    return again_if_wedged(lambda: virtio_session(
        nested_host, guest_kernel, repo, tmp_path_factory.mktemp("virtio")))


def field(output: str, name: str) -> str:
    found = re.search(rf"^{name} (.*)$", output, re.M)
    assert found, f"{name} missing in:\n{output[-3000:]}"
    return found.group(1).strip()


def test_ext4_disk_read_and_write(run):
    out = run["disks"]
    assert "pyvisor-status=0" in out, out[-3000:]
    assert field(out, "HELLO-SHA").split()[0] == hashlib.sha256(HELLO).hexdigest()
    assert "VDA-WRITTEN" in out
    assert debugfs_cat(run["images"]["data"], "new.txt") == b"written-by-the-guest\n"


def test_multi_queue_disk_with_cache_none_and_io_uring(run):
    """Two vCPUs: Linux sets up one blk-mq hardware queue per virtqueue, writes from both
    CPUs go through both, `sync` flushes them, and the image holds what the guest read
    back (after dropping its caches) once pyvisor is gone."""
    out = run["mq"]
    assert "pyvisor-status=0" in out, out[-3000:]
    assert "not available" not in out                     # no fallback to threads
    assert field(out, "MQ-QUEUES") == "2 CPUS 2"
    assert field(out, "MQ-HELLO-SHA").split()[0] == hashlib.sha256(HELLO).hexdigest()
    assert "MQ-SYNCED" in out and "MQ-UMOUNTED" in out
    for name in ("f0", "f1"):
        data = debugfs_cat(run["images"]["mq"], name)
        assert len(data) == 48 << 16
        assert field(out, f"MQ-{name.upper()}").split()[0] == hashlib.sha256(data).hexdigest()
    irqs = re.findall(r"^MQ-IRQ\s+\d+:((?:\s+\d+)+)\s.*req\.(\d)", out, re.M)
    assert sorted(q for _, q in irqs) == ["0", "1"], out[-3000:]
    assert all(sum(map(int, counts.split())) > 0 for counts, _ in irqs)


def test_second_disk_read_only_and_serial(run):
    out = run["disks"]
    ro, serial = re.match(r"(\d) SERIAL (.*)", field(out, "VDB-RO")).groups()
    assert (ro, serial) == ("1", "ro-disk")
    assert field(out, "VDB-WRITE-STATUS") != "0"
    assert field(out, "VDB-HELLO-SHA").split()[0] == hashlib.sha256(HELLO).hexdigest()
    assert debugfs_cat(run["images"]["ro"], "hello.txt") == HELLO


def test_hwrng_gives_bytes(run):
    out = run["disks"]
    assert field(out, "RNG-CURRENT").startswith("virtio_rng")
    random = bytes.fromhex(field(out, "HWRNG"))
    assert len(random) == 32 and len(set(random)) > 8


def test_flushed_data_survives_kill_9(run):
    out = run["kill"]
    assert "FLUSHED" in out and "pyvisor-status=137" in out, out[-3000:]
    data = run["images"]["raw"].read_bytes()
    assert data[10 * 512:10 * 512 + 23] == b"flushed-before-the-kill"


def test_shell_on_hvc0(run):
    out = run["hvc"]
    assert "session-status=0" in out, out[-3000:]
    assert "\n42\r" in out


def test_network_through_a_tap(run):
    out = run["net"]
    assert "pyvisor-status=0" in out, out[-3000:]
    assert field(out, "NET-MAC") == "52:54:00:ab:cd:ef CARRIER 1"
    assert field(out, "PING-HOST-STATUS") == "0"
    assert field(out, "PING-BIG-STATUS") == "0"
    assert field(out, "PING-GUEST-STATUS") == "0"
    assert field(out, "WGET-SHA").split()[0] == hashlib.sha256(BIG).hexdigest()


def test_virtio_mmio_transport_found_through_acpi(run):
    """The Debian kernels lack virtio_mmio.device= support; they find the windows in the
    DSDT (LNRO0005) instead."""
    out = run["mmio"]
    assert "pyvisor-status=0" in out, out[-3000:]
    assert field(out, "MMIO-DEVICES") == "2"
    assert field(out, "MMIO-HELLO-SHA").split()[0] == hashlib.sha256(HELLO).hexdigest()
    assert len(bytes.fromhex(field(out, "MMIO-HWRNG"))) == 32
