"""A restore leaves out a counting device (pyvisor/snapshot/devices.py, state_changes) only
while it still matches the state being restored: these fail if a device is left out after
any change, by the guest, the I/O thread or the RTC's timer thread, or after it last
matched another snapshot. The legacy devices, fw_cfg and the PCI root with its host bridge
count."""
import time

import pytest

from pyvisor.devices.changes import CountingLock
from pyvisor.devices.legacy.acpi_pm import PM1_EN, PWRBTN_EN, AcpiPm
from pyvisor.devices.legacy.fw_cfg import FwCfg, build_items
from pyvisor.devices.legacy.i8042 import I8042
from pyvisor.devices.legacy.rtc import B_24H, B_PIE, C_PF, C_UF, REG_A, REG_B, REG_C, CmosRtc
from pyvisor.devices.legacy.serial import Uart16550
from pyvisor.devices.pci.config_space import COMMAND, COMMAND_IO
from pyvisor.devices.pci.root import ADDRESS_ENABLE, PciRoot
from pyvisor.memory.layout import MemoryLayout
from pyvisor.snapshot.devices import DeviceSet

LCR, SCR = 3, 7
I8042_COMMAND_READ, I8042_COMMAND_WRITE = 0x20, 0x60


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def legacy(clock: Clock, timer: bool = False) -> dict:
    return {"serial": Uart16550(lambda level: None, lambda data: None),
            "i8042": I8042(request_reset=lambda: None),
            "rtc": CmosRtc(lambda level: None, clock=clock, timer=timer),
            "acpi": AcpiPm(lambda: None, lambda: None)}


def counted(devices: dict) -> dict[str, list]:
    """Record each device's restore_state calls (name -> states restored)."""
    calls: dict[str, list] = {name: [] for name in devices}
    for name, device in devices.items():
        restore = device.restore_state
        device.restore_state = lambda state, restore=restore, name=name: (
            calls[name].append(state), restore(state))[1]
    return calls


def capture(found: DeviceSet) -> dict:
    with found.held():
        return found.capture()


def restore(found: DeviceSet, states: dict) -> None:
    with found.held():
        found.restore(states)


def change_all(d: dict, value: int) -> None:
    """A guest's accesses: serial scratch and line control, i8042 command byte, CMOS
    index and NVRAM byte, ACPI PM enable."""
    d["serial"].pio_write(SCR, 1, value)
    d["serial"].pio_write(LCR, 1, value & 0x7F)
    d["i8042"].write_command(I8042_COMMAND_WRITE)
    d["i8042"].write_data(0x45 | (value & 0x18))
    d["rtc"].pio_write(0, 1, 0x40 + (value & 7))
    d["rtc"].pio_write(1, 1, value)
    d["acpi"].pio_write(PM1_EN, 2, PWRBTN_EN if value & 1 else 0)


def registers(d: dict) -> tuple:
    d["i8042"].write_command(I8042_COMMAND_READ)
    return (d["serial"]._scr, d["serial"]._lcr, d["i8042"].read_data(), d["rtc"]._index,
            bytes(d["rtc"]._cmos), d["acpi"]._en)


def test_the_lock_counts_every_acquire_but_the_snapshot_engines():
    lock = CountingLock()
    with lock:
        with lock:                              # reentrant, and counted again
            pass
    assert lock.generation == 2
    with lock.held():
        pass
    assert lock.generation == 2


def test_untouched_devices_are_left_out_and_touched_ones_restored():
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    calls = counted(d)
    change_all(d, 0x11)
    before = registers(d)
    snap = capture(found)
    restore(found, snap)                        # nothing changed since the capture
    assert all(not c for c in calls.values())
    d["serial"].pio_read(SCR, 1)                # a read is an access too
    restore(found, snap)
    assert [name for name, c in calls.items() if c] == ["serial"]
    change_all(d, 0x2A)
    assert registers(d) != before
    restore(found, snap)
    assert registers(d) == before
    assert all(c[-1] is snap[name] for name, c in calls.items())


def test_a_then_b_then_a_restores_each():
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    change_all(d, 0x13)
    a_regs, a = registers(d), capture(found)
    change_all(d, 0x24)
    b_regs, b = registers(d), capture(found)    # B matches now; A does not
    calls = counted(d)
    restore(found, a)
    assert registers(d) == a_regs
    restore(found, b)
    assert registers(d) == b_regs
    restore(found, a)
    assert registers(d) == a_regs
    assert all(len(c) == 3 for c in calls.values())
    restore(found, a)               # registers() read the i8042 through its ports only
    assert {name: len(c) for name, c in calls.items()} == {"serial": 3, "i8042": 4,
                                                            "rtc": 3, "acpi": 3}


