"""Trace the first N instructions a kernel runs, with disassembly.

    python examples/trace_boot.py [KERNEL] [N]

The machine starts paused, before its first instruction; each step runs exactly one.
"""
import sys

from pyvisor import Machine

kernel = sys.argv[1] if len(sys.argv) > 1 else "guests/out/hello.elf"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 20

with Machine(kernel=kernel, mem="64M") as m:
    m.start(paused=True)
    cpu = m.vcpus[0]
    print(f"{kernel}: {cpu.mode}-bit entry at {cpu.regs.rip:#x}")
    for rip, insn in cpu.trace(count):
        print(f"  {rip:#014x}  {insn.raw.hex():<20} {insn.text}")
    m.stop()
