import os
import select
import termios
import threading
import time

import pytest

from pyvisor.console import HELP_TEXT, Console, EscapeParser


# --- EscapeParser ---------------------------------------------------------------------------

def test_plain_bytes_pass_through():
    assert EscapeParser().feed(b"ls -l\r\x03\x1b[A") == (b"ls -l\r\x03\x1b[A", [])


@pytest.mark.parametrize("data,out,cmds", [
    (b"\x01x", b"", ["quit"]),
    (b"\x01h", b"", ["help"]),
    (b"a\x01\x01b", b"a\x01b", []),
    (b"\x01\x01\x01\x01", b"\x01\x01", []),
    (b"a\x01zb", b"ab", []),               # unknown key: both swallowed
    (b"\x01X", b"", []),                   # escapes are case-sensitive, as QEMU's
    (b"a\x01hb\x01xc", b"abc", ["help", "quit"]),
    (b"\x01\x01x", b"\x01x", []),          # a literal Ctrl-A does not start an escape
    (b"", b"", []),
])
def test_escape_sequences(data, out, cmds):
    assert EscapeParser().feed(data) == (out, cmds)


def test_escape_state_carries_across_chunks():
    p = EscapeParser()
    assert p.feed(b"ab\x01") == (b"ab", [])
    assert p.feed(b"xcd") == (b"cd", ["quit"])
    assert p.feed(b"\x01") == (b"", [])
    assert p.feed(b"") == (b"", [])
    assert p.feed(b"\x01") == (b"\x01", [])
    assert p.feed(b"x") == (b"x", [])


def test_help_text_uses_crlf():
    assert "\n" in HELP_TEXT
    assert HELP_TEXT.count("\n") == HELP_TEXT.count("\r\n")
    assert "C-a x" in HELP_TEXT and "C-a h" in HELP_TEXT and "C-a C-a" in HELP_TEXT


# --- Console ----------------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.data = bytearray()
        self.quits = 0
        self.changed = threading.Condition()

    def on_input(self, data):
        with self.changed:
            self.data += data
            self.changed.notify_all()

    def on_quit(self):
        with self.changed:
            self.quits += 1
            self.changed.notify_all()

    def wait_for(self, predicate, timeout=5.0):
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "timed out"


def read_available(fd, want, timeout=5.0):
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            got += os.read(fd, 4096)
    return got


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_raw_mode_on_a_tty_and_restored(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ECHO       # a fresh pty is cooked
    sink = Sink()
    console = Console(slave, slave, sink.on_input, sink.on_quit)
    console.start()
    try:
        iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(slave)
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        assert not iflag & (termios.ICRNL | termios.IXON | termios.ISTRIP)
        assert not oflag & termios.OPOST
        assert cflag & termios.CSIZE == termios.CS8
        assert cc[termios.VMIN] == 1
    finally:
        console.stop()
    assert termios.tcgetattr(slave) == before


def test_tty_input_reaches_guest_unmodified(pty):
    master, slave = pty
    sink = Sink()
    with Console(slave, slave, sink.on_input, sink.on_quit):
        os.write(master, b"ls\r\x03\x1a\x1c")   # Enter, Ctrl-C, Ctrl-Z, Ctrl-\ : all raw
        sink.wait_for(lambda: len(sink.data) >= 6)
        assert bytes(sink.data) == b"ls\r\x03\x1a\x1c"
        assert read_available(master, 1, timeout=0.2) == b""   # no echo
    assert sink.quits == 0


def test_quit_escape_calls_on_quit(pty):
    master, slave = pty
    sink = Sink()
    with Console(slave, slave, sink.on_input, sink.on_quit):
        os.write(master, b"a\x01")
        sink.wait_for(lambda: sink.data == b"a")
        os.write(master, b"x")
        sink.wait_for(lambda: sink.quits == 1)
    assert bytes(sink.data) == b"a"


def test_help_escape_writes_help_to_output(pty):
    master, slave = pty
    sink = Sink()
    with Console(slave, slave, sink.on_input, sink.on_quit):
        os.write(master, b"\x01h")
        text = HELP_TEXT.encode()
        assert read_available(master, len(text)) == text   # no ONLCR: raw output
    assert sink.data == b"" and sink.quits == 0


def test_write_goes_to_output_fd(pty):
    master, slave = pty
    sink = Sink()
    with Console(slave, slave, sink.on_input, sink.on_quit) as console:
        console.write(b"hello\n")
        assert read_available(master, 6) == b"hello\n"


def test_pipe_input_and_eof_does_not_quit():
    r, w = os.pipe()
    sink = Sink()
    console = Console(r, None, sink.on_input, sink.on_quit)
    try:
        console.start()
        os.write(w, b"echo hi\n\x01\x01")
        os.close(w)
        w = None
        sink.wait_for(lambda: len(sink.data) >= 9)
        console._thread.join(5)
        assert not console._thread.is_alive()   # EOF ended the reader
        assert bytes(sink.data) == b"echo hi\n\x01"
        assert sink.quits == 0
        console.write(b"discarded")             # output None: silently dropped
    finally:
        console.stop()
        os.close(r)
        if w is not None:
            os.close(w)


def test_pty_hangup_ends_reader_without_quit():
    master, slave = os.openpty()
    sink = Sink()
    console = Console(slave, None, sink.on_input, sink.on_quit)
    console.start()
    os.close(master)
    console._thread.join(5)
    assert not console._thread.is_alive()
    console.stop()
    os.close(slave)
    assert sink.quits == 0


def test_stop_joins_promptly_and_is_idempotent():
    r, w = os.pipe()
    before = open_fds()
    sink = Sink()
    console = Console(r, w, sink.on_input, sink.on_quit)
    console.start()
    thread = console._thread
    assert thread.is_alive()
    t0 = time.monotonic()
    console.stop()
    assert time.monotonic() - t0 < 1.0
    assert not thread.is_alive()
    console.stop()
    assert open_fds() == before                 # the wake-up pipe is closed
    with pytest.raises(RuntimeError):
        console.start()
    os.close(r)
    os.close(w)


def test_on_quit_may_stop_the_console(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    box = {}

    def on_quit():
        box["console"].stop()

    console = Console(slave, slave, lambda d: None, on_quit)
    box["console"] = console
    console.start()
    os.write(master, b"\x01x")
    console._thread.join(5)
    assert not console._thread.is_alive()
    assert termios.tcgetattr(slave) == before


def test_no_input_fd_means_no_thread():
    r, w = os.pipe()
    try:
        console = Console(None, w, lambda d: None, lambda: None)
        with console:
            assert console._thread is None
            console.write(b"x" * 10)
        assert os.read(r, 100) == b"x" * 10
    finally:
        os.close(r)
        os.close(w)


def test_write_handles_partial_writes_on_a_nonblocking_pipe():
    r, w = os.pipe()
    os.set_blocking(w, False)
    data = bytes(range(256)) * 1024          # 256 KiB, more than a pipe holds
    got = bytearray()

    def drain():
        while len(got) < len(data):
            chunk = os.read(r, 65536)
            if not chunk:
                break
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        Console(None, w, lambda d: None, lambda: None).write(data)
        reader.join(10)
        assert bytes(got) == data
    finally:
        os.close(r)
        os.close(w)


def test_write_to_closed_reader_drops_output_instead_of_raising():
    r, w = os.pipe()
    os.close(r)
    console = Console(None, w, lambda d: None, lambda: None)
    console.write(b"lost")                   # EPIPE: logged, not raised
    console.write(b"also lost")
    os.close(w)
