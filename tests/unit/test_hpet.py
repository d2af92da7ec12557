"""The HPET (IA-PC HPET specification 1.0a) with a fake clock: register layout and
capabilities as the specification numbers them, the counter, comparators (one-shot,
periodic, 32-bit, level and edge), legacy replacement routing, and its ACPI table."""
import struct

import pytest

from pyvisor.acpi import tables
from pyvisor.devices.legacy.hpet import Hpet

US = 1000   # ns


class Clock:
    def __init__(self):
        self.now = 1_000_000_000

    def __call__(self):
        return self.now


@pytest.fixture
def hpet():
    clock, lines = Clock(), []
    dev = Hpet(lambda gsi, level: lines.append((gsi, level)), clock, timer=False)
    dev.clock, dev.lines = clock, lines
    return dev


def r64(dev, reg):
    return dev.mmio_read(reg, 8)


def test_capabilities_as_the_specification_lays_them_out(hpet):
    caps = r64(hpet, 0x000)
    assert caps >> 32 == 10_000_000            # COUNTER_CLK_PERIOD: 10 ns in femtoseconds
    assert caps >> 16 & 0xFFFF == 0x8086       # VENDOR_ID
    assert caps >> 15 & 1 == 1                 # LEG_RT_CAP
    assert caps >> 13 & 1 == 1                 # COUNT_SIZE_CAP: 64-bit
    assert caps >> 8 & 0x1F == 2               # NUM_TIM_CAP: three timers
    assert caps & 0xFF == 1                    # REV_ID
    assert hpet.mmio_read(0x004, 4) == 10_000_000
    for n in range(3):
        cfg = r64(hpet, 0x100 + 0x20 * n)
        assert cfg >> 32 == 1 << 2 and cfg & (1 << 4 | 1 << 5) == 1 << 4 | 1 << 5


def test_counter_runs_only_when_enabled_and_is_writable_when_halted(hpet):
    assert r64(hpet, 0x0F0) == 0
    hpet.clock.now += 50 * US
    assert r64(hpet, 0x0F0) == 0
    hpet.mmio_write(0x010, 4, 1)               # ENABLE_CNF
    hpet.clock.now += 50 * US
    assert r64(hpet, 0x0F0) == 5000            # 100 ticks per microsecond
    hpet.mmio_write(0x0F0, 8, 123)             # ignored while running
    assert r64(hpet, 0x0F0) == 5000
    hpet.mmio_write(0x010, 4, 0)
    hpet.clock.now += 50 * US
    assert r64(hpet, 0x0F0) == 5000
    hpet.mmio_write(0x0F4, 4, 1)               # the high half, while halted
    assert r64(hpet, 0x0F0) == (1 << 32) + 5000 and hpet.mmio_read(0x0F4, 4) == 1


def arm(dev, n, cfg, comparator):
    dev.mmio_write(0x100 + 0x20 * n, 4, cfg)
    dev.mmio_write(0x108 + 0x20 * n, 8, comparator)


def test_one_shot_edge_on_ioapic_pin_2(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 2, 1 << 2 | 2 << 9, 1000)        # INT_ENB, route pin 2; 10 us away
    hpet.clock.now += 9 * US
    hpet.tick()
    assert hpet.lines == []
    hpet.clock.now += 1 * US
    assert hpet.tick() > hpet.clock.now        # next match: after a wrap of 64 bits
    assert hpet.lines == [(2, True), (2, False)]
    assert r64(hpet, 0x020) == 0               # edge interrupts set no status


def test_level_interrupt_holds_the_line_until_the_status_bit_is_cleared(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 1, 1 << 1 | 1 << 2 | 2 << 9, 100)
    hpet.clock.now += 1 * US
    hpet.tick()
    assert hpet.lines == [(2, True)] and r64(hpet, 0x020) == 0b10
    hpet.mmio_write(0x020, 4, 0b01)            # another timer's bit: nothing
    assert hpet.lines == [(2, True)]
    hpet.mmio_write(0x020, 4, 0b10)
    assert hpet.lines == [(2, True), (2, False)] and r64(hpet, 0x020) == 0


