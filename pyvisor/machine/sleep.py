"""ACPI S3, suspend to RAM, for a Machine, done with its public pause/resume and Cpu state
API the way firmware would do it on a PC.

The guest writes SLP_TYP = \\_S3's value with SLP_EN to PM1a_CNT (AcpiPm calls suspend()).
Then every vCPU is paused; RAM and the devices keep their state, and the machine sleeps
until a wake event: an RTC interrupt (the guest's alarm) or the power button. On waking
the bootstrap processor starts in real mode at the FACS firmware waking vector
(CS = vector >> 4, IP = vector & 0xF, the rest as at power-on), every other vCPU waits
for a SIPI as after INIT, PM1_STS has WAK_STS set, and the machine runs again. A guest
that set no waking vector cannot be resumed: like a PC's firmware, pyvisor then reboots
it (the "reset" outcome). While the machine sleeps no vCPU thread runs and no host time is
spent beyond the wait.
"""
from __future__ import annotations

import struct
import threading

from .._native import lib
from ..acpi import tables
from ..acpi.builder import AcpiError, parse_tables
from ..errors import PyvisorError
from ..log import get_logger
from ..memory.guest_memory import GuestMemoryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..debug.cpu import Cpu
    from .machine import Machine

_log = get_logger("pyvisor.machine")

FACS_WAKING_VECTOR = 12          # ACPI 6.0, table 5-37: Firmware Waking Vector (32 bits)
CR0_POWER_ON = 0x60000010        # CD | NW | ET, as after RESET or INIT


def real_mode(cpu: "Cpu", cs: int, ip: int) -> None:
    """Put a paused vCPU in the power-on state of real mode, at cs:ip. The segments are
    changed in place in the Sregs struct and written with the control registers at once."""
    s = cpu.sregs
    for name in ("ds", "es", "fs", "gs", "ss", "cs"):
        seg = getattr(s, name)
        seg.selector, seg.base, seg.limit = 0, 0, 0xFFFF
        seg.type, seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g = 3, 1, 0, 0, 1, 0, 0
        seg.avl, seg.unusable = 0, 0
    s.cs.selector, s.cs.base, s.cs.type = cs, cs << 4, 0xB
    s.tr.selector, s.tr.base, s.tr.limit, s.tr.type, s.tr.present = 0, 0, 0xFFFF, 0xB, 1
    s.ldt.selector, s.ldt.base, s.ldt.limit, s.ldt.type, s.ldt.present = 0, 0, 0xFFFF, 2, 1
    s.gdt.base, s.gdt.limit = 0, 0xFFFF
    s.idt.base, s.idt.limit = 0, 0xFFFF
    s.update(cr0=CR0_POWER_ON, cr2=0, cr3=0, cr4=0, efer=0)   # the segments go with it
    cpu.regs.update(rip=ip, rflags=0x2, **{name: 0 for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")})


def waking_vector(memory, rsdp: int) -> int:
    """The FACS firmware waking vector, found as the OS finds the FACS (RSDP, XSDT, FADT);
    0 when the guest set none or broke the tables it would be found through."""
    try:
        fadt = parse_tables(memory, rsdp)["FACP"]
        facs, = struct.unpack_from("<I", fadt, tables.FADT_FIRMWARE_CTRL)
        return memory.read_u32(facs + FACS_WAKING_VECTOR) if facs else 0
    except (AcpiError, GuestMemoryError, KeyError, struct.error):
        return 0


class Sleep:
    """S3 for ``machine``: hand suspend() to AcpiPm and wake() to the wake sources."""

    def __init__(self, machine: "Machine") -> None:
        self._machine = machine
        self._cond = threading.Condition()
        self._asleep = False
        self._reason: str | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def asleep(self) -> bool:
        """Whether the guest is in S3 now."""
        return self._asleep

    def suspend(self) -> None:
        """The guest entered S3 (called on the vCPU thread that wrote SLP_EN)."""
        with self._cond:
            if self._asleep or self._closed:
                return
            self._asleep, self._reason = True, None
            self._thread = threading.Thread(target=self._sleep, name="acpi-s3", daemon=True)
            self._thread.start()

    def wake(self, reason: str) -> None:
        """A wake event; ignored unless the guest sleeps."""
        with self._cond:
            if self._asleep and self._reason is None:
                self._reason = reason
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _sleep(self) -> None:
        m = self._machine
        m.pause()
        _log.info("ACPI S3: the guest sleeps until an RTC alarm or the power button")
        with self._cond:
            while self._reason is None and not self._closed:
                self._cond.wait()
            reason, closed = self._reason, self._closed
        if closed or m.state != "paused":
            return
        try:
            vector = waking_vector(m.memory, m.boot.rsdp)
            if not vector:
                _log.info("ACPI S3: woken (%s), but the guest set no waking vector", reason)
                m.stop("reset", 0, "S3 resume without a waking vector: rebooted")
                return
            real_mode(m.vcpus[0], vector >> 4, vector & 0xF)
            m.vcpus[0].mp_state = lib.KVM_MP_STATE_RUNNABLE
            for cpu in m.vcpus[1:]:
                real_mode(cpu, 0, 0)
                cpu.mp_state = lib.KVM_MP_STATE_INIT_RECEIVED
            m.acpi_pm.woke()
            _log.info("ACPI S3: woken (%s), resuming at %#x", reason, vector)
        except PyvisorError as e:
            m.stop("fault", 2, f"S3 resume failed: {e}")
            return
        finally:
            with self._cond:
                self._asleep = False
        m.resume()
