import pytest

from helpers import needs_kvm
from pyvisor.kvm.system import Kvm
from pyvisor.x86.cpuid import (CpuidEntry, cpuid_has_1g_pages, max_phys_bits,
                               shape_cpuid, with_brand_string, with_tsc_deadline)

SIG = 1  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX


def E(function, index=0, flags=0, eax=0, ebx=0, ecx=0, edx=0):
    return CpuidEntry(function, index, flags, eax, ebx, ecx, edx)


SUPPORTED = [
    E(0, eax=0x1F, ebx=0x756E6547, ecx=0x6C65746E, edx=0x49656E69),
    E(1, eax=0x906EA, ebx=0x0010_0800 | 0x07 << 24, ecx=0x7FFA_3203, edx=0x0F8B_FBFF),
    E(4, 0, SIG, eax=0x1C00_4121), E(4, 1, SIG, eax=0x1C00_4122), E(4, 2, SIG, eax=0),
    E(0xB, 0, SIG), E(0x1F, 0, SIG),
    E(0x40000000, eax=0x40000001, ebx=0x4B4D564B, ecx=0x564B4D56, edx=0x4D),
    E(0x40000001, eax=0x01007AFB),
    E(0x80000001, edx=0x2C10_0800),
    E(0x80000008, eax=0x3027, ecx=0x0000_F007),
]


def find(entries, function, index=0):
    matches = [e for e in entries if e.function == function and e.index == index]
    assert len(matches) == 1, (hex(function), index, matches)
    return matches[0]


def test_leaf1_single_cpu():
    leaf = find(shape_cpuid(SUPPORTED, 0, 1), 1)
    assert leaf.ecx >> 31 == 1
    assert leaf.ebx >> 24 == 0
    assert leaf.ebx >> 16 & 0xFF == 1
    assert leaf.ebx & 0xFFFF == 0x0800  # CLFLUSH size and brand kept
    assert not leaf.edx & 1 << 28
    assert leaf.eax == 0x906EA


def test_leaf1_multi_cpu():
    leaf = find(shape_cpuid(SUPPORTED, 3, 4), 1)
    assert leaf.ebx >> 24 == 3
    assert leaf.ebx >> 16 & 0xFF == 4
    assert leaf.edx & 1 << 28


@pytest.mark.parametrize("leaf_fn", [0xB, 0x1F])
@pytest.mark.parametrize("count, shift", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_extended_topology(leaf_fn, count, shift):
    apic_id = count - 1
    entries = shape_cpuid(SUPPORTED, apic_id, count)
    smt, core, end = (find(entries, leaf_fn, i) for i in range(3))
    assert (smt.eax & 0x1F, smt.ebx & 0xFFFF, smt.ecx & 0xFF, smt.ecx >> 8 & 0xFF) == (0, 1, 0, 1)
    assert (core.eax & 0x1F, core.ebx & 0xFFFF, core.ecx & 0xFF, core.ecx >> 8 & 0xFF) == \
        (shift, count, 1, 2)
    assert (end.eax, end.ebx, end.ecx & 0xFF, end.ecx >> 8 & 0xFF) == (0, 0, 2, 0)
    assert smt.edx == core.edx == end.edx == apic_id
    assert all(e.flags == SIG for e in (smt, core, end))
    assert len([e for e in entries if e.function == leaf_fn]) == 3


def test_leaf_0xb_added_and_0x1f_only_if_present():
    supported = [e for e in SUPPORTED if e.function not in (0xB, 0x1F)]
    entries = shape_cpuid(supported, 0, 2)
    assert find(entries, 0xB, 1).ebx == 2
    assert find(entries, 0xB, 1).flags == SIG
    assert not [e for e in entries if e.function == 0x1F]


def test_leaf4_cores_per_package():
    entries = shape_cpuid(SUPPORTED, 0, 6)
    for i in (0, 1):
        leaf = find(entries, 4, i)
        assert leaf.eax >> 26 == 5
        assert leaf.eax & 0x03FF_FFFF == SUPPORTED[2 + i].eax & 0x03FF_FFFF
    assert find(entries, 4, 2).eax == 0  # the terminating subleaf stays null


def test_amd_core_count():
    leaf = find(shape_cpuid(SUPPORTED, 1, 8), 0x80000008)
    assert leaf.ecx & 0xFF == 7
    assert leaf.ecx & ~0xFF == 0xF000
    assert leaf.eax == 0x3027


def test_kvm_signature_kept_when_present():
    entries = shape_cpuid(SUPPORTED, 0, 1)
    assert find(entries, 0x40000000) == SUPPORTED[7]


def test_kvm_signature_added_when_missing():
    supported = [e for e in SUPPORTED if e.function != 0x40000000]
    leaf = find(shape_cpuid(supported, 0, 1), 0x40000000)
    sig = b"".join(r.to_bytes(4, "little") for r in (leaf.ebx, leaf.ecx, leaf.edx))
    assert sig == b"KVMKVMKVM\0\0\0"
    assert leaf.eax == 0x40000001
    bare = find(shape_cpuid([E(0, eax=1)], 0, 1), 0x40000000)
    assert bare.eax == 0x40000000


def test_input_is_not_modified_and_other_leaves_pass_through():
    before = list(SUPPORTED)
    entries = shape_cpuid(SUPPORTED, 1, 2)
    assert SUPPORTED == before
    assert find(entries, 0) == SUPPORTED[0]
    assert find(entries, 0x80000001) == SUPPORTED[9]


def test_cpu_index_must_be_in_range():
    with pytest.raises(ValueError):
        shape_cpuid(SUPPORTED, 2, 2)


def test_1g_pages():
    assert cpuid_has_1g_pages(SUPPORTED)
    assert not cpuid_has_1g_pages([E(0x80000001, edx=0x2810_0800)])
    assert not cpuid_has_1g_pages([])


def test_phys_bits():
    assert max_phys_bits(SUPPORTED) == 39
    assert max_phys_bits([]) == 36
    assert max_phys_bits([E(0x80000008)]) == 36


def test_tsc_deadline_is_leaf1_ecx_bit_24():
    # Intel SDM vol. 2A, CPUID.01H:ECX[24] TSC-Deadline; everything else as it was
    entries = with_tsc_deadline(SUPPORTED)
    assert find(entries, 1).ecx == SUPPORTED[1].ecx | 0x0100_0000
    assert [e for e in entries if e.function != 1] == [e for e in SUPPORTED if e.function != 1]



def test_brand_string_fills_only_what_kvm_left_zero():
    entries = SUPPORTED + [E(0x80000002), E(0x80000003), E(0x80000004, eax=7)]
    host = {0x80000002: (1, 2, 3, 4), 0x80000003: (5, 6, 7, 8), 0x80000004: (9, 10, 11, 12)}
    filled = with_brand_string(entries, host)
    assert [(e.eax, e.ebx, e.ecx, e.edx) for e in filled[-3:]] == [(1, 2, 3, 4), (5, 6, 7, 8),
                                                                   (7, 0, 0, 0)]
    assert filled[:-3] == SUPPORTED


@needs_kvm
def test_the_guest_is_shown_the_hosts_brand_string():
    """What the host's /proc/cpuinfo calls its CPU (Linux reads leaves 0x80000002-4)."""
    with Kvm() as kvm:
        entries = kvm.supported_cpuid()
    brand = b"".join(v.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                     for v in (lambda e: (e.eax, e.ebx, e.ecx, e.edx))(find(entries, leaf)))
    with open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name"))
    assert brand.rstrip(b"\0").decode().strip() == model
