"""KVM's coalesced MMIO/PIO ring: writes to registers that may wait do not exit.

Registered zones (KVM_REGISTER_COALESCED_MMIO, ports with KVM_CAP_COALESCED_PIO) are
written into one ring per VM instead of exiting: the CMOS index port, whose value only
matters to the next data-port access, and the delay ports nothing claims, whose writes
do nothing. The queued writes must reach the devices in order before anything after them
is handled: pv_run serves those its port table serves and returns PV_EXIT_COALESCED at
the first one Python must see; `drain` hands those to the write functions an exit would
use, and takes each off the ring only once its device has it, so no other vCPU's exit
overtakes it (that vCPU finds it still queued and waits here). Every vCPU drains before
it parks, so a paused machine (a snapshot, a hook change) has an empty ring.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from .._native import ffi, lib
from ..kvm.ioctl import ioctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..kvm.system import Kvm
    from ..kvm.vm import Vm


class CoalescedRing:
    """The ring and the zones registered on it; `native` goes into every vCPU's pv_exit."""

    def __init__(self, vm_fd: int, ring_page, page_size: int) -> None:
        self._vm_fd = vm_fd
        self.native = ffi.new("struct pv_coalesced *")
        lib.pv_coalesced_init(self.native, ring_page, page_size)
        self._write = ffi.new("struct pv_write *")
        self._lock = threading.Lock()
        self._zones: frozenset[int] = frozenset()

    @classmethod
    def open(cls, kvm: "Kvm", vm: "Vm", run_size: int) -> "CoalescedRing | None":
        """The VM's ring, mapped in its first vCPU's kvm_run area, or None when this KVM
        cannot coalesce port writes."""
        page = os.sysconf("SC_PAGE_SIZE")   # as mmap.PAGESIZE, without importing mmap
        offset = kvm.check_extension(lib.KVM_CAP_COALESCED_MMIO)   # the ring's page offset
        if not offset or not kvm.check_extension(lib.KVM_CAP_COALESCED_PIO) \
                or (offset + 1) * page > run_size:
            return None
        return cls(vm.fd, ffi.cast("char *", vm.vcpus[0].kvm_run) + offset * page, page)

    @property
    def zones(self) -> frozenset[int]:
        return self._zones

    @property
    def drained(self) -> int:
        """Writes taken off the ring so far."""
        return self.native.drained

    def set_ports(self, ports: Iterable[int]) -> None:
        """Coalesce writes to exactly these ports (the vCPUs are paused, so the ring is
        empty: a port that stops being coalesced has nothing of it queued)."""
        wanted = frozenset(ports)
        for port in sorted(self._zones - wanted):
            self._zone(lib.KVM_UNREGISTER_COALESCED_MMIO, port, "KVM_UNREGISTER_COALESCED_MMIO")
            self._zones -= {port}
        for port in sorted(wanted - self._zones):
            self._zone(lib.KVM_REGISTER_COALESCED_MMIO, port, "KVM_REGISTER_COALESCED_MMIO")
            self._zones |= {port}

    def _zone(self, request: int, port: int, name: str) -> None:
        zone = ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": port, "size": 1, "pio": 1})
        ioctl(self._vm_fd, request, zone, name)

    def drain(self, pio_write: Callable[[int, int, int], None],
              mmio_write: Callable[[int, int, int], None], ports, stats) -> None:
        """Dispatch every queued write, in order (counted in stats, the calling vCPU's)."""
        w = self._write
        with self._lock:
            while lib.pv_coalesced_next(self.native, ports, stats, w):
                try:
                    (pio_write if w.pio else mmio_write)(w.addr, w.size, w.value)
                finally:
                    lib.pv_coalesced_done(self.native, stats)
