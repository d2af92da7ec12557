"""The virtio-pci modern transport (pyvisor/devices/virtio/pci.py; virtio 1.2, 4.1), driven
through its registers only: mmio_read/mmio_write on the BAR and config_read/config_write on
configuration space, wired to fake vm, router, I/O loop, MMIO bus and INTx line."""
import os

import pytest

from pyvisor._native import lib
from pyvisor.acpi.platform import pci_intx_gsi
from pyvisor.devices.pci.config_space import (BAR0, CAPABILITIES_POINTER, COMMAND,
                                              COMMAND_INTX_DISABLE, COMMAND_MEMORY, STATUS,
                                              STATUS_CAP_LIST)
from pyvisor.devices.pci.msix import CAP_ID_MSIX, CTRL_ENABLE
from pyvisor.devices.virtio.device import ACKNOWLEDGE as ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET
from pyvisor.devices.virtio.pci import VirtioPci
from pyvisor.devices.virtio.rng import VirtioRng
from virtio_driver import (VERSION_1, Buf, Driver, FakeIoLoop, FakeMmioBus, FakeRouter, FakeVm,
                           IrqLine, new_memory)

SLOT = 3
BAR = 0xC0010000
BAR_SIZE = 0x8000
NOTIFY = 0x3000
NO_VECTOR = lib.VIRTIO_MSI_NO_VECTOR

DFSELECT, DF = lib.VIRTIO_PCI_COMMON_DFSELECT, lib.VIRTIO_PCI_COMMON_DF
GFSELECT, GF = lib.VIRTIO_PCI_COMMON_GFSELECT, lib.VIRTIO_PCI_COMMON_GF
MSIX_CONFIG, NUMQ = lib.VIRTIO_PCI_COMMON_MSIX, lib.VIRTIO_PCI_COMMON_NUMQ
STATUS_REG, CFGGEN = lib.VIRTIO_PCI_COMMON_STATUS, lib.VIRTIO_PCI_COMMON_CFGGENERATION
Q_SELECT, Q_SIZE = lib.VIRTIO_PCI_COMMON_Q_SELECT, lib.VIRTIO_PCI_COMMON_Q_SIZE
Q_MSIX, Q_ENABLE = lib.VIRTIO_PCI_COMMON_Q_MSIX, lib.VIRTIO_PCI_COMMON_Q_ENABLE
Q_NOFF = lib.VIRTIO_PCI_COMMON_Q_NOFF
Q_DESCLO, Q_DESCHI = lib.VIRTIO_PCI_COMMON_Q_DESCLO, lib.VIRTIO_PCI_COMMON_Q_DESCHI
Q_AVAILLO, Q_AVAILHI = lib.VIRTIO_PCI_COMMON_Q_AVAILLO, lib.VIRTIO_PCI_COMMON_Q_AVAILHI
Q_USEDLO, Q_USEDHI = lib.VIRTIO_PCI_COMMON_Q_USEDLO, lib.VIRTIO_PCI_COMMON_Q_USEDHI



