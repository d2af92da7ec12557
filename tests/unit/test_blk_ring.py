"""virtio-blk's C data path (native/blk_ring.c, on io_uring and on the thread pool of
native/io_pool.c) against a hostile driver: a
chain it cannot serve is left to the Python path, which fails the device (NEEDS_RESET) or
the request (IOERR) as queue.py and blk.py say; nothing crashes, hangs or writes outside
the buffers. Also flush ordering, bounds, and snapshots with requests in flight."""
import struct

import pytest

from pyvisor._native import ffi, lib
from pyvisor._uring import ffi as ring_ffi, lib as ring_lib
from pyvisor.devices.virtio import blk as blk_module
from pyvisor.devices.virtio.blk import MAX_TRANSFER, SECTOR
from pyvisor.devices.virtio.device import NEEDS_RESET
from test_virtio_blk import Blk, pattern
from virtio_driver import F_INDIRECT, F_NEXT, F_WRITE, RAM_SIZE, Buf, Driver, init_device

T_IN, T_OUT, T_FLUSH = lib.VIRTIO_BLK_T_IN, lib.VIRTIO_BLK_T_OUT, lib.VIRTIO_BLK_T_FLUSH
T_GET_ID = lib.VIRTIO_BLK_T_GET_ID
OK, IOERR = lib.VIRTIO_BLK_S_OK, lib.VIRTIO_BLK_S_IOERR
SECTORS = 64
MAX_CHAIN = 1024                     # descriptors per chain (QEMU's VIRTQUEUE_MAX_SIZE)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(pattern(SECTORS * SECTOR))
    return path


@pytest.fixture(params=["io_uring", "threads"])
def b(image, request):
    blk = Blk(image, aio=request.param, size=16)
    assert blk.dev._io.fast is not None
    yield blk
    blk.close()


def header(kind, sector=0):
    return struct.pack("<IIQ", kind, 0, sector)


def failed(blk):
    """The device stopped (NEEDS_RESET), returned nothing and has nothing in flight."""
    return (blk.dev.status & NEEDS_RESET and blk.drv.get_used() == []
            and blk.dev._io.c_in_flight() == 0)


def raw_read(blk, data_addr, data_len):
    """A read whose data descriptor says (data_addr, data_len), direct descriptors 0-2."""
    hdr = blk.drv.alloc(16, header(T_IN))
    status = blk.drv.alloc(1, fill=0xFF)
    blk.drv.write_desc(0, hdr, 16, F_NEXT, 1)
    blk.drv.write_desc(1, data_addr, data_len, F_WRITE | F_NEXT, 2)
    blk.drv.write_desc(2, status, 1, F_WRITE)
    blk.drv.publish(0)
    return status


# --- chains the C path leaves to queue.py, which refuses them ---------------------------------

def test_a_descriptor_loop_needs_reset(b):
    hdr = b.drv.alloc(16, header(T_IN))
    data = b.drv.alloc(512)
    b.drv.write_desc(0, hdr, 16, F_NEXT, 1)
    b.drv.write_desc(1, data, 512, F_WRITE | F_NEXT, 0)
    b.drv.publish(0)
    b.dev.notify(0)
    assert failed(b)


def test_a_loop_inside_an_indirect_table_needs_reset(b):
    hdr = b.drv.alloc(16, header(T_IN))
    table = b.drv.alloc(32)
    b.drv.write_desc(0, hdr, 16, F_NEXT, 1, table=table)
    b.drv.write_desc(1, b.drv.alloc(512), 512, F_WRITE | F_NEXT, 0, table=table)
    b.drv.write_desc(0, table, 32, F_INDIRECT)
    b.drv.publish(0)
    b.dev.notify(0)
    assert failed(b)


@pytest.mark.parametrize("where", ["head", "next"])
def test_an_index_outside_the_queue_needs_reset(b, where):
    if where == "head":
        b.drv.publish(16 + 3)
    else:
        b.drv.write_desc(0, b.drv.alloc(16, header(T_IN)), 16, F_NEXT, 16)
        b.drv.publish(0)
    b.dev.notify(0)
    assert failed(b)


