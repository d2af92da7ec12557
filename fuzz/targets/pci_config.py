"""PCI configuration space through configuration mechanism #1 (ports 0xCF8-0xCFF on a
real PioBus): the host bridge and two virtio-pci functions, BAR sizing and moves (their
ranges on a real MmioBus), capabilities, plus MMIO accesses at and around the BARs.

Invariants: no exception escapes; a port read fits its width; the identity registers
(vendor, device, revision, class, header type, subsystem, capability pointer, interrupt
pin) never change; MMIO ranges never overlap; the buses' bookkeeping of unclaimed
accesses stays bounded, though the buses live as long as the worker.
"""
from __future__ import annotations

from pyvisor.devices.bus import MmioBus, PioBus
from pyvisor.devices.pci import CONFIG_ADDRESS_PORT, PORT_COUNT, PciRoot
from pyvisor.devices.pci.config_space import (BAR0, CAPABILITIES_POINTER, CLASS_CODE, COMMAND,
                                              COMMAND_MEMORY, DEVICE_ID, HEADER_TYPE,
                                              INTERRUPT_PIN, REVISION_ID, SUBSYSTEM_ID,
                                              SUBSYSTEM_VENDOR_ID, VENDOR_ID)
from pyvisor.devices.virtio.console import VirtioConsole
from pyvisor.devices.virtio.pci import BAR_SIZE, VirtioPci
from pyvisor.devices.virtio.rng import VirtioRng

from ..devices import InvariantError
from ..guest import guest_memory
from ..stream import Reader, Writer
from ..transports import KickLoop, NullRouter, NullVm

ERRORS = ()
BAR_BASE = 0xC0000000
OP_ADDRESS, OP_PORT_READ, OP_PORT_WRITE, OP_MMIO_READ, OP_MMIO_WRITE = range(5)
OPS = 5
IDENTITY = ((VENDOR_ID, 2), (DEVICE_ID, 2), (REVISION_ID, 1), (CLASS_CODE, 3),
            (HEADER_TYPE, 1), (SUBSYSTEM_VENDOR_ID, 2), (SUBSYSTEM_ID, 2),
            (CAPABILITIES_POINTER, 1), (INTERRUPT_PIN, 1))
UNCLAIMED_BOUND = 4096     # distinct unclaimed addresses the buses may remember, at most


