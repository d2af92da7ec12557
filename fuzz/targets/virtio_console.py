"""virtio-console: guest output on the transmit queue, host input (typed-ahead backlog
included) into receive buffers."""
from __future__ import annotations

from pyvisor.devices.virtio.console import VirtioConsole

from ..devices import DeviceRig, Seed
from ..guest import ADDR_ZERO, LEN_REST
from ..stream import Reader

ERRORS = ()
RECEIVE, TRANSMIT = 0, 1


def make():
    device = VirtioConsole(lambda data: None)

    def host_input(r: Reader) -> None:
        """Typed text, or a burst of `16 * u16` bytes (the backlog's bound)."""
        n = r.u8()
        device.receive(r.bytes(n) if n < 0xF0 else bytes(16 * r.u16()))

    return DeviceRig(device, request_queues={TRANSMIT}, host_event=host_input).run


def seeds() -> list[bytes]:
    text = b"hello, console\n"
    return [
        Seed(2).data(0, text).chain(TRANSMIT, 0, [(0, len(text), False)])
        .publish(TRANSMIT, 0).kick(TRANSMIT).data_bytes(),
        Seed(2).chain(RECEIVE, 0, [(0x100, 64, True)]).publish(RECEIVE, 0).kick(RECEIVE)
        .host(bytes([5]) + b"input").data_bytes(),
        Seed(2).host(bytes([3]) + b"ab\n").chain(RECEIVE, 0, [(0x100, 2, True)])
        .chain(RECEIVE, 1, [(0x200, 8, True)]).publish(RECEIVE, 0).publish(RECEIVE, 1)
        .kick(RECEIVE).data_bytes(),
        # issue 8: transmit chains that alias all of guest RAM, many times over
        Seed(2).run(TRANSMIT, 0, 64, ADDR_ZERO, 0, LEN_REST, 0, 0)
        .publish(TRANSMIT, 0, 7).kick(TRANSMIT).data_bytes(),
    ]
