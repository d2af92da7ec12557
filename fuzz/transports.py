"""Drive a virtio device only through its transport, as a guest does: register reads and
writes (virtio-pci's BAR and configuration space, or a virtio-mmio window), kicks that
reach the device as the I/O thread would serve them, and the ring ops of guest.Rings.

Each input builds a fresh device behind a fresh transport (picked by its first byte:
rng, console or blk) and closes both at the end, so no state leaks between inputs. An
input is a program of ops; INIT is the whole driver initialisation of 3.1.1 through the
registers with the rings of guest.py, so a few bytes reach DRIVER_OK. After each op the
devices.Watch checks hold, and every read returns a value a vCPU can complete (0 to
2^64 - 1).
"""
from __future__ import annotations

import itertools
import os
from typing import Callable

from pyvisor._native import lib
from pyvisor.devices.bus import MmioBus
from pyvisor.devices.virtio.blk import DiskSpec, VirtioBlk
from pyvisor.devices.virtio.console import VirtioConsole
from pyvisor.devices.virtio.device import ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK
from pyvisor.devices.virtio.rng import VirtioRng

from .devices import InvariantError, Watch
from .guest import (RING_OPS, Rings, clear_scratch, guest_memory, ring_addresses)
from .memfile import MemFile
from .stream import Reader

DISK_SIZE = 1 << 20
OP_READ, OP_WRITE, OP_CONFIG_READ, OP_CONFIG_WRITE, OP_DRAIN, OP_INIT = range(
    RING_OPS, RING_OPS + 6)
OPS = RING_OPS + 6
STATUS_VALUES = (0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, ACKNOWLEDGE | DRIVER | FEATURES_OK,
                 ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK, 0x100, 0xFF,
                 lib.VIRTIO_CONFIG_S_NEEDS_RESET)


# --- what a transport is wired to, doing nothing (nothing to record across inputs) -------
class NullVm:
    def ioeventfd(self, fd, addr, length, *, pio=False, datamatch=None, deassign=False):
        pass

    def irqfd(self, fd, gsi, *, deassign=False):
        pass

    def set_gsi_routing(self, routes):
        pass


class NullRouter:
    def __init__(self) -> None:
        self._next = itertools.count(24)

    def allocate(self) -> int:
        return next(self._next)

    def set_msi(self, gsi, address, data):
        pass


class KickLoop:
    """The I/O loop's part: the kick eventfds, served on request (OP_DRAIN)."""

    def __init__(self) -> None:
        self.kicks: list[tuple[int, Callable[[], None]]] = []

    def add_eventfd(self, fd, handler):
        self.kicks.append((fd, handler))

    def add(self, fd, handler):
        pass

    def remove(self, fd):
        pass

    def drain(self) -> set[int]:
        """Serve every signalled kick; return the queues kicked."""
        kicked = set()
        for index, (fd, handler) in enumerate(self.kicks):
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                continue
            handler()
            kicked.add(index)
        return kicked


class Layout:
    """One transport's registers, by the role INIT and the value selectors give them:
    name -> (offset, width); `offsets` are the offsets worth hitting besides raw ones."""

    def __init__(self, registers: dict[str, tuple[int, int]], offsets: list[int],
                 window: int) -> None:
        self.registers, self.offsets, self.window = registers, offsets, window


def _disk() -> VirtioBlk:
    disk = MemFile("fuzz-disk")
    disk.resize(DISK_SIZE)
    device = VirtioBlk(DiskSpec(disk.path, serial="FUZZ"))
    os.close(disk.fd)      # the device holds its own descriptor
    return device


DEVICES = ((VirtioRng, {0}), (lambda: VirtioConsole(lambda data: None), {1}), (_disk, {0}))


