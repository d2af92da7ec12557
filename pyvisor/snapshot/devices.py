"""Which devices a snapshot keeps: every device on the port and MMIO buses, and the
children a device names (the PCI root's functions), found by walking them, so the machine
needs no list of its own. A device keeps state through `snapshot_state()` and
`restore_state(state)` (plain data); optionally `state_lock` (held across a whole snapshot
or restore), `settle()` (finish in-flight work first), `guest_areas()` (guest RAM it writes
through views it holds), `state_children()`; `state_owner` when several bus entries are
views of one device; `stateless = True` when there is nothing to keep. Any other device
refuses the snapshot, by name."""
from __future__ import annotations

from typing import Any

from ..devices.bus import MmioBus, PioBus
from .errors import SnapshotError


def walk(pio_bus: PioBus, mmio_bus: MmioBus) -> dict[str, Any]:
    """name -> device, in a stable order (ports, their children, then MMIO)."""
    devices: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(name: str, device: Any) -> None:
        owner = getattr(device, "state_owner", device)
        if id(owner) in seen:
            return
        seen.add(id(owner))
        if getattr(owner, "stateless", False):
            return
        if not hasattr(owner, "snapshot_state"):
            raise SnapshotError(f"{name} cannot be snapshotted: it has no snapshot state "
                                f"(remove it, e.g. a page-protection watchpoint, first)")
        devices[name] = owner
        children = getattr(owner, "state_children", None)
        for child_name, child in (children() if children else {}).items():
            visit(child_name, child)

    for r in pio_bus.registrations():
        visit(r.name or f"port {r.base:#x}", r.device)
    for r in mmio_bus.registrations():
        visit(r.name or f"MMIO {r.base:#x}", r.device)
    return devices


class DeviceSet:
    """The devices walk() found, with what every snapshot and restore needs of them at hand
    (a reset loop restores many times a second): their state locks, and which of them write
    guest RAM through views they hold."""

    def __init__(self, devices: dict[str, Any]) -> None:
        self.devices = devices
        self._locks = [lock for lock in (getattr(d, "state_lock", None) for d in devices.values())
                       if lock is not None]
        self._writers = [d for d in devices.values() if hasattr(d, "guest_areas")]

    def held(self) -> "DeviceSet":
        """`with devices.held():` every device's state lock is taken (the I/O thread then
        waits)."""
        return self

    def __enter__(self) -> "DeviceSet":
        taken = 0
        try:
            for lock in self._locks:
                lock.acquire()
                taken += 1
        except BaseException:
            for lock in reversed(self._locks[:taken]):
                lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()

    def guest_areas(self) -> list[tuple[int, int]]:
        return [area for d in self._writers for area in d.guest_areas()]