class Rig:
    def __init__(self, device=None):
        self.mem = new_memory()
        self.vm = FakeVm()
        self.router = FakeRouter()
        self.io = FakeIoLoop()
        self.bus = FakeMmioBus()
        self.irq = IrqLine()
        self.dev = device or VirtioRng()
        self.pci = VirtioPci(self.dev, slot=SLOT, bar_address=BAR, memory=self.mem,
                             mmio_bus=self.bus, vm=self.vm, router=self.router, io_loop=self.io,
                             irq_line=self.irq)
        self.gsi = pci_intx_gsi(SLOT, 0)

    # register access
    def r(self, off, size):
        return self.pci.mmio_read(off, size)

    def w(self, off, size, value):
        self.pci.mmio_write(off, size, value)

    def caps(self):
        """Walk the capability list: [(offset, id)]."""
        out = []
        ptr = self.pci.config_read(CAPABILITIES_POINTER, 1)
        while ptr:
            out.append((ptr, self.pci.config_read(ptr, 1)))
            ptr = self.pci.config_read(ptr + 1, 1)
            assert len(out) < 48
        return out

    def vendor_caps(self):
        """{cfg_type: (offset, cap_len, bar, bar offset, length)}."""
        found = {}
        for off, cap_id in self.caps():
            if cap_id != 0x09:
                continue
            c = self.pci.config_read
            found[c(off + 3, 1)] = (off, c(off + 2, 1), c(off + 4, 1), c(off + 8, 4),
                                    c(off + 12, 4))
        return found

    def msix_cap(self):
        return next(off for off, cap_id in self.caps() if cap_id == CAP_ID_MSIX)

    def enable_msix(self, on=True):
        cap = self.msix_cap()
        ctrl = self.pci.config_read(cap + 2, 2)
        self.pci.config_write(cap + 2, 2, (ctrl | CTRL_ENABLE) if on else (ctrl & ~CTRL_ENABLE))

    def program_vector(self, vector, address=0xFEE00000, data=0x4041, masked=False):
        t = 0x4000 + 16 * vector
        self.w(t, 4, address & 0xFFFFFFFF)
        self.w(t + 4, 4, address >> 32)
        self.w(t + 8, 4, data)
        self.w(t + 12, 4, int(masked))

    def vector_fd(self, vector):
        return self.vm.fd_for_gsi(self.router.allocated[vector])

    def kick_fd(self, index):
        addr = BAR + NOTIFY + 4 * index
        return next(fd for fd, a, length, deassign in self.vm.ioeventfds
                    if a == addr and not deassign)

    def init(self, features=1 << VERSION_1, queue_vector=None, config_vector=None,
             size=16):
        """The Linux virtio_pci_modern probe sequence; returns the queue's Driver."""
        self.w(STATUS_REG, 1, 0)
        self.w(STATUS_REG, 1, ACK)
        self.w(STATUS_REG, 1, ACK | DRIVER)
        for sel in (0, 1):
            self.w(GFSELECT, 4, sel)
            self.w(GF, 4, features >> (32 * sel) & 0xFFFFFFFF)
        self.w(STATUS_REG, 1, ACK | DRIVER | FEATURES_OK)
        assert self.r(STATUS_REG, 1) & FEATURES_OK
        if config_vector is not None:
            self.w(MSIX_CONFIG, 2, config_vector)
        drv = Driver(self.mem, size)
        self.w(Q_SELECT, 2, 0)
        self.w(Q_SIZE, 2, size)
        if queue_vector is not None:
            self.w(Q_MSIX, 2, queue_vector)
        self.w(Q_DESCLO, 4, drv.desc_addr)
        self.w(Q_DESCHI, 4, 0)
        self.w(Q_AVAILLO, 4, drv.avail_addr)
        self.w(Q_AVAILHI, 4, 0)
        self.w(Q_USEDLO, 4, drv.used_addr)
        self.w(Q_USEDHI, 4, 0)
        self.w(Q_ENABLE, 2, 1)
        self.w(STATUS_REG, 1, ACK | DRIVER | FEATURES_OK | DRIVER_OK)
        assert self.r(STATUS_REG, 1) == ACK | DRIVER | FEATURES_OK | DRIVER_OK
        self.irq.calls.clear()          # the initial reset lowered the line
        return drv

    def kick_and_run(self, index=0):
        """Guest writes the notify register; the I/O thread's handler runs the device."""
        self.w(NOTIFY + 4 * index, 2, index)
        fd = self.kick_fd(index)
        self.io.handlers[fd]()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.pci.close()


# --- identity and capabilities ----------------------------------------------------------------

def test_identity(rig):
    c = rig.pci.config_read
    assert c(0x00, 2) == 0x1AF4
    assert c(0x02, 2) == 0x1040 + lib.VIRTIO_ID_RNG
    assert c(0x08, 1) == 1                       # revision 1: modern only
    assert c(0x2C, 2) == 0x1AF4
    assert c(0x2E, 2) >= 0x40
    assert c(0x3D, 1) == 1                       # INTA#
    assert c(STATUS, 2) & STATUS_CAP_LIST


def test_block_device_id(tmp_path):
    from pyvisor.devices.virtio.blk import DiskSpec, VirtioBlk
    path = tmp_path / "d.img"
    path.write_bytes(bytes(4096))
    r = Rig(VirtioBlk(DiskSpec(str(path))))
    try:
        assert r.pci.config_read(0x02, 2) == 0x1042
        assert r.pci.config_read(0x0B, 1) == 0x01      # mass storage
        _, _, bar, off, length = r.vendor_caps()[lib.VIRTIO_PCI_CAP_DEVICE_CFG]
        assert length >= 60
        assert r.r(off, 8) == 8                        # capacity in sectors
    finally:
        r.pci.close()


