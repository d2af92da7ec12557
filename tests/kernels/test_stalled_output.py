"""Nothing outside stops pyvisor from stopping: a full disk, a terminal or pipe nobody
reads. The guest (guests/kernels/flood.c) prints as fast as it can on every console path."""
import fcntl
import os
import signal
import subprocess
import time
from contextlib import contextmanager

import pytest

from helpers import PYVISOR, guest, needs_kvm
from pyvisor import Machine

pytestmark = [needs_kvm, pytest.mark.kvm]


def flood(*args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([PYVISOR, "run", guest("flood"), "--mem", "64M", *args],
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE)


@pytest.mark.parametrize("append", ["", "thre=1"])
def test_console_file_on_a_full_disk_is_reported_once_and_timeout_holds(append):
    started = time.monotonic()
    p = flood("--console", "/dev/full", "--timeout", "5", "--append", append)
    _, err = p.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert p.returncode == 124, err
    assert elapsed < 7, elapsed
    assert err.decode().count("No space left on device") == 1, err


@contextmanager
def unread_pipe():
    """A pipe whose read end nobody reads, as small as Linux allows (one page), so the
    emulated guest (some 10 KiB/s of output) fills it within a second."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    try:
        yield w
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("append", ["", "thre=1"])
def test_stdout_nobody_reads_does_not_stop_the_timeout(append):
    started = time.monotonic()
    with unread_pipe() as stdout:
        p = flood("--timeout", "5", "--append", append, stdout=stdout)
        try:
            p.wait(timeout=30)
        finally:
            p.kill()
    elapsed = time.monotonic() - started
    err = p.stderr.read().decode()
    assert p.returncode == 124, err
    assert elapsed < 7, elapsed
    assert "not taking output" in err
    assert "Traceback" not in err


def test_sigterm_ends_a_run_whose_stdout_stalled():
    with unread_pipe() as stdout:
        p = flood(stdout=stdout)
        try:
            time.sleep(2)            # long enough for the pipe to fill
            sent = time.monotonic()
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
            assert time.monotonic() - sent < 2
        finally:
            p.kill()
    assert "not taking output" in p.stderr.read().decode()
    assert p.returncode == 128 + signal.SIGTERM


def test_the_library_keeps_a_bounded_tail_of_the_console():
    limit = 4096
    with Machine(kernel=guest("flood"), mem="64M", console_limit=limit) as m:
        streamed = []
        m.on_output(streamed.append)
        m.run(timeout=2)
        tail = m.console_output
    total = sum(map(len, streamed))
    assert total > 2 * limit            # it really printed more than is kept
    assert len(tail) == limit
    assert b"".join(streamed).endswith(tail)
