"""Drive one virtio device the way a hostile driver would, straight through the device API
(the transports have targets of their own), and check what the device did.

An input is a program: the features and queue sizes the driver negotiates, then ops that
write rings and descriptors into guest RAM (guest.Rings), kick queues, raise host-side
events (a frame from the tap, console input), reset the device or write its status. After
every op that can make the device work:

- no exception escapes but the documented ones (none: a device contains driver errors);
- nothing but a QueueError ends in DEVICE_NEEDS_RESET: any other exception the device
  caught (MemoryError at the address-space limit, IndexError, ...) is a bug it hid;
- unless the device needs a reset, it pushed back every chain it popped, once, claiming no
  more bytes than that chain's writable buffers hold (used idx moved by as many), and a
  request queue has consumed everything made available;
- the budgets of limits.py hold (the worker checks them around each input).
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

from pyvisor.devices.virtio.device import (ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK,
                                           NEEDS_RESET, VirtioDevice)
from pyvisor.devices.virtio.queue import QueueError, Virtqueue

from .guest import (ADDR_DATA, LEN_MEDIUM, OP_DATA, OP_DESC, OP_PUBLISH, OP_RUN, RING_OPS,
                    Rings, clear_scratch, guest_memory, ring_addresses, seed_desc)
from .limits import where
from .stream import Reader, Writer

OP_KICK, OP_HOST, OP_RESET, OP_STATUS = range(RING_OPS, RING_OPS + 4)
OPS = RING_OPS + 4
INIT = ACKNOWLEDGE | DRIVER


class ContainedError(AssertionError):
    """The device turned an exception other than QueueError into DEVICE_NEEDS_RESET."""


class InvariantError(AssertionError):
    """The device broke a rule of the virtqueue contract without failing."""


class _Tracked:
    """What one queue's device side popped and pushed back, for the used-ring checks. The
    pushes are recorded as the device makes them, not read back from the used ring: the
    guest may alias that ring with a writable buffer the device fills afterwards."""

    def __init__(self, queue: Virtqueue) -> None:
        self.queue = queue
        self.popped: list[tuple[int, int]] = []      # (head, writable bytes), in pop order
        self.pushed: list[tuple[int, int]] = []      # (head, bytes written)
        pop, unpop, push, reset = queue.pop, queue.unpop, queue.push, queue.reset

        def tracked_pop():
            chain = pop()
            if chain is not None:
                self.popped.append((chain.head, chain.writable_size))
            return chain

        def tracked_unpop(count: int = 1) -> None:
            unpop(count)
            del self.popped[len(self.popped) - count:]

        def tracked_push(head: int, written: int) -> None:
            push(head, written)
            self.pushed.append((head, written))

        def tracked_reset() -> None:
            reset()
            self.start()

        queue.pop, queue.unpop, queue.push, queue.reset = (tracked_pop, tracked_unpop,
                                                           tracked_push, tracked_reset)
        self.start()

    def start(self) -> None:
        self.popped.clear()
        self.pushed.clear()
        self.used_seen = self.queue.used_idx

    def check(self, name: str, index: int) -> None:
        q = self.queue
        if (q.used_idx - self.used_seen) & 0xFFFF != len(self.pushed) or \
                q.used_idx != q.last_avail:
            raise InvariantError(f"{name} queue {index}: popped {len(self.popped)} chains "
                                 f"(last_avail {q.last_avail}), pushed {len(self.pushed)}, "
                                 f"but used idx is {q.used_idx}")
        outstanding = list(self.popped)
        for head, length in self.pushed:
            match = next((p for p in outstanding if p[0] == head), None)
            if match is None:
                raise InvariantError(f"{name} queue {index}: pushed head {head}, which was "
                                     f"not popped (or was pushed twice)")
            if length > match[1]:
                raise InvariantError(f"{name} queue {index}: pushed head {head} with {length} "
                                     f"bytes written, its writable buffers hold {match[1]}")
            outstanding.remove(match)
        if outstanding:
            raise InvariantError(f"{name} queue {index}: popped heads "
                                 f"{[h for h, _ in outstanding]} never pushed back")
        self.start()


class Watch:
    """The checks on one device, whatever drives it: queue bookkeeping (_Tracked) and the
    exceptions the device contained. Wraps the device's queues and `fail` once."""

    def __init__(self, device: VirtioDevice, request_queues: set[int]) -> None:
        self.device = device
        self.request_queues = request_queues
        self.tracked = [_Tracked(q) for q in device.queues]
        self.contained: list[BaseException] = []
        fail = device.fail

        def recording_fail(why: str) -> None:
            exc = sys.exc_info()[1]
            if exc is not None and not isinstance(exc, QueueError):
                self.contained.append(exc)
            fail(why)

        device.fail = recording_fail

    def start(self) -> None:
        for t in self.tracked:
            t.start()

    def check(self, mem, kicked: set[int]) -> None:
        dev = self.device
        if self.contained:
            exc = self.contained[0]
            self.contained.clear()
            raise ContainedError(f"{dev.name}: {type(exc).__name__} turned into "
                                 f"DEVICE_NEEDS_RESET: {exc} ({where(exc)})") from exc
        if dev.status & NEEDS_RESET or not dev.status & DRIVER_OK:
            self.start()
            return
        for index, t in enumerate(self.tracked):
            if not t.queue.ready:
                continue
            t.check(dev.name, index)
            available = mem.read_u16(t.queue.driver_addr + 2)
            if index in self.request_queues & kicked and t.queue.last_avail != available:
                raise InvariantError(f"{dev.name} queue {index}: kicked with avail idx "
                                     f"{available} but stopped at {t.queue.last_avail}")


