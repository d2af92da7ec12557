"""Stop at a function by its symbol and dump what the guest holds there: the arguments
(System V: RDI, RSI), the stack, and two globals read through the guest's page tables.

    python examples/break_and_dump.py
"""
import struct

from pyvisor import Machine
from pyvisor.loader.symbols import symbols

KERNEL = "guests/out/script_target.elf"
syms = symbols(KERNEL)

with Machine(kernel=KERNEL, mem="64M", cmdline="loops=5") as m:
    for call in range(3):
        cpu = m.run_until(syms["target_function"], timeout=30)
        regs = cpu.regs
        counter, watched = (struct.unpack("<Q", cpu.read_virt(syms[name], 8))[0]
                            for name in ("counter", "watched"))
        ret, = struct.unpack("<Q", cpu.read_virt(regs.rsp, 8))
        print(f"call {call}: target_function(x={regs.rdi}) from {ret:#x}, "
              f"counter={counter} watched={watched}")
        print("  " + "\n  ".join(str(i.text) for i in cpu.disassemble(count=3)))
    m.resume()
    print(m.wait(30).detail)
