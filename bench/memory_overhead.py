"""VMM memory overhead: peak RSS minus the guest RAM pages resident, for a 128 MiB guest,
pyvisor against the smallest C VMM (bench/pio_baseline.c) and the interpreter alone, next
to Firecracker's published figure.

Each VMM boots guests/out/shell.elf with 128 MiB and its console on a pipe; once the
prompt is there (the guest idles, waiting for input), /proc/PID/smaps gives the resident
size of the guest RAM mapping (the one anonymous mapping of 128 MiB or more: the kernel
may merge a thread's stack into it, whose few resident pages then count as guest) and
/proc/PID/status the peak RSS so far (VmHWM; wait4's ru_maxrss would not do: it counts the
spawning process's RSS from before the exec). overhead = VmHWM - guest RAM resident.
Medians of --runs runs. Prints a table; asserts nothing.

    python bench/memory_overhead.py [--runs N]
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time

from startup_env import PYVISOR, ROOT, build, user_env

SHELL = ROOT / "guests" / "out" / "shell.elf"
C_VMM = ROOT / "bench" / "out" / "pio_baseline"
MEM_MB = 128
PROMPT = b"pyvisor> "
# Firecracker's SPECIFICATION.md: VMM memory overhead at most 5 MiB for a 1 vCPU, 128 MiB
# microVM. Quoted, not measured here.
FIRECRACKER_MIB = 5
READY_TIMEOUT = 30.0


def wait_for(proc: subprocess.Popen, text: bytes) -> None:
    seen, deadline = b"", time.monotonic() + READY_TIMEOUT
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise RuntimeError(f"{proc.args[0]}: no {text!r} within {READY_TIMEOUT:g} s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"{proc.args[0]} ended before printing {text!r}: {seen[-200:]!r}")
        seen = (seen + chunk)[-4096:]


def status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                if v.strip().endswith("kB")}


def ram_resident_kib(pid: int, size_kib: int) -> int:
    """Rss of the anonymous mapping of size_kib or more (the guest's RAM)."""
    found, size, anonymous = [], 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:   # a mapping's header line
                anonymous = len(fields) < 6
            elif fields[0] == "Size:":
                size = int(fields[1])
            elif fields[0] == "Rss:" and anonymous and size >= size_kib:
                found.append(int(fields[1]))
    if len(found) != 1:
        raise RuntimeError(f"expected one anonymous mapping of {size_kib} KiB or more, "
                           f"found {len(found)}")
    return found[0]


def sample(cmd: list[str], env: dict[str, str], ready: bytes, ram_kib: int | None
           ) -> tuple[float, float, float, float]:
    """(peak, guest RAM resident, anonymous, file-backed RSS at the sample) in MiB."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        wait_for(proc, ready)
        status = status_kib(proc.pid)
        ram = ram_resident_kib(proc.pid, ram_kib) if ram_kib else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        proc.stdout.close()
    return status["VmHWM"] / 1024, ram / 1024, status["RssAnon"] / 1024, status["RssFile"] / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="median of this many runs")
    args = ap.parse_args()
    if args.runs <= 0:
        ap.error("--runs must be positive")
    build()
    env = user_env()
    ram_kib = MEM_MB << 10
    rows = [
        ("python (interpreter alone)",
         [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
         b"ready", None),
        ("C VMM (pio_baseline)", [str(C_VMM), str(SHELL)], PROMPT, ram_kib),
        ("pyvisor run", [str(PYVISOR), "run", str(SHELL), "--mem", f"{MEM_MB}M",
                         "--console", "stdio"], PROMPT, ram_kib),
    ]
    env_c = dict(env, PIO_BASELINE_MEM_MB=str(MEM_MB))
    for name, cmd, ready, ram in rows:   # fills the bytecode cache
        sample(cmd, env_c, ready, ram)
    results = {name: [] for name, *_ in rows}
    for _ in range(args.runs):
        for name, cmd, ready, ram in rows:
            results[name].append(sample(cmd, env_c, ready, ram))

    print(f"Memory overhead: shell.elf, {MEM_MB} MiB guest, idle at its prompt; "
          f"median of {args.runs} runs, MiB")
    print(f"{'':<28} {'peak RSS':>9} {'guest RAM':>10} {'overhead':>9} {'anon':>7} {'file':>7}")
    for name, _, _, _ in rows:
        peak, ram, anon, file = (statistics.median(c) for c in zip(*results[name]))
        overhead = statistics.median(p - r for p, r, _, _ in results[name])
        print(f"{name:<28} {peak:>9.1f} {ram:>10.1f} {overhead:>9.1f} {anon:>7.1f} {file:>7.1f}")
    print(f"{'Firecracker (published)':<28} {'':>9} {'':>10} {FIRECRACKER_MIB:>9.1f}   "
          f"(its SPECIFICATION.md, not measured here)")
    print("overhead = peak RSS - guest RAM resident; anon/file: RssAnon/RssFile at the prompt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
