"""virtio-net's host side (pyvisor/devices/virtio/net.py): receive into posted buffers
(header framing, mergeable buffers, flags), transmit, back-pressure and offload setup.
A datagram socketpair stands in for the tap: each datagram is one vnet-header frame."""
import os
import socket
import struct

import pytest

from pyvisor._native import lib
from pyvisor.devices.state import DeviceStateError
from pyvisor.devices.virtio import net
from pyvisor.devices.virtio.device import NEEDS_RESET
from pyvisor.devices.virtio.net import HEADER_SIZE, RX, TX, NetSpec, VirtioNet
from virtio_driver import VERSION_1, Buf, Driver, init_device, new_memory

MAC = bytes.fromhex("525400abcdef")
DATA_VALID = 2    # VIRTIO_NET_HDR_F_DATA_VALID, what a tap may set on a received frame


def bit(name: str) -> int:
    return 1 << getattr(lib, f"VIRTIO_NET_F_{name}")


class Tap:
    """The far end of the fake tap, plus what the device asked of it."""

    def __init__(self, monkeypatch):
        self.far, near = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        near.setblocking(False)
        self.fd = near.detach()
        self.offloads: list[int] = []
        self.watched: dict[int, object] = {}
        monkeypatch.setattr(net, "open_tap", lambda name: self.fd)
        monkeypatch.setattr(net.fcntl, "ioctl", self._ioctl)

    def _ioctl(self, fd, request, arg):
        assert fd == self.fd and request == lib.TUNSETOFFLOAD
        self.offloads.append(arg)

    def watch(self, fd, handler):
        if handler is None:
            self.watched.pop(fd, None)
        else:
            self.watched[fd] = handler

    def send(self, frame: bytes) -> None:
        """A frame from the host network, and the I/O loop noticing it."""
        self.far.send(frame)
        if self.fd in self.watched:
            self.watched[self.fd]()


@pytest.fixture
def tap(monkeypatch):
    t = Tap(monkeypatch)
    yield t
    t.far.close()


@pytest.fixture
def dev(tap):
    d = VirtioNet(NetSpec("pv-test", MAC), tap.watch)
    yield d
    d.close()


def start(dev, features, size=8):
    mem = new_memory()
    rx, tx = Driver(mem, size), Driver(mem, size, base=0x20000, data_base=0x180000)
    calls = init_device(dev, mem, [rx, tx], features=features | 1 << VERSION_1)
    return rx, tx, calls


def header(flags=0, gso=0) -> bytes:
    return struct.pack("<BBHHHHH", flags, gso, 0, 0, 0, 0, 0)


def test_config_space_holds_mac_and_link_up(dev):
    assert bytes(dev.config[:6]) == MAC
    assert dev.read_config(6, 2) == lib.VIRTIO_NET_S_LINK_UP


def test_header_split_across_descriptors_gets_num_buffers(dev, tap):
    """Virtio makes no framing assumptions (1.2, 2.6.4): the 12-byte header may span
    descriptors, num_buffers at offset 10 included."""
    rx, _, _ = start(dev, 0)
    a, b = rx.alloc(10, fill=0xEE), rx.alloc(2000, fill=0xEE)
    head = rx.add([Buf(a, 10, True), Buf(b, 2000, True)])
    dev.notify(RX)
    frame = header() + b"payload" * 10
    tap.send(frame)
    assert rx.get_used() == [(head, len(frame))]
    got = rx.read(a, 10) + rx.read(b, len(frame) - 10)
    assert got[10:12] == b"\1\0"
    assert got[:10] == frame[:10] and got[12:] == frame[12:]
    assert not dev.status & NEEDS_RESET


def test_mergeable_frame_spreads_over_buffers(dev, tap):
    rx, _, _ = start(dev, bit("MRG_RXBUF"))
    bufs = [rx.alloc(100) for _ in range(3)]
    heads = [rx.add([Buf(addr, 100, True)]) for addr in bufs]
    dev.notify(RX)
    frame = header() + bytes(range(256))[:230]
    tap.send(frame)
    assert rx.get_used() == [(heads[0], 100), (heads[1], 100), (heads[2], 42)]
    got = b"".join(rx.read(addr, 100) for addr in bufs)[:len(frame)]
    assert struct.unpack_from("<H", got, 10)[0] == 3
    assert got[12:] == frame[12:]


def test_frame_too_big_for_a_non_mergeable_buffer_is_dropped(dev, tap):
    rx, _, _ = start(dev, 0)
    small = rx.add([Buf(rx.alloc(64), 64, True)])
    dev.notify(RX)
    tap.send(header() + bytes(200))
    assert rx.get_used() == [(small, 0)]       # the buffer comes back unused
    assert not dev.status & NEEDS_RESET


@pytest.mark.parametrize("features, flags_seen", [(0, 0), (bit("GUEST_CSUM"), 2)])
def test_header_flags_only_with_guest_csum(dev, tap, features, flags_seen):
    """Without GUEST_CSUM the device sets flags to zero (1.2, 5.1.6.4.2)."""
    rx, _, _ = start(dev, features)
    addr = rx.alloc(256)
    rx.add([Buf(addr, 256, True)])
    dev.notify(RX)
    tap.send(header(flags=DATA_VALID) + bytes(60))
    assert rx.read(addr, 1)[0] == flags_seen


