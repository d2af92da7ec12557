"""Coalesced port writes on real vCPUs: the CMOS index port and the POST port are queued
by KVM instead of exiting, and still reach the RTC in order before its data port is read,
before a pause (so a snapshot holds them), and one by one to a hook. The guest is
guests/kernels/cmos_index.c."""
import time

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine
from pyvisor._native import lib
from pyvisor.kvm.system import Kvm
from pyvisor.loader.symbols import symbols

pytestmark = [needs_kvm, pytest.mark.kvm]

RTC_INDEX, POST = 0x70, 0x80
NVRAM_FIRST, NVRAM_BYTES = 0x40, 64
PARK_INDEX = 0x4A


def coalescing_host() -> bool:
    kvm = Kvm("/dev/kvm")
    try:
        return bool(kvm.check_extension(lib.KVM_CAP_COALESCED_MMIO)
                    and kvm.check_extension(lib.KVM_CAP_COALESCED_PIO))
    finally:
        kvm.close()


def needs_coalescing():
    if not coalescing_host():
        pytest.skip("this host's KVM has no KVM_CAP_COALESCED_PIO")


def index_writes(rounds: int) -> list[int]:
    """What cmos_index.c writes to the index port, in order."""
    writes = [NVRAM_FIRST + i for i in range(NVRAM_BYTES)]
    for r in range(rounds):
        writes += [NVRAM_FIRST + (r + 1) % NVRAM_BYTES, NVRAM_FIRST + r * 7 % NVRAM_BYTES]
    return writes


def cmos_machine(rounds: int, park: bool = False) -> Machine:
    return Machine(kernel=guest("cmos_index"), mem="64M",
                   cmdline=f"rounds={rounds}" + (" park=1" if park else ""))


def test_every_read_after_coalesced_index_writes_is_right_and_counted():
    needs_coalescing()
    rounds = 600
    with cmos_machine(rounds) as m:
        outcome = m.run(timeout=60)
        stats = m.stats
    assert (outcome.kind, outcome.status) == ("reset", 0), m.console_text
    assert f"{rounds} reads, 0 errors" in m.console_text
    writes = len(index_writes(rounds))
    # Every write is counted by port, whether it exited (the ring was full) or was queued.
    assert stats.ports[RTC_INDEX] == writes
    assert stats.ports[POST] == rounds
    assert stats.coalesced > (writes + rounds) // 2
    assert stats.exits["io"] < writes     # the data-port accesses exit, most index writes not


def test_a_hook_on_the_index_port_sees_every_write_in_order():
    rounds = 200
    seen = []
    with cmos_machine(rounds) as m:
        m.on_pio(RTC_INDEX, callback=lambda cpu, port, size, value, is_write:
                 seen.append(value) if is_write else None)
        outcome = m.run(timeout=60)
        stats = m.stats
    assert (outcome.kind, outcome.status) == ("reset", 0), m.console_text
    assert seen == index_writes(rounds)
    assert stats.ports[POST] == rounds    # the POST port is still coalesced meanwhile


def test_a_pause_hands_the_queued_index_write_to_the_rtc_before_a_snapshot():
    needs_coalescing()
    rounds = 10
    with cmos_machine(rounds, park=True) as m:
        m.start()
        deadline = time.monotonic() + 30
        while "parking" not in m.console_text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "parking" in m.console_text, m.console_text
        time.sleep(0.3)                                 # the write after the banner is done
        before = m.stats.ports.get(RTC_INDEX, 0)
        assert before == len(index_writes(rounds))      # the last one is still queued
        m.pause()
        assert m.stats.ports[RTC_INDEX] == before + 1
        snap = m.snapshot()
        assert m.rtc.snapshot_state()["_index"] == PARK_INDEX
        assert [d["_index"] for d in snap.devices.values() if "_index" in d] == [PARK_INDEX]
        m.stop()
        m.wait()


def test_a_step_over_a_coalesced_write_leaves_it_in_the_rtc():
    needs_coalescing()
    park_index = symbols(guest("cmos_index"))["park_index"]
    with cmos_machine(10, park=True) as m:
        cpu = m.run_until(park_index, timeout=30)
        before = m.stats.ports[RTC_INDEX]
        cpu.step(2)                                     # mov $0x4a, %eax; out %al, $0x70
        assert cpu.regs.rip == park_index + 7
        assert m.rtc.snapshot_state()["_index"] == PARK_INDEX
        assert m.stats.ports[RTC_INDEX] == before + 1
        m.stop()
        m.wait()
