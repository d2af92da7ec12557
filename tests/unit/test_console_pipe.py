"""ConsolePipe keeps the guest's byte order and delivers everything before finish returns."""
import os

from pyvisor.machine.console_pipe import ConsolePipe


def test_bytes_arrive_in_order_and_all_before_finish():
    got = bytearray()
    pipe = ConsolePipe(0x3F8, got.extend)
    pipe.start()
    for i in range(2000):
        pipe.write(bytes((i & 0xFF,)))
    os.write(pipe.native.out_fd, b"native")     # what the shim does for a fast THR write
    pipe.write(b"!")
    pipe.finish()
    assert bytes(got) == bytes(i & 0xFF for i in range(2000)) + b"native!"
    assert pipe.native.out_fd == -1
    pipe.close()
    pipe.close()


def test_fast_path_flags_reach_the_native_struct():
    pipe = ConsolePipe(0x2F8, lambda data: None)
    assert pipe.native.base == 0x2F8
    pipe.set_fast_path(True, False)
    assert (pipe.native.thr_fast, pipe.native.lsr_fast) == (1, 0)
    pipe.close()


def test_finish_does_not_wait_forever_for_a_stuck_sink(monkeypatch):
    import threading

    from pyvisor.machine import console_pipe

    monkeypatch.setattr(console_pipe, "_DRAIN_SECONDS", 0.2)
    release = threading.Event()
    pipe = ConsolePipe(0x3F8, lambda data: release.wait())   # a terminal that never reads
    pipe.start()
    pipe.write(b"stuck")
    pipe.finish()
    pipe.close()
    release.set()


def test_sync_delivers_what_the_pipe_holds_before_returning(monkeypatch):
    from pyvisor.machine import console_pipe

    monkeypatch.setattr(console_pipe, "_COALESCE_SECONDS", 2.0)   # the pump is slow
    got = bytearray()
    pipe = ConsolePipe(0x3F8, got.extend)
    pipe.start()
    pipe.write(b"a")
    while not got:                      # delivered by the pump, which now sleeps
        pass
    pipe.write(b"bc")
    os.write(pipe.native.out_fd, b"d")
    pipe.sync()
    assert bytes(got) == b"abcd"
    pipe.close()
    pipe.sync()                         # closed: nothing to do


def test_sync_does_not_wait_forever_for_a_stuck_sink(monkeypatch):
    import threading
    import time

    from pyvisor.machine import console_pipe

    monkeypatch.setattr(console_pipe, "_DRAIN_SECONDS", 0.2)
    release = threading.Event()
    pipe = ConsolePipe(0x3F8, lambda data: release.wait())
    pipe.start()
    pipe.write(b"stuck")
    time.sleep(0.05)                    # the pump is inside the sink
    start = time.monotonic()
    pipe.sync()
    assert time.monotonic() - start < 1.0
    release.set()
    pipe.finish()
    pipe.close()
