"""Shaping KVM's supported CPUID into what one vCPU of this machine reports.

KVM_GET_SUPPORTED_CPUID describes the host, not the VM: the APIC ID, the topology and
processor counts must be rewritten per vCPU, or a multi-CPU guest sees every vCPU as the
same processor. All functions here are pure; entries are immutable.
"""

from collections.abc import Sequence

from .._native import lib
from ..value import Value

# The entry applies to one subleaf only (the header spells it SIGNIFCANT).
SIGNIFICANT_INDEX = lib.KVM_CPUID_FLAG_SIGNIFCANT_INDEX

KVM_SIGNATURE_LEAF = 0x40000000
KVM_FEATURES_LEAF = 0x40000001
_KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"

_LEAF1_ECX_TSC_DEADLINE = 1 << 24
_LEAF1_ECX_HYPERVISOR = 1 << 31
_LEAF1_EDX_HTT = 1 << 28
_EXT1_EDX_PDPE1GB = 1 << 26
_TOPOLOGY_SMT = 1
_TOPOLOGY_CORE = 2
DEFAULT_PHYS_BITS = 36


class CpuidEntry(Value):
    """One struct kvm_cpuid_entry2."""

    __slots__ = ("function", "index", "flags", "eax", "ebx", "ecx", "edx")

    def __init__(self, function: int, index: int, flags: int, eax: int, ebx: int, ecx: int,
                 edx: int) -> None:
        self.function, self.index, self.flags = function, index, flags
        self.eax, self.ebx, self.ecx, self.edx = eax, ebx, ecx, edx


def _find(entries: Sequence[CpuidEntry], function: int, index: int = 0) -> CpuidEntry | None:
    return next((e for e in entries if e.function == function and e.index == index), None)


def _topology(function: int, apic_id: int, count: int) -> list[CpuidEntry]:
    """Leaf 0xB/0x1F: one thread per core, ``count`` cores per package."""
    shift = (count - 1).bit_length()
    flags = SIGNIFICANT_INDEX
    return [
        CpuidEntry(function, 0, flags, 0, 1, _TOPOLOGY_SMT << 8, apic_id),
        CpuidEntry(function, 1, flags, shift, count, 1 | _TOPOLOGY_CORE << 8, apic_id),
        CpuidEntry(function, 2, flags, 0, 0, 2, apic_id),  # level type 0: no more levels
    ]


def _shape_one(e: CpuidEntry, apic_id: int, count: int) -> CpuidEntry:
    if e.function == 1:
        ebx = (e.ebx & 0xFFFF) | min(count, 0xFF) << 16 | (apic_id & 0xFF) << 24
        edx = e.edx | _LEAF1_EDX_HTT if count > 1 else e.edx & ~_LEAF1_EDX_HTT
        return e.replace(ebx=ebx, ecx=e.ecx | _LEAF1_ECX_HYPERVISOR, edx=edx)
    if e.function == 4 and e.eax & 0x1F:  # a cache subleaf (type 0 ends the list)
        return e.replace(eax=(e.eax & 0x03FFFFFF) | min(count - 1, 0x3F) << 26)
    if e.function == 0x80000008:
        return e.replace(ecx=(e.ecx & ~0xFF) | (count - 1) & 0xFF)
    return e


def shape_cpuid(supported: Sequence[CpuidEntry], cpu_index: int,
                cpu_count: int) -> list[CpuidEntry]:
    """The CPUID table for vCPU ``cpu_index`` (its APIC ID) of ``cpu_count``."""
    if not 0 <= cpu_index < cpu_count:
        raise ValueError(f"vCPU {cpu_index} is not one of {cpu_count}")
    shaped = [_shape_one(e, cpu_index, cpu_count)
              for e in supported if e.function not in (0xB, 0x1F)]
    shaped += _topology(0xB, cpu_index, cpu_count)
    if any(e.function == 0x1F for e in supported):
        shaped += _topology(0x1F, cpu_index, cpu_count)
    if _find(supported, KVM_SIGNATURE_LEAF) is None:
        highest = max((e.function for e in supported
                       if KVM_FEATURES_LEAF <= e.function <= 0x400000FF),
                      default=KVM_SIGNATURE_LEAF)
        ebx, ecx, edx = (int.from_bytes(_KVM_SIGNATURE[i:i + 4], "little") for i in (0, 4, 8))
        shaped.append(CpuidEntry(KVM_SIGNATURE_LEAF, 0, 0, highest, ebx, ecx, edx))
    return shaped


def with_tsc_deadline(entries: Sequence[CpuidEntry]) -> list[CpuidEntry]:
    """The entries with CPUID.1:ECX.TSC_DEADLINE set. KVM emulates the TSC-deadline timer
    in its local APIC (KVM_CAP_TSC_DEADLINE_TIMER) but left the bit out of
    KVM_GET_SUPPORTED_CPUID until Linux 6.14 (api.rst, "Known KVM API problems"): a guest
    without it falls back to the APIC's one-shot timer, which Linux must calibrate first."""
    return [e.replace(ecx=e.ecx | _LEAF1_ECX_TSC_DEADLINE) if e.function == 1 else e
            for e in entries]


BRAND_LEAVES = (0x80000002, 0x80000003, 0x80000004)


def with_brand_string(entries: Sequence[CpuidEntry],
                      host: dict[int, tuple[int, int, int, int]]) -> list[CpuidEntry]:
    """The entries with the processor brand string (leaves 0x80000002-4, 48 bytes of
    EAX..EDX) taken from `host` where KVM left them zero, as it does: without it a guest
    names its CPU by family and model ("AMD 17/01") and lscpu shows no model name."""
    def fill(e: CpuidEntry) -> CpuidEntry:
        if e.function in BRAND_LEAVES and e.index == 0 and not (e.eax | e.ebx | e.ecx | e.edx):
            eax, ebx, ecx, edx = host[e.function]
            return e.replace(eax=eax, ebx=ebx, ecx=ecx, edx=edx)
        return e
    return [fill(e) for e in entries]


def cpuid_has_1g_pages(entries: Sequence[CpuidEntry]) -> bool:
    """Whether 1 GiB pages (PDPE1GB) may be used in the guest's page tables."""
    ext = _find(entries, 0x80000001)
    return ext is not None and bool(ext.edx & _EXT1_EDX_PDPE1GB)


def max_phys_bits(entries: Sequence[CpuidEntry]) -> int:
    """The guest's physical address width (0x80000008 EAX[7:0]); 36 if not reported."""
    leaf = _find(entries, 0x80000008)
    return (leaf.eax & 0xFF) if leaf is not None and leaf.eax & 0xFF else DEFAULT_PHYS_BITS
