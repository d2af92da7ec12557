import shutil
import struct
import subprocess

import pytest

from pyvisor.acpi import aml, tables
from pyvisor.acpi.platform import pci_intx_gsi
from pyvisor.devices.legacy.acpi_pm import (PM_BASE, RESET_VALUE, SLP_TYP_SHIFT, SLP_EN,
                                            AcpiPm)

DSDT_ADDR = 0xE1230
FACS_ADDR = 0xE0080


def u8(t, off):
    return t[off]


def u16(t, off):
    return struct.unpack_from("<H", t, off)[0]


def u32(t, off):
    return struct.unpack_from("<I", t, off)[0]


def u64(t, off):
    return struct.unpack_from("<Q", t, off)[0]


def gas(t, off):
    """(space, bit width, bit offset, access size, address)"""
    return struct.unpack_from("<BBBBQ", t, off)


def assert_valid_sdt(t, signature, revision):
    assert t[:4] == signature
    assert u32(t, 4) == len(t)
    assert t[8] == revision
    assert sum(t) & 0xFF == 0
    assert t[10:16] == b"PYVISR"


def madt_entries(t):
    entries, off = [], 44
    while off < len(t):
        kind, length = t[off], t[off + 1]
        assert length >= 2
        entries.append((kind, t[off:off + length]))
        off += length
    assert off == len(t)
    return entries


# --- generic pieces ---------------------------------------------------------------------------

def test_checksum():
    assert tables.checksum(b"\x01\x02") == 0xFD
    assert tables.checksum(b"") == 0


def test_rsdp():
    r = tables.rsdp(0x123456789A)
    assert len(r) == 36
    assert r[:8] == b"RSD PTR "
    assert sum(r[:20]) & 0xFF == 0
    assert sum(r) & 0xFF == 0
    assert r[15] == 2                     # revision
    assert u32(r, 16) == 0                # no RSDT
    assert u32(r, 20) == 36
    assert u64(r, 24) == 0x123456789A


def test_xsdt():
    t = tables.xsdt([0xE0100, 0x1_0000_0000])
    assert_valid_sdt(t, b"XSDT", 1)
    assert len(t) == 36 + 16
    assert (u64(t, 36), u64(t, 44)) == (0xE0100, 0x1_0000_0000)


def test_facs():
    f = tables.facs()
    assert len(f) == 64
    assert f[:4] == b"FACS" and u32(f, 4) == 64
    assert f[32] == 2                     # version
    assert u32(f, 16) == 0                # global lock free


# --- FADT ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fadt():
    return tables.fadt(DSDT_ADDR, FACS_ADDR)


def test_fadt_header(fadt):
    assert_valid_sdt(fadt, b"FACP", 6)
    assert len(fadt) == 276
    assert u8(fadt, 131) == 0             # FADT minor version: ACPI 6.0


def test_fadt_field_offsets(fadt):
    assert u32(fadt, 36) == FACS_ADDR
    assert u32(fadt, 40) == DSDT_ADDR
    assert u64(fadt, 140) == DSDT_ADDR    # X_DSDT agrees with DSDT
    assert u64(fadt, 132) == 0            # X_FIRMWARE_CTRL: 0 when FIRMWARE_CTRL is used
    assert u16(fadt, 46) == 9             # SCI_INT
    assert u32(fadt, 48) == 0             # SMI_CMD: always in ACPI mode
    assert (u8(fadt, 52), u8(fadt, 53)) == (0, 0)
    assert u32(fadt, 56) == 0x600         # PM1a_EVT_BLK
    assert u32(fadt, 60) == 0             # no PM1b
    assert u32(fadt, 64) == 0x604         # PM1a_CNT_BLK
    assert u32(fadt, 76) == 0x608         # PM_TMR_BLK
    assert u32(fadt, 80) == 0             # no GPE0 block
    assert (u8(fadt, 88), u8(fadt, 89), u8(fadt, 91), u8(fadt, 92)) == (4, 2, 4, 0)
    assert u16(fadt, 96) > 100 and u16(fadt, 98) > 1000    # no C2/C3
    assert u8(fadt, 108) == 0x32          # CENTURY: the RTC's CMOS century byte


