import calendar
import threading

import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.legacy.rtc import (
    A_UIP, B_24H, B_AIE, B_DM_BINARY, B_PIE, B_SET, B_UIE, C_AF, C_IRQF, C_PF, C_UF, CENTURY,
    DAY_OF_MONTH, DAY_OF_WEEK, HOURS, HOURS_ALARM, MINUTES, MINUTES_ALARM, MONTH, PORT_COUNT,
    REG_A, REG_B, REG_C, REG_D, RTC_DATA_PORT, RTC_INDEX_PORT, SECONDS, SECONDS_ALARM,
    UIP_WINDOW, YEAR, CmosRtc, periodic_frequency)

# Thursday 2024-02-29 13:45:30 UTC, on a second boundary.
BASE = calendar.timegm((2024, 2, 29, 13, 45, 30))


class Rtc:
    """The RTC on a real PioBus with a fake clock and its IRQ pin recorded."""

    def __init__(self, t=BASE):
        self.t = float(t)
        self.irqs: list[bool] = []
        self.dev = CmosRtc(self.irqs.append, clock=lambda: self.t, timer=False)
        self.bus = PioBus()
        self.bus.register(RTC_INDEX_PORT, PORT_COUNT, self.dev, "rtc")

    def r(self, index):
        self.bus.write(RTC_INDEX_PORT, 1, index)
        return self.bus.read(RTC_DATA_PORT, 1)

    def w(self, index, value):
        self.bus.write(RTC_INDEX_PORT, 1, index)
        self.bus.write(RTC_DATA_PORT, 1, value)

    def time(self):
        return [self.r(i) for i in (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH,
                                    MONTH, YEAR, CENTURY)]

    def linux_get_time(self):
        """mc146818_get_time(): wait for UIP to clear, read, and retry if UIP rose."""
        for _ in range(3):
            assert not self.r(REG_A) & A_UIP
            values = self.time()
            if not self.r(REG_A) & A_UIP:
                return values
        raise AssertionError("UIP never settled")


@pytest.fixture
def rtc():
    return Rtc()


def test_power_on_registers(rtc):
    assert rtc.r(REG_A) == 0x26
    assert rtc.r(REG_B) == B_24H
    assert rtc.r(REG_C) == 0
    assert rtc.r(REG_D) == 0x80        # VRT: RAM and time are valid


def test_bcd_24_hour_time(rtc):
    assert rtc.time() == [0x30, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]


def test_binary_time(rtc):
    rtc.w(REG_B, B_24H | B_DM_BINARY)
    assert rtc.time() == [30, 45, 13, 5, 29, 2, 24, 20]


@pytest.mark.parametrize("hour, bcd, binary", [
    (0, 0x12, 12), (1, 0x01, 1), (11, 0x11, 11),
    (12, 0x92, 0x80 | 12), (13, 0x81, 0x81), (23, 0x91, 0x80 | 11)])
def test_12_hour_mode(hour, bcd, binary):
    rtc = Rtc(calendar.timegm((2024, 2, 29, hour, 0, 0)))
    rtc.w(REG_B, 0)
    assert rtc.r(HOURS) == bcd
    rtc.w(REG_B, B_DM_BINARY)
    assert rtc.r(HOURS) == binary


def test_time_follows_the_host_clock(rtc):
    rtc.t += 61.5
    assert rtc.time()[:3] == [0x31, 0x46, 0x13]
    rtc.t = calendar.timegm((2099, 12, 31, 23, 59, 59)) + 1
    assert rtc.time() == [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21]


def test_century_and_day_of_week_sunday():
    rtc = Rtc(calendar.timegm((1999, 8, 1, 0, 0, 0)))
    assert rtc.time()[3:] == [0x01, 0x01, 0x08, 0x99, 0x19]


def test_uip_is_high_only_just_before_each_second(rtc):
    rtc.t = BASE + 0.5
    assert not rtc.r(REG_A) & A_UIP
    rtc.t = BASE + 1 - UIP_WINDOW / 2
    assert rtc.r(REG_A) == A_UIP | 0x26
    rtc.t = BASE + 1
    assert not rtc.r(REG_A) & A_UIP
    rtc.t = BASE + 1 - UIP_WINDOW * 1.5
    assert not rtc.r(REG_A) & A_UIP
    assert rtc.linux_get_time()[0] == 0x30


def test_register_a_uip_is_read_only(rtc):
    rtc.t = BASE + 0.5
    rtc.w(REG_A, 0xAF)
    assert rtc.r(REG_A) == 0x2F