def test_bar_is_a_64_bit_memory_bar_at_the_given_address(rig):
    c = rig.pci.config_read
    lo, hi = c(BAR0, 4), c(BAR0 + 4, 4)
    assert lo & 0x7 == 0x4                       # memory, 64-bit
    assert (hi << 32 | lo) & ~0xF == BAR
    assert c(COMMAND, 2) & COMMAND_MEMORY
    assert rig.bus.mapped == {BAR: (BAR_SIZE, rig.pci)}


def test_capability_list_has_the_virtio_structures(rig):
    caps = rig.vendor_caps()
    assert set(caps) == {lib.VIRTIO_PCI_CAP_COMMON_CFG, lib.VIRTIO_PCI_CAP_NOTIFY_CFG,
                         lib.VIRTIO_PCI_CAP_ISR_CFG, lib.VIRTIO_PCI_CAP_DEVICE_CFG,
                         lib.VIRTIO_PCI_CAP_PCI_CFG}
    off, cap_len, bar, offset, length = caps[lib.VIRTIO_PCI_CAP_COMMON_CFG]
    assert (cap_len, bar, offset) == (16, 0, 0)
    assert length >= 0x38                     # struct virtio_pci_common_cfg (1.0 part)
    off, cap_len, bar, offset, length = caps[lib.VIRTIO_PCI_CAP_NOTIFY_CFG]
    assert (cap_len, bar, offset) == (20, 0, NOTIFY)
    multiplier = rig.pci.config_read(off + 16, 4)
    assert multiplier == 4
    # every queue's notify address fits: queue_notify_off * multiplier + 2 <= length
    nq = rig.r(NUMQ, 2)
    for q in range(nq):
        rig.w(Q_SELECT, 2, q)
        assert rig.r(Q_NOFF, 2) * multiplier + 2 <= length
    off, cap_len, bar, offset, length = caps[lib.VIRTIO_PCI_CAP_ISR_CFG]
    assert (cap_len, bar, offset, length) == (16, 0, 0x1000, 1)
    off, cap_len, bar, offset, length = caps[lib.VIRTIO_PCI_CAP_DEVICE_CFG]
    assert (cap_len, bar, offset) == (16, 0, 0x2000) and length >= 1
    off, cap_len, bar, offset, length = caps[lib.VIRTIO_PCI_CAP_PCI_CFG]
    assert cap_len == 20
    # all regions lie inside the BAR and do not overlap
    regions = sorted((o, o + n) for t, (_, _, _, o, n) in caps.items()
                     if t != lib.VIRTIO_PCI_CAP_PCI_CFG)
    assert all(a[1] <= b[0] for a, b in zip(regions, regions[1:]))
    assert regions[-1][1] <= BAR_SIZE


def test_msix_capability(rig):
    cap = rig.msix_cap()
    c = rig.pci.config_read
    table_size = (c(cap + 2, 2) & 0x7FF) + 1
    assert table_size == len(rig.dev.queues) + 1
    table, pba = c(cap + 4, 4), c(cap + 8, 4)
    assert table & 7 == 0 and pba & 7 == 0       # both in BAR 0
    assert table & ~7 == 0x4000 and pba & ~7 == 0x5000
    assert not c(cap + 2, 2) & CTRL_ENABLE
    # one GSI and irqfd per vector
    assert len(rig.router.allocated) == table_size
    assert sorted(g for _, g, _ in rig.vm.irqfds) == rig.router.allocated


def test_capabilities_are_read_only(rig):
    off, *_ = rig.vendor_caps()[lib.VIRTIO_PCI_CAP_COMMON_CFG]
    before = [rig.pci.config_read(off + i, 4) for i in range(0, 16, 4)]
    for i in range(0, 16, 4):
        rig.pci.config_write(off + i, 4, 0xFFFFFFFF)
    assert [rig.pci.config_read(off + i, 4) for i in range(0, 16, 4)] == before


# --- common configuration ---------------------------------------------------------------------