def test_fadt_flags(fadt):
    flags = u32(fadt, 112)
    assert flags & tables.FADT_F_WBINVD
    assert flags & tables.FADT_F_PROC_C1
    assert flags & tables.FADT_F_RESET_REG_SUP
    assert flags & tables.FADT_F_SLP_BUTTON          # no fixed sleep button
    assert not flags & tables.FADT_F_PWR_BUTTON      # fixed power button (AcpiPm has one)
    assert not flags & tables.FADT_F_HW_REDUCED_ACPI
    assert not flags & (1 << 8)                      # TMR_VAL_EXT: the timer is 24-bit
    boot = u16(fadt, 109)
    assert boot & tables.BOOT_ARCH_8042 and boot & tables.BOOT_ARCH_LEGACY_DEVICES
    assert not boot & tables.BOOT_ARCH_CMOS_RTC_NOT_PRESENT


def test_fadt_reset_register(fadt):
    assert gas(fadt, 116) == (tables.GAS_SYSTEM_IO, 8, 0, tables.ACCESS_BYTE, PM_BASE + 0xC)
    assert u8(fadt, 128) == RESET_VALUE
    assert gas(fadt, 116)[4] != 0xCF9


def test_fadt_x_blocks_match_the_legacy_ones(fadt):
    for x_off, off, len_off in ((148, 56, 88), (172, 64, 89), (208, 76, 91)):
        space, width, bit_off, _access, addr = gas(fadt, x_off)
        assert space == tables.GAS_SYSTEM_IO
        assert addr == u32(fadt, off)
        assert width == 8 * u8(fadt, len_off)
        assert bit_off == 0
    assert gas(fadt, 160)[4] == gas(fadt, 184)[4] == gas(fadt, 220)[4] == 0   # PM1b, GPE0


def test_fadt_drives_the_pm_device(fadt):
    """What a guest does with the FADT and _S5 reaches AcpiPm's callbacks."""
    events = []
    pm = AcpiPm(lambda: events.append("off"), lambda: events.append("reset"))
    cnt = u32(fadt, 64) - PM_BASE
    pm.pio_write(cnt, 2, 5 << SLP_TYP_SHIFT | SLP_EN)
    space, _, _, _, reset = gas(fadt, 116)
    pm.pio_write(reset - PM_BASE, 1, u8(fadt, 128))
    assert events == ["off", "reset"]


# --- MADT ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_madt_per_cpu_count(cpus):
    t = tables.madt(cpus)
    assert_valid_sdt(t, b"APIC", 4)
    assert u32(t, 36) == 0xFEE00000
    assert u32(t, 40) & 1                          # PCAT_COMPAT
    entries = madt_entries(t)
    lapics = [e for k, e in entries if k == 0]
    assert [(e[2], e[3], u32(e, 4)) for e in lapics] == [(i, i, 1) for i in range(cpus)]
    ioapics = [e for k, e in entries if k == 1]
    assert len(ioapics) == 1
    ioapic = ioapics[0]
    assert ioapic[2] == cpus                       # IOAPIC id after the LAPIC ids
    assert (u32(ioapic, 4), u32(ioapic, 8)) == (0xFEC00000, 0)
    overrides = {e[3]: (u32(e, 4), u16(e, 8)) for k, e in entries if k == 2}
    assert overrides == {9: (9, 0x000D)}          # SCI: level, active-high
    nmis = [e for k, e in entries if k == 4]
    assert [(e[2], e[5]) for e in nmis] == [(0xFF, 1)]   # LINT1 on all CPUs


def test_madt_irq0_override_on_request():
    entries = madt_entries(tables.madt(2, irq0_override=True))
    overrides = {e[3]: (u32(e, 4), u16(e, 8)) for k, e in entries if k == 2}
    assert overrides == {0: (2, 0), 9: (9, 0x000D)}


@pytest.mark.parametrize("cpus", [0, 255])
def test_madt_cpu_limits(cpus):
    with pytest.raises(ValueError):
        tables.madt(cpus)


def test_madt_max_cpus():
    entries = madt_entries(tables.madt(254))
    assert sum(1 for k, _ in entries if k == 0) == 254


# --- DSDT ---------------------------------------------------------------------------------------

