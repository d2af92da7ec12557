"""What every virtio device shares, whatever the transport: feature bits, the device status
state machine, the queues, and the rule that a driver error stops the device until reset.

A concrete device (blk.py, rng.py, ...) is its device ID, its feature bits, its
configuration space and `handle_queue(index, queue)`. The transport (pci.py) owns the
registers, calls `set_status`, `queue`, `read_config`/`write_config`, and gives the
device `interrupt(kind, vector)` to signal the driver.
"""
from __future__ import annotations

import threading

from ..._native import lib
from ...log import get_logger
from ...memory.guest_memory import GuestMemory
from ..ratelimit import RateLimitedLog
from ..state import DeviceStateError, capture, restore_fields
from .queue import QueueError, Virtqueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

log = get_logger("pyvisor.virtio")

VERSION_1 = 1 << lib.VIRTIO_F_VERSION_1
RING_FEATURES = (1 << lib.VIRTIO_RING_F_INDIRECT_DESC) | (1 << lib.VIRTIO_RING_F_EVENT_IDX)

ACKNOWLEDGE = lib.VIRTIO_CONFIG_S_ACKNOWLEDGE
DRIVER = lib.VIRTIO_CONFIG_S_DRIVER
DRIVER_OK = lib.VIRTIO_CONFIG_S_DRIVER_OK
FEATURES_OK = lib.VIRTIO_CONFIG_S_FEATURES_OK
NEEDS_RESET = lib.VIRTIO_CONFIG_S_NEEDS_RESET
FAILED = lib.VIRTIO_CONFIG_S_FAILED

# interrupt(kind, vector): a used-buffer notification or a configuration change
QUEUE_INTERRUPT = "queue"
CONFIG_INTERRUPT = "config"


