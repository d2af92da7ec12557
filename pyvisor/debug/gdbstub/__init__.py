"""A GDB remote stub for a Machine: `serve(machine, "tcp:127.0.0.1:1234")`, then
`gdb kernel.elf -ex 'target remote :1234'`. protocol.py frames packets, registers.py is
the target description and the g/G layout, session.py answers packets, server.py listens.

Whoever waits for the machine's end while the stub runs should call
`machine.wait(events=False)` (or `run(events=False)`): the stub takes the debug stops."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .server import GdbServer, parse_address

__all__ = ["GdbServer", "parse_address", "serve", "serving"]


def serve(machine, spec: str) -> GdbServer:
    """Listen at spec (tcp:HOST:PORT on loopback, or unix:PATH) and serve gdb on a thread
    of its own until close(). Listening errors are ConfigErrors, raised here."""
    server = GdbServer(machine, spec)
    server.start()
    return server


@contextmanager
def serving(machine, spec: str | None) -> Iterator[GdbServer | None]:
    """serve() for the length of a with block; nothing at all when spec is None."""
    if spec is None:
        yield None
        return
    with serve(machine, spec) as server:
        yield server
