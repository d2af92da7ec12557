"""virtio-blk over a raw image (pyvisor/devices/virtio/blk.py; virtio 1.2, 5.2), with its
I/O backends (blk_io.py): every request test runs on aio=threads and aio=io_uring, both
with the C data path, and on "python" (aio=threads with every request through Python)."""
import errno
import fcntl
import logging
import os
import struct
import threading
import time

import pytest

from pyvisor._native import lib
from pyvisor.devices.virtio import blk as blk_module
from pyvisor.devices.virtio import blk_io
from pyvisor.devices.virtio.blk import (MAX_DISCARD_SEGMENTS, SECTOR, DiskSpec, VirtioBlk,
                                        open_disk)
from pyvisor.devices.virtio.device import CONFIG_INTERRUPT, NEEDS_RESET
from pyvisor.errors import ConfigError
from page_gate import PAGE, PageGate
from test_io_pool import blk_io_threads
from virtio_driver import Buf, Driver, init_device, new_memory

T_IN, T_OUT, T_FLUSH = lib.VIRTIO_BLK_T_IN, lib.VIRTIO_BLK_T_OUT, lib.VIRTIO_BLK_T_FLUSH
T_GET_ID, T_DISCARD = lib.VIRTIO_BLK_T_GET_ID, lib.VIRTIO_BLK_T_DISCARD
T_WRITE_ZEROES = lib.VIRTIO_BLK_T_WRITE_ZEROES
OK, IOERR, UNSUPP = lib.VIRTIO_BLK_S_OK, lib.VIRTIO_BLK_S_IOERR, lib.VIRTIO_BLK_S_UNSUPP
UNMAP = lib.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP

SECTORS = 64
MIB = 1 << 20


