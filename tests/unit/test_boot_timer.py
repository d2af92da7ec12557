"""The boot timer's hook, without a machine: what counts as the mark, and its line."""
from __future__ import annotations

import time

import pyvisor
from pyvisor.machine.boot_timer import BOOT_TIMER_PORT, BootTimer


class FakeMachine:
    def __init__(self) -> None:
        self.hooks = []

    def on_pio(self, first, last=None, callback=None):
        self.hooks.append((first, last, callback))


def attached() -> tuple[BootTimer, object]:
    timer, machine = BootTimer(), FakeMachine()
    timer.attach(machine)
    ((first, last, callback),) = machine.hooks
    assert (first, last) == (0x99, None) and BOOT_TIMER_PORT == 0x99
    return timer, callback


def test_the_first_write_is_the_mark_and_reads_do_not_count():
    timer, hook = attached()
    assert hook(None, 0x99, 1, 0, False) is None      # a read passes on to the bus
    assert timer.marked_ns is None
    before = time.monotonic_ns()
    assert hook(None, 0x99, 1, 7, True) is None       # so does the write: nothing claims it
    after = time.monotonic_ns()
    assert before <= timer.marked_ns <= after
    first = timer.marked_ns
    hook(None, 0x99, 4, 1, True)
    assert timer.marked_ns == first


def test_the_line_says_since_import_and_the_raw_stamp():
    timer, hook = attached()
    assert timer.describe() == "boot timer: the guest never wrote port 0x99"
    hook(None, 0x99, 1, 0, True)
    since = (timer.marked_ns - pyvisor._imported_ns) / 1e6
    assert timer.describe() == (f"boot timer: the guest wrote port 0x99 {since:.1f} ms after "
                                f"pyvisor was imported (CLOCK_MONOTONIC {timer.marked_ns} ns)")
