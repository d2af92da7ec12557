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
from .device import QUEUE_INTERRUPT, VirtioDevice
from .transport import DESC, DEVICE, DRIVER, TransportState

WINDOW = 0x200
MAGIC = 0x74726976          # "virt"
VERSION = 2                 # the virtio 1.x register layout
VENDOR_ID = 0x1AF4

_R = lib
_AREA_FIELDS = {
    _R.VIRTIO_MMIO_QUEUE_DESC_LOW: (DESC, 0), _R.VIRTIO_MMIO_QUEUE_DESC_HIGH: (DESC, 32),
    _R.VIRTIO_MMIO_QUEUE_AVAIL_LOW: (DRIVER, 0), _R.VIRTIO_MMIO_QUEUE_AVAIL_HIGH: (DRIVER, 32),
    _R.VIRTIO_MMIO_QUEUE_USED_LOW: (DEVICE, 0), _R.VIRTIO_MMIO_QUEUE_USED_HIGH: (DEVICE, 32),
}


class VirtioMmio:
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
        with dev.lock:
            q = t.queue
            if offset in _AREA_FIELDS:
                field, shift = _AREA_FIELDS[offset]
                return t.read_queue_area(field, shift, 4)
            if offset == lib.VIRTIO_MMIO_MAGIC_VALUE:
                return MAGIC
            if offset == lib.VIRTIO_MMIO_VERSION:
                return VERSION
            if offset == lib.VIRTIO_MMIO_DEVICE_ID:
                return dev.device_id
            if offset == lib.VIRTIO_MMIO_VENDOR_ID:
                return VENDOR_ID
            if offset == lib.VIRTIO_MMIO_DEVICE_FEATURES:
                return t.device_features_word
            if offset == lib.VIRTIO_MMIO_QUEUE_NUM_MAX:
                return q.max_size if q else 0
            if offset == lib.VIRTIO_MMIO_QUEUE_READY:
                return int(q.enabled) if q else 0
            if offset == lib.VIRTIO_MMIO_INTERRUPT_STATUS:
                return self._interrupt_status
            if offset == lib.VIRTIO_MMIO_STATUS:
                return dev.status
            if offset == lib.VIRTIO_MMIO_CONFIG_GENERATION:
                return dev.config_generation
            if offset in (lib.VIRTIO_MMIO_SHM_LEN_LOW, lib.VIRTIO_MMIO_SHM_LEN_HIGH):
                return 0xFFFFFFFF          # no shared memory regions
            return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        dev, t = self.device, self._state
        if offset >= lib.VIRTIO_MMIO_CONFIG:
            dev.write_config(offset - lib.VIRTIO_MMIO_CONFIG, size, value)
            return
        if offset == lib.VIRTIO_MMIO_QUEUE_NOTIFY:
            # A kick the ioeventfd did not catch (another width): same path, same thread.
            if value < len(self._kick_fds):
                os.eventfd_write(self._kick_fds[value], 1)
            return
        with dev.lock:
            q = t.queue_writable
            if offset in _AREA_FIELDS:
                field, shift = _AREA_FIELDS[offset]
                t.write_queue_area(field, shift, 4, value)
            elif offset == lib.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
                t.device_feature_select = value
            elif offset == lib.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
                t.driver_feature_select = value
            elif offset == lib.VIRTIO_MMIO_DRIVER_FEATURES:
                t.write_driver_features(value)
            elif offset == lib.VIRTIO_MMIO_QUEUE_SEL:
                t.queue_select = value
            elif offset == lib.VIRTIO_MMIO_QUEUE_NUM and q is not None:
                q.size = value
            elif offset == lib.VIRTIO_MMIO_QUEUE_READY and q is not None:
                q.enabled = value == 1
            elif offset == lib.VIRTIO_MMIO_INTERRUPT_ACK:
                with self._status_lock:
                    self._interrupt_status &= ~value
            elif offset == lib.VIRTIO_MMIO_STATUS:
                if t.write_status(value):
                    with self._status_lock:
                        self._interrupt_status = 0

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
