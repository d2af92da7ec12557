"""The VM's GSI routing table: the legacy irqchip routes plus one MSI route per MSI-X vector;
and the level-triggered lines several devices share.

KVM_SET_GSI_ROUTING replaces the whole table, so one owner keeps it: devices allocate GSIs
for their vectors here and change a vector's message here, and every change re-installs
the full table (legacy routes first, as acpi.platform describes them).

PCI INTx lines are shared (slots s and s + 8 have the same GSI): a line is the wired OR of
its sources, so one device lowering its INTx must not lower a line another still asserts.
SharedLines keeps who asserts what and drives KVM's line only when the OR changes.
"""
from __future__ import annotations

import threading

from ..acpi.platform import IOAPIC_PINS, irqchip_routes
from ..kvm.vm import MsiRoute, Vm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable


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


class SharedLines:
    """Level-triggered GSIs as the OR of their sources. `source()` gives each device its
    own `irq_line(gsi, level)`; `set_line(gsi, level)` (KVM_IRQ_LINE) sees only changes
    of the OR."""

    def __init__(self, set_line: Callable[[int, bool], None]) -> None:
        self._set_line = set_line
        self._asserted: dict[int, set[int]] = {}   # gsi -> sources asserting it
        self._sources = 0
        self._lock = threading.Lock()

    def source(self) -> Callable[[int, bool], None]:
        with self._lock:
            token, self._sources = self._sources, self._sources + 1

        def irq_line(gsi: int, level: bool) -> None:
            with self._lock:   # held across set_line: changes reach KVM in order
                asserted = self._asserted.setdefault(gsi, set())
                was = bool(asserted)
                if level:
                    asserted.add(token)
                else:
                    asserted.discard(token)
                if bool(asserted) != was:
                    self._set_line(gsi, not was)
        return irq_line