class RootSlot:
    """The PioBus's device at 0xCF8: forwards to this input's PciRoot (a PioBus range
    cannot be unregistered, and the bus outlives the inputs)."""
    root: PciRoot

    def pio_read(self, offset: int, size: int) -> int:
        return self.root.pio_read(offset, size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        self.root.pio_write(offset, size, value)


def _address(r: Reader) -> int:
    sel = r.u8()
    if sel >= 0xF0:
        return r.u32()
    bus = r.u8() if sel & 0x40 else 0
    slot = (0, 1, 2, 3)[sel & 3] if not sel & 0x20 else r.u8() & 31
    fn = r.u8() & 7 if sel & 0x10 else 0
    return (0 if sel & 0x80 else 0x80000000) | bus << 16 | slot << 11 | fn << 8 | r.u8() & 0xFC


def _value(r: Reader) -> int:
    sel = r.u8() % 8
    if sel == 0:
        return r.u32()
    if sel == 1:
        return 0xFFFFFFFF                                       # BAR sizing
    if sel == 2:
        return BAR_BASE + BAR_SIZE * (r.u8() % 4) | r.u8() & 0xF  # a BAR, maybe colliding
    if sel == 3:
        return r.u16()                                          # command bits and such
    if sel == 4:
        return 0x8000 << 16 | r.u16()                           # MSI-X enable in a dword
    return r.u8()


def make():
    mem = guest_memory()
    pio, mmio = PioBus(), MmioBus()
    slot = RootSlot()
    pio.register(CONFIG_ADDRESS_PORT, PORT_COUNT, slot, "pci")

    def run(data: bytes) -> None:
        r = Reader(data)
        root = slot.root = PciRoot()
        functions = [VirtioPci(device, slot=i + 1, bar_address=BAR_BASE + BAR_SIZE * i,
                               memory=mem, mmio_bus=mmio, vm=NullVm(), router=NullRouter(),
                               io_loop=KickLoop(), irq_line=lambda gsi, level: None)
                     for i, device in enumerate((VirtioRng(), VirtioConsole(lambda d: None)))]
        everyone = [root.host_bridge] + functions
        identity = [[f.config.read(o, n) for o, n in IDENTITY] for f in everyone]
        for i, f in enumerate(functions):
            root.add(i + 1, f)
        try:
            while r.more:
                _op(r, pio, mmio, functions)
            for f, before in zip(everyone, identity):
                if [f.config.read(o, n) for o, n in IDENTITY] != before:
                    raise InvariantError(f"a guest write changed read-only identity "
                                         f"registers of {type(f).__name__}")
            regs = mmio.registrations()
            for a, b in zip(regs, regs[1:]):
                if b.base < a.base + a.length:
                    raise InvariantError(f"MMIO ranges {a.name} and {b.name} overlap")
            for bus in (pio, mmio):
                if len(bus.unclaimed_by_addr) > UNCLAIMED_BOUND:
                    raise InvariantError(f"the bus remembers {len(bus.unclaimed_by_addr)} "
                                         f"unclaimed addresses")
        finally:
            for reg in mmio.registrations():
                mmio.unregister(reg.base)
            for f in functions:
                f.close()
    return run


def _op(r: Reader, pio: PioBus, mmio: MmioBus, functions: list[VirtioPci]) -> None:
    code = r.u8() % OPS
    if code == OP_ADDRESS:
        pio.write(CONFIG_ADDRESS_PORT, 4, _address(r))
    elif code in (OP_PORT_READ, OP_PORT_WRITE):
        port, size = CONFIG_ADDRESS_PORT + r.u8() % PORT_COUNT, r.pick((4, 1, 2))
        if code == OP_PORT_WRITE:
            pio.write(port, size, _value(r) & ((1 << 8 * size) - 1))
        elif not 0 <= (value := pio.read(port, size)) < 1 << 8 * size:
            raise InvariantError(f"port {port:#x} read {value:#x} for a {size}-byte access")
    else:
        sel = r.u8()
        if sel < 0xC0:    # inside or just around a function's BAR, wherever it is now
            bar = functions[sel & 1].config.bar_address(0) or BAR_BASE
            addr = bar + (r.u16() - 0x100) * 4
        else:
            addr = r.u64()
        size = r.pick((4, 1, 2, 8))
        if code == OP_MMIO_WRITE:
            mmio.write(addr, size, _value(r) & ((1 << 8 * size) - 1))
        elif not 0 <= (value := mmio.read(addr, size)) < 1 << 64:
            raise InvariantError(f"MMIO {addr:#x} read {value:#x}")


def _config(w: Writer, slot: int, register: int, size: int, value: int | None) -> Writer:
    """A CONFIG_ADDRESS write for 00:slot.0 register, then a data-port access."""
    w.u8(OP_ADDRESS).u8(slot).u8(register)
    port = 4 + (register & 3)
    if value is None:
        return w.u8(OP_PORT_READ).u8(port).u8((4, 1, 2).index(size))
    return w.u8(OP_PORT_WRITE).u8(port).u8((4, 1, 2).index(size)).u8(0).u32(value)


def seeds() -> list[bytes]:
    out = []
    for slot in (0, 1, 2):
        w = Writer()
        for register in range(0, 0x100, 4):               # Linux's scan of the function
            _config(w, slot, register, 4, None)
        out.append(w.data())
    # BAR sizing, then a move of function 1's BAR onto function 2's, then back
    w = Writer()
    _config(w, 1, COMMAND, 2, 0)
    _config(w, 1, BAR0, 4, 0xFFFFFFFF)
    _config(w, 1, BAR0, 4, None)
    _config(w, 1, BAR0, 4, BAR_BASE + BAR_SIZE)
    _config(w, 1, COMMAND, 2, COMMAND_MEMORY)
    _config(w, 1, BAR0, 4, BAR_BASE)
    w.u8(OP_MMIO_READ).u8(0).u16(0x100).u8(0)
    out.append(w.data())
    return out
