"""The platform the ACPI tables describe: interrupt controllers, the ISA interrupt overrides,
PCI interrupt routing and the PCI windows. The machine wires its devices by the same
constants, so tables and hardware cannot disagree.

Interrupts (one in-kernel IOAPIC with 24 pins, GSI n = pin n, plus the 8259 pair):

    GSI 0-15   ISA IRQs, identity-mapped (see IRQ0 below); edge/high except:
    GSI 9      ACPI SCI: level-triggered, active-high (MADT interrupt source override)
    GSI 16-23  PCI INTx, level-triggered, active-low (as the PCI spec has it); a device in
               slot s asserting pin p (0 = INTA .. 3 = INTD) raises pci_intx_gsi(s, p)

With KVM's in-kernel irqchip, "asserted" is level 1 on KVM_IRQ_LINE whatever the polarity
the guest programs (KVM's IOAPIC does not invert), so devices call irq(True) to assert.

IRQ0 (the PIT). KVM's in-kernel PIT raises GSI 0, and KVM's default GSI routing sends GSI n
to IOAPIC pin n (and PIC pin n for n < 16), so the PIT arrives at IOAPIC pin 0. A PC's MADT
says "IRQ0 -> GSI 2"; QEMU only does so when it can also reroute (kvm_pc_setup_irq_routing
installs GSI 0 -> IOAPIC pin 2 and drops GSI 2; without GSI routing it omits the override,
see its kvm_allows_irq0_override()). pyvisor keeps KVM's default routing, so by default the
MADT has no IRQ0 override and Linux uses the identity mapping (pin 0) for the timer.
`build_acpi(..., irq0_override=True)` emits the PC-style override; use it only together
with `irqchip_routes(irq0_to_pin2=True)` installed through Vm.set_gsi_routing().

Note that KVM_SET_GSI_ROUTING replaces the whole table: a machine that adds MSI routes must
pass `irqchip_routes()` along with them or the legacy interrupts stop working.
"""
from __future__ import annotations

from pyvisor._native import lib
from pyvisor.kvm.vm import IrqchipRoute

LAPIC_ADDR = 0xFEE00000
IOAPIC_ADDR = 0xFEC00000
IOAPIC_PINS = 24

ISA_IRQS = 16
PCI_INTX_GSI_BASE = 16
PCI_INTX_GSI_COUNT = 8
PCI_SLOTS = 32

# PCI host bridge (config mechanism #1) and the windows it forwards (DSDT \_SB.PCI0._CRS).
PCI_CONFIG_PORT = 0xCF8
PCI_CONFIG_PORT_LEN = 8
PCI_IO_WINDOWS = ((0x0000, 0x0CF7), (0x0D00, 0xFFFF))
PCI_MMIO_WINDOW_START = 0xC0000000     # = MMIO_HOLE_START: nothing else lives there
PCI_MMIO_WINDOW_END = 0xFBFFFFFF       # inclusive; the IOAPIC (0xFEC00000) and LAPIC stay out
PCI_BUS_RANGE = (0x00, 0xFF)

# Flags of MADT interrupt source overrides (MPS INTI flags).
INTI_CONFORMS = 0x0
INTI_ACTIVE_HIGH = 0x1
INTI_ACTIVE_LOW = 0x3
INTI_EDGE = 0x1 << 2
INTI_LEVEL = 0x3 << 2


def pci_intx_gsi(slot: int, pin: int) -> int:
    """The GSI (IOAPIC pin) that INTx `pin` of a device in `slot` on bus 0 raises.
    `pin` is 0 for INTA .. 3 for INTD (the _PRT convention, i.e. the config-space
    Interrupt Pin register minus 1). The usual swizzle spreads slots over the 8 lines:
    GSI = 16 + (slot + pin) % 8."""
    if not 0 <= slot < PCI_SLOTS:
        raise ValueError(f"PCI slot {slot} out of range 0-31")
    if not 0 <= pin <= 3:
        raise ValueError(f"PCI interrupt pin {pin} out of range 0 (INTA) - 3 (INTD)")
    return PCI_INTX_GSI_BASE + (slot + pin) % PCI_INTX_GSI_COUNT


def irqchip_routes(irq0_to_pin2: bool = False) -> list[IrqchipRoute]:
    """KVM's default irqchip routing as an explicit list (GSI 0-15 to the PIC pin and
    IOAPIC pin of the same number, GSI 16-23 to IOAPIC pins 16-23), for machines that call
    Vm.set_gsi_routing(). With irq0_to_pin2, GSI 0 goes to IOAPIC pin 2 instead and GSI 2
    has no route at all (QEMU's layout, matching build_acpi(irq0_override=True))."""
    routes = []
    for gsi in range(IOAPIC_PINS):
        if irq0_to_pin2 and gsi == 2:
            continue          # pin 2 belongs to IRQ0 now; PIC pin 2 is the cascade anyway
        if gsi < 8:
            routes.append(IrqchipRoute(gsi, lib.KVM_IRQCHIP_PIC_MASTER, gsi))
        elif gsi < ISA_IRQS:
            routes.append(IrqchipRoute(gsi, lib.KVM_IRQCHIP_PIC_SLAVE, gsi - 8))
        pin = 2 if irq0_to_pin2 and gsi == 0 else gsi
        routes.append(IrqchipRoute(gsi, lib.KVM_IRQCHIP_IOAPIC, pin))
    return routes
