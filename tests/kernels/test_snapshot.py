"""Snapshots in place on real vCPUs: a restored guest carries on exactly where it was
(registers, memory, UART), a reset loop gives the same result every time, virtio devices
keep working across a restore, two vCPUs. The guests are guests/kernels/snap_target.c
and the virtio_blk / virtio_rng kernels."""
import re
import subprocess
import threading
import time

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine
from pyvisor.snapshot.errors import SnapshotError
from snap_guest import READY_PORT, ROUND_PORT, fresh_run, rounds_of, snap_target

pytestmark = [needs_kvm, pytest.mark.kvm]

def symbol(kernel: str, name: str) -> int:
    out = subprocess.run(["nm", guest(kernel)], capture_output=True, text=True, check=True).stdout
    return next(int(p[0], 16) for p in (line.split() for line in out.splitlines())
                if len(p) == 3 and p[2] == name)


def test_restore_from_a_hook_replays_the_rounds_exactly():
    expected = fresh_run(rounds=4)
    with snap_target(rounds=4) as m:
        state = {"restores": 0}
        m.on_pio(READY_PORT, callback=lambda *a: state.setdefault("snap", m.snapshot()) and True)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 4 and state["restores"] < 2:
                state["restores"] += 1
                m.restore(state["snap"])
            return True

        outcome = m.run(timeout=60)
        assert (outcome.kind, outcome.status) == ("exit", 3), outcome.describe()
        # Every restore goes back to before round 1: the same four rounds, three times.
        assert rounds_of(m.console_text) == expected[:-1] * 3 + expected[-1:]


def test_paused_restore_brings_back_counter_registers_and_memory():
    counter = symbol("snap_target", "counter")
    expected = fresh_run(rounds=6)
    with snap_target(rounds=6) as m:
        paused = threading.Event()

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value in (2, 5):
                m.pause()
                paused.set()
            return True

        m.start()
        assert paused.wait(30)
        snap = m.snapshot()                     # waits until the pause holds
        assert m.memory.read_u64(counter) == 2
        regs, sregs = m.vcpus[0].regs.as_dict(), m.vcpus[0].sregs.cr3
        mark = len(m.console_text)
        paused.clear()
        m.resume()
        assert paused.wait(30)
        console_shows(m, expected[4] + "\r", mark)
        m.restore(snap)
        assert m.state == "paused"
        assert m.memory.read_u64(counter) == 2
        assert m.vcpus[0].regs.as_dict() == regs and m.vcpus[0].sregs.cr3 == sregs
        first = rounds_of(m.console_text[mark:])
        assert first == expected[2:5]
        mark = len(m.console_text)
        paused.clear()
        m.resume()
        assert paused.wait(30)
        assert rounds_of(console_shows(m, expected[4] + "\r", mark)) == first   # rounds 3..5 again
        m.resume()
        assert m.wait(60).status == 3


def test_a_thousand_resets_give_the_same_round_every_time():
    counter = symbol("snap_target", "counter")
    with snap_target(pages=8, rounds=2) as m:
        state = {"resets": 0, "seen": set()}
        m.on_pio(READY_PORT, callback=lambda *a: state.setdefault("snap", m.snapshot()) and True)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2:
                state["seen"].add((m.memory.read_u64(counter), m.memory.read(counter, 8),
                                   cpu.regs.rax))
                if state["resets"] < 1000:
                    state["resets"] += 1
                    m.restore(state["snap"])
            return True

        outcome = m.run(timeout=300)
        assert outcome.status == 3, outcome.describe()
        assert state["resets"] == 1000
        assert len(state["seen"]) == 1                          # identical every time
        lines = rounds_of(m.console_text)
        assert len(set(lines[:-1])) == 2 and len(lines) == 2 * 1001 + 1


def test_many_snapshots_restore_one_after_another():
    counter = symbol("snap_target", "counter")
    with snap_target(rounds=8) as m:
        snaps = {}

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value in (2, 4, 6):
                snaps[value] = m.snapshot()
            if value == 7 and "done" not in snaps:
                snaps["done"] = True
                for n in (2, 6, 4, 2, 6):          # others in between: a full compare each
                    m.restore(snaps[n])
                    snaps.setdefault("seen", []).append(m.memory.read_u64(counter))
            return True

        assert m.run(timeout=60).status == 3
        assert snaps["seen"] == [2, 6, 4, 2, 6]
        lines = rounds_of(m.console_text)
        # After the last restore (to round 6) the guest runs rounds 7 and 8 again.
        assert [l.split()[1] for l in lines[:-1]] == [str(i) for i in range(1, 8)] + ["7", "8"]


