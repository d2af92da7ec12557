"""How virtio-blk moves data between guest RAM and its image with many requests in flight:
`aio=io_uring` (one restricted ring per disk, native/uring.c) or `aio=threads` (a small
pool of C threads in preadv/pwritev/fdatasync, native/io_pool.c), both behind one
submission/completion interface in C.

Operations are tagged with a token and come back as (token, result) pairs, the result
being the bytes moved or -errno, and `event_fd` (an eventfd the device owns and the I/O
thread watches) is signalled when completions wait. Nothing here ever calls back into the
device: the device reaps, on its own thread and under its own lock, so the kernel or a
worker can never touch device state, and a device waiting for its I/O (a reset, a
snapshot) cannot deadlock with it. An operation's buffers stay referenced here until its
completion is reaped, so guest RAM they point into stays mapped while it is in use.

The backend also carries the C data path's requests (native/blk_ring.c, `fast`): reaping
completes those itself (status byte, used-ring entry) and gives back only the operations
the device queued from Python.
"""
from __future__ import annotations

import errno
import os

from ...log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

READ, WRITE, FSYNC = 0, 1, 2
THREADS = 8                       # aio=threads: workers per disk
RING_ENTRIES = 1024               # submission entries per disk (the pool: operations)
REAP_BATCH = 64

log = get_logger("pyvisor.virtio")

Completion = tuple[int, int]      # (token, bytes moved or -errno)
# What the C data path needs of a disk: (image size, O_DIRECT alignment or 1, read-only,
# bytes per request at most, requests in flight at most)
Geometry = tuple[int, int, bool, int, int]


class DiskIo:
    """A disk's I/O backend: operations are queued as they come and handed over together
    at commit() (one io_uring_enter, or one wake-up of the pool, per batch); with io_uring,
    buffered reads the page cache holds often complete inside that call.

    c_path=False leaves every request to Python (`fast` is None): the reference the C
    path is checked against, and what the fuzzer drives (it follows queue.py's pops)."""

    def __init__(self, aio: str, fd: int, event_fd: int, geometry: Geometry,
                 c_path: bool = True) -> None:
        from ..._uring import ffi, lib
        self._ffi, self._lib = ffi, lib
        self.name = aio
        error = ffi.new("int *")
        ring = (lib.pvu_open(RING_ENTRIES, fd, event_fd, error) if aio == "io_uring" else
                lib.pvu_open_threads(RING_ENTRIES, fd, event_fd, THREADS, error))
        if ring == ffi.NULL:
            raise OSError(error[0], os.strerror(error[0]))
        self._ring = ring
        self._disk = lib.pvb_open(ring, event_fd, *geometry)   # the C data path on it
        if self._disk == ffi.NULL:
            lib.pvu_close(ring)
            raise MemoryError("virtio-blk: no memory for the C data path")
        self.fast = self._disk if c_path else None
        self.report = lib.pvb_report(self._disk)
        self._drop = False
        self._op_code = {READ: lib.PVU_READ, WRITE: lib.PVU_WRITE, FSYNC: lib.PVU_FSYNC}
        self._inflight: dict[int, object] = {}   # token -> what keeps its buffers alive
        self._early: list[Completion] = []        # reaped while the submission ring was full
        self._tokens = ffi.new("uint64_t[]", REAP_BATCH)
        self._results = ffi.new("int32_t[]", REAP_BATCH)

    def queue(self, token: int, op: int, bufs: Sequence[memoryview], offset: int) -> None:
        ffi, lib = self._ffi, self._lib
        ptrs = [ffi.from_buffer(buf) for buf in bufs]
        iov = ffi.new("struct iovec[]", [(p, len(p)) for p in ptrs]) if bufs else ffi.NULL
        self._inflight[token] = (iov, ptrs)
        while lib.pvu_queue(self._ring, self._op_code[op], iov, len(bufs), offset, token):
            self.commit()        # full: hand over what is queued (io_uring's ring empties)
            if not lib.pvu_space(self._ring):
                self.commit(wait=1)         # the pool: until an operation completes
            self._early += self._reap()    # and make room

    def commit(self, wait: int = 0) -> None:
        """Hand the queued operations to the kernel; with wait, block (GIL released) until
        that many more have completed."""
        ret = self._lib.pvu_submit(self._ring, wait)
        if ret < 0 and -ret not in (errno.EAGAIN, errno.EBUSY, errno.EINTR):
            raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")

    def reap(self) -> list[Completion]:
        out, self._early = self._early + self._reap(), []
        return out

    def _reap(self) -> list[Completion]:
        """Python's completions; the C path's are completed on the way (dropped, without
        touching guest RAM, while wait(drop=True) runs)."""
        out: list[Completion] = []
        tokens, results = self._tokens, self._results
        while n := self._lib.pvb_reap(self._disk, tokens, results, REAP_BATCH, self._drop):
            for i in range(n):
                token = tokens[i]
                del self._inflight[token]
                out.append((token, results[i]))
        return out

    def wait(self, drop: bool = False) -> list[Completion]:
        """Block until every operation has completed, Python's and C's; Python's
        completions. With drop, C's complete without writing their status or used entry
        (the queues they belong to are being reset or replaced)."""
        self._drop = drop
        try:
            out = self.reap()
            while self._inflight or self.report.in_flight:
                self.commit(wait=1)
                out += self._reap()
        finally:
            self._drop = False
        return out

    def c_in_flight(self) -> int:
        """Requests the C data path has in flight."""
        return self.report.in_flight

    def take_touched(self) -> int:
        """Queues (a bit per index) the C path pushed used entries to since the last call."""
        report = self.report
        touched = report.touched
        if touched:
            report.touched = 0
        return touched

    def take_failures(self) -> tuple[int, int]:
        """C requests that failed since the last call, and the last errno among them."""
        report = self.report
        failed = report.failures
        if failed:
            report.failures = 0
        return failed, report.last_error

    def close(self) -> None:
        if self._ring is not None:
            self.wait(drop=True)
            self._lib.pvb_close(self._disk)
            self._lib.pvu_close(self._ring)
            self._ring = self._disk = self.fast = None


def open_io(aio: str | None, fd: int, event_fd: int, where: str, geometry: Geometry,
            c_path: bool = True) -> DiskIo:
    """The backend `aio` names (None: io_uring where the host has it). Where the host
    cannot make the ring (an old kernel, kernel.io_uring_disabled, a container's seccomp
    profile) io_uring falls back to threads, with one line saying why if it was asked for."""
    if aio in ("io_uring", None):
        try:
            return DiskIo("io_uring", fd, event_fd, geometry, c_path)
        except OSError as e:
            (log.warning if aio else log.info)(
                "%s: aio=io_uring is not available on this host (%s); using aio=threads",
                where, e.strerror or e)
    return DiskIo("threads", fd, event_fd, geometry, c_path)