def pattern(length, seed=0):
    return bytes((i * 7 + seed + i // 251) & 0xFF for i in range(length))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(pattern(SECTORS * SECTOR))
    return path


BACKEND = {"threads": "threads", "io_uring": "io_uring", "python": "threads"}


class Blk:
    """A VirtioBlk over `path`, initialised, with a driver-side queue per device queue and
    a request helper. With watched=True the device delivers completions through its eventfd
    (as on the I/O thread): `complete()` waits for that and hands them over. aio="python"
    is aio=threads with the C data path off."""

    def __init__(self, path, *, readonly=False, serial="", size=16, aio="threads",
                 cpus=1, watched=False, features=None, **options):
        self.path = path
        self.mem = new_memory()
        self.watch = {}
        spec = DiskSpec(str(path), readonly, serial, aio=BACKEND[aio], **options)
        self.dev = VirtioBlk(spec, cpus,
                             (lambda fd, handler: self.watch.update({fd: handler}))
                             if watched else None, c_path=aio != "python")
        self.drvs = [Driver(self.mem, size, base=0x10000 + 0x4000 * i,   # queue 0's data
                            data_base=0x100000 if i == 0 else 0x1C0000 + 0x8000 * i)
                     for i in range(len(self.dev.queues))]       # first: it may be large
        self.drv = self.drvs[0]
        self.interrupts = init_device(self.dev, self.mem, self.drvs, features=features)

    def complete(self, timeout=10):
        """Wait for the completion eventfd, then run the device's handler (as IoLoop)."""
        (fd, handler), = self.watch.items()
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.eventfd_read(fd)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "no completion signalled"
                time.sleep(0.002)
        handler()

    def close(self):
        self.dev.close()

    def submit(self, kind, sector=0, out=(), in_lens=(), *, status=True, indirect=False,
               header=None, status_in_last=False, own_pages=False):
        """Queue one request: header, `out` data buffers (bytes), `in_lens` writable data
        buffers, status byte (in its own buffer, or as the last byte of the last data buffer
        with status_in_last). With own_pages, each data buffer starts a page and shares its
        pages with nothing else (for PageGate). Returns (head, data addresses, status
        address): the addresses of `out` first."""
        hdr = struct.pack("<IIQ", kind, 0, sector) if header is None else header
        bufs = [Buf(self.drv.alloc(len(hdr), hdr), len(hdr))]

        def alloc(n, **fill):
            if not own_pages:
                return self.drv.alloc(n, **fill)
            return self.drv.alloc(-n % PAGE + n, align=PAGE, **fill)
        data_addrs = []
        for data in out:
            data_addrs.append(alloc(len(data), data=data))
            bufs.append(Buf(data_addrs[-1], len(data)))
        in_addrs = []
        lens = list(in_lens)
        if status_in_last:
            lens[-1] += 1
        for n in lens:
            a = alloc(n, fill=0xCC)
            in_addrs.append(a)
            bufs.append(Buf(a, n, True))
        if status_in_last:
            status_addr = in_addrs[-1] + lens[-1] - 1
        elif status:
            status_addr = self.drv.alloc(1, fill=0xFF)
            bufs.append(Buf(status_addr, 1, True))
        else:
            status_addr = None
        head = self.drv.add(bufs, indirect=indirect)
        return head, data_addrs + in_addrs, status_addr

    def run(self, queue=0):
        self.dev.notify(queue)
        return self.drvs[queue].get_used()

    def request(self, kind, sector=0, out=(), in_lens=(), **kw):
        """Submit, process; return (status, used length, [data read back per in buffer])."""
        head, in_addrs, status_addr = self.submit(kind, sector, out, in_lens, **kw)
        used = self.run()
        assert len(used) == 1 and used[0][0] == head, used
        data = [self.drv.read(a, n) for a, n in zip(in_addrs, in_lens)]
        return self.mem.read_u8(status_addr), used[0][1], data

    def file(self):
        return self.path.read_bytes()


@pytest.fixture(params=list(BACKEND))
def aio(request):
    return request.param


@pytest.fixture
def blk(image, aio):
    b = Blk(image, serial="SN-1234", aio=aio)
    assert b.dev.aio == BACKEND[aio]
    yield b
    b.close()


def discard_segments(*segs):
    return b"".join(struct.pack("<QII", s, n, f) for s, n, f in segs)


# --- configuration ----------------------------------------------------------------------------

def test_features_and_config(blk):
    dev = blk.dev
    assert dev.device_id == 2
    for bit in (lib.VIRTIO_BLK_F_FLUSH, lib.VIRTIO_BLK_F_BLK_SIZE, lib.VIRTIO_BLK_F_SEG_MAX,
                lib.VIRTIO_BLK_F_SIZE_MAX, lib.VIRTIO_BLK_F_DISCARD,
                lib.VIRTIO_BLK_F_WRITE_ZEROES):
        assert dev.device_features >> bit & 1
    assert not dev.device_features >> lib.VIRTIO_BLK_F_RO & 1
    assert dev.read_config(0, 8) == SECTORS            # capacity
    assert dev.read_config(8, 4) == 128 << 10          # size_max
    assert dev.read_config(12, 4) == 254               # seg_max
    assert dev.read_config(20, 4) == SECTOR            # blk_size
    assert dev.read_config(36, 4) > 0                  # max_discard_sectors
    assert dev.read_config(40, 4) == MAX_DISCARD_SEGMENTS
    assert dev.read_config(52, 4) == MAX_DISCARD_SEGMENTS


def test_readonly_features(image):
    b = Blk(image, readonly=True)
    try:
        f = b.dev.device_features
        assert f >> lib.VIRTIO_BLK_F_RO & 1
        assert not f >> lib.VIRTIO_BLK_F_DISCARD & 1
        assert not f >> lib.VIRTIO_BLK_F_WRITE_ZEROES & 1
    finally:
        b.close()


# --- reads and writes -------------------------------------------------------------------------

def test_in_scatter_gather(blk):
    disk = blk.file()
    status, used_len, data = blk.request(T_IN, 3, in_lens=[512, 1024, 512])
    assert status == OK
    assert used_len == 2048 + 1
    assert b"".join(data) == disk[3 * SECTOR:3 * SECTOR + 2048]


def test_in_through_an_indirect_table(blk):
    disk = blk.file()
    status, used_len, data = blk.request(T_IN, 0, in_lens=[256, 256, 1024], indirect=True)
    assert (status, used_len) == (OK, 1537)
    assert b"".join(data) == disk[:1536]


def test_in_with_status_in_the_last_data_buffer(blk):
    """Framing is up to the driver (2.6.4): the status byte is the last writable byte."""
    disk = blk.file()
    status, used_len, data = blk.request(T_IN, 1, in_lens=[512], status_in_last=True)
    assert (status, used_len) == (OK, 513)
    assert data[0] == disk[512:1024]


def test_in_last_sector(blk):
    disk = blk.file()
    status, _, data = blk.request(T_IN, SECTORS - 1, in_lens=[512])
    assert status == OK and data[0] == disk[-512:]


@pytest.mark.parametrize("sector, length", [
    (SECTORS, 512),              # starts at the end
    (SECTORS - 1, 1024),         # runs past the end
    (1 << 60, 512),              # absurd
    ((1 << 64) - 1, 512),
])
def test_in_out_of_range_is_ioerr(blk, sector, length):
    status, used_len, data = blk.request(T_IN, sector, in_lens=[length])
    assert (status, used_len) == (IOERR, 1)
    assert data[0] == b"\xcc" * length                 # nothing written


@pytest.mark.parametrize("length", [100, 511, 513])
def test_in_length_not_a_multiple_of_512_is_ioerr(blk, length):
    status, used_len, _ = blk.request(T_IN, 0, in_lens=[length])
    assert (status, used_len) == (IOERR, 1)


def test_out_writes_the_file(blk):
    before = blk.file()
    data = [pattern(512, 1), pattern(1024, 2)]
    status, used_len, _ = blk.request(T_OUT, 5, out=data)
    assert (status, used_len) == (OK, 1)
    after = blk.file()
    assert after[5 * SECTOR:8 * SECTOR] == data[0] + data[1]
    assert after[:5 * SECTOR] == before[:5 * SECTOR]
    assert after[8 * SECTOR:] == before[8 * SECTOR:]
    # and reads back through the device
    status, _, back = blk.request(T_IN, 5, in_lens=[1536])
    assert status == OK and back[0] == data[0] + data[1]


def test_out_with_header_and_data_in_one_buffer(blk):
    data = pattern(512, 9)
    header = struct.pack("<IIQ", T_OUT, 0, 2) + data
    status, used_len, _ = blk.request(T_OUT, header=header)
    assert (status, used_len) == (OK, 1)
    assert blk.file()[1024:1536] == data


def test_out_out_of_range_is_ioerr_and_file_unchanged(blk):
    before = blk.file()
    status, used_len, _ = blk.request(T_OUT, SECTORS - 1, out=[bytes(1024)])
    assert (status, used_len) == (IOERR, 1)
    assert blk.file() == before


def test_out_length_not_a_multiple_of_512_is_ioerr(blk):
    before = blk.file()
    status, _, _ = blk.request(T_OUT, 0, out=[bytes(100)])
    assert status == IOERR
    assert blk.file() == before


def test_readonly_write_is_ioerr_and_file_unchanged(image, aio):
    before = image.read_bytes()
    b = Blk(image, readonly=True, aio=aio)
    try:
        status, used_len, _ = b.request(T_OUT, 0, out=[bytes(512)])
        assert (status, used_len) == (IOERR, 1)
        assert image.read_bytes() == before
        status, _, _ = b.request(T_DISCARD, out=[discard_segments((0, 8, 0))])
        assert status == IOERR
        status, _, _ = b.request(T_WRITE_ZEROES, out=[discard_segments((0, 8, 0))])
        assert status == IOERR
        assert image.read_bytes() == before
        status, _, data = b.request(T_IN, 0, in_lens=[512])
        assert status == OK and data[0] == before[:512]
        status, _, _ = b.request(T_FLUSH)
        assert status == OK
    finally:
        b.close()


def spy_ops(dev):
    """Record each operation handed to the device's backend: (op, bytes, offset)."""
    ops, real = [], dev._io.queue
    def queue(token, op, bufs, offset):
        ops.append((op, sum(len(b) for b in bufs), offset))
        real(token, op, bufs, offset)
    dev._io.queue = queue
    return ops


def test_flush_is_an_fdatasync(blk, aio):
    """The C path submits it (an fdatasync, or io_uring's FSYNC with DATASYNC), never
    Python, unless the C path is off."""
    ops = spy_ops(blk.dev)
    status, used_len, _ = blk.request(T_FLUSH)
    assert (status, used_len) == (OK, 1)
    assert ops == ([(blk_io.FSYNC, 0, 0)] if aio == "python" else [])


def test_several_requests_in_one_notify(blk):
    disk = blk.file()
    h1, a1, s1 = blk.submit(T_IN, 0, in_lens=[512])
    h2, _, s2 = blk.submit(T_OUT, 1, out=[bytes(512)])
    h3, _, s3 = blk.submit(99)
    assert sorted(blk.run()) == sorted([(h1, 513), (h2, 1), (h3, 1)])
    assert [blk.mem.read_u8(s) for s in (s1, s2, s3)] == [OK, OK, UNSUPP]
    assert blk.drv.read(a1[0], 512) == disk[:512]
    assert blk.interrupts[-1][0] == "queue"


# --- GET_ID -----------------------------------------------------------------------------------

def test_get_id_pads_the_serial(blk):
    status, used_len, data = blk.request(T_GET_ID, in_lens=[20])
    assert status == OK
    assert data[0] == b"SN-1234" + bytes(13)
    assert used_len == 21


def test_get_id_full_length_serial(image):
    b = Blk(image, serial="A" * 20)
    try:
        status, used_len, data = b.request(T_GET_ID, in_lens=[20])
        assert (status, used_len, data[0]) == (OK, 21, b"A" * 20)
    finally:
        b.close()


def test_get_id_short_buffer(blk):
    status, used_len, data = blk.request(T_GET_ID, in_lens=[4])
    assert (status, used_len, data[0]) == (OK, 5, b"SN-1")


def test_get_id_long_buffer_gets_20_bytes(blk):
    status, used_len, data = blk.request(T_GET_ID, in_lens=[64])
    assert (status, used_len) == (OK, 21)
    assert data[0][:20] == b"SN-1234" + bytes(13)
    assert data[0][20:] == b"\xcc" * 44


# --- DISCARD / WRITE_ZEROES -------------------------------------------------------------------

def punch_hole_supported(directory):
    probe = os.path.join(directory, "probe")
    with open(probe, "wb") as f:
        f.write(b"x" * MIB)
        f.flush()
        os.fsync(f.fileno())
        ret = lib.pv_fallocate(f.fileno(), lib.FALLOC_FL_KEEP_SIZE | lib.FALLOC_FL_PUNCH_HOLE,
                               0, MIB)
    os.unlink(probe)
    return ret == 0


@pytest.fixture
def big_image(tmp_path):
    path = tmp_path / "big.img"
    path.write_bytes(pattern(4 * MIB, 3))
    return path


@pytest.mark.parametrize("kind, flags", [(T_DISCARD, 0), (T_WRITE_ZEROES, 0),
                                         (T_WRITE_ZEROES, UNMAP)])
def test_discard_and_write_zeroes_read_back_zeros(big_image, kind, flags):
    b = Blk(big_image)
    try:
        before = b.file()
        with open(big_image, "rb+") as f:
            os.fsync(f.fileno())
        blocks_before = os.stat(big_image).st_blocks
        start, count = 2048, 2048          # 1 MiB from 1 MiB on
        segs = discard_segments((start, count, flags), (8, 1, flags))
        status, used_len, _ = b.request(kind, out=[segs])
        assert (status, used_len) == (OK, 1)
        after = b.file()
        assert len(after) == len(before)
        lo, hi = start * SECTOR, (start + count) * SECTOR
        assert after[lo:hi] == bytes(hi - lo)
        assert after[8 * SECTOR:9 * SECTOR] == bytes(SECTOR)
        assert after[:8 * SECTOR] == before[:8 * SECTOR]
        assert after[9 * SECTOR:lo] == before[9 * SECTOR:lo]
        assert after[hi:] == before[hi:]
        # the guest sees zeros too
        status, _, data = b.request(T_IN, start, in_lens=[4096])
        assert status == OK and data[0] == bytes(4096)
        # punched ranges become holes where the filesystem can do that
        if (kind == T_DISCARD or flags & UNMAP) and punch_hole_supported(str(big_image.parent)):
            assert os.stat(big_image).st_blocks <= blocks_before - (hi - lo) // 512
    finally:
        b.close()


@pytest.mark.parametrize("kind", [T_DISCARD, T_WRITE_ZEROES])
@pytest.mark.parametrize("segments", [
    discard_segments((SECTORS - 1, 2, 0)),             # past the end
    discard_segments((SECTORS, 1, 0)),
    discard_segments((0, 1, 0))[:-1],                  # not whole segments
    b"",                                               # no segment
    discard_segments(*[(i, 1, 0) for i in range(MAX_DISCARD_SEGMENTS + 1)]),
])
def test_discard_bad_segments_are_ioerr_and_file_unchanged(blk, kind, segments):
    before = blk.file()
    out = [segments] if segments else []
    status, used_len, _ = blk.request(kind, out=out)
    assert (status, used_len) == (IOERR, 1)
    assert blk.file() == before


@pytest.mark.parametrize("kind", [T_DISCARD, T_WRITE_ZEROES])
def test_discard_with_aliased_huge_buffers_is_refused_before_reading(blk, kind):
    """100 descriptors naming the same 16 KiB of segments (1.6 MB claimed): refused from
    the buffer lengths, with no host allocation in proportion to them."""
    import tracemalloc
    before = blk.file()
    data = discard_segments(*[(0, 1, 0)] * 1024)
    hdr = struct.pack("<IIQ", kind, 0, 0)
    bufs = [Buf(blk.drv.alloc(len(hdr), hdr), len(hdr))]
    seg = blk.drv.alloc(len(data), data)
    status_addr = blk.drv.alloc(1, fill=0xFF)
    blk.drv.add(bufs + [Buf(seg, len(data))] * 100 + [Buf(status_addr, 1, True)],
                indirect=True)
    tracemalloc.start()
    try:
        used = blk.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [u[1] for u in used] == [1]
    assert blk.mem.read_u8(status_addr) == IOERR
    assert peak < 64 << 10
    assert blk.file() == before


# --- other requests ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [2, 3, 99, 0xFFFFFFFF])
def test_unknown_type_is_unsupp(blk, kind):
    before = blk.file()
    status, used_len, _ = blk.request(kind, 0, out=[bytes(512)])
    assert (status, used_len) == (UNSUPP, 1)
    assert blk.file() == before


# --- malformed requests: driver errors, the device needs a reset -------------------------------

def needs_reset(blk):
    assert blk.dev.status & NEEDS_RESET
    assert blk.interrupts[-1][0] == CONFIG_INTERRUPT
    assert blk.drv.used_idx == 0


def test_request_without_status_byte(blk):
    blk.submit(T_FLUSH, status=False)
    blk.run()
    needs_reset(blk)


def test_request_with_only_writable_buffers_of_zero_length(blk):
    hdr = struct.pack("<IIQ", T_FLUSH, 0, 0)
    blk.drv.add([Buf(blk.drv.alloc(16, hdr), 16), Buf(blk.drv.alloc(1), 0, True)])
    blk.run()
    needs_reset(blk)


@pytest.mark.parametrize("length", [0, 8, 15])
def test_short_header(blk, length):
    blk.submit(T_IN, header=struct.pack("<IIQ", T_IN, 0, 0)[:length], in_lens=[512])
    blk.run()
    needs_reset(blk)


def test_header_split_over_two_buffers_is_fine(blk):
    disk = blk.file()
    hdr = struct.pack("<IIQ", T_IN, 0, 4)
    data = blk.drv.alloc(512)
    status = blk.drv.alloc(1, fill=0xFF)
    head = blk.drv.add([Buf(blk.drv.alloc(5, hdr[:5]), 5), Buf(blk.drv.alloc(11, hdr[5:]), 11),
                        Buf(data, 512, True), Buf(status, 1, True)])
    assert blk.run() == [(head, 513)]
    assert blk.mem.read_u8(status) == OK
    assert blk.drv.read(data, 512) == disk[4 * SECTOR:5 * SECTOR]


def test_in_with_readable_data(blk):
    blk.submit(T_IN, 0, out=[bytes(512)], in_lens=[512])
    blk.run()
    needs_reset(blk)


def test_out_with_writable_data(blk):
    before = blk.file()
    blk.submit(T_OUT, 0, out=[bytes(512)], in_lens=[512])
    blk.run()
    needs_reset(blk)
    assert blk.file() == before


def test_processing_stops_after_a_bad_request(blk):
    blk.submit(T_FLUSH, status=False)
    h, _, s = blk.submit(T_IN, 0, in_lens=[512])
    blk.run()
    needs_reset(blk)
    blk.run()
    assert blk.drv.used_idx == 0
    assert blk.mem.read_u8(s) == 0xFF


# --- DiskSpec and open_disk -------------------------------------------------------------------

@pytest.mark.parametrize("text, spec", [
    ("disk.img", DiskSpec("disk.img")),
    ("disk.img,ro", DiskSpec("disk.img", readonly=True)),
    ("/a/b.img,serial=XYZ", DiskSpec("/a/b.img", serial="XYZ")),
    ("d,ro,serial=" + "s" * 20, DiskSpec("d", True, "s" * 20)),
    ("d,serial=", DiskSpec("d", serial="")),
    ("d,cache=none,aio=io_uring,queues=2",
     DiskSpec("d", cache="none", aio="io_uring", queues=2)),
    ("d,aio=threads,cache=writeback,ro", DiskSpec("d", True, cache="writeback", aio="threads")),
])
def test_disk_spec_parse(text, spec):
    assert DiskSpec.parse(text) == spec


def test_disk_spec_defaults():
    """writeback (works on any filesystem, flush still syncs), the backend picked by the
    host (None: io_uring where it works) and one queue per vCPU (None)."""
    assert DiskSpec.parse("d") == DiskSpec("d", False, "", "writeback", None, None)


@pytest.mark.parametrize("text, named", [
    ("d,cache=bogus", "cache is writeback or none, not 'bogus'"),
    ("d,cache=", "cache is writeback or none, not ''"),
    ("d,cache=directsync", "cache"),
    ("d,aio=native", "aio is threads or io_uring, not 'native'"),
    ("d,queues=0", "queues is a number from 1 to 64"),
    ("d,queues=65", "queues is a number from 1 to 64"),
    ("d,queues=two", "queues"),
    ("d,queues=-1", "queues"),
    ("d,aio", "unknown option 'aio'"),
])
def test_disk_spec_bad_option_values_are_one_line(text, named):
    with pytest.raises(ConfigError) as exc:
        DiskSpec.parse(text)
    assert named in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text", [
    "", ",ro", "d,rw", "d,ro=1", "d,bogus", "d,", "d,serial=" + "s" * 21,
    "d,serial=" + "é" * 11,            # 22 bytes in UTF-8
])
def test_disk_spec_parse_errors(text):
    with pytest.raises(ConfigError):
        DiskSpec.parse(text)


