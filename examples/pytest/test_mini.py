"""Tests of the mini kernel (kernel/mini.c) with pyvisor's pytest plugin: build it with
`make`, then run `pytest` here. The plugin comes with pyvisor: nothing to configure."""
from pathlib import Path

import pytest

KERNEL = Path(__file__).parent / "build" / "mini.elf"
EXIT_PORT = 0xF4


def exit_status(value: int) -> int:
    """What the exit device makes of a write of value (QEMU's isa-debug-exit rule)."""
    return (value << 1) | 1


def login(vm) -> None:
    vm.expect(r"login: ")
    vm.send("root\r")
    vm.expect(r"# ")


def test_login_and_add(pyvisor_vm):
    vm = pyvisor_vm(KERNEL, mem="32M")
    vm.expect(r"login: ", timeout=10)
    vm.send("guest\r")
    vm.expect(r"login incorrect")
    vm.send("root\r")
    vm.expect(r"# ")
    vm.send("add 40 2\r")
    assert vm.expect(r"\n(-?\d+)\r\n").group(1) == "42"   # after the echoed command
    vm.send("exit 3\r")
    assert vm.wait(timeout=30).status == exit_status(3)


def test_two_machines_at_once(pyvisor_vm):
    a, b = pyvisor_vm(KERNEL, mem="32M"), pyvisor_vm(KERNEL, mem="32M", cpus=2)
    for vm in (a, b):
        login(vm)
    a.send("echo from a\r")
    b.send("echo from b\r")
    assert a.expect(r"from \w").group() == "from a"
    assert b.expect(r"from \w").group() == "from b"


@pytest.mark.pyvisor(kernel=KERNEL, mem="32M", append="console=ttyS0")
def test_declared_machine(pyvisor_machine):
    login(pyvisor_machine)
    pyvisor_machine.send("exit 0\r")
    assert pyvisor_machine.wait(timeout=30).status == exit_status(0)


def test_the_whole_machine_api(pyvisor_vm):
    """vm is a pyvisor Machine too: hooks, registers, memory, stats."""
    vm = pyvisor_vm(KERNEL, mem="32M")
    exits = []
    vm.on_pio(EXIT_PORT, callback=lambda cpu, port, size, value, is_write: exits.append(value))
    login(vm)
    vm.pause()
    assert 0x100000 <= vm.vcpus[0].regs.rip < 0x200000   # the kernel links at 1 MiB
    assert vm.memory.read(0x100000, 1) != b""
    vm.resume()
    vm.send("exit 5\r")
    assert vm.wait(timeout=30).status == exit_status(5)
    assert exits == [5]
    assert vm.stats.ports[EXIT_PORT] == 1


def test_back_to_the_prompt_with_a_snapshot(pyvisor_vm):
    """Log in once, then run each case from that same state."""
    vm = pyvisor_vm(KERNEL, mem="32M")
    login(vm)
    vm.pause()
    at_prompt = vm.snapshot()
    for a, b in ((1, 2), (40, 2), (-5, 5)):
        vm.restore(at_prompt)
        vm.resume()
        vm.send(f"add {a} {b}\r")
        assert vm.expect(r"\n(-?\d+)\r\n").group(1) == str(a + b)
        vm.expect(r"# ")
        vm.pause()
