"""A snapshot taken from a port or MMIO hook holds the vCPU at an instruction boundary,
the same on every KVM (docs/SNAPSHOT.md, "Snapshots from a hook"): after a write the hook
received (KVM finishes an OUT only at the next KVM_RUN on VT-x and AMD-V, so pyvisor
completes the exit before capturing), before a read whose value the hook has not returned
yet (a restored run reads again, and the hook answers again). The guest is
guests/kernels/snap_access.c: one access at the ready port 0x86 or the MMIO word at
0xD0001000, then rounds that report counter | read value << 8 to port 0x84."""
import threading

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine

pytestmark = [needs_kvm, pytest.mark.kvm]

READY_PORT, READY_MMIO, ROUND_PORT = 0x86, 0xD0001000, 0x84


class Resets:
    """Snapshot at the guest's ready access (from its hook), restore at its first round,
    `resets` times; what the hooks saw."""

    def __init__(self, access: str, resets: int, answer=None) -> None:
        self.access, self.resets, self.answer = access, resets, answer
        self.ready: list[int] = []        # the ready hook's calls: the value written, or 0
        self.rounds: list[int] = []       # what each round reported
        self.restores = 0
        self.snap = None
        self.count = 0                    # elements in the exit the snapshot was taken in

    def run(self, pause_at_ready: bool = False) -> None:
        with Machine(kernel=guest("snap_access"), mem="64M",
                     cmdline=f"access={self.access} rounds=2") as m:
            paused = threading.Event()

            def ready(cpu, addr, size, value, is_write):
                self.ready.append(value)
                if pause_at_ready and self.snap is None and not paused.is_set():
                    m.pause()             # only asks: the vCPU parks once the access is done
                    paused.set()
                elif self.snap is None:
                    self.snap = m.snapshot()
                    self.count = m.vm.vcpus[0].exit.count
                return len(self.ready) if self.answer else True

            if self.access.startswith("mmio"):
                m.on_mmio(READY_MMIO, 4, callback=ready)
            else:
                m.on_pio(READY_PORT, callback=ready)

            @m.on_pio(ROUND_PORT)
            def round_done(cpu, port, size, value, is_write):
                self.rounds.append(value)
                if value & 0xFF == 1 and self.restores < self.resets:
                    self.restores += 1
                    m.restore(self.snap)
                return True

            if pause_at_ready:
                m.start()
                assert paused.wait(30)
                m.pause()                 # returns once the pause holds
                self.snap = m.snapshot()
                m.resume()
                outcome = m.wait(120)
            else:
                outcome = m.run(timeout=300)
            assert outcome.status == 3, outcome.describe()
        assert self.restores == self.resets


@pytest.mark.parametrize("access", ["out", "mmio_write"])
def test_1000_resets_to_a_write_hook_go_on_after_the_write(access):
    """The restored runs start after the write: its hook is never called again, and every
    run reports the same first round."""
    r = Resets(access, resets=1000)
    r.run()
    assert r.ready == [1]
    assert r.rounds == [0x001] * 1001 + [0x002]


@pytest.mark.parametrize("access", ["out", "mmio_write", "in", "mmio_read"])
def test_a_paused_snapshot_after_a_hook_asked_for_the_pause_is_after_the_access(access):
    """A vCPU parks only once KVM has finished its exit (with the hook's answer, for a
    read): a snapshot of the machine paused from a hook is after the access, whichever."""
    r = Resets(access, resets=20, answer=access in ("in", "mmio_read"))
    r.run(pause_at_ready=True)
    assert len(r.ready) == 1
    got = 1 << 8 if r.answer else 0
    assert r.rounds == [0x001 | got] * 21 + [0x002 | got]


def test_resets_to_a_string_out_hook_go_on_after_the_exit():
    """rep outsb: the snapshot is after every element of the exit it was taken in (KVM
    hands over one or more at once); a restored run sends only the ones after it."""
    r = Resets("outs", resets=30)
    r.run()
    sent = list(b"abcd")
    assert 1 <= r.count <= 4
    assert r.ready == sent + sent[r.count:] * 30
    assert r.rounds == [0x001] * 31 + [0x002]


@pytest.mark.parametrize("access", ["in", "mmio_read"])
def test_resets_to_a_read_hook_read_again_and_get_the_hooks_new_answer(access):
    """The snapshot is before the read: each restored run reads again, the hook is asked
    again, and the guest gets what it answers this time (a fuzzing loop's new input)."""
    r = Resets(access, resets=50, answer=True)
    r.run()
    assert len(r.ready) == 51
    assert r.rounds == [0x001 | n << 8 for n in range(1, 52)] + [0x002 | 51 << 8]


def test_resets_to_a_string_in_hook_read_every_element_of_the_exit_again():
    """rep insb: before every element of the exit the snapshot was taken in; its first
    element, so each restored run asks for all four again."""
    r = Resets("ins", resets=30, answer=True)
    r.run()
    assert len(r.ready) == 4 * 31
    sums = [sum(range(4 * k + 1, 4 * k + 5)) & 0xFF for k in range(31)]
    assert r.rounds == [0x001 | s << 8 for s in sums] + [0x002 | sums[-1] << 8]


@pytest.mark.parametrize("access, ready_again", [("out", 0), ("in", 1)])
def test_a_file_saved_in_a_hook_resumes_where_the_hook_snapshot_is(tmp_path, access,
                                                                    ready_again):
    """m.save() from a hook: a machine restored from the file goes on after the OUT (its
    hook is not called), or makes the IN again (and reads what the new hook answers)."""
    path = str(tmp_path / "ready.snap")
    with Machine(kernel=guest("snap_access"), mem="64M",
                 cmdline=f"access={access} rounds=2") as m:
        m.on_pio(READY_PORT, callback=lambda *a: m.save(path) and 7)
        m.on_pio(ROUND_PORT, callback=lambda *a: True)
        assert m.run(timeout=60).status == 3
    ready, rounds = [], []
    with Machine.restore_from(path, console="none") as m:
        m.on_pio(READY_PORT, callback=lambda *a: ready.append(a[3]) or 9)
        m.on_pio(ROUND_PORT, callback=lambda *a: rounds.append(a[3]) or True)
        assert m.run(timeout=60).status == 3
    assert len(ready) == ready_again
    got = 9 << 8 if ready_again else 0
    assert rounds == [0x001 | got, 0x002 | got]