def test_open_disk_returns_fd_and_size(image):
    fd, size = open_disk(DiskSpec(str(image)))
    try:
        assert size == SECTORS * SECTOR
        assert os.pread(fd, 4, 0) == pattern(4)
    finally:
        os.close(fd)


def test_open_disk_readonly_is_opened_read_only(image):
    fd, _ = open_disk(DiskSpec(str(image), readonly=True))
    try:
        with pytest.raises(OSError):
            os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)


def test_open_disk_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.img"):
        open_disk(DiskSpec(str(tmp_path / "nope.img")))


@pytest.mark.parametrize("readonly", [False, True])
def test_open_disk_directory(tmp_path, readonly):
    with pytest.raises(ConfigError):
        open_disk(DiskSpec(str(tmp_path), readonly))


@pytest.mark.parametrize("size", [1, 511, 513, 1000])
def test_open_disk_size_not_a_multiple_of_512(tmp_path, size):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(size))
    with pytest.raises(ConfigError, match="multiple"):
        open_disk(DiskSpec(str(path)))


def test_open_disk_empty_file_is_a_zero_sector_disk(tmp_path):
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    fd, size = open_disk(DiskSpec(str(path)))
    os.close(fd)
    assert size == 0


def test_open_disk_errors_do_not_leak_fds(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(100))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ConfigError):
            open_disk(DiskSpec(str(path)))
        with pytest.raises(ConfigError):
            open_disk(DiskSpec(str(tmp_path), readonly=True))
    assert len(os.listdir("/proc/self/fd")) == before


