import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.legacy.acpi_pm import (GBL_EN, PM1_CNT, PM1_EN, PM1_STS, PM_BASE,
                                            PM_LENGTH, PM_TIMER_HZ, PM_TMR, PWRBTN_EN,
                                            PWRBTN_STS, RESET, RESET_VALUE, RTC_EN, SCI_EN,
                                            SLP_EN, SLP_TYP_SHIFT, SLPBTN_EN, TMR_EN, TMR_STS,
                                            AcpiPm)


class FakeClock:
    def __init__(self, ns: int = 10**12) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


class Harness:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.sci: list[bool] = []
        self.clock = FakeClock()
        self.pm = AcpiPm(lambda: self.events.append("poweroff"),
                         lambda: self.events.append("reset"),
                         self.sci.append, clock=self.clock)
        self.bus = PioBus()
        self.bus.register(PM_BASE, PM_LENGTH, self.pm, "acpi pm")

    def inw(self, off: int) -> int:
        return self.bus.read(PM_BASE + off, 2)

    def outw(self, off: int, value: int) -> None:
        self.bus.write(PM_BASE + off, 2, value)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_block_layout_matches_the_documented_ports():
    assert (PM_BASE, PM_LENGTH) == (0x600, 0x10)
    assert (PM1_STS, PM1_EN, PM1_CNT, PM_TMR, RESET) == (0, 2, 4, 8, 12)
    forbidden = {0x60, 0x64, 0x70, 0x71, 0x80, 0xE9, 0xF4, *range(0xCF8, 0xD00),
                 *range(0x3F8, 0x400)}
    assert not forbidden & set(range(PM_BASE, PM_BASE + PM_LENGTH))


def test_power_on_state(h):
    assert h.inw(PM1_STS) == 0
    assert h.inw(PM1_EN) == 0
    assert h.inw(PM1_CNT) == SCI_EN            # always in ACPI mode
    assert h.events == [] and h.sci == []


def test_sci_en_cannot_be_cleared(h):
    h.outw(PM1_CNT, 0)
    assert h.inw(PM1_CNT) & SCI_EN


def test_s5_powers_off_like_acpica(h):
    # ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
    h.outw(PM1_CNT, SCI_EN | 5 << SLP_TYP_SHIFT)
    assert h.events == []
    assert h.inw(PM1_CNT) == SCI_EN | 5 << SLP_TYP_SHIFT
    h.outw(PM1_CNT, SCI_EN | 5 << SLP_TYP_SHIFT | SLP_EN)
    assert h.events == ["poweroff"]
    assert not h.inw(PM1_CNT) & SLP_EN          # SLP_EN is write-only


def test_s5_with_a_32bit_write(h):
    h.bus.write(PM_BASE + PM1_CNT, 4, 5 << SLP_TYP_SHIFT | SLP_EN)
    assert h.events == ["poweroff"]


def test_s5_with_byte_writes(h):
    value = SCI_EN | 5 << SLP_TYP_SHIFT | SLP_EN
    h.bus.write(PM_BASE + PM1_CNT, 1, value & 0xFF)
    h.bus.write(PM_BASE + PM1_CNT + 1, 1, value >> 8)
    assert h.events == ["poweroff"]


@pytest.mark.parametrize("slp_typ", [0, 1, 3, 4, 6, 7])
def test_other_sleep_types_are_ignored(h, slp_typ, caplog):
    h.outw(PM1_CNT, slp_typ << SLP_TYP_SHIFT | SLP_EN)
    assert h.events == []
    assert "not supported" in caplog.text


def test_slp_typ_without_slp_en_does_nothing(h):
    h.outw(PM1_CNT, 5 << SLP_TYP_SHIFT)
    assert h.events == []


def test_reset_register(h):
    h.bus.write(PM_BASE + RESET, 1, RESET_VALUE)
    assert h.events == ["reset"]
    h.bus.write(PM_BASE + RESET, 1, RESET_VALUE ^ 0xFF)
    assert h.events == ["reset"]
    assert h.bus.read(PM_BASE + RESET, 1) == 0


def test_power_button_status_without_enable(h):
    h.pm.press_power_button()
    assert h.inw(PM1_STS) & PWRBTN_STS
    assert h.sci == []                           # PWRBTN_EN clear: no interrupt


def test_power_button_raises_sci_until_cleared(h):
    h.outw(PM1_EN, PWRBTN_EN)
    assert h.inw(PM1_EN) == PWRBTN_EN
    h.pm.press_power_button()
    assert h.sci == [True] and h.pm.sci_level
    h.outw(PM1_STS, 0)                           # writing 0 clears nothing
    assert h.inw(PM1_STS) & PWRBTN_STS and h.sci == [True]
    h.outw(PM1_STS, PWRBTN_STS)                  # write 1 to clear
    assert not h.inw(PM1_STS) & PWRBTN_STS
    assert h.sci == [True, False]


