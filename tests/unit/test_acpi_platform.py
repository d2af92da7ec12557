import pytest

from pyvisor._native import lib
from pyvisor.acpi.platform import (IOAPIC_ADDR, LAPIC_ADDR, PCI_MMIO_WINDOW_END,
                                   PCI_MMIO_WINDOW_START, irqchip_routes, pci_intx_gsi)
from pyvisor.kvm.vm import IrqchipRoute
from pyvisor.memory.layout import MMIO_HOLE_END, MMIO_HOLE_START


def test_pci_intx_gsi_swizzle():
    assert pci_intx_gsi(1, 0) == 17
    assert pci_intx_gsi(1, 3) == 20
    assert pci_intx_gsi(7, 1) == 16
    assert pci_intx_gsi(31, 3) == 18
    for slot in range(32):
        for pin in range(4):
            assert 16 <= pci_intx_gsi(slot, pin) <= 23
    # Adjacent slots' INTA land on different lines.
    assert len({pci_intx_gsi(s, 0) for s in range(1, 9)}) == 8


@pytest.mark.parametrize("slot,pin", [(32, 0), (-1, 0), (1, 4), (1, -1)])
def test_pci_intx_gsi_range(slot, pin):
    with pytest.raises(ValueError):
        pci_intx_gsi(slot, pin)


def test_pci_window_stays_clear_of_the_apics():
    assert MMIO_HOLE_START <= PCI_MMIO_WINDOW_START < PCI_MMIO_WINDOW_END < MMIO_HOLE_END
    assert PCI_MMIO_WINDOW_END < IOAPIC_ADDR < LAPIC_ADDR


def test_default_routes_mirror_kvm():
    routes = set(irqchip_routes())
    assert IrqchipRoute(0, lib.KVM_IRQCHIP_IOAPIC, 0) in routes
    assert IrqchipRoute(0, lib.KVM_IRQCHIP_PIC_MASTER, 0) in routes
    assert IrqchipRoute(9, lib.KVM_IRQCHIP_PIC_SLAVE, 1) in routes
    assert IrqchipRoute(9, lib.KVM_IRQCHIP_IOAPIC, 9) in routes
    assert IrqchipRoute(23, lib.KVM_IRQCHIP_IOAPIC, 23) in routes
    assert len(routes) == 16 + 24
    assert not any(r.gsi >= 16 and r.irqchip != lib.KVM_IRQCHIP_IOAPIC for r in routes)


def test_irq0_to_pin2_routes():
    routes = irqchip_routes(irq0_to_pin2=True)
    assert IrqchipRoute(0, lib.KVM_IRQCHIP_IOAPIC, 2) in routes
    assert IrqchipRoute(0, lib.KVM_IRQCHIP_IOAPIC, 0) not in routes
    assert not any(r.gsi == 2 for r in routes)
    ioapic_pins = [r.pin for r in routes if r.irqchip == lib.KVM_IRQCHIP_IOAPIC]
    assert sorted(ioapic_pins) == sorted(set(range(24)) - {0})
