"""virtio-console (pyvisor/devices/virtio/console.py; virtio 1.2, 5.3): transmit streams a
chain to the output in bounded pieces and takes a bounded amount from one chain; receive
fills posted buffers from the backlog."""
import pytest

from pyvisor.devices.virtio.console import PIECE, TRANSMIT_LIMIT, VirtioConsole
from pyvisor.devices.virtio.device import NEEDS_RESET
from virtio_driver import Buf, Driver, init_device, new_memory

RECEIVE, TRANSMIT = 0, 1


@pytest.fixture
def mem():
    return new_memory()


@pytest.fixture
def out():
    return []


@pytest.fixture
def console(out):
    dev = VirtioConsole(out.append)
    yield dev
    dev.close()


def setup(console, mem, size=16):
    rx = Driver(mem, size, base=0x10000, data_base=0x40000)
    tx = Driver(mem, size, base=0x20000, data_base=0x100000)
    init_device(console, mem, [rx, tx])
    return rx, tx


def test_transmit_passes_the_bytes_in_order(console, mem, out):
    _, tx = setup(console, mem)
    a, b = tx.alloc(5, b"hello"), tx.alloc(7, b", world")
    head = tx.add([Buf(a, 5), Buf(b, 7)])
    console.notify(TRANSMIT)
    assert b"".join(out) == b"hello, world"
    assert tx.get_used() == [(head, 0)]


def test_transmit_of_an_aliased_huge_chain_is_bounded(console, mem, out):
    """16 descriptors naming the same 1 MiB (16 MiB claimed in a 2 MiB guest): at most
    TRANSMIT_LIMIT bytes go out, in pieces of at most PIECE, and the chain is completed."""
    _, tx = setup(console, mem)
    buf = tx.alloc(1 << 20, fill=ord("x"))
    head = tx.add([Buf(buf, 1 << 20) for _ in range(16)])
    console.notify(TRANSMIT)
    assert sum(map(len, out)) == TRANSMIT_LIMIT
    assert max(map(len, out)) <= PIECE
    assert tx.get_used() == [(head, 0)]
    assert not console.status & NEEDS_RESET


def test_transmit_buffer_that_is_device_writable_needs_reset(console, mem, out):
    _, tx = setup(console, mem)
    tx.add([Buf(tx.alloc(4), 4, True)])
    console.notify(TRANSMIT)
    assert console.status & NEEDS_RESET
    assert out == []


def test_receive_fills_posted_buffers_from_the_backlog(console, mem):
    rx, _ = setup(console, mem)
    console.receive(b"typed ahead")
    buf = rx.alloc(64)
    head = rx.add([Buf(buf, 64, True)])
    console.notify(RECEIVE)
    assert rx.get_used() == [(head, 11)]
    assert rx.read(buf, 11) == b"typed ahead"


def test_receive_error_needs_reset(console, mem):
    rx, _ = setup(console, mem)
    rx.add([Buf(rx.alloc(4), 4)])                   # device-readable: wrong direction
    console.receive(b"x")
    assert console.status & NEEDS_RESET


def test_backlog_fills_several_small_buffers_in_order(console, mem):
    rx, _ = setup(console, mem)
    console.receive(b"abc")
    console.receive(b"defgh")
    bufs = [rx.alloc(4) for _ in range(3)]
    heads = [rx.add([Buf(b, 4, True)]) for b in bufs]
    console.notify(RECEIVE)
    assert rx.get_used() == [(heads[0], 4), (heads[1], 4)]
    assert rx.read(bufs[0], 4) + rx.read(bufs[1], 4) == b"abcdefgh"
    console.receive(b"ij")
    assert rx.get_used() == [(heads[2], 2)]
    assert rx.read(bufs[2], 2) == b"ij"