def test_enabling_a_pending_status_raises_sci(h):
    h.pm.press_power_button()
    h.outw(PM1_EN, PWRBTN_EN)
    assert h.sci == [True]
    h.outw(PM1_EN, 0)
    assert h.sci == [True, False]


def test_status_w1c_through_a_32bit_event_block_write(h):
    # A dword write at PM1_STS covers status (low half) and enable (high half).
    h.pm.press_power_button()
    h.bus.write(PM_BASE + PM1_STS, 4, PWRBTN_EN << 16 | PWRBTN_STS)
    assert h.inw(PM1_STS) & PWRBTN_STS == 0
    assert h.inw(PM1_EN) == PWRBTN_EN
    assert h.bus.read(PM_BASE + PM1_STS, 4) == PWRBTN_EN << 16


def test_defined_enables_stick_reserved_ones_do_not(h):
    # ACPICA checks that GBL_EN (global lock) and RTC_EN stick; they must not raise the SCI.
    h.outw(PM1_EN, 0xFFFF)
    assert h.inw(PM1_EN) == TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | 1 << 14
    assert h.sci == []
    h.clock.ns += (1 << 23) * 10**9 // PM_TIMER_HZ + 1000     # TMR_STS sets...
    assert h.inw(PM1_STS) & TMR_STS
    assert h.sci == []                                          # ...but never interrupts


def test_no_sci_callback_is_fine():
    pm = AcpiPm(lambda: None, lambda: None)
    pm.pio_write(PM1_EN, 2, PWRBTN_EN)
    pm.press_power_button()
    assert pm.sci_level


def test_pm_timer_rate(h):
    t0 = h.bus.read(PM_BASE + PM_TMR, 4)
    h.clock.ns += 1_000_000                      # 1 ms
    t1 = h.bus.read(PM_BASE + PM_TMR, 4)
    assert t1 - t0 in (PM_TIMER_HZ // 1000, PM_TIMER_HZ // 1000 + 1)


def test_pm_timer_is_24_bits_and_wraps(h):
    period_ns = (1 << 24) * 10**9 // PM_TIMER_HZ    # ~4.69 s
    seen = []
    for _ in range(8):
        h.clock.ns += period_ns // 3
        value = h.bus.read(PM_BASE + PM_TMR, 4)
        assert 0 <= value < 1 << 24
        seen.append(value)
    wraps = sum(1 for a, b in zip(seen, seen[1:]) if b < a)
    assert wraps == 2                                # 8/3 periods: two wraps
    # Across a wrap the difference modulo 2**24 is still the elapsed ticks.
    assert (seen[3] - seen[2]) % (1 << 24) == pytest.approx((1 << 24) / 3, abs=2)


def test_pm_timer_monotonic_with_the_real_clock():
    pm = AcpiPm(lambda: None, lambda: None)
    values = [pm.pio_read(PM_TMR, 4) for _ in range(200)]
    assert all(b >= a for a, b in zip(values, values[1:]))   # no wrap within microseconds


def test_pm_timer_byte_reads_compose(h):
    h.clock.ns += 123_456_789
    whole = h.bus.read(PM_BASE + PM_TMR, 4)
    lo = h.bus.read(PM_BASE + PM_TMR, 2)
    hi = h.bus.read(PM_BASE + PM_TMR + 2, 2)
    assert hi << 16 | lo == whole
    assert h.bus.read(PM_BASE + PM_TMR + 3, 1) == 0


def test_pm_timer_is_read_only(h):
    before = h.bus.read(PM_BASE + PM_TMR, 4)
    h.bus.write(PM_BASE + PM_TMR, 4, 0)
    assert h.bus.read(PM_BASE + PM_TMR, 4) == before


def test_tmr_sts_on_bit23_toggle(h):
    assert not h.inw(PM1_STS) & TMR_STS
    h.clock.ns += (1 << 23) * 10**9 // PM_TIMER_HZ + 1000
    assert h.inw(PM1_STS) & TMR_STS
    h.outw(PM1_STS, TMR_STS)
    assert not h.inw(PM1_STS) & TMR_STS
    assert h.sci == []                           # TMR_EN is clear anyway


def test_reserved_bytes_read_zero_and_ignore_writes(h):
    h.bus.write(PM_BASE + 6, 2, 0xFFFF)
    h.bus.write(PM_BASE + 13, 2, 0xFFFF)
    assert h.bus.read(PM_BASE + 6, 2) == 0
    assert h.bus.read(PM_BASE + 13, 2) == 0
    assert h.events == []
