"""ACPI S3 with a tiny kernel: the guest suspends through \\_S3 and PM1a_CNT, the machine
sleeps until the RTC alarm the guest set (or the power button), and the bootstrap
processor comes back in real mode at the FACS waking vector with the other vCPUs waiting
for a SIPI, as after INIT."""
import time

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine

pytestmark = [needs_kvm, pytest.mark.kvm]

KVM_MP_STATE_INIT_RECEIVED = 2        # the KVM API's value
WAK_STS = 1 << 15
RESUMED = "s3: resumed in real mode at the waking vector"


def wait_for(m, text, timeout=20.0):
    deadline = time.monotonic() + timeout
    while text not in m.console_text:
        assert time.monotonic() < deadline and m.state != "stopped", m.console_text
        time.sleep(0.02)
    return time.monotonic()


def check_resumed_state(m):
    m.pause()
    bsp = m.vcpus[0].sregs
    assert (bsp.cs.selector, bsp.cs.base) == (0x1800, 0x18000)
    assert bsp.cr0 & 0x80000001 == 0 and bsp.efer == 0         # real mode, no paging
    ap = m.vcpus[1]
    assert ap.mp_state == KVM_MP_STATE_INIT_RECEIVED
    assert ap.sregs.cr0 == 0x60000010 and ap.sregs.efer == 0   # the state after INIT
    assert m.acpi_pm.pio_read(0, 2) & WAK_STS
    assert not m.sleep.asleep


def test_rtc_alarm_wakes_the_guest_at_its_waking_vector():
    with Machine(kernel=guest("s3"), mem="32M", cpus=2) as m:
        m.start()
        suspended = wait_for(m, "s3: suspending")
        resumed = wait_for(m, RESUMED)
        # The alarm was set for the next second but one: 1 to 2 s later, and not before.
        assert 0.9 < resumed - suspended < 3.5, m.console_text
        assert "s3 slp_typ=1 " in m.console_text
        check_resumed_state(m)


def test_power_button_wakes_the_guest():
    with Machine(kernel=guest("s3"), mem="32M", cpus=2, cmdline="wake=button") as m:
        m.start()
        wait_for(m, "s3: suspending")
        time.sleep(1.0)
        assert m.sleep.asleep and RESUMED not in m.console_text
        m.acpi_pm.press_power_button()
        wait_for(m, RESUMED, timeout=5)
        check_resumed_state(m)


def test_no_waking_vector_reboots():
    with Machine(kernel=guest("s3"), mem="32M", cmdline="novector=1") as m:
        outcome = m.run(timeout=20)
        assert outcome.kind == "reset", outcome
        assert RESUMED not in m.console_text
