"""In-place restores set part of the vCPU state on the next KVM_RUN (KVM_CAP_SYNC_REGS) and
leave out an MP_STATE that is RUNNABLE already; they must still restore exactly: what a
script reads or sets between a restore and the next run, state a hook changed before the
restore (MSRs, the LAPIC timer, debug registers, MP_STATE), a restore from a port read's
hook (the read is finished before anything is restored), two restores in one hook. The
guest is guests/kernels/snap_target.c."""
import threading

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine
from pyvisor._native import ffi, lib

pytestmark = [needs_kvm, pytest.mark.kvm]

READY_PORT, ROUND_PORT, COM1_LSR = 0x85, 0x84, 0x3FD
MSR_KERNEL_GS_BASE = 0xC0000102
# MSRs that count time (the TSC; Hyper-V's VP runtime and reference counter, which KVM
# lists where it offers Hyper-V's interface): they move on after the restore.
CLOCK_MSRS = (0x10, 0x40000010, 0x40000020)
APIC_LVTT, APIC_TMICT, APIC_TMCCT = 0x320, 0x380, 0x390
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")


def snap_target(rounds: int, quiet: bool = False) -> Machine:
    return Machine(kernel=guest("snap_target"), mem="64M",
                   cmdline=f"pages=8 rounds={rounds} quiet={int(quiet)}")


def lines(text: str) -> list[str]:
    return [l for l in text.replace("\r", "").splitlines() if l.startswith(("round", "done"))]


def fresh(rounds: int) -> list[str]:
    with snap_target(rounds) as m:
        assert m.run(timeout=60).status == 3
        return lines(m.console_text)


def snapshot_at_ready(m: Machine, **state) -> dict:
    """A dict that gets the snapshot taken at the guest's ready port ("snap")."""
    m.on_pio(READY_PORT, callback=lambda *a: state.setdefault("snap", m.snapshot()) and True)
    return state


def gprs(struct) -> dict[str, int]:
    return {name: getattr(struct, name) for name in GPRS}


def u32(lapic: bytes, offset: int) -> int:
    return int.from_bytes(lapic[offset:offset + 4], "little")


def test_state_a_hook_changed_is_restored_exactly():
    """MSR, LAPIC timer, debug registers and general registers changed in a hook come back
    as the snapshot had them (read back with every part's own ioctl)."""
    with snap_target(rounds=6, quiet=True) as m:
        st = snapshot_at_ready(m)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 3 and "after" not in st:
                vcpu = m.vm.vcpus[0]
                cpu.msrs[MSR_KERNEL_GS_BASE] = 0x12345000
                lapic = bytearray(vcpu.get_lapic())
                lapic[APIC_LVTT:APIC_LVTT + 4] = (0x10000 | 0x20000 | 0xEF).to_bytes(4, "little")
                lapic[APIC_TMICT:APIC_TMICT + 4] = (0x7FFFFFFF).to_bytes(4, "little")
                vcpu.set_lapic(bytes(lapic))        # a masked periodic timer, counting
                changed = m.snapshot().vcpus[0]
                changed.struct.debugregs.db[0] = 0x1000
                changed.struct.debugregs.db[3] = 0x2000
                vcpu.set_state(changed.struct)
                st["changed"] = (cpu.msrs[MSR_KERNEL_GS_BASE], vcpu.get_lapic())
                m.restore(st["snap"])
                st["after"] = m.snapshot()
            return True

        assert m.run(timeout=60).status == 3
    snap, after = st["snap"].vcpus[0], st["after"].vcpus[0]
    changed_msr, changed_lapic = st["changed"]
    assert changed_msr == 0x12345000 and u32(changed_lapic, APIC_TMCCT) != 0
    assert after.msrs[MSR_KERNEL_GS_BASE] == snap.msrs[MSR_KERNEL_GS_BASE] != 0x12345000
    assert {i: v for i, v in after.msrs.items() if i not in CLOCK_MSRS} == \
        {i: v for i, v in snap.msrs.items() if i not in CLOCK_MSRS}
    lapic = bytes(ffi.buffer(ffi.addressof(after.struct, "lapic")))
    assert u32(lapic, APIC_TMICT) == u32(bytes(ffi.buffer(ffi.addressof(snap.struct, "lapic"))),
                                         APIC_TMICT) == 0
    assert u32(lapic, APIC_TMCCT) == 0
    assert list(after.struct.debugregs.db) == list(snap.struct.debugregs.db)
    assert after.struct.debugregs.db[0] != 0x1000
    record, expected = after.to_record(), snap.to_record()
    for part in ("mp_state", "regs", "sregs", "xcrs", "debugregs", "lapic", "events", "xsave"):
        assert record[part] == expected[part], part


