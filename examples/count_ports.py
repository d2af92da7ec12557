"""Count and log a guest's port I/O: a hook on every port, before the devices.

    python examples/count_ports.py [KERNEL] [--log]

A hook that returns None only watches: the access still goes to the device.
"""
import sys
from collections import Counter

from pyvisor import Machine

kernel = next((a for a in sys.argv[1:] if not a.startswith("-")), "guests/out/hello.elf")
log = "--log" in sys.argv
counts: Counter = Counter()


def watch(cpu, port, size, value, is_write):
    counts[port, "out" if is_write else "in"] += 1
    if log:
        print(f"vCPU {cpu.index} {'out' if is_write else 'in '} {port:#06x} "
              f"size {size}" + (f" value {value:#x}" if is_write else ""))


with Machine(kernel=kernel, mem="64M") as m:
    m.on_pio(0x0000, 0xFFFF, watch)
    outcome = m.run(timeout=30)

print(f"{kernel}: {outcome.kind} (status {outcome.status}), "
      f"{sum(counts.values())} port accesses")
for (port, direction), n in counts.most_common(10):
    print(f"  {port:#06x} {direction:<3} {n}")