def test_a_state_from_a_file_is_always_restored_and_matches_nothing_after():
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    snap = capture(found)
    copy = {name: dict(state) for name, state in snap.items()}   # equal, not the same
    calls = counted(d)
    restore(found, copy)
    assert all(len(c) == 1 for c in calls.values())
    restore(found, snap)                        # it matched the copy last: restored
    assert all(len(c) == 2 for c in calls.values())


def test_a_restore_that_fails_part_way_matches_nothing():
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    snap = capture(found)
    d["serial"].pio_write(SCR, 1, 0x55)
    broken = dict(snap, serial={k: v for k, v in snap["serial"].items() if k != "rx"})
    with pytest.raises(Exception):
        restore(found, broken)
    calls = counted(d)
    restore(found, dict(broken, serial=snap["serial"]))
    assert calls["serial"] == [snap["serial"]]
    assert d["serial"]._scr == 0


def test_the_io_thread_and_the_keyboard_count():
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    snap = capture(found)
    d["serial"].receive(b"x")                   # console input
    d["i8042"].send_ctrl_alt_del()
    d["acpi"].press_power_button()
    calls = counted(d)
    restore(found, snap)
    assert [name for name, c in calls.items() if c] == ["serial", "i8042", "acpi"]
    assert not d["serial"]._rx and not d["i8042"]._obf


def test_a_left_out_rtc_counts_the_clocks_events_from_the_restore():
    """As after restore_state: a second boundary between the capture and the restore sets
    no flag the guest could read."""
    clock = Clock()
    d = legacy(clock)
    found = DeviceSet(d)
    rtc = d["rtc"]
    snap = capture(found)
    calls = counted(d)
    clock.t += 2.5
    restore(found, snap)
    assert not calls["rtc"]
    clock.t += 0.1                              # within the same second
    rtc.pio_write(0, 1, REG_C)
    assert rtc.pio_read(1, 1) & C_UF == 0


def test_the_rtc_timer_threads_flags_count():
    clock = Clock()
    d = legacy(clock, timer=True)
    rtc = d["rtc"]
    try:
        rtc.pio_write(0, 1, REG_A)
        rtc.pio_write(1, 1, 0x2F)               # 2 Hz periodic rate
        rtc.pio_write(0, 1, REG_B)
        rtc.pio_write(1, 1, B_24H | B_PIE)      # the timer thread starts
        time.sleep(0.05)                        # the thread waits for the next tick
        found = DeviceSet(d)
        snap = capture(found)
        assert snap["rtc"]["_flags"] & C_PF == 0
        clock.t += 0.6                          # a periodic tick: the thread sets PF
        deadline = time.monotonic() + 5
        while not rtc._flags & C_PF:
            assert time.monotonic() < deadline, "the timer thread never set PF"
            time.sleep(0.01)
        restore(found, snap)
        assert rtc._flags & C_PF == 0
    finally:
        rtc.close()


def test_fw_cfg_the_pci_root_and_its_host_bridge_count_their_port_accesses():
    fw_cfg = FwCfg(build_items(64 << 20, 1, MemoryLayout(64 << 20).e820()))
    root = PciRoot()
    d = {"fw_cfg": fw_cfg, "pci": root, "pci 00:00.0": root.host_bridge}
    found = DeviceSet(d)
    snap = capture(found)
    calls = counted(d)
    restore(found, snap)
    assert all(not c for c in calls.values())
    fw_cfg.pio_write(0, 2, 0)                   # select the signature, read a byte
    fw_cfg.pio_read(1, 1)
    root.pio_write(0, 4, ADDRESS_ENABLE | COMMAND)          # 00:00.0, COMMAND
    root.pio_write(4, 2, COMMAND_IO)
    assert root.host_bridge.config.read(COMMAND, 2) == COMMAND_IO
    restore(found, snap)
    assert all(len(c) == 1 for c in calls.values())
    assert fw_cfg._offset == 0 and root._address == 0
    assert root.host_bridge.config.read(COMMAND, 2) == 0
