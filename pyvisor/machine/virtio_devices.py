"""Which virtio devices a machine gets, and where: one PCI slot each from 00:01.0 on, in the
order console, disks, network interfaces, rng, with BARs assigned from the start of the PCI MMIO window."""
from __future__ import annotations

from typing import Callable

from ..acpi.platform import PCI_MMIO_WINDOW_START
from ..devices.virtio.blk import VirtioBlk
from ..devices.virtio.console import VirtioConsole
from ..devices.virtio.device import VirtioDevice
from ..devices.virtio.pci import BAR_SIZE, VirtioPci
from ..devices.virtio.net import VirtioNet
from ..devices.virtio.rng import VirtioRng
from ..devices.io_loop import IoLoop
from .config import MachineConfig
from .gsi_router import GsiRouter

FIRST_SLOT = 1


def virtio_devices(cfg: MachineConfig, console_output: Callable[[bytes], None],
                   io_loop: IoLoop) -> list[VirtioDevice]:
    """The devices the configuration asks for (opening disks: errors come before boot)."""
    devices: list[VirtioDevice] = []
    try:
        if cfg.console == "virtio":
            devices.append(VirtioConsole(console_output))
        for disk in cfg.disks:
            devices.append(VirtioBlk(disk))
        for net in cfg.nets:
            devices.append(VirtioNet(net, lambda fd, handler: io_loop.add(fd, handler)
                                     if handler else io_loop.remove(fd)))
        if cfg.rng:
            devices.append(VirtioRng())
    except BaseException:
        for device in devices:
            device.close()
        raise
    return devices


def attach_virtio_devices(cfg: MachineConfig, machine) -> list[VirtioPci]:
    """Put each device behind virtio-pci on the machine's PCI root and buses."""
    devices = virtio_devices(cfg, machine.console_pipe.write, machine.io_loop)
    if not devices:
        return []
    router = GsiRouter(machine.vm)
    vm = machine.vm
    functions = []
    try:
        for i, device in enumerate(devices):
            slot = FIRST_SLOT + i
            function = VirtioPci(device, slot=slot,
                                 bar_address=PCI_MMIO_WINDOW_START + i * BAR_SIZE,
                                 memory=machine.memory, mmio_bus=machine.mmio_bus, vm=vm,
                                 router=router, io_loop=machine.io_loop, irq_line=vm.irq_line)
            machine.pci.add(slot, function)
            functions.append(function)
    except BaseException:
        for function in functions:
            function.close()
        for device in devices[len(functions):]:
            device.close()
        raise
    return functions
