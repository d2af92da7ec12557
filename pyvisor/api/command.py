"""The command-line side of the API: the `pyvisor serve` command, and what `pyvisor run`
does with --api-sock or --config-file."""
from __future__ import annotations

import logging

import click

from ..errors import ConfigError
from ..kvm.system import KVM_DEVICE
from ..machine.config import parse_timeout
from ..machine.outcome import Outcome
from ..units import parse_size
from .instance import HostOptions
from .runner import serve as serve_instance

_MIB = 1 << 20


def run_with_api(api_sock: str | None, config_file: str | None, host: HostOptions,
                 kernel: str | None, mem: str, cpus: int, cmdline: str, initrd: str | None,
                 timeout: float | None, instance_id: str = "anonymous-instance") -> int:
    """Run until the guest stops; the exit status is `pyvisor run`'s."""
    described = None
    if kernel is not None:
        size = parse_size(mem)
        if size % _MIB or size < _MIB:
            raise ConfigError(f"invalid memory size {mem!r}: with --api-sock or --config-file "
                              f"it must be a whole number of MiB")
        described = {"kernel_image_path": kernel, "boot_args": cmdline, "initrd_path": initrd,
                     "vcpu_count": cpus, "mem_size_mib": size // _MIB}
    outcome = serve_instance(api_sock, config_file, host, described, parse_timeout(timeout),
                             instance_id, on_notice=lambda line: click.echo(line, err=True))
    return _report(outcome)


def _report(outcome: Outcome) -> int:
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        click.echo(outcome.describe(), err=True)
    else:
        logging.getLogger("pyvisor").info("%s", outcome.detail)
    return outcome.status


@click.command()
@click.option("--api-sock", required=True, metavar="PATH",
              help="The Unix socket to serve Firecracker's API on (mode 0600).")
@click.option("--config-file", default=None, metavar="FILE",
              help="Firecracker's JSON machine description; the guest starts at once.")
@click.option("--id", "instance_id", default="anonymous-instance", show_default=True,
              help="The instance ID GET / reports.")
@click.option("--console", default="stdio", show_default=True, metavar="stdio|none|FILE",
              help="Where the guest's serial console goes.")
@click.option("--virtio-transport", default="pci", show_default=True,
              type=click.Choice(["pci", "mmio"]), help="How the drives and interfaces attach.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop after this long (exit status 124).")
@click.option("--kvm-device", default=KVM_DEVICE, show_default=True, metavar="PATH",
              help="The KVM device node.")
@click.option("--seccomp", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="From InstanceStart (or the snapshot load) on, forbid pyvisor exec, fork, "
                   "ptrace, mount, module loading and the other calls it has no use for; "
                   "file opens stay allowed, since the API names any path.")
def serve(api_sock: str, config_file: str | None, instance_id: str, console: str,
          virtio_transport: str, timeout: float | None, kvm_device: str, seccomp: str) -> int:
    """Serve Firecracker's API on a Unix socket: describe the machine with PUT requests,
    start it with PUT /actions InstanceStart. pyvisor ends when the guest does."""
    host = HostOptions(console=console, kvm_path=kvm_device, virtio_transport=virtio_transport,
                       seccomp=seccomp == "on")
    return run_with_api(api_sock, config_file, host, None, "", 1, "", None, timeout, instance_id)
