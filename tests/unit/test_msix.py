"""MSI-X capability, vector table and pending bits (pyvisor/devices/pci/msix.py)."""
import os

import pytest

from pyvisor.devices.pci.config_space import PciConfigSpace
from pyvisor.devices.pci.msix import CAP_ID_MSIX, CTRL_ENABLE, CTRL_FUNCTION_MASK, Msix
from virtio_driver import FakeRouter, FakeVm

VECTORS = 3
TABLE, PBA = 0x4000, 0x5000


class Rig:
    def __init__(self, vectors=VECTORS):
        self.config = PciConfigSpace(0x1AF4, 0x1041, 0xFF0000)
        self.router = FakeRouter()
        self.vm = FakeVm()
        self.msix = Msix(self.config, vectors, 0, TABLE, PBA, self.router, self.vm)

    def ctrl(self, value):
        """A guest write of the message control register."""
        self.config.write(self.msix.cap_offset + 2, 2, value)
        self.msix.config_written()

    def fd(self, vector):
        return self.vm.fd_for_gsi(self.router.allocated[vector])

    def fired(self, vector):
        try:
            return os.eventfd_read(self.fd(vector))
        except BlockingIOError:
            return 0

    def program(self, vector, address=0xFEE00000, data=0x40, masked=False):
        base = 16 * vector
        self.msix.table_write(base, 4, address & 0xFFFFFFFF)
        self.msix.table_write(base + 4, 4, address >> 32)
        self.msix.table_write(base + 8, 4, data)
        self.msix.table_write(base + 12, 4, int(masked))


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.msix.close()


def test_capability(rig):
    cap = rig.msix.cap_offset
    assert rig.config.read(cap, 1) == CAP_ID_MSIX
    assert rig.config.read(cap + 2, 2) == VECTORS - 1
    assert rig.config.read(cap + 4, 4) == TABLE
    assert rig.config.read(cap + 8, 4) == PBA
    # only enable and function mask are writable
    rig.config.write(cap + 2, 2, 0xFFFF)
    assert rig.config.read(cap + 2, 2) == CTRL_ENABLE | CTRL_FUNCTION_MASK | (VECTORS - 1)
    rig.config.write(cap + 4, 4, 0xFFFFFFFF)
    assert rig.config.read(cap + 4, 4) == TABLE


def test_one_gsi_and_irqfd_per_vector(rig):
    assert rig.router.allocated == [24, 25, 26]
    assert [(g, d) for _, g, d in rig.vm.irqfds] == [(24, False), (25, False), (26, False)]
    assert len({fd for fd, _, _ in rig.vm.irqfds}) == VECTORS


def test_power_on_table_is_masked(rig):
    for v in range(VECTORS):
        assert rig.msix.table_read(16 * v + 12, 4) == 1
        assert rig.msix.table_read(16 * v, 8) == 0


def test_disabled_signal_returns_false(rig):
    assert not rig.msix.enabled
    assert rig.msix.signal(0) is False
    assert rig.msix.pba_read(0, 8) == 0


def test_masked_vector_sets_its_pba_bit_and_unmask_delivers(rig):
    rig.ctrl(CTRL_ENABLE)
    rig.program(1, masked=True)
    assert rig.msix.signal(1) is True
    assert rig.fired(1) == 0
    assert rig.msix.pba_read(0, 8) == 0b010
    assert rig.msix.pba_read(0, 1) == 0b010
    # a second signal while masked stays one pending bit
    rig.msix.signal(1)
    assert rig.msix.pba_read(0, 8) == 0b010
    rig.msix.table_write(16 + 12, 4, 0)           # unmask
    assert rig.fired(1) == 1
    assert rig.msix.pba_read(0, 8) == 0
    assert rig.fired(0) == 0 and rig.fired(2) == 0


def test_unmasked_vector_delivers_at_once(rig):
    rig.ctrl(CTRL_ENABLE)
    rig.program(2)
    assert rig.msix.signal(2) is True
    assert rig.fired(2) == 1
    assert rig.msix.pba_read(0, 8) == 0


def test_out_of_range_vector_is_swallowed(rig):
    rig.ctrl(CTRL_ENABLE)
    for v in range(VECTORS):
        rig.program(v)
    assert rig.msix.signal(VECTORS) is True
    assert rig.msix.signal(0xFFFF) is True
    assert [rig.fired(v) for v in range(VECTORS)] == [0] * VECTORS
    assert rig.msix.pba_read(0, 8) == 0


def test_function_mask(rig):
    rig.ctrl(CTRL_ENABLE | CTRL_FUNCTION_MASK)
    rig.program(0)
    rig.program(2)
    rig.msix.signal(0)
    rig.msix.signal(2)
    assert rig.fired(0) == 0 and rig.fired(2) == 0
    assert rig.msix.pba_read(0, 8) == 0b101
    rig.ctrl(CTRL_ENABLE)                          # function unmasked: both delivered
    assert rig.fired(0) == 1 and rig.fired(2) == 1
    assert rig.msix.pba_read(0, 8) == 0


def test_function_unmask_keeps_individually_masked_vectors_pending(rig):
    rig.ctrl(CTRL_ENABLE | CTRL_FUNCTION_MASK)
    rig.program(0, masked=True)
    rig.program(1)
    rig.msix.signal(0)
    rig.msix.signal(1)
    rig.ctrl(CTRL_ENABLE)
    assert rig.fired(1) == 1 and rig.fired(0) == 0
    assert rig.msix.pba_read(0, 8) == 0b001


def test_pending_delivered_when_enabled_later(rig):
    rig.ctrl(CTRL_ENABLE)
    rig.msix.signal(0)                             # vector 0 masked at power-on
    rig.ctrl(0)
    rig.program(0)
    assert rig.fired(0) == 0                       # MSI-X off: nothing sent
    rig.ctrl(CTRL_ENABLE)
    assert rig.fired(0) == 1


def test_table_writes_update_router_routes(rig):
    gsi = rig.router.allocated[1]
    rig.msix.table_write(16, 4, 0xFEE01000)
    assert rig.router.routes[gsi] == (0xFEE01000, 0)
    rig.msix.table_write(16 + 4, 4, 0x1)
    assert rig.router.routes[gsi] == (0x1_FEE01000, 0)
    rig.msix.table_write(16 + 8, 4, 0x4021)
    assert rig.router.routes[gsi] == (0x1_FEE01000, 0x4021)
    # a 64-bit write of address low and high at once
    rig.msix.table_write(16, 8, 0xFEE02000)
    assert rig.router.routes[gsi] == (0xFEE02000, 0x4021)
    assert rig.msix.table_read(16, 8) == 0xFEE02000
    assert rig.msix.table_read(16 + 8, 4) == 0x4021
    assert set(rig.router.routes) == {gsi}         # other vectors untouched


def test_table_write_past_the_table_is_ignored(rig):
    calls = list(rig.router.calls)
    rig.msix.table_write(16 * VECTORS, 4, 0x1234)
    rig.msix.table_write(16 * VECTORS - 2, 4, 0x1234)
    assert rig.router.calls == calls
    assert rig.msix.table_read(16 * VECTORS - 4, 4) == 1


def test_many_vectors_pba_spans_qwords():
    r = Rig(vectors=70)
    try:
        assert r.msix.pba_size == 16
        r.ctrl(CTRL_ENABLE)
        r.msix.signal(65)
        assert r.msix.pba_read(8, 8) == 1 << 1
        assert r.msix.pba_read(0, 8) == 0
    finally:
        r.msix.close()
