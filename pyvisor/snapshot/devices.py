"""Which devices a snapshot keeps: every device on the port and MMIO buses, and the
children a device names (the PCI root's functions), found by walking them, so the machine
needs no list of its own. A device keeps state through `snapshot_state()` and
`restore_state(state)` (plain data); optionally `state_lock` (held across a whole snapshot
or restore), `state_changes` (a CountingLock, held the same way: see below), `settle()`
(finish in-flight work first), `guest_areas()` (guest RAM it writes through views it
holds), `state_children()`; `state_owner` when several bus entries are views of one device;
`stateless = True` when there is nothing to keep. Any other device refuses the snapshot,
by name.

A restore leaves out a device with `state_changes` whose state cannot have changed since it
last matched the state being restored (captured it, or had it restored): the same state
object, and no counted acquire of its lock since. Its `restore_unchanged()`, if it has one,
does what restore_state does besides setting the state (the RTC's clock). A reset loop
restores one snapshot many times a second, and a device the guest did not touch then costs
a check instead of a restore."""
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


class _Entry:
    """One device, and the state it last matched (with its lock's generation then)."""

    __slots__ = ("name", "device", "changes", "unchanged", "state", "generation")

    def __init__(self, name: str, device: Any) -> None:
        self.name, self.device = name, device
        self.changes = getattr(device, "state_changes", None)
        self.unchanged = getattr(device, "restore_unchanged", None)
        self.state: Any = None
        self.generation = -1


class DeviceSet:
    """The devices walk() found, with what every snapshot and restore needs of them at hand
    (a reset loop restores many times a second): their state locks, which of them write
    guest RAM through views they hold, and what each counting device last matched."""

    def __init__(self, devices: dict[str, Any]) -> None:
        self.devices = devices
        self._entries = [_Entry(name, d) for name, d in devices.items()]
        # Once each (the PCI root's lock is its host bridge's too).
        self._locks = list({id(lock): lock for lock in map(_lock_of, devices.values())
                            if lock is not None}.values())
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

    def capture(self) -> dict[str, dict]:
        """Every device's state (locks held): each counting device now matches its own."""
        states = {}
        for e in self._entries:
            state = states[e.name] = e.device.snapshot_state()
            if e.changes is not None:
                e.state, e.generation = state, e.changes.generation
        return states

    def restore(self, states: dict[str, dict]) -> None:
        """Every device back to its state in states (locks held), but the ones that still
        match it."""
        for e in self._entries:
            state = states[e.name]
            changes = e.changes
            if changes is None:
                e.device.restore_state(state)
                continue
            if e.state is state and e.generation == changes.generation:
                if e.unchanged is not None:
                    e.unchanged()
                continue
            e.state = None              # a restore that fails part way matches nothing
            e.device.restore_state(state)
            e.state, e.generation = state, changes.generation

    def guest_areas(self) -> list[tuple[int, int]]:
        return [area for d in self._writers for area in d.guest_areas()]


def _lock_of(device: Any) -> Any:
    changes = getattr(device, "state_changes", None)
    return changes.held() if changes is not None else getattr(device, "state_lock", None)
