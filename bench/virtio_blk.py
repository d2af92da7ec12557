"""virtio-blk throughput: pyvisor against QEMU (virtio-blk-pci) in the nested test host.

Both VMMs boot the same Debian cloud kernel and initramfs with the same raw image (a
fresh copy each) and memory; inside, the guest measures with O_DIRECT so its page cache
does not count:

- sequential read and write: dd with 1 MiB blocks over the image (MB/s);
- 4 KiB random reads for a few seconds (IOPS, bench/randread.c);
- boot time with the disk attached (guest uptime at init).

Runs alternate between the VMMs in one nested host boot; medians are printed with the
ratios (pyvisor / QEMU; higher is better for MB/s and IOPS). Asserts nothing.

    python bench/virtio_blk.py [--runs N] [--size-mb 64]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from linux_boot import ROOT, vmm_commands

sys.path.insert(0, str(ROOT / "tests" / "nested"))
from nestedhost import NestedHost, linux_guest  # noqa: E402

RANDREAD = ROOT / "bench" / "out" / "randread"

INIT = r"""
echo "GUEST-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
mbps() { awk -v b="$1" -v t="$2" -v s="$3" 'BEGIN { printf "%.1f", b / (t - s) / 1e6 }'; }
now() { cut -d' ' -f1 /proc/uptime; }
bytes=$(($(cat /sys/block/vda/size) * 512)); count=$((bytes / 1048576))
s=$(now); dd if=/dev/vda of=/dev/null bs=1M count=$count iflag=direct 2>/dev/null; e=$(now)
echo "BENCH seq_read_mbps=$(mbps $bytes $e $s)"
s=$(now); dd if=/dev/zero of=/dev/vda bs=1M count=$count oflag=direct conv=fsync 2>/dev/null; e=$(now)
echo "BENCH seq_write_mbps=$(mbps $bytes $e $s)"
echo "BENCH $(/bin/randread /dev/vda 5 | sed 's/randread iops/rand_read_iops/')"
poweroff -f
"""

METRICS = (("boot to init (guest uptime)", "uptime", "s"),
           ("sequential read", "seq_read_mbps", "MB/s"),
           ("sequential write", "seq_write_mbps", "MB/s"),
           ("4 KiB random read", "rand_read_iops", "IOPS"))


def parse(output: str) -> dict[str, float]:
    found = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", " ".join(
        line for line in output.splitlines() if "BENCH" in line or "GUEST-INIT" in line))}
    if len(found) != len(METRICS):
        raise SystemExit(f"a benchmark run failed:\n{output[-2000:]}")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=64)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "bench")], check=True)

    host = NestedHost.prepare()
    guest = linux_guest()
    with tempfile.TemporaryDirectory(prefix="pyvisor-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        initrd = guest.initramfs(work / "initrd.gz", INIT, ["virtio_pci", "virtio_blk"],
                                 {"bin/randread": RANDREAD.read_bytes()})
        image = work / "disk.img"
        append = "console=ttyS0 panic=-1 quiet"
        vmms = vmm_commands(
            guest.bzimage, initrd, "256M", 1, append,
            pyvisor_args=f"--disk {image}",
            qemu_args=f"-drive file={image},format=raw,if=none,id=d0 "
                      f"-device virtio-blk-pci,drive=d0")
        order = [name for _ in range(args.runs) for name in vmms]
        fresh = f"truncate -s 0 {image} && truncate -s {args.size_mb}M {image} && "
        results = host.run_many([fresh + vmms[name] for name in order],
                                timeout=600 + 300 * len(order), shares=[work])
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in vmms}
    for name, result in zip(order, results):
        figures[name].append(parse(result.output))

    names = list(vmms)
    print(host.describe())
    print(f"virtio-blk in the nested test host: {guest.version}, 256M, {args.size_mb} MiB raw "
          f"image, O_DIRECT in the guest, median of {args.runs}")
    print(f"{'':30}" + "".join(f"{n:>16}" for n in names) + f"{'ratio':>10}")
    for label, key, unit in METRICS:
        medians = [statistics.median(f[key] for f in figures[n]) for n in names]
        print(f"{label:30}" + "".join(f"{m:>11.1f} {unit:<4}" for m in medians)
              + f"{medians[0] / medians[1]:>9.2f}x")


if __name__ == "__main__":
    main()
