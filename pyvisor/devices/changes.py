"""A device lock that counts what could have changed the device: every `with lock:` (a
guest access, the I/O thread, a timer waking) adds one to `generation`, so an in-place
snapshot restore can tell that a device is still as it last matched a snapshot and leave
it alone (pyvisor/snapshot/devices.py). The snapshot engine takes the lock through
`held()`, which does not count: capturing or restoring a state is not a change.

A device that counts must change its state only under `with lock:`; what changes without
it (a C fast path, a timer) must take the lock too, or the device must not count."""
from __future__ import annotations

import threading


class CountingLock:
    """Reentrant, so a snapshot can hold it across a device's own snapshot_state and
    restore_state."""

    __slots__ = ("_lock", "generation")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.generation = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.generation += 1        # under the lock, before any change it covers

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def held(self) -> threading.RLock:
        """The lock itself, uncounted (the snapshot engine's, and a Condition's)."""
        return self._lock
