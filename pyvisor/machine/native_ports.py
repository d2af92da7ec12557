"""Which ports pv_run serves without Python (struct pv_ports), worked out from the port
bus: a port no device claims reads as all ones and ignores writes (0x80 POST, 0xED delay:
a guest writes them for their timing), the 0xE9 debug console's bytes go straight to the
console pipe, and the ACPI PM timer is read from CLOCK_MONOTONIC. Everything else, and
every port a script hooks, is Python's. Rebuilt while the vCPUs are paused.

It also picks the ports whose writes KVM may queue in its coalesced ring instead of
exiting (see coalesced_ring.py): the delay ports while nothing claims them (their writes
do nothing, so only their timing changes), and the device registers the machine names as
deferrable (write-only, read by nobody but a later access to the same device, as the CMOS
index port: QEMU coalesces it too). A hooked port is never coalesced: its hook sees every
access as it happens. The 0xE9 console is not: a byte must show before the guest halts."""
from __future__ import annotations

from collections.abc import Iterable

from .._native import ffi, lib
from ..devices.bus import PIO_SPACE, PioBus
from .hooks import RangeHooks

DELAY_PORTS = (0x80, 0xED)


def fill_port_table(ports, bus: PioBus, hooks: RangeHooks, console_port: int | None,
                    pm_timer_port: int, pm_timer_origin_ns: int,
                    deferrable: Iterable[int] = ()) -> frozenset[int]:
    """console_port: the debug console's port, or None when the machine has none.
    Returns the ports to coalesce."""
    read = bytearray([lib.PV_PORT_NONE]) * PIO_SPACE
    write = bytearray([lib.PV_PORT_NONE]) * PIO_SPACE
    for r in bus.registrations():
        read[r.base:r.base + r.length] = bytes([lib.PV_PORT_PYTHON]) * r.length
        write[r.base:r.base + r.length] = bytes([lib.PV_PORT_PYTHON]) * r.length
    if console_port is not None:
        write[console_port] = lib.PV_PORT_CONSOLE
    read[pm_timer_port] = lib.PV_PORT_PM_TIMER
    for hook in hooks.ranges():
        length = hook.last - hook.first + 1
        read[hook.first:hook.last + 1] = bytes([lib.PV_PORT_PYTHON]) * length
        write[hook.first:hook.last + 1] = bytes([lib.PV_PORT_PYTHON]) * length
    ffi.memmove(ports.read, bytes(read), PIO_SPACE)
    ffi.memmove(ports.write, bytes(write), PIO_SPACE)
    ports.pm_timer_origin_ns = pm_timer_origin_ns
    quiet = [p for p in DELAY_PORTS if write[p] == lib.PV_PORT_NONE]
    return frozenset(quiet + [p for p in deferrable if not hooks.covers(p, p)])
