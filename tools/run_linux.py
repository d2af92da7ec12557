"""`make run-linux`: boot a stock Debian cloud kernel with a busybox initramfs to a shell.

Fetches the kernel with `apt-get download` (cached, see tests/nested/nestedhost), builds an
initramfs whose init starts an interactive shell on ttyS0, and runs `pyvisor run` with it.
Extra arguments go to `pyvisor run` (e.g. --cpus 4 --mem 1G). On a host whose /dev/kvm
cannot run stock Linux (PVM) it explains why and stops before downloading anything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "nested"))

from pyvisor.kvm.backend import detect_backend  # noqa: E402

INIT = r"""
echo
echo "pyvisor: Debian $(uname -r), $(nproc) CPU(s), busybox shell on ttyS0."
echo "'poweroff -f' powers the guest off; Ctrl-A x quits pyvisor."
setsid cttyhack sh -l
poweroff -f
"""


def main() -> int:
    backend = detect_backend()
    if not backend.runs_stock_linux:
        print(f"pyvisor: this host's KVM is {backend.title}: {backend.explanation}\n"
              f"pyvisor: stock Linux cannot boot here; `make test-nested` boots it inside "
              f"the nested test host instead.", file=sys.stderr)
        return 1
    from nestedhost import linux_guest   # imported late: only hosts that can boot Linux

    guest = linux_guest()
    initrd = guest.initramfs(guest.vmlinux.parent / "run-linux-initrd.gz", INIT)
    pyvisor = str(Path(sys.executable).parent / "pyvisor")
    argv = [pyvisor, "run", str(guest.bzimage), "--initrd", str(initrd), "--cpus", "2",
            "--append", "console=ttyS0 panic=-1 quiet", *sys.argv[1:]]
    os.execv(pyvisor, argv)


if __name__ == "__main__":
    sys.exit(main())
