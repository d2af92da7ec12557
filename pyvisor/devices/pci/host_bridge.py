"""The host bridge at 00:00.0, an Intel 440FX (i440FX PMC) as QEMU's default PC has.

Linux's pci_sanity_check() trusts configuration mechanism #1 only after finding a host
bridge (or an Intel device) on bus 0, and a host bridge at slot 0 is what every PC has.
The 440FX is plain PCI: Linux needs none of its registers (PAM, SMRAM matter to firmware),
where a Q35 id would invite PCIe and MMCONFIG expectations this machine does not meet.
"""
from __future__ import annotations

from ..changes import CountingLock
from .config_space import PciConfigSpace
from .function import PciFunction

INTEL_VENDOR_ID = 0x8086
I440FX_DEVICE_ID = 0x1237
I440FX_REVISION = 0x02
CLASS_HOST_BRIDGE = 0x060000


class PciHostBridge(PciFunction):
    """A host bridge with only its identity: no BARs, no interrupt, no capabilities. Its
    configuration space changes only through the root's ports, so the root's counting lock
    (state_changes) counts its changes too."""

    def __init__(self, state_changes: CountingLock) -> None:
        self.state_changes = state_changes
        super().__init__(PciConfigSpace(INTEL_VENDOR_ID, I440FX_DEVICE_ID, CLASS_HOST_BRIDGE,
                                        revision=I440FX_REVISION))
