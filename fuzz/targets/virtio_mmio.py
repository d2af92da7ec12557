"""virtio-mmio register traffic: the 512-byte window (identification, features, queue
setup, notify, interrupt status and acknowledge, device configuration)."""
from __future__ import annotations

from pyvisor._native import lib
from pyvisor.devices.virtio.mmio import WINDOW, VirtioMmio

from ..stream import Writer
from ..transports import (OP_DRAIN, OP_INIT, OP_READ, OP_WRITE, Layout, TransportRig,
                          constants, null_wiring)

ERRORS = ()
BASE = 0xFE000000
GSI = 5
L = lib
REGISTERS = {
    "device_feature_select": (L.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4),
    "device_features": (L.VIRTIO_MMIO_DEVICE_FEATURES, 4),
    "driver_feature_select": (L.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4),
    "driver_features": (L.VIRTIO_MMIO_DRIVER_FEATURES, 4),
    "status": (L.VIRTIO_MMIO_STATUS, 4),
    "queue_select": (L.VIRTIO_MMIO_QUEUE_SEL, 4),
    "queue_size": (L.VIRTIO_MMIO_QUEUE_NUM, 4),
    "queue_enable": (L.VIRTIO_MMIO_QUEUE_READY, 4),
    "desc_lo": (L.VIRTIO_MMIO_QUEUE_DESC_LOW, 4), "desc_hi": (L.VIRTIO_MMIO_QUEUE_DESC_HIGH, 4),
    "driver_lo": (L.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 4),
    "driver_hi": (L.VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 4),
    "device_lo": (L.VIRTIO_MMIO_QUEUE_USED_LOW, 4),
    "device_hi": (L.VIRTIO_MMIO_QUEUE_USED_HIGH, 4),
}
OFFSETS = [o for o in constants("VIRTIO_MMIO_") if o % 4 == 0] + list(
    range(L.VIRTIO_MMIO_CONFIG, L.VIRTIO_MMIO_CONFIG + 0x40, 4))


def _build(device, mem, loop):
    return VirtioMmio(device, base=BASE, gsi=GSI, memory=mem, io_loop=loop, **null_wiring())


def make():
    return TransportRig(_build, Layout(REGISTERS, OFFSETS, WINDOW), config=False).run


def seeds() -> list[bytes]:
    notify = OFFSETS.index(L.VIRTIO_MMIO_QUEUE_NOTIFY)
    status = OFFSETS.index(L.VIRTIO_MMIO_INTERRUPT_STATUS)
    out = []
    for device, queues in enumerate((1, 2, 1)):      # rng, console, blk
        w = Writer().u8(device).u8(OP_INIT).raw(bytes(queues))
        w.u8(OP_WRITE).u8(notify).u8(0).u8(4).u8(0).u8(OP_DRAIN)    # kick queue 0
        w.u8(OP_READ).u8(status).u8(0)
        out.append(w.data())
    return out
