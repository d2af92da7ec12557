"""The `pyvisor` command. Every user error is one line on stderr and a non-zero status."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time

import click

from . import __version__
from .errors import PyvisorError
from .kvm.system import KVM_DEVICE
from .loader.kernel import BOOT_PROTOCOLS
from .machine.config import DEFAULT_MEM, MachineConfig, parse_timeout

# What `run` needs only for some options, and the other commands, are imported when used:
# `pyvisor run KERNEL` loads neither the API server nor the gdb stub nor the snapshot code
# (tests/unit/test_lazy_imports.py keeps it so).
LAZY_COMMANDS = {
    "serve": ("pyvisor.api.command", "serve"),
    "restore": ("pyvisor.snapshot.command", "restore"),
}


class LazyGroup(click.Group):
    """A command group whose commands in LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[name]
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="pyvisor")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """pyvisor: a minimal hypervisor on Linux KVM."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="pyvisor: %(name)s: %(message)s")


@cli.command()
@click.argument("kernel", required=False)
@click.option("--mem", "-m", default=DEFAULT_MEM, show_default=True, metavar="SIZE",
              help="Guest RAM, e.g. 512M, 1G, 65536K or plain bytes.")
@click.option("--cpus", "-c", default=1, show_default=True, type=int, metavar="N",
              help="Number of vCPUs; application processors wait for INIT/SIPI.")
@click.option("--append", "-a", "cmdline", default="", metavar="STR",
              help="Kernel command line.")
@click.option("--initrd", "-i", default=None, metavar="FILE",
              help="Initial ramdisk (e.g. a gzipped cpio initramfs); for a Multiboot "
                   "kernel, modules as QEMU takes them: \"mod1 args,mod2\".")
@click.option("--boot", "boot_protocol", default="auto", show_default=True,
              type=click.Choice(BOOT_PROTOCOLS),
              help="Boot protocol: the Linux 64-bit entry, PVH for an ELF with a Xen PVH "
                   "note, or Multiboot 1/2; auto uses Multiboot for an image with a "
                   "Multiboot header and no Linux setup header, else the 64-bit entry.")
@click.option("--disk", "disks", multiple=True,
              metavar="PATH[,ro][,serial=ID][,cache=writeback|none][,aio=threads|io_uring]"
                      "[,queues=N]",
              help="A raw disk image as virtio-blk (repeatable: vda, vdb, ...); cache=none "
                   "is O_DIRECT, aio defaults to io_uring where the host has it, queues to "
                   "one per vCPU.")
@click.option("--net", "nets", multiple=True, metavar="tap=NAME[,mac=MAC]",
              help="A virtio-net interface on a tap device (created when pyvisor may).")
@click.option("--virtio-transport", default="pci", show_default=True,
              type=click.Choice(["pci", "mmio"]),
              help="virtio-pci devices behind the PCI host bridge, or virtio-mmio windows "
                   "(listed in ACPI and as virtio_mmio.device= on the command line).")
@click.option("--rng", is_flag=True, help="A virtio-rng device fed by the host's getrandom.")
@click.option("--hpet", is_flag=True,
              help="An HPET at 0xFED00000 with its ACPI table (100 MHz counter, 3 timers, "
                   "legacy replacement routing).")
@click.option("--testdev", is_flag=True,
              help="QEMU's pc-testdev: scratch ports 0xE0/0xE8, flush page 0xE4, IRQ lines "
                   "0x2000-0x2017, scratch memory at 0xFF000000 (for test kernels).")
@click.option("--on-reboot", default="exit", show_default=True,
              type=click.Choice(["exit", "restart"]),
              help="What a guest reboot does: end pyvisor with status 0, or boot again.")
@click.option("--console", default="stdio", show_default=True,
              metavar="stdio|virtio|none|FILE",
              help="Where the consoles go: the terminal with input on the serial port "
                   "(stdio) or on a virtio console, hvc0 (virtio; append console=hvc0), "
                   "nowhere, or a file.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the guest after this long (exit status 124); inf: no limit.")
@click.option("--seccomp", type=click.Choice(["on", "off"]), default=None,
              help="Once the machine is built, forbid pyvisor the system calls it has no "
                   "use for (exec, fork, ptrace, mount, module loading, opening files for "
                   "writing, ...). Default: on, except with --on-reboot restart, which "
                   "opens the machine's files again.")
@click.option("--kvm-device", default=KVM_DEVICE, show_default=True, metavar="PATH",
              help="The KVM device node.")
@click.option("--gdb", default=None, metavar="tcp:HOST:PORT|unix:PATH",
              help="Serve gdb's remote protocol there (loopback only): "
                   "gdb KERNEL -ex 'target remote HOST:PORT'.")
@click.option("--api-sock", default=None, metavar="PATH",
              help="Also serve Firecracker's API on this Unix socket; without KERNEL, the "
                   "machine is described and started through it.")
@click.option("--config-file", default=None, metavar="FILE",
              help="Boot the machine Firecracker's JSON config file describes.")
@click.option("--gdb-wait", is_flag=True,
              help="With --gdb: the guest waits at its first instruction for gdb.")
@click.option("--boot-timer", is_flag=True,
              help="Time the guest's first write to port 0x99 (since pyvisor started; "
                   "printed on stderr at the end).")
@click.option("--stats", "show_stats", is_flag=True,
              help="At the end, print on stderr the guest's exits by reason, port and MMIO "
                   "region, with the time spent serving each kind.")
def run(kernel: str, mem: str, cpus: int, cmdline: str, initrd: str | None,
        boot_protocol: str, disks: tuple[str, ...], nets: tuple[str, ...], virtio_transport: str, rng: bool, hpet: bool, testdev: bool, on_reboot: str, console: str, timeout: float | None,
        seccomp: str | None,
        kvm_device: str, gdb: str | None, gdb_wait: bool, api_sock: str | None,
        config_file: str | None, boot_timer: bool, show_stats: bool) -> int:
    """Boot KERNEL (a Linux bzImage or vmlinux, or any ELF64 kernel) and connect its
    serial console to the terminal.

    In the console, Ctrl-A x quits and Ctrl-A h lists the escapes. The exit status is 0
    when the guest powers off or reboots, (v << 1) | 1 for a write of v to port 0xF4,
    2 for a guest fault and 124 for --timeout."""
    if api_sock is not None or config_file is not None:
        if disks or nets or rng or gdb or on_reboot != "exit" or boot_timer:
            raise click.UsageError("--disk, --net, --rng, --gdb, --on-reboot restart and "
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
        raise click.UsageError("missing KERNEL (or --api-sock / --config-file)")
    config = MachineConfig.build(kernel, mem=mem, cpus=cpus, cmdline=cmdline,
                                 console=console, capture_output=False,
                                 kvm_path=kvm_device, initrd=initrd,
                                 boot_protocol=boot_protocol, disks=disks, nets=nets,
                                 rng=rng, virtio_transport=virtio_transport,
                                 seccomp=_seccomp_wanted(seccomp, on_reboot), testdev=testdev,
                                 hpet=hpet)
    timeout = parse_timeout(timeout)
    if gdb_wait and gdb is None:
        raise click.UsageError("--gdb-wait needs --gdb")
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
        with Machine(config) as machine, \
                (serving(machine, gdb) if gdb else contextlib.nullcontext()) as stub:
            if timer is not None:
                timer.attach(machine)
            if stub is not None:
                click.echo(f"pyvisor: gdb stub on {stub.address}"
                           + (", the guest waits for gdb" if gdb_wait else ""), err=True)
            outcome = machine.run(timeout=left, handle_signals=True, paused=gdb_wait,
                                  events=stub is None)
            if show_stats:
                click.echo(machine.stats.format(), err=True)
        if not (outcome.kind == "reset" and on_reboot == "restart"):
            break
        logging.getLogger("pyvisor").info("the guest rebooted: booting again")
    if timer is not None:
        click.echo(f"pyvisor: {timer.describe()}", err=True)
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        click.echo(outcome.describe(), err=True)
    else:
        logging.getLogger("pyvisor").info("%s", outcome.detail)
    return outcome.status


def _seccomp_wanted(choice: str | None, on_reboot: str) -> bool:
    """The filter forbids opening files for writing, which a restart needs (the next
    machine opens /dev/kvm, its disks and taps again): off then, unless asked for."""
    if choice == "on" and on_reboot == "restart":
        raise click.UsageError("--seccomp on cannot be combined with --on-reboot restart: "
                               "a restart opens /dev/kvm and the disks again")
    return choice == "on" or (choice is None and on_reboot == "exit")


@cli.command()
@click.option("--device", default=KVM_DEVICE, show_default=True, help="The KVM device.")
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
    click.echo(f"KVM device:  {device} ({'present' if exists else 'missing'}"
               f"{', read/write access' if exists and os.access(device, os.R_OK | os.W_OK) else ''})")
    click.echo(f"backend:     {backend.title}")
    click.echo(f"             {backend.explanation}")
    try:
        with Kvm(device) as kvm:
            click.echo(f"API version: {kvm.api_version}")
            click.echo(f"max vCPUs:   {kvm.max_vcpus()}")
            missing = []
            for title, caps, needed in (("required", REQUIRED_CAPS, True),
                                        ("optional", optional_caps, False)):
                click.echo(f"{title} capabilities:")
                for name, cap in caps.items():
                    present = kvm.check_extension(cap) > 0
                    click.echo(f"  {name:<28} {'yes' if present else 'NO'}")
                    if needed and not present:
                        missing.append(name)
    except PyvisorError as e:
        click.echo(f"pyvisor cannot run: {e}")
        return 1
    if missing:
        click.echo(f"pyvisor cannot run: missing {', '.join(missing)}")
        return 1
    if backend.runs_stock_linux:
        click.echo("pyvisor can run: yes")
    else:
        click.echo("pyvisor can run: yes, tiny integer-only kernels; stock Linux guests need "
                   "VT-x or AMD-V")
    return 0



def main(argv: list[str] | None = None) -> None:
    """Entry point: turn every user error into one line and a non-zero status."""
    try:
        status = cli.main(args=argv, prog_name="pyvisor", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("pyvisor: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        hint = f" (see 'pyvisor {e.ctx.info_name} --help')" if getattr(e, "ctx", None) and e.ctx.parent else ""
        click.echo(f"pyvisor: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except PyvisorError as e:
        click.echo(f"pyvisor: {e}", err=True)
        sys.exit(1)
    sys.exit(status & 0xFF if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
