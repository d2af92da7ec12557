"""virtio-pci register traffic: the common configuration, ISR, device configuration,
notifications, the MSI-X table and PBA in the BAR, and configuration space (capabilities,
the VIRTIO_PCI_CAP_PCI_CFG window, MSI-X enable, BAR moves)."""
from __future__ import annotations

from pyvisor._native import lib
from pyvisor.devices.virtio.pci import BAR_SIZE, VirtioPci

from ..stream import Writer
from ..transports import (OP_CONFIG_WRITE, OP_DRAIN, OP_INIT, OP_WRITE, Layout, NullRouter,
                          TransportRig, constants, null_wiring)

ERRORS = ()
SLOT = 1
BAR = 0xC0000000
L = lib
REGISTERS = {
    "device_feature_select": (L.VIRTIO_PCI_COMMON_DFSELECT, 4),
    "device_features": (L.VIRTIO_PCI_COMMON_DF, 4),
    "driver_feature_select": (L.VIRTIO_PCI_COMMON_GFSELECT, 4),
    "driver_features": (L.VIRTIO_PCI_COMMON_GF, 4),
    "status": (L.VIRTIO_PCI_COMMON_STATUS, 1),
    "queue_select": (L.VIRTIO_PCI_COMMON_Q_SELECT, 2),
    "queue_size": (L.VIRTIO_PCI_COMMON_Q_SIZE, 2),
    "queue_enable": (L.VIRTIO_PCI_COMMON_Q_ENABLE, 2),
    "desc_lo": (L.VIRTIO_PCI_COMMON_Q_DESCLO, 4), "desc_hi": (L.VIRTIO_PCI_COMMON_Q_DESCHI, 4),
    "driver_lo": (L.VIRTIO_PCI_COMMON_Q_AVAILLO, 4),
    "driver_hi": (L.VIRTIO_PCI_COMMON_Q_AVAILHI, 4),
    "device_lo": (L.VIRTIO_PCI_COMMON_Q_USEDLO, 4),
    "device_hi": (L.VIRTIO_PCI_COMMON_Q_USEDHI, 4),
}
# common configuration, ISR, device configuration, notify, MSI-X table and PBA
OFFSETS = (constants("VIRTIO_PCI_COMMON_") + [0x1000] + list(range(0x2000, 0x2040, 4))
           + list(range(0x3000, 0x3010, 4)) + list(range(0x4000, 0x4040, 4)) + [0x5000])


def _build(device, mem, loop):
    return VirtioPci(device, slot=SLOT, bar_address=BAR, memory=mem, router=NullRouter(),
                     io_loop=loop, irq_line=lambda gsi, level: None, **null_wiring())


def make():
    return TransportRig(_build, Layout(REGISTERS, OFFSETS, BAR_SIZE), config=True).run


def seeds() -> list[bytes]:
    notify = OFFSETS.index(0x3000)
    out = []
    for device, queues in enumerate((1, 2, 1)):      # rng, console, blk
        w = Writer().u8(device).u8(OP_INIT).raw(bytes(queues))
        # kick queue 0 and serve it; enable MSI-X (control word of the capability at 0x40
        # + the virtio capabilities: written at every dword, one will hit)
        w.u8(OP_WRITE).u8(notify).u8(0).u8(4).u8(0).u8(OP_DRAIN)
        for offset in range(0x40, 0x100, 4):
            w.u8(OP_CONFIG_WRITE).u8(offset).u8(2).u8(0).u32(0xC0000000)
        out.append(w.data())
    return out