def test_virtio_blk_refuses_a_bad_image(tmp_path):
    with pytest.raises(ConfigError):
        VirtioBlk(DiskSpec(str(tmp_path / "missing.img")))


# virtio 1.2, 5.2.6.2 (device requirements): "The device MUST set the status byte to
# VIRTIO_BLK_S_UNSUPP for discard and write zeroes commands if any unknown flag is set.
# Furthermore, the device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for discard
# commands if the unmap flag is set."
@pytest.mark.parametrize("kind, flags", [(T_DISCARD, UNMAP), (T_DISCARD, 0x2),
                                         (T_WRITE_ZEROES, 0x2), (T_WRITE_ZEROES, UNMAP | 0x80)])
def test_discard_flags_the_spec_forbids_are_unsupp(blk, kind, flags):
    before = blk.file()
    status, used_len, _ = blk.request(kind, out=[discard_segments((0, 8, flags))])
    assert (status, used_len) == (UNSUPP, 1)
    assert blk.file() == before


# --- image locking (as QEMU does: one writer, or any number of readers) ---------------------

@pytest.mark.parametrize("first, second", [(False, False), (False, True), (True, False)])
def test_an_image_in_use_by_a_writer_is_refused(image, first, second):
    fd, _ = open_disk(DiskSpec(str(image), readonly=first))
    try:
        with pytest.raises(ConfigError, match="by another process") as exc:
            open_disk(DiskSpec(str(image), readonly=second))
        assert "\n" not in str(exc.value)
    finally:
        os.close(fd)
    os.close(open_disk(DiskSpec(str(image), readonly=second))[0])   # free once closed


