"""pyvisor: a minimal type-2 hypervisor on Linux KVM with a Python control plane.

The library API is the same machine the CLI runs:

    from pyvisor import Machine
    with Machine(kernel="guests/out/hello.elf", mem="64M", cmdline="hello=world") as m:
        outcome = m.run(timeout=30)
    print(outcome.status, m.console_text)

The layers below (pyvisor.kvm, pyvisor.memory, pyvisor.loader, pyvisor.x86,
pyvisor.devices) are importable on their own."""

__version__ = "0.1.0"

from .errors import PyvisorError  # noqa: E402
from .machine.config import MachineConfig  # noqa: E402
from .machine.machine import Machine  # noqa: E402
from .machine.outcome import Outcome  # noqa: E402
from .machine.report import FaultReport  # noqa: E402

__all__ = ["Machine", "MachineConfig", "Outcome", "FaultReport", "PyvisorError", "__version__"]
