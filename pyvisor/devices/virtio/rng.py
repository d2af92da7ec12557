"""virtio-rng (virtio 1.2, 5.4): one queue of device-writable buffers, filled from the host's
getrandom(2)."""
from __future__ import annotations

import os

from ..._native import lib
from .device import VirtioDevice
from .queue import QueueError, Virtqueue

QUEUE_SIZE = 64


class VirtioRng(VirtioDevice):
    device_id = lib.VIRTIO_ID_RNG
    name = "rng"
    queue_sizes = (QUEUE_SIZE,)

    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            if chain.readable:
                raise QueueError("virtio-rng buffer that is not device-writable")
            queue.push(chain.head, chain.write(os.getrandom(chain.writable_size)))
