"""virtio-blk (virtio 1.2, 5.2) over a raw image file.

A request is a 16-byte header (type, reserved, sector) the driver wrote, then data buffers,
then one status byte for the device. Data moves between guest RAM and the file straight
through the chain's views (never copied or joined; cache=none bounces buffers O_DIRECT
cannot take), many requests at once, through io_uring or a pool of C threads (blk_io.py),
with one request queue per vCPU (VIRTIO_BLK_F_MQ). A request moves
at most MAX_TRANSFER bytes (seg_max segments of size_max, both in the configuration
space, so a driver knows) and never reaches past the end of the image, whatever lengths
its descriptors declare; FLUSH is fdatasync, so data the guest flushed is on the
host's disk even if pyvisor is killed right after. DISCARD and WRITE_ZEROES take at most
MAX_DISCARD_SEGMENTS segments, counted from the buffer lengths before anything is read.

The image is locked as long as pyvisor has it open (flock: exclusive for a writable disk,
shared for `ro`), so a second pyvisor cannot write an image another one uses.

On either backend, the common requests never reach Python: plain reads, writes and
flushes are popped, started and returned by native/blk_ring.c (one call per kick, one per
completion batch), which leaves everything else in the available ring for the Python path
below (GET_ID, DISCARD, WRITE_ZEROES, a cache=none bounce, a request that fails, a chain
queue.py refuses).
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
from collections import Counter, deque

from ..._native import ffi, lib
from ..._uring import lib as _uring
from ...errors import ConfigError
from ...value import Value
from .blk_io import FSYNC, READ, WRITE, open_io
from .blk_ring import RingQueue
from .device import CONFIG_INTERRUPT, VirtioDevice
from .queue import Chain, QueueError, Virtqueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

PVB_PYTHON, PVB_FULL = _uring.PVB_PYTHON, _uring.PVB_FULL

SECTOR = 512
QUEUE_SIZE = 256
SEG_MAX = QUEUE_SIZE - 2          # header and status take two descriptors
SIZE_MAX = 128 << 10              # bytes per segment (Linux splits to fit)
MAX_TRANSFER = SEG_MAX * SIZE_MAX # data bytes per request: about 32 MiB
MAX_DISCARD_SECTORS = 1 << 22     # 2 GiB per segment
MAX_DISCARD_SEGMENTS = 32
MAX_QUEUES = 64                   # request queues per disk (one per vCPU up to this)
MAX_IN_FLIGHT = 1024              # requests in flight per disk, all queues together
BOUNCE_CHUNK = 1 << 20            # cache=none: unaligned requests move through buffers
BOUNCE_SLOTS = 8                  # of this size, at most this many per disk

HEADER = struct.Struct("<IIQ")                 # type, reserved, sector
SEGMENT = struct.Struct("<QII")                # sector, num_sectors, flags
# struct virtio_blk_config up to write_zeroes_may_unmap (offsets in the comments)
CONFIG = struct.Struct(
    "<Q"      # 0  capacity (512-byte sectors)
    "I"       # 8  size_max
    "I"       # 12 seg_max
    "HBB"     # 16 geometry: cylinders, heads, sectors
    "I"       # 20 blk_size
    "BBHI"    # 24 topology: physical_block_exp, alignment_offset, min_io_size, opt_io_size
    "B"       # 32 writeback
    "x"       # 33 unused
    "H"       # 34 num_queues
    "III"     # 36 max_discard_sectors, max_discard_seg, discard_sector_alignment
    "II"      # 48 max_write_zeroes_sectors, max_write_zeroes_seg
    "B3x")    # 56 write_zeroes_may_unmap

OK, IOERR, UNSUPP = lib.VIRTIO_BLK_S_OK, lib.VIRTIO_BLK_S_IOERR, lib.VIRTIO_BLK_S_UNSUPP


CACHE_MODES = ("writeback", "none")
AIO_MODES = ("threads", "io_uring")
DISK_SYNTAX = ("PATH[,ro][,serial=ID][,cache=writeback|none][,aio=threads|io_uring]"
               "[,queues=N]")


class DiskSpec(Value):
    """`--disk PATH[,ro][,serial=ID][,cache=writeback|none][,aio=threads|io_uring][,queues=N]`.

    cache=writeback (the default, as QEMU's) goes through the host's page cache, which
    works on every filesystem (tmpfs included) and serves re-reads from host memory;
    FLUSH still puts data on the disk. cache=none opens the image O_DIRECT: no second
    copy of the guest's data in host memory, which a guest with its own page cache does
    not need. aio unset means io_uring where the host has it (fewer threads and wake-ups
    per request), else threads; queues unset means one queue per vCPU."""
    __slots__ = ("path", "readonly", "serial", "cache", "aio", "queues")

    def __init__(self, path: str, readonly: bool = False, serial: str = "",
                 cache: str = "writeback", aio: str | None = None,
                 queues: int | None = None) -> None:
        self.path, self.readonly, self.serial = path, readonly, serial
        self.cache, self.aio, self.queues = cache, aio, queues

    @classmethod
    def parse(cls, text: str) -> "DiskSpec":
        path, *options = text.split(",")
        if not path:
            raise ConfigError(f"invalid --disk {text!r}: expected {DISK_SYNTAX}")
        fields: dict = {}
        for option in options:
            name, eq, value = option.partition("=")
            if option == "ro":
                fields["readonly"] = True
            elif name == "serial" and eq:
                if len(value.encode()) > lib.VIRTIO_BLK_ID_BYTES:
                    raise ConfigError(f"invalid --disk {text!r}: a serial has at most "
                                      f"{lib.VIRTIO_BLK_ID_BYTES} bytes")
                fields["serial"] = value
            elif name in ("cache", "aio") and eq:
                allowed = CACHE_MODES if name == "cache" else AIO_MODES
                if value not in allowed:
                    raise ConfigError(f"invalid --disk {text!r}: {name} is "
                                      f"{' or '.join(allowed)}, not {value!r}")
                fields[name] = value
            elif name == "queues" and eq:
                if not value.isdigit() or not 1 <= int(value) <= MAX_QUEUES:
                    raise ConfigError(f"invalid --disk {text!r}: queues is a number from 1 "
                                      f"to {MAX_QUEUES} (at most one per vCPU)")
                fields["queues"] = int(value)
            else:
                raise ConfigError(f"invalid --disk {text!r}: unknown option {option!r} "
                                  f"(expected ro, serial=ID, cache=, aio= or queues=)")
        return cls(path, **fields)


def open_disk(spec: DiskSpec) -> tuple[int, int]:
    """Open the image (read-only for ro); return (fd, size). Every problem is one line."""
    direct = os.O_DIRECT if spec.cache == "none" else 0
    try:   # O_NONBLOCK: a read-only open of a FIFO would wait for a writer
        fd = os.open(spec.path, (os.O_RDONLY if spec.readonly else os.O_RDWR) | os.O_CLOEXEC
                     | os.O_NONBLOCK | direct)
    except OSError as e:
        if direct and e.errno == errno.EINVAL:
            raise ConfigError(f"disk {spec.path!r}: its filesystem does not take O_DIRECT, "
                              f"which cache=none needs (use cache=writeback)") from None
        raise ConfigError(f"disk {spec.path!r}: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISBLK(info.st_mode):
        os.close(fd)
        raise ConfigError(f"disk {spec.path!r}: not a regular file or block device")
    os.set_blocking(fd, True)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    except OSError as e:   # a regular file in name only: /proc/self/mem, many of /sys
        os.close(fd)
        raise ConfigError(f"disk {spec.path!r}: cannot tell its size ({e.strerror}): "
                          f"not a disk image") from None
    if size % SECTOR:
        os.close(fd)
        raise ConfigError(f"disk {spec.path!r}: its size ({size} bytes) is not a multiple "
                          f"of {SECTOR}")
    try:   # held until the fd is closed
        fcntl.flock(fd, (fcntl.LOCK_SH if spec.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno != errno.EWOULDBLOCK:
            raise ConfigError(f"disk {spec.path!r}: cannot lock it: {e.strerror}") from None
        raise ConfigError(f"disk {spec.path!r} is being written by another process"
                          if spec.readonly else
                          f"disk {spec.path!r} is in use by another process (an image "
                          f"can be shared only when every user opens it ,ro)") from None
    return fd, size


class _Request:
    """A read, write or flush handed to the I/O backend, not yet returned to the driver."""
    __slots__ = ("queue", "head", "status", "op", "length", "parts", "failed", "epoch")

    def __init__(self, queue: int, head: int, status: memoryview, op: int,
                 length: int) -> None:
        self.queue, self.head, self.status, self.op = queue, head, status, op
        self.length = length     # data bytes
        self.parts = 0           # its operations not yet completed (several when bounced)
        self.failed = False
        self.epoch = 0           # writes: the flush epoch they were submitted in


class VirtioBlk(VirtioDevice):
    """Requests are served with many in flight: a kick pops every available chain, starts
    its I/O and returns; completions come back through an eventfd on the I/O thread
    (`complete`), each batch pushed to the used rings with one interrupt per queue (as
    EVENT_IDX allows). Without `watch` (no I/O thread), a kick serves its requests to the
    end before it returns.

    Bounds whatever the guest posts: at most a queue's size of requests in flight per
    queue and MAX_IN_FLIGHT in all (the rest stays in the available ring until some
    complete), at most BOUNCE_SLOTS aligned buffers of BOUNCE_CHUNK for cache=none
    requests whose buffers are not aligned. A FLUSH starts once every write submitted
    before it has completed, so what the driver saw complete, and what it had in flight,
    is on the disk when the flush completes. A reset, a snapshot restore, a change of
    image and close() first wait for every operation in flight, so nothing writes guest
    RAM or a ring after them; a snapshot first lets every request complete. Buffers a read
    fills were marked written by pyvisor when the chain was popped (GuestMemory.buffer),
    and no snapshot is taken while one is in flight, so the dirty-page reset sees them."""
    device_id = lib.VIRTIO_ID_BLOCK
    name = "blk"

    def __init__(self, spec: DiskSpec, cpus: int = 1,
                 watch: Callable[[int, Callable[[], None]], None] | None = None,
                 c_path: bool = True) -> None:
        queues = spec.queues or min(cpus, MAX_QUEUES)
        if queues > cpus:
            raise ConfigError(f"disk {spec.path!r}: queues={queues} is more than the {cpus} "
                              f"vCPU{'s' if cpus > 1 else ''} (at most one queue per vCPU)")
        self.queue_sizes = (QUEUE_SIZE,) * queues
        features = (1 << lib.VIRTIO_BLK_F_SIZE_MAX | 1 << lib.VIRTIO_BLK_F_SEG_MAX
                    | 1 << lib.VIRTIO_BLK_F_BLK_SIZE | 1 << lib.VIRTIO_BLK_F_FLUSH)
        if queues > 1:
            features |= 1 << lib.VIRTIO_BLK_F_MQ
        if spec.readonly:
            features |= 1 << lib.VIRTIO_BLK_F_RO
        else:
            features |= 1 << lib.VIRTIO_BLK_F_DISCARD | 1 << lib.VIRTIO_BLK_F_WRITE_ZEROES
        super().__init__(features)
        self.queues = [RingQueue(size, i) for i, size in enumerate(self.queue_sizes)]
        self.spec = spec
        self.fd, self.size = open_disk(spec)
        self.name = f"blk {os.path.basename(spec.path)}"
        self._event_fd = -1
        self._c_path = c_path       # False: every request through Python (blk_io.DiskIo)
        try:
            self.align = direct_alignment(self.fd, spec.path) if spec.cache == "none" else 1
            self._event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._io = open_io(spec.aio, self.fd, self._event_fd, self.name, self._geometry(),
                               c_path)
        except BaseException:
            self.close()
            raise
        self.sectors = self.size // SECTOR
        self.config = bytearray(CONFIG.pack(
            self.sectors, SIZE_MAX, SEG_MAX, 0, 0, 0, max(SECTOR, self.align), 0, 0, 0, 0,
            0, queues, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, 1,
            MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, 1))
        self._parts: dict[int, tuple[_Request, tuple | None]] = {}   # token -> request, bounce
        self._next_token = 0
        self._in_flight = [0] * queues      # requests per queue
        self._total = 0                     # requests in all
        self._throttled: set[int] = set()   # queues left unpopped at a bound
        self._writes: Counter[int] = Counter()   # epoch -> writes in flight
        self._epoch = 0
        self._flushes: deque[tuple[int, _Request]] = deque()   # waiting for earlier writes
        self._bounce_free: list[mmap.mmap] = []
        self._bounce_made = 0
        self._bounce_wait: deque[tuple] = deque()
        self._watched = watch is not None
        if watch is not None:
            watch(self._event_fd, self.complete)

    def _geometry(self) -> tuple[int, int, bool, int, int]:
        return self.size, self.align, self.spec.readonly, MAX_TRANSFER, MAX_IN_FLIGHT

    def _busy(self) -> int:
        """Requests popped and not yet returned, Python's and the C path's."""
        return self._total + self._io.c_in_flight()

    @property
    def aio(self) -> str:
        """The I/O backend in use (io_uring may have fallen back to threads)."""
        return self._io.name

    # --- requests ---------------------------------------------------------------------------
    def handle_queue(self, index: int, queue: RingQueue) -> None:
        self._serve_queue(index, queue)
        if not self._busy():      # what returned on the way took its signals with it
            self._serve_throttled()
        if not self._watched:
            self._finish()

    def _room(self, index: int, queue: RingQueue) -> int:
        """Requests the queue may start now (its size and MAX_IN_FLIGHT bound them)."""
        return min(queue.size - self._in_flight[index] - queue.in_flight,
                   MAX_IN_FLIGHT - self._total - self._io.c_in_flight())

    def _serve_queue(self, index: int, queue: RingQueue) -> None:
        io = self._io
        fast = io.fast
        idle = not self._busy()
        python_idle = not self._total       # no operation of Python's on the ring
        while True:
            room = self._room(index, queue)
            if room <= 0:
                self._throttled.add(index)
                break
            if fast is not None:
                # C serves what it can; a flush waits for Python's bounced writes
                got = _uring.pvb_kick(fast, queue.c, room,
                                      bool(self._bounce_wait or self._flushes), python_idle)
                if got < 0:
                    raise OSError(-got, f"virtio-blk kick: {os.strerror(-got)}")
                if got == PVB_FULL:
                    self._throttled.add(index)
                    break
                if got != PVB_PYTHON:
                    break                 # the available ring is empty
            chain = queue.pop()
            if chain is None:
                break
            self._request(index, chain)
            python_idle = False
        if fast is not None and python_idle:
            # C alone: it waited for a lone request, returned what completed, and took
            # the completion signal if nothing is left in flight; serve() interrupts
            # for this queue
            self._c_returned(index)
        else:
            io.commit()
            if idle and self._busy() == 1:
                # A lone request (a driver at queue depth 1): waited for here, which saves
                # the round trip through the eventfd and the I/O loop before its interrupt.
                self._complete(io.wait())
            else:
                self._complete(io.reap())      # what finished inside the submission
            if not self._busy():     # all returned: their signals need no pass of the loop
                _drain(self._event_fd)

    def _request(self, index: int, chain: Chain) -> None:
        """Start one request, or return it at once when it needs no I/O."""
        readable = chain.readable
        if readable and len(readable[0]) == HEADER.size:     # the usual layout: no copy
            header, out = readable[0], readable[1:]
        else:
            header = chain.read(HEADER.size)
            out = _skip(readable, HEADER.size)              # driver -> device data
        if len(header) < HEADER.size or not chain.writable or not len(chain.writable[-1]):
            raise QueueError("virtio-blk request without a 16-byte header and a status byte")
        kind, _, sector = HEADER.unpack(header)
        inp = list(chain.writable)
        status_buf = inp[-1][-1:]
        inp[-1] = inp[-1][:-1]
        inp = [b for b in inp if len(b)]                      # device -> driver data
        data = 0
        if kind == lib.VIRTIO_BLK_T_IN:
            if out:
                raise QueueError("virtio-blk read (IN) with device-readable data buffers")
            status = self._start(index, chain, status_buf, READ, sector, inp)
        elif kind == lib.VIRTIO_BLK_T_OUT:
            if inp:
                raise QueueError("virtio-blk write (OUT) with device-writable data buffers")
            status = self._start(index, chain, status_buf, WRITE, sector, out)
        elif kind == lib.VIRTIO_BLK_T_FLUSH:
            status = self._start(index, chain, status_buf, FSYNC, 0, [])
        elif kind == lib.VIRTIO_BLK_T_GET_ID:
            serial = self.spec.serial.encode().ljust(lib.VIRTIO_BLK_ID_BYTES, b"\0")
            data = chain.write(serial[:sum(len(b) for b in inp)])
            status = OK
        elif kind in (lib.VIRTIO_BLK_T_DISCARD, lib.VIRTIO_BLK_T_WRITE_ZEROES):
            status = self._discard(kind, out)
        else:
            status = UNSUPP
        if status is not None:
            status_buf[0] = status
            self.queues[index].push(chain.head, data + 1)

    def _range_ok(self, sector: int, length: int) -> bool:
        offset = sector * SECTOR
        return (length % SECTOR == 0 and offset + length <= self.size
                and (offset | length) % max(self.align, SECTOR) == 0)

    def _start(self, index: int, chain: Chain, status: memoryview, op: int, sector: int,
               bufs: list[memoryview]) -> int | None:
        """Start a read, write or flush of `bufs`, the chain's data buffers; its status
        now if it fails before any I/O."""
        length = sum(len(b) for b in bufs)
        if op == FSYNC:
            if self.spec.readonly:
                return OK
        elif (op == WRITE and self.spec.readonly) or length > MAX_TRANSFER \
                or not self._range_ok(sector, length):
            return IOERR
        req = _Request(index, chain.head, status, op, length)
        self._in_flight[index] += 1
        self._total += 1
        if op == FSYNC:
            # Every write in flight was submitted before this flush: it waits for them.
            if self._writes:
                self._flushes.append((self._epoch, req))
            else:
                self._submit(req, FSYNC, [], 0)
            self._epoch += 1
            return None
        if op == WRITE:
            req.epoch = self._epoch
            self._writes[self._epoch] += 1
        offset = sector * SECTOR
        if self.align > 1 and not _aligned(bufs, self.align):
            for start in range(0, length, BOUNCE_CHUNK):
                req.parts += 1
                self._bounce_wait.append((req, chain, offset, start,
                                          min(BOUNCE_CHUNK, length - start)))
            self._pump_bounce()
        else:
            self._submit(req, op, bufs, offset)
        return None

    def _submit(self, req: _Request, op: int, bufs: list[memoryview], offset: int,
                bounce: tuple | None = None) -> None:
        token = self._next_token
        self._next_token += 1
        self._parts[token] = (req, bounce)
        if bounce is None:
            req.parts += 1
        self._io.queue(token, op, bufs, offset)

    def _pump_bounce(self) -> None:
        """Start bounced parts while aligned buffers are free (or may still be made)."""
        while self._bounce_wait and (self._bounce_free or self._bounce_made < BOUNCE_SLOTS):
            if not self._bounce_free:
                self._bounce_free.append(mmap.mmap(-1, BOUNCE_CHUNK))
                self._bounce_made += 1
            buffer = self._bounce_free.pop()
            req, chain, offset, start, n = self._bounce_wait.popleft()
            view = memoryview(buffer)[:n]
            if req.op == WRITE:     # the data follows the header in the readable buffers
                view[:] = chain.read(n, HEADER.size + start)
            self._submit(req, req.op, [view], offset + start, (buffer, chain, start, view))

    # --- completions ------------------------------------------------------------------------
    def complete(self) -> None:
        """The backend signalled completions (I/O thread): return them to the driver, then
        serve queues that were left at a bound."""
        with self.lock:
            self._complete(self._io.reap())
            self._serve_throttled()

    def _serve_throttled(self) -> None:
        """Serve each queue left at a bound once: one still without room is left again, for
        the next completion (looping until it had room would spin the I/O thread while its
        requests are in flight). Again while nothing is in flight: the completions
        returned on the way took their signals with them, so no later pass of the I/O loop
        would come back, and every queue has room then (each pass starts a request)."""
        while self._throttled:
            throttled, self._throttled = self._throttled, set()
            for index in sorted(throttled):
                self.serve(index, self._serve_queue)
            if self._busy():
                break

    def _c_returned(self, skip: int = -1) -> None:
        """Log the C path's failed requests; interrupt for the queues it returned
        requests to, but `skip`."""
        failed, error = self._io.take_failures()
        if failed:
            self.log.error("%s: %d request%s failed: %s", self.name, failed,
                           "s" if failed > 1 else "", os.strerror(error))
        touched = self._io.take_touched()
        if touched:
            for index, queue in enumerate(self.queues):
                if touched >> index & 1 and index != skip:
                    self.signal_used(queue)

    def _complete(self, results: list[tuple[int, int]]) -> None:
        touched = set()
        for token, result in results:
            req, bounce = self._parts.pop(token)
            expected = req.length
            if bounce is not None:
                buffer, chain, start, view = bounce
                expected = len(view)
                if req.op == READ and result == expected:   # data first, status last
                    chain.write(view, start)
                view.release()
                self._bounce_free.append(buffer)
            if result != expected:
                req.failed = True
                if result < 0:
                    self.log.error("%s: %s failed: %s", self.name,
                                   ("read", "write", "flush")[req.op], os.strerror(-result))
            req.parts -= 1
            if not req.parts:
                self._return(req)
                touched.add(req.queue)
        self._pump_bounce()
        while self._flushes and (not self._writes or min(self._writes) > self._flushes[0][0]):
            self._submit(self._flushes.popleft()[1], FSYNC, [], 0)
        if results:
            self._io.commit()
        for index in touched:
            self.signal_used(self.queues[index])
        self._c_returned()

    def _return(self, req: _Request) -> None:
        self._in_flight[req.queue] -= 1
        self._total -= 1
        if req.op == WRITE:
            self._writes[req.epoch] -= 1
            if not self._writes[req.epoch]:
                del self._writes[req.epoch]
        req.status[0] = IOERR if req.failed else OK
        data = req.length if req.op == READ and not req.failed else 0
        self.queues[req.queue].push(req.head, data + 1)

    def _finish(self) -> None:
        """Wait until every request popped so far has been returned used (lock held)."""
        while self._busy():
            c_before = self._io.c_in_flight()
            results = self._io.wait()
            if not results and not c_before:
                break
            self._complete(results)
            self._serve_throttled()

    def _drop_in_flight(self) -> None:
        """Wait for every operation in flight and forget its request: the queues are being
        reset or replaced, and nothing may write guest RAM or a ring after this returns."""
        self._io.wait(drop=True)
        self._io.take_touched()
        self._io.take_failures()
        for _, bounce in self._parts.values():
            if bounce is not None:
                self._bounce_free.append(bounce[0])
        self._parts.clear()
        self._flushes.clear()
        self._bounce_wait.clear()
        self._writes.clear()
        self._throttled.clear()
        self._in_flight = [0] * len(self.queues)
        self._total = 0

    def on_reset(self) -> None:
        self._drop_in_flight()

    # --- snapshots ----------------------------------------------------------------------------
    def settle(self) -> None:
        """Serve every queue and let every request complete (before a snapshot)."""
        with self.lock:
            for index in range(len(self.queues)):
                self.serve(index, self.handle_queue)
            self._finish()

    def snapshot_state(self) -> dict:
        with self.lock:
            self._finish()
            return super().snapshot_state()

    def restore_state(self, state: dict) -> None:
        with self.lock:
            self._drop_in_flight()
            super().restore_state(state)

    # --- other requests, served at once -------------------------------------------------------
    def _discard(self, kind: int, bufs: list[memoryview]) -> int:
        """DISCARD and WRITE_ZEROES both punch holes (the file reads back zeros);
        WRITE_ZEROES without the UNMAP flag zeroes the range in place instead."""
        length = sum(len(b) for b in bufs)
        if self.spec.readonly or not length or length % SEGMENT.size:
            return IOERR
        if length // SEGMENT.size > MAX_DISCARD_SEGMENTS:
            return IOERR
        segments = b"".join(bytes(b) for b in bufs)    # at most 32 segments: 512 bytes
        unmap_flag = lib.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        for sector, count, flags in SEGMENT.iter_unpack(segments):
            # 5.2.6.2: unknown flags, and UNMAP on a DISCARD, are UNSUPP
            if flags & ~unmap_flag or (kind == lib.VIRTIO_BLK_T_DISCARD and flags):
                return UNSUPP
            if count > MAX_DISCARD_SECTORS or not self._range_ok(sector, count * SECTOR):
                return IOERR
            unmap = kind == lib.VIRTIO_BLK_T_DISCARD or flags & unmap_flag
            mode = lib.FALLOC_FL_KEEP_SIZE | (lib.FALLOC_FL_PUNCH_HOLE if unmap
                                              else lib.FALLOC_FL_ZERO_RANGE)
            ret = lib.pv_fallocate(self.fd, mode, sector * SECTOR, count * SECTOR)
            if ret == -errno.EOPNOTSUPP and kind == lib.VIRTIO_BLK_T_WRITE_ZEROES:
                ret = _write_zeroes(self.fd, sector * SECTOR, count * SECTOR)
            if ret < 0:
                self.log.error("%s: %s of sector %d failed: %s", self.name,
                          "discard" if kind == lib.VIRTIO_BLK_T_DISCARD else "write zeroes",
                          sector, os.strerror(-ret))
                return IOERR
        return OK

    def replace_backing(self, path: str) -> None:
        """Put another image behind the disk while the guest runs (Firecracker's PATCH
        /drives): opened and locked as the first was, swapped once the requests in flight
        have completed, and the new capacity announced with a configuration change
        interrupt."""
        spec = self.spec.replace(path=path)
        fd, size = open_disk(spec)
        try:
            align = direct_alignment(fd, path) if spec.cache == "none" else 1
        except BaseException:
            os.close(fd)
            raise
        with self.lock:
            self._finish()
            self._io.close()
            old, self.fd, self.size, self.align = self.fd, fd, size, align
            self._io = open_io(spec.aio, fd, self._event_fd, self.name, self._geometry(),
                               self._c_path)
            self.spec = spec
            self.sectors = size // SECTOR
            struct.pack_into("<Q", self.config, 0, self.sectors)   # capacity comes first
            self.config_generation += 1
        _release(old)
        self.interrupt(CONFIG_INTERRUPT, self.config_msix_vector)

    def close(self) -> None:
        """Wait for the I/O in flight, stop the backend, close the image."""
        io = getattr(self, "_io", None)
        if io is not None:
            io.close()
            self._io = None
        if self._event_fd >= 0:
            os.close(self._event_fd)
            self._event_fd = -1
        if self.fd >= 0:
            _release(self.fd)
            self.fd = -1


def _drain(event_fd: int) -> None:
    try:
        os.eventfd_read(event_fd)
    except BlockingIOError:
        pass


def _release(fd: int) -> None:
    """Unlock and close an image. Unlocked first: a ring that had it registered lets go of
    its reference a little later, in the kernel, and the lock must not wait for that."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def direct_alignment(fd: int, path: str) -> int:
    """The alignment O_DIRECT needs of buffers, offsets and lengths on this image: 512,
    or 4096 on disks with 4 KiB logical blocks (then the guest is told blk_size 4096)."""
    probe = mmap.mmap(-1, 2 * 4096)
    try:
        for align in (SECTOR, 4096):
            try:
                os.preadv(fd, [memoryview(probe)[align:2 * align]], align)
                return align
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise ConfigError(f"disk {path!r}: cannot read it with cache=none: "
                                      f"{e.strerror}") from None
    finally:
        probe.close()
    raise ConfigError(f"disk {path!r}: O_DIRECT reads fail even 4 KiB-aligned (use "
                      f"cache=writeback)")


def _aligned(bufs: list[memoryview], align: int) -> bool:
    return all(not ((int(ffi.cast("uintptr_t", ffi.from_buffer(b))) | len(b)) % align)
               for b in bufs)


def _skip(bufs: list[memoryview], n: int) -> list[memoryview]:
    """The buffers with their first n bytes (the header) dropped."""
    out = []
    for b in bufs:
        if n >= len(b):
            n -= len(b)
            continue
        out.append(b[n:])
        n = 0
    return out


def _write_zeroes(fd: int, offset: int, length: int) -> int:
    """Zeros written out, 1 MiB at a time from a page-aligned buffer (O_DIRECT takes it)."""
    with mmap.mmap(-1, min(length, 1 << 20)) as zeros:
        try:
            while length:
                done = os.pwritev(fd, [memoryview(zeros)[:min(length, len(zeros))]], offset)
                offset, length = offset + done, length - done
        except OSError as e:
            return -e.errno
    return 0
