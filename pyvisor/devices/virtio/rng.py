"""virtio-rng (virtio 1.2, 5.4): one queue of device-writable buffers, filled from the host's
getrandom(2).

A request gets at most REQUEST_LIMIT bytes, written in place piece by piece: the buffers'
declared lengths (which may alias the same guest RAM many times over) never decide how
much the host draws or allocates. The driver learns how much it got from the used length.
"""
from __future__ import annotations

import os

from ..._native import lib
from .device import VirtioDevice
from .queue import QueueError, Virtqueue

QUEUE_SIZE = 64
REQUEST_LIMIT = 64 << 10      # bytes per request (Linux asks for far less at a time)
PIECE = 4096                  # bytes drawn from getrandom at once


class VirtioRng(VirtioDevice):
    device_id = lib.VIRTIO_ID_RNG
    name = "rng"
    queue_sizes = (QUEUE_SIZE,)

    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            if chain.readable:
                raise QueueError("virtio-rng buffer that is not device-writable")
            written = 0
            for buf in chain.writable:
                offset = 0
                while offset < len(buf) and written < REQUEST_LIMIT:
                    n = min(len(buf) - offset, REQUEST_LIMIT - written, PIECE)
                    buf[offset:offset + n] = os.getrandom(n)
                    offset += n
                    written += n
                if written == REQUEST_LIMIT:
                    break
            queue.push(chain.head, written)
