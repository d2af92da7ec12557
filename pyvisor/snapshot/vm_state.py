"""The VM-wide state KVM keeps in the kernel: both 8259 PICs and the IOAPIC
(KVM_GET/SET_IRQCHIP), the PIT (KVM_GET/SET_PIT2) and kvm-clock (KVM_GET/SET_CLOCK).

An in-place reset (`reset`) sets an interrupt controller only when KVM_GET_IRQCHIP says it
differs from the snapshot's: the get is a VM ioctl that only copies the state out (about
0.3 us here, against 0.5-2.3 us for the set, the IOAPIC's also asking every vCPU to rescan
its redirection table on its next entry). Leaving out a set of equal state is exact: what
KVM_SET_IRQCHIP takes is the whole of what the get returns (for the PICs all of their
registers, edge detection included; for the IOAPIC its registers, redirection table and
IRR), and everything else KVM derives from that state (the PICs' output line, the vCPUs'
EOI-exit bitmaps) already follows from it, since KVM updates it on every change. The
guest does change these chips without pyvisor seeing it (their ports and MMIO are served
in the kernel; interrupts set IRR and ISR), which is why they are read each time rather
than assumed unchanged. The PIT and the clock are always set: the PIT's state holds the
time its counts were loaded (every set loads them anew), and the clock moves on."""
from __future__ import annotations

from dataclasses import dataclass

from .._native import ffi, lib
from ..errors import KvmError
from ..kvm.vcpu import Vcpu
from ..kvm.vm import Vm
from .errors import SnapshotError

CHIPS = (lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE, lib.KVM_IRQCHIP_IOAPIC)
_RESET_STEPS = {lib.PV_RESET_STEP_RUN: "KVM_RUN (completing the pending exit before a restore)",
                lib.PV_RESET_STEP_GET_IRQCHIP: "KVM_GET_IRQCHIP",
                lib.PV_RESET_STEP_SET_IRQCHIP: "KVM_SET_IRQCHIP",
                lib.PV_RESET_STEP_PIT2: "KVM_SET_PIT2", lib.PV_RESET_STEP_CLOCK: "KVM_SET_CLOCK"}


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
        self._now = ffi.new("struct kvm_irqchip[]", len(self.irqchips))
        self._reset = ffi.new("struct pv_reset_vm *", {
            "chips": self._chips, "now": self._now, "nchips": len(self.irqchips),
            "pit": self._pit, "clock": self._clock})

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

    def reset(self, vm: Vm, in_exit: Vcpu | None) -> None:
        """An in-place reset's VM part, in one crossing (pv_reset_vm): first the exit
        in_exit's vCPU is in is finished (Vcpu.complete_exit), then the chips that differ,
        the PIT and the clock."""
        reset = self._reset
        reset.vm_fd = vm.fd
        if in_exit is None:
            ret = lib.pv_reset_vm(-1, ffi.NULL, reset)
        else:
            ret = lib.pv_reset_vm(in_exit.fd, in_exit.kvm_run, reset)
            if reset.failed != lib.PV_RESET_STEP_RUN:
                in_exit.exit_completed()
        if ret < 0:
            raise KvmError(_RESET_STEPS[reset.failed], -ret)

    @property
    def chips_set(self) -> int:
        """How many interrupt controllers the last reset set (the others were equal)."""
        return self._reset.chips_set

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
