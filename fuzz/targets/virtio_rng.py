"""virtio-rng: chains of device-writable buffers filled from getrandom."""
from __future__ import annotations

from pyvisor.devices.virtio.rng import VirtioRng

from ..devices import DeviceRig, Seed
from ..guest import ADDR_BIG, ADDR_ZERO, LEN_8M, LEN_REST

ERRORS = ()


def make():
    return DeviceRig(VirtioRng(), request_queues={0}).run


def seeds() -> list[bytes]:
    return [
        Seed(1).chain(0, 0, [(0, 64, True)]).publish(0, 0).kick(0).data_bytes(),
        Seed(1).chain(0, 0, [(0, 16, True), (64, 4096, True)]).publish(0, 0).data_bytes(),
        Seed(1).chain(0, 0, [(0, 16, False)]).publish(0, 0).kick(0).data_bytes(),
        # the amplifying chain of issue 8: 64 writable descriptors over the same 8 MiB
        Seed(1).run(0, 0, 64, ADDR_BIG, 0, LEN_8M, 0, 2).publish(0, 0).kick(0).data_bytes(),
        Seed(1).run(0, 0, 4, ADDR_ZERO, 0, LEN_REST, 0, 2).publish(0, 0, 4).data_bytes(),
    ]
