from pyvisor.x86 import msrs
from pyvisor.x86.msrs import boot_msrs


def test_msr_numbers():
    assert (msrs.IA32_TSC, msrs.APIC_BASE, msrs.IA32_MISC_ENABLE, msrs.MTRR_DEF_TYPE) == \
        (0x10, 0x1B, 0x1A0, 0x2FF)
    assert (msrs.IA32_SYSENTER_CS, msrs.IA32_SYSENTER_ESP, msrs.IA32_SYSENTER_EIP) == \
        (0x174, 0x175, 0x176)
    assert (msrs.EFER, msrs.STAR, msrs.LSTAR, msrs.CSTAR, msrs.SYSCALL_MASK) == \
        (0xC0000080, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084)
    assert (msrs.KERNEL_GS_BASE, msrs.TSC_AUX) == (0xC0000102, 0xC0000103)


def test_boot_values_when_all_supported():
    values = dict(boot_msrs(range(0x2000)) + boot_msrs(range(0xC0000000, 0xC0000200)))
    assert values == {
        0x174: 0, 0x175: 0, 0x176: 0,
        0xC0000081: 0, 0xC0000082: 0, 0xC0000083: 0, 0xC0000084: 0, 0xC0000102: 0,
        0x1A0: 1, 0x2FF: 0x806,
    }


def test_filtered_to_supported():
    assert boot_msrs({msrs.LSTAR, msrs.IA32_MISC_ENABLE, 0x12345}) == \
        [(msrs.LSTAR, 0), (msrs.IA32_MISC_ENABLE, 1), (msrs.MTRR_DEF_TYPE, 0x806)]


def test_mtrr_default_type_is_set_even_though_kvm_does_not_list_it():
    # KVM_GET_MSR_INDEX_LIST omits the MTRRs, yet KVM_SET_MSRS accepts them.
    assert boot_msrs([]) == [(msrs.MTRR_DEF_TYPE, 0x806)]
