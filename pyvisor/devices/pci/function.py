"""What the PCI root needs from a function: a configuration space and two access hooks."""
from __future__ import annotations

from .config_space import PciConfigSpace


class PciFunction:
    """One PCI function. The root calls `config_read`/`config_write` for guest accesses
    (offset within the 256-byte space, size 1, 2 or 4, value already masked to size); a
    device overrides them to react to its own registers (MSI-X enable, a virtio access
    window) around the plain access to `config`."""

    def __init__(self, config: PciConfigSpace) -> None:
        self.config = config

    def config_read(self, offset: int, size: int) -> int:
        return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.config.write(offset, size, value)

    def snapshot_state(self) -> dict:
        return {"config": self.config.snapshot_state()}

    def restore_state(self, state: dict) -> None:
        self.config.restore_state(state.get("config") or {})
