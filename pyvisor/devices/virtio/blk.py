"""virtio-blk (virtio 1.2, 5.2) over a raw image file.

A request is a 16-byte header (type, reserved, sector) the driver wrote, then data buffers,
then one status byte for the device. Data moves between guest RAM and the file with
preadv/pwritev straight on the chain's views (never copied or joined). A request moves
at most MAX_TRANSFER bytes (seg_max segments of size_max, both in the configuration
space, so a driver knows) and never reaches past the end of the image, whatever lengths
its descriptors declare; FLUSH is fdatasync, so data the guest flushed is on the
host's disk even if pyvisor is killed right after. DISCARD and WRITE_ZEROES take at most
MAX_DISCARD_SEGMENTS segments, counted from the buffer lengths before anything is read.

The image is locked as long as pyvisor has it open (flock: exclusive for a writable disk,
shared for `ro`), so a second pyvisor cannot write an image another one uses.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass, replace

from ..._native import lib
from ...errors import ConfigError
from .device import CONFIG_INTERRUPT, VirtioDevice
from .queue import Chain, QueueError, Virtqueue

SECTOR = 512
QUEUE_SIZE = 256
SEG_MAX = QUEUE_SIZE - 2          # header and status take two descriptors
SIZE_MAX = 128 << 10              # bytes per segment (Linux splits to fit)
MAX_TRANSFER = SEG_MAX * SIZE_MAX # data bytes per request: about 32 MiB
MAX_DISCARD_SECTORS = 1 << 22     # 2 GiB per segment
MAX_DISCARD_SEGMENTS = 32

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


@dataclass(frozen=True)
class DiskSpec:
    """`--disk PATH[,ro][,serial=ID]`."""
    path: str
    readonly: bool = False
    serial: str = ""

    @classmethod
    def parse(cls, text: str) -> "DiskSpec":
        path, *options = text.split(",")
        if not path:
            raise ConfigError(f"invalid --disk {text!r}: expected PATH[,ro][,serial=ID]")
        readonly, serial = False, ""
        for option in options:
            if option == "ro":
                readonly = True
            elif option.startswith("serial="):
                serial = option[len("serial="):]
                if len(serial.encode()) > lib.VIRTIO_BLK_ID_BYTES:
                    raise ConfigError(f"invalid --disk {text!r}: a serial has at most "
                                      f"{lib.VIRTIO_BLK_ID_BYTES} bytes")
            else:
                raise ConfigError(f"invalid --disk {text!r}: unknown option {option!r} "
                                  f"(expected ro or serial=ID)")
        return cls(path, readonly, serial)


def open_disk(spec: DiskSpec) -> tuple[int, int]:
    """Open the image (read-only for ro); return (fd, size). Every problem is one line."""
    try:   # O_NONBLOCK: a read-only open of a FIFO would wait for a writer
        fd = os.open(spec.path, (os.O_RDONLY if spec.readonly else os.O_RDWR) | os.O_CLOEXEC
                     | os.O_NONBLOCK)
    except OSError as e:
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


class VirtioBlk(VirtioDevice):
    device_id = lib.VIRTIO_ID_BLOCK
    name = "blk"
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, spec: DiskSpec) -> None:
        features = (1 << lib.VIRTIO_BLK_F_SIZE_MAX | 1 << lib.VIRTIO_BLK_F_SEG_MAX
                    | 1 << lib.VIRTIO_BLK_F_BLK_SIZE | 1 << lib.VIRTIO_BLK_F_FLUSH)
        if spec.readonly:
            features |= 1 << lib.VIRTIO_BLK_F_RO
        else:
            features |= 1 << lib.VIRTIO_BLK_F_DISCARD | 1 << lib.VIRTIO_BLK_F_WRITE_ZEROES
        super().__init__(features)
        self.spec = spec
        self.fd, self.size = open_disk(spec)
        self.name = f"blk {os.path.basename(spec.path)}"
        self.sectors = self.size // SECTOR
        self.config = bytearray(CONFIG.pack(
            self.sectors, SIZE_MAX, SEG_MAX, 0, 0, 0, SECTOR, 0, 0, 0, 0, 0, 1,
            MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, 1,
            MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, 1))

    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            written = self._request(chain)
            queue.push(chain.head, written)

    def _request(self, chain: Chain) -> int:
        """Serve one request; return the bytes written into the chain (data + status)."""
        header = chain.read(HEADER.size)
        if len(header) < HEADER.size or not chain.writable or not len(chain.writable[-1]):
            raise QueueError("virtio-blk request without a 16-byte header and a status byte")
        kind, _, sector = HEADER.unpack(header)
        out = _skip(chain.readable, HEADER.size)            # driver -> device data
        inp = list(chain.writable)
        status_buf = inp[-1][-1:]
        inp[-1] = inp[-1][:-1]
        inp = [b for b in inp if len(b)]                      # device -> driver data
        if kind == lib.VIRTIO_BLK_T_IN:
            if out:
                raise QueueError("virtio-blk read (IN) with device-readable data buffers")
            status, data = self._read(sector, inp)
        elif kind == lib.VIRTIO_BLK_T_OUT:
            if inp:
                raise QueueError("virtio-blk write (OUT) with device-writable data buffers")
            status, data = self._write(sector, out), 0
        elif kind == lib.VIRTIO_BLK_T_FLUSH:
            status, data = self._flush(), 0
        elif kind == lib.VIRTIO_BLK_T_GET_ID:
            serial = self.spec.serial.encode().ljust(lib.VIRTIO_BLK_ID_BYTES, b"\0")
            data = chain.write(serial[:sum(len(b) for b in inp)])
            status = OK
        elif kind in (lib.VIRTIO_BLK_T_DISCARD, lib.VIRTIO_BLK_T_WRITE_ZEROES):
            status, data = self._discard(kind, out), 0
        else:
            status, data = UNSUPP, 0
        status_buf[0] = status
        return data + 1

    def _range_ok(self, sector: int, length: int) -> bool:
        return length % SECTOR == 0 and sector * SECTOR + length <= self.size

    def _read(self, sector: int, bufs: list[memoryview]) -> tuple[int, int]:
        length = sum(len(b) for b in bufs)
        if length > MAX_TRANSFER or not self._range_ok(sector, length):
            return IOERR, 0
        try:
            done = os.preadv(self.fd, bufs, sector * SECTOR)
        except OSError as e:
            self.log.error("%s: read of sector %d failed: %s", self.name, sector, e.strerror)
            return IOERR, 0
        return (OK if done == length else IOERR), done

    def _write(self, sector: int, bufs: list[memoryview]) -> int:
        length = sum(len(b) for b in bufs)
        if self.spec.readonly or length > MAX_TRANSFER or not self._range_ok(sector, length):
            return IOERR
        try:
            done = os.pwritev(self.fd, bufs, sector * SECTOR)
        except OSError as e:
            self.log.error("%s: write of sector %d failed: %s", self.name, sector, e.strerror)
            return IOERR
        return OK if done == length else IOERR

    def _flush(self) -> int:
        if self.spec.readonly:
            return OK
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            self.log.error("%s: flush failed: %s", self.name, e.strerror)
            return IOERR
        return OK

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
        /drives): opened and locked as the first was, swapped between requests, and the
        new capacity announced with a configuration change interrupt."""
        fd, size = open_disk(replace(self.spec, path=path))
        with self.lock:
            old, self.fd, self.size = self.fd, fd, size
            self.spec = replace(self.spec, path=path)
            self.sectors = size // SECTOR
            struct.pack_into("<Q", self.config, 0, self.sectors)   # capacity comes first
            self.config_generation += 1
        os.close(old)
        self.interrupt(CONFIG_INTERRUPT, self.config_msix_vector)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
    zeros = bytes(min(length, 1 << 20))
    try:
        while length:
            done = os.pwrite(fd, zeros[:length], offset)
            offset, length = offset + done, length - done
    except OSError as e:
        return -e.errno
    return 0
