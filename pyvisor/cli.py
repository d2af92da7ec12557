"""The `pyvisor` command. Every user error is one line on stderr and a non-zero status."""
from __future__ import annotations

import os
import sys
import time

from . import __version__
from .command_line import REMAINDER, SUPPRESS, CommandParser, UsageError
from .errors import PyvisorError
from .kvm.system import KVM_DEVICE
from .loader.kernel import BOOT_PROTOCOLS
from .log import DEBUG, INFO, WARNING, get_logger, to_stderr
from .machine.config import DEFAULT_MEM, MachineConfig, parse_timeout

# Each command: the module that defines it, as `NAME_arguments(parser)` and `NAME(**values)`,
# and its line in `pyvisor --help`. A command's module is imported only when it runs:
# `pyvisor run KERNEL` loads neither the API server nor the gdb stub nor the snapshot code
# (tests/unit/test_lazy_imports.py keeps it so).
COMMANDS = {
    "check": ("pyvisor.cli", "Report whether KVM is usable here and what its backend runs."),
    "restore": ("pyvisor.snapshot.command", "Resume a machine saved in a snapshot file."),
    "run": ("pyvisor.cli", "Boot a kernel with its serial console on the terminal."),
    "serve": ("pyvisor.api.command", "Serve Firecracker's API on a Unix socket."),
}


class _TopParser(CommandParser):
    """`pyvisor [-v] COMMAND ...`: the command's own parser takes the rest."""

    def __init__(self) -> None:
        super().__init__("pyvisor", "pyvisor: a minimal hypervisor on Linux KVM.")
        self.usage = "%(prog)s [-h] [-V] [-v] COMMAND [ARGS]..."

    def format_help(self) -> str:
        return super().format_help() + "\nCommands:\n" + "".join(
            f"  {name:<9}{summary}\n" for name, (_, summary) in COMMANDS.items())


def _top_parser() -> CommandParser:
    parser = _TopParser()
    parser.add_argument("-V", "--version", action="version",
                        version=f"pyvisor, version {__version__}",
                        help="Show the version and exit.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="More log output on stderr (-vv for debug).")
    parser.add_argument("command", nargs="?", choices=COMMANDS, help=SUPPRESS)
    parser.add_argument("args", nargs=REMAINDER, help=SUPPRESS)   # after COMMAND, options too
    return parser


def run_arguments(parser: CommandParser) -> None:
    """`pyvisor run`'s options; their help is what `pyvisor run --help` shows."""
    parser.add_argument("kernel", nargs="?", metavar="KERNEL",
                        help="A Linux bzImage or vmlinux, or an ELF64 or Multiboot kernel.")
    parser.add_argument("-m", "--mem", default=DEFAULT_MEM, metavar="SIZE",
                        help="Guest RAM, e.g. 512M, 1G, 65536K or plain bytes. "
                             "[default: %(default)s]")
    parser.add_argument("-c", "--cpus", default=1, type=int, metavar="N",
                        help="Number of vCPUs; application processors wait for INIT/SIPI. "
                             "[default: %(default)s]")
    parser.add_argument("-a", "--append", dest="cmdline", default="", metavar="STR",
                        help="Kernel command line.")
    parser.add_argument("-i", "--initrd", metavar="FILE",
                        help="Initial ramdisk (e.g. a gzipped cpio initramfs); for a Multiboot "
                             "kernel, modules as QEMU takes them: \"mod1 args,mod2\".")
    parser.add_argument("--boot", dest="boot_protocol", default="auto", choices=BOOT_PROTOCOLS,
                        metavar="|".join(BOOT_PROTOCOLS),
                        help="Boot protocol: the Linux 64-bit entry, PVH for an ELF with a Xen "
                             "PVH note, or Multiboot 1/2; auto uses Multiboot for an image "
                             "with a Multiboot header and no Linux setup header, else the "
                             "64-bit entry. [default: %(default)s]")
    parser.add_argument("--disk", dest="disks", action="append", default=[],
                        metavar="PATH[,ro][,serial=ID][,cache=writeback|none]"
                                "[,aio=threads|io_uring][,queues=N]",
                        help="A raw disk image as virtio-blk (repeatable: vda, vdb, ...); "
                             "cache=none is O_DIRECT, aio defaults to io_uring where the host "
                             "has it, queues to one per vCPU.")
    parser.add_argument("--net", dest="nets", action="append", default=[],
                        metavar="tap=NAME[,mac=MAC]",
                        help="A virtio-net interface on a tap device (created when pyvisor "
                             "may).")
    parser.add_argument("--virtio-transport", default="pci", choices=("pci", "mmio"),
                        metavar="pci|mmio",
                        help="virtio-pci devices behind the PCI host bridge, or virtio-mmio "
                             "windows (listed in ACPI and as virtio_mmio.device= on the "
                             "command line). [default: %(default)s]")
    parser.add_argument("--rng", action="store_true",
                        help="A virtio-rng device fed by the host's getrandom.")
    parser.add_argument("--hpet", action="store_true",
                        help="An HPET at 0xFED00000 with its ACPI table (100 MHz counter, 3 "
                             "timers, legacy replacement routing).")
    parser.add_argument("--testdev", action="store_true",
                        help="QEMU's pc-testdev: scratch ports 0xE0/0xE8, flush page 0xE4, IRQ "
                             "lines 0x2000-0x2017, scratch memory at 0xFF000000 (for test "
                             "kernels).")
    parser.add_argument("--on-reboot", default="exit", choices=("exit", "restart"),
                        metavar="exit|restart",
                        help="What a guest reboot does: end pyvisor with status 0, or boot "
                             "again. [default: %(default)s]")
    parser.add_argument("--console", default="stdio", metavar="stdio|virtio|none|FILE",
                        help="Where the consoles go: the terminal with input on the serial "
                             "port (stdio) or on a virtio console, hvc0 (virtio; append "
                             "console=hvc0), nowhere, or a file. [default: %(default)s]")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="Stop the guest after this long (exit status 124); inf: no limit.")
    parser.add_argument("--seccomp", choices=("on", "off"), metavar="on|off",
                        help="Once the machine is built, forbid pyvisor the system calls it "
                             "has no use for (exec, fork, ptrace, mount, module loading, "
                             "opening files for writing, ...). Default: on, except with "
                             "--on-reboot restart, which opens the machine's files again.")
    parser.add_argument("--kvm-device", default=KVM_DEVICE, metavar="PATH",
                        help="The KVM device node. [default: %(default)s]")
    parser.add_argument("--gdb", metavar="tcp:HOST:PORT|unix:PATH",
                        help="Serve gdb's remote protocol there (loopback only): "
                             "gdb KERNEL -ex 'target remote HOST:PORT'.")
    parser.add_argument("--api-sock", metavar="PATH",
                        help="Also serve Firecracker's API on this Unix socket; without "
                             "KERNEL, the machine is described and started through it.")
    parser.add_argument("--config-file", metavar="FILE",
                        help="Boot the machine Firecracker's JSON config file describes.")
    parser.add_argument("--gdb-wait", action="store_true",
                        help="With --gdb: the guest waits at its first instruction for gdb.")
    parser.add_argument("--boot-timer", action="store_true",
                        help="Time the guest's first write to port 0x99 (since pyvisor "
                             "started; printed on stderr at the end).")
    parser.add_argument("--stats", dest="show_stats", action="store_true",
                        help="At the end, print on stderr the guest's exits by reason, port "
                             "and MMIO region, with the time spent serving each kind.")