def test_readers_share_an_image(image):
    fds = [open_disk(DiskSpec(str(image), readonly=True))[0] for _ in range(3)]
    for fd in fds:
        os.close(fd)


def test_a_second_pyvisor_process_cannot_write_a_locked_image(image):
    import subprocess
    import sys
    fd, _ = open_disk(DiskSpec(str(image)))
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pyvisor.devices.virtio.blk import "
             "DiskSpec, open_disk\ntry:\n open_disk(DiskSpec(sys.argv[1]))\n"
             "except Exception as e:\n print(e); sys.exit(1)", str(image)],
            capture_output=True, text=True, timeout=60)
        assert probe.returncode == 1 and "in use by another process" in probe.stdout
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", [T_IN, T_OUT])
def test_a_request_moves_at_most_seg_max_times_size_max(tmp_path, kind):
    """80 data buffers naming the same 512 KiB (40 MiB, on a 64 MiB image): more than the
    seg_max x size_max the device advertises, refused without touching image or RAM."""
    from pyvisor.devices.virtio.blk import MAX_TRANSFER
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    b = Blk(path)
    try:
        assert 40 << 20 > MAX_TRANSFER == b.dev.read_config(8, 4) * b.dev.read_config(12, 4)
        hdr = struct.pack("<IIQ", kind, 0, 0)
        buf = b.drv.alloc(512 << 10, fill=0xCC)
        status_addr = b.drv.alloc(1, fill=0xFF)
        b.drv.add([Buf(b.drv.alloc(len(hdr), hdr), len(hdr))]
                  + [Buf(buf, 512 << 10, kind == T_IN)] * 80 + [Buf(status_addr, 1, True)],
                  indirect=True)
        assert [u[1] for u in b.run()] == [1]
        assert b.mem.read_u8(status_addr) == IOERR
        assert b.mem.read(buf, 16) == b"\xcc" * 16
        assert os.stat(path).st_blocks == 0
    finally:
        b.close()


def test_a_request_just_within_the_limit_is_served(tmp_path):
    from pyvisor.devices.virtio.blk import MAX_TRANSFER
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    b = Blk(path)
    try:
        hdr = struct.pack("<IIQ", T_IN, 0, 0)
        buf = b.drv.alloc(512 << 10, fill=0xCC)
        status_addr = b.drv.alloc(1, fill=0xFF)
        count = MAX_TRANSFER // (512 << 10)
        b.drv.add([Buf(b.drv.alloc(len(hdr), hdr), len(hdr))]
                  + [Buf(buf, 512 << 10, True)] * count + [Buf(status_addr, 1, True)],
                  indirect=True)
        assert [u[1] for u in b.run()] == [count * (512 << 10) + 1]
        assert b.mem.read_u8(status_addr) == OK
        assert b.mem.read(buf, 16) == bytes(16)
    finally:
        b.close()


# --- many requests in flight ------------------------------------------------------------------

@pytest.fixture
def gate(watched):
    """A PageGate on the guest RAM of `watched`."""
    g = PageGate(watched.mem)
    yield g
    g.close()


def held_reads(b, gate, count, start=0):
    """`count` one-sector reads whose data pages the gate holds: (head, address, status)."""
    reqs = []
    for i in range(count):
        head, addrs, status = b.submit(T_IN, start + i, in_lens=[512], indirect=True,
                                       own_pages=True)
        gate.hold(addrs[0])
        reqs.append((head, addrs[0], status))
    return reqs


def wait_used(b, count, queue=0, timeout=10):
    """Deliver completions (as the I/O thread would) until `count` entries are used."""
    used = []
    deadline = time.monotonic() + timeout
    while len(used) < count:
        b.complete(max(0.1, deadline - time.monotonic()))
        used += b.drvs[queue].get_used()
    assert len(used) == count, used
    return used


def queue_interrupts(b):
    return sum(1 for kind, _ in b.interrupts if kind == "queue")


def eventfd_count(fd):
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("eventfd-count"))


@pytest.fixture(params=["threads", "python"])
def watched(image, request):
    b = Blk(image, watched=True, size=64, aio=request.param)
    yield b
    b.close()


def test_threads_serve_several_requests_at_once_and_interrupt_once(watched, gate):
    disk = watched.file()
    reqs = held_reads(watched, gate, blk_io.THREADS)
    watched.dev.notify(0)                       # returns with the reads in flight
    gate.wait_held(blk_io.THREADS)              # every worker in a read at once
    assert watched.drv.get_used() == [] and queue_interrupts(watched) == 0
    gate.release()
    deadline = time.monotonic() + 10
    while eventfd_count(watched.dev._event_fd) < len(reqs):      # all done: one batch
        assert time.monotonic() < deadline
        time.sleep(0.002)
    used = wait_used(watched, len(reqs))
    assert sorted(used) == sorted((head, 513) for head, _, _ in reqs)
    assert queue_interrupts(watched) == 1
    for i, (_, addr, status) in enumerate(reqs):
        assert watched.mem.read_u8(status) == OK
        assert watched.drv.read(addr, 512) == disk[i * 512:(i + 1) * 512]


