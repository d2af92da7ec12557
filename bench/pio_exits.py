"""Exit round trips: pyvisor against the C baseline VMM (bench/pio_baseline.c).

Both VMMs boot guests/out/pio_bench.elf, which does `iterations=N` outb's to one port
(or, with `mmio=A`, 32-bit stores to one MMIO address), each a full exit to user space
and back. The C VMM takes every exit the same way. pyvisor runs it several ways:

PIO: to port 0x81, which no device claims and the C shim's port table serves without
Python; to the CMOS index port 0x70, a device in Python, with its coalescing switched
off by the benchmark; to 0x80 through the library with a Python hook on it (the
scripting API's `on_pio`, a callback that only watches, which also stops 0x80 being
coalesced), which is the cost of a hook. Then two rows of coalesced writes, which KVM
queues instead of exiting: 0x80 (served in C when drained) and 0x70 (dispatched to the
Python RTC when drained); these are writes, not exits, and show what coalescing buys.

MMIO: to 0xD0000000, which nothing claims (the Python MMIO bus ignores the write:
pyvisor has no MMIO region served in C); the same with a watching `on_mmio` hook; and
to pc-testdev's scratch memory at 0xFF000000 (`--testdev`), a Python device.

The cost of one exit is (T(N) - T(0)) / N from the median wall time of several runs, so
process start-up and boot cancel out.  Prints tables; asserts nothing about speed.

    python bench/pio_exits.py [--iterations N] [--runs R] [--c-only]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "guests" / "out" / "pio_bench.elf"
BASELINE = ROOT / "bench" / "out" / "pio_baseline"
# The console script installed next to the running interpreter (the repo's .venv).
PYVISOR = Path(sys.executable).parent / "pyvisor"


def build() -> None:
    for folder in ("guests", "bench"):
        subprocess.run(["make", "-s", "-C", str(ROOT / folder)], check=True)


UNCLAIMED_PORT, POST_PORT, RTC_INDEX_PORT = 0x81, 0x80, 0x70
UNCLAIMED_MMIO, TESTDEV_MMIO = 0xD000_0000, 0xFF00_0000


def pio_args(port: int) -> str:
    return f"port={port} value=15"


def mmio_args(addr: int) -> str:
    return f"mmio={addr} value=15"


def baseline(args: str):
    return lambda n: [str(BASELINE), str(KERNEL), f"iterations={n} {args}"]


def pyvisor_cli(args: str, *options: str):
    return lambda n: [str(PYVISOR), "run", str(KERNEL), "--console", "none", *options,
                      "--append", f"iterations={n} {args}"]


LIBRARY_RUN = """
import sys
from pyvisor import Machine
kernel, cmdline, how, where = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
watch = lambda cpu, addr, size, value, is_write: None
with Machine(kernel=kernel, mem="64M", cmdline=cmdline) as m:
    if how == "hook-pio":
        m.on_pio(where, callback=watch)
    elif how == "hook-mmio":
        m.on_mmio(where, 4, callback=watch)
    elif m._coalesced is not None:   # "exits": this benchmark's own switch, not an API
        m._coalesced.set_ports(m._coalesced.zones - {where})
    sys.exit(m.run().status)
"""


def pyvisor_library(args: str, how: str, where: int):
    return lambda n: [sys.executable, "-c", LIBRARY_RUN, str(KERNEL), f"iterations={n} {args}",
                      how, str(where)]


PIO_ROWS = [
    ("pyvisor C port", pyvisor_cli(pio_args(UNCLAIMED_PORT))),
    ("pyvisor device", pyvisor_library(pio_args(RTC_INDEX_PORT), "exits", RTC_INDEX_PORT)),
    ("+ Python hook", pyvisor_library(pio_args(POST_PORT), "hook-pio", POST_PORT)),
    ("coalesced 0x80", pyvisor_cli(pio_args(POST_PORT))),
    ("coalesced 0x70", pyvisor_cli(pio_args(RTC_INDEX_PORT))),
]
MMIO_ROWS = [
    ("pyvisor no hook", pyvisor_cli(mmio_args(UNCLAIMED_MMIO))),
    ("+ Python hook", pyvisor_library(mmio_args(UNCLAIMED_MMIO), "hook-mmio", UNCLAIMED_MMIO)),
    ("pyvisor device", pyvisor_cli(mmio_args(TESTDEV_MMIO), "--testdev")),
]


def timed_run(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:  # pio_bench leaves through the i8042 reset: status 0
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {' / '.join(tail)}")
    return elapsed


def measure(rows, n: int, runs: int) -> list[tuple[str, tuple[float, float, float]]]:
    """(name, (T(N), T(0), microseconds per exit)) per row. The rows take turns within
    each round, so a change in the host's load meanwhile touches all of them alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in rows}
    for _ in range(runs):
        for name, make_cmd in rows:
            times[name][0].append(timed_run(make_cmd(n)))
            times[name][1].append(timed_run(make_cmd(0)))
    results = []
    for name, _ in rows:
        t_n, t_0 = (statistics.median(t) for t in times[name])
        results.append((name, (t_n, t_0, (t_n - t_0) / n * 1e6)))
    return results


def table(title: str, c_cmd, rows, args: argparse.Namespace) -> int:
    """Measure and print one table; returns non-zero if a pyvisor run failed."""
    status = 0
    measured = [("C baseline", c_cmd)] + ([] if args.c_only else rows)
    try:
        results = measure(measured, args.iterations, args.runs)
    except RuntimeError as e:
        print(f"pyvisor run failed: {e}", file=sys.stderr)
        status = 1
        results = measure(measured[:1], args.iterations, args.runs)
    print(f"{title}: pio_bench, N={args.iterations}, median of {args.runs} runs")
    print(f"{'VMM':<16} {'T(N) s':>9} {'T(0) s':>9} {'us/exit':>9} {'vs C':>6}")
    c_us = results[0][1][2]
    for name, (t_n, t_0, us) in results:
        ratio = f"{us / c_us:.2f}x" if c_us > 0 else "-"
        print(f"{name:<16} {t_n:>9.3f} {t_0:>9.3f} {us:>9.2f} {ratio:>6}")
    print()
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs")
    ap.add_argument("--c-only", action="store_true", help="measure only the C baseline")
    ap.add_argument("--only", choices=("pio", "mmio"), help="measure one table")
    args = ap.parse_args()
    if args.iterations <= 0 or args.runs <= 0:
        ap.error("--iterations and --runs must be positive")

    build()
    status = 0
    if not args.c_only and not PYVISOR.exists():
        print(f"pyvisor not found at {PYVISOR}; measured the C baseline only", file=sys.stderr)
        args.c_only, status = True, 1
    if args.only != "mmio":
        status |= table("PIO exit round trip (coalesced rows: writes that do not exit)",
                        baseline(pio_args(UNCLAIMED_PORT)), PIO_ROWS, args)
    if args.only != "pio":
        status |= table("MMIO exit round trip", baseline(mmio_args(UNCLAIMED_MMIO)),
                        MMIO_ROWS, args)
    return status


if __name__ == "__main__":
    sys.exit(main())
