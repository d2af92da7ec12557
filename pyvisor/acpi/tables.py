"""ACPI table builders (ACPI 6.0 layouts): each returns the finished table bytes, checksum
included. Addresses of other tables are parameters; builder.py decides where things go.

Revisions: RSDP 2, XSDT 1, FADT 6.0 (276 bytes, header revision 6, minor version 0),
FACS version 2, MADT 4, DSDT 2 (64-bit AML integers).
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

from pyvisor.acpi import aml
from pyvisor.acpi.platform import (INTI_ACTIVE_HIGH, INTI_CONFORMS, INTI_LEVEL,
                                   IOAPIC_ADDR, LAPIC_ADDR,
                                   PCI_BUS_RANGE, PCI_CONFIG_PORT, PCI_CONFIG_PORT_LEN,
                                   PCI_IO_WINDOWS, PCI_MMIO_WINDOW_END, PCI_MMIO_WINDOW_START,
                                   PCI_SLOTS, pci_intx_gsi)
from pyvisor.devices.legacy.acpi_pm import (PM1_CNT, PM1_CNT_LEN, PM1_EVT_LEN, PM1_STS,
                                            PM_BASE, PM_TMR, PM_TMR_LEN, RESET, RESET_VALUE,
                                            SCI_IRQ, SLP_TYP_S3, SLP_TYP_S5)
from pyvisor.value import Value
from pyvisor.devices.legacy.fw_cfg import FW_CFG_ACPI_HID, FW_CFG_PORT, FW_CFG_PORTS

OEM_ID = b"PYVISR"
OEM_TABLE_ID = b"PYVISOR "
OEM_REVISION = 1
CREATOR_ID = b"PYVS"
CREATOR_REVISION = 1

HEADER_SIZE = 36
RSDP_SIZE = 36
RSDP_V1_SIZE = 20
FADT_SIZE = 276
FACS_SIZE = 64

FADT_REVISION = 6
FADT_MINOR_REVISION = 0
MADT_REVISION = 4
DSDT_REVISION = 2
HPET_REVISION = 1

# FADT field offsets (ACPI 6.0, table 5-33).
FADT_FIRMWARE_CTRL = 36
FADT_DSDT = 40
FADT_PREFERRED_PM_PROFILE = 45
FADT_SCI_INT = 46
FADT_SMI_CMD = 48
FADT_PM1A_EVT_BLK = 56
FADT_PM1A_CNT_BLK = 64
FADT_PM_TMR_BLK = 76
FADT_GPE0_BLK = 80
FADT_PM1_EVT_LEN = 88
FADT_PM1_CNT_LEN = 89
FADT_PM_TMR_LEN = 91
FADT_GPE0_BLK_LEN = 92
FADT_P_LVL2_LAT = 96
FADT_P_LVL3_LAT = 98
FADT_CENTURY = 108
FADT_IAPC_BOOT_ARCH = 109
FADT_FLAGS = 112
FADT_RESET_REG = 116
FADT_RESET_VALUE = 128
FADT_MINOR_VERSION = 131
FADT_X_FIRMWARE_CTRL = 132
FADT_X_DSDT = 140
FADT_X_PM1A_EVT_BLK = 148
FADT_X_PM1A_CNT_BLK = 172
FADT_X_PM_TMR_BLK = 208
FADT_X_GPE0_BLK = 220
FADT_HYPERVISOR_VENDOR = 268

# FADT flags.
FADT_F_WBINVD = 1 << 0
FADT_F_PROC_C1 = 1 << 2
FADT_F_PWR_BUTTON = 1 << 4     # set = no fixed-feature power button
FADT_F_SLP_BUTTON = 1 << 5     # set = no fixed-feature sleep button
FADT_F_FIX_RTC = 1 << 6        # set = no RTC wake status in fixed hardware
FADT_F_RESET_REG_SUP = 1 << 10
FADT_F_HW_REDUCED_ACPI = 1 << 20

# IA-PC boot architecture flags.
BOOT_ARCH_LEGACY_DEVICES = 1 << 0
BOOT_ARCH_8042 = 1 << 1
BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2
BOOT_ARCH_CMOS_RTC_NOT_PRESENT = 1 << 5

FADT_FLAGS_VALUE = (FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_FIX_RTC
                    | FADT_F_RESET_REG_SUP)
IAPC_BOOT_ARCH_VALUE = BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT

# CMOS index of the RTC's century byte (devices/legacy/rtc.py keeps it where PCs do);
# Linux reads the century from there when the FADT names it.
RTC_CENTURY_INDEX = 0x32

# C2/C3 latencies above these limits mean "not supported".
P_LVL2_LAT_NONE = 101
P_LVL3_LAT_NONE = 1001

# Generic Address Structure.
GAS_SYSTEM_MEMORY = 0
GAS_SYSTEM_IO = 1
ACCESS_UNDEFINED = 0
ACCESS_BYTE = 1
ACCESS_WORD = 2
ACCESS_DWORD = 3

# MADT.
MADT_PCAT_COMPAT = 1 << 0
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INT_SRC_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
LAPIC_ENABLED = 1 << 0
MAX_CPUS = 254        # xAPIC ids 0..254 (0xFF is broadcast); the IOAPIC takes id N


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes data sum to 0 mod 256 (when its own slot holds 0)."""
    return -sum(data) & 0xFF