def test_io_uring_serves_a_kick_in_c(image):
    """A kick's plain reads are popped, submitted and returned by the C path: Python
    queues no operation."""
    b = Blk(image, aio="io_uring", size=64)
    try:
        disk = b.file()
        ops = spy_ops(b.dev)
        reqs = [b.submit(T_IN, i, in_lens=[512], indirect=True) for i in range(32)]
        used = b.run()
        assert ops == [] and b.dev._io.c_in_flight() == 0
        assert sorted(used) == sorted((head, 513) for head, _, _ in reqs)
        for i, (_, addrs, status) in enumerate(reqs):
            assert b.mem.read_u8(status) == OK
            assert b.drv.read(addrs[0], 512) == disk[i * 512:(i + 1) * 512]
    finally:
        b.close()


def test_completions_respect_event_idx(image, aio):
    """2.7.10: with VIRTIO_RING_F_EVENT_IDX the driver asks for an interrupt once the used
    index passes used_event; batches before that raise none."""
    b = Blk(image, aio=aio, size=64)
    try:
        assert b.dev.has_feature(lib.VIRTIO_RING_F_EVENT_IDX)
        b.drv.set_used_event(5)                  # interrupt when entry 6 is used
        for i in range(4):
            b.submit(T_IN, i, in_lens=[512], indirect=True)
        assert len(b.run()) == 4 and queue_interrupts(b) == 0
        for i in range(4):
            b.submit(T_IN, i, in_lens=[512], indirect=True)
        assert len(b.run()) == 4 and queue_interrupts(b) == 1
    finally:
        b.close()


@pytest.mark.parametrize("aio", ["threads", "python"])
def test_requests_in_flight_are_bounded_by_the_queue_size(image, aio):
    """A driver that makes heads available again while they are in flight gets at most a
    queue's size of requests served at once; the rest waits in the available ring."""
    b = Blk(image, watched=True, size=4, aio=aio)
    gate = PageGate(b.mem)
    try:
        heads = [head for head, _, _ in held_reads(b, gate, 4)]
        b.dev.notify(0)
        gate.wait_held(4)
        for head in heads:                       # the same chains, again
            b.drv.publish(head)
        b.dev.notify(0)
        time.sleep(0.05)
        assert b.dev.queues[0].last_avail == 4 and b.dev._busy() == 4
        # a completion signal with nothing completed (already reaped): the queue left at its
        # bound is tried once, not spun on while its requests are in flight
        signal = threading.Thread(target=b.dev.complete, daemon=True)
        signal.start()
        signal.join(5)
        assert not signal.is_alive()
        gate.release()
        wait_used(b, 8)                          # (the 4-entry used ring wraps meanwhile)
        assert b.drv.used_idx == 8
    finally:
        gate.close()
        b.close()


# (not io_uring: the kick's own thread would block in io_uring_enter on a held page)
@pytest.mark.parametrize("aio", ["threads", "python"])
def test_a_queue_left_at_the_in_flight_bound_is_served_once_it_clears(image, aio,
                                                                     monkeypatch):
    """MAX_IN_FLIGHT reached with a request of queue 1 waiting: a kick of queue 0 that
    returns the requests in flight itself (taking their completion signals) serves queue 1
    then, rather than leaving it for a signal that never comes."""
    monkeypatch.setattr(blk_module, "MAX_IN_FLIGHT", 2)
    b = Blk(image, watched=True, cpus=2, aio=aio)
    gate = PageGate(b.mem)
    try:
        held = held_reads(b, gate, 2)                       # queue 0: the bound
        b.dev.notify(0)
        gate.wait_held(2)
        b.drv = b.drvs[1]
        waiting = b.submit(T_IN, 5, in_lens=[512], indirect=True)[0]
        b.dev.notify(1)                                     # left at the bound
        assert b.drvs[1].get_used() == []
        gate.release()
        deadline = time.monotonic() + 10
        while eventfd_count(b.dev._event_fd) < 2:           # both done, not yet returned
            assert time.monotonic() < deadline
            time.sleep(0.002)
        b.drv = b.drvs[0]
        late = b.submit(T_IN, 6, in_lens=[512], indirect=True)[0]
        b.dev.notify(0)
        used = [b.drvs[0].get_used(), b.drvs[1].get_used()]
        while sum(map(len, used)) < 4:
            b.complete()
            used[0] += b.drvs[0].get_used()
            used[1] += b.drvs[1].get_used()
        assert sorted(used[0]) == sorted([(h, 513) for h, _, _ in held] + [(late, 513)])
        assert used[1] == [(waiting, 513)]
    finally:
        gate.close()
        b.close()


# --- flush ordering ---------------------------------------------------------------------------

def held_write(b, gate, sector, data):
    head, addrs, status = b.submit(T_OUT, sector, out=[data], indirect=True, own_pages=True)
    gate.hold(addrs[0])
    return head, addrs[0], status


def test_a_flush_waits_for_the_writes_in_flight(watched, gate):
    hw, data, sw = held_write(watched, gate, 2, pattern(512, 3))
    hf, _, sf = watched.submit(T_FLUSH, indirect=True)
    watched.dev.notify(0)
    gate.wait_held(1)
    time.sleep(0.05)
    watched.dev.complete()                       # whatever has completed: not the flush
    assert watched.drv.get_used() == []
    gate.release(data)
    used = wait_used(watched, 2)
    assert sorted(used) == sorted([(hw, 1), (hf, 1)])
    assert watched.mem.read_u8(sw) == watched.mem.read_u8(sf) == OK
    assert watched.file()[1024:1536] == pattern(512, 3)


