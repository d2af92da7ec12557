"""The scripting API on real vCPUs: pause/resume, registers and memory, single steps,
hooks that emulate devices, breakpoints, watchpoints, trace, stats, failing callbacks.
The guest is guests/kernels/script_target.c."""
import subprocess
import threading
import time

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine
from pyvisor.errors import PyvisorError

pytestmark = [needs_kvm, pytest.mark.kvm]

QUESTION = 14
EFER = 0xC0000080
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


def symbol(name: str) -> int:
    """Address of a symbol in script_target.elf (its ELF symbol table, through nm)."""
    out = subprocess.run(["nm", guest("script_target")], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise KeyError(name)


def target(cpus: int = 1, loops: int = 10, aps: bool = False) -> Machine:
    cmdline = f"loops={loops}" + (" aps=1" if aps else "")
    return Machine(kernel=guest("script_target"), mem="64M", cpus=cpus, cmdline=cmdline)


def answer_device(m: Machine) -> None:
    """The script side of the guest's question: port 0x90/0x91 answers 3x, MMIO 4x."""
    asked = {}

    @m.on_pio(0x90, 0x91)
    def device(cpu, port, size, value, is_write):
        if is_write:
            asked["pio"] = value
            return True
        return 3 * asked["pio"]

    @m.on_mmio(0xD000_0000, 0x1000)
    def mmio(cpu, addr, size, value, is_write):
        if is_write:
            asked["mmio"] = value
            return True
        return 4 * asked["mmio"]


def test_hooks_emulate_a_port_and_an_mmio_device():
    with target() as m:
        answer_device(m)
        outcome = m.run(timeout=30)
        assert (outcome.kind, outcome.status) == ("exit", 3), outcome.describe()
        assert f"pio answer {3 * QUESTION}" in m.console_text
        assert f"mmio answer {4 * QUESTION}" in m.console_text


def test_without_hooks_the_ports_read_all_ones():
    with target() as m:
        outcome = m.run(timeout=30)
        assert (outcome.kind, outcome.status) == ("exit", 1)
        assert "pio answer 4294967295" in m.console_text


def test_a_watching_hook_passes_accesses_on_and_sees_every_post_write():
    with target(loops=7) as m:
        seen = []
        m.on_pio(0x80, callback=lambda cpu, port, size, value, w: seen.append((cpu.index, value)))
        m.run(timeout=30)
        assert seen == [(0, i) for i in range(7)]
        assert m.stats.ports[0x80] == 7


@pytest.mark.parametrize("cpus", [1, 2])
def test_pause_resume_state_and_registers(cpus):
    with target(cpus=cpus, loops=2_000_000, aps=cpus > 1) as m:
        assert m.state == "created"
        m.start()
        assert m.state == "running"
        time.sleep(0.3)
        m.pause()
        m.pause()                      # idempotent
        assert m.state == "paused"
        rip = m.vcpus[0].regs.rip
        counter = m.memory.read_u64(symbol("counter"))
        time.sleep(0.2)                # paused means paused
        assert m.vcpus[0].regs.rip == rip
        assert m.memory.read_u64(symbol("counter")) == counter
        if cpus > 1:
            ap = m.vcpus[1]
            assert ap.mode == 16       # the APs loop in real mode
            assert ap.sregs.cs.selector == 0x1000
        m.resume()
        m.resume()
        assert m.state == "running"
        time.sleep(0.3)
        m.pause()
        assert m.memory.read_u64(symbol("counter")) > counter
        m.stop()
        assert m.wait(10).kind == "stopped"
        assert m.state == "stopped"


def test_state_is_only_touched_while_paused():
    with target(loops=2_000_000) as m:
        m.start()
        with pytest.raises(PyvisorError, match="pause the machine"):
            m.vcpus[0].regs
        with pytest.raises(PyvisorError, match="pause"):
            m.vcpus[0].step()
        m.stop()


def test_register_and_memory_round_trips():
    with target() as m:
        cpu = m.vcpus[0]
        regs = cpu.regs
        regs.rax = 0x1234_5678_9ABC_DEF0
        regs.r15 = 7
        assert (cpu.regs.rax, cpu.regs.r15) == (0x1234_5678_9ABC_DEF0, 7)
        cpu.regs.rbx = 5
        assert cpu.regs.rbx == 5 and cpu.regs.rax == 0x1234_5678_9ABC_DEF0
        assert cpu.msrs[EFER] & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA
        assert cpu.sregs.efer == cpu.msrs[EFER]
        assert cpu.mode == 64
        # The boot page tables map the first 4 GiB one to one.
        assert cpu.translate(0x20_1234) == 0x20_1234
        assert cpu.translate(0x8000_0000_0000) is None      # not canonical
        cpu.write_virt(0x30_0FF8, b"0123456789abcdef")       # across a page boundary
        assert m.memory.read(0x30_0FF8, 16) == b"0123456789abcdef"
        m.memory.write(0x30_1000, b"XY")
        assert cpu.read_virt(0x30_0FFE, 4) == b"67XY"


@pytest.mark.parametrize("cpus", [1, 2])
def test_run_until_step_and_disassemble(cpus):
    func = symbol("target_function")
    with target(cpus=cpus, aps=cpus > 1) as m:
        cpu = m.run_until(func, timeout=30)
        assert cpu.index == 0
        assert m.state == "paused"
        assert cpu.regs.rip == func
        insns = cpu.disassemble(count=3)
        assert insns[0].address == func
        assert cpu.step() is None
        assert cpu.regs.rip == insns[1].address
        cpu.step(1)
        assert cpu.regs.rip == insns[2].address
        # Changing a register changes what the guest does: skip the rest of the work.
        m.resume()
        outcome = m.wait(30)
        assert outcome.kind == "exit"


def test_trace_yields_consecutive_instructions():
    func = symbol("target_function")
    with target() as m:
        cpu = m.run_until(func, timeout=30)
        trace = list(cpu.trace(12))
        assert len(trace) == 12
        assert trace[0][0] == func
        for (rip, insn), (next_rip, _) in zip(trace, trace[1:]):
            assert insn.address == rip and insn.text
            if not insn.text.startswith(("call", "ret", "j")):
                assert next_rip == rip + len(insn.raw)
        m.stop()


def test_breakpoint_callback_counts_every_call_and_steps_over_itself():
    calls = []
    with target(loops=9) as m:
        bp = m.add_breakpoint(symbol("target_function"),
                              callback=lambda cpu, bp: calls.append(cpu.regs.rdi))
        answer_device(m)
        outcome = m.run(timeout=30)
        assert (outcome.kind, outcome.status) == ("exit", 3), outcome.describe()
        assert bp.hits == 9
        assert calls == list(range(9))
        assert "done 9 sum 45" in m.console_text


def test_breakpoint_without_callback_pauses_and_wait_reports_it():
    func = symbol("target_function")
    with target(loops=3) as m:
        bp = m.add_breakpoint(func)
        m.start()
        for i in range(3):
            event = m.wait(30)
            assert (event.kind, event.vcpu, event.address) == ("breakpoint", 0, func)
            assert m.state == "paused"
            assert m.vcpus[0].regs.rdi == i
            m.resume()
        bp.remove()
        assert m.wait(30).kind == "exit"
        assert bp.hits == 3


def test_watchpoint_reports_the_write_after_it_happened():
    watched = symbol("watched")
    with target(loops=4) as m:
        m.run_until(symbol("target_function"), timeout=30)   # past the BSS clearing
        wp = m.add_watchpoint(watched, length=8, access="write")
        # KVM's instruction emulator (every guest on PVM) checks no data breakpoints.
        assert wp.kind == ("page" if m.backend.name == "pvm" else "hw")
        m.resume()
        for i in range(4):
            event = m.wait(30)
            assert (event.kind, event.address) == ("watchpoint", watched)
            assert m.memory.read_u64(watched) == 2 * i
            m.resume()
        assert m.wait(30).kind == "exit"
        assert wp.hits == 4


def test_software_breakpoints_where_int3_runs_and_hardware_ones_on_pvm():
    """The nested test host (tests/nested/test_nested_scripting.py) runs this on SVM."""
    func = symbol("target_function")
    with target(loops=3) as m:
        original = m.memory.read(func, 1)
        bp = m.add_breakpoint(func, kind="sw", callback=lambda c, b: None)
        assert bp.kind == ("hw" if m.backend.name == "pvm" else "sw")
        if bp.kind == "sw":
            assert m.memory.read(func, 1) == b"\xcc"
        outcome = m.run(timeout=30)
        assert outcome.kind == "exit", outcome.describe()
        assert bp.hits == 3
        assert "done 3 sum 6" in m.console_text
        bp.remove()
        assert m.memory.read(func, 1) == original


def test_software_breakpoint_pauses_and_resumes_over_itself():
    func = symbol("target_function")
    with target(loops=2) as m:
        m.add_breakpoint(func, kind="sw")
        m.start()
        for i in range(2):
            event = m.wait(30)
            assert (event.kind, event.address) == ("breakpoint", func)
            assert m.vcpus[0].regs.rip == func and m.vcpus[0].regs.rdi == i
            m.resume()
        assert m.wait(30).kind == "exit"
        assert "done 2 sum 3" in m.console_text


def test_a_callback_that_raises_stops_the_machine_with_its_traceback():
    with target() as m:
        def broken(cpu, port, size, value, is_write):
            raise RuntimeError("my device is broken")
        m.on_pio(0x80, callback=broken)
        outcome = m.run(timeout=30)
        assert outcome.kind == "error"
        assert "my device is broken" in outcome.detail
        assert "RuntimeError" in outcome.traceback and "broken" in outcome.traceback


def test_a_callback_may_pause_the_machine():
    with target(loops=1_000) as m:
        def pause_at_five(cpu, port, size, value, is_write):
            if value == 5:
                m.pause()
        m.on_pio(0x80, callback=pause_at_five)
        m.start()
        deadline = time.monotonic() + 30
        while m.state != "paused" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.state == "paused"
        assert m.memory.read_u64(symbol("counter")) == 6   # counter++ came before the OUT
        m.stop()


def test_hooks_can_be_added_from_another_thread_while_running():
    with target(loops=1_000_000) as m:
        seen = []
        m.start()
        t = threading.Thread(target=lambda: m.on_pio(0x80, callback=lambda *a: seen.append(a[3])))
        t.start()
        t.join()
        deadline = time.monotonic() + 30
        while len(seen) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        m.pause()
        assert len(seen) >= 50
        assert all((b - a) % 256 == 1 for a, b in zip(seen, seen[1:]))   # none missed
        m.stop()


def test_on_exit_sees_the_triple_fault():
    seen = []
    with Machine(kernel=guest("triple"), mem="64M") as m:
        m.on_exit("shutdown", lambda cpu, reason: seen.append((cpu.index, reason)))
        outcome = m.run(timeout=30)
    assert outcome.kind == "fault"
    assert seen == [(0, "shutdown")]


def test_on_exit_refuses_io_and_unknown_names():
    with target() as m:
        with pytest.raises(ValueError, match="on_pio"):
            m.on_exit("io", lambda *a: None)
        with pytest.raises(ValueError, match="unknown exit"):
            m.on_exit("bogus", lambda *a: None)


def test_stats_count_exits_by_reason_port_and_time():
    with target(loops=25) as m:
        answer_device(m)
        m.run(timeout=30)
        s = m.stats
    assert s.ports[0x80] == 25
    assert s.ports[0x90] == 1 and s.ports[0x91] == 1
    assert s.exits["io"] >= 27
    assert s.exits["mmio"] >= 2
    assert s.mmio.get("unclaimed", 0) >= 2
    assert s.native_exits > 0            # the banner went through the UART fast path
    assert s.kvm_run_seconds > 0 and s.pyvisor_seconds > 0
    assert "exits:" in s.format()


def test_stats_time_serving_exits_by_reason_leaves_out_paused_time():
    with target(loops=25) as m:
        answer_device(m)

        @m.on_pio(0x80)
        def slow_post(cpu, port, size, value, is_write):
            time.sleep(0.004)            # 25 writes: at least 0.1 s serving port I/O
            return True

        m.run_until(symbol("target_function"), timeout=30)
        time.sleep(0.6)                  # paused: not time spent serving an exit
        m.resume()
        m.wait(timeout=30)
        s = m.stats
    assert s.handled_seconds["io"] >= 0.1
    assert sum(s.handled_seconds.values()) < 0.6
    assert "µs each" in s.format()


def test_watchpoint_callback_and_a_read_write_watchpoint():
    watched, counter = symbol("watched"), symbol("counter")
    with target(loops=5) as m:
        m.run_until(symbol("target_function"), timeout=30)
        values = []
        m.add_watchpoint(watched, callback=lambda cpu, wp: values.append(m.memory.read_u64(watched)))
        rw = m.add_watchpoint(counter, access="rw")
        m.resume()
        event = m.wait(30)     # counter++ of the next loop reads it first
        assert (event.kind, event.address) == ("watchpoint", counter)
        rw.remove()
        m.resume()
        assert m.wait(30).kind == "exit"
        assert values == [0, 2, 4, 6, 8]
        assert "done 5 sum 15" in m.console_text


def test_four_hardware_slots_then_a_clear_error():
    with target() as m:
        points = [m.add_breakpoint(0x10_0000 + 16 * i) for i in range(4)]
        with pytest.raises(PyvisorError, match="debug registers"):
            m.add_breakpoint(0x10_0000)
        points[0].remove()
        m.add_breakpoint(0x10_0000)


def test_a_step_over_a_store_into_a_watched_page_is_one_instruction():
    """On PVM the watched page makes the store an MMIO write, after which KVM loses the
    single-step trap; the step must still end right after the store."""
    func, watched = symbol("target_function"), symbol("watched")
    with target(loops=3) as m:
        cpu = m.run_until(func, timeout=30)
        m.add_watchpoint(watched)
        insns = cpu.disassemble(count=4)
        for i in range(3):
            assert cpu.step(timeout=10) is None
            assert cpu.regs.rip == insns[i + 1].address, (i, insns)
        assert m.wait(0).kind == "watchpoint"      # the store was seen, after the step
        m.stop()
