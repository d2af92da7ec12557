"""`Machine.stats`: what the guest's exits cost, from the counters pv_run keeps in C
(struct pv_stats, one per vCPU), so the exit path itself never counts in Python."""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence

from .._native import ffi, lib
from ..devices.bus import Registration
from ..kvm.vcpu import EXIT_REASON_NAMES


class MachineStats:
    """exits: by KVM exit reason ("io", "mmio", "debug", ...), all vCPUs; ports and mmio:
    port I/O exits by port, MMIO exits by device region ("unclaimed" for the rest), both
    with the writes KVM queued in its coalesced ring instead of exiting; coalesced: those
    writes (counted as they are taken off the ring, so not yet the ones still queued);
    native_exits: those of them served inside the C shim without Python; interrupted:
    KVM_RUN returns for a kick; kvm_run_seconds: time inside KVM_RUN; pyvisor_seconds: the
    rest of the vCPU threads' running (not paused) time; handled_seconds: by exit reason,
    the time from KVM_RUN's return to the next KVM_RUN, which is what serving that kind of
    exit cost ("interrupted" for kicks)."""
    __slots__ = ("exits", "handled_seconds", "ports", "mmio", "native_exits", "coalesced",
                 "interrupted", "kvm_run_seconds", "pyvisor_seconds")

    def __init__(self, exits: dict[str, int] | None = None,
                 handled_seconds: dict[str, float] | None = None,
                 ports: dict[int, int] | None = None, mmio: dict[str, int] | None = None,
                 native_exits: int = 0, coalesced: int = 0, interrupted: int = 0,
                 kvm_run_seconds: float = 0.0, pyvisor_seconds: float = 0.0) -> None:
        self.exits = {} if exits is None else exits
        self.handled_seconds = {} if handled_seconds is None else handled_seconds
        self.ports = {} if ports is None else ports
        self.mmio = {} if mmio is None else mmio
        self.native_exits, self.coalesced, self.interrupted = native_exits, coalesced, interrupted
        self.kvm_run_seconds, self.pyvisor_seconds = kvm_run_seconds, pyvisor_seconds

    @property
    def total_exits(self) -> int:
        return sum(self.exits.values())

    def format(self, top: int = 10) -> str:
        lines = [f"exits: {self.total_exits} ({self.native_exits} served in C), "
                 f"{self.coalesced} writes coalesced, "
                 f"{self.kvm_run_seconds:.3f} s in KVM_RUN, {self.pyvisor_seconds:.3f} s in pyvisor"]
        for name, count in sorted(self.exits.items(), key=lambda kv: -kv[1]):
            spent = self.handled_seconds.get(name, 0.0)
            lines.append(f"  {name:<16} {count:>9}  {spent:8.3f} s serving, "
                         f"{spent / count * 1e6:7.1f} µs each")
        if self.interrupted:
            lines.append(f"  {'interrupted':<16} {self.interrupted:>9}  "
                         f"{self.handled_seconds.get('interrupted', 0.0):8.3f} s serving")
        if self.ports:
            lines.append("busiest ports:")
            lines += [f"  {port:#06x}  {count}" for port, count in
                      Counter(self.ports).most_common(top)]
        if self.mmio:
            lines.append("MMIO exits by region:")
            lines += [f"  {name:<24} {count}" for name, count in Counter(self.mmio).most_common(top)]
        return "\n".join(lines)


def collect_stats(vcpus: Sequence, runners: Sequence, regions: Sequence[Registration],
                  coalesced: int = 0) -> MachineStats:
    stats = MachineStats(coalesced=coalesced)
    exits: Counter[str] = Counter()
    ports: Counter[int] = Counter()
    mmio: Counter[str] = Counter()
    bases = [r.base for r in regions]
    last = lib.PV_EXIT_REASONS - 1
    handled: Counter[str] = Counter()
    for vcpu in vcpus:
        st = vcpu.stats
        for reason in range(lib.PV_EXIT_REASONS):
            name = EXIT_REASON_NAMES.get(reason, f"reason {reason}").lower()
            name = "other" if reason == last else name
            if st.exits[reason]:
                exits[name] += st.exits[reason]
            if st.handled_ns[reason]:
                handled["interrupted" if reason == lib.KVM_EXIT_INTR else name] += \
                    st.handled_ns[reason] / 1e9
        counts = memoryview(ffi.buffer(st.ports)).cast("I")
        ports.update({port: n for port, n in enumerate(counts) if n})
        for slot in range(lib.PV_MMIO_PAGES):
            if st.mmio_page[slot]:
                mmio[_region(regions, bases, (st.mmio_page[slot] - 1) << 12)] += st.mmio_count[slot]
        if st.mmio_other:
            mmio["other pages"] += st.mmio_other
        stats.native_exits += st.native_exits
        stats.interrupted += st.interrupted
        stats.kvm_run_seconds += st.run_ns / 1e9
    stats.pyvisor_seconds = max(0.0, sum(r.active_seconds for r in runners) - stats.kvm_run_seconds)
    stats.exits, stats.ports, stats.mmio = dict(exits), dict(ports), dict(mmio)
    stats.handled_seconds = dict(handled)
    return stats


def _region(regions: Sequence[Registration], bases: list[int], gpa: int) -> str:
    i = bisect_right(bases, gpa | 0xFFF) - 1
    if i >= 0 and regions[i].base + regions[i].length > gpa:
        return regions[i].name
    return "unclaimed"
