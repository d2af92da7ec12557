"""ACPI tables for a legacy-PC-shaped pyvisor machine: RSDP, XSDT, FADT (fixed-hardware PM1
model served by devices.legacy.acpi_pm.AcpiPm), FACS, MADT and a DSDT with \\_S5, the PCI
host bridge and the RTC. `build_acpi(memory, cpus)` writes them and returns the RSDP
address; platform.py documents the interrupt and PCI layout they describe."""

from pyvisor.acpi.builder import (ACPI_AREA_END, ACPI_AREA_START, RSDP_ADDR, AcpiError,
                                  build_acpi, layout_tables, parse_tables)
from pyvisor.acpi.platform import irqchip_routes, pci_intx_gsi

__all__ = ["ACPI_AREA_END", "ACPI_AREA_START", "RSDP_ADDR", "AcpiError", "build_acpi",
           "irqchip_routes", "layout_tables", "parse_tables", "pci_intx_gsi"]
