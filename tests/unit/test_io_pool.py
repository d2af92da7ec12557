"""aio=threads' pool (native/io_pool.c) through the interface it shares with io_uring
(native/uring.h): results, completion signals, the flush's drain, its bounds, close."""
import errno
import os

import pytest

from pyvisor._uring import ffi, lib

THREADS = 4


class Pool:
    def __init__(self, fd, entries=64):
        self.event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        error = ffi.new("int *")
        self.ring = lib.pvu_open_threads(entries, fd, self.event_fd, THREADS, error)
        assert self.ring != ffi.NULL, os.strerror(error[0])
        self._keep = []

    def queue(self, op, token, bufs=(), offset=0):
        ptrs = [ffi.from_buffer(b) for b in bufs]
        iov = ffi.new("struct iovec[]", [(p, len(p)) for p in ptrs]) if bufs else ffi.NULL
        self._keep.append((iov, ptrs, bufs))
        return lib.pvu_queue(self.ring, op, iov, len(bufs), offset, token)

    def reap(self, wait):
        """Every completion, once `wait` of them are there."""
        lib.pvu_submit(self.ring, wait)
        tokens, results = ffi.new("uint64_t[]", 1024), ffi.new("int32_t[]", 1024)
        n = lib.pvu_reap(self.ring, tokens, results, 1024)
        return [(tokens[i], results[i]) for i in range(n)]

    def close(self):
        lib.pvu_close(self.ring)
        os.close(self.event_fd)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 64)
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


def test_reads_and_writes_move_data_and_signal_each_completion(image):
    pool = Pool(image)
    try:
        out = bytearray(b"\xAB" * 512)
        first, second = bytearray(256), bytearray(256)
        assert pool.queue(lib.PVU_WRITE, 1, [out], 4096) == 0
        assert pool.queue(lib.PVU_READ, 2, [first, second], 256) == 0
        done = []
        while len(done) < 2:
            done += pool.reap(1)
        assert sorted(done) == [(1, 512), (2, 512)]
        assert os.eventfd_read(pool.event_fd) == 2
        assert first == bytes(range(256)) and second == bytes(range(256))
        assert os.pread(image, 512, 4096) == bytes(out)
    finally:
        pool.close()


def test_errors_come_back_as_negative_errno(image):
    """fdatasync on a pipe is EINVAL and preadv on one ESPIPE: each operation reaches the
    call it names, on the pool's file."""
    r, w = os.pipe()
    pool = Pool(r)
    try:
        pool.queue(lib.PVU_FSYNC, 1)
        pool.queue(lib.PVU_READ, 2, [bytearray(8)])
        done = pool.reap(2)
        done += pool.reap(0)
        assert sorted(done) == [(1, -errno.EINVAL), (2, -errno.ESPIPE)]
    finally:
        pool.close()
        os.close(r)
        os.close(w)


def test_a_flush_drains_what_came_before_it_and_holds_back_what_comes_after(image):
    pool = Pool(image, entries=1024)
    try:
        for round_ in range(5):
            bufs = [bytearray(b"%d" % i) * 64 for i in range(300)]
            for i in range(150):
                pool.queue(lib.PVU_WRITE, i, [bufs[i]], 512 * (i % 32))
            pool.queue(lib.PVU_FSYNC, 1000)
            for i in range(150, 300):
                pool.queue(lib.PVU_WRITE, i, [bufs[i]], 512 * (i % 32))
            order = []
            while len(order) < 301:
                order += [token for token, _ in pool.reap(1)]
            flush = order.index(1000)
            assert sorted(order[:flush]) == list(range(150)), f"round {round_}"
            assert sorted(order[flush + 1:]) == list(range(150, 300))
    finally:
        pool.close()


def test_at_most_entries_operations_are_outstanding(image):
    pool = Pool(image, entries=4)
    try:
        bufs = [bytearray(16) for _ in range(5)]
        assert [pool.queue(lib.PVU_READ, i, [bufs[i]]) for i in range(5)] == [0] * 4 + [-errno.EBUSY]
        assert lib.pvu_space(pool.ring) == 0
        done = pool.reap(4)                    # completed, not yet reaped: still counted
        assert len(done) == 4 and lib.pvu_space(pool.ring) == 4
    finally:
        pool.close()


def test_waiting_for_more_than_is_outstanding_returns(image):
    """io_uring would block for ever; the pool waits for what can complete."""
    pool = Pool(image)
    try:
        pool.queue(lib.PVU_READ, 7, [bytearray(16)])
        done = pool.reap(5)
        assert done == [(7, 16)]
        assert pool.reap(3) == []
    finally:
        pool.close()


def blk_io_threads():
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                count += f.read().strip() == "blk-io"
        except FileNotFoundError:
            pass
    return count


def test_close_joins_the_workers(image):
    before = blk_io_threads()
    pool = Pool(image)
    assert blk_io_threads() == before + THREADS
    pool.close()
    assert blk_io_threads() == before