def test_frames_wait_for_buffers(dev, tap):
    """No buffer posted: the frame waits and the tap stops being watched until an RX kick."""
    rx, _, calls = start(dev, 0)
    tap.send(header() + b"first")
    assert dev.fd not in tap.watched and rx.get_used() == []
    head = rx.add([Buf(rx.alloc(256), 256, True)])
    dev.notify(RX)
    assert rx.get_used() == [(head, HEADER_SIZE + 5)]
    assert dev.fd in tap.watched
    assert calls


def test_device_readable_receive_buffer_needs_reset(dev, tap):
    rx, _, _ = start(dev, 0)
    rx.add([Buf(rx.alloc(256), 256, False)])
    dev.notify(RX)
    tap.send(header() + bytes(60))
    assert dev.status & NEEDS_RESET


def test_transmit_writes_the_chain_as_one_frame(dev, tap):
    _, tx, _ = start(dev, 0)
    hdr, body = tx.alloc(HEADER_SIZE, header()), tx.alloc(5, b"hello")
    head = tx.add([Buf(hdr, HEADER_SIZE), Buf(body, 5)])
    dev.notify(TX)
    assert tap.far.recv(4096) == header() + b"hello"
    assert tx.get_used() == [(head, 0)]


def test_transmit_chain_without_header_needs_reset(dev, tap):
    _, tx, _ = start(dev, 0)
    tx.add([Buf(tx.alloc(4, b"oops"), 4)])
    dev.notify(TX)
    assert dev.status & NEEDS_RESET


@pytest.mark.parametrize("features, offloads", [
    (0, 0),
    (bit("GUEST_CSUM"), lib.TUN_F_CSUM),
    (bit("GUEST_CSUM") | bit("GUEST_TSO4") | bit("GUEST_TSO6"),
     lib.TUN_F_CSUM | lib.TUN_F_TSO4 | lib.TUN_F_TSO6),
])
def test_tap_offloads_follow_guest_features(dev, tap, features, offloads):
    """The tap may hand over only what the driver accepted; no ECN-marked TSO frames
    since GUEST_ECN is never offered."""
    start(dev, features)
    assert tap.offloads == [offloads]


def test_reset_stops_watching_the_tap(dev, tap):
    start(dev, 0)
    assert dev.fd in tap.watched
    dev.set_status(0)
    assert dev.fd not in tap.watched
    assert os.fstat(dev.fd)     # the tap stays open for the next driver


def test_receive_queue_never_enabled_leaves_the_tap_unread(dev, tap, caplog):
    """DRIVER_OK with only the transmit queue set up: frames from the tap wait in the tap
    (not watched, no traceback per frame) until a driver sets the receive queue up."""
    mem = new_memory()
    tx = Driver(mem, 8, base=0x20000, data_base=0x180000)
    init_device(dev, mem, [None, tx], features=1 << VERSION_1)
    assert dev.fd not in tap.watched
    for _ in range(3):
        tap.send(header() + b"frame")
    dev._tap_readable()              # a stale epoll event must not touch the queue either
    assert not dev.status & NEEDS_RESET
    assert not [r for r in caplog.records if r.levelno >= 30]
    dev.set_status(0)
    rx = Driver(mem, 8)
    init_device(dev, mem, [rx, Driver(mem, 8, base=0x20000, data_base=0x180000)],
                features=1 << VERSION_1)
    assert dev.fd in tap.watched
    head = rx.add([Buf(rx.alloc(256), 256, True)])
    dev.notify(RX)
    assert rx.get_used() == [(head, HEADER_SIZE + 5)]


def test_transmit_chain_longer_than_a_frame_is_dropped_unread(dev, tap):
    _, tx, _ = start(dev, 0)
    body = tx.alloc(32 << 10)
    head = tx.add([Buf(tx.alloc(HEADER_SIZE, header()), HEADER_SIZE)]
                  + [Buf(body, 32 << 10)] * 3)
    dev.notify(TX)
    assert tx.get_used() == [(head, 0)]
    tap.far.setblocking(False)
    with pytest.raises(BlockingIOError):
        tap.far.recv(1 << 17)
    assert not dev.status & NEEDS_RESET


def test_a_waiting_frame_refuses_a_snapshot_and_a_restore_sets_the_tap_up_again(dev, tap):
    rx, _, _ = start(dev, bit("GUEST_CSUM"))
    tap.send(header() + b"waits")                  # no receive buffer: the frame waits
    with pytest.raises(DeviceStateError, match="frame from the tap waits"):
        dev.snapshot_state()
    rx.add([Buf(rx.alloc(256), 256, True)])
    dev.notify(RX)
    state = dev.snapshot_state()
    tap.offloads.clear()
    dev.set_status(0)
    assert dev.fd not in tap.watched
    dev.restore_state(state)                      # running again, as the snapshot was
    assert dev.fd in tap.watched and tap.offloads == [lib.TUN_F_CSUM]