def _header(signature: bytes, length: int, revision: int) -> bytes:
    return struct.pack("<4sIBB6s8sI4sI", signature, length, revision, 0, OEM_ID,
                       OEM_TABLE_ID, OEM_REVISION, CREATOR_ID, CREATOR_REVISION)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A System Description Table: standard header, then body, checksum at offset 9."""
    table = bytearray(_header(signature, HEADER_SIZE + len(body), revision) + body)
    table[9] = checksum(table)
    return bytes(table)


def gas(space: int, bit_width: int, address: int, access_size: int = ACCESS_UNDEFINED,
        bit_offset: int = 0) -> bytes:
    """A 12-byte Generic Address Structure."""
    return struct.pack("<BBBBQ", space, bit_width, bit_offset, access_size, address)


def rsdp(xsdt_addr: int, rsdt_addr: int = 0) -> bytes:
    """RSDP revision 2 (36 bytes): checksum over the first 20 bytes, extended checksum over
    all 36."""
    data = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, rsdt_addr,
                                 RSDP_SIZE, xsdt_addr, 0))
    data[8] = checksum(data[:RSDP_V1_SIZE])
    data[32] = checksum(data)
    return bytes(data)


def hpet() -> bytes:
    """The HPET description table (IA-PC HPET 1.0a, section 3.2.4): the event timer block
    ID (the capabilities register's low half), the block's base as a system-memory GAS,
    HPET number 0, no minimum periodic tick, no page protection."""
    from pyvisor.devices.legacy.hpet import HPET_BASE, capabilities   # only with --hpet

    return sdt(b"HPET", HPET_REVISION, struct.pack("<IBBBBQBHB", capabilities() & 0xFFFFFFFF,
                                                   0, 64, 0, 0, HPET_BASE, 0, 0, 0))


def rsdt(entries: list[int]) -> bytes:
    """The ACPI 1.0 root table (32-bit pointers), for readers of the RSDP's first 20 bytes
    alone, such as Multiboot 2's "old RSDP" tag."""
    return sdt(b"RSDT", 1, b"".join(struct.pack("<I", a) for a in entries))


def xsdt(entries: list[int]) -> bytes:
    return sdt(b"XSDT", 1, b"".join(struct.pack("<Q", a) for a in entries))


def facs() -> bytes:
    """FACS (no checksum; 64-byte aligned): no waking vector, global lock free."""
    return struct.pack("<4sIIIIIQB3xI24x", b"FACS", FACS_SIZE, 0, 0, 0, 0, 0, 2, 0)


def fadt(dsdt_addr: int, facs_addr: int) -> bytes:
    """FADT 6.0 for a legacy PC with the fixed-hardware PM1 model (pyvisor's AcpiPm at
    PM_BASE): SCI on IRQ 9, no SMI command port (always in ACPI mode), no GPE block, the
    reset register in the PM block, fixed power button, no fixed sleep button."""
    body = bytearray(FADT_SIZE)

    def put(fmt: str, offset: int, *values: int) -> None:
        struct.pack_into("<" + fmt, body, offset, *values)

    evt, cnt, tmr, reset = PM_BASE + PM1_STS, PM_BASE + PM1_CNT, PM_BASE + PM_TMR, PM_BASE + RESET
    put("I", FADT_FIRMWARE_CTRL, facs_addr)
    put("I", FADT_DSDT, dsdt_addr)
    put("B", FADT_PREFERRED_PM_PROFILE, 0)          # unspecified
    put("H", FADT_SCI_INT, SCI_IRQ)
    put("I", FADT_SMI_CMD, 0)                       # no SMI: ACPI_ENABLE/DISABLE stay 0
    put("I", FADT_PM1A_EVT_BLK, evt)
    put("I", FADT_PM1A_CNT_BLK, cnt)
    put("I", FADT_PM_TMR_BLK, tmr)
    put("I", FADT_GPE0_BLK, 0)
    put("B", FADT_PM1_EVT_LEN, PM1_EVT_LEN)
    put("B", FADT_PM1_CNT_LEN, PM1_CNT_LEN)
    put("B", FADT_PM_TMR_LEN, PM_TMR_LEN)
    put("B", FADT_GPE0_BLK_LEN, 0)
    put("H", FADT_P_LVL2_LAT, P_LVL2_LAT_NONE)
    put("H", FADT_P_LVL3_LAT, P_LVL3_LAT_NONE)
    put("B", FADT_CENTURY, RTC_CENTURY_INDEX)
    put("H", FADT_IAPC_BOOT_ARCH, IAPC_BOOT_ARCH_VALUE)
    put("I", FADT_FLAGS, FADT_FLAGS_VALUE)
    body[FADT_RESET_REG:FADT_RESET_REG + 12] = gas(GAS_SYSTEM_IO, 8, reset, ACCESS_BYTE)
    put("B", FADT_RESET_VALUE, RESET_VALUE)
    put("B", FADT_MINOR_VERSION, FADT_MINOR_REVISION)
    # X_FIRMWARE_CTRL must be 0 when FIRMWARE_CTRL is used (the FACS is below 4 GiB).
    put("Q", FADT_X_FIRMWARE_CTRL, 0)
    put("Q", FADT_X_DSDT, dsdt_addr)
    # The 64-bit blocks repeat the 32-bit ones; bit widths are 8 x the legacy lengths
    # (ACPICA warns on any mismatch). Access size "undefined" lets ACPICA derive the access
    # widths from the legacy lengths, as with QEMU's FADT; AcpiPm accepts any width.
    body[FADT_X_PM1A_EVT_BLK:FADT_X_PM1A_EVT_BLK + 12] = gas(
        GAS_SYSTEM_IO, 8 * PM1_EVT_LEN, evt, ACCESS_UNDEFINED)
    body[FADT_X_PM1A_CNT_BLK:FADT_X_PM1A_CNT_BLK + 12] = gas(
        GAS_SYSTEM_IO, 8 * PM1_CNT_LEN, cnt, ACCESS_UNDEFINED)
    body[FADT_X_PM_TMR_BLK:FADT_X_PM_TMR_BLK + 12] = gas(
        GAS_SYSTEM_IO, 8 * PM_TMR_LEN, tmr, ACCESS_UNDEFINED)
    put("Q", FADT_HYPERVISOR_VENDOR, int.from_bytes(b"PYVISOR\0", "little"))
    return sdt(b"FACP", FADT_REVISION, bytes(body[HEADER_SIZE:]))


class Override(Value):
    """A MADT interrupt source override: ISA `irq` arrives at `gsi` with MPS INTI `flags`."""

    __slots__ = ("irq", "gsi", "flags")

    def __init__(self, irq: int, gsi: int, flags: int) -> None:
        self.irq, self.gsi, self.flags = irq, gsi, flags


SCI_OVERRIDE = Override(SCI_IRQ, SCI_IRQ, INTI_ACTIVE_HIGH | INTI_LEVEL)
IRQ0_OVERRIDE = Override(0, 2, INTI_CONFORMS)


def madt(cpus: int, *, irq0_override: bool = False) -> bytes:
    """MADT: LAPICs with processor UID = APIC id = index, one IOAPIC (id = cpus, GSI base
    0), overrides for the SCI (and IRQ0 -> GSI 2 if asked, see platform.py), and LINT1 as
    NMI on every processor. PCAT_COMPAT: the 8259 pair is present."""
    if not 1 <= cpus <= MAX_CPUS:
        raise ValueError(f"the MADT describes 1 to {MAX_CPUS} CPUs, not {cpus}")
    body = struct.pack("<II", LAPIC_ADDR, MADT_PCAT_COMPAT)
    for i in range(cpus):
        body += struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, i, i, LAPIC_ENABLED)
    body += struct.pack("<BBBBII", MADT_IO_APIC, 12, cpus, 0, IOAPIC_ADDR, 0)
    overrides = ([IRQ0_OVERRIDE] if irq0_override else []) + [SCI_OVERRIDE]
    for o in overrides:
        body += struct.pack("<BBBBIH", MADT_INT_SRC_OVERRIDE, 10, 0, o.irq, o.gsi, o.flags)
    # LINT1 is NMI on all processors (UID 0xFF), polarity and trigger as the bus says.
    body += struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, 0xFF, INTI_CONFORMS, 1)
    return sdt(b"APIC", MADT_REVISION, body)