def test_two_vcpus_restore_while_paused_and_a_hook_restore_is_refused():
    with snap_target(rounds=4, cpus=2) as m:
        paused = threading.Event()
        m.on_pio(READY_PORT, callback=lambda *a: (m.pause(), paused.set(), True)[2])
        m.start()
        assert paused.wait(30)
        snap = m.snapshot()
        states = [s.struct.mp_state.mp_state for s in snap.vcpus]
        m.resume()
        assert m.wait(60).status == 3
    expected = fresh_run(rounds=4)
    with snap_target(rounds=4, cpus=2) as m:
        paused.clear()
        m.on_pio(READY_PORT, callback=lambda *a: (m.pause(), paused.set(), True)[2])
        errors = []

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2 and not errors:
                try:
                    m.restore(snap2)
                except SnapshotError as e:
                    errors.append(str(e))
                m.pause()
                paused.set()
            return True

        m.start()
        assert paused.wait(30)
        snap2 = m.snapshot()
        assert [s.struct.mp_state.mp_state for s in snap2.vcpus] == states
        paused.clear()
        m.resume()
        assert paused.wait(30)
        assert errors and "vCPU 1" in errors[0] and "pause the machine" in errors[0]
        m.restore(snap2)                        # paused: both vCPUs go back
        m.resume()
        assert m.wait(60).status == 3
        assert rounds_of(m.console_text) == expected[:2] + expected


def console_shows(m: Machine, text: str, start: int = 0, timeout: float = 10) -> str:
    """The console from start, once it shows text (output reaches it through a pipe)."""
    deadline = time.monotonic() + timeout
    while text not in m.console_text[start:] and time.monotonic() < deadline:
        time.sleep(0.01)
    return m.console_text[start:]


def _stop_instead_of_exit(m: Machine, stopped: threading.Event, results: list) -> None:
    """The guests end through the i8042 reset (status 0) or isa-debug-exit: hook both so
    the machine pauses there and can be restored."""
    def reset(cpu, port, size, value, is_write):
        if is_write and value == 0xFE:
            results.append(0)
            m.pause()
            stopped.set()
            return True
        return None

    def exit_port(cpu, port, size, value, is_write):
        results.append((value << 1) | 1)
        m.pause()
        stopped.set()
        return True

    m.on_pio(0x64, callback=reset)
    m.on_pio(0xF4, callback=exit_port)


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_virtio_blk_and_rng_keep_working_across_a_restore(tmp_path, transport):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 64)
    with Machine(kernel=guest("virtio_blk"), mem="64M", cmdline="irq=1 write=1",
                 disks=[str(disk)], rng=True, virtio_transport=transport) as m:
        stopped, results, snaps = threading.Event(), [], []
        _stop_instead_of_exit(m, stopped, results)
        # At the second request (the write), after the first read completed: the queue
        # and its interrupts are in use.
        m.add_breakpoint(symbol("virtio_blk", "virtio_blk_request"),
                         callback=lambda cpu, bp: bp.hits == 2 and snaps.append(m.snapshot()))
        m.start()
        assert stopped.wait(60)
        first = console_shows(m, "write ok")
        assert results == [0] and "write ok" in first, first
        m.restore(snaps[0])
        mark = len(m.console_text)
        stopped.clear()
        m.resume()
        assert stopped.wait(60)
        again = console_shows(m, "write ok", mark)
        assert results == [0, 0], again
        assert "write ok" in again and "FAIL" not in again
        assert first.endswith(again)


def test_virtio_rng_keeps_working_across_a_restore():
    with Machine(kernel=guest("virtio_rng"), mem="64M", cmdline="irq=1", rng=True) as m:
        stopped, results, snaps = threading.Event(), [], []
        _stop_instead_of_exit(m, stopped, results)
        m.add_breakpoint(symbol("virtio_rng", "virtq_submit"),
                         callback=lambda cpu, bp: bp.hits == 2 and snaps.append(m.snapshot()))
        m.start()
        assert stopped.wait(60)
        assert results == [0] and snaps
        m.restore(snaps[0])
        mark = len(m.console_text)
        stopped.clear()
        m.resume()
        assert stopped.wait(60)
        again = console_shows(m, "irqs=", mark)
        deadline = time.monotonic() + 10    # the pump may still be delivering the rng line
        while not re.search(r"^rng: [0-9a-f]{128}\r?\n", again, re.M) and time.monotonic() < deadline:
            time.sleep(0.01)
            again = m.console_text[mark:]
        assert results == [0, 0], again
        lines = re.findall(r"^rng: ([0-9a-f]{128})\r?$", again, re.M)
        assert lines and "FAIL" not in again, again
