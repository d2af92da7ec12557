"""virtio-rng (pyvisor/devices/virtio/rng.py) and, through it, the device status state
machine every VirtioDevice shares (pyvisor/devices/virtio/device.py; virtio 1.2, 2.1, 3.1)."""
import pytest

from pyvisor._native import lib
from pyvisor.devices.virtio.device import (ACKNOWLEDGE as ACK, CONFIG_INTERRUPT, DRIVER, DRIVER_OK,
                                           FEATURES_OK, NEEDS_RESET, QUEUE_INTERRUPT)
from pyvisor.devices.virtio.rng import VirtioRng
from virtio_driver import (EVENT_IDX, INDIRECT_DESC, VERSION_1, Buf, Driver, init_device,
                           new_memory)

NO_VECTOR = lib.VIRTIO_MSI_NO_VECTOR


@pytest.fixture
def mem():
    return new_memory()


@pytest.fixture
def rng():
    dev = VirtioRng()
    yield dev
    dev.close()


def setup(rng, mem, size=16, features=None):
    drv = Driver(mem, size)
    calls = init_device(rng, mem, [drv], features=features)
    return drv, calls


# --- virtio-rng -------------------------------------------------------------------------------

def test_identity(rng):
    assert rng.device_id == 4
    assert len(rng.queues) == 1
    assert rng.device_features & (1 << VERSION_1)


def test_fills_writable_buffers(rng, mem):
    drv, calls = setup(rng, mem)
    a, b = drv.alloc(64), drv.alloc(200)
    head1 = drv.add([Buf(a, 64, True), Buf(b, 200, True)])
    c = drv.alloc(32)
    head2 = drv.add([Buf(c, 32, True)], indirect=True)
    rng.notify(0)
    assert drv.get_used() == [(head1, 264), (head2, 32)]
    # 64, 200 and 32 random bytes: all-zero has probability 2^-256 or less
    assert drv.read(a, 64) != bytes(64)
    assert drv.read(b, 200) != bytes(200)
    assert drv.read(c, 32) != bytes(32)
    assert drv.read(a, 64) != drv.read(b, 64)
    assert calls == [(QUEUE_INTERRUPT, NO_VECTOR)]
    assert not rng.status & NEEDS_RESET


def test_does_not_write_past_the_buffers(rng, mem):
    drv, _ = setup(rng, mem)
    a = drv.alloc(64, fill=0xEE)
    drv.add([Buf(a + 8, 16, True)])
    rng.notify(0)
    data = drv.read(a, 64)
    assert data[:8] == b"\xee" * 8 and data[24:] == b"\xee" * 40


def test_interrupt_uses_the_queue_vector(rng, mem):
    drv, calls = setup(rng, mem)
    rng.queues[0].msix_vector = 1
    drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    assert calls == [(QUEUE_INTERRUPT, 1)]


def test_no_interrupt_when_nothing_was_used(rng, mem):
    drv, calls = setup(rng, mem)
    rng.notify(0)
    assert calls == []


def test_rejects_readable_buffers(rng, mem):
    drv, calls = setup(rng, mem)
    rng.config_msix_vector = 2
    r = drv.alloc(16, b"driver data here")
    drv.add([Buf(r, 16), Buf(drv.alloc(16), 16, True)])
    rng.notify(0)
    assert rng.status & NEEDS_RESET
    assert (CONFIG_INTERRUPT, 2) in calls
    assert drv.used_idx == 0
    assert drv.read(r, 16) == b"driver data here"


def test_notify_of_a_missing_queue_is_ignored(rng, mem):
    drv, calls = setup(rng, mem)
    rng.notify(1)
    rng.notify(7)
    assert calls == [] and not rng.status & NEEDS_RESET


def test_aliased_chain_gets_a_bounded_amount_in_place(rng, mem, monkeypatch):
    """64 writable descriptors naming the same 1 MiB (64 MiB claimed in a 2 MiB guest): the
    request is completed with 64 KiB, drawn a page at a time, and nothing is written past
    what the used length says."""
    import pyvisor.devices.virtio.rng as rng_mod
    drawn = []
    real = rng_mod.os.getrandom
    monkeypatch.setattr(rng_mod.os, "getrandom", lambda n: drawn.append(n) or real(n))
    drv, _ = setup(rng, mem, size=64)
    buf = drv.alloc(1 << 20, fill=0xEE)
    head = drv.add([Buf(buf, 1 << 20, True) for _ in range(64)])
    rng.notify(0)
    assert drv.get_used() == [(head, 64 << 10)]
    assert sum(drawn) == 64 << 10 and max(drawn) <= 4096
    assert drv.read(buf + (64 << 10), 1 << 10) == b"\xee" * (1 << 10)
    assert not rng.status & NEEDS_RESET


