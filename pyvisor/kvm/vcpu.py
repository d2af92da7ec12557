"""A KVM vCPU: its fd, its mapped kvm_run area, register state, and running it.

Register getters return the cffi structs from <linux/kvm.h> (attribute access, e.g.
`regs.rip`); change them and hand them back to the setter, as with kvm-ioctls."""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping

from .._native import ffi, lib
from ..errors import KvmError
from ..x86.cpuid import CpuidEntry
from .ioctl import ioctl

# Exit reasons by number, for reports and debug views.
EXIT_REASON_NAMES = {getattr(lib, n): n[len("KVM_EXIT_"):] for n in dir(lib)
                     if n.startswith("KVM_EXIT_") and not n.startswith("KVM_EXIT_IO_")}


class Vcpu:
    """One vCPU. `run()` blocks in KVM_RUN with the GIL released (cffi drops it)."""

    def __init__(self, fd: int, index: int, run_size: int):
        self.fd = fd
        self.index = index
        self._run_size = run_size
        run = lib.pv_mmap_shared(fd, run_size)
        if run == ffi.NULL:
            err = ffi.errno
            os.close(fd)
            raise KvmError("mmap of kvm_run", err)
        self.kvm_run = ffi.cast("struct kvm_run *", run)
        self.exit = ffi.new("struct pv_exit *")
        # Counted by pv_run on every exit (Machine.stats reads them).
        self.stats = ffi.new("struct pv_stats *")
        self.exit.stats = self.stats
        # What an in-place restore may leave out (restore_state): when pyvisor last set
        # MP_STATE, and when complete_exit() last stored the sregs in kvm_run (both as the
        # time of the KVM_RUN return they followed, stats.last_exit_ns).
        self._mp_written_ns = 0
        self._sregs_stored_ns = 0
        # The exit complete_exit() last finished (stats.last_exit_ns of its KVM_RUN return).
        self._completed_ns = 0

    # --- running -----------------------------------------------------------------------
    def run(self, read_value: int = 0) -> int:
        """Enter the guest until the next exit; returns the KVM_EXIT_* reason, with the
        details decoded in `self.exit`. After a read exit, read_value is what the guest
        reads. A signal (a kick) returns KVM_EXIT_INTR."""
        ret = lib.pv_run(self.fd, self.kvm_run, self.exit, ffi.NULL, read_value)
        if ret < 0:
            if ret == -errno.EINTR:  # kicked by another thread
                return lib.KVM_EXIT_INTR
            raise KvmError("KVM_RUN", -ret)
        return self.exit.reason

    def set_guest_debug(self, control: int, debugreg: list[int] | None = None) -> None:
        """KVM_SET_GUEST_DEBUG: single-step and breakpoint control (KVM_GUESTDBG_*), with
        DR0-DR3 and DR7 in debugreg[0..3] and debugreg[7] for hardware breakpoints."""
        dbg = ffi.new("struct kvm_guest_debug *")
        dbg.control = control
        for i, value in enumerate(debugreg or ()):
            dbg.arch.debugreg[i] = value
        self._settle()
        ioctl(self.fd, lib.KVM_SET_GUEST_DEBUG, dbg, "KVM_SET_GUEST_DEBUG")

    def request_immediate_exit(self, flag: bool = True) -> None:
        """Make the next (or current, with a kick) KVM_RUN return at once (KVM_CAP_IMMEDIATE_EXIT)."""
        self.kvm_run.immediate_exit = int(flag)

    # --- registers ---------------------------------------------------------------------
    def _settle(self) -> None:
        """Before any vCPU ioctl but KVM_RUN: apply the state a restore left pending for the
        next KVM_RUN (KVM_CAP_SYNC_REGS), so no getter reads what it replaces and no
        setter is overtaken by it."""
        self._sregs_stored_ns = 0
        if self.kvm_run.kvm_dirty_regs:
            failed = ffi.new("uint32_t *")
            ret = lib.pv_flush_sync(self.fd, self.kvm_run, failed)
            self._mp_written_ns = self.stats.last_exit_ns   # SET_SREGS may make it RUNNABLE
            if ret < 0:
                raise KvmError(f"KVM_SET_{_STEP_NAMES[failed[0]]} (pending from a restore)", -ret)

    def _get(self, request: int, ctype: str, name: str):
        self._settle()
        value = ffi.new(ctype)
        ioctl(self.fd, request, value, name)
        return value

    def get_regs(self):
        return self._get(lib.KVM_GET_REGS, "struct kvm_regs *", "KVM_GET_REGS")

    def set_regs(self, regs) -> None:
        self._settle()
        ioctl(self.fd, lib.KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self):
        return self._get(lib.KVM_GET_SREGS, "struct kvm_sregs *", "KVM_GET_SREGS")

    def set_sregs(self, sregs) -> None:
        self._settle()
        ioctl(self.fd, lib.KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def get_fpu(self):
        return self._get(lib.KVM_GET_FPU, "struct kvm_fpu *", "KVM_GET_FPU")

    def set_fpu(self, fpu) -> None:
        self._settle()
        ioctl(self.fd, lib.KVM_SET_FPU, fpu, "KVM_SET_FPU")

    def get_lapic(self) -> bytes:
        return bytes(ffi.buffer(self._get(lib.KVM_GET_LAPIC, "struct kvm_lapic_state *",
                                          "KVM_GET_LAPIC")))

    def set_lapic(self, state: bytes) -> None:
        lapic = ffi.new("struct kvm_lapic_state *")
        ffi.buffer(lapic)[:] = state
        self._settle()
        ioctl(self.fd, lib.KVM_SET_LAPIC, lapic, "KVM_SET_LAPIC")

    def get_vcpu_events(self):
        return self._get(lib.KVM_GET_VCPU_EVENTS, "struct kvm_vcpu_events *",
                         "KVM_GET_VCPU_EVENTS")

    def set_vcpu_events(self, events) -> None:
        self._settle()
        ioctl(self.fd, lib.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")

    def get_mp_state(self) -> int:
        return self._get(lib.KVM_GET_MP_STATE, "struct kvm_mp_state *",
                         "KVM_GET_MP_STATE").mp_state

    def set_mp_state(self, state: int) -> None:
        self._settle()
        self._mp_written_ns = self.stats.last_exit_ns
        ioctl(self.fd, lib.KVM_SET_MP_STATE, ffi.new("struct kvm_mp_state *", {"mp_state": state}),
              "KVM_SET_MP_STATE")

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """Read MSRs; KVM stops at the first it does not know, so those are left out."""
        indices = list(indices)
        msrs = ffi.new("struct kvm_msrs *", {"nmsrs": len(indices), "entries": len(indices)})
        for entry, index in zip(msrs.entries, indices):
            entry.index = index
        self._settle()
        got = ioctl(self.fd, lib.KVM_GET_MSRS, msrs, "KVM_GET_MSRS")
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(got)}

    def set_msrs(self, values: Mapping[int, int] | Iterable[tuple[int, int]]) -> None:
        """Write MSRs; all must be accepted, else the first refused one is named."""
        items = list(values.items() if isinstance(values, Mapping) else values)
        msrs = ffi.new("struct kvm_msrs *", {"nmsrs": len(items), "entries": len(items)})
        for entry, (index, data) in zip(msrs.entries, items):
            entry.index = index
            entry.data = data
        self._settle()
        done = ioctl(self.fd, lib.KVM_SET_MSRS, msrs, "KVM_SET_MSRS")
        if done != len(items):
            raise KvmError(f"KVM_SET_MSRS (MSR {items[done][0]:#x})", 22)

    def set_cpuid(self, entries: Iterable[CpuidEntry]) -> None:
        entries = list(entries)
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": len(entries), "entries": len(entries)})
        for dst, e in zip(cpuid.entries, entries):
            dst.function, dst.index, dst.flags = e.function, e.index, e.flags
            dst.eax, dst.ebx, dst.ecx, dst.edx = e.eax, e.ebx, e.ecx, e.edx
        self._settle()
        ioctl(self.fd, lib.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")

    def get_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_CPUID2: what this vCPU's guest sees (as KVM_SET_CPUID2 left it)."""
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": _MAX_CPUID_ENTRIES,
                                                "entries": _MAX_CPUID_ENTRIES})
        ioctl(self.fd, lib.KVM_GET_CPUID2, cpuid, "KVM_GET_CPUID2")
        return [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in cpuid.entries[0:cpuid.nent]]

    # --- the whole state (snapshots) ---------------------------------------------------
    def get_state(self, state) -> None:
        """Fill a `struct pv_vcpu_state` (its xsave buffer and MSR indices set up by the
        caller) in one crossing."""
        self._settle()
        ret = lib.pv_get_vcpu_state(self.fd, state)
        if ret < 0:
            raise KvmError(_state_step(state, "GET"), -ret)

    def set_state(self, state) -> None:
        """Set a `struct pv_vcpu_state` back, in Firecracker's order, in one crossing, every
        part with its ioctl (a vCPU restored from a file)."""
        self._settle()
        self._mp_written_ns = self.stats.last_exit_ns
        ret = lib.pv_restore_vcpu_state(self.fd, self.kvm_run, state, 0)
        if ret < 0:
            raise KvmError(_state_step(state, "SET"), -ret)

    # --- snapshots and in-place restores (pyvisor/snapshot/engine.py) -----------------------
    def complete_exit(self, before: str = "a restore") -> None:
        """Finish the exit this vCPU is in (from its own thread, e.g. a hook) without entering
        the guest (a KVM_RUN with immediate_exit, as KVM's API asks before saving state),
        before a restore changes anything: an IN's or MMIO read's emulation writes
        registers and memory. KVM stores the sregs on the way out (restore_state uses
        them). A read's answer is dropped: only a restore, which replaces it, may do this
        in a read's exit."""
        ret = lib.pv_complete_exit(self.fd, self.kvm_run, lib.KVM_SYNC_X86_SREGS)
        if ret < 0:
            raise KvmError(f"KVM_RUN (completing the pending exit before {before})", -ret)
        self.exit_completed()

    def complete_write_exit(self) -> None:
        """Before a snapshot from a hook: finish the exit when it is a write (OUT, MMIO write),
        so the snapshot is after it on every KVM. VT-x and AMD-V move RIP past an OUT only
        when the next KVM_RUN completes it (complete_fast_pio_out); PVM's emulator does so
        before the exit. A read's exit stays as it is: its value is what the hook has yet
        to return, and the vCPU is before the read on every KVM."""
        now = self.stats.last_exit_ns
        if (now and self._completed_ns != now and self.exit.is_write
                and self.stats.last_reason in _ACCESS_EXITS):
            self.complete_exit("a snapshot")

    def restore_state(self, state, in_exit: bool) -> None:
        """Set a `struct pv_vcpu_state` with the fewest ioctls that give the same vCPU
        (pv_restore_vcpu_state with restore_flags)."""
        ret = lib.pv_restore_vcpu_state(self.fd, self.kvm_run, state,
                                        self.restore_flags(state, in_exit))
        if ret < 0:
            self.raise_restore_error(state, ret)

    def restore_flags(self, state, in_exit: bool) -> int:
        """pv_restore_vcpu_state's `how` for an in-place restore of state, called right
        before it (it notes what the restore leaves): the last parts ride on the next
        KVM_RUN; in_exit (after complete_exit, in an exit from guest code) also lets it
        leave out an MP_STATE that is RUNNABLE already and, when the sregs it depends on
        are unchanged, REGS and SREGS."""
        how = lib.PV_RESTORE_SYNC
        now = self.stats.last_exit_ns
        if in_exit and now:
            if self._sregs_stored_ns == now:
                how |= lib.PV_RESTORE_SREGS_STORED
            if self.stats.last_reason in _GUEST_EXITS and self._mp_written_ns != now:
                how |= lib.PV_RESTORE_RUNNABLE
        self._sregs_stored_ns = 0
        if not (how & lib.PV_RESTORE_RUNNABLE and state.mp_state.mp_state == _RUNNABLE):
            self._mp_written_ns = now
        return how

    def exit_completed(self) -> None:
        """What complete_exit notes, for a caller that finished the exit in C itself
        (pv_reset_vm)."""
        self.exit.read_pending = 0
        self._sregs_stored_ns = self._completed_ns = self.stats.last_exit_ns

    @staticmethod
    def raise_restore_error(state, ret: int) -> None:
        """The KvmError for a pv_restore_vcpu_state that returned ret < 0."""
        raise KvmError(_state_step(state, "SET"), -ret)

    def close(self) -> None:
        if self.fd >= 0:
            lib.pv_munmap(self.kvm_run, self._run_size)
            os.close(self.fd)
            self.fd = -1


