"""A restore leaves out a device that cannot have changed since it last matched the
snapshot (pyvisor/snapshot/devices.py); these fail if one is left out wrongly. The guest
(guests/kernels/snap_target.c, devices=1) reads the UART's scratch and line control
registers, the i8042 command byte and a CMOS byte into its checksum on even rounds and
changes them all (the CMOS index through the coalesced ring): restores after odd rounds
find the devices untouched, after even ones changed, and every replay must print what a
fresh run prints."""
import pytest

from helpers import needs_kvm
from pyvisor import Machine
from pyvisor.devices.legacy.rtc import CmosRtc
from pyvisor.devices.state import capture
from snap_guest import READY_PORT, ROUND_PORT, fresh_run, rounds_of, snap_target

pytestmark = [needs_kvm, pytest.mark.kvm]

LEGACY = ("serial (COM1)", "i8042 data", "CMOS RTC", "ACPI PM block")
DEVICES = {"pages": 1, "options": "devices=1"}   # snap_target and fresh_run options


def live_states(m: Machine) -> dict[str, dict]:
    """The legacy devices' states as they are, read without changing them: the RTC's
    snapshot_state would apply the clock's events first, so its fields are read as such."""
    devices = m._snapshotter().devices().devices
    states = {name: devices[name].snapshot_state() for name in LEGACY if name != "CMOS RTC"}
    states["CMOS RTC"] = dict(capture(devices["CMOS RTC"], CmosRtc._STATE))
    return states


def saved_states(snap) -> dict[str, dict]:
    states = {name: snap.devices[name] for name in LEGACY if name != "CMOS RTC"}
    states["CMOS RTC"] = {k: snap.devices["CMOS RTC"][k] for k in CmosRtc._STATE}
    return states


def test_restores_after_untouched_and_changed_devices_replay_exactly():
    expected = fresh_run(rounds=5, **DEVICES)
    # Restored after rounds 1, 2, 3, 1, 4, 4: devices untouched, changed, changed in the
    # round before, untouched again, changed, changed the same way again.
    plan = [1, 2, 3, 1, 4, 4]
    with snap_target(rounds=5, **DEVICES) as m:
        st = {}
        m.on_pio(READY_PORT, callback=lambda *a: st.setdefault("snap", m.snapshot()) and True)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if plan and value == plan[0]:
                plan.pop(0)
                m.restore(st["snap"])
            return True

        outcome = m.run(timeout=60)
        assert (outcome.kind, outcome.status) == ("exit", 3), outcome.describe()
    replayed = [expected[:n] for n in (1, 2, 3, 1, 4, 4)]
    assert rounds_of(m.console_text) == [l for part in replayed for l in part] + expected


def test_restoring_a_then_b_then_a_brings_each_back():
    with snap_target(rounds=6, **DEVICES) as m:
        st = {}

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            if value in (1, 2):
                st[value] = m.snapshot()            # A before, B after a change
            if value == 4 and "seen" not in st:
                st["seen"] = []
                for n in (1, 2, 1, 1, 2, 2):       # again at once: left out, still right
                    m.restore(st[n])
                    st["seen"].append(live_states(m) == saved_states(st[n]))
            return True

        assert m.run(timeout=60).status == 3
    a, b = saved_states(st[1]), saved_states(st[2])
    assert all(a[name] != b[name] for name in LEGACY[:3])  # round 2 changed them
    assert st["seen"] == [True] * 6
    lines = rounds_of(m.console_text)
    assert [l.split()[1] for l in lines[:-1]] == ["1", "2", "3", "4", "3", "4", "5", "6"]


def test_a_thousand_resets_with_the_devices_changing_give_the_same_rounds():
    expected = fresh_run(rounds=2, **DEVICES)
    with snap_target(rounds=2, **DEVICES) as m:
        st = {"resets": 0}
        m.on_pio(READY_PORT, callback=lambda *a: st.setdefault("snap", m.snapshot()) and True)

        @m.on_pio(ROUND_PORT)
        def round_done(cpu, port, size, value, is_write):
            # Alternately after round 1 (devices untouched) and round 2 (changed).
            if value == 1 + st["resets"] % 2 and st["resets"] < 1000:
                st["resets"] += 1
                m.restore(st["snap"])
            return True

        assert m.run(timeout=300).status == 3
    lines = rounds_of(m.console_text)
    assert lines == (expected[:1] + expected[:2]) * 500 + expected
