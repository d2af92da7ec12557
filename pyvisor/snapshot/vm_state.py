"""The VM-wide state KVM keeps in the kernel: both 8259 PICs and the IOAPIC
(KVM_GET/SET_IRQCHIP), the PIT (KVM_GET/SET_PIT2) and kvm-clock (KVM_GET/SET_CLOCK)."""
from __future__ import annotations

from dataclasses import dataclass

from .._native import ffi, lib
from ..kvm.vm import Vm
from .errors import SnapshotError

CHIPS = (lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE, lib.KVM_IRQCHIP_IOAPIC)


@dataclass
class VmState:
    irqchips: tuple[bytes, ...]
    pit: bytes
    clock: int

    @classmethod
    def capture(cls, vm: Vm) -> "VmState":
        return cls(tuple(vm.get_irqchip(chip) for chip in CHIPS), vm.get_pit2(), vm.get_clock())

    def apply(self, vm: Vm) -> None:
        for chip in self.irqchips:
            vm.set_irqchip(chip)
        vm.set_pit2(self.pit)
        vm.set_clock(self.clock)

    def to_record(self) -> dict:
        return {"irqchips": list(self.irqchips), "pit": self.pit, "clock": self.clock}

    @classmethod
    def from_record(cls, record: dict) -> "VmState":
        try:
            state = cls(tuple(bytes(c) for c in record["irqchips"]), bytes(record["pit"]),
                        int(record["clock"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"the snapshot's VM state is malformed ({e})") from None
        chip, pit = ffi.sizeof("struct kvm_irqchip"), ffi.sizeof("struct kvm_pit_state2")
        if len(state.irqchips) != len(CHIPS) or any(len(c) != chip for c in state.irqchips) \
                or len(state.pit) != pit or not 0 <= state.clock < 1 << 64:
            raise SnapshotError("the snapshot's interrupt controller or PIT state does not fit "
                                "this build of pyvisor")
        return state
