"""Which devices a snapshot keeps: every device on the port and MMIO buses, and the
children a device names (the PCI root's functions), found by walking them, so the machine
needs no list of its own. A device keeps state through `snapshot_state()` and
`restore_state(state)` (plain data); optionally `state_lock` (held across a whole snapshot
or restore), `settle()` (finish in-flight work first), `guest_areas()` (guest RAM it writes
through views it holds), `state_children()`; `state_owner` when several bus entries are
views of one device; `stateless = True` when there is nothing to keep. Any other device
refuses the snapshot, by name."""
from __future__ import annotations

from contextlib import ExitStack
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


def hold(devices: dict[str, Any]) -> ExitStack:
    """Take every device's state lock (the I/O thread then waits)."""
    stack = ExitStack()
    try:
        for device in devices.values():
            lock = getattr(device, "state_lock", None)
            if lock is not None:
                stack.enter_context(lock)
    except BaseException:
        stack.close()
        raise
    return stack


def guest_areas(devices: dict[str, Any]) -> list[tuple[int, int]]:
    return [area for d in devices.values() if hasattr(d, "guest_areas") for area in d.guest_areas()]
