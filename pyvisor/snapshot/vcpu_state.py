"""One vCPU's whole state, in C structs the shim fills and sets back in one crossing each
(`pv_get_vcpu_state` / `pv_restore_vcpu_state`, Firecracker's order: MP_STATE, REGS, SREGS,
XSAVE, XCRS, DEBUGREGS, LAPIC, MSRS, VCPU_EVENTS; CPUID first, only into a new vCPU).

Which MSRs: KVM_GET_MSR_INDEX_LIST plus what it leaves out (KVM's paravirtual MSRs at
0x4b564dxx and 0x11/0x12, the MTRRs), kept when this vCPU reads and writes them, with the
TSC before TSC_DEADLINE (the deadline is relative to the TSC it is set against)."""
from __future__ import annotations

from typing import Iterable, Sequence

from .._native import ffi, lib
from ..kvm.vcpu import Vcpu
from ..x86.cpuid import CpuidEntry
from .errors import SnapshotError

MSR_TSC = 0x10
MSR_TSC_DEADLINE = 0x6E0
# What KVM_GET_MSR_INDEX_LIST may not name (Firecracker and QEMU add them the same way).
KVM_PV_MSRS = (0x11, 0x12) + tuple(range(0x4B564D00, 0x4B564D09))
MTRR_MSRS = tuple(range(0x200, 0x210)) + (0x250, 0x258, 0x259) + tuple(range(0x268, 0x270)) + (0x2FF,)
XSAVE_LEGACY_SIZE = 4096

# The fixed-size parts of struct pv_vcpu_state, in the order the file keeps them.
PARTS = ("mp_state", "regs", "sregs", "xcrs", "debugregs", "lapic", "events")


def ordered_msrs(indices: Iterable[int]) -> list[int]:
    """Unique, the TSC first and TSC_DEADLINE last, the rest in the order given."""
    seen: list[int] = []
    for index in indices:
        if index not in seen and index not in (MSR_TSC, MSR_TSC_DEADLINE):
            seen.append(index)
    have = set(indices)
    return ([MSR_TSC] if MSR_TSC in have else []) + seen + (
        [MSR_TSC_DEADLINE] if MSR_TSC_DEADLINE in have else [])


def probe_msrs(vcpu: Vcpu, candidates: Sequence[int]) -> list[int]:
    """The candidates this vCPU reads and takes back (KVM_GET/SET_MSRS stop at the first
    one they refuse, and say how many they did). The TSC is not written back here: it is
    always writable, and writing a stale value would move the guest's time."""
    left, readable = list(candidates), {}
    while left:
        got = vcpu.get_msrs(left)
        readable.update(got)
        left = left[len(got) + 1:]           # skip the one it refused
    values = [(i, readable[i]) for i in candidates if i in readable and i != MSR_TSC]
    writable = {MSR_TSC} & set(readable)
    while values:
        msrs = ffi.new("struct kvm_msrs *", {"nmsrs": len(values), "entries": len(values)})
        for entry, (index, data) in zip(msrs.entries, values):
            entry.index, entry.data = index, data
        done = lib.pv_ioctl(vcpu.fd, lib.KVM_SET_MSRS, msrs)
        done = max(done, 0)
        writable.update(i for i, _ in values[:done])
        values = values[done + 1:]
    return ordered_msrs([i for i in candidates if i in writable])


def xsave_size(kvm) -> int:
    """Bytes of XSAVE state: KVM_CAP_XSAVE2's answer where larger (AMX), else 4096."""
    return max(kvm.check_extension(lib.KVM_CAP_XSAVE2), XSAVE_LEGACY_SIZE)


class VcpuState:
    """The state buffers of one vCPU; capture() fills them, apply() sets them back."""

    def __init__(self, index: int, msr_indices: Sequence[int], xsave_bytes: int,
                 cpuid: list[CpuidEntry]) -> None:
        self.index = index
        self.cpuid = cpuid
        self.struct = ffi.new("struct pv_vcpu_state *")
        self._xsave = ffi.new("char[]", xsave_bytes)
        self.struct.xsave = ffi.cast("struct kvm_xsave *", self._xsave)
        self.struct.xsave_size = xsave_bytes
        self._msrs = ffi.new("struct kvm_msrs *", {"nmsrs": len(msr_indices),
                                                    "entries": len(msr_indices)})
        for entry, msr in zip(self._msrs.entries, msr_indices):
            entry.index = msr
        self.struct.msrs = self._msrs

    @property
    def msr_indices(self) -> list[int]:
        return [e.index for e in self._msrs.entries[0:self._msrs.nmsrs]]

    @property
    def msrs(self) -> dict[int, int]:
        return {e.index: e.data for e in self._msrs.entries[0:self._msrs.nmsrs]}

    @property
    def regs(self):
        return self.struct.regs

    def capture(self, vcpu: Vcpu) -> None:
        vcpu.get_state(self.struct)

    def apply(self, vcpu: Vcpu) -> None:
        """Into a vCPU built for it (a restore from a file): every part with its ioctl."""
        vcpu.set_state(self.struct)

    def restore(self, vcpu: Vcpu, in_exit: bool) -> None:
        """Into the vCPU it was taken of (an in-place restore): the fewest ioctls that give
        the same vCPU (Vcpu.restore_state); in_exit after vcpu.complete_exit()."""
        vcpu.restore_state(self.struct, in_exit)

    # --- plain data, for the file ----------------------------------------------------------
    def to_record(self) -> dict:
        record = {part: bytes(ffi.buffer(ffi.addressof(self.struct, part))) for part in PARTS}
        record["xsave"] = bytes(ffi.buffer(self._xsave))
        record["msrs"] = [[e.index, e.data] for e in self._msrs.entries[0:self._msrs.nmsrs]]
        record["cpuid"] = [[e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx]
                           for e in self.cpuid]
        return record

    @classmethod
    def from_record(cls, index: int, record: dict) -> "VcpuState":
        try:
            msrs = [(int(i), int(v)) for i, v in record["msrs"]]
            cpuid = [CpuidEntry(*(int(x) for x in e)) for e in record["cpuid"]]
            state = cls(index, [i for i, _ in msrs], len(record["xsave"]), cpuid)
            for part in PARTS:
                target = ffi.buffer(ffi.addressof(state.struct, part))
                if len(record[part]) != len(target):
                    raise SnapshotError(f"the snapshot's vCPU {part} state is {len(record[part])} "
                                        f"bytes; this build of pyvisor keeps {len(target)}")
                target[:] = record[part]
            ffi.buffer(state._xsave)[:] = record["xsave"]
            for entry, (_, value) in zip(state._msrs.entries, msrs):
                entry.data = value
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"the snapshot's vCPU {index} state is malformed ({e})") from None
        return state
