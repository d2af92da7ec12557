"""The HPET behind --hpet, seen by a tiny kernel: found through the ACPI HPET table, its
counter measured against the ACPI PM timer, a one-shot comparator interrupt on IOAPIC pin
2 and a periodic legacy-replacement interrupt on IRQ 0."""
import re

import pytest

from helpers import guest, needs_kvm, pyvisor

pytestmark = [needs_kvm, pytest.mark.kvm]

PM_HZ = 3_579_545


def test_hpet_counter_and_comparators():
    result = pyvisor("run", guest("hpet"), "--mem", "32M", "--hpet", "--console", "stdio")
    out = result.stdout.decode().replace("\r\n", "\n")
    assert result.returncode == 0, result.stderr.decode() + out
    assert "acpi hpet base=0xfed00000 block_id=0x8086a201\n" in out, out
    assert "caps period_fs=10000000 timers=3 legacy=1 route_cap=0x4\n" in out
    ticks, inner, outer = map(int, re.search(
        r"counter hpet_ticks=(\d+) pm_inner=(\d+) pm_outer=(\d+)", out).groups())
    # The counter advances at its stated period (10 ns) by the PM timer's clock: the time
    # between its two reads lies between the PM intervals that bracket them (0.1% slack for
    # the PM timer's own rounding).
    assert inner / PM_HZ * 0.999 <= ticks * 10e-9 <= outer / PM_HZ * 1.001, out
    assert inner >= PM_HZ // 20
    # Not before the comparator, and not a wrap of the counter later: within 1 s however
    # busy the host (an interrupt waits for its vCPU thread to be scheduled).
    fired, late = map(int, re.search(r"comparator fired=(\d+) late=(-?\d+)", out).groups())
    assert fired == 1 and 0 <= late < 100_000_000, out
    # Periodic: the comparator moves by whole 5 ms periods, one per interrupt unless some
    # passed unseen; the three interrupts come at least a period apart.
    irqs, span, step = map(int, re.search(
        r"legacy periodic irqs=(\d+) span=(\d+) cmp_step=(\d+)", out).groups())
    assert irqs == 3 and step % 500_000 == 0 and step >= 1_000_000, out
    assert 500_000 <= span < 100_000_000, out
    assert "hpet: done" in out


def test_no_hpet_without_the_option():
    result = pyvisor("run", guest("hpet"), "--mem", "32M", "--console", "stdio")
    assert result.returncode == 3
    assert "FAIL: no HPET table" in result.stdout.decode()
