import pytest

from pyvisor.devices.bus import PioBus
from pyvisor.devices.pci import (
    CONFIG_ADDRESS_PORT, PORT_COUNT, PciConfigSpace, PciFunction, PciRoot)
from pyvisor.devices.pci.config_space import (
    BAR0, CAPABILITIES_POINTER, CLASS_CODE, COMMAND, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE,
    COMMAND_IO, COMMAND_MEMORY, HEADER_TYPE, INTERRUPT_LINE, INTERRUPT_PIN, STATUS,
    STATUS_CAP_LIST, STATUS_INTERRUPT, VENDOR_ID)

CONFIG_DATA = 0xCFC
PCI_CLASS_DEVICE = 0x0A   # Linux's name for the subclass/base-class word
PCI_CLASS_BRIDGE_HOST = 0x0600


def address(bus, slot, fn, register):
    return 0x80000000 | bus << 16 | slot << 11 | fn << 8 | register & 0xFC


class Pci:
    """A PciRoot on a real PioBus, accessed the way Linux's pci_conf1_read/write do."""

    def __init__(self):
        self.root = PciRoot()
        self.bus = PioBus()
        self.bus.register(CONFIG_ADDRESS_PORT, PORT_COUNT, self.root, "pci")

    def read(self, bus, slot, fn, register, size=4):
        self.bus.write(CONFIG_ADDRESS_PORT, 4, address(bus, slot, fn, register))
        return self.bus.read(CONFIG_DATA + (register & 3), size)

    def write(self, bus, slot, fn, register, size, value):
        self.bus.write(CONFIG_ADDRESS_PORT, 4, address(bus, slot, fn, register))
        self.bus.write(CONFIG_DATA + (register & 3), size, value)


@pytest.fixture
def pci():
    return Pci()


def device(**kw):
    return PciConfigSpace(0x1AF4, 0x1000, 0x020000, **kw)


# --- configuration mechanism #1 -----------------------------------------------------------

def test_linux_pci_check_type1(pci):
    """arch/x86/pci/direct.c: pci_check_type1() and pci_sanity_check()."""
    pci.bus.write(0xCFB, 1, 0x01)
    tmp = pci.bus.read(0xCF8, 4)
    pci.bus.write(0xCF8, 4, 0x80000000)
    assert pci.bus.read(0xCF8, 4) == 0x80000000
    found = [devfn for devfn in range(256)
             if pci.read(0, devfn >> 3, devfn & 7, PCI_CLASS_DEVICE, 2) == PCI_CLASS_BRIDGE_HOST]
    assert found == [0]
    pci.bus.write(0xCF8, 4, tmp)
    assert pci.bus.read(0xCF8, 4) == tmp


def test_config_address_reads_back_what_was_written(pci):
    for value in (0x80000000, 0x8001F8FC, 0x00000000, 0xFFFFFFFF):
        pci.bus.write(0xCF8, 4, value)
        assert pci.bus.read(0xCF8, 4) == value


@pytest.mark.parametrize("port, size", [(0xCF8, 1), (0xCF8, 2), (0xCF9, 1), (0xCFA, 2),
                                        (0xCFB, 1)])
def test_sub_dword_accesses_do_not_touch_config_address(pci, port, size):
    pci.bus.write(0xCF8, 4, 0x80000800)
    pci.bus.write(port, size, 0)
    assert pci.bus.read(0xCF8, 4) == 0x80000800
    assert pci.bus.read(port, size) == (1 << 8 * size) - 1


def test_host_bridge_identity(pci):
    assert pci.read(0, 0, 0, VENDOR_ID) == 0x1237_8086
    assert pci.read(0, 0, 0, 0x08) == 0x0600_0002       # class 06/00/00, revision 2
    assert pci.read(0, 0, 0, HEADER_TYPE, 1) == 0x00
    assert pci.root.find(0, 0, 0) is pci.root.host_bridge


