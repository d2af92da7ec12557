"""virtio-blk request parsing: header, data buffers and status byte of IN, OUT, FLUSH,
GET_ID, DISCARD, WRITE_ZEROES and unknown requests, on a writable and a read-only disk
(the first input byte picks one)."""
from __future__ import annotations

import struct

from pyvisor._native import lib
from pyvisor.devices.virtio.blk import DiskSpec, VirtioBlk

from ..devices import DeviceRig, Seed
from ..guest import ADDR_BIG, LEN_8M
from ..memfile import MemFile

ERRORS = ()
DISK_SIZE = 1 << 20
HEADER = struct.Struct("<IIQ")
SEGMENT = struct.Struct("<QII")


def make():
    rigs = []
    for readonly in (False, True):
        disk = MemFile("fuzz-disk")
        disk.resize(DISK_SIZE)
        # the C path off: every chain goes through queue.py and blk.py, whose pops and
        # pushes the checks track; the C path (native/blk_ring.c) serves plain requests
        # where the checks cannot see (tests/unit/test_blk_ring.py compares it with this one)
        device = VirtioBlk(DiskSpec(disk.path, readonly, serial="FUZZ-SERIAL",
                                    aio="threads"), c_path=False)
        rigs.append(DeviceRig(device, request_queues={0}))

    def run(data: bytes) -> None:
        rigs[data[0] & 1 if data else 0].run(data[1:])
    return run


def _request(kind: int, sector: int, data: list[tuple[int, int, bool]],
             payload: bytes = b"", readonly: bool = False) -> bytes:
    """Header at data offset 0, payload at 0x100, the given data buffers, status at 0xFFF."""
    seed = Seed(1).data(0, HEADER.pack(kind, 0, sector))
    if payload:
        seed.data(0x100, payload)
    bufs = [(0, HEADER.size, False)] + data + [(0xFFF, 1, True)]
    seed.chain(0, 0, bufs).publish(0, 0).kick(0)
    return bytes([readonly]) + seed.data_bytes()


def seeds() -> list[bytes]:
    discard = SEGMENT.pack(8, 16, 0) + SEGMENT.pack(100, 4, 0)
    zeroes = SEGMENT.pack(8, 16, lib.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
    # issue 8: a DISCARD whose segment buffers are 100 readable 8 MiB descriptors
    many = Seed(1).data(0, HEADER.pack(lib.VIRTIO_BLK_T_DISCARD, 0, 0))
    many.chain(0, 0, [(0, HEADER.size, False)], then=1).run(0, 1, 100, ADDR_BIG, 0, LEN_8M, 0, 0)
    many.desc(0, 100, ADDR_BIG, 0, LEN_8M, 0, 1, 101).chain(0, 101, [(0xFFF, 1, True)])
    many.publish(0, 0).kick(0)
    return [
        _request(lib.VIRTIO_BLK_T_IN, 0, [(0x200, 512, True)]),
        _request(lib.VIRTIO_BLK_T_IN, 3, [(0x200, 512, True), (0x800, 1024, True)], readonly=True),
        _request(lib.VIRTIO_BLK_T_OUT, 1, [(0x100, 512, False)], b"\x5a" * 64),
        _request(lib.VIRTIO_BLK_T_OUT, 1, [(0x100, 512, False)], b"\x5a" * 64, readonly=True),
        _request(lib.VIRTIO_BLK_T_FLUSH, 0, []),
        _request(lib.VIRTIO_BLK_T_GET_ID, 0, [(0x200, lib.VIRTIO_BLK_ID_BYTES, True)]),
        _request(lib.VIRTIO_BLK_T_DISCARD, 0, [(0x100, len(discard), False)], discard),
        _request(lib.VIRTIO_BLK_T_WRITE_ZEROES, 0, [(0x100, len(zeroes), False)], zeroes),
        _request(0x7F, 0, [(0x200, 16, True)]),
        b"\0" + many.data_bytes(),
    ]