def test_request_limit_spans_buffers(rng, mem):
    drv, _ = setup(rng, mem)
    a, b = drv.alloc(60 << 10, fill=0xEE), drv.alloc(8 << 10, fill=0xEE)
    head = drv.add([Buf(a, 60 << 10, True), Buf(b, 8 << 10, True)])
    rng.notify(0)
    assert drv.get_used() == [(head, 64 << 10)]
    assert drv.read(b + (4 << 10), 4 << 10) == b"\xee" * (4 << 10)
    assert drv.read(b, 4 << 10) != b"\xee" * (4 << 10)


def test_memory_error_in_a_handler_needs_reset_and_the_device_recovers(rng, mem, monkeypatch):
    """MemoryError (or any exception) while serving: DEVICE_NEEDS_RESET and a configuration
    interrupt, notify returns normally (the I/O thread lives on), and a reset recovers."""
    import pyvisor.devices.virtio.rng as rng_mod
    drv, calls = setup(rng, mem)
    drv.add([Buf(drv.alloc(8), 8, True)])

    def no_memory(n):
        raise MemoryError
    monkeypatch.setattr(rng_mod.os, "getrandom", no_memory)
    rng.notify(0)
    assert rng.status & NEEDS_RESET
    assert (CONFIG_INTERRUPT, NO_VECTOR) in calls
    monkeypatch.undo()
    rng.set_status(0)
    drv = Driver(mem, 16)
    init_device(rng, mem, [drv])
    head = drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    assert drv.get_used() == [(head, 8)]


def test_a_guest_looping_errors_and_resets_logs_a_bounded_number_of_lines(rng, mem, caplog):
    for _ in range(200):
        drv, _ = setup(rng, mem)
        drv.add([Buf(drv.alloc(8), 8)])          # readable: a driver error
        rng.notify(0)
        assert rng.status & NEEDS_RESET
        rng.set_status(0)
    lines = [r for r in caplog.records if r.name == "pyvisor.virtio"]
    assert 1 <= len(lines) <= 10


# --- the status state machine -------------------------------------------------------------------

def test_nothing_is_processed_before_driver_ok(rng, mem):
    drv = Driver(mem, 16)
    calls = []
    rng.attach(mem, lambda kind, vector: calls.append((kind, vector)))
    rng.set_status(ACK | DRIVER)
    rng.driver_features = 1 << VERSION_1
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    drv.configure(rng.queues[0])
    drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    assert drv.used_idx == 0 and calls == []
    assert not rng.queues[0].ready
    rng.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    assert rng.queues[0].ready
    rng.notify(0)
    assert drv.used_idx == 1


def test_driver_ok_activates_only_enabled_queues(rng, mem):
    drv = Driver(mem, 16)
    rng.attach(mem, lambda kind, vector: None)
    rng.driver_features = 1 << VERSION_1
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    drv.configure(rng.queues[0])
    rng.queues[0].enabled = False
    rng.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    assert not rng.queues[0].ready
    assert not rng.status & NEEDS_RESET


def test_driver_ok_activates_with_the_negotiated_ring_features(rng, mem):
    drv, _ = setup(rng, mem, features=1 << VERSION_1 | 1 << EVENT_IDX)
    drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    assert drv.avail_event == 1            # EVENT_IDX on
    # INDIRECT_DESC was not negotiated: an indirect chain is a driver error
    drv.add([Buf(drv.alloc(8), 8, True)], indirect=True)
    rng.notify(0)
    assert rng.status & NEEDS_RESET


def test_features_ok_accepted(rng):
    rng.set_status(ACK | DRIVER)
    rng.driver_features = 1 << VERSION_1 | 1 << INDIRECT_DESC
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    assert rng.status == ACK | DRIVER | FEATURES_OK


