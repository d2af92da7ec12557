"""How virtio-blk moves data between guest RAM and its image with many requests in flight:
`aio=io_uring` (one restricted ring per disk, native/uring.c) or `aio=threads` (a small
pool of threads in preadv/pwritev/fdatasync, which release the GIL).

Both take operations tagged with a token and give back (token, result) pairs, the result
being the bytes moved or -errno, and both signal `event_fd` (an eventfd the device owns
and the I/O thread watches) when completions wait. Neither ever calls back into the
device: the device reaps, on its own thread and under its own lock, so a worker can never
touch device state, and a device waiting for its I/O (a reset, a snapshot) cannot
deadlock with it. An operation's buffers stay referenced here until its completion is
reaped, so guest RAM they point into stays mapped while the kernel or a worker uses it.

With io_uring the ring also carries the C data path's requests (native/blk_ring.c,
`fast`): reaping completes those itself (status byte, used-ring entry) and gives back only
the operations the device queued from Python.
"""
from __future__ import annotations

import errno
import os
import queue
import threading
from collections import deque

from ...log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

READ, WRITE, FSYNC = 0, 1, 2
THREADS = 8                       # aio=threads: workers per disk
RING_ENTRIES = 1024               # aio=io_uring: submission entries per disk
REAP_BATCH = 64

log = get_logger("pyvisor.virtio")

Completion = tuple[int, int]      # (token, bytes moved or -errno)
# What the C data path needs of a disk: (image size, O_DIRECT alignment or 1, read-only,
# bytes per request at most, requests in flight at most)
Geometry = tuple[int, int, bool, int, int]


class ThreadIo:
    """aio=threads: THREADS workers serve operations in submission order of pick-up."""

    name = "threads"
    fast = None                       # no C data path: every request goes through Python

    def __init__(self, fd: int, event_fd: int) -> None:
        self._fd, self._event_fd = fd, event_fd
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._done: deque[Completion] = deque()
        self._idle = threading.Condition()
        self._pending = 0               # submitted and not yet reaped
        self._workers = [threading.Thread(target=self._work, name="blk-io", daemon=True)
                         for _ in range(THREADS)]
        for worker in self._workers:
            worker.start()

    def queue(self, token: int, op: int, bufs: Sequence[memoryview], offset: int) -> None:
        with self._idle:
            self._pending += 1
        self._ops.put((token, op, bufs, offset))

    def commit(self) -> None:
        """Operations start as they are queued."""

    def _work(self) -> None:
        while (item := self._ops.get()) is not None:
            token, op, bufs, offset = item
            try:
                if op == READ:
                    result = os.preadv(self._fd, bufs, offset)
                elif op == WRITE:
                    result = os.pwritev(self._fd, bufs, offset)
                else:
                    os.fdatasync(self._fd)
                    result = 0
            except OSError as e:
                result = -(e.errno or errno.EIO)
            except Exception:   # never lose a worker: wait() counts on every completion
                log.exception("virtio-blk I/O worker")
                result = -errno.EIO
            del item, bufs
            self._done.append((token, result))
            try:   # before the notify: a wait() that returns has seen the signal come
                os.eventfd_write(self._event_fd, 1)
            except OSError:   # the device closed it: nobody is left to tell
                pass
            with self._idle:
                self._idle.notify_all()

    def reap(self) -> list[Completion]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        if out:
            with self._idle:
                self._pending -= len(out)
        return out

    def wait(self, drop: bool = False) -> list[Completion]:
        """Block until every queued operation has completed; all the completions (drop
        is the io_uring backend's, for its C requests: the pool has none)."""
        with self._idle:
            while len(self._done) < self._pending:
                self._idle.wait()
        return self.reap()

    def c_in_flight(self) -> int:
        return 0

    def take_touched(self) -> int:
        return 0

    def take_failures(self) -> tuple[int, int]:
        return 0, 0

    def close(self) -> None:
        self.wait()
        for _ in self._workers:
            self._ops.put(None)
        for worker in self._workers:
            worker.join()


class UringIo:
    """aio=io_uring: operations are written to the submission ring as they come and handed
    to the kernel together at commit() (one io_uring_enter per batch); buffered reads the
    page cache holds often complete inside that call."""

    name = "io_uring"

    def __init__(self, fd: int, event_fd: int, geometry: Geometry) -> None:
        from ..._uring import ffi, lib
        self._ffi, self._lib = ffi, lib
        error = ffi.new("int *")
        ring = lib.pvu_open(RING_ENTRIES, fd, event_fd, error)
        if ring == ffi.NULL:
            raise OSError(error[0], os.strerror(error[0]))
        self._ring = ring
        self.fast = lib.pvb_open(ring, event_fd, *geometry)   # the C data path on it
        if self.fast == ffi.NULL:
            lib.pvu_close(ring)
            raise MemoryError("virtio-blk: no memory for the C data path")
        self.report = lib.pvb_report(self.fast)
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
            self.commit()        # the submission ring is full: hand it to the kernel,
            self._early += self._reap()    # and make room in the completion ring

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
        while n := self._lib.pvb_reap(self.fast, tokens, results, REAP_BATCH, self._drop):
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
            self._lib.pvb_close(self.fast)
            self._lib.pvu_close(self._ring)
            self._ring = self.fast = None


def open_io(aio: str | None, fd: int, event_fd: int, where: str,
            geometry: Geometry) -> ThreadIo | UringIo:
    """The backend `aio` names (None: io_uring where the host has it). Where the host
    cannot make the ring (an old kernel, kernel.io_uring_disabled, a container's seccomp
    profile) io_uring falls back to threads, with one line saying why if it was asked for."""
    if aio in ("io_uring", None):
        try:
            return UringIo(fd, event_fd, geometry)
        except (OSError, ImportError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            (log.warning if aio else log.info)(
                "%s: aio=io_uring is not available on this host (%s); using aio=threads",
                where, reason)
    return ThreadIo(fd, event_fd)