class VirtioDevice:
    """Base class. Subclasses set `device_id`, `name`, `queue_sizes`, call
    `super().__init__(features)` and fill `self.config`; they implement `handle_queue`
    and may override `on_activate`, `on_reset` and `write_config`."""

    device_id: int = 0
    name: str = "virtio"
    queue_sizes: tuple[int, ...] = ()

    def __init__(self, features: int = 0) -> None:
        self.device_features = features | VERSION_1 | RING_FEATURES
        self.driver_features = 0
        self.status = 0
        self.config = bytearray()
        self.config_generation = 0
        self.config_msix_vector = lib.VIRTIO_MSI_NO_VECTOR
        self.queues = [Virtqueue(size) for size in self.queue_sizes]
        self.memory: GuestMemory | None = None
        self.interrupt: Callable[[str, int], None] = lambda kind, vector: None
        # Serialises queue processing (I/O thread) with status changes (vCPU threads).
        self.lock = threading.RLock()
        # What a guest can trigger over and over (bad chains, then a reset) is logged here.
        self.log = RateLimitedLog(log)

    # --- transport side -------------------------------------------------------------------
    def attach(self, memory: GuestMemory, interrupt: Callable[[str, int], None]) -> None:
        self.memory = memory
        self.interrupt = interrupt

    def has_feature(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    def set_status(self, value: int) -> None:
        """A driver write to device_status (spec 2.1 and 3.1)."""
        with self.lock:
            if value == 0:
                self.reset()
                return
            if value & FEATURES_OK and not self.status & FEATURES_OK:
                if self.driver_features & ~self.device_features or \
                        not self.driver_features & VERSION_1:
                    self.log.warning("%s: driver features %#x refused (offered %#x)",
                                     self.name, self.driver_features, self.device_features)
                    value &= ~FEATURES_OK
            newly_ok = value & DRIVER_OK and not self.status & DRIVER_OK
            self.status = value | (self.status & NEEDS_RESET)
            if newly_ok and not self.status & NEEDS_RESET:
                if self.status & FEATURES_OK:
                    self._activate()
                else:   # DRIVER_OK without agreed features: serve nothing until a reset
                    self.fail("the driver set DRIVER_OK without FEATURES_OK")

    def _activate(self) -> None:
        event_idx = self.has_feature(lib.VIRTIO_RING_F_EVENT_IDX)
        indirect = self.has_feature(lib.VIRTIO_RING_F_INDIRECT_DESC)
        try:
            for q in self.queues:
                if q.enabled:
                    q.activate(self.memory, event_idx=event_idx, indirect=indirect)
        except QueueError as exc:
            self.fail(str(exc))
            return
        try:
            self.on_activate()
        except Exception as exc:   # on a vCPU thread: contain it as serve() does
            self.fail(f"{type(exc).__name__} while starting: {exc}")

    def reset(self) -> None:
        with self.lock:
            self.on_reset()
            self.status = 0
            self.driver_features = 0
            self.config_msix_vector = lib.VIRTIO_MSI_NO_VECTOR
            for q in self.queues:
                q.reset()

    @property
    def running(self) -> bool:
        return self.status & DRIVER_OK and not self.status & NEEDS_RESET

    def notify(self, index: int) -> None:
        """The driver kicked queue `index` (I/O thread): process it, then interrupt if the
        driver wants one."""
        self.serve(index, self.handle_queue)

    def serve(self, index: int, work: Callable[[int, Virtqueue], None]) -> None:
        """Run `work(index, queue)` under the lock if the device runs and the queue is set
        up, then interrupt if the driver wants one. A driver error stops the device until
        the driver resets it; so does any other exception (MemoryError included): the
        queue is left to the reset, never half-served, and the I/O thread carries on."""
        with self.lock:
            if not self.running or index >= len(self.queues) or not self.queues[index].ready:
                return
            queue = self.queues[index]
            try:
                work(index, queue)
            except QueueError as exc:
                self.fail(f"queue {index}: {exc}")
            except Exception as exc:   # a device bug or host trouble: contain it here
                self.fail(f"queue {index}: {type(exc).__name__} while serving it: {exc}")
            self.signal_used(queue)

    def signal_used(self, queue: Virtqueue) -> None:
        if queue.ready and queue.needs_interrupt():
            self.interrupt(QUEUE_INTERRUPT, queue.msix_vector)

    def fail(self, why: str) -> None:
        """Stop serving the driver and tell it (DEVICE_NEEDS_RESET and a config interrupt),
        as the spec asks for an unrecoverable driver error (2.1.2)."""
        self.log.error("%s: %s; the device needs a reset", self.name, why)
        self.status |= NEEDS_RESET
        self.interrupt(CONFIG_INTERRUPT, self.config_msix_vector)

    def read_config(self, offset: int, size: int) -> int:
        data = self.config[offset:offset + size]
        return int.from_bytes(data.ljust(size, b"\0"), "little")

    def write_config(self, offset: int, size: int, value: int) -> None:
        """Configuration space is read-only unless a device says otherwise."""

    # --- snapshots (callers hold the lock) --------------------------------------------------
    _STATE = ("driver_features", "status", "config_generation", "config_msix_vector")

    def snapshot_state(self) -> dict:
        """Status, features, configuration space and the queues; a device adds what it
        holds itself (device_state)."""
        state = capture(self, self._STATE)
        state["config"] = bytes(self.config)
        state["queues"] = [q.snapshot_state() for q in self.queues]
        state["device"] = self.device_state()
        return state

    def restore_state(self, state: dict) -> None:
        restore_fields(self, state, self._STATE, self.name)
        config, queues = state.get("config"), state.get("queues")
        if not isinstance(config, bytes) or len(config) != len(self.config) or \
                not isinstance(queues, list) or len(queues) != len(self.queues):
            raise DeviceStateError(f"{self.name}: the saved configuration or queues do not fit")
        self.config[:] = config
        for queue, saved in zip(self.queues, queues):
            queue.restore_state(saved, self.memory)
        self.restore_device_state(state.get("device") or {})

    def device_state(self) -> dict:
        """What this kind of device holds beyond the common state (none by default)."""
        return {}

    def restore_device_state(self, state: dict) -> None:
        """Put device_state() back."""

    def guest_areas(self) -> list[tuple[int, int]]:
        """Guest RAM this device writes through views it keeps: the used rings."""
        return [area for q in self.queues if (area := q.used_area()) is not None]

    def settle(self) -> None:
        """Serve every queue now (lock held), so a snapshot holds no request half-seen:
        a kick the I/O thread has taken but not yet served is served here."""
        for index in range(len(self.queues)):
            self.notify(index)

    # --- device side ----------------------------------------------------------------------
    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        raise NotImplementedError

    def on_activate(self) -> None:
        """The driver set DRIVER_OK: queues are live."""

    def on_reset(self) -> None:
        """The driver reset the device: drop in-flight state."""

    def close(self) -> None:
        """Release host resources (files, fds)."""
