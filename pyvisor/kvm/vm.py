"""A KVM virtual machine: memory slots, the in-kernel interrupt controllers and PIT,
interrupt lines, and the eventfd plumbing (ioeventfd, irqfd, GSI routing)."""
from __future__ import annotations

import os
from collections.abc import Sequence

from .._native import ffi, lib
from ..errors import KvmError
from ..value import Value
from .ioctl import ioctl, ioctl_int
from .vcpu import Vcpu

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .system import Kvm


class IrqchipRoute(Value):
    """A GSI routed to a pin of the in-kernel PIC or IOAPIC."""

    __slots__ = ("gsi", "irqchip", "pin")

    def __init__(self, gsi: int, irqchip: int, pin: int) -> None:
        self.gsi, self.irqchip, self.pin = gsi, irqchip, pin


class MsiRoute(Value):
    """A GSI that, when raised, sends this MSI message (used by MSI-X vectors)."""

    __slots__ = ("gsi", "address", "data")

    def __init__(self, gsi: int, address: int, data: int) -> None:
        self.gsi, self.address, self.data = gsi, address, data


class Vm:
    """A VM fd. Closing it also closes every vCPU it created."""

    def __init__(self, kvm: "Kvm", fd: int):
        self.kvm = kvm
        self.fd = fd
        self.vcpus: list[Vcpu] = []
        self._run_size = kvm.vcpu_mmap_size()

    def set_user_memory_region(self, slot: int, gpa: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        """Map host memory at host_addr into the guest at gpa (size 0 deletes the slot)."""
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": gpa,
            "memory_size": size, "userspace_addr": host_addr})
        ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")

    def set_tss_addr(self, addr: int) -> None:
        """Three pages of guest-physical space KVM needs on VT-x for real-mode emulation."""
        ioctl_int(self.fd, lib.KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, addr: int) -> None:
        addr_p = ffi.new("uint64_t *", addr)
        ioctl(self.fd, lib.KVM_SET_IDENTITY_MAP_ADDR, addr_p, "KVM_SET_IDENTITY_MAP_ADDR")

    def create_irqchip(self) -> None:
        """In-kernel 8259 PICs, IOAPIC and per-vCPU LAPICs."""
        ioctl_int(self.fd, lib.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def create_pit2(self, speaker_dummy: bool = True) -> None:
        """In-kernel i8254 PIT; with speaker_dummy KVM also answers port 0x61."""
        config = ffi.new("struct kvm_pit_config *",
                         {"flags": lib.KVM_PIT_SPEAKER_DUMMY if speaker_dummy else 0})
        ioctl(self.fd, lib.KVM_CREATE_PIT2, config, "KVM_CREATE_PIT2")

    def irq_line(self, irq: int, level: bool) -> None:
        """Drive a GSI (with the default routing: PIC and IOAPIC pin) to a level."""
        ret = lib.pv_irq_line(self.fd, irq, int(level))
        if ret < 0:
            raise KvmError("KVM_IRQ_LINE", -ret)

    def ioeventfd(self, fd: int, addr: int, length: int, *, pio: bool = False,
                  datamatch: int | None = None, deassign: bool = False) -> None:
        """Let a guest write to addr signal fd inside KVM, without an exit to userspace."""
        flags = lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        if deassign:
            flags |= lib.KVM_IOEVENTFD_FLAG_DEASSIGN
        arg = ffi.new("struct kvm_ioeventfd *", {
            "datamatch": datamatch or 0, "addr": addr, "len": length, "fd": fd, "flags": flags})
        ioctl(self.fd, lib.KVM_IOEVENTFD, arg, "KVM_IOEVENTFD")

    def irqfd(self, fd: int, gsi: int, *, deassign: bool = False) -> None:
        """Let a write to eventfd fd raise gsi inside KVM (edge: raise and lower)."""
        arg = ffi.new("struct kvm_irqfd *", {
            "fd": fd, "gsi": gsi, "flags": lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0})
        ioctl(self.fd, lib.KVM_IRQFD, arg, "KVM_IRQFD")

    def set_gsi_routing(self, routes: Sequence[IrqchipRoute | MsiRoute]) -> None:
        """Replace the whole GSI routing table (KVM has no incremental update)."""
        table = ffi.new("struct kvm_irq_routing *", {"nr": len(routes), "entries": len(routes)})
        for entry, route in zip(table.entries, routes):
            entry.gsi = route.gsi
            if isinstance(route, IrqchipRoute):
                entry.type = lib.KVM_IRQ_ROUTING_IRQCHIP
                entry.u.irqchip.irqchip = route.irqchip
                entry.u.irqchip.pin = route.pin
            else:
                entry.type = lib.KVM_IRQ_ROUTING_MSI
                entry.u.msi.address_lo = route.address & 0xFFFFFFFF
                entry.u.msi.address_hi = route.address >> 32
                entry.u.msi.data = route.data
        ioctl(self.fd, lib.KVM_SET_GSI_ROUTING, table, "KVM_SET_GSI_ROUTING")

    # --- in-kernel device state (snapshots) -------------------------------------------
    def get_irqchip(self, chip_id: int) -> bytes:
        """KVM_GET_IRQCHIP: the PIC master, PIC slave or IOAPIC (KVM_IRQCHIP_*), raw."""
        chip = ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        ioctl(self.fd, lib.KVM_GET_IRQCHIP, chip, "KVM_GET_IRQCHIP")
        return bytes(ffi.buffer(chip))

    def set_irqchip(self, state: bytes) -> None:
        chip = ffi.new("struct kvm_irqchip *")
        ffi.buffer(chip)[:] = state
        ioctl(self.fd, lib.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP")

    def get_pit2(self) -> bytes:
        pit = ffi.new("struct kvm_pit_state2 *")
        ioctl(self.fd, lib.KVM_GET_PIT2, pit, "KVM_GET_PIT2")
        return bytes(ffi.buffer(pit))

    def set_pit2(self, state: bytes) -> None:
        pit = ffi.new("struct kvm_pit_state2 *")
        ffi.buffer(pit)[:] = state
        ioctl(self.fd, lib.KVM_SET_PIT2, pit, "KVM_SET_PIT2")

    def get_clock(self) -> int:
        """KVM_GET_CLOCK: kvm-clock's current value in nanoseconds."""
        clock = ffi.new("struct kvm_clock_data *")
        ioctl(self.fd, lib.KVM_GET_CLOCK, clock, "KVM_GET_CLOCK")
        return clock.clock

    def set_clock(self, value: int) -> None:
        """KVM_SET_CLOCK: kvm-clock continues from value (ns) for every vCPU."""
        clock = ffi.new("struct kvm_clock_data *", {"clock": value})
        ioctl(self.fd, lib.KVM_SET_CLOCK, clock, "KVM_SET_CLOCK")

    def create_vcpu(self, index: int) -> Vcpu:
        fd = ioctl_int(self.fd, lib.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
        vcpu = Vcpu(fd, index, self._run_size)
        self.vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Vm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
