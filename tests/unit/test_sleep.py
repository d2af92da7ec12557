"""ACPI S3 pieces that need no vCPU: \\_S3 in the DSDT, AcpiPm's suspend request, wake
notification and WAK_STS, and finding the FACS waking vector the way an OS does."""
from pyvisor.acpi import aml, tables
from pyvisor.acpi.builder import build_acpi, layout_tables
from pyvisor.devices.legacy.acpi_pm import AcpiPm
from pyvisor.machine.sleep import waking_vector
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

SLP_EN = 1 << 13
WAK_STS = 1 << 15


def pm(**callbacks):
    calls = []
    dev = AcpiPm(lambda: calls.append("off"), lambda: calls.append("reset"),
                 request_suspend=lambda: calls.append("suspend"),
                 power_button=lambda: calls.append("button"), **callbacks)
    return dev, calls


def test_dsdt_has_s3_as_qemu_numbers_it():
    # Name(_S3, Package(4){1, 1, 0, 0}): SLP_TYP 1 for PM1a and PM1b
    assert aml.name("_S3", aml.package(*map(aml.integer, (1, 1, 0, 0)))) in tables.dsdt_aml(1)


def test_slp_typ_s3_with_slp_en_asks_to_suspend():
    dev, calls = pm()
    dev.pio_write(4, 2, 1 << 10)              # SLP_TYP alone: nothing yet
    assert calls == []
    dev.pio_write(4, 2, 1 << 10 | SLP_EN)
    assert calls == ["suspend"]
    dev.pio_write(4, 2, 5 << 10 | SLP_EN)     # S5 still powers off
    assert calls == ["suspend", "off"]


def test_without_a_suspend_handler_s3_is_ignored():
    calls = []
    dev = AcpiPm(lambda: calls.append("off"), lambda: calls.append("reset"))
    dev.pio_write(4, 2, 1 << 10 | SLP_EN)
    assert calls == []


def test_power_button_is_a_wake_event_and_woke_sets_wak_sts():
    dev, calls = pm()
    dev.press_power_button()
    assert calls == ["button"]
    assert not dev.pio_read(0, 2) & WAK_STS
    dev.woke()
    assert dev.pio_read(0, 2) & WAK_STS
    dev.pio_write(0, 2, WAK_STS)              # write 1 to clear
    assert not dev.pio_read(0, 2) & WAK_STS


def test_waking_vector_is_read_through_rsdp_xsdt_fadt_facs():
    with GuestMemory(MemoryLayout(32 << 20)) as mem:
        rsdp = build_acpi(mem, 1)
        assert waking_vector(mem, rsdp) == 0
        fadt = [a for a, t in layout_tables(1)
                if t[:4] == b"FACP"][0]
        facs = mem.read_u32(fadt + 36)
        mem.write_u32(facs + 12, 0x9A000)     # FACS Firmware Waking Vector
        assert waking_vector(mem, rsdp) == 0x9A000
        mem.write(rsdp, b"XXXXXXXX")          # tables the guest broke: no vector to use
        assert waking_vector(mem, rsdp) == 0