@pytest.mark.parametrize("addr, length", [
    (RAM_SIZE - 256, 512),             # runs off the end of RAM
    (RAM_SIZE, 1),                     # starts there
    ((1 << 64) - 256, 512),            # wraps around the address space
    (0x100000, 0xFFFFFFFF),            # longer than RAM
])
def test_a_buffer_outside_guest_ram_needs_reset(b, addr, length):
    status = raw_read(b, addr, length)
    b.dev.notify(0)
    assert failed(b) and b.mem.read_u8(status) == 0xFF


@pytest.mark.parametrize("shape", ["nested", "next", "empty", "ragged", "too long",
                                   "outside RAM"])
def test_a_bad_indirect_descriptor_needs_reset(b, shape):
    hdr = b.drv.alloc(16, header(T_IN))
    table = b.drv.alloc(16 * 4)
    b.drv.write_desc(0, hdr, 16, F_NEXT, 1, table=table)
    b.drv.write_desc(1, b.drv.alloc(1), 1, F_WRITE, table=table)
    length, flags, addr = 32, F_INDIRECT, table
    if shape == "nested":
        b.drv.write_desc(2, table, 32, F_INDIRECT, table=table)
        b.drv.write_desc(1, b.drv.alloc(1), 1, F_WRITE | F_NEXT, 2, table=table)
    elif shape == "next":
        flags |= F_NEXT
    elif shape == "empty":
        length = 0
    elif shape == "ragged":
        length = 24
    elif shape == "too long":
        length = 16 * (MAX_CHAIN + 1)
    else:
        addr = RAM_SIZE - 16
    b.drv.write_desc(0, addr, length, flags, 1)
    b.drv.publish(0)
    b.dev.notify(0)
    assert failed(b)


def test_an_indirect_descriptor_without_the_feature_needs_reset(image):
    features = (1 << lib.VIRTIO_F_VERSION_1) | (1 << lib.VIRTIO_RING_F_EVENT_IDX)
    blk = Blk(image, aio="io_uring", size=16, features=features)
    try:
        blk.submit(T_IN, 0, in_lens=[512], indirect=True)
        blk.dev.notify(0)
        assert failed(blk)
    finally:
        blk.close()


def test_a_readable_buffer_after_a_writable_one_needs_reset(b):
    hdr = b.drv.alloc(16, header(T_IN))
    b.drv.write_desc(0, hdr, 16, F_NEXT, 1)
    b.drv.write_desc(1, b.drv.alloc(512), 512, F_WRITE | F_NEXT, 2)
    b.drv.write_desc(2, b.drv.alloc(512), 512, F_NEXT, 3)
    b.drv.write_desc(3, b.drv.alloc(1), 1, F_WRITE)
    b.drv.publish(0)
    b.dev.notify(0)
    assert failed(b)


def test_an_available_index_far_ahead_needs_reset(b):
    b.submit(T_IN, 0, in_lens=[512])
    b.drv.set_avail_idx(16 + 1)
    b.dev.notify(0)
    assert failed(b)


def test_requests_before_a_bad_chain_still_complete(image):
    """The bad chain stops the device; the read the C path started before it comes back
    through the completion eventfd, as a Python-started one does."""
    blk = Blk(image, aio="io_uring", size=16, watched=True)
    try:
        disk = blk.file()
        head, addrs, status = blk.submit(T_IN, 2, in_lens=[512], indirect=True)
        blk.drv.publish(16 + 3)
        blk.dev.notify(0)
        assert blk.dev.status & NEEDS_RESET
        if blk.dev._io.c_in_flight():
            blk.complete()
        assert blk.drv.get_used() == [(head, 513)] and blk.mem.read_u8(status) == OK
        assert blk.drv.read(addrs[0], 512) == disk[1024:1536]
    finally:
        blk.close()


# --- requests the C path leaves to Python, which fails or serves them -------------------------

