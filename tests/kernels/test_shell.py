"""The interactive shell guest, driven through a pseudo-terminal as a user would."""
import termios

import pytest

from helpers import PYVISOR, guest, needs_kvm
from pty_session import PtySession

pytestmark = [needs_kvm, pytest.mark.kvm]
PROMPT = b"pyvisor> "


@pytest.fixture
def session_factory():
    sessions = []

    def make(*args: str) -> PtySession:
        sessions.append(PtySession([PYVISOR, "run", guest("shell"), *args]))
        return sessions[-1]

    yield make
    for s in sessions:
        s.close()


def test_interactive_session(session_factory):
    s = session_factory("--mem", "128M", "--append", "mode=interactive")
    s.expect(PROMPT)
    # Raw mode while the guest runs: no echo or line buffering by the host terminal.
    attrs = termios.tcgetattr(s.slave)
    assert not attrs[3] & (termios.ECHO | termios.ICANON)
    s.type(b"info\r")
    info = s.expect(PROMPT)
    assert b"RAM: 128 MiB" in info
    assert b"CPUs: 1" in info
    assert b"cmdline: mode=interactive" in info
    s.type(b"ech\x7fho  hello there\r")  # a typo fixed with backspace
    assert b"hello there" in s.expect(PROMPT)
    s.type(b"frobnicate\r")
    assert b"unknown command: frobnicate" in s.expect(PROMPT)
    s.type(b"ticks\r")
    ticks = s.expect(PROMPT)
    assert b"ticks:" in ticks
    s.type(b"exit 3\r")
    assert s.wait() == 3
    # The terminal is restored once pyvisor is gone.
    assert termios.tcgetattr(s.slave) == s.saved


def test_default_memory_size_shown(session_factory):
    s = session_factory()
    s.expect(PROMPT)
    s.type(b"info\r")
    assert b"RAM: 512 MiB" in s.expect(PROMPT)
    s.type(b"reboot\r")
    assert s.wait() == 0


def test_two_cpus(session_factory):
    s = session_factory("--mem", "64M", "--cpus", "2")
    s.expect(PROMPT)
    s.type(b"info\r")
    assert b"CPUs: 2" in s.expect(PROMPT)
    s.type(b"exit 1\r")
    assert s.wait() == 1


def test_escape_help_and_quit(session_factory):
    s = session_factory("--mem", "32M")
    s.expect(PROMPT)
    s.type(b"\x01h")
    s.expect(b"C-a x")
    s.type(b"\x01x")
    assert s.wait() == 0
    assert termios.tcgetattr(s.slave) == s.saved


def test_sigterm_ends_cleanly(session_factory):
    s = session_factory("--mem", "32M")
    s.expect(PROMPT)
    s.proc.terminate()
    assert s.wait() == 128 + 15
    assert termios.tcgetattr(s.slave) == s.saved


def test_ctrl_a_s_saves_a_snapshot_that_restores_in_a_new_process(tmp_path, monkeypatch):
    """Under the CLI's default seccomp filter, which lets pyvisor write only into the
    directory it started in, and only there."""
    monkeypatch.chdir(tmp_path)
    s = PtySession([PYVISOR, "run", guest("shell"), "--mem", "64M"])
    try:
        s.expect(PROMPT)
        s.type(b"echo before\r")
        s.expect(PROMPT)
        s.type(b"\x01s")
        saved = s.expect(b".snap]")
        s.type(b"\r")
        s.expect(PROMPT)          # the guest runs on after the save
        s.type(b"\x01x")
        assert s.wait() == 0
    finally:
        s.close()
    files = list(tmp_path.glob("pyvisor-*.snap"))
    assert len(files) == 1
    assert b"[pyvisor: saved " + str(files[0].with_suffix("")).encode() in saved
    r = PtySession([PYVISOR, "restore", str(files[0])])
    try:
        r.type(b"echo after restore\r")
        assert b"after restore" in r.expect(PROMPT)
        r.type(b"exit 5\r")
        assert r.wait() == 5
    finally:
        r.close()
