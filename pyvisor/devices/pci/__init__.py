"""Conventional PCI: configuration spaces, the host bridge and configuration mechanism #1."""
from .config_space import PciConfigSpace
from .function import PciFunction
from .host_bridge import PciHostBridge
from .root import CONFIG_ADDRESS_PORT, PORT_COUNT, PciRoot

__all__ = ["CONFIG_ADDRESS_PORT", "PORT_COUNT", "PciConfigSpace", "PciFunction",
           "PciHostBridge", "PciRoot"]
