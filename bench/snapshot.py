"""Snapshot benchmark (make bench-snapshot): the in-place reset of a fuzzing loop against
the C baseline VMM (bench/snapshot_baseline.c) doing the same loop in the same run, and
save/restore of a snapshot file.

The guest is guests/out/snap_target.elf (quiet=1): after its write to port 0x85 (the
snapshot point) each round dirties N pages and writes port 0x84, where the loop resets it.
pyvisor resets from the port hook, on the vCPU thread (m.restore(snap)): every vCPU, VM and
device state and the dirty pages. The C loop runs three ways: `minimal` sets
regs/sregs/LAPIC/events and copies the dirty pages only (less than pyvisor restores);
`full` restores the same state as pyvisor (VM state, MP_STATE, REGS, SREGS, XSAVE, XCRS,
DEBUGREGS, LAPIC, pyvisor's MSR list, EVENTS), each part with its ioctl; `same-ioctls` makes
the ioctls pyvisor makes (see pyvisor/kvm/vcpu.py restore_state), so what is left between it
and pyvisor is pyvisor's own work (Python, the devices). Each loop runs --repeat times; the
best and the median are shown. Then what each ioctl of a reset costs on this host (the C
baseline's `ioctls` mode, the median of --repeat runs): what stands between the loops.
Figures are printed, never asserted."""
from __future__ import annotations

import argparse
import os
import statistics
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


def c_loop(pages: int, resets: int, mode: str, msrs: list[int]) -> tuple[float, float]:
    out = subprocess.run([str(BASELINE), KERNEL, cmdline(pages), str(resets), mode,
                          ",".join(f"{i:x}" for i in msrs)],
                         capture_output=True, text=True, check=True).stdout
    fields = out.split("resets", 1)[1].split()
    return float(fields[2]), float(fields[4])      # us per reset, resets+runs per second


def ioctl_costs(resets: int, msrs: list[int], repeat: int) -> None:
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        out = subprocess.run([str(BASELINE), KERNEL, cmdline(1), str(resets), "ioctls",
                              ",".join(f"{i:x}" for i in msrs)],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("ioctl "):
                name, us = line[len("ioctl "):].rsplit(" us ", 1)
                runs.setdefault(name, []).append(float(us))
    print(f"\neach ioctl of a reset, {resets} times at the snapshot point, median of {repeat} runs")
    for name, values in runs.items():
        print(f"  {name:<48} {statistics.median(values):6.2f} µs")


def msr_list() -> list[int]:
    """The MSRs pyvisor keeps on this host (the `full` C loops restore the same ones)."""
    with Machine(kernel=KERNEL, mem="64M", cmdline=cmdline(1)) as m:
        found: list[int] = []
        m.on_pio(READY_PORT, callback=lambda *a: (found.extend(m.snapshot().vcpus[0].msr_indices),
                                                  m.stop(), True)[2])
        m.run(timeout=60)
        return found


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


LOOPS = (("C minimal (regs/sregs/LAPIC/events)", "minimal"),
         ("C full (pyvisor's state, an ioctl each)", "full"),
         ("C same ioctls as pyvisor", "same-ioctls"),
         ("pyvisor m.restore() from the hook", None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resets", type=int, default=2000)
    ap.add_argument("--file-mem", default="256M")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each loop; the best and the median are shown")
    args = ap.parse_args()
    build()
    msrs = msr_list()
    print(f"in-place reset of a 64 MiB guest, {args.resets} resets per run, {args.repeat} runs "
          f"of each loop, interleaved ({len(msrs)} MSRs); best (median)")
    print(f"{'pages':>5}  {'loop':<40} {'µs per reset':>15} {'pyvisor is':>10}   "
          f"{'resets+runs/s':>15} {'C is':>6}")
    for pages in (1, 8, 64):
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in LOOPS}
        for _ in range(args.repeat):
            for name, mode in LOOPS:
                runs[name].append(pyvisor_loop(pages, args.resets) if mode is None
                                  else c_loop(pages, args.resets, mode, msrs))
        figures = {name: (min(us for us, _ in r), statistics.median(us for us, _ in r),
                          max(rate for _, rate in r), statistics.median(rate for _, rate in r))
                   for name, r in runs.items()}
        py_us, py_us_med, py_rate, py_rate_med = figures[LOOPS[-1][0]]
        for name, (us, us_med, rate, rate_med) in figures.items():
            mine = name == LOOPS[-1][0]
            ratio_us = "" if mine else f"{py_us / us:5.2f}x"
            ratio_rate = "" if mine else f"{rate / py_rate:5.2f}x"
            print(f"{pages:>5}  {name:<40} {us:>6.1f} ({us_med:>6.1f}) {ratio_us:>10}   "
                  f"{rate:>6.0f} ({rate_med:>6.0f}) {ratio_rate:>6}")
    print("(pyvisor is: pyvisor's µs per reset over the loop's; C is: the loop's resets+runs "
          "per second over pyvisor's; both from the best runs)")
    ioctl_costs(args.resets, msrs, args.repeat)
    file_figures(args.file_mem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