def test_set_mode_write_persists_as_an_offset(rtc):
    """What mc146818_set_time() does: SET on, write the registers, SET off."""
    rtc.w(REG_B, B_24H | B_SET)
    assert not rtc.r(REG_A) & A_UIP
    for index, value in ((SECONDS, 0x05), (MINUTES, 0x04), (HOURS, 0x03),
                         (DAY_OF_MONTH, 0x02), (MONTH, 0x01), (YEAR, 0x30), (CENTURY, 0x20)):
        rtc.w(index, value)
    rtc.t += 100                        # frozen while SET is on
    assert rtc.time()[:3] == [0x05, 0x04, 0x03]
    assert rtc.r(YEAR) == 0x30
    rtc.w(REG_B, B_24H)
    rtc.t += 3600 + 10.25               # and running with the host clock after
    assert rtc.time() == [0x15, 0x04, 0x04, 0x04, 0x02, 0x01, 0x30, 0x20]   # a Wednesday


def test_set_mode_in_binary_12_hour(rtc):
    rtc.w(REG_B, B_SET | B_DM_BINARY)
    rtc.w(HOURS, 0x80 | 12)             # 12 PM = noon
    rtc.w(MINUTES, 7)
    rtc.w(REG_B, B_24H | B_DM_BINARY)
    assert rtc.r(HOURS) == 12 and rtc.r(MINUTES) == 7


def test_write_outside_set_mode_keeps_running(rtc):
    rtc.t += 0.75
    rtc.w(MINUTES, 0x10)
    assert rtc.time()[:3] == [0x30, 0x10, 0x13]
    rtc.t += 0.25                       # the fraction of the second was kept
    assert rtc.r(SECONDS) == 0x31


def test_nonsense_time_does_not_raise(rtc):
    rtc.w(REG_B, B_SET | B_24H)
    rtc.w(MONTH, 0x13)
    rtc.w(DAY_OF_MONTH, 0x45)
    rtc.w(CENTURY, 0x00)
    rtc.w(YEAR, 0x00)
    rtc.w(REG_B, B_24H)
    assert rtc.r(YEAR) <= 0x99


def test_index_ignores_the_nmi_mask_bit(rtc):
    rtc.bus.write(RTC_INDEX_PORT, 1, 0x80 | SECONDS)
    assert rtc.bus.read(RTC_DATA_PORT, 1) == 0x30
    assert rtc.dev.nmi_masked
    rtc.bus.write(RTC_INDEX_PORT, 1, 0x80 | 0x0E)
    rtc.bus.write(RTC_DATA_PORT, 1, 0x5A)
    assert rtc.r(0x0E) == 0x5A
    assert not rtc.dev.nmi_masked
    assert rtc.bus.read(RTC_INDEX_PORT, 1) == 0xFF


def test_nvram(rtc):
    for index in range(0x0E, 0x80):
        if index != CENTURY:
            rtc.w(index, index ^ 0xA5)
    for index in range(0x0E, 0x80):
        if index != CENTURY:
            assert rtc.r(index) == index ^ 0xA5
    assert rtc.r(CENTURY) == 0x20


def test_wide_data_access_uses_the_low_byte(rtc):
    rtc.bus.write(RTC_INDEX_PORT, 1, 0x20)
    rtc.bus.write(RTC_DATA_PORT, 2, 0x1234)
    assert rtc.bus.read(RTC_DATA_PORT, 2) == 0x34


def test_c_and_d_are_read_only(rtc):
    rtc.w(REG_C, 0xFF)
    rtc.w(REG_D, 0x00)
    assert rtc.r(REG_C) == 0
    assert rtc.r(REG_D) == 0x80


def test_update_interrupt_and_clear_on_read(rtc):
    rtc.w(REG_B, B_24H | B_UIE)
    assert rtc.dev.tick() == BASE + 1
    rtc.t = BASE + 0.999
    rtc.dev.tick()
    assert rtc.irqs == []
    rtc.t = BASE + 1
    assert rtc.dev.tick() is None       # flag pending: nothing to wait for until C is read
    assert rtc.irqs == [True]
    assert rtc.r(REG_C) == C_IRQF | C_UF | C_PF   # PF too: flags need no enable
    assert rtc.irqs == [True, False]
    assert rtc.r(REG_C) == 0
    assert rtc.dev.tick() == BASE + 2


def test_flags_are_set_without_their_enables(rtc):
    rtc.t += 1
    assert rtc.r(REG_C) == C_UF | C_PF  # 1024 Hz periodic from the power-on rate
    assert rtc.irqs == []


def test_set_mode_stops_update_interrupts(rtc):
    rtc.w(REG_B, B_24H | B_UIE | B_SET)
    assert not rtc.r(REG_B) & B_UIE     # SET clears UIE
    rtc.w(REG_A, 0x20)                  # no periodic rate
    rtc.t += 5
    assert rtc.r(REG_C) == 0


