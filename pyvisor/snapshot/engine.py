"""Taking a snapshot of a machine and restoring it in place.

A snapshot is taken with every vCPU out of KVM_RUN (the machine paused, or from a hook on
the only vCPU's thread) and every device's lock held, after the devices have finished what
the guest asked of them (`settle`). From a hook in a write's exit it first finishes the
exit, so it is after the write on every KVM; in a read's exit it is before the read (its
value is what the hook has yet to return). Restoring puts back, in this order: the
in-kernel interrupt controllers that differ, PIT and kvm-clock (VmState.reset); the devices
that may have changed since they last matched it (which then drive their interrupt lines
afresh; DeviceSet.restore); guest RAM (only the pages changed since)
and each vCPU, with the fewest vCPU ioctls that give the same state (Vcpu.restore_flags),
in one crossing (pv_reset_guest). A restore from a hook first finishes the exit its vCPU is
in, in the VM state's crossing. The machine stays paused. What
is not part of a snapshot: disk contents (a restore does not undo writes to a disk image),
the ACPI PM timer (host time), the tap's wire.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .._native import ffi, lib
from ..devices.state import DeviceStateError
from ..errors import KvmError, PyvisorError
from ..kvm.system import Kvm
from ..kvm.vm import Vm
from ..memory.guest_memory import GuestMemory
from ..memory.slots import MemorySlots
from ..devices.bus import MmioBus, PioBus
from .devices import DeviceSet, walk
from .errors import SnapshotError
from .memory import DirtyTracker, MemoryImage
from .vcpu_state import KVM_PV_MSRS, MTRR_MSRS, VcpuState, probe_msrs, xsave_size
from .vm_state import VmState


@dataclass(eq=False)
class Snapshot:
    """The whole machine at one instant. `memory` is None for a snapshot that was only
    written to a file."""
    vcpus: list[VcpuState]
    vm: VmState
    devices: dict[str, dict]
    memory: MemoryImage | None
    owner: Any = field(default=None, repr=False)
    # struct pv_reset_vcpu[] for pv_reset_guest, made at the first in-place restore.
    reset_vcpus: Any = field(default=None, repr=False)

    @property
    def pages(self) -> int:
        """Guest pages the snapshot holds (the ones that are not all zero)."""
        return self.memory.pages if self.memory is not None else 0


class Snapshotter:
    """One per machine, made at its first snapshot (which turns dirty logging on)."""

    def __init__(self, kvm: Kvm, vm: Vm, memory: GuestMemory, slots: MemorySlots,
                 pio_bus: PioBus, mmio_bus: MmioBus, *, state: Callable[[], str],
                 accessible: Callable[[int], bool],
                 current_vcpu: Callable[[], int | None], settle_pause: Callable[[], None]) -> None:
        self._kvm, self._vm, self._memory, self._slots = kvm, vm, memory, slots
        self._pio_bus, self._mmio_bus = pio_bus, mmio_bus
        self._state, self._accessible, self._current_vcpu = state, accessible, current_vcpu
        self._settle_pause = settle_pause
        self._tracker: DirtyTracker | None = None
        self._msrs: list[int] | None = None
        self._xsave = xsave_size(kvm)
        self._walked: tuple[tuple[int, int], DeviceSet] | None = None
        self._failed_vcpu = ffi.new("uint32_t *")

    # --- preconditions ----------------------------------------------------------------------
    def _stopped_vcpus(self, doing: str) -> int | None:
        """Check every vCPU is out of KVM_RUN; the index of the calling vCPU, if any."""
        state = self._state()
        if state == "stopped":
            raise SnapshotError(f"cannot {doing}: the machine has stopped")
        me = self._current_vcpu()
        if state == "paused" and me is None:
            self._settle_pause()    # a pause a hook asked for: wait until it holds
        vcpus = self._vm.vcpus
        if me is not None and len(vcpus) == 1:
            return me               # a hook of the only vCPU (the reset loop)
        busy = [v.index for v in vcpus if v.index != me and not self._accessible(v.index)]
        if busy:
            raise SnapshotError(f"cannot {doing} while vCPU {busy[0]} runs: pause the machine "
                                f"first")
        return me

    def devices(self) -> DeviceSet:
        """The device walk, redone only when a bus's registrations change (BARs move,
        watched pages come and go): their generations, not a list rebuilt per restore."""
        key = (self._pio_bus.generation, self._mmio_bus.generation)
        if self._walked is None or self._walked[0] != key:
            self._walked = (key, DeviceSet(walk(self._pio_bus, self._mmio_bus)))
        return self._walked[1]

    def _msr_list(self) -> list[int]:
        if self._msrs is None:
            candidates = self._kvm.msr_index_list() + list(KVM_PV_MSRS) + list(MTRR_MSRS)
            self._msrs = probe_msrs(self._vm.vcpus[0], candidates)
        return self._msrs

    def new_state(self, index: int) -> VcpuState:
        return VcpuState(index, self._msr_list(), self._xsave,
                         self._vm.vcpus[index].get_cpuid())

    # --- taking ---------------------------------------------------------------------------
    def capture(self, with_memory: bool = True) -> Snapshot:
        """The whole machine now; with_memory False leaves guest RAM out (a file save
        writes it straight from the guest's mappings)."""
        me = self._stopped_vcpus("take a snapshot")
        found = self.devices()
        devices = found.devices
        if with_memory and self._tracker is None:
            self._tracker = DirtyTracker(self._vm, self._memory, self._slots)
        with found.held():
            if me is not None:
                self._vm.vcpus[me].complete_write_exit()   # a hook's OUT: after it
            try:
                for device in devices.values():
                    if hasattr(device, "settle"):
                        device.settle()
                device_states = found.capture()
            except DeviceStateError as e:
                raise SnapshotError(f"cannot take a snapshot: {e}") from None
            vcpus = []
            for vcpu in self._vm.vcpus:
                state = self.new_state(vcpu.index)
                state.capture(vcpu)
                vcpus.append(state)
            vm = VmState.capture(self._vm)
            image = self._tracker.capture(found.guest_areas()) if with_memory else None
        return Snapshot(vcpus, vm, device_states, image, owner=self)

    # --- restoring in place ---------------------------------------------------------------
    def restore(self, snap: Snapshot) -> int:
        """Back to snap (the machine stays paused); the number of pages copied. Two
        crossings into C around the devices: the exit finished and the VM state
        (VmState.reset), then guest RAM and every vCPU (pv_reset_guest)."""
        if snap.owner is not self or snap.memory is None:
            raise SnapshotError("this snapshot was taken of another machine (restore a file "
                                "with Machine.restore_from)")
        me = self._stopped_vcpus("restore a snapshot")
        found = self.devices()
        devices = found.devices
        if devices.keys() != snap.devices.keys():
            raise SnapshotError("cannot restore: the machine's devices changed since the "
                                "snapshot")
        vcpus = self._vm.vcpus
        with found.held():
            # First the exit: its emulation may write memory and registers.
            snap.vm.reset(self._vm, None if me is None else vcpus[me])
            try:
                found.restore(snap.devices)
            except DeviceStateError as e:
                raise SnapshotError(f"cannot restore the snapshot: {e}") from None
            return self._reset_guest(snap, found.guest_areas(), me)

    def _reset_guest(self, snap: Snapshot, keep_marked: list[tuple[int, int]],
                     me: int | None) -> int:
        """Guest RAM and the vCPUs, in one crossing when the machine last matched snap's
        memory (only the dirty pages differ), else after comparing every page."""
        vcpus, tracker = self._vm.vcpus, self._tracker
        if snap.reset_vcpus is None:
            snap.reset_vcpus = ffi.new("struct pv_reset_vcpu[]", [
                {"fd": v.fd, "run": v.kvm_run, "state": s.struct}
                for v, s in zip(vcpus, snap.vcpus)])
        table = snap.reset_vcpus
        for entry, vcpu, state in zip(table, vcpus, snap.vcpus):
            entry.how = vcpu.restore_flags(state.struct, vcpu.index == me)
        args = tracker.reset_args(snap.memory)
        dirty_only = args is not None
        if not dirty_only:
            copied = tracker.reset(snap.memory, keep_marked)
            args = (self._vm.fd, ffi.NULL, 0, ffi.NULL, ffi.NULL, 0)
        failed = self._failed_vcpu
        ret = lib.pv_reset_guest(*args, table, len(vcpus), failed)
        if ret < 0:
            if failed[0] == len(vcpus):
                raise KvmError("KVM_GET_DIRTY_LOG", -ret)
            vcpus[failed[0]].raise_restore_error(snap.vcpus[failed[0]].struct, ret)
        if dirty_only:
            tracker.reset_done(keep_marked)
            return ret
        return copied

    def restore_devices(self, states: dict[str, dict]) -> None:
        """Device states from a file, into a machine built for them."""
        found = self.devices()
        devices = found.devices
        if devices.keys() != states.keys():
            missing = sorted(set(states) ^ set(devices))
            raise SnapshotError(f"the snapshot's devices do not match this machine's "
                                f"({', '.join(missing)})")
        with found.held():
            try:
                found.restore(states)
            except (DeviceStateError, PyvisorError) as e:
                raise SnapshotError(f"cannot restore the snapshot: {e}") from None