def test_absent_functions_read_all_ones(pci):
    assert pci.read(0, 1, 0, 0) == 0xFFFFFFFF
    assert pci.read(0, 0, 1, 0) == 0xFFFFFFFF
    assert pci.read(1, 0, 0, 0) == 0xFFFFFFFF
    assert pci.read(0, 31, 7, 0x3E, 2) == 0xFFFF
    pci.write(0, 1, 0, COMMAND, 2, 0x7)                  # dropped, and no error
    pci.bus.write(0xCF8, 4, 0x00000000)                  # enable bit clear
    assert pci.bus.read(CONFIG_DATA, 4) == 0xFFFFFFFF
    pci.bus.write(CONFIG_DATA, 2, COMMAND_MEMORY)
    assert pci.read(0, 0, 0, COMMAND, 2) == 0


def test_sub_dword_data_accesses(pci):
    pci.bus.write(0xCF8, 4, address(0, 0, 0, 0))
    assert [pci.bus.read(CONFIG_DATA + i, 1) for i in range(4)] == [0x86, 0x80, 0x37, 0x12]
    assert pci.bus.read(0xCFE, 2) == 0x1237
    assert pci.bus.read(0xCFD, 2) == 0x3780              # unaligned within the dword
    pci.bus.write(0xCF8, 4, address(0, 0, 0, INTERRUPT_LINE))
    pci.bus.write(0xCFC, 1, 0x0B)
    assert pci.bus.read(0xCFC, 4) & 0xFFFF == 0x000B     # pin stays 0 on the bridge


def test_register_bits_1_0_of_config_address_are_ignored(pci):
    pci.bus.write(0xCF8, 4, address(0, 0, 0, 0) | 0x2)
    assert pci.bus.read(CONFIG_DATA, 2) == 0x8086


def test_functions_are_placed_and_found(pci):
    fn = PciFunction(device(interrupt_pin=1))
    pci.root.add(3, fn)
    assert pci.root.find(0, 3, 0) is fn
    assert pci.root.find(1, 3, 0) is None
    assert pci.read(0, 3, 0, 0) == 0x1000_1AF4
    assert pci.read(0, 3, 0, INTERRUPT_PIN, 1) == 1
    with pytest.raises(ValueError):
        pci.root.add(0, PciFunction(device()))           # the host bridge's slot
    with pytest.raises(ValueError):
        pci.root.add(32, PciFunction(device()))
    with pytest.raises(ValueError):
        pci.root.add(3, PciFunction(device()), fn=8)


def test_function_hooks_see_guest_accesses(pci):
    seen = []

    class Recording(PciFunction):
        def config_write(self, offset, size, value):
            seen.append((offset, size, value))
            super().config_write(offset, size, value)

    pci.root.add(2, Recording(device()))
    pci.write(0, 2, 0, COMMAND + 1, 1, 0x1FF)
    assert seen == [(COMMAND + 1, 1, 0xFF)]              # masked to the access size
    assert pci.read(0, 2, 0, COMMAND, 2) == COMMAND_INTX_DISABLE


# --- configuration space --------------------------------------------------------------------

def test_read_only_fields_stay(pci):
    cs = device(revision=7, subsystem_vendor_id=0x1AF4, subsystem_id=0x0001)
    before = cs.read(0, 4), cs.read(0x08, 4), cs.read(0x2C, 4), cs.read(HEADER_TYPE, 1)
    for offset in range(0, 0x40, 4):
        cs.write(offset, 4, 0xFFFFFFFF)
    assert (cs.read(0, 4), cs.read(0x08, 4), cs.read(0x2C, 4), cs.read(HEADER_TYPE, 1)) == before
    assert cs.read(CLASS_CODE, 3) == 0x020000
    assert cs.read(0x08, 1) == 7
    assert cs.read(0x0C, 1) == 0xFF                       # cache line size is writable
    assert cs.read(0x30, 4) == 0                          # no expansion ROM
    assert cs.read(CAPABILITIES_POINTER, 1) == 0
    assert cs.read(INTERRUPT_LINE, 1) == 0xFF


