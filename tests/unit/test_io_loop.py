"""The I/O thread (pyvisor/devices/io_loop.py)."""
import logging
import os
import threading
import time

import pytest

from pyvisor.devices.io_loop import IoLoop

TIMEOUT = 5


def new_eventfd():
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def wait_for(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.fixture
def loop():
    lp = IoLoop()
    fds = []
    lp.test_fds = fds
    yield lp
    lp.stop()
    if lp._wake >= 0:
        lp.close()
    for fd in fds:
        os.close(fd)


def eventfd_for(loop):
    fd = new_eventfd()
    loop.test_fds.append(fd)
    return fd


def test_eventfd_handler_runs_on_the_loop_thread(loop):
    fd = eventfd_for(loop)
    seen = []
    done = threading.Event()

    def handler():
        seen.append(threading.current_thread())
        done.set()

    loop.add_eventfd(fd, handler)
    loop.start()
    os.eventfd_write(fd, 1)
    assert done.wait(TIMEOUT)
    assert seen[0] is not threading.current_thread()
    assert seen[0].name == "io" and seen[0].daemon


def test_eventfd_is_drained_so_the_handler_runs_once_per_batch(loop):
    fd = eventfd_for(loop)
    count = []
    loop.add_eventfd(fd, lambda: count.append(1))
    os.eventfd_write(fd, 3)             # three signals before the loop looks: one call
    loop.start()
    assert wait_for(lambda: len(count) == 1)
    time.sleep(0.05)
    assert len(count) == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)             # the counter was consumed
    os.eventfd_write(fd, 1)
    assert wait_for(lambda: len(count) == 2)


def test_handler_exceptions_are_logged_and_the_loop_keeps_going(loop, caplog):
    bad, good = eventfd_for(loop), eventfd_for(loop)
    calls = []

    def failing():
        calls.append("bad")
        raise RuntimeError("device bug")

    loop.add_eventfd(bad, failing)
    loop.add_eventfd(good, lambda: calls.append("good"))
    with caplog.at_level(logging.ERROR, logger="pyvisor.io"):
        loop.start()
        os.eventfd_write(bad, 1)
        assert wait_for(lambda: any("failed" in r.getMessage() for r in caplog.records))
        os.eventfd_write(good, 1)
        assert wait_for(lambda: "good" in calls)
        os.eventfd_write(bad, 1)
        assert wait_for(lambda: calls.count("bad") == 2)
    records = [r for r in caplog.records if r.name == "pyvisor.io"]
    assert records and records[0].exc_info and records[0].exc_info[0] is RuntimeError
    assert loop._thread.is_alive()


def test_plain_fd_handler(loop):
    r, w = os.pipe()
    loop.test_fds.extend([r, w])
    got = []
    loop.add(r, lambda: got.append(os.read(r, 100)))
    loop.start()
    os.write(w, b"hello")
    assert wait_for(lambda: got == [b"hello"])


def test_add_refuses_a_regular_file_and_keeps_no_handler(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    loop.test_fds.append(fd)
    with pytest.raises(PermissionError):
        loop.add(fd, lambda: None)
    assert fd not in loop._handlers


def test_add_from_another_thread_while_running(loop):
    r, w = os.pipe()
    loop.test_fds.extend([r, w])
    got = []
    loop.start()
    adder = threading.Thread(target=loop.add, args=(r, lambda: got.append(os.read(r, 100))))
    adder.start()
    adder.join()
    os.write(w, b"late")
    assert wait_for(lambda: got == [b"late"])


def test_remove_of_a_closed_fd(loop):
    fd = new_eventfd()
    loop.add_eventfd(fd, lambda: None)
    os.close(fd)
    loop.remove(fd)                     # EBADF: nothing to unregister, no error
    assert fd not in loop._handlers


def test_remove(loop):
    fd = eventfd_for(loop)
    count = []
    loop.add_eventfd(fd, lambda: count.append(1))
    loop.remove(fd)
    loop.remove(fd)                     # removing twice is harmless
    loop.start()
    os.eventfd_write(fd, 1)
    time.sleep(0.05)
    assert count == []


def test_stop_joins_the_thread(loop):
    loop.start()
    thread = loop._thread
    loop.stop()
    assert not thread.is_alive()


def test_stop_is_idempotent(loop):
    loop.start()
    loop.stop()
    loop.stop()


def test_stop_without_start(loop):
    loop.stop()


def test_close_is_idempotent():
    lp = IoLoop()
    lp.start()
    lp.close()
    lp.close()


def test_stop_after_close():
    lp = IoLoop()
    lp.start()
    lp.close()
    lp.stop()


def test_close_without_start():
    lp = IoLoop()
    lp.close()
    assert lp._wake == -1


def test_a_handler_failing_over_and_over_logs_a_bounded_number_of_lines(loop, caplog):
    fd = eventfd_for(loop)
    calls = []

    def failing():
        calls.append(1)
        raise MemoryError

    loop.add_eventfd(fd, failing)
    with caplog.at_level(logging.ERROR, logger="pyvisor.io"):
        loop.start()
        for n in range(1, 101):
            os.eventfd_write(fd, 1)
            assert wait_for(lambda: len(calls) == n)
    assert loop._thread.is_alive()
    assert 1 <= len([r for r in caplog.records if r.name == "pyvisor.io"]) <= 10
