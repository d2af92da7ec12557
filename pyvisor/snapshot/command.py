"""`pyvisor restore SNAPSHOT`: resume a saved machine in this process."""
from __future__ import annotations

import logging

import click

from ..kvm.system import KVM_DEVICE
from ..machine.config import parse_timeout
from ..machine.machine import Machine


@click.command()
@click.argument("snapshot")
@click.option("--console", default="stdio", show_default=True,
              metavar="stdio|virtio|none|FILE", help="Where the console goes now.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the guest after this long (status 124).")
@click.option("--force", is_flag=True,
              help="Use disks whose size or mtime changed since the snapshot was saved.")
@click.option("--kvm-device", default=KVM_DEVICE, show_default=True, metavar="PATH",
              help="The KVM device.")
def restore(snapshot: str, console: str, timeout: float | None, force: bool,
            kvm_device: str) -> int:
    """Resume the machine saved in SNAPSHOT (Machine.save) where it was paused; the exit
    status is the guest's, as with `pyvisor run`."""
    timeout = parse_timeout(timeout)
    with Machine.restore_from(snapshot, console=console, capture_output=False,
                              kvm_path=kvm_device, force=force) as machine:
        click.echo(f"pyvisor: restored {snapshot} ({machine.describe()})", err=True)
        outcome = machine.run(timeout=timeout, handle_signals=True)
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        click.echo(outcome.describe(), err=True)
    else:
        logging.getLogger("pyvisor").info("%s", outcome.detail)
    return outcome.status
