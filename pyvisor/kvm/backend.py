"""Which hardware-virtualization backend sits behind /dev/kvm, and what that means.

KVM's API is the same everywhere, but what a guest can run is not: under PVM
(pagetable-based virtualization, no VT-x/AMD-V) only PVM-enlightened kernels run
natively and everything else goes through KVM's instruction emulator."""
from __future__ import annotations

import os

from ..value import Value

PVM_EXPLANATION = (
    "PVM (the kvm_pvm module) virtualizes without VT-x/AMD-V: only PVM-enlightened guest "
    "kernels run natively. Any other guest runs inside KVM's x86 instruction emulator, which "
    "handles integer code in real, protected and long mode but cannot emulate int3, SSE/AVX "
    "arithmetic, xsave/xrstor or cmpxchg16b; a stock Linux kernel stops early with an "
    "emulation failure. Tiny integer-only kernels (pyvisor's guests/) run fine.")


class Backend(Value):
    """name: 'vmx', 'svm', 'pvm' or 'unknown'."""

    __slots__ = ("name", "title", "explanation")

    def __init__(self, name: str, title: str, explanation: str) -> None:
        self.name, self.title, self.explanation = name, title, explanation

    @property
    def runs_stock_linux(self) -> bool:
        return self.name in ("vmx", "svm")


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def detect_backend(sys_module: str | os.PathLike = "/sys/module",
                   cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> Backend:
    """Decide from the loaded KVM vendor module, falling back to the CPU flags. (os.path,
    not pathlib: every run asks, and importing pathlib would add a few ms to start-up.)"""
    def loaded(module: str) -> bool:
        return os.path.exists(os.path.join(sys_module, module))

    if loaded("kvm_pvm"):
        return Backend("pvm", "PVM (pagetable-based virtualization, no VT-x/AMD-V)",
                       PVM_EXPLANATION)
    try:
        with open(cpuinfo) as f:
            flags = _cpu_flags(f.read())
    except OSError:
        flags = set()
    if loaded("kvm_intel") or "vmx" in flags:
        return Backend("vmx", "Intel VT-x (kvm_intel)",
                       "hardware virtualization: unmodified guest kernels run natively")
    if loaded("kvm_amd") or "svm" in flags:
        return Backend("svm", "AMD-V (kvm_amd)",
                       "hardware virtualization: unmodified guest kernels run natively")
    return Backend("unknown", "unknown",
                   "no VT-x, AMD-V or PVM module found; guests may not run")
