"""Run the fuzz targets one after the other, each in a worker process of its own, and print
cases per second per target and the total (`make fuzz`).

    python -m fuzz.run [--seconds S | --runs N] [--out DIR] [TARGET ...]

Each target's corpus grows in OUT/corpus/TARGET (kept between runs) from its seeds; a
failing input is written to OUT/crashes/TARGET/ and the worker's log to OUT/logs/TARGET.log.
A failure is reported with its exception and the command that replays the input; the
other targets still run. The exit status is 1 when any target failed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .targets import TARGETS, load

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
INPUT_TIMEOUT = 60          # libFuzzer's per-input wall-clock limit, seconds
MAX_LEN = 4096

_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_EXCEPTION = re.compile(r"=== Uncaught Python exception: ===\n(.*?)\n\n", re.DOTALL)


@dataclass
class Result:
    target: str
    cases: int
    seconds: float
    rate: int
    failure: str | None = None      # what went wrong, with the replay command


def _write_seeds(target: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for i, seed in enumerate(load(target).seeds()):
        (directory / f"seed-{i:03d}").write_bytes(seed)


def run_target(target: str, out: Path, limit: list[str]) -> Result:
    corpus, seeds = out / "corpus" / target, out / "seeds" / target
    crashes, log = out / "crashes" / target, out / "logs" / f"{target}.log"
    for d in (corpus, crashes, log.parent):
        d.mkdir(parents=True, exist_ok=True)
    _write_seeds(target, seeds)
    cmd = [sys.executable, "-m", "fuzz.worker", target, str(corpus), str(seeds), *limit,
           f"-timeout={INPUT_TIMEOUT}", f"-max_len={MAX_LEN}", "-print_final_stats=1",
           f"-artifact_prefix={crashes}/"]
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    result = Result(target, stats.get("number_of_executed_units", 0), seconds,
                    stats.get("average_exec_per_sec", 0))
    if proc.returncode != 0 or "number_of_executed_units" not in stats:
        exception = _EXCEPTION.search(text)
        artifact = _ARTIFACT.search(text)
        lines = (exception.group(1) if exception else text.strip() or "?").splitlines()
        result.failure = lines[0 if exception else -1] + f"\n  log: {log}" + (
            f"\n  replay: {sys.executable} -m fuzz.worker {target} {artifact.group(1)}"
            if artifact else f"\n  the worker exited with status {proc.returncode}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    budget.add_argument("--runs", type=int, help="cases per target instead of a time")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="corpora, crashes and logs (default fuzz/out)")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (repeatable runs)")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"default: all ({', '.join(TARGETS)})")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}")
    limit = [f"-runs={args.runs}"] if args.runs is not None else [f"-max_total_time={args.seconds}"]
    if args.seed is not None:
        limit.append(f"-seed={args.seed}")

    results = []
    print(f"{'target':<16} {'cases':>10} {'seconds':>8} {'cases/s':>8}  result", flush=True)
    for target in args.targets or TARGETS:
        r = run_target(target, args.out, limit)
        results.append(r)
        print(f"{r.target:<16} {r.cases:>10,} {r.seconds:>8.0f} {r.rate:>8,}  "
              f"{'ok' if r.failure is None else 'FAILED'}", flush=True)
        if r.failure:
            print("  " + r.failure.replace("\n", "\n  "), flush=True)
    total = sum(r.cases for r in results)
    seconds = sum(r.seconds for r in results)
    failed = [r.target for r in results if r.failure]
    print(f"{'total':<16} {total:>10,} {seconds:>8.0f} {total / max(seconds, 1):>8,.0f}  "
          + (f"{len(failed)} failed: {', '.join(failed)}" if failed else "none failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