def test_route_outside_the_capability_delivers_nothing(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 0, 1 << 2 | 5 << 9, 100)
    hpet.clock.now += 1 * US
    hpet.tick()
    assert hpet.lines == []


def test_periodic_with_setval_and_missed_periods(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 0, 1 << 2 | 1 << 3 | 1 << 6 | 2 << 9, 50_000)   # first match at 500 us
    hpet.mmio_write(0x108, 8, 20_000)                          # period 200 us
    assert r64(hpet, 0x108) == 50_000
    hpet.clock.now += 500 * US
    hpet.tick()
    assert r64(hpet, 0x108) == 70_000 and len(hpet.lines) == 2
    hpet.clock.now += 1000 * US                # five periods pass unseen: one interrupt
    hpet.tick()
    assert len(hpet.lines) == 4 and r64(hpet, 0x108) == 170_000


def test_a_tiny_period_is_rate_limited(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 0, 1 << 2 | 1 << 3 | 1 << 6 | 2 << 9, 1)
    hpet.mmio_write(0x108, 8, 1)               # every 10 ns
    hpet.clock.now += 1 * US
    deadline = hpet.tick()
    assert deadline >= hpet.clock.now + 100 * US


def test_32_bit_timer_compares_the_low_half(hpet):
    hpet.mmio_write(0x0F0, 8, 0x1_FFFF_FF00)
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 2, 1 << 2 | 1 << 8 | 2 << 9, 0x1_0000_0010)       # truncated to 0x10
    assert r64(hpet, 0x148) == 0x10
    hpet.clock.now += 3 * US                   # 0x1FFFFFF00 + 300 passes 0x2_0000_0010
    hpet.tick()
    assert hpet.lines == [(2, True), (2, False)]


def test_legacy_replacement_routes_timers_0_and_1_to_irq_0_and_8(hpet):
    hpet.mmio_write(0x010, 4, 0b11)
    assert hpet.lines == [(0, False), (8, False)]      # the PIT's and RTC's lines taken over
    del hpet.lines[:]
    arm(hpet, 0, 1 << 2, 100)
    arm(hpet, 1, 1 << 2, 200)
    hpet.clock.now += 3 * US
    hpet.tick()
    assert sorted(hpet.lines) == [(0, False), (0, True), (8, False), (8, True)]


def test_snapshot_round_trip_keeps_the_counter(hpet):
    hpet.mmio_write(0x010, 4, 1)
    arm(hpet, 2, 1 << 2 | 2 << 9, 10_000)
    hpet.clock.now += 20 * US
    state = hpet.snapshot_state()
    other = Hpet(lambda gsi, level: None, Clock(), timer=False)
    other.restore_state(state)
    assert r64(other, 0x0F0) == 2000 and r64(other, 0x148) == 10_000
    assert r64(other, 0x010) == 1


def test_acpi_table():
    t = tables.hpet()
    assert t[:4] == b"HPET" and struct.unpack_from("<I", t, 4)[0] == 56 and sum(t) % 256 == 0
    block_id, space, width, offset, access, base, number, tick, prot = struct.unpack_from(
        "<IBBBBQBHB", t, 36)
    assert block_id == 0x8086A201              # vendor 8086, LEG_RT, 64-bit, 3 timers, rev 1
    assert (space, base, number, prot) == (0, 0xFED00000, 0, 0)
    body = tables.dsdt_aml(1, hpet=True)
    assert b"HPET" in body and b"HPET" not in tables.dsdt_aml(1)


def test_legacy_replacement_takes_irq_8_from_the_rtc(hpet):
    hpet.rtc_line(True)
    assert hpet.lines == [(8, True)]
    hpet.mmio_write(0x010, 4, 0b10)            # LEG_RT_CNF: the RTC's line is muted
    assert hpet.lines[-1] == (8, False)
    hpet.rtc_line(False)
    hpet.rtc_line(True)
    assert hpet.lines[-1] == (8, False)        # nothing more reached IRQ 8
    hpet.mmio_write(0x010, 4, 0)               # back: the RTC's level as it is now
    assert hpet.lines[-1] == (8, True)