def test_features_ok_refused_for_unoffered_features(rng):
    rng.set_status(ACK | DRIVER)
    rng.driver_features = 1 << VERSION_1 | 1 << 0      # rng offers no device feature bits
    assert not rng.device_features & 1
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    assert not rng.status & FEATURES_OK
    assert rng.status == ACK | DRIVER


def test_features_ok_refused_for_a_high_unoffered_feature(rng):
    rng.set_status(ACK | DRIVER)
    rng.driver_features = 1 << VERSION_1 | 1 << 40
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    assert not rng.status & FEATURES_OK


def test_features_ok_refused_without_version_1(rng):
    rng.set_status(ACK | DRIVER)
    rng.driver_features = 1 << INDIRECT_DESC
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    assert not rng.status & FEATURES_OK


def test_status_zero_resets(rng, mem):
    drv, _ = setup(rng, mem)
    rng.config_msix_vector = 0
    rng.queues[0].msix_vector = 1
    drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    rng.set_status(0)
    q = rng.queues[0]
    assert rng.status == 0 and rng.driver_features == 0
    assert rng.config_msix_vector == NO_VECTOR
    assert not q.ready and not q.enabled
    assert (q.desc_addr, q.driver_addr, q.device_addr, q.last_avail, q.used_idx) == (0,) * 5
    assert q.msix_vector == NO_VECTOR


def test_bad_rings_at_driver_ok_need_reset(rng, mem):
    calls = []
    rng.attach(mem, lambda kind, vector: calls.append((kind, vector)))
    rng.driver_features = 1 << VERSION_1
    rng.set_status(ACK | DRIVER | FEATURES_OK)
    q = rng.queues[0]
    q.desc_addr, q.driver_addr, q.device_addr, q.enabled = 0x10008, 0x20000, 0x30000, True
    rng.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    assert rng.status & NEEDS_RESET
    assert calls == [(CONFIG_INTERRUPT, NO_VECTOR)]
    assert not q.ready


def test_queue_error_needs_reset_and_stops_processing_until_reset(rng, mem):
    drv, calls = setup(rng, mem)
    rng.config_msix_vector = 5
    drv.write_desc(0, 0x7FFFFFFF, 16, lib.VRING_DESC_F_WRITE)     # outside RAM
    drv.publish(0)
    rng.notify(0)
    assert rng.status & NEEDS_RESET
    assert rng.status & DRIVER_OK            # the other bits stay as the driver set them
    assert calls == [(CONFIG_INTERRUPT, 5)]
    # a good chain is not served any more
    good = drv.alloc(16)
    drv.add([Buf(good, 16, True)])
    rng.notify(0)
    assert drv.used_idx == 0 and drv.read(good, 16) == bytes(16)
    assert calls == [(CONFIG_INTERRUPT, 5)]
    # the driver cannot clear NEEDS_RESET by rewriting the status
    rng.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    assert rng.status & NEEDS_RESET
    rng.notify(0)
    assert drv.used_idx == 0

    # reset and initialise again: the device works
    rng.set_status(0)
    assert rng.status == 0
    drv2 = Driver(mem, 16, base=0x40000)
    init_device(rng, mem, [drv2])
    assert not rng.status & NEEDS_RESET
    buf = drv2.alloc(16)
    head = drv2.add([Buf(buf, 16, True)])
    rng.notify(0)
    assert drv2.get_used() == [(head, 16)]
    assert drv2.read(buf, 16) != bytes(16)
    assert calls[-1] == (QUEUE_INTERRUPT, NO_VECTOR)


def test_reinitialise_on_the_same_rings_after_reset(rng, mem):
    drv, calls = setup(rng, mem)
    drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    rng.set_status(0)
    drv = Driver(mem, 16)           # same addresses, rings cleared, indices from 0
    init_device(rng, mem, [drv])
    head = drv.add([Buf(drv.alloc(8), 8, True)])
    rng.notify(0)
    assert drv.get_used() == [(head, 8)]


def test_an_exception_while_starting_needs_reset_instead_of_escaping(rng, mem, monkeypatch):
    """on_activate runs on a vCPU thread (the DRIVER_OK write): nothing may escape it."""
    def broken():
        raise OSError("host trouble")
    monkeypatch.setattr(rng, "on_activate", broken)
    drv, calls = setup(rng, mem)
    assert rng.status & NEEDS_RESET
    assert (CONFIG_INTERRUPT, NO_VECTOR) in calls
