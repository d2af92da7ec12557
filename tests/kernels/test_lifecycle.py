"""The machine's life from a library user's side: odd timeouts, Ctrl-C without signal
handlers, close() while the guest runs, signals in quick succession."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import PYVISOR, guest, needs_kvm
from pyvisor import Machine

pytestmark = [needs_kvm, pytest.mark.kvm]


@pytest.mark.parametrize("timeout", [1e10, math.inf])
def test_huge_and_infinite_timeouts_just_mean_no_timeout(timeout):
    with Machine(kernel=guest("hello"), mem="64M") as m:
        outcome = m.run(timeout=timeout)
    assert (outcome.kind, outcome.status) == ("reset", 0)


def test_close_while_the_guest_runs_stops_and_joins_first():
    m = Machine(kernel=guest("flood"), mem="64M")
    m.start()
    time.sleep(0.2)
    m.close()                        # unmaps kvm_run and RAM only after the threads ended
    assert m.state == "stopped"
    assert m.outcome.kind == "stopped"
    m.close()


def test_wait_timeout_leaves_the_machine_running():
    with Machine(kernel=guest("flood"), mem="64M") as m:
        m.start()
        assert m.wait(0.2) is None
        assert m.state == "running"
        m.stop()
        assert m.wait(5).kind == "stopped"


def test_a_paused_machine_has_its_whole_console_output():
    """pause() returns once the vCPUs are parked and what they wrote (through the shim's
    UART path and the Python debug console) has reached console_output."""
    with Machine(kernel=guest("flood"), mem="64M") as m:
        m.start()
        for _ in range(5):
            time.sleep(0.1)
            m.pause()
            paused = m.console_output
            time.sleep(0.1)
            assert m.console_output == paused
            m.resume()
        assert paused.count(b"flood line") > 10
        m.stop()


def test_ctrl_c_in_library_use_stops_the_machine_and_returns():
    script = textwrap.dedent(f"""
        from pyvisor import Machine
        m = Machine(kernel={guest('flood')!r}, mem="64M")
        print("started", flush=True)
        m.run()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"started\n"
        time.sleep(0.5)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)
        assert time.monotonic() - sent < 3
    finally:
        p.kill()
    assert b"KeyboardInterrupt" in p.stderr.read()


def test_a_burst_of_sigterms_ends_pyvisor_at_once():
    p = subprocess.Popen([PYVISOR, "run", guest("flood"), "--mem", "64M"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline().startswith(b"flood line")    # the guest runs
        sent = time.monotonic()
        for _ in range(50):
            os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=20)
        assert time.monotonic() - sent < 2
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM
    assert b"Traceback" not in p.stderr.read()