def _pci0() -> bytes:
    # No _ADR: a device has a _HID or an _ADR, never both (ACPI 6.x, 6.1; iasl warns).
    crs = aml.resource_template(
        aml.word_bus_number(*PCI_BUS_RANGE),
        aml.io_port(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, PCI_CONFIG_PORT_LEN),
        *(aml.word_io(lo, hi) for lo, hi in PCI_IO_WINDOWS),
        aml.dword_memory(PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_END),
    )
    prt = aml.package(*(
        aml.package(aml.integer((slot << 16) | 0xFFFF), aml.integer(pin), aml.integer(0),
                    aml.integer(pci_intx_gsi(slot, pin)))
        for slot in range(1, PCI_SLOTS) for pin in range(4)))
    return aml.device(
        "PCI0",
        aml.name("_HID", aml.eisaid("PNP0A03")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_BBN", aml.integer(0)),
        aml.name("_SEG", aml.integer(0)),
        aml.name("_CRS", crs),
        aml.name("_PRT", prt),
    )


def _rtc() -> bytes:
    return aml.device(
        "RTC",
        aml.name("_HID", aml.eisaid("PNP0B00")),
        aml.name("_CRS", aml.resource_template(aml.io_port(0x70, 0x70, 1, 2),
                                               aml.irq_noflags(8))),
    )


def _fw_cfg() -> bytes:
    """QEMU's fw_cfg device as QEMU's DSDT lists it (_STA 0x0B: present, enabled, not
    shown in the UI), for drivers such as Linux's qemu_fw_cfg that find it through ACPI."""
    return aml.device(
        "FWCF",
        aml.name("_HID", aml.string(FW_CFG_ACPI_HID)),
        aml.name("_STA", aml.integer(0x0B)),
        aml.name("_CRS", aml.resource_template(
            aml.io_port(FW_CFG_PORT, FW_CFG_PORT, 1, FW_CFG_PORTS))),
    )


def _hpet() -> bytes:
    """The HPET as QEMU's DSDT lists it (PNP0103), for drivers that look there."""
    from pyvisor.devices.legacy.hpet import HPET_BASE, HPET_SIZE

    return aml.device(
        "HPET",
        aml.name("_HID", aml.eisaid("PNP0103")),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", aml.resource_template(aml.memory32_fixed(HPET_BASE, HPET_SIZE))),
    )


def _cpu(index: int) -> bytes:
    return aml.device(
        f"C{index:03X}",
        aml.name("_HID", aml.string("ACPI0007")),
        aml.name("_UID", aml.integer(index)),
    )


def _virtio_mmio(index: int, base: int, length: int, gsi: int) -> bytes:
    """A virtio-mmio device as Linux's virtio_mmio driver matches it (_HID LNRO0005)."""
    return aml.device(
        f"VR{index:02X}",
        aml.name("_HID", aml.string("LNRO0005")),
        aml.name("_UID", aml.integer(index)),
        aml.name("_CRS", aml.resource_template(aml.memory32_fixed(base, length),
                                               aml.interrupt_edge_high(gsi))),
    )


def dsdt_aml(cpus: int, virtio_mmio: Sequence[tuple[int, int, int]] = (),
             hpet: bool = False) -> bytes:
    """The DSDT's AML: \\_S3 (suspend to RAM, machine/sleep.py), \\_S5, \\_SB.PCI0 (host bridge, windows, _PRT), \\_SB.RTC,
    \\_SB.FWCF (fw_cfg), one ACPI0007 processor device per CPU (\\_SB.C000.., _UID = MADT
    processor UID), one device per virtio-mmio transport, given as (base, length, gsi),
    and with ``hpet`` \\_SB.HPET."""
    return (aml.name("_S3", aml.package(*(aml.integer(v) for v in (SLP_TYP_S3, SLP_TYP_S3,
                                                                   0, 0))))
            + aml.name("_S5", aml.package(*(aml.integer(v) for v in (SLP_TYP_S5, SLP_TYP_S5,
                                                                   0, 0))))
            + aml.scope("\\_SB", _pci0(), _rtc(), _fw_cfg(), *(_cpu(i) for i in range(cpus)),
                        *(_virtio_mmio(i, *dev) for i, dev in enumerate(virtio_mmio)),
                        *((_hpet(),) if hpet else ())))


def dsdt(cpus: int, virtio_mmio: Sequence[tuple[int, int, int]] = (),
         hpet: bool = False) -> bytes:
    return sdt(b"DSDT", DSDT_REVISION, dsdt_aml(cpus, virtio_mmio, hpet))
