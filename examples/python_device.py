"""A device written in Python: script_target asks a question on port 0x90 and reads the
answer from port 0x91, then does the same through MMIO at 0xD0000000. Returning a value
from a hook answers a read; returning anything but None from a write hook consumes it.

    python examples/python_device.py
"""
from pyvisor import Machine

with Machine(kernel="guests/out/script_target.elf", mem="64M") as m:
    question = {}

    @m.on_pio(0x90, 0x91)
    def tripler(cpu, port, size, value, is_write):
        if is_write:
            question["pio"] = value
            return True
        return question["pio"] * 3

    @m.on_mmio(0xD000_0000, 0x1000)
    def quadrupler(cpu, addr, size, value, is_write):
        if is_write:
            question["mmio"] = value
            return True
        return question["mmio"] * 4

    outcome = m.run(timeout=30)
    print(m.console_text, end="")
    print(f"exit status {outcome.status}")
