"""virtio-net (virtio 1.2, 5.1) over a Linux tap device.

The tap is opened with IFF_VNET_HDR and a 12-byte header (struct virtio_net_hdr_v1), the
same header the guest puts in front of every frame, so frames and their checksum and
segmentation offload metadata pass between the tap and the queues unchanged. Receive uses
mergeable buffers: a frame fills as many posted chains as it needs and the first one's
header says how many (num_buffers). When the guest has posted no buffers, or never set the
receive queue up, the tap is left unread (and out of the I/O loop) until the guest posts
some. A transmit chain longer than MAX_FRAME is dropped unread.
"""
from __future__ import annotations

import fcntl
import os
import struct

from ..._native import lib
from ...errors import ConfigError
from ...value import Value
from ...log import get_logger
from ..state import DeviceStateError
from .device import VirtioDevice
from .queue import Chain, QueueError, Virtqueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

log = get_logger("pyvisor.virtio")

QUEUE_SIZE = 256
RX, TX = 0, 1
HEADER_SIZE = 12                 # struct virtio_net_hdr_v1, num_buffers included
NUM_BUFFERS = struct.Struct("<H")
NUM_BUFFERS_OFFSET = 10
MAX_FRAME = 65536 + HEADER_SIZE  # a TSO frame with its header
TUN_DEVICE = "/dev/net/tun"
IFREQ = struct.Struct("16sH22x")
_HEX = frozenset("0123456789abcdefABCDEF")

# Guest offloads and the tap flags that let the tap hand us such frames.
_GUEST_OFFLOADS = ((lib.VIRTIO_NET_F_GUEST_CSUM, lib.TUN_F_CSUM),
                   (lib.VIRTIO_NET_F_GUEST_TSO4, lib.TUN_F_TSO4),
                   (lib.VIRTIO_NET_F_GUEST_TSO6, lib.TUN_F_TSO6))


class NetSpec(Value):
    """`--net tap=NAME[,mac=MAC]`."""
    __slots__ = ("tap", "mac")

    def __init__(self, tap: str, mac: bytes) -> None:
        self.tap, self.mac = tap, mac

    @classmethod
    def parse(cls, text: str, index: int = 0) -> "NetSpec":
        pairs = [f.partition("=")[::2] for f in text.split(",")]
        fields = dict(pairs)
        unknown = set(fields) - {"tap", "mac"}
        if len(fields) != len(pairs):
            raise ConfigError(f"invalid --net {text!r}: an option is given twice")
        if unknown or not fields.get("tap"):
            raise ConfigError(f"invalid --net {text!r}: expected tap=NAME[,mac=MAC]")
        if len(fields["tap"].encode()) >= 16:
            raise ConfigError(f"invalid --net {text!r}: an interface name has at most 15 bytes")
        mac = fields.get("mac")
        if mac is None:   # locally administered, unicast, stable per machine and index
            return cls(fields["tap"], bytes((0x52, 0x54, 0x00, 0x12, 0x34, 0x56 + index)))
        octets = mac.split(":")   # by hand: re costs start-up (tests/kernels/test_lazy_run.py)
        if len(octets) != 6 or any(len(o) != 2 or not _HEX.issuperset(o) for o in octets):
            raise ConfigError(f"invalid --net {text!r}: MAC must look like 52:54:00:12:34:56")
        raw = bytes.fromhex(mac.replace(":", ""))
        if raw[0] & 1:
            raise ConfigError(f"invalid --net {text!r}: {mac} is a multicast address")
        return cls(fields["tap"], raw)


