"""Stock Linux with pyvisor's HPET and ACPI S3 in the nested test host: the Debian cloud
kernel takes the HPET as its clocksource when told to (clocksource=hpet, --hpet) and
keeps time by it, and it suspends to RAM (echo mem > /sys/power/state) with an RTC wake
alarm and resumes, both CPUs back. One nested host run serves both boots."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nestedhost import LinuxGuest, NestedHost, again_if_wedged

pytestmark = [pytest.mark.nested, pytest.mark.timeout(1500)]

INIT = r"""
case "$(cat /proc/cmdline)" in
*pv.test=hpet*)
    cs=/sys/devices/system/clocksource/clocksource0
    echo "CLOCKSOURCE $(cat $cs/current_clocksource) AVAILABLE $(cat $cs/available_clocksource)"
    rtc=/sys/class/rtc/rtc0/since_epoch
    echo "TIME-A $(cut -d' ' -f1 /proc/uptime) $(cat $rtc)"
    sleep 3
    echo "TIME-B $(cut -d' ' -f1 /proc/uptime) $(cat $rtc)"
    ;;
*pv.test=s3*)
    echo "SLEEP-STATES $(cat /sys/power/state) MEM-SLEEP $(cat /sys/power/mem_sleep)"
    echo 0 > /sys/class/rtc/rtc0/wakealarm
    echo +4 > /sys/class/rtc/rtc0/wakealarm
    echo "SUSPENDING $(date +%s)"
    echo mem > /sys/power/state
    echo "RESUMED status=$? $(date +%s) cpus=$(cat /sys/devices/system/cpu/online)"
    ;;
esac
poweroff -f
"""

QUIET = "console=ttyS0 panic=-1 quiet"
BOOTS = {
    "hpet": ("--cpus 1 --mem 256M --hpet", f"{QUIET} clocksource=hpet pv.test=hpet"),
    "s3": ("--cpus 2 --mem 256M", f"{QUIET} no_console_suspend pv.test=s3"),
}


@pytest.fixture(scope="module")
def outputs(nested_host: NestedHost, guest_kernel: LinuxGuest, repo: Path,
            tmp_path_factory) -> dict[str, str]:
    def session() -> dict[str, str]:
        initrd = guest_kernel.initramfs(tmp_path_factory.mktemp("sleep") / "initrd.gz", INIT)
        commands = [f"{repo}/.venv/bin/pyvisor run {guest_kernel.bzimage} --initrd {initrd} "
                    f"{options} --timeout 300 --console stdio --append {shlex.quote(append)}; "
                    f"echo pyvisor-status=$?" for options, append in BOOTS.values()]
        results = nested_host.run_many(commands, timeout=1500)
        return {name: r.output for name, r in zip(BOOTS, results)}
    return again_if_wedged(session)


def status(output: str) -> int:
    found = re.search(r"pyvisor-status=(\d+)", output)
    assert found, output[-3000:]
    return int(found.group(1))


def test_linux_keeps_time_by_the_hpet(outputs):
    out = outputs["hpet"]
    assert status(out) == 0, out[-3000:]
    assert re.search(r"CLOCKSOURCE hpet AVAILABLE .*hpet", out), out[-3000:]
    (up_a, rtc_a), (up_b, rtc_b) = (
        map(float, re.search(rf"TIME-{k} ([\d.]+) (\d+)", out).groups()) for k in "AB")
    # `sleep 3` by the HPET's time, against the CMOS RTC's seconds (the host's clock, read
    # without the clocksource)
    assert 2.9 <= up_b - up_a < 6, out[-3000:]
    assert abs((up_b - up_a) - (rtc_b - rtc_a)) <= 1.5, out[-3000:]


def test_linux_suspends_to_ram_and_the_rtc_alarm_resumes_it(outputs):
    out = outputs["s3"]
    assert status(out) == 0, out[-3000:]
    assert re.search(r"SLEEP-STATES .*\bmem\b", out), out[-3000:]
    suspended = int(re.search(r"SUSPENDING (\d+)", out).group(1))
    found = re.search(r"RESUMED status=(\d+) (\d+) cpus=(\S+)", out)
    assert found, out[-3000:]
    assert found.group(1) == "0" and found.group(3) == "0-1", out[-3000:]
    assert int(found.group(2)) - suspended >= 3, out[-3000:]