def test_a_flush_does_not_wait_for_writes_that_came_after_it(image):
    """The C path's writes after a flush start once it has completed. (Python hands its
    flush over only once the writes before it have completed, and the backend then drains
    whatever Python handed over meanwhile, later writes included, as io_uring does.)"""
    b = Blk(image, watched=True, size=64)
    gate = PageGate(b.mem)
    try:
        h1, first, _ = held_write(b, gate, 1, bytes(512))
        hf, _, _ = b.submit(T_FLUSH, indirect=True)
        h2, second, _ = held_write(b, gate, 8, bytes(512))
        b.dev.notify(0)
        gate.wait_held(1)
        time.sleep(0.05)
        assert gate.blocked() == 1                   # the second write waits for the flush
        gate.release(first)                          # the first write only
        used = wait_used(b, 2)
        assert sorted(used) == sorted([(h1, 1), (hf, 1)])  # the flush is done, write 2 not
        gate.release(second)
        assert wait_used(b, 1) == [(h2, 1)]
    finally:
        gate.close()
        b.close()


def test_flush_data_reaches_the_file_before_the_flush_completes(image, aio):
    b = Blk(image, aio=aio, size=64)
    try:
        for i in range(8):
            b.submit(T_OUT, i, out=[pattern(512, i)], indirect=True)
        head, _, status = b.submit(T_FLUSH, indirect=True)
        used = b.run()
        assert len(used) == 9 and b.mem.read_u8(status) == OK
        assert b.file()[:8 * 512] == b"".join(pattern(512, i) for i in range(8))
    finally:
        b.close()


# --- several queues (VIRTIO_BLK_F_MQ) --------------------------------------------------------

def test_one_queue_per_vcpu(image, aio):
    b = Blk(image, aio=aio, cpus=2)
    try:
        dev = b.dev
        assert len(dev.queues) == 2
        assert dev.device_features >> lib.VIRTIO_BLK_F_MQ & 1
        assert dev.read_config(34, 2) == 2             # num_queues
        disk = b.file()
        reqs = [b.submit(T_IN, 0, in_lens=[512], indirect=True)]
        b.drv = b.drvs[1]
        reqs.append(b.submit(T_IN, 1, in_lens=[512], indirect=True))
        assert b.run(1) == [(reqs[1][0], 513)]         # queue 1 answers into its own ring
        assert b.drvs[0].get_used() == []
        assert b.run(0) == [(reqs[0][0], 513)]
        assert b.drvs[1].read(reqs[1][1][0], 512) == disk[512:1024]
        assert b.drvs[0].read(reqs[0][1][0], 512) == disk[:512]
    finally:
        b.close()


def test_a_single_queue_offers_no_mq(image):
    for cpus, queues in ((1, None), (4, 1)):
        b = Blk(image, cpus=cpus, queues=queues)
        try:
            assert len(b.dev.queues) == 1
            assert not b.dev.device_features >> lib.VIRTIO_BLK_F_MQ & 1
            assert b.dev.read_config(34, 2) == 1
        finally:
            b.close()


def test_no_more_queues_than_vcpus(image):
    with pytest.raises(ConfigError, match="queues=3 is more than the 2 vCPUs") as exc:
        VirtioBlk(DiskSpec(str(image), queues=3), 2)
    assert "\n" not in str(exc.value)
    os.close(open_disk(DiskSpec(str(image)))[0])      # nothing left open or locked


# --- cache=none: O_DIRECT, unaligned buffers bounced -----------------------------------------

@pytest.fixture
def direct(image, aio):
    b = Blk(image, aio=aio, cache="none")
    yield b
    b.close()


def test_cache_none_opens_the_image_o_direct(direct):
    assert fcntl.fcntl(direct.dev.fd, fcntl.F_GETFL) & os.O_DIRECT
    assert direct.dev.read_config(20, 4) == direct.dev.align == SECTOR


def test_cache_none_reads_into_unaligned_buffers(direct):
    disk = direct.file()
    ops = spy_ops(direct.dev)
    status, used_len, data = direct.request(T_IN, 3, in_lens=[100 + 412, 1024, 512])
    assert (status, used_len) == (OK, 2049)
    assert b"".join(data) == disk[3 * SECTOR:3 * SECTOR + 2048]
    assert ops == [(blk_io.READ, 2048, 3 * SECTOR)]     # one bounced operation


def test_cache_none_writes_from_unaligned_buffers(direct):
    data = [pattern(300, 1), pattern(724, 2)]
    status, _, _ = direct.request(T_OUT, 6, out=data)
    assert status == OK
    assert direct.file()[6 * SECTOR:8 * SECTOR] == data[0] + data[1]


def test_cache_none_aligned_buffers_go_straight_to_guest_ram(direct):
    disk = direct.file()
    addr = direct.drv.alloc(4096, align=4096)
    hdr = struct.pack("<IIQ", T_IN, 0, 8)
    status = direct.drv.alloc(1, fill=0xFF)
    direct.drv.add([Buf(direct.drv.alloc(16, hdr), 16), Buf(addr, 4096, True), Buf(status, 1, True)])
    assert direct.run()[0][1] == 4097
    assert direct.mem.read_u8(status) == OK
    assert direct.drv.read(addr, 4096) == disk[8 * SECTOR:8 * SECTOR + 4096]
    assert direct.dev._bounce_made == 0


def test_cache_none_bounces_in_bounded_chunks(image, aio, monkeypatch):
    monkeypatch.setattr(blk_module, "BOUNCE_CHUNK", 1024)
    monkeypatch.setattr(blk_module, "BOUNCE_SLOTS", 2)
    b = Blk(image, aio=aio, cache="none", size=64)
    try:
        disk = b.file()
        reqs = [b.submit(T_IN, 8 * i, in_lens=[4000, 96], indirect=True) for i in range(3)]
        used = b.run()
        assert sorted(used) == sorted((h, 4097) for h, _, _ in reqs)
        for i, (_, addrs, status) in enumerate(reqs):
            assert b.mem.read_u8(status) == OK
            got = b.drv.read(addrs[0], 4000) + b.drv.read(addrs[1], 96)
            assert got == disk[8 * i * SECTOR:8 * i * SECTOR + 4096]
        assert b.dev._bounce_made == 2
        status, _, _ = b.request(T_OUT, 1, out=[pattern(3000, 4), pattern(72, 5)])
        assert status == OK
        assert b.file()[512:512 + 3072] == pattern(3000, 4) + pattern(72, 5)
    finally:
        b.close()


