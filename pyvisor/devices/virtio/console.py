"""virtio-console (virtio 1.2, 5.3) with one port: hvc0 in a Linux guest.

Queue 0 (receiveq) carries host input into buffers the driver posted; queue 1 (transmitq)
carries guest output. Input that arrives while no buffer is posted waits in a backlog
(bounded, like the UART's), so typed-ahead text is not lost; a reset keeps it, since it
is the host side of the line.

Transmit streams each chain to the output in pieces of at most PIECE bytes, and takes at
most TRANSMIT_LIMIT bytes from one chain (Linux sends at most 32 KiB per chain): the rest
is dropped with a warning, so descriptors that alias guest RAM many times over cost the
host neither memory nor unbounded time.
"""
from __future__ import annotations

from collections import deque

from ..._native import lib
from ..state import DeviceStateError
from .device import VirtioDevice
from .queue import QueueError, Virtqueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

QUEUE_SIZE = 64
RECEIVE, TRANSMIT = 0, 1
BACKLOG_LIMIT = 1 << 20
TRANSMIT_LIMIT = 64 << 10     # bytes taken from one transmit chain
PIECE = 16 << 10              # bytes handed to the output at once
# struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr
CONFIG_SIZE = 12


class VirtioConsole(VirtioDevice):
    device_id = lib.VIRTIO_ID_CONSOLE
    name = "console"
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, output: Callable[[bytes], None]) -> None:
        super().__init__()
        self.config = bytearray(CONFIG_SIZE)
        self._output = output
        self._backlog: deque[bytes] = deque()
        self._backlog_size = 0

    def receive(self, data: bytes) -> None:
        """Host input (the I/O thread): into posted buffers now, or the backlog."""
        with self.lock:
            if self._backlog_size + len(data) > BACKLOG_LIMIT:
                data = data[:max(BACKLOG_LIMIT - self._backlog_size, 0)]
            if data:
                self._backlog.append(data)
                self._backlog_size += len(data)
            self.serve(RECEIVE, lambda index, queue: self._deliver())

    def device_state(self) -> dict:
        """Host input not yet delivered to the guest."""
        return {"backlog": b"".join(self._backlog)}

    def restore_device_state(self, state: dict) -> None:
        backlog = state.get("backlog", b"")
        if not isinstance(backlog, bytes):
            raise DeviceStateError(f"{self.name}: the saved input backlog is malformed")
        backlog = backlog[:BACKLOG_LIMIT]
        self._backlog = deque([backlog] if backlog else [])
        self._backlog_size = len(backlog)

    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        if index == RECEIVE:
            self._deliver()
            return
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise QueueError("virtio-console transmit buffer that is device-writable")
            budget = TRANSMIT_LIMIT
            for buf in chain.readable:
                for start in range(0, min(len(buf), budget), PIECE):
                    self._output(bytes(buf[start:min(start + PIECE, budget)]))
                budget -= min(len(buf), budget)
                if not budget:
                    break
            if chain.readable_size > TRANSMIT_LIMIT:
                self.log.warning("%s: dropped %d bytes of a transmit chain beyond its first %d",
                                 self.name, chain.readable_size - TRANSMIT_LIMIT,
                                 TRANSMIT_LIMIT)
            queue.push(chain.head, 0)

    def _deliver(self) -> None:
        """Fill posted receive buffers from the backlog (lock held)."""
        queue = self.queues[RECEIVE]
        while self._backlog:
            chain = queue.pop()
            if chain is None:
                return
            if chain.readable:
                raise QueueError("virtio-console receive buffer that is device-readable")
            room, written = chain.writable_size, 0
            while self._backlog and written < room:   # only what fits is copied
                piece = self._backlog[0]
                n = chain.write(memoryview(piece)[:room - written], written)
                written += n
                if n < len(piece):
                    self._backlog[0] = piece[n:]
                else:
                    self._backlog.popleft()
            self._backlog_size -= written
            queue.push(chain.head, written)