def run(kernel: str, mem: str, cpus: int, cmdline: str, initrd: str | None,
        boot_protocol: str, disks: list[str], nets: list[str], virtio_transport: str,
        rng: bool, hpet: bool, testdev: bool, on_reboot: str, console: str,
        timeout: float | None, seccomp: str | None,
        kvm_device: str, gdb: str | None, gdb_wait: bool, api_sock: str | None,
        config_file: str | None, boot_timer: bool, show_stats: bool) -> int:
    """Boot KERNEL (a Linux bzImage or vmlinux, or any ELF64 kernel) and connect its
    serial console to the terminal.

    In the console, Ctrl-A x quits and Ctrl-A h lists the escapes. The exit status is 0
    when the guest powers off or reboots, (v << 1) | 1 for a write of v to port 0xF4,
    2 for a guest fault and 124 for --timeout."""
    if api_sock is not None or config_file is not None:
        if disks or nets or rng or gdb or on_reboot != "exit" or boot_timer:
            raise UsageError("--disk, --net, --rng, --gdb, --on-reboot restart and "
                             "--boot-timer are not for --api-sock or --config-file: "
                             "describe drives, interfaces and entropy there")
        from .api.command import run_with_api
        from .api.instance import HostOptions

        host = HostOptions(console=console, kvm_path=kvm_device,
                           virtio_transport=virtio_transport, boot_protocol=boot_protocol,
                           seccomp=seccomp != "off")
        return run_with_api(api_sock, config_file, host, kernel, mem, cpus, cmdline, initrd,
                            timeout)
    if kernel is None:
        raise UsageError("missing KERNEL (or --api-sock / --config-file)")
    config = MachineConfig.build(kernel, mem=mem, cpus=cpus, cmdline=cmdline,
                                 console=console, capture_output=False,
                                 kvm_path=kvm_device, initrd=initrd,
                                 boot_protocol=boot_protocol, disks=disks, nets=nets,
                                 rng=rng, virtio_transport=virtio_transport,
                                 seccomp=_seccomp_wanted(seccomp, on_reboot), testdev=testdev,
                                 hpet=hpet)
    timeout = parse_timeout(timeout)
    if gdb_wait and gdb is None:
        raise UsageError("--gdb-wait needs --gdb")
    if gdb is not None:
        from .debug.gdbstub import parse_address, serving

        parse_address(gdb)              # a bad address is refused before the guest starts
    timer = None
    if boot_timer:
        from .machine.boot_timer import BootTimer

        timer = BootTimer()
    from .machine.machine import Machine

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        with Machine(config) as machine:
            if timer is not None:
                timer.attach(machine)
            if gdb is None:
                outcome = machine.run(timeout=left, handle_signals=True)
            else:
                with serving(machine, gdb) as stub:
                    print(f"pyvisor: gdb stub on {stub.address}"
                          + (", the guest waits for gdb" if gdb_wait else ""), file=sys.stderr)
                    outcome = machine.run(timeout=left, handle_signals=True, paused=gdb_wait,
                                          events=False)
            if show_stats:
                print(machine.stats.format(), file=sys.stderr)
        if not (outcome.kind == "reset" and on_reboot == "restart"):
            break
        get_logger("pyvisor").info("the guest rebooted: booting again")
    if timer is not None:
        print(f"pyvisor: {timer.describe()}", file=sys.stderr)
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        print(outcome.describe(), file=sys.stderr)
    else:
        get_logger("pyvisor").info("%s", outcome.detail)
    return outcome.status


