"""Which virtio devices a machine gets, and where, in the order console, disks, network
interfaces, rng:

- virtio-pci (the default): one PCI slot each from 00:01.0 on, BARs assigned from the
  start of the PCI MMIO window;
- virtio-mmio: 512-byte windows from MMIO_BASE (above the PCI window, below the IOAPIC),
  each with one of the free ISA GSIs; described to the guest in the ACPI DSDT and on the
  kernel command line (mmio_placements), before the devices themselves exist.

Each device's module and its transport's are imported only when the configuration asks for
them: `pyvisor run KERNEL` with no virtio devices loads none of them.
"""
from __future__ import annotations

from collections.abc import Callable

from ..acpi.platform import PCI_MMIO_WINDOW_START
from ..errors import ConfigError
from .config import MachineConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..devices.io_loop import IoLoop
    from ..devices.virtio.device import VirtioDevice
    from ..devices.virtio.mmio import VirtioMmio
    from ..devices.virtio.pci import VirtioPci

FIRST_SLOT = 1
MMIO_BASE = 0xFE000000
MMIO_STRIDE = 0x1000
# ISA IRQs no legacy device of this machine uses (COM1 4, RTC 8, SCI 9 and the i8042's 1
# are taken; 2 is the cascade, 3 and 6 stay free for COM2 and a floppy's sake).
MMIO_GSIS = (5, 7, 10, 11, 12, 14, 15)


def device_count(cfg: MachineConfig) -> int:
    return (cfg.console == "virtio") + len(cfg.disks) + len(cfg.nets) + cfg.rng


def mmio_placements(cfg: MachineConfig) -> list[tuple[int, int, int]]:
    """(base, length, gsi) of each virtio-mmio window, or [] with virtio-pci."""
    if cfg.virtio_transport != "mmio":
        return []
    count = device_count(cfg)
    if count == 0:
        return []
    if count > len(MMIO_GSIS):
        raise ConfigError(f"virtio-mmio has interrupt lines for {len(MMIO_GSIS)} devices; "
                          f"this machine asks for {count} (use --virtio-transport pci)")
    from ..devices.virtio.mmio import WINDOW

    return [(MMIO_BASE + i * MMIO_STRIDE, WINDOW, MMIO_GSIS[i]) for i in range(count)]


def virtio_devices(cfg: MachineConfig, console_output: Callable[[bytes], None],
                   io_loop: IoLoop) -> list[VirtioDevice]:
    """The devices the configuration asks for (opening disks: errors come before boot)."""
    devices: list[VirtioDevice] = []
    try:
        if cfg.console == "virtio":
            from ..devices.virtio.console import VirtioConsole
            devices.append(VirtioConsole(console_output))
        for disk in cfg.disks:
            from ..devices.virtio.blk import VirtioBlk
            devices.append(VirtioBlk(disk, cfg.cpus, io_loop.add_eventfd))
        for net in cfg.nets:
            from ..devices.virtio.net import VirtioNet
            devices.append(VirtioNet(net, lambda fd, handler: io_loop.add(fd, handler)
                                     if handler else io_loop.remove(fd)))
        if cfg.rng:
            from ..devices.virtio.rng import VirtioRng
            devices.append(VirtioRng())
    except BaseException:
        for device in devices:
            device.close()
        raise
    return devices


def attach_virtio_devices(cfg: MachineConfig, machine) -> list[VirtioPci | VirtioMmio]:
    """Put each device behind its transport on the machine's buses."""
    devices = virtio_devices(cfg, machine.console_pipe.write, machine.io_loop)
    if not devices:
        return []
    vm = machine.vm
    functions: list[VirtioPci | VirtioMmio] = []
    try:
        if cfg.virtio_transport == "mmio":
            from ..devices.virtio.mmio import VirtioMmio
            for device, (base, _, gsi) in zip(devices, mmio_placements(cfg)):
                functions.append(VirtioMmio(device, base=base, gsi=gsi, memory=machine.memory,
                                            mmio_bus=machine.mmio_bus, vm=vm,
                                            io_loop=machine.io_loop))
            return functions
        from ..devices.virtio.pci import BAR_SIZE, VirtioPci
        from .gsi_router import GsiRouter, SharedLines
        router = GsiRouter(vm)
        intx = SharedLines(vm.irq_line)
        for i, device in enumerate(devices):
            slot = FIRST_SLOT + i
            function = VirtioPci(device, slot=slot,
                                 bar_address=PCI_MMIO_WINDOW_START + i * BAR_SIZE,
                                 memory=machine.memory, mmio_bus=machine.mmio_bus, vm=vm,
                                 router=router, io_loop=machine.io_loop,
                                 irq_line=intx.source())
            machine.pci.add(slot, function)
            functions.append(function)
    except BaseException:
        for function in functions:
            function.close()
        for device in devices[len(functions):]:
            device.close()
        raise
    return functions
