"""virtio-blk throughput: pyvisor against QEMU (virtio-blk-pci) in the nested test host.

Every VMM boots the same Debian cloud kernel and initramfs with the same memory, vCPUs and
disk: a RAM block device of the nested host (brd, /dev/ram0), which takes O_DIRECT and
costs no 9p round trips, so what is measured is the VMMs' path, not the share's. Both
open it cache=none (O_DIRECT); QEMU with aio=threads, pyvisor with aio=io_uring and with
aio=threads. Inside, the guest measures with O_DIRECT so its page cache does not count:

- sequential read and write: dd with 1 MiB blocks over the disk (MB/s);
- 4 KiB random reads and writes at queue depth 1, 8 and 32 for a few seconds each (IOPS;
  bench/randread.c, Linux AIO, fio's randread/randwrite pattern; fio is not in the
  busybox initramfs);
- boot time with the disk attached (guest uptime at init).

Runs alternate between the VMMs in one nested host boot; medians are printed with how
many runs they are of and the ratios to QEMU (higher is better for MB/s and IOPS).
Asserts nothing.

    python bench/virtio_blk.py [--runs N] [--size-mb 64] [--seconds 3] [--cpus 1]
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
DEPTHS = (1, 8, 32)
DISK = "/dev/ram0"

INIT = r"""
echo "GUEST-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
mbps() { awk -v b="$1" -v t="$2" -v s="$3" 'BEGIN { printf "%.1f", b / (t - s) / 1e6 }'; }
now() { cut -d' ' -f1 /proc/uptime; }
bytes=$(($(cat /sys/block/vda/size) * 512)); count=$((bytes / 1048576))
s=$(now); dd if=/dev/vda of=/dev/null bs=1M count=$count iflag=direct 2>/dev/null; e=$(now)
echo "BENCH seq_read_mbps=$(mbps $bytes $e $s)"
s=$(now); dd if=/dev/zero of=/dev/vda bs=1M count=$count oflag=direct conv=fsync 2>/dev/null; e=$(now)
echo "BENCH seq_write_mbps=$(mbps $bytes $e $s)"
for depth in DEPTHS; do
    for mode in read write; do echo "BENCH $(/bin/randread /dev/vda SECONDS $depth $mode)"; done
done
poweroff -f
"""

METRICS = ([("boot to init (guest uptime)", "uptime", "s"),
            ("sequential read", "seq_read_mbps", "MB/s"),
            ("sequential write", "seq_write_mbps", "MB/s")]
           + [(f"4 KiB random {mode}, depth {d}", f"rand_{mode}_d{d}_iops", "IOPS")
              for d in DEPTHS for mode in ("read", "write")]
           + [("VMM CPU, user (whole run)", "cpu_user_s", "s"),
              ("VMM CPU, system (whole run)", "cpu_sys_s", "s")])
# The VMM's own CPU time over the whole run (boot, dd, every random figure), from
# /usr/bin/time: what each VMM spends on the same guest work.
TIMED = "/usr/bin/time -f 'BENCH cpu_user_s=%U cpu_sys_s=%S' "


def parse(output: str) -> dict[str, float]:
    found = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", " ".join(
        line for line in output.splitlines() if "BENCH" in line or "GUEST-INIT" in line))}
    if len(found) != len(METRICS):
        raise SystemExit(f"a benchmark run failed:\n{output[-3000:]}")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=3, help="per random-I/O figure")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--pyvisor", action="append", metavar="DISK_OPTIONS",
                    help="pyvisor's --disk options, once per variant (default: "
                         "cache=none,aio=io_uring and cache=none,aio=threads)")
    args = ap.parse_args()
    args.pyvisor = args.pyvisor or ["cache=none,aio=io_uring", "cache=none,aio=threads"]
    subprocess.run(["make", "-s", "-B", "-C", str(ROOT / "bench"), "out/randread"], check=True)

    host = NestedHost.prepare()
    guest = linux_guest()
    brd = host.kernel.module_index()["brd"]
    with tempfile.TemporaryDirectory(prefix="pyvisor-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        init = INIT.replace("DEPTHS", " ".join(map(str, DEPTHS))).replace(
            "SECONDS", str(args.seconds))
        initrd = guest.initramfs(work / "initrd.gz", init, ["virtio_pci", "virtio_blk"],
                                 {"bin/randread": RANDREAD.read_bytes()})
        append = "console=ttyS0 panic=-1 quiet"
        vmms = {}
        for options in args.pyvisor:
            vmms[f"pyvisor {options}"] = TIMED + vmm_commands(
                guest.bzimage, initrd, "256M", args.cpus, append,
                pyvisor_args=f"--disk {DISK},{options}")["pyvisor"]
        vmms["QEMU"] = TIMED + vmm_commands(
            guest.bzimage, initrd, "256M", args.cpus, append,
            qemu_args=f"-drive file={DISK},format=raw,if=none,id=d0,cache=none,aio=threads "
                      f"-device virtio-blk-pci,drive=d0")["QEMU -M pc"]
        order = [name for _ in range(args.runs) for name in vmms]
        # the RAM disk: once per nested boot (busybox insmod: the host has no kmod)
        setup = (f"/bin/busybox insmod {brd} rd_nr=1 rd_size={args.size_mb * 1024} && "
                 f"dd if=/dev/zero of={DISK} bs=1M count={args.size_mb} 2>/dev/null && "
                 f"echo brd ready")
        results = host.run_many([setup] + [vmms[name] for name in order],
                                timeout=600 + 300 * len(order), shares=[work])
    if "brd ready" not in results[0].output:
        raise SystemExit(f"the RAM disk could not be set up:\n{results[0].output}")
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in vmms}
    for name, result in zip(order, results[1:]):
        figures[name].append(parse(result.output))

    names = list(vmms)
    print(host.describe())
    print(f"virtio-blk in the nested test host: {guest.version}, 256M, {args.cpus} vCPU, "
          f"{args.size_mb} MiB RAM disk ({DISK}) opened cache=none, O_DIRECT in the guest, "
          f"{args.seconds} s per random figure; median of {args.runs} runs each")
    for i, n in enumerate(names):
        print(f"  [{i}] {n}")
    print(f"{'':30}" + "".join(f"{f'[{i}]':>13}" for i in range(len(names)))
          + "".join(f"{f'[{i}]/QEMU':>11}" for i in range(len(names) - 1)))
    for label, key, unit in METRICS:
        medians = [statistics.median(f[key] for f in figures[n]) for n in names]
        print(f"{label:30}" + "".join(f"{m:>8.1f} {unit:<4}" for m in medians)
              + "".join(f"{m / medians[-1]:>10.2f}x" if medians[-1] else f"{'-':>11}"
                        for m in medians[:-1]))
    print("every run, [0] [1] ...:")
    for label, key, unit in METRICS:
        print(f"  {key:20}" + "  |  ".join(
            " ".join(f"{f[key]:.1f}" for f in figures[n]) for n in names))


if __name__ == "__main__":
    main()
