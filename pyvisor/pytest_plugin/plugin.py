"""The pytest side: fixtures, the `pyvisor` marker, the --pyvisor-kernel option and the
failure report sections. Loaded through the `pytest11` entry point pyvisor installs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..machine.config import DEFAULT_MEM
from ..machine.machine import Machine
from .vm import TAIL_LINES, GuestVM, summary

_VMS = pytest.StashKey[list]()
# Machine() options the factory spells the way the `pyvisor run` command line does.
_RENAMED = {"append": "cmdline"}
_FAULT_KINDS = ("fault", "error")

VmFactory = Callable[..., GuestVM]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyvisor", "pyvisor guest kernels")
    group.addoption("--pyvisor-kernel", action="append", default=[], metavar="PATH",
                    help="Run the tests that use pyvisor_machine or pyvisor_kernel once per "
                         "kernel given (repeatable); overrides the pyvisor marker's kernel.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pyvisor(kernel=PATH, mem=SIZE, cpus=N, append=STR, **options): the machine "
                   "the pyvisor_machine fixture starts (options as for pyvisor.Machine)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    kernels = metafunc.config.getoption("pyvisor_kernel")
    if kernels and "pyvisor_kernel" in metafunc.fixturenames:
        metafunc.parametrize("pyvisor_kernel", kernels, indirect=True,
                             ids=[Path(k).name for k in kernels])


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    """The pyvisor markers' keyword arguments, the closest (function over class over
    module) winning for each key."""
    options: dict[str, Any] = {}
    for marker in node.iter_markers("pyvisor"):
        if marker.args:
            raise pytest.UsageError(f"{node.nodeid}: the pyvisor marker takes keyword "
                                    f"arguments only (kernel=..., mem=..., cpus=...)")
        for key, value in marker.kwargs.items():
            options.setdefault(key, value)
    return options


def _require_kvm(path: str) -> None:
    """Skip, naming the reason, where this machine cannot run guests at all."""
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing: this machine has no KVM")
    if not os.access(path, os.R_OK | os.W_OK):
        pytest.skip(f"{path} is not accessible: pyvisor needs read and write access "
                    f"(the kvm group, or root)")


@pytest.fixture
def pyvisor_kernel(request: pytest.FixtureRequest) -> str:
    """The kernel under test: one of --pyvisor-kernel, else the pyvisor marker's kernel."""
    if hasattr(request, "param"):
        return request.param
    kernel = _marker_options(request.node).get("kernel")
    if kernel is None:
        pytest.fail("no kernel to boot: give @pytest.mark.pyvisor(kernel=...) or "
                    "--pyvisor-kernel PATH", pytrace=False)
    return str(kernel)


@pytest.fixture
def pyvisor_vm(request: pytest.FixtureRequest) -> Iterator[VmFactory]:
    """A factory: `pyvisor_vm(kernel, mem="64M", cpus=2, append="quiet")` builds and
    starts a Machine and returns it as a GuestVM. Every machine it made is stopped and
    closed when the test ends, however it ends. `paused=True` starts with the vCPUs
    waiting for resume(); other keywords go to pyvisor.Machine (initrd, disks, rng, ...)."""
    vms: list[GuestVM] = []
    request.node.stash[_VMS] = vms

    def make(kernel: str | os.PathLike | None = None, mem: str | int = DEFAULT_MEM,
             cpus: int = 1, append: str = "", *, paused: bool = False,
             **options: Any) -> GuestVM:
        if kernel is None:
            kernel = request.getfixturevalue("pyvisor_kernel")
        _require_kvm(options.get("kvm_path", "/dev/kvm"))
        machine = Machine(kernel=os.fspath(kernel), mem=mem, cpus=cpus, cmdline=append,
                          **options)
        vm = GuestVM(machine)
        vms.append(vm)
        machine.start(paused=paused)
        return vm

    try:
        yield make
    finally:
        for vm in vms:
            vm.machine.close()


@pytest.fixture
def pyvisor_machine(pyvisor_vm: VmFactory, pyvisor_kernel: str,
                    request: pytest.FixtureRequest) -> GuestVM:
    """The machine the pyvisor marker describes, started (the declarative style)."""
    options = _marker_options(request.node)
    options.pop("kernel", None)
    return pyvisor_vm(pyvisor_kernel, **options)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report gets each machine's console tail and, when the guest
    faulted (or a hook raised), the fault report with its disassembly."""
    report = yield
    if report.failed:
        vms = item.stash.get(_VMS, [])
        for number, vm in enumerate(vms, 1):
            machine = vm.machine
            name = Path(machine.config.kernel).name + (f" #{number}" if len(vms) > 1 else "")
            outcome = machine.outcome
            state = summary(outcome) if outcome else machine.state
            report.sections.append((f"pyvisor console: {name} ({state})",
                                    vm.tail(TAIL_LINES) or "(no console output)"))
            if outcome is not None and outcome.kind in _FAULT_KINDS:
                report.sections.append((f"pyvisor fault report: {name}", outcome.describe()))
    return report
