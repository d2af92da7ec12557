import struct

import pytest

from pyvisor._native import lib
from pyvisor.acpi import (ACPI_AREA_END, ACPI_AREA_START, RSDP_ADDR, AcpiError, build_acpi,
                          layout_tables, parse_tables)
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(4 * MIB)) as m:
        yield m


def test_rsdp_address():
    assert RSDP_ADDR == 0xE0000
    assert (ACPI_AREA_START, ACPI_AREA_END) == (0xE0000, 0x100000)


def test_acpi_area_is_reserved_in_e820():
    entries = MemoryLayout(64 * MIB).e820()
    assert any(e.type == lib.E820_RESERVED and e.addr <= ACPI_AREA_START
               and ACPI_AREA_END <= e.addr + e.size for e in entries)
    assert not any(e.type == lib.E820_RAM and e.addr < ACPI_AREA_END
                   and ACPI_AREA_START < e.addr + e.size for e in entries)


@pytest.mark.parametrize("cpus", [1, 2, 4, 64])
def test_build_and_parse(mem, cpus):
    rsdp = build_acpi(mem, cpus)
    assert rsdp == RSDP_ADDR
    found = parse_tables(mem, rsdp)
    assert set(found) == {"RSDP", "XSDT", "FACP", "APIC", "DSDT", "FACS"}
    lapics = 0
    madt = found["APIC"]
    off = 44
    while off < len(madt):
        lapics += madt[off] == 0
        off += madt[off + 1]
    assert lapics == cpus


def test_tables_lie_in_the_bios_area_aligned_and_disjoint():
    placed = layout_tables(8)
    spans = sorted((addr, addr + len(data)) for addr, data in placed)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start
    assert spans[0][0] == RSDP_ADDR and spans[-1][1] <= ACPI_AREA_END
    for addr, data in placed:
        assert addr % 16 == 0
        if data[:4] == b"FACS":
            assert addr % 64 == 0


def test_build_zeroes_the_rest_of_the_area(mem):
    mem.fill(ACPI_AREA_START, ACPI_AREA_END - ACPI_AREA_START, 0xAA)
    build_acpi(mem, 1)
    assert mem.read(ACPI_AREA_END - 16, 16) == bytes(16)


def test_linux_style_legacy_scan_finds_the_rsdp(mem):
    build_acpi(mem, 2)
    area = mem.read(0xE0000, 0x20000)
    hits = [off for off in range(0, len(area), 16)
            if area[off:off + 8] == b"RSD PTR " and sum(area[off:off + 20]) & 0xFF == 0]
    assert [0xE0000 + off for off in hits] == [RSDP_ADDR]


def test_rsdp_elsewhere(mem):
    assert build_acpi(mem, 1, rsdp_addr=0xF0000) == 0xF0000
    assert "DSDT" in parse_tables(mem, 0xF0000)
    with pytest.raises(ValueError):
        build_acpi(mem, 1, rsdp_addr=0xF0008)
    with pytest.raises(ValueError):
        build_acpi(mem, 1, rsdp_addr=0x9000)


def test_irq0_override_reaches_the_madt(mem):
    plain = parse_tables(mem, build_acpi(mem, 1))["APIC"]
    override = parse_tables(mem, build_acpi(mem, 1, irq0_override=True))["APIC"]
    assert len(override) == len(plain) + 10


# --- parse_tables catches broken tables ------------------------------------------------------

def _table_addr(mem, signature):
    xsdt = struct.unpack_from("<Q", mem.read(RSDP_ADDR, 36), 24)[0]
    length = mem.read_u32(xsdt + 4)
    for off in range(36, length, 8):
        addr = mem.read_u64(xsdt + off)
        if mem.read(addr, 4) == signature:
            return addr
    raise LookupError(signature)


def test_parse_detects_rsdp_checksum(mem):
    build_acpi(mem, 1)
    mem.write_u8(RSDP_ADDR + 9, mem.read_u8(RSDP_ADDR + 9) ^ 1)    # OEM id byte
    with pytest.raises(AcpiError, match="RSDP checksum"):
        parse_tables(mem, RSDP_ADDR)


def test_parse_detects_extended_checksum(mem):
    build_acpi(mem, 1)
    mem.write_u8(RSDP_ADDR + 33, 1)                                  # reserved byte
    with pytest.raises(AcpiError, match="extended checksum"):
        parse_tables(mem, RSDP_ADDR)


@pytest.mark.parametrize("signature", [b"FACP", b"APIC"])
def test_parse_detects_table_checksum(mem, signature):
    build_acpi(mem, 2)
    addr = _table_addr(mem, signature)
    mem.write_u8(addr + 40, mem.read_u8(addr + 40) ^ 0x10)
    with pytest.raises(AcpiError, match="checksum"):
        parse_tables(mem, RSDP_ADDR)


def test_parse_detects_bad_length(mem):
    build_acpi(mem, 1)
    addr = _table_addr(mem, b"APIC")
    mem.write_u32(addr + 4, mem.read_u32(addr + 4) + 1)
    with pytest.raises(AcpiError):
        parse_tables(mem, RSDP_ADDR)


def test_parse_detects_dsdt_disagreement(mem):
    build_acpi(mem, 1)
    fadt = _table_addr(mem, b"FACP")
    mem.write_u32(fadt + 40, mem.read_u32(fadt + 40) + 16)
    mem.write_u8(fadt + 9, (mem.read_u8(fadt + 9) - 16) & 0xFF)     # keep the checksum right
    with pytest.raises(AcpiError, match="disagree"):
        parse_tables(mem, RSDP_ADDR)


def test_parse_without_rsdp(mem):
    mem.fill(RSDP_ADDR, 64)
    with pytest.raises(AcpiError, match="no RSDP"):
        parse_tables(mem, RSDP_ADDR)
