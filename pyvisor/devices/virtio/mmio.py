"""The virtio-mmio transport (virtio 1.2, 4.2): a 512-byte register window per device and
one interrupt line, for guests without PCI or that find devices on their command line
(`virtio_mmio.device=512@0xfe000000:5`) or in the ACPI DSDT (_HID LNRO0005).

Queue kicks are writes of the queue index to QueueNotify, caught by one ioeventfd per
queue (datamatch on the index) and served on the I/O thread like virtio-pci's. The
interrupt is an edge on an ISA GSI sent through an irqfd; InterruptStatus says why.
"""
from __future__ import annotations

import os
import threading

from ..._native import lib
from ..bus import MmioBus
from ..io_loop import IoLoop
from ..state import DeviceStateError
from .device import QUEUE_INTERRUPT, VirtioDevice
from .transport import AREA_REGISTERS, TransportSnapshot, TransportState

WINDOW = 0x200
MAGIC = 0x74726976          # "virt"
VERSION = 2                 # the virtio 1.x register layout
VENDOR_ID = 0x1AF4

_R = lib
# Registers whose value never changes (DeviceID is the device's; SHM lengths of ~0: none).
_CONSTANTS = {
    _R.VIRTIO_MMIO_MAGIC_VALUE: MAGIC, _R.VIRTIO_MMIO_VERSION: VERSION,
    _R.VIRTIO_MMIO_DEVICE_ID: 0, _R.VIRTIO_MMIO_VENDOR_ID: VENDOR_ID,
    _R.VIRTIO_MMIO_SHM_LEN_LOW: 0xFFFFFFFF, _R.VIRTIO_MMIO_SHM_LEN_HIGH: 0xFFFFFFFF,
}
# Registers both transports share (transport.py), by their virtio-mmio offsets.
_REGISTERS = {
    _R.VIRTIO_MMIO_DEVICE_FEATURES: "device_features",
    _R.VIRTIO_MMIO_DEVICE_FEATURES_SEL: "device_feature_select",
    _R.VIRTIO_MMIO_DRIVER_FEATURES: "driver_features",
    _R.VIRTIO_MMIO_DRIVER_FEATURES_SEL: "driver_feature_select",
    _R.VIRTIO_MMIO_QUEUE_SEL: "queue_select",
    _R.VIRTIO_MMIO_QUEUE_NUM_MAX: "queue_size_max",
    _R.VIRTIO_MMIO_QUEUE_NUM: "queue_size",
    _R.VIRTIO_MMIO_QUEUE_READY: "queue_enable",
    _R.VIRTIO_MMIO_STATUS: "status",
    _R.VIRTIO_MMIO_CONFIG_GENERATION: "config_generation",
    _R.VIRTIO_MMIO_QUEUE_DESC_LOW: AREA_REGISTERS["desc_addr_lo"],
    _R.VIRTIO_MMIO_QUEUE_DESC_HIGH: AREA_REGISTERS["desc_addr_hi"],
    _R.VIRTIO_MMIO_QUEUE_AVAIL_LOW: AREA_REGISTERS["driver_addr_lo"],
    _R.VIRTIO_MMIO_QUEUE_AVAIL_HIGH: AREA_REGISTERS["driver_addr_hi"],
    _R.VIRTIO_MMIO_QUEUE_USED_LOW: AREA_REGISTERS["device_addr_lo"],
    _R.VIRTIO_MMIO_QUEUE_USED_HIGH: AREA_REGISTERS["device_addr_hi"],
}


class VirtioMmio(TransportSnapshot):
    def __init__(self, device: VirtioDevice, *, base: int, gsi: int, memory,
                 mmio_bus: MmioBus, vm, io_loop: IoLoop) -> None:
        self.device = device
        self.base, self.gsi = base, gsi
        self.name = f"virtio-{device.name} (mmio {base:#x}, GSI {gsi})"
        self._state = TransportState(device)
        self._status_lock = threading.Lock()
        self._interrupt_status = 0
        self._irqfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        vm.irqfd(self._irqfd, gsi)
        self._kick_fds = []
        notify = base + lib.VIRTIO_MMIO_QUEUE_NOTIFY
        for index in range(len(device.queues)):
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._kick_fds.append(fd)
            io_loop.add_eventfd(fd, lambda index=index: device.notify(index))
            vm.ioeventfd(fd, notify, 4, datamatch=index)
        mmio_bus.register(base, WINDOW, self, self.name)
        device.attach(memory, self._interrupt)

    def mmio_read(self, offset: int, size: int) -> int:
        dev, t = self.device, self._state
        if offset >= lib.VIRTIO_MMIO_CONFIG:
            return dev.read_config(offset - lib.VIRTIO_MMIO_CONFIG, size)
        if offset in _CONSTANTS:
            return _CONSTANTS[offset] if offset != lib.VIRTIO_MMIO_DEVICE_ID else dev.device_id
        if offset == lib.VIRTIO_MMIO_INTERRUPT_STATUS:
            return self._interrupt_status
        with dev.lock:
            register = _REGISTERS.get(offset)
            return t.read(register) if register else 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        dev, t = self.device, self._state
        if offset >= lib.VIRTIO_MMIO_CONFIG:
            dev.write_config(offset - lib.VIRTIO_MMIO_CONFIG, size, value)
        elif offset == lib.VIRTIO_MMIO_QUEUE_NOTIFY:
            # A kick the ioeventfd did not catch (another width): same path, same thread.
            if value < len(self._kick_fds):
                os.eventfd_write(self._kick_fds[value], 1)
        elif offset == lib.VIRTIO_MMIO_INTERRUPT_ACK:
            with self._status_lock:
                self._interrupt_status &= ~value
        elif offset in _REGISTERS:
            with dev.lock:
                if t.write(_REGISTERS[offset], value):       # a reset
                    with self._status_lock:
                        self._interrupt_status = 0

    # --- snapshots ------------------------------------------------------------------------
    def snapshot_state(self) -> dict:
        """InterruptStatus, the transport selectors and the device with its queues."""
        with self.device.lock, self._status_lock:
            return {"interrupt_status": self._interrupt_status,
                    "transport": self._state.snapshot_state()}

    def restore_state(self, state: dict) -> None:
        status = state.get("interrupt_status")
        if not isinstance(status, int) or not 0 <= status <= 0xFFFFFFFF:
            raise DeviceStateError(f"{self.name}: the saved interrupt status is malformed")
        with self.device.lock:
            self._state.restore_state(state.get("transport") or {}, self._kick_fds)
            with self._status_lock:
                self._interrupt_status = status

    def _interrupt(self, kind: str, vector: int) -> None:
        with self._status_lock:
            self._interrupt_status |= (lib.VIRTIO_MMIO_INT_VRING if kind == QUEUE_INTERRUPT
                                       else lib.VIRTIO_MMIO_INT_CONFIG)
        os.eventfd_write(self._irqfd, 1)

    def close(self) -> None:
        for fd in self._kick_fds + ([self._irqfd] if self._irqfd >= 0 else []):
            os.close(fd)
        self._kick_fds, self._irqfd = [], -1
        self.device.close()
