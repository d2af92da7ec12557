"""Snapshot benchmark (make bench-snapshot): the in-place reset of a fuzzing loop against
the C baseline VMM (bench/snapshot_baseline.c) doing the same loop in the same run, and
save/restore of a snapshot file.

The guest is guests/out/snap_target.elf (quiet=1): after its write to port 0x85 (the
snapshot point) each round dirties N pages and writes port 0x84, where the loop resets it.
pyvisor resets from the port hook, on the vCPU thread (m.restore(snap)): every vCPU, VM and
device state and the dirty pages; the C loop sets regs/sregs/LAPIC/events and copies the
dirty pages only. Figures are printed, never asserted."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pyvisor import Machine  # noqa: E402

KERNEL = str(ROOT / "guests" / "out" / "snap_target.elf")
BASELINE = ROOT / "bench" / "out" / "snapshot_baseline"
READY_PORT, ROUND_PORT = 0x85, 0x84


def build() -> None:
    for folder in ("guests", "bench"):
        subprocess.run(["make", "-s", "-C", str(ROOT / folder)], check=True)


def cmdline(pages: int) -> str:
    return f"pages={pages} rounds=100000000 quiet=1"


def c_loop(pages: int, resets: int) -> tuple[float, float]:
    out = subprocess.run([str(BASELINE), KERNEL, cmdline(pages), str(resets)],
                         capture_output=True, text=True, check=True).stdout
    fields = out.split("resets", 1)[1].split()
    return float(fields[2]), float(fields[4])      # us per reset, resets+runs per second


def pyvisor_loop(pages: int, resets: int) -> tuple[float, float]:
    with Machine(kernel=KERNEL, mem="64M", cmdline=cmdline(pages)) as m:
        state = {"n": 0, "in_reset": 0.0}

        def ready(cpu, port, size, value, is_write):
            state["snap"] = m.snapshot()
            state["start"] = time.perf_counter()
            return True

        def round_done(cpu, port, size, value, is_write):
            if state["n"] == resets:
                state["total"] = time.perf_counter() - state["start"]
                m.stop()
                return True
            t0 = time.perf_counter()
            m.restore(state["snap"])
            state["in_reset"] += time.perf_counter() - t0
            state["n"] += 1
            return True

        m.on_pio(READY_PORT, callback=ready)
        m.on_pio(ROUND_PORT, callback=round_done)
        m.run(timeout=600)
        return state["in_reset"] / resets * 1e6, resets / state["total"]


def file_figures(mem: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vm.snap")
        with Machine(kernel=KERNEL, mem=mem, cmdline=cmdline(8)) as m:
            ready = threading.Event()
            m.on_pio(READY_PORT, callback=lambda *a: (m.pause(), ready.set(), True)[2])
            m.start()
            ready.wait(60)
            t0 = time.perf_counter()        # save() waits for the pause to hold
            size = m.save(path)
            save = time.perf_counter() - t0
        first = {}
        t0 = time.perf_counter()
        m = Machine.restore_from(path)
        loaded = time.perf_counter() - t0
        m.on_pio(ROUND_PORT, callback=lambda *a: (first.setdefault("t", time.perf_counter()),
                                                   m.stop(), True)[2])
        m.run(timeout=60)
        m.close()
        print(f"\nsnapshot file of a {mem} guest: {size / 2**20:.2f} MiB "
              f"({os.stat(path).st_blocks * 512 / 2**20:.2f} MiB on disk)")
        print(f"  save                         {save * 1e3:8.1f} ms")
        print(f"  restore_from                 {loaded * 1e3:8.1f} ms")
        print(f"  restore to the first exit    {(first['t'] - t0) * 1e3:8.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resets", type=int, default=2000)
    ap.add_argument("--file-mem", default="256M")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each loop; the best is shown (the machine is shared)")
    args = ap.parse_args()
    build()
    print(f"in-place reset of a 64 MiB guest, {args.resets} resets, best of {args.repeat} "
          f"(µs per reset; resets+runs per second)")
    print(f"{'dirty pages':>11} {'C µs':>8} {'pyvisor µs':>11} {'ratio':>6}   "
          f"{'C /s':>7} {'pyvisor /s':>10} {'ratio':>6}")
    for pages in (1, 8, 64):
        c = [c_loop(pages, args.resets) for _ in range(args.repeat)]
        py = [pyvisor_loop(pages, args.resets) for _ in range(args.repeat)]
        c_us, c_rate = min(us for us, _ in c), max(rate for _, rate in c)
        py_us, py_rate = min(us for us, _ in py), max(rate for _, rate in py)
        print(f"{pages:>11} {c_us:>8.1f} {py_us:>11.1f} {py_us / c_us:>5.2f}x   "
              f"{c_rate:>7.0f} {py_rate:>10.0f} {c_rate / py_rate:>5.2f}x")
    file_figures(args.file_mem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
