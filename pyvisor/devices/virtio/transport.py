"""What the virtio-pci and virtio-mmio transports share: the register semantics behind
feature windows, queue selection and the queue fields, which the two only lay out
differently (virtio 1.2, 4.1.4.3 and 4.2.2)."""
from __future__ import annotations

import os

from ..._native import lib
from .device import VirtioDevice
from ..state import capture, restore_fields
from .queue import Virtqueue

# Queue area fields, by the name Virtqueue uses; as registers, (field, bit shift) pairs.
DESC, DRIVER, DEVICE = "desc_addr", "driver_addr", "device_addr"
AREA_REGISTERS = {f"{field}_{half}": (field, shift) for field in (DESC, DRIVER, DEVICE)
                  for half, shift in (("lo", 0), ("hi", 32))}


class TransportState:
    """The driver-visible selectors of one device and the accesses they steer. Callers
    hold `device.lock`."""

    def __init__(self, device: VirtioDevice) -> None:
        self.device = device
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.queue_select = 0

    def reset(self) -> None:
        self.device_feature_select = self.driver_feature_select = self.queue_select = 0

    # --- snapshots (what both transports keep of a device) -------------------------------
    _SELECTORS = ("device_feature_select", "driver_feature_select", "queue_select")

    def snapshot_state(self) -> dict:
        """The selectors and the device (device.lock held by the caller)."""
        state = capture(self, self._SELECTORS)
        state["device"] = self.device.snapshot_state()
        return state

    def restore_state(self, state: dict, kick_fds: list[int]) -> None:
        """Back to a saved state; kicks that came after the snapshot are dropped (the
        driver state they belong to is gone)."""
        restore_fields(self, state, self._SELECTORS, self.device.name)
        self.device.restore_state(state.get("device") or {})
        drain_eventfds(kick_fds)

    def settle(self, kick_fds: list[int]) -> None:
        """Take pending kicks and serve every queue (before a snapshot)."""
        drain_eventfds(kick_fds)
        self.device.settle()

    @property
    def device_features_word(self) -> int:
        sel = self.device_feature_select
        return self.device.device_features >> (32 * sel) & 0xFFFFFFFF if sel < 2 else 0

    @property
    def driver_features_word(self) -> int:
        sel = self.driver_feature_select
        return self.device.driver_features >> (32 * sel) & 0xFFFFFFFF if sel < 2 else 0

    def write_driver_features(self, value: int) -> None:
        """Only before FEATURES_OK, and only the two words that exist."""
        dev, sel = self.device, self.driver_feature_select
        if sel < 2 and not dev.status & lib.VIRTIO_CONFIG_S_FEATURES_OK:
            shift = 32 * sel
            dev.driver_features = (dev.driver_features & ~(0xFFFFFFFF << shift)
                                   | (value & 0xFFFFFFFF) << shift)

    @property
    def queue(self) -> Virtqueue | None:
        queues = self.device.queues
        return queues[self.queue_select] if self.queue_select < len(queues) else None

    @property
    def queue_writable(self) -> Virtqueue | None:
        """The selected queue while the driver may still set it up (before DRIVER_OK)."""
        if self.device.status & lib.VIRTIO_CONFIG_S_DRIVER_OK:
            return None
        return self.queue

    def read_queue_area(self, field: str, shift: int, size: int) -> int:
        q = self.queue
        return 0 if q is None else getattr(q, field) >> shift & ((1 << 8 * size) - 1)

    def write_queue_area(self, field: str, shift: int, size: int, value: int) -> None:
        q = self.queue_writable
        if q is not None:
            mask = ((1 << 8 * size) - 1) << shift
            setattr(q, field, getattr(q, field) & ~mask | (value << shift) & mask)

    # --- registers by name: each transport maps its offsets to these ---------------------
    def read(self, register: str | tuple[str, int], size: int = 4) -> int:
        """A register both transports have; queue areas are (field, shift) pairs."""
        if isinstance(register, tuple):
            return self.read_queue_area(*register, size)
        dev, q = self.device, self.queue
        if register == "device_features":
            return self.device_features_word
        if register == "driver_features":
            return self.driver_features_word
        if register == "num_queues":
            return len(dev.queues)
        if register in ("status", "config_generation"):
            return getattr(dev, register)
        if register in ("device_feature_select", "driver_feature_select", "queue_select"):
            return getattr(self, register)
        if q is None:
            return 0
        return {"queue_size": q.size, "queue_size_max": q.max_size,
                "queue_enable": int(q.enabled)}.get(register, 0)

    def write(self, register: str | tuple[str, int], value: int, size: int = 4) -> bool:
        """Write a register both transports have; True when that reset the device."""
        if isinstance(register, tuple):
            self.write_queue_area(*register, size, value)
        elif register in ("device_feature_select", "driver_feature_select", "queue_select"):
            setattr(self, register, value)
        elif register == "driver_features":
            self.write_driver_features(value)
        elif register == "status":
            return self.write_status(value)
        elif (q := self.queue_writable) is not None:
            if register == "queue_size":
                q.size = value
            elif register == "queue_enable":
                q.enabled = q.enabled or value == 1
        return False

    def write_status(self, value: int) -> bool:
        """The driver wrote the status register; True when that reset the device. Only
        the low byte is the status: a wider write of 0x100 is a reset like 0."""
        value &= 0xFF
        self.device.set_status(value)
        if value == 0:
            self.reset()
            return True
        return False


def drain_eventfds(fds: list[int]) -> None:
    """Reset eventfd counters without acting on them."""
    for fd in fds:
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            pass


class TransportSnapshot:
    """The snapshot side both transports share; they hold `device` (the VirtioDevice),
    `_state` (their TransportState) and `_kick_fds` (the queue notification eventfds)."""

    @property
    def state_lock(self):
        """Held across a whole snapshot or restore: the I/O thread serves nothing meanwhile."""
        return self.device.lock

    def settle(self) -> None:
        with self.device.lock:
            self._state.settle(self._kick_fds)

    def guest_areas(self) -> list[tuple[int, int]]:
        return self.device.guest_areas()