def test_device_feature_select_and_read(rig):
    f = rig.dev.device_features
    rig.w(DFSELECT, 4, 0)
    assert rig.r(DF, 4) == f & 0xFFFFFFFF
    rig.w(DFSELECT, 4, 1)
    assert rig.r(DFSELECT, 4) == 1
    assert rig.r(DF, 4) == f >> 32
    assert rig.r(DF, 4) & 1                       # VERSION_1 is bit 32
    rig.w(DFSELECT, 4, 2)
    assert rig.r(DF, 4) == 0


def test_driver_features_write(rig):
    rig.w(STATUS_REG, 1, ACK | DRIVER)
    rig.w(GFSELECT, 4, 0)
    rig.w(GF, 4, 1 << lib.VIRTIO_RING_F_EVENT_IDX)
    rig.w(GFSELECT, 4, 1)
    rig.w(GF, 4, 1)
    assert rig.dev.driver_features == 1 << VERSION_1 | 1 << lib.VIRTIO_RING_F_EVENT_IDX
    assert rig.r(GF, 4) == 1
    rig.w(GFSELECT, 4, 0)
    assert rig.r(GF, 4) == 1 << lib.VIRTIO_RING_F_EVENT_IDX
    rig.w(GFSELECT, 4, 5)                         # no such word: ignored
    rig.w(GF, 4, 0xFFFFFFFF)
    assert rig.dev.driver_features == 1 << VERSION_1 | 1 << lib.VIRTIO_RING_F_EVENT_IDX
    # frozen after FEATURES_OK
    rig.w(STATUS_REG, 1, ACK | DRIVER | FEATURES_OK)
    assert rig.r(STATUS_REG, 1) & FEATURES_OK
    rig.w(GFSELECT, 4, 0)
    rig.w(GF, 4, 0)
    assert rig.dev.driver_features >> lib.VIRTIO_RING_F_EVENT_IDX & 1


def test_features_ok_refused_reads_back_clear(rig):
    rig.w(STATUS_REG, 1, ACK | DRIVER)
    rig.w(GFSELECT, 4, 0)
    rig.w(GF, 4, 1 << lib.VIRTIO_RING_F_EVENT_IDX)     # no VERSION_1
    rig.w(STATUS_REG, 1, ACK | DRIVER | FEATURES_OK)
    assert not rig.r(STATUS_REG, 1) & FEATURES_OK


def test_num_queues_and_queue_registers(rig):
    assert rig.r(NUMQ, 2) == 1
    rig.w(Q_SELECT, 2, 0)
    assert rig.r(Q_SELECT, 2) == 0
    assert rig.r(Q_SIZE, 2) == 64                 # starts at the maximum
    rig.w(Q_SIZE, 2, 32)
    assert rig.r(Q_SIZE, 2) == 32
    assert rig.r(Q_NOFF, 2) == 0
    rig.w(Q_DESCLO, 4, 0x12345000)
    rig.w(Q_DESCHI, 4, 0x1)
    rig.w(Q_AVAILLO, 4, 0x2000)
    rig.w(Q_AVAILHI, 4, 0x0)
    rig.w(Q_USEDLO, 4, 0x3000)
    rig.w(Q_USEDHI, 4, 0xABCD)
    q = rig.dev.queues[0]
    assert (q.desc_addr, q.driver_addr, q.device_addr) == (0x1_12345000, 0x2000,
                                                           0xABCD_00003000)
    assert (rig.r(Q_DESCLO, 4), rig.r(Q_DESCHI, 4)) == (0x12345000, 1)
    assert rig.r(Q_USEDHI, 4) == 0xABCD
    # a 64-bit access at the low half
    rig.w(Q_AVAILLO, 8, 0x5_00006000)
    assert q.driver_addr == 0x5_00006000
    assert rig.r(Q_AVAILLO, 8) == 0x5_00006000
    assert rig.r(Q_ENABLE, 2) == 0
    rig.w(Q_ENABLE, 2, 1)
    assert rig.r(Q_ENABLE, 2) == 1 and q.enabled


def test_selecting_a_missing_queue(rig):
    rig.w(Q_SELECT, 2, 1)
    assert rig.r(Q_SIZE, 2) == 0
    assert rig.r(Q_MSIX, 2) == NO_VECTOR
    rig.w(Q_SIZE, 2, 8)
    rig.w(Q_DESCLO, 4, 0x1000)
    assert rig.dev.queues[0].desc_addr == 0 and rig.dev.queues[0].size == 64


