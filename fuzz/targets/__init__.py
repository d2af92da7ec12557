"""The fuzz targets. Each module has:

- ERRORS: the exception types an input may raise (the documented refusals; anything else
  that escapes is a failure);
- make() -> run(data): set up once per worker (guest RAM, the device), return the function
  that runs one input and checks the target's invariants;
- seeds() -> list of inputs to start from.

A new target is one module here and its name in TARGETS.
"""
from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = ("virtqueue", "virtio_blk", "virtio_net", "virtio_rng", "virtio_console",
           "virtio_pci", "virtio_mmio", "pci_config", "elf_loader", "bzimage_loader",
           "pvh_loader", "multiboot_loader")


def load(name: str) -> ModuleType:
    if name not in TARGETS:
        raise ValueError(f"unknown fuzz target {name!r} (targets: {', '.join(TARGETS)})")
    return importlib.import_module(f"{__name__}.{name}")
