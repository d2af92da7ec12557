"""PIO exit round trip: pyvisor against the C baseline VMM (bench/pio_baseline.c).

Both VMMs boot guests/out/pio_bench.elf, which does `iterations=N` outb's to one
port, each a full exit to user space and back. The C VMM takes every exit the same way.
pyvisor runs it three ways: to the unclaimed port 0x80, which the C shim's port table
serves without Python; to the CMOS index port 0x70, a device in Python; and to 0x80
through the library with a Python hook on it (the scripting API's `on_pio`, a callback
that only watches), which is the cost of a hook.  The cost of
one exit is (T(N) - T(0)) / N from the median wall time of several runs, so
process start-up and boot cancel out.  Prints a table; asserts nothing about
speed.

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


def baseline_cmd(n: int) -> list[str]:
    return [str(BASELINE), str(KERNEL), f"iterations={n}"]


def pyvisor_cmd(n: int, port: int = 0x80) -> list[str]:
    return [str(PYVISOR), "run", str(KERNEL), "--console", "none", "--append",
            f"iterations={n} port={port} value=15"]


def pyvisor_python_port_cmd(n: int) -> list[str]:
    return pyvisor_cmd(n, 0x70)


HOOKED_RUN = """
import sys
from pyvisor import Machine
with Machine(kernel=sys.argv[1], mem="64M", cmdline=sys.argv[2]) as m:
    m.on_pio(0x80, callback=lambda cpu, port, size, value, is_write: None)
    sys.exit(m.run().status)
"""


def hooked_cmd(n: int) -> list[str]:
    return [sys.executable, "-c", HOOKED_RUN, str(KERNEL), f"iterations={n}"]


def timed_run(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:  # pio_bench leaves through the i8042 reset: status 0
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {' / '.join(tail)}")
    return elapsed


def median_time(cmd: list[str], runs: int) -> float:
    return statistics.median(timed_run(cmd) for _ in range(runs))


def measure(make_cmd, n: int, runs: int) -> tuple[float, float, float]:
    """Returns (T(N), T(0), microseconds per exit)."""
    t_n = median_time(make_cmd(n), runs)
    t_0 = median_time(make_cmd(0), runs)
    return t_n, t_0, (t_n - t_0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs")
    ap.add_argument("--c-only", action="store_true", help="measure only the C baseline")
    args = ap.parse_args()
    if args.iterations <= 0 or args.runs <= 0:
        ap.error("--iterations and --runs must be positive")

    build()
    rows = [("C baseline", measure(baseline_cmd, args.iterations, args.runs))]
    status = 0
    if not args.c_only:
        if not PYVISOR.exists():
            print(f"pyvisor not found at {PYVISOR}; measured the C baseline only", file=sys.stderr)
            status = 1
        else:
            try:
                rows.append(("pyvisor C port", measure(pyvisor_cmd, args.iterations, args.runs)))
                rows.append(("pyvisor device",
                             measure(pyvisor_python_port_cmd, args.iterations, args.runs)))
                rows.append(("+ Python hook", measure(hooked_cmd, args.iterations, args.runs)))
            except RuntimeError as e:
                print(f"pyvisor run failed: {e}", file=sys.stderr)
                status = 1

    print(f"PIO exit round trip: pio_bench, N={args.iterations}, median of {args.runs} runs")
    print(f"{'VMM':<15} {'T(N) s':>9} {'T(0) s':>9} {'us/exit':>9} {'vs C':>6}")
    c_us = rows[0][1][2]
    for name, (t_n, t_0, us) in rows:
        ratio = f"{us / c_us:.2f}x" if c_us > 0 else "-"
        print(f"{name:<15} {t_n:>9.3f} {t_0:>9.3f} {us:>9.2f} {ratio:>6}")
    return status


if __name__ == "__main__":
    sys.exit(main())
