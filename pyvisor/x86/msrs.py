"""Model-specific registers pyvisor sets at boot. Their numbers are architectural (Intel
SDM vol. 4) and not in the uapi headers, hence defined here."""

from collections.abc import Collection

IA32_TSC = 0x10
APIC_BASE = 0x1B
IA32_SYSENTER_CS = 0x174
IA32_SYSENTER_ESP = 0x175
IA32_SYSENTER_EIP = 0x176
IA32_MISC_ENABLE = 0x1A0
MTRR_DEF_TYPE = 0x2FF
EFER = 0xC0000080
STAR = 0xC0000081
LSTAR = 0xC0000082
CSTAR = 0xC0000083
SYSCALL_MASK = 0xC0000084
KERNEL_GS_BASE = 0xC0000102
TSC_AUX = 0xC0000103

MISC_ENABLE_FAST_STRINGS = 1 << 0
MTRR_DEF_TYPE_ENABLE = 1 << 11
MTRR_TYPE_WRITE_BACK = 6

# What firmware would leave behind: syscall MSRs cleared, fast strings on, and MTRRs
# enabled with write-back as the default type so guest RAM is not treated as uncached.
_BOOT_VALUES = (
    (IA32_SYSENTER_CS, 0),
    (IA32_SYSENTER_ESP, 0),
    (IA32_SYSENTER_EIP, 0),
    (STAR, 0),
    (LSTAR, 0),
    (CSTAR, 0),
    (SYSCALL_MASK, 0),
    (KERNEL_GS_BASE, 0),
    (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRINGS),
    (MTRR_DEF_TYPE, MTRR_DEF_TYPE_ENABLE | MTRR_TYPE_WRITE_BACK),
)


# KVM emulates the MTRRs for every guest whose CPUID has the MTRR bit, but leaves them out
# of KVM_GET_MSR_INDEX_LIST (userspace is expected to know them from CPUID).
_EMULATED_UNLISTED = frozenset({MTRR_DEF_TYPE})


def boot_msrs(supported: Collection[int]) -> list[tuple[int, int]]:
    """(index, value) pairs for KVM_SET_MSRS, limited to the MSRs KVM supports
    (KVM_GET_MSR_INDEX_LIST), since KVM_SET_MSRS stops at the first unknown one."""
    return [(index, value) for index, value in _BOOT_VALUES
            if index in supported or index in _EMULATED_UNLISTED]
