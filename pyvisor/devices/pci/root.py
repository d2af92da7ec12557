"""PCI configuration mechanism #1 (ports 0xCF8-0xCFF) in front of bus 0.

CONFIG_ADDRESS at 0xCF8 is a dword register: only 32-bit accesses reach it, as on PCs,
where byte accesses to 0xCF8-0xCFB go to other chipset registers (0xCF9 is the reset
control register, not modelled: those accesses read as ones and are dropped). CONFIG_DATA
at 0xCFC-0xCFF takes byte, word and dword accesses; the port's low two bits select the
byte within the addressed dword.
"""
from __future__ import annotations

from ..changes import CountingLock
from ..state import DeviceStateError
from .function import PciFunction
from .host_bridge import PciHostBridge

CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
PORT_COUNT = 8

ADDRESS_ENABLE = 0x80000000
SLOT_COUNT = 32
FUNCTION_COUNT = 8

_DATA_OFFSET = CONFIG_DATA_PORT - CONFIG_ADDRESS_PORT


class PciRoot:
    """Bus 0 and the configuration ports: register on the PioBus at CONFIG_ADDRESS_PORT
    for PORT_COUNT ports. The host bridge is at 00:00.0; `add` places the other functions.

    CONFIG_ADDRESS is one latch shared by every vCPU (as on hardware, where the guest
    serialises address-then-data itself, Linux with pci_config_lock); the lock here keeps
    each access, and the function hooks it calls, whole. Reads of absent functions, other
    buses or with the enable bit clear return all ones; writes to them are dropped. The lock
    is counted (state_changes), for CONFIG_ADDRESS and for the host bridge, whose
    configuration space nothing else reaches.
    """

    def __init__(self) -> None:
        self._lock = self.state_changes = CountingLock()
        self._address = 0
        self._functions: dict[tuple[int, int], PciFunction] = {}
        self.host_bridge = PciHostBridge(self._lock)
        self.add(0, self.host_bridge)

    def add(self, slot: int, function: PciFunction, fn: int = 0) -> None:
        """Place a function at 00:slot.fn. Linux scans functions 1-7 of a slot only when
        function 0's header type has HEADER_MULTIFUNCTION set; that is the device's to set."""
        if not (0 <= slot < SLOT_COUNT and 0 <= fn < FUNCTION_COUNT):
            raise ValueError(f"PCI 00:{slot:02x}.{fn} is not a valid slot and function")
        if (slot, fn) in self._functions:
            raise ValueError(f"PCI 00:{slot:02x}.{fn} is already taken")
        self._functions[slot, fn] = function

    def find(self, bus: int, slot: int, fn: int) -> PciFunction | None:
        return self._functions.get((slot, fn)) if bus == 0 else None

    def snapshot_state(self) -> dict:
        """CONFIG_ADDRESS; the functions keep their own state (state_children)."""
        with self._lock.held():
            return {"address": self._address}

    def restore_state(self, state: dict) -> None:
        address = state.get("address")
        if not isinstance(address, int) or not 0 <= address <= 0xFFFFFFFF:
            raise DeviceStateError("PCI root: the saved CONFIG_ADDRESS is malformed")
        with self._lock.held():
            self._address = address

    def state_children(self) -> dict[str, PciFunction]:
        return {f"pci 00:{slot:02x}.{fn}": function
                for (slot, fn), function in sorted(self._functions.items())}

    def pio_read(self, offset: int, size: int) -> int:
        ones = (1 << 8 * size) - 1
        with self._lock:
            if offset < _DATA_OFFSET:
                return self._address if offset == 0 and size == 4 else ones
            target = self._target(offset)
            if target is None:
                return ones
            function, register = target
            return function.config_read(register, size) & ones

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= (1 << 8 * size) - 1
        with self._lock:
            if offset < _DATA_OFFSET:
                if offset == 0 and size == 4:
                    self._address = value
                return
            target = self._target(offset)
            if target is not None:
                function, register = target
                function.config_write(register, size, value)

    def _target(self, offset: int) -> tuple[PciFunction, int] | None:
        """The function CONFIG_ADDRESS selects and the register a data-port access hits."""
        address = self._address
        if not address & ADDRESS_ENABLE:
            return None
        function = self.find(address >> 16 & 0xFF, address >> 11 & 0x1F, address >> 8 & 0x7)
        if function is None:
            return None
        return function, (address & 0xFC) + offset - _DATA_OFFSET
