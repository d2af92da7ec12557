"""The PC platform a Linux kernel looks for, checked from inside a tiny kernel booted both
as an ELF and through the bzImage boot protocol: the initrd, the ACPI tables (RSDP from the
zero page, checksums, MADT CPUs, \\_S5), the CMOS clock, PCI 00:00.0, and the two ways a
guest ends the machine through ACPI (PM1a S5 and the FADT reset register)."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import pytest

from helpers import guest, needs_kvm, one_line_error, pyvisor
from pyvisor import Machine
from pyvisor.acpi import parse_tables

pytestmark = [needs_kvm, pytest.mark.kvm]


@pytest.fixture
def initrd(tmp_path):
    path = tmp_path / "initrd.bin"
    path.write_bytes(bytes((i * 7 + 3) & 0xFF for i in range(10000)))
    return path


@pytest.mark.parametrize("image", ["elf", "bzImage"])
def test_platform_as_linux_finds_it(image, initrd):
    with Machine(kernel=guest("platform", image), mem="96M", cpus=3,
                 initrd=str(initrd)) as machine:
        outcome = machine.run(timeout=90)
        text = machine.console_text
        tables = parse_tables(machine.memory, machine.boot.rsdp)
    assert "FAIL" not in text, text
    assert (outcome.kind, outcome.status) == ("poweroff", 0), (outcome, text)
    gpa, size = machine.boot.image.initrd
    assert f"initrd: {gpa:#x} {size} sum={sum(initrd.read_bytes())}" in text
    assert gpa % 4096 == 0 and gpa + size <= 96 << 20
    assert "ACPI: RSDP ok, tables: FACP APIC" in text
    assert "MADT CPUs: 3  IOAPIC: 0xfec00000" in text
    assert "S5: SLP_TYP=5" in text
    assert "PCI 00:00.0: 8086:1237 class 060000" in text
    assert {"FACP", "APIC", "DSDT", "FACS"} <= set(tables)


def test_guest_clock_is_the_hosts():
    with Machine(kernel=guest("platform"), mem="32M") as machine:
        machine.run(timeout=60)
    found = re.search(r"RTC: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", machine.console_text)
    assert found, machine.console_text
    rtc = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs(rtc.timestamp() - time.time()) < 60


def test_reset_register_ends_the_run_with_status_0():
    result = pyvisor("run", guest("platform", "bzImage"), "--mem", "32M", "--console", "stdio",
                     "--append", "off=reset", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert b"resetting through the FADT reset register" in result.stdout


def test_on_reboot_restart_boots_again():
    result = pyvisor("run", guest("platform"), "--mem", "32M", "--console", "stdio",
                     "--append", "off=reset", "--on-reboot", "restart", "--timeout", "8",
                     timeout=90)
    assert result.returncode == 124, result.stderr
    assert result.stdout.count(b"resetting through the FADT reset register") >= 2


def test_initrd_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.touch()
    assert "empty" in one_line_error(pyvisor("run", guest("hello"), "--initrd", str(empty)))
    missing = one_line_error(pyvisor("run", guest("hello"), "--initrd", str(tmp_path / "no")))
    assert "No such file" in missing
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(40 << 20)
    line = one_line_error(pyvisor("run", guest("hello", "bzImage"), "--mem", "32M",
                                  "--initrd", str(big)))
    assert "initrd" in line and "big" in line


def test_pvh_needs_an_elf_with_the_note():
    line = one_line_error(pyvisor("run", guest("hello", "bzImage"), "--boot", "pvh"))
    assert "PVH" in line
    line = one_line_error(pyvisor("run", guest("hello"), "--boot", "pvh"))
    assert "XEN_ELFNOTE_PHYS32_ENTRY" in line
