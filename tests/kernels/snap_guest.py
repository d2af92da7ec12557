"""guests/kernels/snap_target.c as the snapshot tests drive it: its ports, a machine
booting it, and the round lines it prints (each test compares a replay with a fresh run)."""
from __future__ import annotations

import re

from helpers import guest
from pyvisor import Machine

READY_PORT, ROUND_PORT = 0x85, 0x84   # "ready for a snapshot", "round N done"


def snap_target(pages: int = 8, rounds: int = 5, cpus: int = 1, options: str = "",
                **kw) -> Machine:
    """`options`: more of the guest's command line (devices=1, irqchip=1, quiet=1)."""
    return Machine(kernel=guest("snap_target"), mem="64M", cpus=cpus,
                   cmdline=f"pages={pages} rounds={rounds} {options}".rstrip(), **kw)


def rounds_of(text: str) -> list[str]:
    return re.findall(r"^(?:round|done) [^\r\n]*", text, re.M)


def fresh_run(pages: int = 8, rounds: int = 5, options: str = "") -> list[str]:
    """What the guest prints when nothing restores it."""
    with snap_target(pages, rounds, options=options) as m:
        assert m.run(timeout=60).status == 3
        return rounds_of(m.console_text)