def test_command_register_writable_bits():
    cs = device()
    cs.write(COMMAND, 2, 0xFFFF)
    assert cs.command == COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
    cs.write(COMMAND, 1, 0)
    assert cs.command == COMMAND_INTX_DISABLE


def test_status_bits_are_write_one_to_clear():
    cs = device()
    cs.add_capability(0x09, b"\x00\x00")
    cs.set_raw(STATUS, 2, cs.read(STATUS, 2) | 0xF900 | STATUS_INTERRUPT)
    cs.write(STATUS, 2, 0)                                # writing 0 keeps them
    assert cs.read(STATUS, 2) == 0xF900 | STATUS_INTERRUPT | STATUS_CAP_LIST
    cs.write(STATUS, 2, 0x2000)                           # clears only the bit written 1
    assert cs.read(STATUS, 2) == 0xD900 | STATUS_INTERRUPT | STATUS_CAP_LIST
    cs.write(COMMAND, 4, 0xFFFF_0000)                     # dword write through command
    assert cs.read(STATUS, 2) == STATUS_INTERRUPT | STATUS_CAP_LIST
    assert cs.command == 0


def test_accesses_past_the_end():
    cs = device()
    assert cs.read(0xFF, 2) == 0xFF00
    cs.write(0xFF, 2, 0xFFFF)                             # no error
    assert cs.read(0xFE, 2) == 0