def test_cache_none_write_zeroes_without_hole_punching(direct):
    """The zeroing fallback (filesystems without FALLOC_FL_ZERO_RANGE) writes from an
    aligned buffer, which the O_DIRECT image takes."""
    assert direct.file()[4096:4096 + 8192] != bytes(8192)
    assert blk_module._write_zeroes(direct.dev.fd, 4096, 8192) == 0
    assert direct.file()[4096:4096 + 8192] == bytes(8192)


# --- reset, teardown and snapshots with requests in flight -----------------------------------

def test_a_reset_waits_for_the_requests_in_flight(watched, gate):
    reqs = held_reads(watched, gate, 4)
    watched.dev.notify(0)
    gate.wait_held(4)
    reset = threading.Thread(target=watched.dev.set_status, args=(0,))
    reset.start()
    time.sleep(0.05)
    assert reset.is_alive()                   # the vCPU's reset waits for the reads
    gate.release()
    reset.join(10)
    assert not reset.is_alive() and watched.dev.status == 0
    (handler,) = watched.watch.values()
    handler()                                 # completions after the reset: dropped
    assert watched.drv.used_idx == 0
    assert all(watched.mem.read_u8(status) == 0xFF for _, _, status in reqs)


@pytest.mark.parametrize("aio", ["threads", "python"])
def test_close_waits_for_the_requests_in_flight_and_joins_the_workers(image, aio):
    before = blk_io_threads()
    b = Blk(image, watched=True, aio=aio)
    assert blk_io_threads() == before + blk_io.THREADS
    gate = PageGate(b.mem)
    try:
        held_reads(b, gate, 2)                   # (a lone request is waited for in notify)
        b.dev.notify(0)
        gate.wait_held(2)
        closer = threading.Thread(target=b.close)
        closer.start()
        time.sleep(0.05)
        assert closer.is_alive()
        gate.release()
        closer.join(10)
        assert not closer.is_alive() and b.dev.fd == -1
        assert blk_io_threads() == before
    finally:
        gate.close()
        b.close()


def test_a_snapshot_waits_for_the_requests_in_flight(watched, gate):
    held_reads(watched, gate, 3)
    watched.dev.notify(0)
    gate.wait_held(3)
    taken = {}
    snap = threading.Thread(target=lambda: taken.update(state=watched.dev.snapshot_state()))
    snap.start()
    time.sleep(0.05)
    assert snap.is_alive()
    gate.release()
    snap.join(10)
    assert taken["state"]["queues"][0]["used_idx"] == 3    # every request returned first
    assert len(watched.drv.get_used()) == 3


def test_settle_serves_kicks_not_yet_taken_to_the_end(watched):
    for i in range(3):
        watched.submit(T_IN, i, in_lens=[512], indirect=True)
    watched.dev.settle()
    assert len(watched.drv.get_used()) == 3


def test_a_restore_drops_the_requests_in_flight(watched, gate):
    state = watched.dev.snapshot_state()
    held_reads(watched, gate, 2)
    watched.dev.notify(0)
    gate.wait_held(2)
    restore = threading.Thread(target=watched.dev.restore_state, args=(state,))
    restore.start()
    time.sleep(0.05)
    assert restore.is_alive()
    gate.release()
    restore.join(10)
    (handler,) = watched.watch.values()
    handler()
    assert watched.drv.used_idx == 0 and watched.dev.queues[0].used_idx == 0


def test_read_buffers_count_as_written_by_pyvisor(blk):
    """The dirty-page reset puts back what pyvisor wrote: a read's buffers are marked."""
    from pyvisor._native import ffi
    head, addrs, status = blk.submit(T_IN, 0, in_lens=[512])
    for written in blk.mem.written_maps:
        ffi.memmove(written, bytes(len(written)), len(written))
    blk.run()
    written = blk.mem.written_maps[0]
    assert written[addrs[0] >> 12] == 1 and written[status >> 12] == 1


# --- aio=io_uring where the host has none ----------------------------------------------------

def refuse_io_uring(monkeypatch, error):
    real = blk_io.DiskIo

    def make(aio, *args):
        if aio == "io_uring":
            raise OSError(error, os.strerror(error))
        return real(aio, *args)
    monkeypatch.setattr(blk_io, "DiskIo", make)


def test_io_uring_falls_back_to_threads_with_one_line(image, monkeypatch, caplog):
    refuse_io_uring(monkeypatch, errno.ENOSYS)
    with caplog.at_level(logging.INFO, logger="pyvisor.virtio"):
        b = Blk(image, aio="io_uring")
        try:
            assert b.dev.aio == "threads"
            assert b.request(T_IN, 0, in_lens=[512])[0] == OK
        finally:
            b.close()
    lines = [r for r in caplog.records if "io_uring" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "not available on this host (Function not implemented); using aio=threads" \
        in lines[0].getMessage()


def test_the_default_backend_is_io_uring_here_and_falls_back_quietly(image, monkeypatch,
                                                                     caplog):
    b = VirtioBlk(DiskSpec(str(image)))
    assert b.aio == "io_uring"
    b.close()
    refuse_io_uring(monkeypatch, errno.EPERM)
    with caplog.at_level(logging.WARNING, logger="pyvisor.virtio"):
        b = VirtioBlk(DiskSpec(str(image)))
        assert b.aio == "threads"
        b.close()
    assert not caplog.records


def test_a_lone_request_is_served_before_the_kick_returns(watched, monkeypatch):
    """Queue depth 1: the one request in flight is waited for on the kick's thread, its
    completion signal taken with it, so the driver gets its interrupt without a second
    pass through the I/O loop."""
    disk = watched.file()
    head, addrs, status = watched.submit(T_IN, 2, in_lens=[512], indirect=True)
    watched.dev.notify(0)
    assert watched.drv.get_used() == [(head, 513)] and queue_interrupts(watched) == 1
    assert watched.drv.read(addrs[0], 512) == disk[1024:1536]
    (fd,) = watched.watch
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)


def test_cache_none_bounces_a_write_whose_data_shares_the_header_buffer(direct):
    data = pattern(1024, 6)
    header = struct.pack("<IIQ", T_OUT, 0, 4) + data       # one 16-aligned buffer
    status, used_len, _ = direct.request(T_OUT, header=header)
    assert (status, used_len) == (OK, 1)
    assert direct.file()[4 * SECTOR:6 * SECTOR] == data
