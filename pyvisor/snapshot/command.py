"""`pyvisor restore SNAPSHOT`: resume a saved machine in this process."""
from __future__ import annotations

import sys

from ..command_line import CommandParser, UsageError
from ..debug.gdbstub import parse_address as parse_gdb_address
from ..debug.gdbstub import serving as gdb_serving
from ..kvm.system import KVM_DEVICE
from ..log import get_logger
from ..machine.config import parse_timeout
from ..machine.machine import Machine


def restore_arguments(parser: CommandParser) -> None:
    """`pyvisor restore`'s options (cli.COMMANDS names this module for it)."""
    parser.add_argument("snapshot", metavar="SNAPSHOT", help="A file Machine.save wrote.")
    parser.add_argument("--console", default="stdio", metavar="stdio|virtio|none|FILE",
                        help="Where the console goes now. [default: %(default)s]")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="Stop the guest after this long (status 124).")
    parser.add_argument("--force", action="store_true",
                        help="Use disks whose size or mtime changed since the snapshot was "
                             "saved.")
    parser.add_argument("--kvm-device", default=KVM_DEVICE, metavar="PATH",
                        help="The KVM device. [default: %(default)s]")
    parser.add_argument("--gdb", metavar="tcp:HOST:PORT|unix:PATH",
                        help="Serve the gdb remote protocol there (loopback only).")
    parser.add_argument("--gdb-wait", action="store_true",
                        help="The guest waits for gdb before it runs on.")


def restore(snapshot: str, console: str, timeout: float | None, force: bool,
            kvm_device: str, gdb: str | None, gdb_wait: bool) -> int:
    """Resume the machine saved in SNAPSHOT (Machine.save) where it was paused; the exit
    status is the guest's, as with `pyvisor run`."""
    timeout = parse_timeout(timeout)
    if gdb_wait and gdb is None:
        raise UsageError("--gdb-wait needs --gdb")
    if gdb is not None:
        parse_gdb_address(gdb)          # a bad address is refused before anything is read
    with Machine.restore_from(snapshot, console=console, capture_output=False,
                              kvm_path=kvm_device, force=force) as machine, \
            gdb_serving(machine, gdb) as stub:
        print(f"pyvisor: restored {snapshot} ({machine.describe()})"
              + (f"; gdb stub on {stub.address}" if stub is not None else "")
              + (", the guest waits for gdb" if gdb_wait else ""), file=sys.stderr)
        outcome = machine.run(timeout=timeout, handle_signals=True, paused=gdb_wait,
                              events=stub is None)
    if outcome.kind in ("fault", "error", "timeout", "signal"):
        print(outcome.describe(), file=sys.stderr)
    else:
        get_logger("pyvisor").info("%s", outcome.detail)
    return outcome.status