def _seccomp_wanted(choice: str | None, on_reboot: str) -> bool:
    """The filter forbids opening files for writing, which a restart needs (the next
    machine opens /dev/kvm, its disks and taps again): off then, unless asked for."""
    if choice == "on" and on_reboot == "restart":
        raise UsageError("--seccomp on cannot be combined with --on-reboot restart: "
                         "a restart opens /dev/kvm and the disks again")
    return choice == "on" or (choice is None and on_reboot == "exit")


def check_arguments(parser: CommandParser) -> None:
    """`pyvisor check`'s one option."""
    parser.add_argument("--device", default=KVM_DEVICE, metavar="PATH",
                        help="The KVM device. [default: %(default)s]")


def check(device: str) -> int:
    """Report whether KVM is usable here, which backend it has and what that means."""
    from ._native import lib
    from .kvm.backend import detect_backend
    from .kvm.system import REQUIRED_CAPS, Kvm

    optional_caps = {   # reported for the record; pyvisor runs without them
        "KVM_CAP_VCPU_EVENTS": lib.KVM_CAP_VCPU_EVENTS,
        "KVM_CAP_INTERNAL_ERROR_DATA": lib.KVM_CAP_INTERNAL_ERROR_DATA,
        "KVM_CAP_ADJUST_CLOCK": lib.KVM_CAP_ADJUST_CLOCK,
        "KVM_CAP_TSC_DEADLINE_TIMER": lib.KVM_CAP_TSC_DEADLINE_TIMER,
    }
    backend = detect_backend()
    exists = os.path.exists(device)
    print(f"KVM device:  {device} ({'present' if exists else 'missing'}"
          f"{', read/write access' if exists and os.access(device, os.R_OK | os.W_OK) else ''})")
    print(f"backend:     {backend.title}")
    print(f"             {backend.explanation}")
    try:
        with Kvm(device) as kvm:
            print(f"API version: {kvm.api_version}")
            print(f"max vCPUs:   {kvm.max_vcpus()}")
            missing = []
            for title, caps, needed in (("required", REQUIRED_CAPS, True),
                                        ("optional", optional_caps, False)):
                print(f"{title} capabilities:")
                for name, cap in caps.items():
                    present = kvm.check_extension(cap) > 0
                    print(f"  {name:<28} {'yes' if present else 'NO'}")
                    if needed and not present:
                        missing.append(name)
    except PyvisorError as e:
        print(f"pyvisor cannot run: {e}")
        return 1
    if missing:
        print(f"pyvisor cannot run: missing {', '.join(missing)}")
        return 1
    if backend.runs_stock_linux:
        print("pyvisor can run: yes")
    else:
        print("pyvisor can run: yes, tiny integer-only kernels; stock Linux guests need "
              "VT-x or AMD-V")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: turn every user error into one line and a non-zero status."""
    prog = "pyvisor"
    try:
        top = _top_parser().parse(sys.argv[1:] if argv is None else argv)
        if top["command"] is None:
            raise UsageError(f"missing COMMAND: one of {', '.join(COMMANDS)}")
        _log_to_stderr(top["verbose"])
        prog = f"pyvisor {top['command']}"
        status = _run_command(top["command"], prog, top["args"])
    except UsageError as e:
        print(f"pyvisor: {e} (see '{e.prog or prog} --help')", file=sys.stderr)
        sys.exit(2)
    except PyvisorError as e:
        print(f"pyvisor: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("pyvisor: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(status & 0xFF if isinstance(status, int) else 0)


def _run_command(name: str, prog: str, argv: list[str]) -> int:
    """Import the command's module, parse its arguments with its parser, run it."""
    module = __import__(COMMANDS[name][0], fromlist=[name])   # importlib: a module more
    command = getattr(module, name)
    parser = CommandParser(prog, command.__doc__)
    getattr(module, f"{name}_arguments")(parser)
    return command(**parser.parse(argv))


def _log_to_stderr(verbose: int) -> None:
    to_stderr({0: WARNING, 1: INFO}.get(verbose, DEBUG), "pyvisor: %(name)s: %(message)s")


if __name__ == "__main__":
    main()
