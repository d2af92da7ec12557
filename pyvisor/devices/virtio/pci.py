"""The virtio-pci modern transport (virtio 1.2, 4.1): one PCI function per virtio device.

Everything lives in one 64-bit memory BAR of 32 KiB, which pyvisor assigns like firmware
would (Linux keeps it; if the guest moves it, the MMIO range and the ioeventfds follow):

    0x0000  common configuration (struct virtio_pci_common_cfg)
    0x1000  ISR status (read to clear; INTx only)
    0x2000  device-specific configuration
    0x3000  notifications: queue n at 0x3000 + 4 n (notify_off_multiplier 4)
    0x4000  MSI-X table, 0x5000 MSI-X PBA

A queue notification is a KVM ioeventfd, so a kick costs the vCPU no exit to userspace:
the I/O thread sees the eventfd and runs the device. Interrupts go out as MSI-X through
irqfds (msix.py), or as INTx on the slot's IOAPIC pin while MSI-X is off.
"""
from __future__ import annotations

import os
import struct
import threading

from ..._native import lib
from ...acpi.platform import pci_intx_gsi
from ..bus import MmioBus
from ..io_loop import IoLoop
from ..pci.config_space import (BAR0, COMMAND, COMMAND_INTX_DISABLE, COMMAND_MEMORY,
                                PciConfigSpace)
from ..pci.function import PciFunction
from ..pci.msix import Msix
from ..state import DeviceStateError
from .device import QUEUE_INTERRUPT, VirtioDevice
from .transport import AREA_REGISTERS, TransportSnapshot, TransportState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

VENDOR_ID = 0x1AF4
MODERN_DEVICE_ID_BASE = 0x1040
SUBSYSTEM_ID = 0x40              # modern devices: any ID >= 0x40 (4.1.2.1)
CAP_ID_VENDOR = 0x09

BAR_INDEX = 0
BAR_SIZE = 0x8000
COMMON_OFFSET, COMMON_LENGTH = 0x0000, 0x40
ISR_OFFSET = 0x1000
DEVICE_OFFSET = 0x2000
NOTIFY_OFFSET = 0x3000
NOTIFY_MULTIPLIER = 4
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x5000
REGION = 0x1000

ISR_QUEUE = 0x1                  # bit 0: a used-buffer notification (4.1.4.5)
ISR_CONFIG = lib.VIRTIO_PCI_ISR_CONFIG

CLASS_CODES = {
    lib.VIRTIO_ID_NET: 0x020000,       # network controller, Ethernet
    lib.VIRTIO_ID_BLOCK: 0x018000,     # mass storage, other
    lib.VIRTIO_ID_CONSOLE: 0x078000,   # communication controller, other
    lib.VIRTIO_ID_RNG: 0x00FF00,       # unclassified
}

_Q = lib  # short alias for the common-configuration offsets below
NO_VECTOR = lib.VIRTIO_MSI_NO_VECTOR
# Common-configuration offsets of the registers both transports share (transport.py);
# queue_desc/driver/device are two 32-bit halves each (or one 64-bit access at the low one).
_COMMON_REGISTERS = {
    _Q.VIRTIO_PCI_COMMON_DFSELECT: "device_feature_select",
    _Q.VIRTIO_PCI_COMMON_DF: "device_features",
    _Q.VIRTIO_PCI_COMMON_GFSELECT: "driver_feature_select",
    _Q.VIRTIO_PCI_COMMON_GF: "driver_features",
    _Q.VIRTIO_PCI_COMMON_NUMQ: "num_queues",
    _Q.VIRTIO_PCI_COMMON_STATUS: "status",
    _Q.VIRTIO_PCI_COMMON_CFGGENERATION: "config_generation",
    _Q.VIRTIO_PCI_COMMON_Q_SELECT: "queue_select",
    _Q.VIRTIO_PCI_COMMON_Q_SIZE: "queue_size",
    _Q.VIRTIO_PCI_COMMON_Q_ENABLE: "queue_enable",
    _Q.VIRTIO_PCI_COMMON_Q_DESCLO: AREA_REGISTERS["desc_addr_lo"],
    _Q.VIRTIO_PCI_COMMON_Q_DESCHI: AREA_REGISTERS["desc_addr_hi"],
    _Q.VIRTIO_PCI_COMMON_Q_AVAILLO: AREA_REGISTERS["driver_addr_lo"],
    _Q.VIRTIO_PCI_COMMON_Q_AVAILHI: AREA_REGISTERS["driver_addr_hi"],
    _Q.VIRTIO_PCI_COMMON_Q_USEDLO: AREA_REGISTERS["device_addr_lo"],
    _Q.VIRTIO_PCI_COMMON_Q_USEDHI: AREA_REGISTERS["device_addr_hi"],
}


