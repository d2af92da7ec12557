"""The command-line side of the API: the `pyvisor serve` command, and what `pyvisor run`
does with --api-sock or --config-file."""
from __future__ import annotations

import sys

from ..command_line import CommandParser
from ..errors import ConfigError
from ..kvm.system import KVM_DEVICE
from ..log import get_logger
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
                             instance_id, on_notice=lambda line: print(line, file=sys.stderr))
    return _report(outcome)


def _report(outcome: Outcome) -> int:
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        print(outcome.describe(), file=sys.stderr)
    else:
        get_logger("pyvisor").info("%s", outcome.detail)
    return outcome.status


def serve_arguments(parser: CommandParser) -> None:
    """`pyvisor serve`'s options (cli.COMMANDS names this module for it)."""
    parser.add_argument("--api-sock", required=True, metavar="PATH",
                        help="The Unix socket to serve Firecracker's API on (mode 0600).")
    parser.add_argument("--config-file", metavar="FILE",
                        help="Firecracker's JSON machine description; the guest starts at once.")
    parser.add_argument("--id", dest="instance_id", default="anonymous-instance", metavar="ID",
                        help="The instance ID GET / reports. [default: %(default)s]")
    parser.add_argument("--console", default="stdio", metavar="stdio|none|FILE",
                        help="Where the guest's serial console goes. [default: %(default)s]")
    parser.add_argument("--virtio-transport", default="pci", choices=("pci", "mmio"),
                        metavar="pci|mmio",
                        help="How the drives and interfaces attach. [default: %(default)s]")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="Stop after this long (exit status 124).")
    parser.add_argument("--kvm-device", default=KVM_DEVICE, metavar="PATH",
                        help="The KVM device node. [default: %(default)s]")
    parser.add_argument("--seccomp", default="on", choices=("on", "off"), metavar="on|off",
                        help="From InstanceStart (or the snapshot load) on, forbid pyvisor "
                             "exec, fork, ptrace, mount, module loading and the other calls "
                             "it has no use for; file opens stay allowed, since the API names "
                             "any path (see --files-dir). [default: %(default)s]")
    parser.add_argument("--files-dir", metavar="DIR",
                        help="From InstanceStart (or the snapshot load) on, write files "
                             "only beneath DIR (Landlock, Linux 5.13+): snapshots and drives' "
                             "new backing files; the drives at boot may lie anywhere.")


def serve(api_sock: str, config_file: str | None, instance_id: str, console: str,
          virtio_transport: str, timeout: float | None, kvm_device: str, seccomp: str,
          files_dir: str | None) -> int:
    """Serve Firecracker's API on a Unix socket: describe the machine with PUT requests,
    start it with PUT /actions InstanceStart. pyvisor ends when the guest does."""
    host = HostOptions(console=console, kvm_path=kvm_device, virtio_transport=virtio_transport,
                       seccomp=seccomp == "on", files_dir=files_dir)
    return run_with_api(api_sock, config_file, host, None, "", 1, "", None, timeout, instance_id)