def test_dsdt_header_and_s5():
    t = tables.dsdt(2)
    assert_valid_sdt(t, b"DSDT", 2)
    assert t[36:] == tables.dsdt_aml(2)
    assert b"\x08_S5_\x12\x08\x04\x0A\x05\x0A\x05\x00\x00" in t


def test_dsdt_pci_host_bridge():
    body = tables.dsdt_aml(1)
    assert b"PCI0" in body
    assert aml.name("_HID", aml.eisaid("PNP0A03")) in body
    for n in ("_UID", "_BBN", "_SEG"):
        assert aml.name(n, aml.integer(0)) in body
    assert b"_ADR" not in body                     # _HID xor _ADR
    assert aml.word_bus_number(0, 0xFF) in body
    assert aml.word_io(0, 0xCF7) in body and aml.word_io(0xD00, 0xFFFF) in body
    assert aml.io_port(0xCF8, 0xCF8, 1, 8) in body
    assert aml.dword_memory(0xC0000000, 0xFBFFFFFF) in body


def test_dsdt_prt_covers_slots_1_to_31():
    body = tables.dsdt_aml(1)
    for slot in range(1, 32):
        for pin in range(4):
            entry = aml.package(aml.integer(slot << 16 | 0xFFFF), aml.integer(pin),
                                aml.integer(0), aml.integer(pci_intx_gsi(slot, pin)))
            assert entry in body
    assert aml.integer(0xFFFF) + aml.integer(0) not in body     # no entry for slot 0


def test_dsdt_rtc_and_processors():
    body = tables.dsdt_aml(3)
    assert aml.name("_HID", aml.eisaid("PNP0B00")) in body
    assert aml.resource_template(aml.io_port(0x70, 0x70, 1, 2), aml.irq_noflags(8)) in body
    for i in range(3):
        assert aml.device(f"C{i:03X}", aml.name("_HID", aml.string("ACPI0007")),
                          aml.name("_UID", aml.integer(i))) in body
    assert b"C003" not in body


# --- cross-check with ACPICA's iasl (apt package acpica-tools) ------------------------------------

IASL = shutil.which("iasl")
needs_iasl = pytest.mark.skipif(IASL is None, reason="iasl not installed (apt: acpica-tools)")


def _iasl(cwd, *args):
    return subprocess.run([IASL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_iasl
@pytest.mark.parametrize("cpus", [1, 4])
def test_iasl_dsdt_round_trip(tmp_path, cpus):
    """iasl disassembles our DSDT and, compiled back without optimisations, yields the
    same AML: every opcode and length we emit means what we think it means."""
    original = tables.dsdt(cpus)
    (tmp_path / "dsdt.aml").write_bytes(original)
    dis = _iasl(tmp_path, "-d", "dsdt.aml")
    assert dis.returncode == 0, dis.stdout + dis.stderr
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert "Name (_S5, Package (0x04)" in dsl
    assert 'EisaId ("PNP0A03")' in dsl and 'EisaId ("PNP0B00")' in dsl
    comp = _iasl(tmp_path, "-oa", "-p", "rebuilt", "dsdt.dsl")
    assert comp.returncode == 0, comp.stdout + comp.stderr
    assert "0 Errors, 0 Warnings" in comp.stdout
    assert (tmp_path / "rebuilt.aml").read_bytes()[36:] == original[36:]


@needs_iasl
@pytest.mark.parametrize("name,table", [
    ("facp", lambda: tables.fadt(DSDT_ADDR, FACS_ADDR)),
    ("apic", lambda: tables.madt(4, irq0_override=True)),
    ("xsdt", lambda: tables.xsdt([0xE00C0, 0xE01E0])),
])
def test_iasl_data_table_round_trip(tmp_path, name, table):
    original = table()
    (tmp_path / f"{name}.dat").write_bytes(original)
    dis = _iasl(tmp_path, "-d", f"{name}.dat")
    assert dis.returncode == 0, dis.stdout + dis.stderr
    comp = _iasl(tmp_path, "-p", "rebuilt", f"{name}.dsl")
    assert comp.returncode == 0, comp.stdout + comp.stderr
    assert "0 Errors, 0 Warnings" in comp.stdout
    assert (tmp_path / "rebuilt.aml").read_bytes()[36:] == original[36:]