def _vendor_cap(cfg_type: int, offset: int, length: int, extra: bytes = b"") -> bytes:
    """A struct virtio_pci_cap body after cap_vndr/cap_next: cap_len, cfg_type, bar, id,
    padding, offset, length, then the type's extra fields."""
    return struct.pack("<BBBB2xII", 16 + len(extra), cfg_type, BAR_INDEX, 0, offset,
                       length) + extra


class VirtioPci(TransportSnapshot, PciFunction):
    def __init__(self, device: VirtioDevice, *, slot: int, bar_address: int, memory,
                 mmio_bus: MmioBus, vm, router, io_loop: IoLoop,
                 irq_line: Callable[[int, bool], None]) -> None:
        config = PciConfigSpace(VENDOR_ID, MODERN_DEVICE_ID_BASE + device.device_id,
                                CLASS_CODES.get(device.device_id, 0xFF0000), revision=1,
                                subsystem_vendor_id=VENDOR_ID, subsystem_id=SUBSYSTEM_ID,
                                interrupt_pin=1)
        super().__init__(config)
        self.device = device
        self.name = f"virtio-{device.name} (00:{slot:02x}.0)"
        self._vm = vm
        self._mmio_bus = mmio_bus
        self._irq_line = irq_line
        self._intx_gsi = pci_intx_gsi(slot, 0)
        self._isr = 0
        self._isr_lock = threading.Lock()
        self._state = TransportState(device)

        config.add_bar(BAR_INDEX, BAR_SIZE, "mem64")
        nqueues = len(device.queues)
        config.add_capability(CAP_ID_VENDOR, _vendor_cap(
            lib.VIRTIO_PCI_CAP_COMMON_CFG, COMMON_OFFSET, COMMON_LENGTH))
        config.add_capability(CAP_ID_VENDOR, _vendor_cap(
            lib.VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_OFFSET, max(NOTIFY_MULTIPLIER * nqueues, 2),
            struct.pack("<I", NOTIFY_MULTIPLIER)))
        config.add_capability(CAP_ID_VENDOR, _vendor_cap(lib.VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, 1))
        config.add_capability(CAP_ID_VENDOR, _vendor_cap(
            lib.VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_OFFSET, max(len(device.config), 1)))
        # VIRTIO_PCI_CAP_PCI_CFG: a window into the BAR through configuration space
        # (bar, offset, length and the 4-byte data field are the driver's to write).
        window = _vendor_cap(lib.VIRTIO_PCI_CAP_PCI_CFG, 0, 0, bytes(4))
        self._window = config.add_capability(
            CAP_ID_VENDOR, window, writable=bytes(2) + b"\xff" + bytes(3) + b"\xff" * 12)
        self.msix = Msix(config, nqueues + 1, BAR_INDEX, MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET,
                         router, vm)

        # Firmware's part: assign the BAR and enable memory decoding.
        config.write(BAR0, 4, bar_address & 0xFFFFFFFF)
        config.write(BAR0 + 4, 4, bar_address >> 32)
        config.write(COMMAND, 2, COMMAND_MEMORY)
        self._kick_fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(nqueues)]
        for index, fd in enumerate(self._kick_fds):
            io_loop.add_eventfd(fd, lambda index=index: device.notify(index))
        self._mapped: int | None = None
        self._map(bar_address)
        config.on_bar_change = self._bar_changed
        device.attach(memory, self._interrupt)

    # --- BAR placement --------------------------------------------------------------------
    def _map(self, address: int) -> None:
        self._mmio_bus.register(address, BAR_SIZE, self, self.name)   # first: it may refuse
        for index, fd in enumerate(self._kick_fds):
            self._vm.ioeventfd(fd, address + NOTIFY_OFFSET + NOTIFY_MULTIPLIER * index, 2)
        self._mapped = address

    def _unmap(self) -> None:
        for index, fd in enumerate(self._kick_fds):
            self._vm.ioeventfd(fd, self._mapped + NOTIFY_OFFSET + NOTIFY_MULTIPLIER * index, 2,
                               deassign=True)
        self._mmio_bus.unregister(self._mapped)
        self._mapped = None

    def _bar_changed(self, index: int, old: int | None, new: int | None) -> None:
        """Follow a BAR the guest moved. Decoding switched off (sizing) keeps the mapping:
        the guest does not touch the BAR meanwhile, and it usually comes back unchanged.
        An address that collides with another range (a 64-bit BAR half-written with
        decoding on) leaves the BAR unmapped until the guest writes a usable one."""
        if new is not None and new != self._mapped:
            if self._mapped is not None:
                self._unmap()
            try:
                self._map(new)
            except ValueError as exc:
                self.device.log.warning("%s: BAR not mapped: %s", self.name, exc)

    # --- configuration space --------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        data = self._window + 16   # pci_cfg_data follows the 16-byte virtio_pci_cap
        if data <= offset < data + 4:
            bar, start, length = self._window_target()
            if bar == BAR_INDEX and length in (1, 2, 4):
                return self.mmio_read(start, length)
        return super().config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        data = self._window + 16
        if data <= offset < data + 4:
            bar, start, length = self._window_target()
            if bar == BAR_INDEX and length in (1, 2, 4):
                self.mmio_write(start, length, value & ((1 << 8 * length) - 1))
            return
        super().config_write(offset, size, value)
        if offset <= self.msix.cap_offset + 3 and offset + size > self.msix.cap_offset + 2:
            self.msix.config_written()

    def _window_target(self) -> tuple[int, int, int]:
        cap = self._window       # bar at +4, offset at +8, length at +12
        return (self.config.read(cap + 4, 1), self.config.read(cap + 8, 4),
                self.config.read(cap + 12, 4))

    # --- the BAR --------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        region, off = offset & ~(REGION - 1), offset & (REGION - 1)
        if region == COMMON_OFFSET:
            return self._common_read(off, size)
        if region == ISR_OFFSET:
            with self._isr_lock:
                value, self._isr = self._isr, 0
                self._irq_line(self._intx_gsi, False)
            return value
        if region == DEVICE_OFFSET:
            return self.device.read_config(off, size)
        if region == MSIX_TABLE_OFFSET:
            return self.msix.table_read(off, size)
        if region == MSIX_PBA_OFFSET:
            return self.msix.pba_read(off, size)
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        region, off = offset & ~(REGION - 1), offset & (REGION - 1)
        if region == COMMON_OFFSET:
            self._common_write(off, size, value)
        elif region == DEVICE_OFFSET:
            self.device.write_config(off, size, value)
        elif region == NOTIFY_OFFSET:
            # A kick the ioeventfd did not catch (another width): same path, same thread.
            index = off // NOTIFY_MULTIPLIER
            if index < len(self._kick_fds):
                os.eventfd_write(self._kick_fds[index], 1)
        elif region == MSIX_TABLE_OFFSET:
            self.msix.table_write(off, size, value)

    def _common_read(self, off: int, size: int) -> int:
        dev, t = self.device, self._state
        with dev.lock:
            q = t.queue
            if off == _Q.VIRTIO_PCI_COMMON_MSIX:
                return dev.config_msix_vector
            if off == _Q.VIRTIO_PCI_COMMON_Q_MSIX:
                return q.msix_vector if q else NO_VECTOR
            if off == _Q.VIRTIO_PCI_COMMON_Q_NOFF:
                return t.queue_select
            register = _COMMON_REGISTERS.get(off)
            return t.read(register, size) if register else 0

    def _common_write(self, off: int, size: int, value: int) -> None:
        dev, t = self.device, self._state
        with dev.lock:
            q = t.queue_writable
            if off == _Q.VIRTIO_PCI_COMMON_MSIX:
                dev.config_msix_vector = value if value < self.msix.vectors else NO_VECTOR
            elif off == _Q.VIRTIO_PCI_COMMON_Q_MSIX:
                if q is not None:
                    q.msix_vector = value if value < self.msix.vectors else NO_VECTOR
            elif off in _COMMON_REGISTERS:
                if t.write(_COMMON_REGISTERS[off], value, size):   # a reset
                    with self._isr_lock:
                        self._isr = 0
                        self._irq_line(self._intx_gsi, False)

    # --- snapshots ------------------------------------------------------------------------
    def snapshot_state(self) -> dict:
        """Configuration space (BAR placement), MSI-X, the ISR, the transport selectors
        and the device with its queues."""
        with self.device.lock, self._isr_lock:
            return {**super().snapshot_state(), "msix": self.msix.snapshot_state(),
                    "isr": self._isr, "transport": self._state.snapshot_state()}

    def restore_state(self, state: dict) -> None:
        isr = state.get("isr")
        if not isinstance(isr, int) or not 0 <= isr <= 0xFF:
            raise DeviceStateError(f"{self.name}: the saved ISR is malformed")
        with self.device.lock:
            super().restore_state(state)           # the BAR moves with it, if it moved
            self.msix.restore_state(state.get("msix") or {})
            self._state.restore_state(state.get("transport") or {}, self._kick_fds)
            with self._isr_lock:
                self._isr = isr
                self._irq_line(self._intx_gsi, bool(isr) and
                               not self.config.command & COMMAND_INTX_DISABLE)

    # --- interrupts -----------------------------------------------------------------------
    def _interrupt(self, kind: str, vector: int) -> None:
        if self.msix.signal(vector):
            return
        with self._isr_lock:
            self._isr |= ISR_QUEUE if kind == QUEUE_INTERRUPT else ISR_CONFIG
            if not self.config.command & COMMAND_INTX_DISABLE:
                self._irq_line(self._intx_gsi, True)

    def close(self) -> None:
        self.msix.close()
        for fd in self._kick_fds:
            os.close(fd)
        self._kick_fds = []
        self.device.close()
