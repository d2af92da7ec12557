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
- boot time with the disk attached (guest uptime at init);
- the VMM's CPU time over each run, and pyvisor's device path per request without a
  guest (`--request-cost`), here and inside the nested host.

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


def request_cost(batches: int = 300, depth: int = 32) -> str:
    """What pyvisor's device path costs per request, without a guest: `depth` 4 KiB reads
    (3-buffer indirect chains, as Linux sends them) made available at once and served
    through aio=io_uring from the page cache, `batches` times. Median of 5 timings, as
    microseconds per request: the whole device path (kick to used ring: the C data path,
    native/blk_ring.c, for these reads), and popping the chain with queue.py's Python
    walk alone (what the Python path pays for a request the C path leaves to it). Run
    here and inside the nested host, it says how much of a request's time is Python."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    import time
    from test_virtio_blk import T_IN, Blk
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "disk.img"
        image.write_bytes(bytes(4 << 20))
        b = Blk(image, aio="io_uring", size=256)
        try:
            for i in range(depth):
                b.submit(T_IN, 8 * i, in_lens=[4096], indirect=True)
            b.run()
            queue = b.dev.queues[0]
            whole, pop = [], []
            for _ in range(5):
                t_whole = t_pop = 0.0
                for _ in range(batches):
                    for head in range(depth):
                        b.drv.publish(head)
                    t0 = time.perf_counter()
                    for _ in range(depth):
                        queue.pop()
                    t1 = time.perf_counter()
                    queue.unpop(depth)
                    b.dev.notify(0)
                    t2 = time.perf_counter()
                    b.drv.get_used()
                    t_pop, t_whole = t_pop + t1 - t0, t_whole + t2 - t1
                whole.append(t_whole / (batches * depth) * 1e6)
                pop.append(t_pop / (batches * depth) * 1e6)
        finally:
            b.close()
    return (f"BENCH request_us={statistics.median(whole):.1f} "
            f"pop_us={statistics.median(pop):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=3, help="per random-I/O figure")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--pyvisor", action="append", metavar="DISK_OPTIONS",
                    help="pyvisor's --disk options, once per variant (default: "
                         "cache=none,aio=io_uring and cache=none,aio=threads)")
    ap.add_argument("--request-cost", action="store_true",
                    help="only time pyvisor's device path per request, here (no guest)")
    args = ap.parse_args()
    if args.request_cost:
        print(request_cost())
        return
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
        cost = f"{ROOT}/.venv/bin/python {ROOT}/bench/virtio_blk.py --request-cost"
        results = host.run_many([setup, cost] + [vmms[name] for name in order],
                                timeout=900 + 300 * len(order), shares=[work])
    if "brd ready" not in results[0].output:
        raise SystemExit(f"the RAM disk could not be set up:\n{results[0].output}")
    inside = dict(re.findall(r"(\w+)=([\d.]+)", results[1].output))
    here = dict(re.findall(r"(\w+)=([\d.]+)", request_cost()))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in vmms}
    for name, result in zip(order, results[2:]):
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
    qemu_us = 1e6 / statistics.median(f["rand_read_d32_iops"] for f in figures["QEMU"])
    print(f"pyvisor's device path per 4 KiB read, 32 in flight, no guest (median of 5): "
          f"{inside.get('request_us', '?')} us in the nested host ({here['request_us']} us "
          f"on this machine); queue.py's Python walk of such a chain alone (the C path does "
          f"not use it) {inside.get('pop_us', '?')} us ({here['pop_us']} us); QEMU's whole "
          f"request at depth 32 (guest included): {qemu_us:.0f} us")
    print("every run, [0] [1] ...:")
    for label, key, unit in METRICS:
        print(f"  {key:20}" + "  |  ".join(
            " ".join(f"{f[key]:.1f}" for f in figures[n]) for n in names))


if __name__ == "__main__":
    main()
