"""The VM-wide state KVM keeps in the kernel: both 8259 PICs and the IOAPIC
(KVM_GET/SET_IRQCHIP), the PIT (KVM_GET/SET_PIT2) and kvm-clock (KVM_GET/SET_CLOCK)."""
from __future__ import annotations

from dataclasses import dataclass

from .._native import ffi, lib
from ..errors import KvmError
from ..kvm.vm import Vm
from .errors import SnapshotError

CHIPS = (lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE, lib.KVM_IRQCHIP_IOAPIC)


@dataclass
class VmState:
    irqchips: tuple[bytes, ...]
    pit: bytes
    clock: int

    def __post_init__(self) -> None:
        # The ioctl arguments, built once: a reset loop sets them over and over.
        self._chips = ffi.new("struct kvm_irqchip[]", len(self.irqchips))
        for i, raw in enumerate(self.irqchips):
            ffi.buffer(ffi.addressof(self._chips, i))[:] = raw
        self._pit = ffi.new("struct kvm_pit_state2 *")
        ffi.buffer(self._pit)[:] = self.pit
        self._clock = ffi.new("struct kvm_clock_data *", {"clock": self.clock})
        self._failed = ffi.new("uint32_t *")

    @classmethod
    def capture(cls, vm: Vm) -> "VmState":
        return cls(tuple(vm.get_irqchip(chip) for chip in CHIPS), vm.get_pit2(), vm.get_clock())

    def apply(self, vm: Vm) -> None:
        """KVM_SET_IRQCHIP for each chip, KVM_SET_PIT2, KVM_SET_CLOCK: one crossing."""
        ret = lib.pv_set_vm_state(vm.fd, self._chips, len(self.irqchips), self._pit,
                                  self._clock, self._failed)
        if ret < 0:
            names = ["KVM_SET_IRQCHIP"] * len(self.irqchips) + ["KVM_SET_PIT2", "KVM_SET_CLOCK"]
            raise KvmError(names[self._failed[0]], -ret)

    def to_record(self) -> dict:
        return {"irqchips": list(self.irqchips), "pit": self.pit, "clock": self.clock}

    @classmethod
    def from_record(cls, record: dict) -> "VmState":
        try:
            chips, pit = tuple(bytes(c) for c in record["irqchips"]), bytes(record["pit"])
            clock = int(record["clock"])
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"the snapshot's VM state is malformed ({e})") from None
        chip_size, pit_size = ffi.sizeof("struct kvm_irqchip"), ffi.sizeof("struct kvm_pit_state2")
        if len(chips) != len(CHIPS) or any(len(c) != chip_size for c in chips) \
                or len(pit) != pit_size or not 0 <= clock < 1 << 64:
            raise SnapshotError("the snapshot's interrupt controller or PIT state does not fit "
                                "this build of pyvisor")
        return cls(chips, pit, clock)