def test_queue_registers_frozen_after_driver_ok(rig):
    drv = rig.init()
    q = rig.dev.queues[0]
    rig.w(Q_DESCLO, 4, 0x40000)
    rig.w(Q_SIZE, 2, 4)
    assert q.desc_addr == drv.desc_addr and q.size == 16


def test_msix_vector_registers(rig):
    nvec = len(rig.dev.queues) + 1
    rig.w(MSIX_CONFIG, 2, 0)
    assert rig.r(MSIX_CONFIG, 2) == 0
    rig.w(MSIX_CONFIG, 2, nvec - 1)
    assert rig.r(MSIX_CONFIG, 2) == nvec - 1
    rig.w(MSIX_CONFIG, 2, nvec)                    # out of range: no vector
    assert rig.r(MSIX_CONFIG, 2) == NO_VECTOR
    rig.w(Q_SELECT, 2, 0)
    assert rig.r(Q_MSIX, 2) == NO_VECTOR
    rig.w(Q_MSIX, 2, 1)
    assert rig.r(Q_MSIX, 2) == 1
    rig.w(Q_MSIX, 2, nvec)
    assert rig.r(Q_MSIX, 2) == NO_VECTOR
    rig.w(Q_MSIX, 2, 0x1234)
    assert rig.r(Q_MSIX, 2) == NO_VECTOR
    rig.w(Q_MSIX, 2, NO_VECTOR)
    assert rig.r(Q_MSIX, 2) == NO_VECTOR


def test_config_generation_and_status(rig):
    rig.dev.config_generation = 7
    assert rig.r(CFGGEN, 1) == 7
    rig.w(STATUS_REG, 1, ACK)
    assert rig.r(STATUS_REG, 1) == ACK == rig.dev.status


@pytest.mark.parametrize("size, value", [(1, 0), (2, 0x100), (2, 0xFF00), (4, 0x10000)])
def test_reset_through_status(rig, size, value):
    """Only the low byte is the status: any width of write that leaves it 0 resets the
    transport's state (selectors, vectors) as well as the device."""
    rig.init(queue_vector=1, config_vector=0)
    rig.w(DFSELECT, 4, 1)
    rig.w(STATUS_REG, size, value)
    assert rig.r(STATUS_REG, 1) == 0
    assert rig.r(DFSELECT, 4) == 0
    assert rig.r(MSIX_CONFIG, 2) == NO_VECTOR
    assert rig.r(Q_MSIX, 2) == NO_VECTOR
    assert rig.r(Q_ENABLE, 2) == 0
    assert rig.r(Q_DESCLO, 4) == 0
    assert not rig.dev.queues[0].ready


# --- notifications ----------------------------------------------------------------------------

def test_kick_eventfds_are_ioeventfds_on_the_notify_addresses(rig):
    assigned = [(a, n) for fd, a, n, deassign in rig.vm.ioeventfds if not deassign]
    assert assigned == [(BAR + NOTIFY + 4 * q, 2) for q in range(len(rig.dev.queues))]
    fd = rig.kick_fd(0)
    assert fd in rig.io.handlers


def test_notify_write_signals_the_kick_eventfd(rig):
    fd = rig.kick_fd(0)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)
    rig.w(NOTIFY, 2, 0)
    assert os.eventfd_read(fd) == 1
    rig.w(NOTIFY, 4, 0)                            # another width: same path
    rig.w(NOTIFY, 1, 0)
    assert os.eventfd_read(fd) == 2
    rig.w(NOTIFY + 4 * 5, 2, 5)                    # no such queue: nothing
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)


def test_io_loop_handler_runs_the_queue(rig):
    drv = rig.init()
    buf = drv.alloc(32)
    head = drv.add([Buf(buf, 32, True)])
    rig.kick_and_run()
    assert drv.get_used() == [(head, 32)]
    assert drv.read(buf, 32) != bytes(32)


# --- interrupts -------------------------------------------------------------------------------

def test_intx_and_isr_read_to_clear(rig):
    drv = rig.init()
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert rig.irq.calls == [(rig.gsi, True)]
    assert rig.r(0x1000, 1) == 1                   # queue interrupt
    assert rig.irq.level[rig.gsi] is False
    assert rig.r(0x1000, 1) == 0                   # cleared by the read
    assert rig.irq.level[rig.gsi] is False