def test_enabling_an_interrupt_with_its_flag_set_raises_at_once(rtc):
    rtc.t += 1
    rtc.dev.tick()
    rtc.w(REG_B, B_24H | B_UIE)
    assert rtc.irqs == [True]
    rtc.w(REG_B, B_24H)                 # IRQF follows the enables
    assert rtc.irqs == [True, False]
    assert rtc.r(REG_C) == C_UF | C_PF


def test_alarm(rtc):
    rtc.w(REG_A, 0x20)
    rtc.w(SECONDS_ALARM, 0x35)
    rtc.w(MINUTES_ALARM, 0x45)
    rtc.w(HOURS_ALARM, 0x13)
    rtc.w(REG_B, B_24H | B_AIE)
    assert rtc.dev.tick() == BASE + 1
    for s in range(1, 5):
        rtc.t = BASE + s
        rtc.dev.tick()
    assert rtc.irqs == []
    rtc.t = BASE + 5
    rtc.dev.tick()
    assert rtc.irqs == [True]
    assert rtc.r(REG_C) == C_IRQF | C_AF | C_UF


def test_alarm_dont_care_fires_every_minute(rtc):
    rtc.w(REG_A, 0x20)
    rtc.w(SECONDS_ALARM, 0x00)
    rtc.w(MINUTES_ALARM, 0xC0)
    rtc.w(HOURS_ALARM, 0xFF)
    rtc.w(REG_B, B_24H | B_AIE)
    fired = []
    for s in range(1, 200):
        rtc.t = BASE + s
        rtc.dev.tick()
        if rtc.r(REG_C) & C_AF:
            fired.append(s)
    assert fired == [30, 90, 150]


def test_alarm_in_12_hour_mode_compares_the_encoded_hour():
    rtc = Rtc(calendar.timegm((2024, 2, 29, 13, 0, 59)))
    rtc.w(REG_B, 0)
    rtc.w(SECONDS_ALARM, 0x00)
    rtc.w(MINUTES_ALARM, 0x01)
    rtc.w(HOURS_ALARM, 0x81)            # 1 PM
    rtc.t += 1
    assert rtc.r(REG_C) & C_AF


@pytest.mark.parametrize("rate, hz", [(0, 0), (1, 256), (2, 128), (3, 8192), (6, 1024),
                                      (15, 2)])
def test_periodic_rates(rate, hz):
    assert periodic_frequency(rate) == hz


def test_periodic_interrupt(rtc):
    rtc.w(REG_A, 0x2F)                  # 2 Hz
    rtc.w(REG_B, B_24H | B_PIE)
    assert rtc.dev.tick() == BASE + 0.5
    rtc.t = BASE + 0.4
    rtc.dev.tick()
    assert rtc.irqs == []
    rtc.t = BASE + 0.5
    rtc.dev.tick()
    assert rtc.irqs == [True]
    assert rtc.r(REG_C) == C_IRQF | C_PF
    assert rtc.dev.tick() == BASE + 1.0
    rtc.w(REG_A, 0x26)                  # 1024 Hz
    assert rtc.dev.tick() == pytest.approx(BASE + 0.5 + 1 / 1024)
    rtc.t += 1 / 1024
    rtc.dev.tick()
    assert rtc.irqs == [True, False, True]


def test_no_deadline_without_enabled_interrupts(rtc):
    assert rtc.dev.tick() is None
    rtc.w(REG_B, B_24H | B_PIE)
    rtc.w(REG_A, 0x20)                  # PIE with rate 0 never fires
    assert rtc.dev.tick() is None


def test_timer_thread_raises_the_irq():
    raised = threading.Event()
    dev = CmosRtc(lambda level: level and raised.set())
    try:
        dev.pio_write(0, 1, REG_B)
        dev.pio_write(1, 1, B_24H | B_PIE)   # 1024 Hz from the power-on rate
        assert raised.wait(2)
        dev.pio_write(0, 1, REG_C)
        assert dev.pio_read(1, 1) & (C_IRQF | C_PF) == C_IRQF | C_PF
    finally:
        dev.close()
    assert dev._thread is None


def test_timer_thread_only_runs_while_needed():
    dev = CmosRtc(lambda level: None)
    assert dev._thread is None
    dev.pio_write(0, 1, REG_B)
    dev.pio_write(1, 1, B_24H | B_UIE)
    thread = dev._thread
    assert thread is not None
    dev.pio_write(1, 1, B_24H)
    thread.join(2)
    assert not thread.is_alive()
    dev.close()
