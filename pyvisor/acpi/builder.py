"""Lays the ACPI tables out in the BIOS area and writes them into guest memory; parses them
back (RSDP -> XSDT -> tables, as acpidump would) with every length and checksum checked.

    0xE0000  RSDP (36 bytes; 16-byte aligned, inside Linux's legacy 0xE0000-0xFFFFF scan)
    0xE0040  XSDT -> FADT, MADT (and HPET, when the machine has one)
    then     RSDT (the same tables, for ACPI 1.0 readers), FACS (64-byte aligned), FADT,
             MADT, DSDT, HPET, each 16-byte aligned

The area [ACPI_AREA_START, ACPI_AREA_END) is reserved in the e820 map (memory/layout.py).
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

from pyvisor.acpi import tables
from pyvisor.memory.layout import BIOS_AREA_START, HIGH_MEMORY_START

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class _Writable(Protocol):
        def write(self, gpa: int, data: bytes) -> None: ...

    class _Readable(Protocol):
        def read(self, gpa: int, size: int) -> bytes: ...

RSDP_ADDR = 0xE0000
ACPI_AREA_START = BIOS_AREA_START
ACPI_AREA_END = HIGH_MEMORY_START


class AcpiError(ValueError):
    """Malformed tables found by parse_tables()."""


def _align(addr: int, alignment: int) -> int:
    return (addr + alignment - 1) & -alignment


def layout_tables(cpus: int, *, irq0_override: bool = False, rsdp_addr: int = RSDP_ADDR,
                  virtio_mmio: Sequence[tuple[int, int, int]] = (),
                  hpet: bool = False) -> list[tuple[int, bytes]]:
    """(address, bytes) of every table, RSDP first, without touching memory."""
    placed: list[tuple[int, bytes]] = []
    # Sizes of the XSDT and the others do not depend on addresses, so place by size first.
    dsdt = tables.dsdt(cpus, virtio_mmio, hpet)
    hpet_table = tables.hpet() if hpet else b""
    madt = tables.madt(cpus, irq0_override=irq0_override)
    xsdt_addr = _align(rsdp_addr + tables.RSDP_SIZE, 64)
    xsdt_size = tables.HEADER_SIZE + 8 * (2 + hpet)
    rsdt_addr = _align(xsdt_addr + xsdt_size, 16)
    rsdt_size = tables.HEADER_SIZE + 4 * (2 + hpet)
    facs_addr = _align(rsdt_addr + rsdt_size, 64)
    fadt_addr = _align(facs_addr + tables.FACS_SIZE, 16)
    madt_addr = _align(fadt_addr + tables.FADT_SIZE, 16)
    dsdt_addr = _align(madt_addr + len(madt), 16)
    hpet_addr = _align(dsdt_addr + len(dsdt), 16)
    end = hpet_addr + len(hpet_table)
    if end > ACPI_AREA_END:
        raise ValueError(f"ACPI tables end at {end:#x}, beyond the BIOS area")
    entries = [fadt_addr, madt_addr] + [hpet_addr] * hpet
    xsdt, rsdt = tables.xsdt(entries), tables.rsdt(entries)
    assert len(xsdt) == xsdt_size and len(rsdt) == rsdt_size
    placed.append((rsdp_addr, tables.rsdp(xsdt_addr, rsdt_addr)))
    placed.append((xsdt_addr, xsdt))
    placed.append((rsdt_addr, rsdt))
    placed.append((facs_addr, tables.facs()))
    placed.append((fadt_addr, tables.fadt(dsdt_addr, facs_addr)))
    placed.append((madt_addr, madt))
    placed.append((dsdt_addr, dsdt))
    if hpet:
        placed.append((hpet_addr, hpet_table))
    return placed


def build_acpi(mem: _Writable, cpus: int, *, irq0_override: bool = False,
               rsdp_addr: int = RSDP_ADDR,
               virtio_mmio: Sequence[tuple[int, int, int]] = (), hpet: bool = False) -> int:
    """Write the ACPI tables for a machine with `cpus` vCPUs into guest memory and return
    the RSDP's address (for boot_params.acpi_rsdp_addr / PVH rsdp_paddr). The rest of the
    area up to ACPI_AREA_END is zeroed first. irq0_override: see platform.py."""
    if not ACPI_AREA_START <= rsdp_addr < ACPI_AREA_END or rsdp_addr % 16:
        raise ValueError(f"RSDP address {rsdp_addr:#x} must be 16-byte aligned in the BIOS area")
    placed = layout_tables(cpus, irq0_override=irq0_override, rsdp_addr=rsdp_addr,
                           virtio_mmio=virtio_mmio, hpet=hpet)
    mem.write(ACPI_AREA_START, bytes(ACPI_AREA_END - ACPI_AREA_START))
    for addr, data in placed:
        mem.write(addr, data)
    return rsdp_addr


def _table_at(mem: _Readable, addr: int) -> bytes:
    header = mem.read(addr, tables.HEADER_SIZE)
    signature = header[:4]
    length = struct.unpack_from("<I", header, 4)[0]
    if length < tables.HEADER_SIZE:
        raise AcpiError(f"table {signature!r} at {addr:#x} has length {length}")
    data = mem.read(addr, length)
    if sum(data) & 0xFF:
        raise AcpiError(f"table {signature!r} at {addr:#x} has a bad checksum")
    return data


def parse_tables(mem: _Readable, rsdp_addr: int) -> dict[str, bytes]:
    """Walk RSDP -> XSDT -> tables (and FADT -> DSDT, FACS) the way an OS does, checking
    every signature, length and checksum. Returns {signature: table bytes}, including
    "RSDP", "XSDT", "FACS" and "DSDT". Raises AcpiError on anything malformed."""
    rsdp = mem.read(rsdp_addr, tables.RSDP_SIZE)
    if rsdp[:8] != b"RSD PTR ":
        raise AcpiError(f"no RSDP signature at {rsdp_addr:#x}")
    if sum(rsdp[:tables.RSDP_V1_SIZE]) & 0xFF:
        raise AcpiError("RSDP checksum (first 20 bytes) is wrong")
    revision, _rsdt, length, xsdt_addr = struct.unpack_from("<BIIQ", rsdp, 15)
    if revision < 2 or length != tables.RSDP_SIZE:
        raise AcpiError(f"RSDP revision {revision} / length {length}: expected 2 / 36")
    if sum(rsdp) & 0xFF:
        raise AcpiError("RSDP extended checksum is wrong")
    found = {"RSDP": rsdp}
    xsdt = _table_at(mem, xsdt_addr)
    if xsdt[:4] != b"XSDT" or (len(xsdt) - tables.HEADER_SIZE) % 8:
        raise AcpiError("malformed XSDT")
    found["XSDT"] = xsdt
    for off in range(tables.HEADER_SIZE, len(xsdt), 8):
        addr = struct.unpack_from("<Q", xsdt, off)[0]
        table = _table_at(mem, addr)
        sig = table[:4].decode("ascii")
        if sig in found:
            raise AcpiError(f"two {sig} tables")
        found[sig] = table
    fadt = found.get("FACP")
    if fadt is not None:
        dsdt32, = struct.unpack_from("<I", fadt, tables.FADT_DSDT)
        x_dsdt, = struct.unpack_from("<Q", fadt, tables.FADT_X_DSDT)
        if dsdt32 and x_dsdt and dsdt32 != x_dsdt:
            raise AcpiError(f"FADT DSDT {dsdt32:#x} and X_DSDT {x_dsdt:#x} disagree")
        found["DSDT"] = dsdt = _table_at(mem, x_dsdt or dsdt32)
        if dsdt[:4] != b"DSDT":
            raise AcpiError("FADT.X_DSDT does not point at a DSDT")
        facs_addr, = struct.unpack_from("<I", fadt, tables.FADT_FIRMWARE_CTRL)
        if facs_addr:
            if facs_addr % 64:
                raise AcpiError(f"FACS at {facs_addr:#x} is not 64-byte aligned")
            facs = mem.read(facs_addr, tables.FACS_SIZE)
            if facs[:4] != b"FACS" or struct.unpack_from("<I", facs, 4)[0] != tables.FACS_SIZE:
                raise AcpiError("malformed FACS")
            found["FACS"] = facs
    return found
