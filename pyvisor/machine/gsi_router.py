"""The VM's GSI routing table: the legacy irqchip routes plus one MSI route per MSI-X vector.

KVM_SET_GSI_ROUTING replaces the whole table, so one owner keeps it: devices allocate GSIs
for their vectors here and change a vector's message here, and every change re-installs
the full table (legacy routes first, as acpi.platform describes them).
"""
from __future__ import annotations

import threading

from ..acpi.platform import IOAPIC_PINS, irqchip_routes
from ..kvm.vm import MsiRoute, Vm


class GsiRouter:
    def __init__(self, vm: Vm) -> None:
        self._vm = vm
        self._base = irqchip_routes()
        self._msi: dict[int, MsiRoute] = {}
        self._next = IOAPIC_PINS
        self._lock = threading.Lock()

    def allocate(self) -> int:
        """A fresh GSI above the IOAPIC pins, for one MSI-X vector (no route yet)."""
        with self._lock:
            gsi, self._next = self._next, self._next + 1
            return gsi

    def set_msi(self, gsi: int, address: int, data: int) -> None:
        """Route gsi to the MSI message (address, data); a no-op when nothing changed."""
        route = MsiRoute(gsi, address, data)
        with self._lock:
            if self._msi.get(gsi) == route:
                return
            self._msi[gsi] = route
            self._vm.set_gsi_routing(self._base + list(self._msi.values()))
