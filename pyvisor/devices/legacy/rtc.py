"""MC146818 CMOS real-time clock and its 128-byte NVRAM, as on PCs (ports 0x70/0x71, IRQ 8).

The guest sees the host's clock (UTC) plus an offset: writing the time registers moves the
offset, so a time the guest sets keeps running with the host's. The time registers are
computed from that clock on every read rather than stored, which is why changing DM or
24/12 in register B re-encodes them at once (a real chip keeps the old encoding until its
next update); the alarm registers are stored as written and compared byte for byte, as the
chip does.

The update-in-progress bit is derived from the clock too: it reads 1 during the last
UIP_WINDOW seconds before each second boundary, as on hardware, so Linux's
mc146818_get_time(), which waits for it to clear, never waits longer than that.

Register C's flags are worked out lazily: every access first applies the periodic, alarm
and update-ended events that happened since the previous one. A timer thread does the same
at the next deadline, but only while an enabled interrupt has its flag still clear, so an
RTC whose interrupts are off, or not yet acknowledged, costs no host time.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ..changes import CountingLock
from ..state import DeviceStateError, capture, restore_fields

RTC_INDEX_PORT = 0x70   # index; bit 7 masks NMI
RTC_DATA_PORT = 0x71
PORT_COUNT = 2
RTC_IRQ = 8

CMOS_SIZE = 128

SECONDS = 0x00
SECONDS_ALARM = 0x01
MINUTES = 0x02
MINUTES_ALARM = 0x03
HOURS = 0x04
HOURS_ALARM = 0x05
DAY_OF_WEEK = 0x06     # 1 = Sunday
DAY_OF_MONTH = 0x07
MONTH = 0x08
YEAR = 0x09
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
CENTURY = 0x32         # where PC firmware (and the ACPI FADT default) puts it

A_UIP = 0x80
A_DIVIDER = 0x70       # 0b010 = 32.768 kHz time base, normal operation; stored, not modelled
A_RATE = 0x0F

B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_DM_BINARY = 0x04
B_24H = 0x02
B_DSE = 0x01           # stored only: the host clock is UTC, which has no daylight saving

# The flags sit on the same bits as their enables in register B.
C_IRQF = 0x80
C_PF = 0x40
C_AF = 0x20
C_UF = 0x10
C_SOURCES = C_PF | C_AF | C_UF

D_VRT = 0x80

HOURS_PM = 0x80        # in 12-hour mode
ALARM_DONT_CARE = 0xC0  # an alarm byte with both top bits set matches any value

UIP_WINDOW = 244e-6

# What firmware leaves behind: normal time base at 1024 Hz periodic rate; 24-hour BCD.
A_POWER_ON = 0x26
B_POWER_ON = B_24H

_TIME_REGISTERS = frozenset((SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH,
                             YEAR, CENTURY))
_ALARMS = ((SECONDS, SECONDS_ALARM), (MINUTES, MINUTES_ALARM), (HOURS, HOURS_ALARM))

# The timer thread never sleeps longer than this, so a host wall-clock step cannot stall it.
_MAX_SLEEP = 1.0


def periodic_frequency(rate: int) -> float:
    """Periodic interrupt rate in Hz for register A's rate-select bits (0 = off). With the
    32.768 kHz time base rates 1 and 2 repeat 8 and 9 (datasheet table 3)."""
    if rate == 0:
        return 0.0
    if rate < 3:
        rate += 7
    return 32768 / (1 << (rate - 1))


def _fields_at(t: int) -> dict[int, int]:
    """Binary values of the time registers (24-hour) at Unix time t."""
    tm = time.gmtime(t)
    return {SECONDS: tm.tm_sec, MINUTES: tm.tm_min, HOURS: tm.tm_hour,
            DAY_OF_WEEK: (tm.tm_wday + 1) % 7 + 1, DAY_OF_MONTH: tm.tm_mday,
            MONTH: tm.tm_mon, YEAR: tm.tm_year % 100, CENTURY: tm.tm_year // 100}


def _epoch(fields: dict[int, int]) -> int:
    """Unix time of the time-register values. Whatever the guest wrote must not raise, so
    out-of-range months carry into the year and days past the month's end carry forward;
    the day of the week is implied by the date and ignored."""
    year, month = divmod((fields[CENTURY] * 100 + fields[YEAR]) * 12 + fields[MONTH] - 1, 12)
    month += 1
    # Days from 1970-01-01 (H. Hinnant's days_from_civil), valid for any year.
    if month <= 2:
        year -= 1
    era, yoe = divmod(year, 400)
    doy = (153 * ((month + 9) % 12) + 2) // 5 + fields[DAY_OF_MONTH] - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + fields[HOURS] * 3600 + fields[MINUTES] * 60 + fields[SECONDS]


class CmosRtc:
    """Register on the PioBus at RTC_INDEX_PORT for PORT_COUNT ports.

    `irq(level)` models the IRQ pin (IRQF in register C); it is called only when the level
    changes, with the RTC's lock held, from a vCPU thread or the timer thread, so it must
    not call back into the RTC. `clock()` gives the host time in Unix seconds. With
    `timer=False` no thread is started and interrupts arrive only through `tick()` (or a
    guest access), which is how tests drive the device with a fake clock. Call `close()`
    to stop the timer thread.

    Registers are 8 bits; a wider access reaches only the addressed port, with the low byte.
    Port 0x70 is write-only on PCs and reads as 0xFF (as QEMU).
    """

    def __init__(self, irq: Callable[[bool], None], clock: Callable[[], float] = time.time,
                 *, timer: bool = True) -> None:
        self._irq = irq
        self._clock = clock
        self._timer = timer
        # Counted, the timer thread's wake-ups too: a restore leaves an untouched RTC
        # alone (restore_unchanged). The time registers are the clock, not state.
        self._lock = self.state_changes = CountingLock()
        self._cond = threading.Condition(self._lock.held())
        self._thread: threading.Thread | None = None
        self._closed = False
        self._cmos = bytearray(CMOS_SIZE)    # alarms, A, B and NVRAM; time registers unused
        self._cmos[REG_A] = A_POWER_ON
        self._cmos[REG_B] = B_POWER_ON
        self._index = 0
        self._nmi_masked = False
        self._offset = 0.0                   # guest time - host time, in seconds
        self._frozen: dict[int, int] | None = None   # the time registers while SET is on
        self._flags = 0                      # register C
        self._level = False
        self._last = clock()                 # host time up to which events are applied

    @property
    def nmi_masked(self) -> bool:
        """Bit 7 of the last index write: on PCs it gates NMI, which pyvisor never raises."""
        return self._nmi_masked

    def tick(self) -> float | None:
        """Apply the events due by now; return the host time at which the next interrupt
        may become pending, or None when no enabled interrupt is waiting for one."""
        with self._lock:
            self._advance(self._clock())
            return self._next_deadline()

    def close(self) -> None:
        """Stop the timer thread (for good: later interrupts come only from accesses)."""
        with self._lock:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # --- snapshots ------------------------------------------------------------------------
    _STATE = ("_cmos", "_index", "_nmi_masked", "_offset", "_flags")

    def snapshot_state(self) -> dict:
        """CMOS bytes, the index, register C and the guest's offset from host time (so a
        restored guest's wall clock runs on from the host's: it jumps forward by the time
        the snapshot lay unused)."""
        with self._lock.held():
            self._advance(self._clock())
            state = capture(self, self._STATE)
            state["frozen"] = None if self._frozen is None else sorted(self._frozen.items())
            return state

    def restore_state(self, state: dict) -> None:
        frozen = state.get("frozen")
        try:
            frozen = None if frozen is None else {int(k): int(v) for k, v in frozen}
        except (TypeError, ValueError):
            raise DeviceStateError("CMOS RTC: the saved time registers are malformed") from None
        with self._lock.held():
            plan = (self._cmos[REG_A], self._cmos[REG_B], self._flags, self._frozen is None)
            restore_fields(self, state, self._STATE, "CMOS RTC")
            self._frozen = frozen
            self._last = self._clock()
            self._update_irq()         # the line changes only if the flags say so
            if plan != (self._cmos[REG_A], self._cmos[REG_B], self._flags, frozen is None):
                self._reschedule()     # the timer thread's plan changed

    def restore_unchanged(self) -> None:
        """A restore found the state as the snapshot has it: as after restore_state, the
        events the clock brings count from now."""
        with self._lock.held():
            self._last = self._clock()

    # --- guest side -----------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF
        with self._lock:
            now = self._clock()
            self._advance(now)
            index = self._index
            if index in _TIME_REGISTERS:
                return self._encode(index, self._time_fields(now)[index])
            if index == REG_A:
                return self._cmos[REG_A] | (A_UIP if self._in_update(now) else 0)
            if index == REG_C:
                flags, self._flags = self._flags, 0
                self._update_irq()
                self._reschedule()
                return flags
            if index == REG_D:
                return D_VRT
            return self._cmos[index]

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        with self._lock:
            if offset == 0:
                self._index = value & 0x7F
                self._nmi_masked = bool(value & 0x80)
                return
            now = self._clock()
            self._advance(now)
            index = self._index
            if index in _TIME_REGISTERS:
                self._set_time_field(index, self._decode(index, value), now)
            elif index == REG_A:
                self._cmos[REG_A] = value & ~A_UIP
            elif index == REG_B:
                self._write_b(value, now)
            elif index not in (REG_C, REG_D):   # C and D are read-only
                self._cmos[index] = value
            self._reschedule()

    # --- internals (lock held) ------------------------------------------------------------

    def _write_b(self, value: int, now: float) -> None:
        old = self._cmos[REG_B]
        if value & B_SET:
            value &= ~B_UIE   # the datasheet clears UIE whenever SET is written 1
            if not old & B_SET:
                self._frozen = _fields_at(math.floor(now + self._offset))
        elif self._frozen is not None:
            # Leaving SET restarts the second: the next update is one second from now.
            self._offset = _epoch(self._frozen) - now
            self._frozen = None
        self._cmos[REG_B] = value
        self._update_irq()

    def _time_fields(self, now: float) -> dict[int, int]:
        if self._frozen is not None:
            return self._frozen
        return _fields_at(math.floor(now + self._offset))

    def _set_time_field(self, index: int, value: int, now: float) -> None:
        if self._frozen is not None:
            self._frozen[index] = value
            return
        # Outside SET the write takes effect at once, keeping the fraction of the second.
        guest = now + self._offset
        fields = _fields_at(math.floor(guest))
        fields[index] = value
        self._offset = _epoch(fields) + (guest - math.floor(guest)) - now

    def _in_update(self, now: float) -> bool:
        if self._frozen is not None:
            return False   # SET stops updates and clears UIP
        guest = now + self._offset
        return guest - math.floor(guest) >= 1.0 - UIP_WINDOW

    def _encode(self, index: int, value: int) -> int:
        """A time register's binary value as the guest reads it (BCD/binary, 12/24 h)."""
        b = self._cmos[REG_B]
        pm = 0
        if index == HOURS and not b & B_24H:
            pm = HOURS_PM if value >= 12 else 0
            value = value % 12 or 12
        if not b & B_DM_BINARY:
            value = (value // 10) << 4 | value % 10
        return (value | pm) & 0xFF

    def _decode(self, index: int, value: int) -> int:
        """A guest-written time register back to its binary (24-hour) value."""
        b = self._cmos[REG_B]
        twelve_hour = index == HOURS and not b & B_24H
        pm = twelve_hour and value & HOURS_PM
        if twelve_hour:
            value &= ~HOURS_PM
        if not b & B_DM_BINARY:
            value = (value >> 4) * 10 + (value & 0x0F)
        if twelve_hour:
            value = value % 12 + (12 if pm else 0)
        return value

    def _alarm_matches(self, t: int) -> bool:
        fields = _fields_at(t)
        for reg, alarm_reg in _ALARMS:
            alarm = self._cmos[alarm_reg]
            if (alarm & ALARM_DONT_CARE != ALARM_DONT_CARE
                    and alarm != self._encode(reg, fields[reg])):
                return False
        return True

    def _advance(self, now: float) -> None:
        """Set the register C flags for the events between the last call and `now`. An
        alarm is checked at the latest second boundary only; while AIE is on the timer
        stops at every boundary, so only a polled alarm can miss one."""
        last, self._last = self._last, now
        if now <= last:
            return
        g0, g1 = last + self._offset, now + self._offset
        flags = 0
        freq = periodic_frequency(self._cmos[REG_A] & A_RATE)
        if freq and math.floor(g1 * freq) > math.floor(g0 * freq):
            flags |= C_PF
        second = math.floor(g1)
        if self._frozen is None and second > math.floor(g0):
            flags |= C_UF
            if self._alarm_matches(second):
                flags |= C_AF
        if flags:
            self._flags |= flags
            self._update_irq()

    def _update_irq(self) -> None:
        # IRQF follows the flags and their enables, so enabling an interrupt whose flag is
        # already set raises the pin at once and disabling it lowers the pin (as QEMU).
        if self._flags & self._cmos[REG_B] & C_SOURCES:
            self._flags |= C_IRQF
        else:
            self._flags &= ~C_IRQF
        level = bool(self._flags & C_IRQF)
        if level != self._level:
            self._level = level
            self._irq(level)

    def _next_deadline(self) -> float | None:
        waiting = self._cmos[REG_B] & ~self._flags & C_SOURCES
        guest = self._last + self._offset
        deadlines = []
        freq = periodic_frequency(self._cmos[REG_A] & A_RATE)
        if waiting & C_PF and freq:
            deadlines.append((math.floor(guest * freq) + 1) / freq)
        if waiting & (C_AF | C_UF) and self._frozen is None:
            deadlines.append(math.floor(guest) + 1.0)
        return min(deadlines) - self._offset if deadlines else None

    def _reschedule(self) -> None:
        """Start the timer thread if an interrupt is now due, or wake it to re-plan."""
        if not self._timer or self._closed:
            return
        if self._thread is not None:
            self._cond.notify()
        elif self._next_deadline() is not None:
            self._thread = threading.Thread(target=self._run, name="cmos-rtc", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:            # each wake-up a counted acquire: it may set flags
                if not self._closed:
                    now = self._clock()
                    self._advance(now)
                    deadline = self._next_deadline()
                    if deadline is not None:
                        self._cond.wait(min(deadline - now, _MAX_SLEEP))
                        continue
                self._thread = None
                return