@pytest.mark.parametrize("sector, count", [
    (SECTORS - 1, 2),                  # crosses the end
    (SECTORS, 1),                      # starts at it
    (1 << 55, 1),                      # sector * 512 overflows 64 bits
    ((1 << 64) - 1, 1),
])
def test_past_the_image_end_is_ioerr(b, sector, count):
    before = b.file()
    assert b.request(T_IN, sector, in_lens=[count * SECTOR])[:2] == (IOERR, 1)
    assert b.request(T_OUT, sector, out=[bytes(count * SECTOR)])[:2] == (IOERR, 1)
    assert b.file() == before and not b.dev.status & NEEDS_RESET


def test_more_than_max_transfer_through_aliased_buffers_is_ioerr(tmp_path):
    """255 descriptors on one 128 KiB buffer declare more than MAX_TRANSFER: refused
    whatever the image holds; 254 of them are served."""
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    blk = Blk(path, aio="io_uring", size=16)
    try:
        chunk = 128 << 10
        buf = blk.drv.alloc(chunk)
        for count, expected in ((MAX_TRANSFER // chunk + 1, (IOERR, 1)),
                                (MAX_TRANSFER // chunk, (OK, MAX_TRANSFER + 1))):
            hdr = blk.drv.alloc(16, header(T_IN))
            status = blk.drv.alloc(1, fill=0xFF)
            blk.drv.add([Buf(hdr, 16)] + [Buf(buf, chunk, True)] * count
                        + [Buf(status, 1, True)], indirect=True)
            (used,) = blk.run()
            assert (blk.mem.read_u8(status), used[1]) == expected
    finally:
        blk.close()


def test_unusual_requests_between_reads_are_served_in_order(b):
    disk = b.file()
    reads = [b.submit(T_IN, i, in_lens=[512], indirect=True) for i in range(2)]
    get_id, (id_addr,), id_status = b.submit(T_GET_ID, in_lens=[20], indirect=True)
    reads += [b.submit(T_IN, i, in_lens=[512], indirect=True) for i in range(2, 4)]
    used = b.run()
    assert sorted(h for h, _ in used) == sorted([h for h, _, _ in reads] + [get_id])
    assert b.mem.read_u8(id_status) == OK
    for i, (_, (addr,), status) in enumerate(reads):
        assert b.mem.read_u8(status) == OK
        assert b.drv.read(addr, 512) == disk[i * 512:(i + 1) * 512]


# --- flush ordering ------------------------------------------------------------------------

def test_a_flush_completes_after_every_write_before_it(tmp_path):
    """O_DIRECT writes and a flush in the same kick: the flush comes back after all of
    them, their data in the file. (On this host the writes finish first even without
    IOSQE_IO_DRAIN, so this checks the outcome, not the drain itself.)"""
    path = tmp_path / "direct.img"
    path.write_bytes(bytes(1 << 20))
    blk = Blk(path, aio="io_uring", size=64, cache="none")
    try:
        n, size = 24, 16 << 10
        for i in range(n):
            data = blk.drv.alloc(size, pattern(size, i), align=4096)
            hdr = blk.drv.alloc(16, header(T_OUT, i * size // SECTOR))
            status = blk.drv.alloc(1, fill=0xFF)
            blk.drv.add([Buf(hdr, 16), Buf(data, size), Buf(status, 1, True)], indirect=True)
        flush, _, flush_status = blk.submit(T_FLUSH, indirect=True)
        used = blk.run()
        assert len(used) == n + 1 and used[-1] == (flush, 1)
        assert blk.mem.read_u8(flush_status) == OK and blk.dev._bounce_made == 0
        assert blk.file()[:n * size] == b"".join(pattern(size, i) for i in range(n))
    finally:
        blk.close()


def test_a_flush_waits_for_bounced_writes_python_holds(image, monkeypatch):
    """A write bounced through few buffers is still partly in Python when the flush is
    popped: the flush is Python's, and comes back after the write."""
    monkeypatch.setattr(blk_module, "BOUNCE_CHUNK", 1024)
    monkeypatch.setattr(blk_module, "BOUNCE_SLOTS", 1)
    blk = Blk(image, aio="io_uring", size=64, cache="none")
    try:
        write, _, _ = blk.submit(T_OUT, 8, out=[pattern(4000, 7), pattern(96, 8)])
        flush, _, _ = blk.submit(T_FLUSH)
        used = blk.run()
        assert used == [(write, 1), (flush, 1)]
        assert blk.file()[8 * SECTOR:16 * SECTOR] == pattern(4000, 7) + pattern(96, 8)
    finally:
        blk.close()


# --- bounds and snapshots with requests in flight ---------------------------------------------

def serve_in_c(blk, room=16):
    """One pass of the C path over queue 0, without reaping (requests stay in flight)."""
    return ring_lib.pvb_serve(blk.dev._io.fast, blk.dev.queues[0].c, room, 0)


def test_the_c_path_starts_no_more_than_its_room(b):
    for i in range(8):
        b.submit(T_IN, i, in_lens=[512], indirect=True)
    assert serve_in_c(b, room=3) == ring_lib.PVB_FULL
    assert b.dev.queues[0].in_flight == 3 == b.dev._io.c_in_flight()
    assert b.dev.queues[0].last_avail == 3
    assert len(b.run()) == 8 and b.dev._io.c_in_flight() == 0


def test_a_snapshot_waits_for_the_c_path_and_sees_its_indices(b):
    for i in range(5):
        b.submit(T_IN, i, in_lens=[512], indirect=True)
    assert serve_in_c(b) == ring_lib.PVB_EMPTY and b.dev._io.c_in_flight() == 5
    with b.dev.lock:
        state = b.dev.snapshot_state()
    queue = state["queues"][0]
    assert queue["last_avail"] == queue["used_idx"] == 5 and b.drv.used_idx == 5
    assert b.dev._io.c_in_flight() == 0


def test_a_restore_drops_the_c_path_requests_without_writing_guest_ram(b):
    with b.dev.lock:
        state = b.dev.snapshot_state()
    reqs = [b.submit(T_IN, i, in_lens=[512], indirect=True) for i in range(4)]
    assert serve_in_c(b) == ring_lib.PVB_EMPTY
    with b.dev.lock:
        b.dev.restore_state(state)
    assert b.dev._io.c_in_flight() == 0
    assert b.drv.used_idx == 0 and b.dev.queues[0].used_idx == 0
    assert all(b.mem.read_u8(status) == 0xFF for _, _, status in reqs)
    assert b.dev.queues[0].c.avail != ring_ffi.NULL and b.dev.queues[0].last_avail == 0


def test_a_reset_waits_for_the_c_path(b):
    b.submit(T_IN, 0, in_lens=[512], indirect=True)
    assert serve_in_c(b) == ring_lib.PVB_EMPTY
    b.dev.set_status(0)
    assert b.dev._io.c_in_flight() == 0 and b.drv.used_idx == 0
    assert b.dev.queues[0].c.used == ring_ffi.NULL


def test_every_page_a_read_fills_is_marked_written(b):
    hdr = b.drv.alloc(16, header(T_IN, 0))
    status = b.drv.alloc(1, fill=0xFF)
    addr = b.drv.alloc(3 * 4096, align=4096) + 100
    b.drv.add([Buf(hdr, 16), Buf(addr, 2 * 4096 + 512, True), Buf(status, 1, True)],
              indirect=True)
    for written in b.mem.written_maps:
        ffi.memmove(written, bytes(len(written)), len(written))
    b.run()
    written = b.mem.written_maps[0]
    assert [written[(addr >> 12) + i] for i in range(4)] == [1, 1, 1, 0]
    assert written[status >> 12] == 1


# --- the C path against the Python path: random chains, one per kick ---------------------

def reinit(blk):
    """Reset the device and set its queue up again on fresh rings (a driver's recovery)."""
    blk.dev.set_status(0)
    blk.drvs = [Driver(blk.mem, blk.drv.size)]
    blk.drv = blk.drvs[0]
    init_device(blk.dev, blk.mem, blk.drvs)


def random_chain(rng, drvs):
    """Write one random, often hostile, chain at head 0 into every driver's memory: a
    header of any kind and sector, data buffers anywhere (in RAM, across its end, far
    outside) of any length and direction, a status buffer of any size, bad indices and
    loops, sometimes through an indirect table."""
    def pick(*choices):
        return rng.choice(choices)
    n = rng.randint(1, 6)
    descs = []
    kind = pick(T_IN, T_IN, T_OUT, T_OUT, T_FLUSH, T_GET_ID, lib.VIRTIO_BLK_T_DISCARD, 99)
    sector = pick(0, rng.randrange(SECTORS + 8), SECTORS - 1, 1 << 63, rng.getrandbits(64))
    hdr_len = pick(16, 16, 16, 8, 24)
    writing = False
    for i in range(n):
        last = i == n - 1
        if i == 0:
            addr, length, write = 0x100000, hdr_len, False
        elif last:
            addr, length, write = 0x17FFF0, pick(1, 1, 1, 0, 2), True
        else:
            addr = pick(0x101000 + rng.randrange(0x60000), 0x101000 + 512 * rng.randrange(64),
                        RAM_SIZE - rng.randrange(1, 5000), rng.getrandbits(64))
            length = pick(0, 1, 100, 512, 1024, 4096, 0x8000, rng.randrange(70000))
            write = rng.random() < (0.9 if kind == T_IN or writing else 0.1)
        writing = writing or write
        nxt = i + 1 if rng.random() < 0.95 else rng.randrange(20)
        flags = (F_WRITE if write else 0) | (0 if last and rng.random() < 0.95 else F_NEXT)
        descs.append((addr, length, flags, nxt))
    payload = bytes(rng.getrandbits(8) for _ in range(64))
    payload_addr = 0x101000 + rng.randrange(0x60000)
    hdr = header(kind, sector) + payload[:8]
    table = 0x180000 if rng.random() < 0.3 else None
    table_len = pick(16 * n, 16 * n, 16 * n + 8, 0, 16 * (MAX_CHAIN + 1))
    table_flags = F_INDIRECT | (F_NEXT if rng.random() < 0.05 else 0)
    for drv in drvs:
        drv.mem.write(0x100000, hdr)
        drv.mem.write(payload_addr, payload)
        drv.mem.write_u8(0x17FFF0, 0xEE)
        for i, (addr, length, flags, nxt) in enumerate(descs):
            drv.write_desc(i, addr, length, flags, nxt, table=table)
        if table is not None:
            drv.write_desc(0, table, table_len, table_flags)
    return pick(0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 16, 17)


@pytest.mark.parametrize("aio", ["io_uring", "threads"])
def test_random_chains_end_as_the_python_path_ends_them(tmp_path, aio):
    """Every outcome the C path reaches (used entry, status byte, data in guest RAM, the
    image, NEEDS_RESET), on either backend, is the one the Python path (the C path off)
    reaches for the same chain, over a few hundred random hostile chains."""
    import random
    rng = random.Random(12)
    paths = [tmp_path / "c.img", tmp_path / "python.img"]
    for path in paths:
        path.write_bytes(pattern(SECTORS * SECTOR))
    c, py = Blk(paths[0], aio=aio, size=16), Blk(paths[1], aio="python", size=16)
    try:
        for step in range(400):
            head = random_chain(rng, [c.drv, py.drv])
            for blk in (c, py):
                blk.drv.publish(head)
                blk.dev.notify(0)
            outcome = [(bool(b.dev.status & NEEDS_RESET), b.drv.get_used(),
                        b.mem.read(0x100000, 0x90000), b.file()) for b in (c, py)]
            assert outcome[0] == outcome[1], f"step {step}"
            assert c.dev._io.c_in_flight() == 0
            if outcome[0][0] or rng.random() < 0.02:
                reinit(c)
                reinit(py)
    finally:
        c.close()
        py.close()