def test_intx_config_interrupt(rig):
    drv = rig.init()
    drv.write_desc(0, 0x7FFF0000, 8, lib.VRING_DESC_F_WRITE)   # outside RAM
    drv.publish(0)
    rig.kick_and_run()
    assert rig.r(STATUS_REG, 1) & NEEDS_RESET
    assert (rig.gsi, True) in rig.irq.calls
    assert rig.r(0x1000, 1) & lib.VIRTIO_PCI_ISR_CONFIG
    assert rig.irq.level[rig.gsi] is False


def test_intx_disable_keeps_the_line_low(rig):
    drv = rig.init()
    rig.pci.config_write(COMMAND, 2, COMMAND_MEMORY | COMMAND_INTX_DISABLE)
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert (rig.gsi, True) not in rig.irq.calls
    assert rig.r(0x1000, 1) == 1


def test_reset_lowers_intx_and_clears_isr(rig):
    drv = rig.init()
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert rig.irq.level[rig.gsi] is True
    rig.w(STATUS_REG, 1, 0)
    assert rig.irq.level[rig.gsi] is False
    assert rig.r(0x1000, 1) == 0


def test_interrupts_go_to_intx_while_msix_is_disabled_then_to_msix(rig):
    drv = rig.init(queue_vector=1, config_vector=0)
    rig.program_vector(0, data=0x30)
    rig.program_vector(1, data=0x31)
    qfd, cfd = rig.vector_fd(1), rig.vector_fd(0)
    # MSI-X off: INTx even though the vectors are set
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert rig.irq.calls == [(rig.gsi, True)]
    assert rig.r(0x1000, 1) == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(qfd)
    # MSI-X on: the queue's vector, no INTx, no ISR bit
    rig.irq.calls.clear()
    rig.enable_msix()
    assert rig.pci.msix.enabled
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert os.eventfd_read(qfd) == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(cfd)
    assert rig.irq.calls == []
    assert rig.r(0x1000, 1) == 0
    # the route of each vector is what the guest programmed
    assert rig.router.routes[rig.router.allocated[1]] == (0xFEE00000, 0x31)
    # a config interrupt goes to the config vector
    drv.write_desc(5, 0x7FFF0000, 8, lib.VRING_DESC_F_WRITE)
    drv.publish(5)
    rig.kick_and_run()
    assert os.eventfd_read(cfd) == 1
    assert (rig.gsi, True) not in rig.irq.calls
    # MSI-X off again: back to INTx
    rig.enable_msix(False)
    assert not rig.pci.msix.enabled


def test_msix_enabled_with_no_vector_means_no_interrupt(rig):
    drv = rig.init()                              # vectors left at NO_VECTOR
    rig.enable_msix()
    for v in range(2):
        rig.program_vector(v)
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert drv.used_idx == 1
    assert rig.irq.calls == []
    assert rig.r(0x1000, 1) == 0
    for v in range(2):
        with pytest.raises(BlockingIOError):
            os.eventfd_read(rig.vector_fd(v))


def test_masked_vector_is_pending_in_the_pba(rig):
    drv = rig.init(queue_vector=1)
    rig.enable_msix()
    rig.program_vector(1, masked=True)
    drv.add([Buf(drv.alloc(8), 8, True)])
    rig.kick_and_run()
    assert rig.r(0x5000, 8) == 1 << 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(rig.vector_fd(1))
    rig.w(0x4000 + 16 + 12, 4, 0)                # unmask
    assert os.eventfd_read(rig.vector_fd(1)) == 1
    assert rig.r(0x5000, 8) == 0


def test_msix_table_through_the_bar(rig):
    rig.w(0x4000 + 16, 4, 0xFEE01000)
    rig.w(0x4000 + 16 + 8, 4, 0x45)
    assert rig.r(0x4000 + 16, 4) == 0xFEE01000
    assert rig.r(0x4000 + 16 + 8, 4) == 0x45
    assert rig.r(0x4000 + 12, 4) == 1             # vector 0 masked at power-on
    assert rig.router.routes[rig.router.allocated[1]] == (0xFEE01000, 0x45)


# --- BAR moves --------------------------------------------------------------------------------

