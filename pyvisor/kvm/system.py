"""The KVM system object: /dev/kvm and the questions answered before a VM exists."""
from __future__ import annotations

import errno
import os

from .._native import ffi, lib
from ..errors import KvmError, KvmUnavailableError
from ..x86.cpuid import BRAND_LEAVES, CpuidEntry, with_brand_string, with_tsc_deadline
from .ioctl import ioctl, ioctl_int

KVM_DEVICE = "/dev/kvm"
# What `pyvisor run` cannot do without: the in-kernel irqchip and PIT, and for the virtio
# devices ioeventfd kicks, irqfd interrupts and the GSI routing table behind MSI-X.
REQUIRED_CAPS = {
    "KVM_CAP_USER_MEMORY": lib.KVM_CAP_USER_MEMORY,
    "KVM_CAP_IRQCHIP": lib.KVM_CAP_IRQCHIP,
    "KVM_CAP_PIT2": lib.KVM_CAP_PIT2,
    "KVM_CAP_EXT_CPUID": lib.KVM_CAP_EXT_CPUID,
    "KVM_CAP_MP_STATE": lib.KVM_CAP_MP_STATE,
    "KVM_CAP_IMMEDIATE_EXIT": lib.KVM_CAP_IMMEDIATE_EXIT,
    "KVM_CAP_SET_TSS_ADDR": lib.KVM_CAP_SET_TSS_ADDR,
    "KVM_CAP_IOEVENTFD": lib.KVM_CAP_IOEVENTFD,
    "KVM_CAP_IRQFD": lib.KVM_CAP_IRQFD,
    "KVM_CAP_IRQ_ROUTING": lib.KVM_CAP_IRQ_ROUTING,
}
# Large enough for any host's supported CPUID; KVM answers E2BIG when it is not.
_MAX_CPUID_ENTRIES = 256


def open_kvm_device(path: str = KVM_DEVICE) -> int:
    """Open /dev/kvm, turning the usual failures into one line the user can act on."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmUnavailableError(
            f"{path} does not exist: this host has no KVM (load kvm_intel or kvm_amd, "
            "or enable virtualization in the firmware)") from None
    except PermissionError:
        raise KvmUnavailableError(
            f"no permission to open {path}: add your user to the 'kvm' group "
            "(or run as root)") from None
    except OSError as e:
        raise KvmUnavailableError(f"cannot open {path}: {e.strerror}") from None


def host_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """(EAX, EBX, ECX, EDX) of the CPUID instruction on the host itself."""
    regs = ffi.new("uint32_t[4]")
    lib.pv_host_cpuid(leaf, subleaf, regs)
    return regs[0], regs[1], regs[2], regs[3]


class Kvm:
    """An open /dev/kvm. Use as a context manager so the fd is closed deterministically."""

    def __init__(self, path: str = KVM_DEVICE):
        self.path = path
        self.fd = open_kvm_device(path)
        try:
            try:
                self.api_version = ioctl_int(self.fd, lib.KVM_GET_API_VERSION, 0,
                                             "KVM_GET_API_VERSION")
            except KvmError as e:
                raise KvmUnavailableError(f"{path} is not a KVM device ({e})") from None
            if self.api_version != lib.KVM_API_VERSION:
                raise KvmUnavailableError(
                    f"{path} speaks KVM API {self.api_version}; pyvisor needs {lib.KVM_API_VERSION}")
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value."""
        return ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def vcpu_mmap_size(self) -> int:
        return ioctl_int(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def max_vcpus(self) -> int:
        """The hard per-VM vCPU limit (KVM_CAP_MAX_VCPUS, else NR_VCPUS, else 4 as api.rst says)."""
        return (self.check_extension(lib.KVM_CAP_MAX_VCPUS)
                or self.check_extension(lib.KVM_CAP_NR_VCPUS) or 4)

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: what a guest may be shown on this host."""
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": _MAX_CPUID_ENTRIES,
                                                "entries": _MAX_CPUID_ENTRIES})
        ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID")
        entries = [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                   for e in cpuid.entries[0:cpuid.nent]]
        if self.check_extension(lib.KVM_CAP_TSC_DEADLINE_TIMER):   # every VM has its LAPIC
            entries = with_tsc_deadline(entries)
        return with_brand_string(entries, {leaf: host_cpuid(leaf) for leaf in BRAND_LEAVES})

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores for a guest."""
        probe = ffi.new("struct kvm_msr_list *", {"nmsrs": 0})
        ret = lib.pv_ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, probe)
        if ret < 0 and -ret != errno.E2BIG:
            raise KvmError("KVM_GET_MSR_INDEX_LIST", -ret)
        lst = ffi.new("struct kvm_msr_list *", {"nmsrs": probe.nmsrs, "indices": probe.nmsrs})
        ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, lst, "KVM_GET_MSR_INDEX_LIST")
        return list(lst.indices[0:lst.nmsrs])

    def create_vm(self) -> "Vm":
        from .vm import Vm

        return Vm(self, ioctl_int(self.fd, lib.KVM_CREATE_VM, 0, "KVM_CREATE_VM"))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Kvm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