def open_tap(name: str) -> int:
    """Attach to tap `name` (created if missing and we may), in vnet-header mode."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot open {TUN_DEVICE}: {e.strerror}") from None
    try:
        fcntl.ioctl(fd, lib.TUNSETIFF, IFREQ.pack(
            name.encode(), lib.IFF_TAP | lib.IFF_NO_PI | lib.IFF_VNET_HDR))
        fcntl.ioctl(fd, lib.TUNSETVNETHDRSZ, struct.pack("i", HEADER_SIZE))
    except OSError as e:
        os.close(fd)
        hint = " (creating a tap needs CAP_NET_ADMIN)" if e.errno == 1 else ""
        raise ConfigError(f"cannot attach to tap {name!r}: {e.strerror}{hint}") from None
    return fd


class VirtioNet(VirtioDevice):
    device_id = lib.VIRTIO_ID_NET
    name = "net"
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, spec: NetSpec, watch: Callable[[int, Callable[[], None] | None], None]
                 ) -> None:
        """`watch(fd, handler)` adds fd to the I/O loop (handler None removes it)."""
        features = 0
        for bit in (lib.VIRTIO_NET_F_MAC, lib.VIRTIO_NET_F_STATUS, lib.VIRTIO_NET_F_MRG_RXBUF,
                    lib.VIRTIO_NET_F_CSUM, lib.VIRTIO_NET_F_HOST_TSO4,
                    lib.VIRTIO_NET_F_HOST_TSO6, lib.VIRTIO_NET_F_GUEST_CSUM,
                    lib.VIRTIO_NET_F_GUEST_TSO4, lib.VIRTIO_NET_F_GUEST_TSO6):
            features |= 1 << bit
        super().__init__(features)
        self.spec = spec
        self.name = f"net {spec.tap}"
        self.fd = open_tap(spec.tap)
        self._watch = watch
        self._watching = False
        self._pending: bytes | None = None   # a frame read but not yet delivered
        self.config = bytearray(spec.mac + struct.pack("<HH", lib.VIRTIO_NET_S_LINK_UP, 1))

    def on_activate(self) -> None:
        offloads = 0
        for feature, tun_flag in _GUEST_OFFLOADS:
            if self.has_feature(feature):
                offloads |= tun_flag
        try:
            fcntl.ioctl(self.fd, lib.TUNSETOFFLOAD, offloads)
        except OSError as e:
            self.log.warning("%s: the tap refused offloads %#x: %s", self.name, offloads,
                             e.strerror)
        self._set_watch(self.queues[RX].ready)

    def on_reset(self) -> None:
        self._set_watch(False)
        self._pending = None

    def device_state(self) -> dict:
        """Nothing of its own, unless a frame from the tap is waiting for a buffer: that
        frame lives only here, so a snapshot would lose it."""
        if self._pending is not None:
            raise DeviceStateError(f"{self.name}: a {len(self._pending)}-byte frame from the "
                                   f"tap waits for a receive buffer; it cannot be snapshotted "
                                   f"(let the guest post buffers, or snapshot later)")
        return {}

    def restore_device_state(self, state: dict) -> None:
        """A running driver's offloads go to the tap again (a restore from a file has a
        new one) and the tap is read again; otherwise it is not read."""
        self._pending = None
        if self.running:
            self.on_activate()
        else:
            self._set_watch(False)

    def _set_watch(self, on: bool) -> None:
        if on != self._watching:
            self._watching = on
            self._watch(self.fd, self._tap_readable if on else None)

    # --- receive: tap -> guest ------------------------------------------------------------
    def _tap_readable(self) -> None:
        with self.lock:
            if not self.running or not self.queues[RX].ready:
                self._set_watch(False)   # until DRIVER_OK with a receive queue (on_activate)
                return
            self.serve(RX, lambda index, queue: self._receive(queue))

    def _receive(self, queue: Virtqueue) -> None:
        while True:
            frame = self._pending
            if frame is None:
                try:
                    frame = os.read(self.fd, MAX_FRAME)
                except BlockingIOError:
                    return
            if not self._deliver(queue, frame):
                self._pending = frame
                self._set_watch(False)   # until the driver posts buffers (an RX kick)
                return
            self._pending = None

    def _deliver(self, queue: Virtqueue, frame: bytes) -> bool:
        """Copy one frame (vnet header first) into posted chains; False if there is no room
        yet (nothing is consumed then)."""
        mergeable = self.has_feature(lib.VIRTIO_NET_F_MRG_RXBUF)
        chains: list[Chain] = []
        room = 0
        while room < len(frame):
            if not mergeable and chains:
                self.log.warning("%s: dropped a %d-byte frame: the posted buffer holds %d",
                                 self.name, len(frame), room)
                for chain in chains:       # hand the buffers back untouched
                    queue.push(chain.head, 0)
                return True
            chain = queue.pop()
            if chain is None:
                queue.unpop(len(chains))
                return False
            if chain.readable or chain.writable_size < (HEADER_SIZE if not chains else 1):
                raise QueueError("virtio-net receive buffer that is device-readable or too short")
            chains.append(chain)
            room += chain.writable_size
        offset = 0
        for chain in chains:
            n = chain.write(memoryview(frame)[offset:])
            if offset == 0:   # header fix-ups, in place: the header may span descriptors
                chain.write(NUM_BUFFERS.pack(len(chains)), NUM_BUFFERS_OFFSET)
                if frame[0] and not self.has_feature(lib.VIRTIO_NET_F_GUEST_CSUM):
                    chain.write(b"\0")   # flags zero without GUEST_CSUM (virtio 1.2, 5.1.6.4.2)
            offset += n
            queue.push(chain.head, n)
        return True

    # --- transmit: guest -> tap -----------------------------------------------------------
    def handle_queue(self, index: int, queue: Virtqueue) -> None:
        if index == RX:   # buffers posted: deliver what waits, and read the tap again
            self._receive(queue)
            if self._pending is None:
                self._set_watch(True)
            return
        while (chain := queue.pop()) is not None:
            if chain.writable or chain.readable_size < HEADER_SIZE:
                raise QueueError("virtio-net transmit chain that is device-writable or has "
                                 "no header")
            if chain.readable_size > MAX_FRAME:
                self.log.warning("%s: dropped a %d-byte transmit chain (at most %d)",
                                 self.name, chain.readable_size, MAX_FRAME)
            else:
                try:
                    os.writev(self.fd, chain.readable)
                except OSError as e:   # the tap's problem (link down, full): the frame is lost
                    log.debug("%s: transmit failed: %s", self.name, e.strerror)
            queue.push(chain.head, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
