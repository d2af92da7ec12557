"""Start-up: importing the CLI, or the package, loads only what every run needs. Each check
runs in a fresh interpreter, since this one has imported everything already."""
from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

# Loaded only by the options or commands that use them (pyvisor/cli.py, __init__.py).
OPTIONAL = ("pyvisor.api", "pyvisor.debug.gdbstub", "pyvisor.snapshot", "pyvisor.devices.virtio",
            "pyvisor.devices.legacy.pc_testdev", "pyvisor.machine.boot_timer", "capstone",
            "http.server", "socketserver")


def modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=60).stdout
    return set(json.loads(out.splitlines()[-1]))


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter loads running code, beyond those it starts with
    (site may load some, e.g. for an editable install)."""
    return modules_after(code) - modules_after("")


def optional_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(OPTIONAL))


def test_importing_the_cli_loads_no_optional_part():
    modules = loaded_after("import pyvisor.cli")
    assert optional_in(modules) == []
    assert "pyvisor.machine.machine" not in modules   # only `run` builds a machine


# Standard modules the run path does without (pyvisor/log.py, collections.abc and
# TYPE_CHECKING for typing, traceback only for a failing hook, no nullcontext in cli.run,
# argparse with gettext and locale only for --help, ctypes nowhere: sandbox/syscall.py,
# mmap only for a disk): about 15 ms of imports. No re (sizes and /proc/meminfo are split by
# hand), hence no enum, which _signal spares too: 5 ms here, 0.2 s in the nested test host.
NOT_ON_THE_RUN_PATH = ("logging", "typing", "traceback", "linecache", "tokenize", "contextlib",
                       "argparse", "gettext", "locale", "ctypes", "mmap", "re.", "enum",
                       "signal")


def on_the_run_path(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "re" or m.startswith(NOT_ON_THE_RUN_PATH))


def test_the_run_path_loads_neither_logging_nor_typing():
    modules = loaded_after("import pyvisor.cli, pyvisor.machine.machine, "
                           "pyvisor.machine.boot_timer, pyvisor.console")
    assert on_the_run_path(modules) == []


def test_the_virtio_devices_load_neither_dataclasses_nor_re():
    """Records are pyvisor.value's and a MAC is checked by hand: dataclasses alone brings
    inspect, ast, dis, re and enum, about 10 ms here for a run with a disk."""
    modules = loaded_after("import pyvisor.cli, pyvisor.machine.machine, "
                           + ", ".join(f"pyvisor.devices.virtio.{name}" for name in
                                       ("blk", "net", "rng", "console", "pci", "mmio")))
    assert [m for m in on_the_run_path(modules) if m != "mmap"] == []
    assert {"dataclasses", "inspect", "ast", "dis"} & modules == set()


def test_the_pyvisor_command_imports_no_more_than_the_cli():
    """bin/pyvisor, not pip's entry-point wrapper, which imports re before anything."""
    trace = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bin" / "pyvisor"),
                            "--version"], capture_output=True, text=True, cwd=ROOT,
                           check=True, timeout=60).stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in trace.splitlines()
               if line.startswith("import time:")}
    assert "pyvisor.cli" in modules
    assert on_the_run_path(modules) == []


def test_the_machine_loads_what_only_some_runs_need_when_they_do():
    modules = loaded_after("import pyvisor.cli, pyvisor.machine.machine")
    assert {"pyvisor.devices.legacy.hpet", "pyvisor.loader.initrd",   # --hpet, --initrd
            "pyvisor.output_sink",                                   # a console file or stdio
            "pyvisor.loader.elf", "pyvisor.loader.multiboot",   # no bzImage needs them
            "pyvisor.x86.pvh",                                  # nor a 64-bit entry
            "pyvisor.machine.stats",                            # asked for after a run
            "pyvisor.machine.report", "pyvisor.x86.pagewalk"} & modules == set()  # a fault


def test_importing_the_package_loads_no_machine():
    modules = loaded_after("import pyvisor")
    assert not any(m.startswith("pyvisor.machine") for m in modules)


def test_library_names_resolve_on_first_use():
    modules = loaded_after("from pyvisor import Machine, MachineConfig, Outcome, FaultReport, "
                           "PyvisorError\n"
                           "assert Machine.__module__ == 'pyvisor.machine.machine'\n"
                           "assert MachineConfig.__module__ == 'pyvisor.machine.config'")
    assert "pyvisor.machine.machine" in modules
    assert optional_in(modules) == []


def test_unknown_package_attribute_is_an_attribute_error():
    out = subprocess.run([sys.executable, "-c", "import pyvisor\n"
                          "try:\n    pyvisor.Nothing\nexcept AttributeError as e:\n    print(e)\n"
                          "print('Machine' in dir(pyvisor))"],
                         capture_output=True, text=True, cwd=ROOT, check=True,
                         timeout=60).stdout.split("\n")
    assert out[0] == "module 'pyvisor' has no attribute 'Nothing'"
    assert out[1] == "True"


def help_of(*args: str) -> str:
    """Code that prints `pyvisor ARGS` in this interpreter and checks it exits 0."""
    return ("import contextlib, io\n"
            "from pyvisor.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n"
            f"        main({list(args)!r})\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, e.code\n"
            "text = out.getvalue()\n")


def test_lazy_subcommands_are_listed_and_load_when_asked_for():
    listed = loaded_after(help_of("--help") + "assert 'serve' in text and 'restore' in text")
    assert optional_in(listed) == []
    modules = loaded_after(help_of("serve", "--help") + "assert '--api-sock' in text")
    assert "pyvisor.api.command" in modules


def test_the_cli_does_without_click():
    assert "click" not in loaded_after(help_of("run", "--help"))


def test_a_command_line_is_parsed_without_argparse():
    modules = loaded_after("from pyvisor.cli import _top_parser\n"
                           "assert _top_parser().parse(['-v', 'run', 'k'])['command'] == 'run'")
    assert "argparse" not in modules
    assert "argparse" in loaded_after(help_of("run", "--help") + "assert '--mem' in text")
