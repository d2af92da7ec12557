"""virtio-net: transmit chains to the tap and frames from the tap into receive buffers
(mergeable or not, headers split across descriptors). A datagram socketpair stands in for
the tap: one datagram is one frame with its vnet header."""
from __future__ import annotations

import os
import socket
import struct

from pyvisor._native import lib
from pyvisor.devices.virtio import net
from pyvisor.devices.virtio.net import HEADER_SIZE, RX, TX, NetSpec, VirtioNet

from ..devices import DeviceRig, Seed
from ..stream import Reader

ERRORS = ()
MRG_RXBUF = 1 << lib.VIRTIO_NET_F_MRG_RXBUF


class FakeTap:
    """The far end of the socketpair, and the I/O loop's watch on the near end."""

    def __init__(self) -> None:
        self.far, near = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.far.setblocking(False)
        near.setblocking(False)
        self.fd = near.detach()
        self.handler = None

    def watch(self, fd: int, handler) -> None:
        self.handler = handler

    def frame(self, r: Reader) -> None:
        """A frame from the network (header and payload from the input, zero-padded to a
        length from it), and the I/O loop noticing it."""
        data = r.bytes(r.u8())
        length = r.u16() % (net.MAX_FRAME + 1)
        try:
            self.far.send(data.ljust(length, b"\0"))
        except BlockingIOError:
            pass        # the host's socket is full: the frame is lost, as on a real tap
        if self.handler is not None:
            self.handler()

    def drain(self) -> None:
        """Forget what either side left unread by the last input."""
        for read in (self.far.recv, lambda n: os.read(self.fd, n)):
            try:
                while True:
                    read(1 << 17)
            except BlockingIOError:
                pass


def make():
    tap = FakeTap()
    ioctl = net.fcntl.ioctl
    net.open_tap = lambda name: tap.fd
    net.fcntl.ioctl = lambda fd, request, arg=0: (
        0 if fd == tap.fd and request == lib.TUNSETOFFLOAD else ioctl(fd, request, arg))
    device = VirtioNet(NetSpec("fuzz0", bytes.fromhex("525400123456")), tap.watch)
    rig = DeviceRig(device, request_queues={TX}, host_event=tap.frame)

    def run(data: bytes) -> None:
        tap.drain()
        rig.run(data)
    return run


def _frame(payload: bytes, flags: int = 0) -> bytes:
    """OP_HOST's arguments: header + payload, then the frame length."""
    frame = struct.pack("<BBHHHHH", flags, 0, 0, 0, 0, 0, 0) + payload
    return bytes([len(frame)]) + frame + struct.pack("<H", len(frame))


def seeds() -> list[bytes]:
    header = bytes(HEADER_SIZE)
    ping = b"\xff" * 6 + b"\x52\x54\x00\x12\x34\x56" + b"\x08\x00" + bytes(28)
    return [
        Seed(2).data(0, header + ping).chain(TX, 0, [(0, HEADER_SIZE + len(ping), False)])
        .publish(TX, 0).kick(TX).data_bytes(),
        Seed(2).data(0, header).data(0x100, ping)
        .chain(TX, 0, [(0, HEADER_SIZE, False), (0x100, len(ping), False)])
        .publish(TX, 0).kick(TX).data_bytes(),
        Seed(2).chain(RX, 0, [(0x1000, 1526, True)]).publish(RX, 0).kick(RX)
        .host(_frame(ping)).data_bytes(),
        # a header split over two descriptors, and a frame over two mergeable buffers
        Seed(2).chain(RX, 0, [(0x1000, 6, True), (0x1100, 100, True)])
        .chain(RX, 2, [(0x2000, 64, True)]).publish(RX, 0).publish(RX, 2).kick(RX)
        .host(_frame(ping + bytes(100), flags=1)).data_bytes(),
    ]