def test_capability_list_walk():
    cs = device()
    msix = cs.add_capability(0x11, bytes([0x03, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0]),
                             writable=bytes([0x00, 0xC0] + [0] * 8))
    vendor = cs.add_capability(0x09, bytes([0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    last = cs.add_capability(0x05, b"\x80")
    assert cs.read(STATUS, 2) & STATUS_CAP_LIST
    walk, ptr = [], cs.read(CAPABILITIES_POINTER, 1)
    while ptr:
        walk.append((ptr, cs.read(ptr, 1)))
        ptr = cs.read(ptr + 1, 1)
    assert walk == [(0x40, 0x11), (0x4C, 0x09), (0x5C, 0x05)]
    assert (msix, vendor, last) == (0x40, 0x4C, 0x5C)
    assert cs.read(vendor + 2, 2) == 0x0110
    cs.write(msix, 4, 0xFFFFFFFF)                         # only MSI-X enable/mask writable
    assert cs.read(msix, 4) == 0xC003_4C11
    cs.write(vendor, 4, 0)
    assert cs.read(vendor, 4) == 0x0110_5C09
    with pytest.raises(ValueError):
        cs.add_capability(0x09, bytes(200))
    with pytest.raises(ValueError):
        cs.add_capability(0x09, b"\x00\x00", writable=b"\x00")


def size_bar(cs, index):
    """Linux's __pci_read_base(): save, write ones, read the mask, restore."""
    offset = BAR0 + 4 * index
    saved = cs.read(offset, 4)
    cs.write(offset, 4, 0xFFFFFFFF)
    mask = cs.read(offset, 4)
    cs.write(offset, 4, saved)
    return mask


def test_bar_sizing_mem32():
    cs = device()
    cs.add_bar(0, 0x1000)
    cs.add_bar(1, 0x100000, prefetchable=True)
    assert cs.read(BAR0, 4) == 0x0
    assert size_bar(cs, 0) == 0xFFFFF000
    assert size_bar(cs, 1) == 0xFFF00008
    assert cs.read(BAR0, 4) == 0                          # restored
    assert size_bar(cs, 2) == 0                           # unimplemented BARs read 0


def test_bar_sizing_mem64_pair():
    cs = device()
    cs.add_bar(2, 0x4000, "mem64", prefetchable=True)
    assert size_bar(cs, 2) == 0xFFFFC00C
    assert size_bar(cs, 3) == 0xFFFFFFFF
    big = device()
    big.add_bar(0, 1 << 33, "mem64")
    assert size_bar(big, 0) == 0x00000004
    assert size_bar(big, 1) == 0xFFFFFFFE


def test_bar_sizing_io():
    cs = device()
    cs.add_bar(5, 0x20, "io")
    assert cs.read(BAR0 + 20, 4) == 0x1
    assert size_bar(cs, 5) == 0xFFFFFFE1


@pytest.mark.parametrize("args", [
    (6, 0x1000), (5, 0x1000, "mem64"), (0, 0x1800), (0, 8), (0, 2, "io"), (0, 0x20, "rom"),
    (0, 0x20, "io", True), (0, 1 << 32)])
def test_bad_bars_are_refused(args):
    with pytest.raises(ValueError):
        device().add_bar(*args)


def test_overlapping_bar_slots_are_refused():
    cs = device()
    cs.add_bar(1, 0x1000, "mem64")
    for index in (1, 2):
        with pytest.raises(ValueError):
            cs.add_bar(index, 0x1000)
    with pytest.raises(ValueError):
        cs.add_bar(0, 0x1000, "mem64")


def test_bar_reassignment_callback():
    cs = device()
    changes = []
    cs.on_bar_change = lambda *change: changes.append(change)
    cs.add_bar(0, 0x1000)
    cs.add_bar(2, 0x4000, "mem64")
    cs.add_bar(4, 0x20, "io")
    # Linux: size with decoding off, assign, then pci_enable_device sets the command bits.
    for index in (0, 2, 3, 4):
        size_bar(cs, index)
    cs.write(BAR0, 4, 0xFEB00000)
    cs.write(BAR0 + 8, 4, 0x00000000)
    cs.write(BAR0 + 12, 4, 0x00000001)
    cs.write(BAR0 + 16, 4, 0xC040)
    assert changes == [] and cs.bar_address(0) is None
    cs.write(COMMAND, 2, COMMAND_MEMORY)
    assert changes == [(0, None, 0xFEB00000), (2, None, 0x1_00000000)]
    cs.write(BAR0 + 8, 4, 0xF0000000)                     # the low half of the mem64 BAR
    assert changes[-1] == (2, 0x1_00000000, 0x1_F0000000)
    cs.write(COMMAND, 2, COMMAND_MEMORY | COMMAND_IO)
    assert changes[-1] == (4, None, 0xC040)
    assert (cs.bar_address(0), cs.bar_address(2), cs.bar_address(4)) == (
        0xFEB00000, 0x1_F0000000, 0xC040)
    cs.write(BAR0, 4, 0xFEB01000)                         # the guest moves it
    assert changes[-1] == (0, 0xFEB00000, 0xFEB01000)
    changes.clear()
    cs.write(BAR0, 4, 0xFFFFFFFF)                         # sizing with decoding on
    assert changes == [(0, 0xFEB01000, None)]
    cs.write(BAR0, 4, 0xFEB01000)
    changes.clear()
    cs.write(COMMAND, 2, COMMAND_IO)
    assert changes == [(0, 0xFEB01000, None), (2, 0x1_F0000000, None)]
    cs.write(0x3C, 1, 5)                                  # outside the BAR area: no calls
    assert len(changes) == 2


def test_io_bar_beyond_the_port_space_does_not_decode():
    cs = device()
    cs.add_bar(0, 0x100, "io")
    cs.write(BAR0, 4, 0x10000)
    cs.write(COMMAND, 2, COMMAND_IO)
    assert cs.bar_address(0) is None


def test_bar_through_the_ports(pci):
    cs = device()
    cs.add_bar(0, 0x1000)
    pci.root.add(1, PciFunction(cs))
    pci.write(0, 1, 0, BAR0, 4, 0xFFFFFFFF)
    assert pci.read(0, 1, 0, BAR0) == 0xFFFFF000
    pci.write(0, 1, 0, BAR0 + 2, 2, 0xFEBF)               # high word only
    pci.write(0, 1, 0, BAR0, 2, 0x0000)
    pci.write(0, 1, 0, COMMAND, 2, COMMAND_MEMORY)
    assert cs.bar_address(0) == 0xFEBF0000
