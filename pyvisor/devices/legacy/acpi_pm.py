"""ACPI fixed-hardware power management block: PM1a event and control registers, the PM
timer and the reset register, as described by the FADT that pyvisor.acpi builds.

One device covers the whole block; register it on the PioBus at PM_BASE for PM_LENGTH
ports:

    PM_BASE + 0x0  PM1a_STS   16 bit  status, write 1 to clear   (FADT PM1a_EVT_BLK, 4 bytes)
    PM_BASE + 0x2  PM1a_EN    16 bit  enables
    PM_BASE + 0x4  PM1a_CNT   16 bit  control: SCI_EN, SLP_TYP, SLP_EN (FADT PM1a_CNT_BLK)
    PM_BASE + 0x8  PM_TMR     32 bit  3.579545 MHz, 24-bit counter    (FADT PM_TMR_BLK)
    PM_BASE + 0xC  RESET       8 bit  write RESET_VALUE to reset      (FADT RESET_REG)

There is no SMI command port: the platform is always in ACPI mode, so SCI_EN reads as 1 and
cannot be cleared. Writing SLP_EN with SLP_TYP == SLP_TYP_S5 (the value the DSDT's \\_S5
package gives) powers off; no other sleep state is advertised, so other SLP_TYP values are
logged and ignored. There is no GPE block.

The power button is a fixed feature (the FADT leaves PWR_BUTTON clear): press_power_button()
sets PWRBTN_STS and, while the guest has PWRBTN_EN set, asserts the SCI (level-triggered,
ISA IRQ 9) until the guest clears the status bit. That is the graceful "ACPI shutdown"
request: Linux's ACPI button driver reports it as KEY_POWER, and user space (systemd-logind,
acpid) decides whether to shut down.

Only the power button raises the SCI. The other PM1 enable bits (TMR_EN, GBL_EN, SLPBTN_EN,
RTC_EN, PCIEXP_WAKE_DIS) are plain storage, as in QEMU: ACPICA enables the global lock event
and Linux's rtc-cmos the RTC event, and both check that the bit sticks (logging an ACPI error
if not), but no status ever sets for them here: there is no firmware to share the global lock
with, no fixed RTC alarm status (the FADT sets FIX_RTC), and the PM timer's overflow status
(TMR_STS, computed when read) does not interrupt.

Registers may be accessed with any width (1, 2 or 4 bytes) at any offset; an access is
split into the byte lanes of the registers it covers, reserved bytes read as 0 and ignore
writes.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from ...log import get_logger
from ..changes import CountingLock
from ..state import capture, restore_fields

_log = get_logger("pyvisor.devices")

PM_BASE = 0x600
PM_LENGTH = 0x10

# Offsets inside the block.
PM1_STS = 0x0
PM1_EN = 0x2
PM1_CNT = 0x4
PM_TMR = 0x8
RESET = 0xC

PM1_EVT_LEN = 4     # status + enable
PM1_CNT_LEN = 2
PM_TMR_LEN = 4
RESET_VALUE = 0x01

SCI_IRQ = 9

# PM1 status / enable bits (ACPI 6.x, 4.8.3.1).
TMR_STS = 1 << 0
BM_STS = 1 << 4
GBL_STS = 1 << 5
PWRBTN_STS = 1 << 8
SLPBTN_STS = 1 << 9
RTC_STS = 1 << 10
PCIEXP_WAKE_STS = 1 << 14
WAK_STS = 1 << 15

TMR_EN = 1 << 0
GBL_EN = 1 << 5
PWRBTN_EN = 1 << 8
SLPBTN_EN = 1 << 9
RTC_EN = 1 << 10

# PM1 control bits (ACPI 6.x, 4.8.3.2).
SCI_EN = 1 << 0
BM_RLD = 1 << 1
GBL_RLS = 1 << 2
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13

SLP_TYP_S5 = 5
SLP_TYP_S3 = 1      # the DSDT's \_S3 package (QEMU's value)

PM_TIMER_HZ = 3_579_545
PM_TIMER_MASK = 0xFFFFFF
_NS_PER_S = 1_000_000_000

# Status bits the guest can clear and enable bits that stick.
_W1C_BITS = TMR_STS | PWRBTN_STS | WAK_STS
PCIEXP_WAKE_DIS = 1 << 14
_EN_BITS = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | PCIEXP_WAKE_DIS
# Status bits that raise the SCI when their enable is set (same bit positions).
_SCI_SOURCES = PWRBTN_STS
_CNT_BITS = BM_RLD | SLP_TYP_MASK

# (offset, width) of every register, for splitting accesses into byte lanes.
_REGISTERS = ((PM1_STS, 2), (PM1_EN, 2), (PM1_CNT, 2), (PM_TMR, 4), (RESET, 1))


class AcpiPm:
    """The PM block. `request_poweroff()` is called when the guest enters S5,
    `request_reset()` when it writes RESET_VALUE to the reset register (either may be
    called more than once). `sci(level)` drives ISA IRQ 9 / GSI 9 (True = asserted; the
    MADT declares it level-triggered, active-high); it is called with the device's lock
    held, only on changes, so it must not call back into the device. `clock` returns
    nanoseconds (time.monotonic_ns by default) and drives the PM timer.

    With `request_suspend`, SLP_TYP_S3 with SLP_EN calls it (on the vCPU thread that wrote
    it, after the write completes) and `power_button` is told of every button press (a
    wake event while suspended); `woke()` sets WAK_STS for the resumed guest."""

    def __init__(self, request_poweroff: Callable[[], None], request_reset: Callable[[], None],
                 sci: Callable[[bool], None] | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns,
                 request_suspend: Callable[[], None] | None = None,
                 power_button: Callable[[], None] | None = None) -> None:
        self._request_poweroff = request_poweroff
        self._request_reset = request_reset
        self._request_suspend = request_suspend
        self._power_button = power_button
        self._sci = sci
        self._clock = clock
        self._origin = clock()
        # Counted: the PM timer (served unlocked, here and in the shim) is host time, not
        # state, so every change is under the lock.
        self._lock = self.state_changes = CountingLock()
        self._sts = 0
        self._en = 0
        self._cnt = 0
        self._tmr_epoch = 0      # timer ticks >> 23 when TMR_STS was last cleared
        self._sci_level = False

    # --- host side --------------------------------------------------------------------

    def press_power_button(self) -> None:
        """A momentary press of the fixed-feature power button (a graceful shutdown
        request the guest may act on or ignore)."""
        with self._lock:
            self._sts |= PWRBTN_STS
            self._update_sci()
        if self._power_button is not None:
            self._power_button()

    def woke(self) -> None:
        """The machine is back from a sleep state: WAK_STS, as the OS's resume path reads."""
        with self._lock:
            self._sts |= WAK_STS

    @property
    def sci_level(self) -> bool:
        return self._sci_level

    @property
    def timer_origin_ns(self) -> int:
        """When (on the device's clock) the PM timer read 0: the native shim serves timer
        reads from CLOCK_MONOTONIC with this origin, which is the default clock's."""
        return self._origin

    def timer_ticks(self) -> int:
        """The free-running tick count (not truncated to 24 bits)."""
        return (self._clock() - self._origin) * PM_TIMER_HZ // _NS_PER_S

    # --- snapshots --------------------------------------------------------------------
    _STATE = ("_sts", "_en", "_cnt", "_tmr_epoch")

    def snapshot_state(self) -> dict:
        """PM1 status, enable and control. The PM timer is host time, as the wall clock:
        it is not rewound by a restore."""
        with self._lock.held():
            return capture(self, self._STATE)

    def restore_state(self, state: dict) -> None:
        with self._lock.held():
            restore_fields(self, state, self._STATE, "ACPI PM")
            self._update_sci()         # the line changes only if the bits say so

    # --- guest side -------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        if offset == PM_TMR and size == 4:      # the hot path: Linux's acpi_pm clocksource
            return self.timer_ticks() & PM_TIMER_MASK
        with self._lock:
            values: dict[int, int] = {}
            result = 0
            for lane in range(size):
                reg = _register_at(offset + lane)
                if reg is None:
                    continue
                base, _ = reg
                if base not in values:
                    values[base] = self._read_register(base)
                byte = (values[base] >> (8 * (offset + lane - base))) & 0xFF
                result |= byte << (8 * lane)
            return result

    def pio_write(self, offset: int, size: int, value: int) -> None:
        # Collect (value, byte mask) per register, then apply each register once.
        writes: dict[int, list[int]] = {}
        for lane in range(size):
            reg = _register_at(offset + lane)
            if reg is None:
                continue
            base, _ = reg
            shift = 8 * (offset + lane - base)
            entry = writes.setdefault(base, [0, 0])
            entry[0] |= ((value >> (8 * lane)) & 0xFF) << shift
            entry[1] |= 0xFF << shift
        actions: list[Callable[[], None]] = []
        with self._lock:
            for base, (bits, mask) in writes.items():
                action = self._write_register(base, bits, mask)
                if action is not None:
                    actions.append(action)
            self._update_sci()
        # Outside the lock: ending the machine may take a while and must not block the SCI.
        for action in actions:
            action()

    # --- internals (lock held) --------------------------------------------------------

    def _read_register(self, base: int) -> int:
        if base == PM1_STS:
            sts = self._sts
            if (self.timer_ticks() >> 23) != self._tmr_epoch:
                sts |= TMR_STS      # bit 23 of the counter toggled since the last clear
            return sts
        if base == PM1_EN:
            return self._en
        if base == PM1_CNT:
            return self._cnt | SCI_EN
        if base == PM_TMR:
            return self.timer_ticks() & PM_TIMER_MASK
        return 0    # RESET reads as 0

    def _write_register(self, base: int, bits: int, mask: int) -> Callable[[], None] | None:
        if base == PM1_STS:
            clear = bits & mask & _W1C_BITS
            if clear & TMR_STS:
                self._tmr_epoch = self.timer_ticks() >> 23
            self._sts &= ~clear
        elif base == PM1_EN:
            self._en = (self._en & ~mask) | (bits & mask & _EN_BITS)
        elif base == PM1_CNT:
            self._cnt = (self._cnt & ~mask) | (bits & mask & _CNT_BITS)
            if bits & mask & SLP_EN:
                slp_typ = (self._cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT
                if slp_typ == SLP_TYP_S5:
                    _log.info("ACPI: guest entered S5 (soft off)")
                    return self._request_poweroff
                if slp_typ == SLP_TYP_S3 and self._request_suspend is not None:
                    _log.info("ACPI: guest entered S3 (suspend to RAM)")
                    return self._request_suspend
                _log.warning("ACPI: guest asked for sleep type %d, which is not supported; "
                             "ignored", slp_typ)
        elif base == RESET:
            if mask & 0xFF and bits & 0xFF == RESET_VALUE:
                _log.info("ACPI: guest wrote the reset register")
                return self._request_reset
        # PM_TMR is read-only.
        return None

    def _update_sci(self) -> None:
        level = bool(self._sts & self._en & _SCI_SOURCES)
        if level != self._sci_level:
            self._sci_level = level
            if self._sci is not None:
                self._sci(level)


def _register_at(offset: int) -> tuple[int, int] | None:
    for base, width in _REGISTERS:
        if base <= offset < base + width:
            return base, width
    return None