class DeviceRig:
    """One device, reused across inputs (each input starts with a reset, as a driver does).

    `request_queues` are the queues the device must drain when kicked (rx queues may hold
    chains back for data that has not arrived). `host_event(reader)` raises one host-side
    event decoded from the input, or is None."""

    def __init__(self, device: VirtioDevice, request_queues: set[int],
                 host_event: Callable[[Reader], None] | None = None) -> None:
        self.device = device
        self.mem = guest_memory()
        self.host_event = host_event
        device.attach(self.mem, lambda kind, vector: None)
        self.watch = Watch(device, request_queues)

    # --- one input ------------------------------------------------------------------------
    def run(self, data: bytes) -> None:
        r = Reader(data)
        dev = self.device
        dev.set_status(0)
        if dev.status or any(q.ready or q.enabled for q in dev.queues):
            raise InvariantError(f"{dev.name}: a reset left status {dev.status:#x} or a "
                                 f"queue set up")
        clear_scratch(self.mem)
        self.rings = Rings(self.mem, self._negotiate(r))
        while r.more:
            code = r.u8() % OPS
            if code < RING_OPS:
                self.rings.op(code, r)
                continue
            kicked: set[int] = set()
            if code == OP_KICK:
                index = r.u8() % (len(dev.queues) + 1)        # one past the last, too
                dev.notify(index)
                kicked.add(index)
            elif code == OP_HOST and self.host_event is not None:
                self.host_event(r)
            elif code == OP_RESET:
                dev.set_status(0)
                self.rings = Rings(self.mem, self._negotiate(r))
            elif code == OP_STATUS:
                dev.set_status(r.u8())
            self.watch.check(self.mem, kicked)
        for index in range(len(dev.queues)):
            dev.notify(index)
        self.watch.check(self.mem, set(range(len(dev.queues))))

    def _negotiate(self, r: Reader) -> list[int]:
        """The driver's side of 3.1.1: features (the device's, less a mask from the input),
        then each queue's size (the largest, a smaller power of two, disabled, or any
        16-bit value), then DRIVER_OK. Returns the sizes."""
        dev = self.device
        dev.set_status(ACKNOWLEDGE)
        dev.set_status(INIT)
        dev.driver_features = dev.device_features & ~r.u64()
        dev.set_status(INIT | FEATURES_OK)
        sizes = []
        for index, q in enumerate(dev.queues):
            sel = r.u8()
            if sel < 0xE0:
                q.size, q.enabled = q.max_size >> sel % 9, True
            elif sel < 0xF0:
                q.enabled = False
            else:
                q.size, q.enabled = r.u16(), True
            q.desc_addr, q.driver_addr, q.device_addr = ring_addresses(index)
            sizes.append(q.size)
        dev.set_status(INIT | FEATURES_OK | DRIVER_OK)
        self.watch.start()
        return sizes


class Seed:
    """Builds a DeviceRig input op by op: the seed-side counterpart of DeviceRig.run (all
    features, the largest queues)."""

    def __init__(self, queues: int = 0, *, header: bytes | None = None) -> None:
        """`header` replaces DeviceRig's negotiation bytes (for other programs over the
        same ring ops)."""
        self.w = Writer().raw(bytes(8 + queues) if header is None else header)

    def data(self, offset: int, payload: bytes) -> "Seed":
        self.w.u8(OP_DATA).u16(offset).u8(len(payload)).raw(payload)
        return self

    def desc(self, q: int, index: int, addr_sel: int, addr_arg: int, len_sel: int,
             len_arg: int, flags: int, nxt: int = 0) -> "Seed":
        """One descriptor (guest.seed_desc's fields)."""
        self.w.u8(OP_DESC).u8(q).u16(index)
        seed_desc(self.w, addr_sel, addr_arg, len_sel, len_arg, flags, nxt)
        return self

    def chain(self, q: int, start: int, bufs: list[tuple[int, int, bool]],
              then: int | None = None) -> "Seed":
        """Descriptors start, start + 1, ... over data-window buffers (offset, length,
        device-writable); the last one goes on to descriptor `then`, if given."""
        for i, (offset, length, writable) in enumerate(bufs):
            nxt = start + i + 1 if i < len(bufs) - 1 else then
            flags = (2 if writable else 0) | (0 if nxt is None else 1)   # FLAG_CHOICES indices
            self.desc(q, start + i, ADDR_DATA, offset, LEN_MEDIUM, length, flags, nxt or 0)
        return self

    def run(self, q: int, start: int, count: int, addr_sel: int, addr_arg: int,
            len_sel: int, len_arg: int, flags: int) -> "Seed":
        """guest.Rings.run: `count` linked copies of one descriptor."""
        self.w.u8(OP_RUN).u8(q).u8(start).u16(count).u8(0)
        seed_desc(self.w, addr_sel, addr_arg, len_sel, len_arg, flags)
        return self

    def publish(self, q: int, head: int, times: int = 1) -> "Seed":
        self.w.u8(OP_PUBLISH).u8(q).u8(head).u8(times)
        return self

    def kick(self, q: int) -> "Seed":
        self.w.u8(OP_KICK).u8(q)
        return self

    def host(self, payload: bytes) -> "Seed":
        self.w.u8(OP_HOST).raw(payload)
        return self

    def data_bytes(self) -> bytes:
        return self.w.data()


def quiet_logs() -> None:
    """Device error lines are expected by the thousand: format each record (a bad format
    string is a bug, and raises here) but print none."""
    class Formatting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.getMessage()

        def handleError(self, record: logging.LogRecord) -> None:
            raise

    root = logging.getLogger("pyvisor")
    root.handlers[:] = [Formatting()]
    root.propagate = False
    root.setLevel(logging.INFO)
