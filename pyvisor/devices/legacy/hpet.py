"""The High Precision Event Timer (IA-PC HPET specification 1.0a) at HPET_BASE, as QEMU's
PC has it: a 64-bit main counter at 100 MHz (a 10 ns period), three comparators, legacy
replacement routing, and the ACPI HPET table that points at it (acpi/tables.py).

    0x000  capabilities and ID   0x010  configuration (ENABLE, LEG_RT)
    0x020  interrupt status      0x0F0  main counter (writable while halted)
    0x100 + 0x20 * n  timer n: configuration and capabilities, comparator (+0x8)

The counter is computed from the host's monotonic clock on every read. A comparator
fires when the counter (its low 32 bits for a 32-bit timer) reaches it: a periodic timer
then adds its period, skipping periods that passed while nobody looked; a one-shot timer
next matches when the counter comes round again. Interrupts go to an IOAPIC pin the timer
selects among INT_ROUTE_CAP, or with legacy replacement to IRQ 0 (timer 0) and IRQ 8
(timer 1); edge-triggered ones pulse the line, level-triggered ones hold it and set the
status bit until the guest clears it. No FSB (MSI) delivery. Legacy replacement takes
IRQ 8 from the CMOS RTC, whose interrupt reaches its line through rtc_line() (the chipset's
switch, as in QEMU); the in-kernel PIT is not muted (a guest that uses the HPET's legacy
timer leaves the PIT unprogrammed, as Linux does).

A timer thread sleeps until the next deadline, and runs only while an interrupt is armed.
A guest cannot make it spin: it fires a timer at most once per MIN_FIRE_INTERVAL_NS.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..state import capture, restore_fields

HPET_BASE = 0xFED00000
HPET_SIZE = 0x400
PERIOD_FS = 10_000_000          # femtoseconds per tick: 10 ns, 100 MHz (QEMU's)
TIMERS = 3
VENDOR_ID = 0x8086
REV_ID = 1
MIN_FIRE_INTERVAL_NS = 100_000  # at most 10,000 interrupts a second per timer
MAX_SLEEP_NS = 1_000_000_000    # the timer thread re-plans at least this often

CAPABILITIES = 0x000
CONFIG = 0x010
STATUS = 0x020
COUNTER = 0x0F0
TIMER_BASE = 0x100
TIMER_STRIDE = 0x20
TIMER_CONFIG = 0x0
TIMER_COMPARATOR = 0x8

CAP_COUNT_SIZE = 1 << 13
CAP_LEGACY_ROUTE = 1 << 15
CFG_ENABLE = 1 << 0
CFG_LEGACY = 1 << 1

TN_LEVEL = 1 << 1
TN_INT_ENABLE = 1 << 2
TN_PERIODIC = 1 << 3
TN_PERIODIC_CAP = 1 << 4
TN_SIZE_CAP = 1 << 5
TN_SETVAL = 1 << 6
TN_32BIT = 1 << 8
TN_ROUTE_SHIFT = 9
TN_ROUTE_MASK = 0x1F << TN_ROUTE_SHIFT
TN_WRITABLE = TN_LEVEL | TN_INT_ENABLE | TN_PERIODIC | TN_SETVAL | TN_32BIT | TN_ROUTE_MASK
# IOAPIC pins a timer may use outside legacy mode: pin 2, as QEMU's PIIX PC offers (ISA IRQ 0
# is GSI 0 on this machine, so pin 2 is free; the PIC's pin 2 is its cascade, never an IRQ).
ROUTE_CAP = 1 << 2
LEGACY_GSI = (0, 8)             # timers 0 and 1 with legacy replacement: IRQ 0 and IRQ 8

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


def capabilities() -> int:
    """The capabilities and ID register (its low half is the ACPI table's block ID)."""
    return (PERIOD_FS << 32 | VENDOR_ID << 16 | CAP_LEGACY_ROUTE | CAP_COUNT_SIZE
            | (TIMERS - 1) << 8 | REV_ID)


class Hpet:
    """Register on the MmioBus at HPET_BASE for HPET_SIZE bytes. ``irq_line(gsi, level)``
    drives interrupt lines; ``clock`` gives host nanoseconds (tests pass a fake, with
    ``timer=False`` to drive deadlines by hand through ``tick()``). Call close() to stop
    the timer thread."""

    _STATE = ("_config", "_status", "_counter_base", "_tn_config", "_comparator", "_period",
              "_rtc_level")

    def __init__(self, irq_line: Callable[[int, bool], None],
                 clock: Callable[[], int] = time.monotonic_ns, *, timer: bool = True) -> None:
        self._irq_line = irq_line
        self._clock = clock
        self._timer = timer
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._config = 0
        self._status = 0
        self._counter_base = 0           # the counter when halted, or at _started
        self._started = 0                # host ns when the counter last started
        self._tn_config = [TN_PERIODIC_CAP] * TIMERS   # every timer can be periodic (QEMU)
        self._comparator = [MASK64] * TIMERS
        self._period = [0] * TIMERS
        self._next_fire = [0] * TIMERS   # host ns before which timer n does not fire again
        self._last = clock()             # host ns up to which timers have fired
        self._rtc_level = False          # the CMOS RTC's interrupt output

    # --- the counter ----------------------------------------------------------------------
    def _counter(self, now: int) -> int:
        if not self._config & CFG_ENABLE:
            return self._counter_base
        return (self._counter_base + (now - self._started) * 1_000_000 // PERIOD_FS) & MASK64

    def _ticks_to_match(self, n: int, counter: int) -> int:
        """Ticks from ``counter`` until timer n's comparator matches (1 .. 2^width)."""
        mask = MASK32 if self._tn_config[n] & TN_32BIT else MASK64
        return (self._comparator[n] - counter - 1 & mask) + 1

    def _armed(self, n: int) -> bool:
        return bool(self._config & CFG_ENABLE and self._tn_config[n] & TN_INT_ENABLE)

    def _gsi(self, n: int) -> int | None:
        if self._config & CFG_LEGACY and n < len(LEGACY_GSI):
            return LEGACY_GSI[n]
        pin = (self._tn_config[n] & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT
        return pin if ROUTE_CAP >> pin & 1 else None

    # --- firing ---------------------------------------------------------------------------
    def _deadline(self, n: int, now: int) -> int:
        """Host ns at which timer n next fires (it must be armed)."""
        ticks = self._ticks_to_match(n, self._counter(now))
        at = now + -(-ticks * PERIOD_FS // 1_000_000)
        return max(at, self._next_fire[n])

    def _fire(self, n: int, now: int) -> None:
        counter = self._counter(now)
        cfg = self._tn_config[n]
        if cfg & TN_PERIODIC and self._period[n]:
            mask = MASK32 if cfg & TN_32BIT else MASK64
            period = self._period[n] & mask
            behind = (counter - self._comparator[n]) & mask
            self._comparator[n] = (self._comparator[n] + period * (behind // period + 1)) & mask
        self._next_fire[n] = now + MIN_FIRE_INTERVAL_NS
        gsi = self._gsi(n)
        if gsi is None:
            return
        if cfg & TN_LEVEL:
            if not self._status >> n & 1:
                self._status |= 1 << n
                self._irq_line(gsi, True)
        else:
            self._irq_line(gsi, True)
            self._irq_line(gsi, False)

    def _advance(self, now: int) -> int | None:
        """Fire every timer due by ``now``; return the next deadline (host ns), if any."""
        deadlines = []
        for n in range(TIMERS):
            if not self._armed(n):
                continue
            if self._deadline(n, self._last) <= now:
                self._fire(n, now)
            deadlines.append(self._deadline(n, now))
        self._last = now
        return min(deadlines) if deadlines else None

    def tick(self) -> int | None:
        """Fire what is due by now; return the next deadline (host ns) or None."""
        with self._cond:
            return self._advance(self._clock())

    def _reschedule(self) -> None:
        self._last = self._clock()
        if not self._timer or self._closed:
            return
        if self._thread is not None:
            self._cond.notify()
        elif any(self._armed(n) for n in range(TIMERS)):
            self._thread = threading.Thread(target=self._run, name="hpet", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = self._clock()
                deadline = self._advance(now)
                if deadline is None:
                    break
                self._cond.wait(min(max(deadline - now, 0), MAX_SLEEP_NS) / 1e9)
            self._thread = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def rtc_line(self, level: bool) -> None:
        """The CMOS RTC's interrupt output: on IRQ 8 unless legacy replacement gives that
        line to timer 1."""
        with self._cond:
            self._rtc_level = level
            if not self._config & CFG_LEGACY:
                self._irq_line(LEGACY_GSI[1], level)

    # --- registers ------------------------------------------------------------------------
    def _read64(self, reg: int, now: int) -> int:
        if reg == CAPABILITIES:
            return capabilities()
        if reg == CONFIG:
            return self._config
        if reg == STATUS:
            return self._status
        if reg == COUNTER:
            return self._counter(now)
        n, field = divmod(reg - TIMER_BASE, TIMER_STRIDE)
        if reg >= TIMER_BASE and n < TIMERS:
            if field == TIMER_CONFIG:
                return (ROUTE_CAP << 32 | TN_SIZE_CAP | self._tn_config[n]) & ~TN_SETVAL
            if field == TIMER_COMPARATOR:
                cfg = self._tn_config[n]
                return self._comparator[n] & (MASK32 if cfg & TN_32BIT else MASK64)
        return 0

    def _write64(self, reg: int, value: int, now: int) -> None:
        if reg == CONFIG:
            old, self._config = self._config, value & (CFG_ENABLE | CFG_LEGACY)
            if (old ^ self._config) & CFG_LEGACY:
                self._irq_line(LEGACY_GSI[0], False)
                self._irq_line(LEGACY_GSI[1], not self._config & CFG_LEGACY
                               and self._rtc_level)
            if (old ^ self._config) & CFG_ENABLE:
                if self._config & CFG_ENABLE:
                    self._started = now
                else:
                    self._counter_base = self._counter_base + (now - self._started) * \
                        1_000_000 // PERIOD_FS & MASK64
            return
        if reg == STATUS:
            for n in range(TIMERS):
                if value >> n & 1 and self._status >> n & 1:
                    self._status &= ~(1 << n)
                    gsi = self._gsi(n)
                    if gsi is not None:
                        self._irq_line(gsi, False)
            return
        if reg == COUNTER:
            if not self._config & CFG_ENABLE:
                self._counter_base = value & MASK64
            return
        n, field = divmod(reg - TIMER_BASE, TIMER_STRIDE)
        if reg < TIMER_BASE or n >= TIMERS:
            return
        if field == TIMER_CONFIG:
            self._tn_config[n] = self._tn_config[n] & ~TN_WRITABLE | value & TN_WRITABLE
        elif field == TIMER_COMPARATOR:
            cfg = self._tn_config[n]
            value &= MASK32 if cfg & TN_32BIT else MASK64
            if not cfg & TN_PERIODIC or cfg & TN_SETVAL:
                self._comparator[n] = value
            self._period[n] = value
            self._tn_config[n] &= ~TN_SETVAL
        self._next_fire[n] = 0

    def mmio_read(self, offset: int, size: int) -> int:
        shift = (offset & 7) * 8
        with self._cond:
            value = self._read64(offset & ~7, self._clock())
        return value >> shift & ((1 << size * 8) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        shift = (offset & 7) * 8
        mask = ((1 << size * 8) - 1) << shift & MASK64
        with self._cond:
            now = self._clock()
            self._advance(now)
            reg = offset & ~7
            value = value << shift & mask
            if reg != STATUS:         # status bits are write-1-to-clear: only those written
                value |= self._read64(reg, now) & ~mask
            self._write64(reg, value, now)
            self._reschedule()

    # --- snapshots ------------------------------------------------------------------------
    def snapshot_state(self) -> dict:
        """The counter is saved as a value (it goes on from there after a restore)."""
        with self._cond:
            state = capture(self, self._STATE)
            state["_counter_base"] = self._counter(self._clock())
            return state

    def restore_state(self, state: dict) -> None:
        with self._cond:
            restore_fields(self, state, self._STATE, "HPET")
            self._started = self._clock()
            self._next_fire = [0] * TIMERS
            self._reschedule()