class TransportRig:
    """`build(device, mem, loop)` puts a device behind the transport and returns it;
    `config` says whether it has a PCI configuration space (config_read/config_write)."""

    def __init__(self, build: Callable, layout: Layout, config: bool) -> None:
        self.build, self.layout, self.config = build, layout, config
        self.mem = guest_memory()

    def run(self, data: bytes) -> None:
        r = Reader(data)
        make, request_queues = DEVICES[r.u8() % len(DEVICES)]
        device = make()
        loop = KickLoop()
        transport = self.build(device, self.mem, loop)
        try:
            watch = Watch(device, request_queues)
            clear_scratch(self.mem)
            rings = Rings(self.mem, [q.size for q in device.queues])
            while r.more:
                code = r.u8() % OPS
                kicked: set[int] = set()
                rings.sizes = [q.size for q in device.queues]
                if code < RING_OPS:
                    rings.op(code, r)
                    continue
                if code == OP_READ:
                    self._check_read(transport.mmio_read(*self._access(r)))
                elif code == OP_WRITE:
                    offset, size = self._access(r)
                    transport.mmio_write(offset, size, self._value(r, device, size))
                elif code == OP_CONFIG_READ and self.config:
                    self._check_read(transport.config_read(r.u8(), r.pick((1, 2, 4))))
                elif code == OP_CONFIG_WRITE and self.config:
                    offset, size = r.u8(), r.pick((1, 2, 4))
                    transport.config_write(offset, size, self._value(r, device, size))
                elif code == OP_DRAIN:
                    kicked = loop.drain()
                elif code == OP_INIT:
                    self._init(r, transport, device)
                watch.check(self.mem, kicked)
            watch.check(self.mem, loop.drain())
        finally:
            transport.close()

    def _access(self, r: Reader) -> tuple[int, int]:
        sel = r.u8()
        offsets = self.layout.offsets
        offset = offsets[sel % len(offsets)] if sel < 0xC0 else r.u16() % self.layout.window
        return offset, r.pick((4, 4, 1, 2, 8))

    def _value(self, r: Reader, device, size: int) -> int:
        sel = r.u8() % 8
        if sel == 0:
            value = r.u32()
        elif sel == 1:
            value = r.u64()
        elif sel == 2:
            value = r.pick(STATUS_VALUES)
        elif sel == 3:
            area = r.u8()
            value = ring_addresses(area >> 2)[area % 3] >> (32 if area & 0x80 else 0)
        elif sel == 4:
            value = r.u8()
        elif sel == 5:
            value = 1 << r.u8() % 17
        elif sel == 6:
            value = device.device_features >> (32 * (r.u8() & 1))
        else:
            value = 0xFFFFFFFF
        return value & ((1 << 8 * size) - 1)

    @staticmethod
    def _check_read(value: int) -> None:
        if not 0 <= value < 1 << 64:
            raise InvariantError(f"a register read returned {value:#x}, which no vCPU can "
                                 f"complete")

    def _init(self, r: Reader, transport, device) -> None:
        """3.1.1 through the registers: reset, ACKNOWLEDGE, DRIVER, every offered feature,
        FEATURES_OK, each queue (size from the input, the rings of guest.py, enabled),
        DRIVER_OK."""
        regs = self.layout.registers

        def write(name: str, value: int) -> None:
            offset, width = regs[name]
            transport.mmio_write(offset, width, value & ((1 << 8 * width) - 1))

        def read(name: str) -> int:
            return transport.mmio_read(*regs[name])

        write("status", 0)
        write("status", ACKNOWLEDGE)
        write("status", ACKNOWLEDGE | DRIVER)
        for word in (0, 1):
            write("device_feature_select", word)
            features = read("device_features")
            write("driver_feature_select", word)
            write("driver_features", features)
        write("status", ACKNOWLEDGE | DRIVER | FEATURES_OK)
        for index, q in enumerate(device.queues):
            write("queue_select", index)
            write("queue_size", q.max_size >> r.u8() % 9)
            for name, addr in zip(("desc", "driver", "device"), ring_addresses(index)):
                write(f"{name}_lo", addr)
                write(f"{name}_hi", addr >> 32)
            write("queue_enable", 1)
        write("status", ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)


def constants(prefix: str) -> list[int]:
    """The values of every lib constant named PREFIX*: the registers the headers name."""
    return sorted({getattr(lib, n) for n in dir(lib) if n.startswith(prefix)})


def null_wiring() -> dict:
    """What a transport's constructor needs besides the device and the loop."""
    return {"mmio_bus": MmioBus(), "vm": NullVm()}