def test_bar_move_follows_the_guest(rig):
    new = 0xC0100000
    old_fd = rig.kick_fd(0)
    rig.bus.calls.clear()
    rig.vm.ioeventfds.clear()
    rig.pci.config_write(BAR0, 4, new)            # memory decoding is on
    assert rig.bus.calls == [("unregister", BAR), ("register", new, BAR_SIZE)]
    assert rig.bus.mapped == {new: (BAR_SIZE, rig.pci)}
    assert (old_fd, BAR + NOTIFY, 2, True) in rig.vm.ioeventfds
    assert (old_fd, new + NOTIFY, 2, False) in rig.vm.ioeventfds
    assert len(rig.vm.ioeventfds) == 2 * len(rig.dev.queues)
    # and the high half
    rig.bus.calls.clear()
    rig.pci.config_write(BAR0 + 4, 4, 0x2)
    assert rig.bus.calls == [("unregister", new), ("register", 0x2_00000000 | new, BAR_SIZE)]


def test_bar_sizing_with_decoding_off_keeps_the_mapping(rig):
    """Linux's __pci_read_base: decoding off, write ones, read, restore, decoding on."""
    rig.bus.calls.clear()
    rig.vm.ioeventfds.clear()
    rig.pci.config_write(COMMAND, 2, 0)
    rig.pci.config_write(BAR0, 4, 0xFFFFFFFF)
    rig.pci.config_write(BAR0 + 4, 4, 0xFFFFFFFF)
    size_lo = rig.pci.config_read(BAR0, 4)
    size_hi = rig.pci.config_read(BAR0 + 4, 4)
    assert ((size_hi << 32 | size_lo) & ~0xF) == (~(BAR_SIZE - 1)) & (2**64 - 1)
    rig.pci.config_write(BAR0, 4, BAR & 0xFFFFFFFF)
    rig.pci.config_write(BAR0 + 4, 4, BAR >> 32)
    rig.pci.config_write(COMMAND, 2, COMMAND_MEMORY)
    assert rig.bus.calls == []
    assert rig.vm.ioeventfds == []
    assert rig.bus.mapped == {BAR: (BAR_SIZE, rig.pci)}


def test_bar_move_while_decoding_is_off_applies_when_it_comes_back(rig):
    new = 0xD0000000
    rig.bus.calls.clear()
    rig.pci.config_write(COMMAND, 2, 0)
    rig.pci.config_write(BAR0, 4, new)
    assert rig.bus.calls == []
    rig.pci.config_write(COMMAND, 2, COMMAND_MEMORY)
    assert rig.bus.calls == [("unregister", BAR), ("register", new, BAR_SIZE)]
    # the kick eventfd now listens on the new notify address
    fd = next(fd for fd, a, n, d in rig.vm.ioeventfds if a == new + NOTIFY and not d)
    assert fd in rig.io.handlers


# --- the PCI configuration access window ------------------------------------------------------

def window(rig, offset, length, bar=0):
    cap, *_ = rig.vendor_caps()[lib.VIRTIO_PCI_CAP_PCI_CFG]
    rig.pci.config_write(cap + 4, 1, bar)
    rig.pci.config_write(cap + 8, 4, offset)
    rig.pci.config_write(cap + 12, 4, length)
    return cap + 16


def test_pci_cfg_window_reads_common_config(rig):
    data = window(rig, NUMQ, 2)
    assert rig.pci.config_read(data, 2) == 1
    data = window(rig, DF, 4)
    assert rig.pci.config_read(data, 4) == rig.dev.device_features & 0xFFFFFFFF
    data = window(rig, STATUS_REG, 1)
    assert rig.pci.config_read(data, 1) == 0


def test_pci_cfg_window_writes_common_config(rig):
    data = window(rig, DFSELECT, 4)
    rig.pci.config_write(data, 4, 1)
    assert rig.r(DFSELECT, 4) == 1
    data = window(rig, DF, 4)
    assert rig.pci.config_read(data, 4) == rig.dev.device_features >> 32
    data = window(rig, STATUS_REG, 1)
    rig.pci.config_write(data, 1, ACK)
    assert rig.dev.status == ACK


def test_pci_cfg_window_other_bar_or_length_reads_config_space(rig):
    cap, *_ = rig.vendor_caps()[lib.VIRTIO_PCI_CAP_PCI_CFG]
    data = window(rig, NUMQ, 2, bar=1)
    assert rig.pci.config_read(data, 4) == 0
    data = window(rig, NUMQ, 3)
    assert rig.pci.config_read(data, 4) == 0
