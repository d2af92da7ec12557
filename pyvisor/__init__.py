"""pyvisor: a minimal type-2 hypervisor on Linux KVM with a Python control plane.

The library API is the same machine the CLI runs:

    from pyvisor import Machine
    with Machine(kernel="guests/out/hello.elf", mem="64M", cmdline="hello=world") as m:
        outcome = m.run(timeout=30)
    print(outcome.status, m.console_text)

The layers below (pyvisor.kvm, pyvisor.memory, pyvisor.loader, pyvisor.x86,
pyvisor.devices) are importable on their own."""

import time as _time

_imported_ns = _time.monotonic_ns()   # the boot timer's origin (machine/boot_timer.py)
__version__ = "0.1.0"

from .errors import PyvisorError  # noqa: E402

# The library's names, imported on first use (PEP 562), so that `import pyvisor.cli` or
# `import pyvisor.units` does not build the whole machine package first.
_LAZY = {
    "Machine": ".machine.machine",
    "MachineConfig": ".machine.config",
    "Outcome": ".machine.outcome",
    "FaultReport": ".machine.report",
}

__all__ = ["Machine", "MachineConfig", "Outcome", "FaultReport", "PyvisorError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