def test_reading_and_setting_registers_right_after_a_restore():
    """Registers read in the hook after a restore are the snapshot's; registers set there
    (with a struct from before the restore) are what the vCPU runs with, not overwritten
    by the state the restore left for the next KVM_RUN."""
    with snap_target(rounds=6, quiet=True) as m:
        st = snapshot_at_ready(m)
        paused = threading.Event()

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2 and "read" not in st:
                m.restore(st["snap"])
                st["read"] = gprs(m.vm.vcpus[0].get_regs())
                st["cr3"] = cpu.sregs.cr3
            elif value == 4 and "set" not in st:
                before = m.vm.vcpus[0].get_regs()
                before.rbx = 0x5EED
                st["set"] = gprs(before)
                m.restore(st["snap"])
                m.vm.vcpus[0].set_regs(before)
                m.pause()
                paused.set()
            return True

        m.start()
        assert paused.wait(30)
        m.pause()                           # returns once the pause holds
        held = m.vcpus[0].regs.as_dict()
        m.stop()
    assert st["read"] == gprs(st["snap"].vcpus[0].regs)
    assert st["cr3"] == st["snap"].vcpus[0].struct.sregs.cr3
    assert {n: held[n] for n in GPRS} == st["set"]


def test_a_hook_that_set_mp_state_before_a_restore_gets_the_snapshots():
    """A restore from a hook leaves out MP_STATE only when nothing set it since the exit:
    here the hook halts the vCPU first, and the restore must make it runnable again (else
    the guest never finishes)."""
    expected = fresh(rounds=4)
    with snap_target(rounds=4) as m:
        st = snapshot_at_ready(m)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 3 and "halted" not in st:
                cpu.mp_state = lib.KVM_MP_STATE_HALTED
                st["halted"] = cpu.mp_state
                m.restore(st["snap"])
                st["after"] = cpu.mp_state
            return True

        outcome = m.run(timeout=30)
        assert outcome.status == 3, outcome.describe()
        assert (st["halted"], st["after"]) == (lib.KVM_MP_STATE_HALTED, lib.KVM_MP_STATE_RUNNABLE)
        assert lines(m.console_text) == expected[:3] + expected


def test_restore_from_a_port_read_hook_replays_exactly():
    """The hook of an IN (the UART's LSR, polled before each character) restores: KVM
    finishes the read's emulation first, so nothing of it lands in the restored state."""
    expected = fresh(rounds=4)
    with snap_target(rounds=4) as m:
        st = snapshot_at_ready(m, armed=False, restores=0)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            st["armed"] = value == 2 and st["restores"] < 2
            return True

        @m.on_pio(COM1_LSR)
        def lsr(cpu, port, size, value, is_write):
            if st["armed"]:                 # before the first character of round 3's line
                st["armed"] = False
                st["restores"] += 1
                m.restore(st["snap"])
            return 0x60                     # transmitter empty

        outcome = m.run(timeout=60)
        assert outcome.status == 3, outcome.describe()
        assert st["restores"] == 2
        assert lines(m.console_text) == expected[:2] * 3 + expected[2:]


def test_two_restores_in_one_hook_end_at_the_second():
    expected = fresh(rounds=5)
    with snap_target(rounds=5) as m:
        st = snapshot_at_ready(m)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2 and "second" not in st:
                st["second"] = m.snapshot()
            if value == 4 and "done" not in st:
                st["done"] = True
                m.restore(st["snap"])
                m.restore(st["second"])     # the first one's pending state is replaced
            return True

        assert m.run(timeout=60).status == 3
        assert lines(m.console_text) == expected[:4] + expected[2:]


