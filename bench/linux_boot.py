"""Linux boot to init: pyvisor against QEMU (-M pc, KVM) in the nested test host.

Both VMMs boot the same stock Debian cloud bzImage and busybox initramfs with the same
memory and vCPUs, in turn, in one nested host run; the init prints its uptime and powers
off. By default four configurations (1 and 2 vCPUs, quiet and verbose), all in one nested
run. For each boot four figures (medians over the runs):

- guest uptime at init: the kernel's own boot time (/proc/uptime read by init);
- launch to init: nested-host seconds from starting the VMM to the init's line on the
  console, so VMM start-up (Python imports, memory and table set-up) counts too;
- before the guest's clock: launch to init minus the uptime: VMM start-up, the
  bzImage's decompression and the kernel's earliest boot;
- launch to exit: until the VMM process has ended after the guest's power-off.

Then, for each configuration, pyvisor's own account of the median boot (`--stats`):
exits by reason, port and MMIO region, and the time spent serving each kind.
Prints tables with the ratios; asserts nothing about speed.

    python bench/linux_boot.py [--runs N] [--mem 256M] [--cpus 1] [--verbose]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "nested"))

from nestedhost import NestedHost, linux_guest  # noqa: E402

INIT = 'echo "GUEST-INIT uptime=$(cut -d" " -f1 /proc/uptime)"\npoweroff -f\n'
# Runs in the nested host: stamps the nested host's clock at launch, at the init's line
# and at the VMM's exit; the VMM's stderr (pyvisor's --stats) is kept aside and printed
# after, each line "@err ".
STAMPED = r"""
now() { cut -d' ' -f1 /proc/uptime; }
echo "@launch $(now)"
{ %s 2>/tmp/vmm.err; echo "@status $?"; } | while IFS= read -r line; do
    case "$line" in *GUEST-INIT*) echo "$line @init $(now)";; "@status "*) echo "$line";; esac
done
echo "@exit $(now)"
sed 's/^/@err /' /tmp/vmm.err
"""


def vmm_commands(kernel: Path, initrd: Path, mem: str, cpus: int, append: str,
                 pyvisor_args: str = "", qemu_args: str = "") -> dict[str, str]:
    """The two VMMs booting the same guest; *_args attach the same devices to each."""
    mem_mib = int(mem[:-1]) * (1024 if mem.endswith("G") else 1)
    return {
        "pyvisor": (f"{ROOT}/.venv/bin/pyvisor run {kernel} --initrd {initrd} --mem {mem} "
                    f"--cpus {cpus} --console stdio --timeout 600 {pyvisor_args} "
                    f"--append '{append}'"),
        "QEMU -M pc": (f"qemu-system-x86_64 -accel kvm -cpu host -M pc -m {mem_mib} "
                       f"-smp {cpus} -nodefaults -no-user-config -display none -no-reboot "
                       f"-serial stdio -kernel {kernel} -initrd {initrd} {qemu_args} "
                       f"-append '{append}' </dev/null"),
    }


def parse(output: str) -> tuple[float, float, float]:
    """(guest uptime at init, launch to init, launch to exit) from one stamped run."""
    launch = float(re.search(r"@launch ([\d.]+)", output).group(1))
    init = re.search(r"GUEST-INIT uptime=([\d.]+).*@init ([\d.]+)", output)
    status = re.search(r"@status (\d+)", output)
    end = float(re.search(r"@exit ([\d.]+)", output).group(1))
    if not init or not status or status.group(1) != "0":
        raise SystemExit(f"a boot failed:\n{output[-2000:]}")
    return float(init.group(1)), float(init.group(2)) - launch, end - launch


def stats_block(output: str) -> str:
    """pyvisor's --stats lines from one stamped run."""
    return "\n".join(line[len("@err "):] for line in output.splitlines()
                     if line.startswith("@err "))


LABELS = ("guest uptime at init", "launch to init", "before the guest's clock",
          "launch to exit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--cpus", type=int, default=None, help="only this many vCPUs (default: 1 and 2)")
    ap.add_argument("--verbose", action="store_true", help="only verbose boots (without 'quiet')")
    ap.add_argument("--quiet", action="store_true", help="only quiet boots")
    args = ap.parse_args()
    cpu_counts = [args.cpus] if args.cpus else [1, 2]
    verbosity = [True] if args.verbose else [False] if args.quiet else [False, True]
    configs = [(cpus, verbose) for verbose in verbosity for cpus in cpu_counts]

    host = NestedHost.prepare()
    guest = linux_guest()
    with tempfile.TemporaryDirectory(prefix="pyvisor-bench-") as tmp:
        initrd = guest.initramfs(Path(tmp) / "initrd.gz", INIT)
        commands = {}
        for cpus, verbose in configs:
            append = "console=ttyS0 panic=-1" + ("" if verbose else " quiet")
            for name, command in vmm_commands(guest.bzimage, initrd, args.mem, cpus,
                                              append, pyvisor_args="--stats").items():
                commands[(cpus, verbose, name)] = command
        order = [key for _ in range(args.runs) for key in commands]   # interleaved
        results = host.run_many([STAMPED % commands[key] for key in order],
                                timeout=300 + 120 * len(order))
    runs: dict[tuple, list[tuple[tuple[float, ...], str]]] = {key: [] for key in commands}
    for key, result in zip(order, results):
        uptime, to_init, to_exit = parse(result.output)
        runs[key].append(((uptime, to_init, to_init - uptime, to_exit),
                          stats_block(result.output)))

    print(host.describe())
    print(f"Linux boot to init in the nested test host: {guest.version} bzImage, "
          f"{args.mem}, median of {args.runs} runs each, the VMMs interleaved")
    names = list(vmm_commands(guest.bzimage, Path("initrd"), args.mem, 1, ""))
    for cpus, verbose in configs:
        print(f"\n{cpus} vCPU(s), {'verbose' if verbose else 'quiet'}:")
        print(f"{'':26}" + "".join(f"{n:>14}" for n in names) + f"{'ratio':>10}")
        for i, label in enumerate(LABELS):
            medians = [statistics.median(f[i] for f, _ in runs[(cpus, verbose, n)])
                       for n in names]
            print(f"{label:26}" + "".join(f"{m:>12.2f} s" for m in medians)
                  + f"{medians[0] / medians[1]:>9.2f}x")
        for n in names:   # every run, in order: the spread behind the medians
            print(f"  launch to init, {n}: "
                  + " ".join(f"{f[1]:.2f}" for f, _ in runs[(cpus, verbose, n)]))
    for cpus, verbose in configs:
        ordered = sorted(runs[(cpus, verbose, names[0])], key=lambda run: run[0][1])
        print(f"\npyvisor --stats of the median boot, {cpus} vCPU(s), "
              f"{'verbose' if verbose else 'quiet'}:")
        print(ordered[len(ordered) // 2][1])


if __name__ == "__main__":
    main()
