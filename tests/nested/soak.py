"""Nested-host soak: how often L1 wedges, and how fast it is, over N boot sessions in a row.

Each session is one nested host boot (as a test module's fixture makes it) running the
multi-vCPU pyvisor Linux boots of test_linux_boot.py that wedged most (by default the 2-vCPU
bzImage, the 4-vCPU PVH and the 2-vCPU verbose boot). A session ends as ok, wedged
(L1's COM2 heartbeat went silent: NestedHostWedged) or failed (any other error, or a boot
whose pyvisor status is not 0). Prints one line per session, then the totals: wedges,
failures, L1 boot, each L2 boot's seconds inside L1, the verbose L2 kernel's uptime at init,
and wall time per session.

    python tests/nested/soak.py --sessions 30 --qemu 10
    make nested-soak SOAK_ARGS="--sessions 30 --qemu 7.2"

--qemu takes 7.2, 10 or a qemu-system-x86_64 path (default: $PYVISOR_NESTED_QEMU, else the
harness default); --l1-kernel, --cpu and --qemu-arg try other L1 settings. --repo runs the pyvisor of
another checkout (with its own .venv), e.g. a `git archive` of a commit, so that a long soak
is not disturbed by work in progress in this tree.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nestedhost import NestedHost, NestedHostError, NestedHostWedged, linux_guest  # noqa: E402
from nestedhost.debian import PrepareError  # noqa: E402
from test_linux_boot import BOOTS, INIT, Booted  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BOOTS = ["bzimage", "pvh", "verbose"]
# the verbose guest kernel's own time stamp when it starts init
RUN_INIT = re.compile(r"\[\s*([\d.]+)\] Run /init as init process")


@dataclass
class Tally:
    """What the sessions so far came to."""
    outcomes: list[str] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)          # every session
    l1_boots: list[float] = field(default_factory=list)       # sessions that got to a command
    l2: dict[str, list[float]] = field(default_factory=dict)  # boot -> seconds inside L1
    l2_init: list[float] = field(default_factory=list)        # verbose L2 uptime at init

    def report(self) -> str:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            return (f"median {statistics.median(values):.1f} s "
                    f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")
        n = len(self.outcomes)
        lines = [f"sessions {n}: ok {self.outcomes.count('ok')}, "
                 f"wedged {self.outcomes.count('wedged')}, failed {self.outcomes.count('failed')}",
                 f"wall per session      {spread(self.walls)}; total {sum(self.walls):.0f} s",
                 f"L1 boot to 1st cmd    {spread(self.l1_boots)}"]
        for name, values in self.l2.items():
            lines.append(f"L2 {name:18} {spread(values)}")
        lines.append(f"L2 verbose, init at  {spread(self.l2_init)} (guest uptime)")
        return "\n".join(lines)


def session(host: NestedHost, commands: dict[str, str], tally: Tally, number: str) -> None:
    """One nested host boot running every command; its outcome and figures into `tally`."""
    start = time.monotonic()
    detail = ""
    try:
        results = host.run_many(list(commands.values()), timeout=900)
        booted = {name: Booted(r) for name, r in zip(commands, results)}
        bad = [name for name, b in booted.items()
               if not re.search(r"pyvisor-status=0\b", b.output)]
        outcome = "failed" if bad else "ok"
        if bad:
            detail = f" boots failed: {', '.join(bad)}: {booted[bad[0]].output[-500:]!r}"
        for name, b in booted.items():
            tally.l2.setdefault(name, []).append(b.result.duration)
        if "verbose" in booted and (found := RUN_INIT.search(booted["verbose"].output)):
            tally.l2_init.append(float(found.group(1)))
    except NestedHostWedged as exc:   # the whole report: L1's stacks and registers
        outcome, detail = "wedged", "\n  " + str(exc).replace("\n", "\n  ")
    except NestedHostError as exc:
        outcome, detail = "failed", " " + str(exc)[:1500]
    wall = time.monotonic() - start
    tally.outcomes.append(outcome)
    tally.walls.append(wall)
    if host.last.boot:
        tally.l1_boots.append(host.last.boot)
    l2 = " ".join(f"{name}={r.duration:.1f}" for name, r in zip(commands, host.last.results))
    print(f"session {number}: {outcome} wall={wall:.1f} l1_boot={host.last.boot:.2f} {l2}"
          f"{detail}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30, help="per L1 QEMU")
    ap.add_argument("--qemu", action="append",
                    help="L1 QEMU: 7.2, 10 or a path; given more than once, sessions "
                         "alternate between them (so load from others falls on each alike)")
    ap.add_argument("--boots", default=",".join(DEFAULT_BOOTS),
                    help=f"comma-separated, from: {', '.join(BOOTS)}")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="checkout whose .venv/bin/pyvisor to boot with (default: this one)")
    ap.add_argument("--l1-kernel", help="L1 kernel series: 6.1 or 6.12 (default: the harness's)")
    ap.add_argument("--cpu", help="L1 -cpu model (default: the harness's)")
    ap.add_argument("--qemu-arg", action="append", default=[],
                    help="one more L1 QEMU argument (repeatable), e.g. -icount shift=auto")
    args = ap.parse_args()
    names = args.boots.split(",")
    unknown = [n for n in names if n not in BOOTS]
    problem = (f"unknown boots {', '.join(unknown)} (known: {', '.join(BOOTS)})" if unknown
               else "--sessions must be at least 1" if args.sessions < 1
               else f"{args.repo} has no .venv/bin/pyvisor"
               if not (args.repo / ".venv" / "bin" / "pyvisor").exists() else "")
    if problem:
        print(f"soak: {problem}", file=sys.stderr)
        return 2
    options = {"qemu_args": tuple(args.qemu_arg), "kernel_series": args.l1_kernel}
    if args.cpu:
        options["cpu_model"] = args.cpu
    try:
        hosts = [NestedHost.prepare(qemu=q, **options) for q in args.qemu or [None]]
        guest = linux_guest()
        labels = [f"QEMU {h.qemu.version().split()[0]}" for h in hosts]
    except PrepareError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    for label, host in zip(labels, hosts):
        print(f"soak: {args.sessions} sessions with {label} ({host.qemu.binary}), boots "
              f"{', '.join(names)}, pyvisor from {args.repo}\n  {host.describe()}", flush=True)
    tallies = [Tally() for _ in hosts]
    with tempfile.TemporaryDirectory(prefix="pyvisor-soak-") as tmp:
        initrd = guest.initramfs(Path(tmp) / "initrd.gz", INIT)
        commands = {n: BOOTS[n].command(guest, initrd, args.repo.resolve()) for n in names}
        for number in range(1, args.sessions + 1):
            for label, host, tally in zip(labels, hosts, tallies):
                session(host, commands, tally, f"{number} {label}")
    for label, tally in zip(labels, tallies):
        print(f"== {label}\n{tally.report()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
