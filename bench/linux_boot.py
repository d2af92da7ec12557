"""Linux boot to init: pyvisor against QEMU (-M pc, KVM) in the nested test host.

Both VMMs boot the same stock Debian cloud bzImage and busybox initramfs with the same
memory and vCPUs, in turn, in one nested host run; the init prints its uptime and powers
off. For each boot three figures (medians over the runs):

- guest uptime at init: the kernel's own boot time (/proc/uptime read by init);
- launch to init: nested-host seconds from starting the VMM to the init's line on the
  console, so VMM start-up (Python imports, memory and table set-up) counts too;
- launch to exit: until the VMM process has ended after the guest's power-off.

Prints a table with the ratios; asserts nothing about speed.

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
# and at the VMM's exit.
STAMPED = r"""
now() { cut -d' ' -f1 /proc/uptime; }
echo "@launch $(now)"
{ %s; echo "@status $?"; } 2>&1 | while IFS= read -r line; do
    case "$line" in *GUEST-INIT*) echo "$line @init $(now)";; "@status "*) echo "$line";; esac
done
echo "@exit $(now)"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="boot without 'quiet'")
    args = ap.parse_args()

    host = NestedHost.prepare()
    guest = linux_guest()
    append = "console=ttyS0 panic=-1" + ("" if args.verbose else " quiet")
    with tempfile.TemporaryDirectory(prefix="pyvisor-bench-") as tmp:
        initrd = guest.initramfs(Path(tmp) / "initrd.gz", INIT)
        vmms = vmm_commands(guest.bzimage, initrd, args.mem, args.cpus, append)
        order = [name for _ in range(args.runs) for name in vmms]   # interleaved
        results = host.run_many([STAMPED % vmms[name] for name in order],
                                timeout=300 + 120 * len(order))
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in vmms}
    for name, result in zip(order, results):
        figures[name].append(parse(result.output))

    print(host.describe())
    print(f"Linux boot to init in the nested test host: {guest.version} bzImage, "
          f"{args.mem}, {args.cpus} vCPU(s), {'verbose' if args.verbose else 'quiet'}, "
          f"median of {args.runs}")
    names = list(vmms)
    print(f"{'':24}" + "".join(f"{n:>14}" for n in names) + f"{'ratio':>10}")
    for i, label in enumerate(("guest uptime at init", "launch to init", "launch to exit")):
        medians = [statistics.median(f[i] for f in figures[n]) for n in names]
        print(f"{label:24}" + "".join(f"{m:>12.2f} s" for m in medians)
              + f"{medians[0] / medians[1]:>9.2f}x")


if __name__ == "__main__":
    main()