_MAX_CPUID_ENTRIES = 256
# Exits from guest code: KVM returns them only while the vCPU is RUNNABLE.
_GUEST_EXITS = (lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO, lib.KVM_EXIT_DEBUG)
_ACCESS_EXITS = (lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO)
_RUNNABLE = lib.KVM_MP_STATE_RUNNABLE
_STEP_NAMES = {lib.PV_STEP_MP_STATE: "MP_STATE", lib.PV_STEP_REGS: "REGS",
               lib.PV_STEP_SREGS: "SREGS", lib.PV_STEP_XSAVE: "XSAVE", lib.PV_STEP_XCRS: "XCRS",
               lib.PV_STEP_DEBUGREGS: "DEBUGREGS", lib.PV_STEP_LAPIC: "LAPIC",
               lib.PV_STEP_MSRS: "MSRS", lib.PV_STEP_EVENTS: "VCPU_EVENTS"}


def _state_step(state, direction: str) -> str:
    """The ioctl a pv_*_vcpu_state call stopped at, for the error message."""
    name = f"KVM_{direction}_{_STEP_NAMES.get(state.failed, '?')}"
    if state.failed == lib.PV_STEP_MSRS:
        done = state.msrs_done
        index = state.msrs.entries[done].index if done < state.msrs.nmsrs else 0
        name += f" ({done} of {state.msrs.nmsrs}: MSR {index:#x} refused)"
    return name
