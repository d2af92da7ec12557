"""Start-up: from process start to the guest's first instruction, pyvisor against the
interpreter's own start and against the smallest C VMM (bench/startup_baseline.c).

The guest is guests/out/boot_timer.elf, whose first instruction writes port 0x99;
`pyvisor run --boot-timer` and the C VMM both report CLOCK_MONOTONIC at that exit. Every
process is timed from CLOCK_MONOTONIC read here just before it is spawned, so the three
rows share one origin:

- python -c: the venv's interpreter to the first statement of `-c` (then `-c pass` to its
  exit, the figure people quote);
- C VMM: open /dev/kvm, create the VM, load the kernel, run to the mark;
- pyvisor run KERNEL --mem 128M --console none --boot-timer, to the mark.

Also `python -X importtime -c "import pyvisor.cli"` (cumulative microseconds of the
import, and the pyvisor modules it loads). Medians of --runs runs each, after one untimed
run per command (bytecode: see startup_env.py). Prints a table; asserts nothing.

    python bench/startup.py [--runs N]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from startup_env import GUEST, PYVISOR, ROOT, build, user_env

BASELINE = ROOT / "bench" / "out" / "startup_baseline"
MEM_MB = 128
GOAL_MS = 50.0
FIRST_STATEMENT = "import time; print(time.monotonic_ns())"
PYVISOR_MARK = re.compile(r"CLOCK_MONOTONIC (\d+) ns")
PYVISOR_SINCE_IMPORT = re.compile(r"port 0x99 ([\d.]+) ms after pyvisor was imported")
IMPORT_LINE = re.compile(r"import time:\s*\d+ \|\s*(\d+) \| (\s*)(\S+)")


def spawn(cmd: list[str], env: dict[str, str]) -> tuple[int, int, str]:
    """(start ns, end ns, stdout+stderr) of one run; a failed run raises."""
    start = time.monotonic_ns()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, cwd=ROOT)
    end = time.monotonic_ns()
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {' / '.join(tail)}")
    return start, end, proc.stdout + proc.stderr


def to_mark(cmd: list[str], env: dict[str, str], pattern: re.Pattern) -> tuple[float, float, str]:
    """(ms to the mark, ms to the exit, output): the mark is the first group of pattern."""
    start, end, out = spawn(cmd, env)
    found = pattern.search(out)
    if found is None:
        raise RuntimeError(f"{' '.join(cmd)} printed no mark: {out.strip()[-200:]}")
    return (int(found.group(1)) - start) / 1e6, (end - start) / 1e6, out


def medians(samples: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(column) for column in zip(*samples))


def import_time(env: dict[str, str], runs: int) -> tuple[float, int]:
    """Median cumulative ms of `import pyvisor.cli`, and how many pyvisor modules it loads."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import pyvisor.cli"]
    totals, modules = [], 0
    for _ in range(runs):
        _, _, out = spawn(cmd, env)
        lines = [IMPORT_LINE.match(line) for line in out.splitlines()]
        lines = [m for m in lines if m]
        totals.append(next(int(m.group(1)) for m in lines if m.group(3) == "pyvisor.cli") / 1e3)
        modules = sum(1 for m in lines if m.group(3).startswith("pyvisor"))
    return statistics.median(totals), modules


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="median of this many runs")
    args = ap.parse_args()
    if args.runs <= 0:
        ap.error("--runs must be positive")
    build()
    env = user_env()
    python_first = [sys.executable, "-c", FIRST_STATEMENT]
    python_pass = [sys.executable, "-c", "pass"]
    c_vmm = [str(BASELINE), str(GUEST), str(MEM_MB)]
    pyvisor = [str(PYVISOR), "run", str(GUEST), "--mem", f"{MEM_MB}M", "--console", "none",
               "--boot-timer"]
    number = re.compile(r"^(\d+)$", re.M)
    c_mark = re.compile(r"mark_ns (\d+)")
    for cmd in (python_first, python_pass, c_vmm, pyvisor):   # fills the bytecode cache
        spawn(cmd, env)

    python_rows, pass_rows, c_rows, pyvisor_rows = [], [], [], []
    for _ in range(args.runs):          # interleaved, so a change in load hits all alike
        python_rows.append(to_mark(python_first, env, number)[:2])
        start, end, _ = spawn(python_pass, env)
        pass_rows.append(((end - start) / 1e6,))
        c_rows.append(to_mark(c_vmm, env, c_mark)[:2])
        mark, end, out = to_mark(pyvisor, env, PYVISOR_MARK)
        pyvisor_rows.append((mark, end, float(PYVISOR_SINCE_IMPORT.search(out).group(1))))
    python_mark, python_end = medians(python_rows)
    (pass_end,) = medians(pass_rows)
    c_mark_ms, c_end = medians(c_rows)
    pv_mark, pv_end, pv_since_import = medians(pyvisor_rows)
    imported_ms, modules = import_time(env, args.runs)

    print(f"Start-up to the guest's first instruction: {GUEST.name}, {MEM_MB} MiB, "
          f"median of {args.runs} runs, ms from spawn")
    print(f"{'':<34} {'first insn':>10} {'exit':>8}")
    print(f"{'python -c (first statement)':<34} {python_mark:>10.1f} {python_end:>8.1f}")
    print(f"{'python -c pass':<34} {'-':>10} {pass_end:>8.1f}")
    print(f"{'C VMM (startup_baseline)':<34} {c_mark_ms:>10.1f} {c_end:>8.1f}")
    print(f"{'pyvisor run --boot-timer':<34} {pv_mark:>10.1f} {pv_end:>8.1f}")
    beyond = pv_mark - python_mark
    print(f"pyvisor beyond the interpreter's start: {beyond:.1f} ms (goal: under {GOAL_MS:.0f}"
          f" ms: {'met' if beyond < GOAL_MS else 'not met'}); {pv_mark / c_mark_ms:.1f}x the "
          f"C VMM's time to its first instruction")
    print(f"  of which import pyvisor.cli: {imported_ms:.1f} ms ({modules} pyvisor modules; "
          f"-X importtime, median of {args.runs}); import pyvisor to the mark: "
          f"{pv_since_import:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