# struct kvm_irqchip: chip_id and pad, then the chip. struct kvm_pic_state: last_irr, irr,
# imr, ...; struct kvm_ioapic_state: base_address (8), ioregsel, id, irr, pad (4 each),
# then the 64-bit redirection entries (linux/kvm.h, asm/kvm.h).
PIC_IRR, PIC_IMR = 8 + 1, 8 + 2
IOAPIC_REDIR = 8 + 24
PIC_MASTER, PIC_SLAVE, IOAPIC = 0, 1, 2


def chips(m: Machine) -> list[bytes]:
    return [m.vm.get_irqchip(chip) for chip in (PIC_MASTER, PIC_SLAVE, IOAPIC)]


def test_interrupt_controllers_changed_since_the_snapshot_are_set_back():
    """A reset sets only the in-kernel PICs and IOAPIC that differ from the snapshot's (it
    reads them first): each one changed between snapshot and restore (an IMR, a pulse on
    IRQ 10 that leaves the slave PIC's IRR set, a redirection entry) reads back as the
    snapshot had it, the guest runs on exactly; a reset with none changed sets none."""
    expected = fresh(rounds=5)
    with snap_target(rounds=5) as m:
        st = snapshot_at_ready(m, changed=[], set_counts=[])

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2 and not st["changed"]:
                master, _, ioapic = (bytearray(c) for c in chips(m))
                master[PIC_IMR] ^= 0x5A
                m.vm.set_irqchip(bytes(master))
                m.vm.irq_line(10, True)
                m.vm.irq_line(10, False)
                entry = IOAPIC_REDIR + 8 * 5
                ioapic[entry:entry + 8] = (0x10000 | 0x8000 | 0x41).to_bytes(8, "little")
                m.vm.set_irqchip(bytes(ioapic))
                st["changed"] = chips(m)
                m.restore(st["snap"])
                st["set_counts"].append(st["snap"].vm.chips_set)
                st["after"] = chips(m)
            elif value == 4 and len(st["set_counts"]) == 1:
                m.restore(st["snap"])          # nothing touched the chips since the last
                st["set_counts"].append(st["snap"].vm.chips_set)
            return True

        outcome = m.run(timeout=60)
        assert outcome.status == 3, outcome.describe()
    saved = list(st["snap"].vm.irqchips)
    changed = st["changed"]
    assert changed[PIC_MASTER][PIC_IMR] != saved[PIC_MASTER][PIC_IMR]
    assert changed[PIC_SLAVE][PIC_IRR] & 0x04 and not saved[PIC_SLAVE][PIC_IRR] & 0x04
    assert changed[IOAPIC] != saved[IOAPIC]
    assert st["after"] == saved
    assert st["set_counts"] == [3, 0]
    assert lines(m.console_text) == expected[:2] + expected[:4] + expected


def test_a_guest_that_reprograms_its_interrupt_controllers_replays_exactly():
    """snap_target irqchip=1 reads the master PIC's mask and an IOAPIC redirection entry
    into each round's checksum and writes new values (in-kernel: pyvisor never sees it);
    every reset must set both chips back, 200 times over, and each replay prints the same
    rounds."""
    def machine() -> Machine:
        return Machine(kernel=guest("snap_target"), mem="64M",
                       cmdline="pages=2 rounds=3 irqchip=1")

    with machine() as m:
        assert m.run(timeout=60).status == 3
        expected = lines(m.console_text)
    with machine() as m:
        st = snapshot_at_ready(m, resets=0, chips_set=set())

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value == 2 and st["resets"] < 200:
                st["resets"] += 1
                m.restore(st["snap"])
                st["chips_set"].add(st["snap"].vm.chips_set)
            return True

        outcome = m.run(timeout=120)
        assert outcome.status == 3, outcome.describe()
    assert st["chips_set"] == {2}           # the master PIC and the IOAPIC, every time
    assert lines(m.console_text) == expected[:2] * 201 + expected[2:]
