import os
import select
import termios
import threading
import time

import pytest

from pyvisor.console import HELP_TEXT, Console, EscapeParser
from pyvisor.devices.io_loop import IoLoop


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
def loop():
    lp = IoLoop()
    lp.start()
    yield lp
    lp.close()


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def reading(loop, console):
    """Whether the console's input (or its stand-in) is still in the I/O loop."""
    return console._watched is not None and console._watched in loop._handlers


def test_raw_mode_on_a_tty_and_restored(loop, pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ECHO       # a fresh pty is cooked
    sink = Sink()
    console = Console(loop, slave, slave, sink.on_input, sink.on_quit)
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


def test_tty_input_reaches_guest_unmodified_on_the_io_thread(loop, pty):
    master, slave = pty
    sink = Sink()
    threads = []
    on_input = sink.on_input

    def recording(data):
        threads.append(threading.current_thread())
        on_input(data)

    with Console(loop, slave, slave, recording, sink.on_quit):
        os.write(master, b"ls\r\x03\x1a\x1c")   # Enter, Ctrl-C, Ctrl-Z, Ctrl-\ : all raw
        sink.wait_for(lambda: len(sink.data) >= 6)
        assert bytes(sink.data) == b"ls\r\x03\x1a\x1c"
        assert read_available(master, 1, timeout=0.2) == b""   # no echo
    assert sink.quits == 0
    assert {t.name for t in threads} == {"io"}


def test_quit_escape_calls_on_quit(loop, pty):
    master, slave = pty
    sink = Sink()
    with Console(loop, slave, slave, sink.on_input, sink.on_quit):
        os.write(master, b"a\x01")
        sink.wait_for(lambda: sink.data == b"a")
        os.write(master, b"x")
        sink.wait_for(lambda: sink.quits == 1)
    assert bytes(sink.data) == b"a"


def test_help_escape_writes_help_to_output(loop, pty):
    master, slave = pty
    sink = Sink()
    with Console(loop, slave, slave, sink.on_input, sink.on_quit):
        os.write(master, b"\x01h")
        text = HELP_TEXT.encode()
        assert read_available(master, len(text)) == text   # no ONLCR: raw output
    assert sink.data == b"" and sink.quits == 0


def test_write_goes_to_output_fd(loop, pty):
    master, slave = pty
    sink = Sink()
    with Console(loop, slave, slave, sink.on_input, sink.on_quit) as console:
        console.write(b"hello\n")
        assert read_available(master, 6) == b"hello\n"


def test_pipe_input_and_eof_does_not_quit(loop):
    r, w = os.pipe()
    sink = Sink()
    console = Console(loop, r, None, sink.on_input, sink.on_quit)
    try:
        console.start()
        os.write(w, b"echo hi\n\x01\x01")
        os.close(w)
        w = None
        sink.wait_for(lambda: len(sink.data) >= 9)
        wait_until(lambda: not reading(loop, console))   # EOF ended the input
        assert r not in loop._handlers
        assert bytes(sink.data) == b"echo hi\n\x01"
        assert sink.quits == 0
        console.write(b"discarded")             # output None: silently dropped
    finally:
        console.stop()
        os.close(r)
        if w is not None:
            os.close(w)


def test_pty_hangup_ends_input_without_quit(loop):
    master, slave = os.openpty()
    sink = Sink()
    console = Console(loop, slave, None, sink.on_input, sink.on_quit)
    console.start()
    assert reading(loop, console)
    os.close(master)                            # reads fail with EIO from now on
    wait_until(lambda: not reading(loop, console))
    console.stop()
    os.close(slave)
    assert sink.quits == 0


@pytest.mark.parametrize("size", [0, 10, 100_000])
def test_regular_file_input_is_read_to_eof_without_quit(loop, tmp_path, size):
    """epoll refuses regular files; their content still reaches the guest, escapes too."""
    content = bytes(i % 251 + 2 for i in range(size)) + b"\x01h"   # no Ctrl-A in the data
    path = tmp_path / "input"
    path.write_bytes(content)
    before = open_fds()
    out_r, out_w = os.pipe()
    fd = os.open(path, os.O_RDONLY)
    sink = Sink()
    console = Console(loop, fd, out_w, sink.on_input, sink.on_quit)
    try:
        console.start()
        sink.wait_for(lambda: len(sink.data) >= size)
        assert bytes(sink.data) == content[:-2]
        text = HELP_TEXT.encode()
        assert read_available(out_r, len(text)) == text
        wait_until(lambda: console._watched is None)   # EOF ended the input
        assert sink.quits == 0
    finally:
        console.stop()
        os.close(fd)
        os.close(out_r)
        os.close(out_w)
    assert open_fds() == before                 # the eventfd standing in for it is closed


def test_dev_null_input_is_an_immediate_eof(loop):
    before = open_fds()
    fd = os.open("/dev/null", os.O_RDONLY)
    sink = Sink()
    console = Console(loop, fd, None, sink.on_input, sink.on_quit)
    try:
        console.start()
        wait_until(lambda: console._watched is None)
        assert sink.data == b"" and sink.quits == 0
    finally:
        console.stop()
        os.close(fd)
    assert open_fds() == before


def test_input_registered_before_the_loop_starts():
    """The machine starts the console before its I/O loop."""
    lp = IoLoop()
    r, w = os.pipe()
    sink = Sink()
    console = Console(lp, r, None, sink.on_input, sink.on_quit)
    try:
        console.start()
        os.write(w, b"early")
        lp.start()
        sink.wait_for(lambda: sink.data == b"early")
    finally:
        console.stop()
        lp.close()
        os.close(r)
        os.close(w)


def test_stop_is_prompt_and_idempotent(loop):
    r, w = os.pipe()
    before = open_fds()
    sink = Sink()
    console = Console(loop, r, w, sink.on_input, sink.on_quit)
    console.start()
    assert reading(loop, console)
    t0 = time.monotonic()
    console.stop()
    assert time.monotonic() - t0 < 1.0
    assert r not in loop._handlers
    console.stop()
    os.write(w, b"late")                        # nothing reads it any more
    time.sleep(0.05)
    assert sink.data == b""
    assert open_fds() == before
    with pytest.raises(RuntimeError):
        console.start()
    os.close(r)
    os.close(w)


def test_stop_restores_the_terminal_after_the_loop_stopped(loop, pty):
    """The machine stops its I/O thread first, then the console."""
    master, slave = pty
    before = termios.tcgetattr(slave)
    console = Console(loop, slave, slave, lambda d: None, lambda: None)
    console.start()
    loop.stop()
    console.stop()
    assert termios.tcgetattr(slave) == before
    assert slave not in loop._handlers


def test_on_quit_may_stop_the_console(loop, pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    box = {}
    stopped = threading.Event()

    def on_quit():
        box["console"].stop()
        stopped.set()

    console = Console(loop, slave, slave, lambda d: None, on_quit)
    box["console"] = console
    console.start()
    os.write(master, b"\x01x")
    assert stopped.wait(5)
    assert not reading(loop, console)
    assert termios.tcgetattr(slave) == before


def test_no_input_fd_means_nothing_in_the_loop(loop):
    r, w = os.pipe()
    try:
        console = Console(loop, None, w, lambda d: None, lambda: None)
        with console:
            assert console._watched is None and not loop._handlers
            console.write(b"x" * 10)
        assert os.read(r, 100) == b"x" * 10
    finally:
        os.close(r)
        os.close(w)


def test_write_handles_partial_writes_on_a_nonblocking_pipe(loop):
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
        Console(loop, None, w, lambda d: None, lambda: None).write(data)
        reader.join(10)
        assert bytes(got) == data
    finally:
        os.close(r)
        os.close(w)


def test_write_to_closed_reader_drops_output_instead_of_raising(loop):
    r, w = os.pipe()
    os.close(r)
    console = Console(loop, None, w, lambda d: None, lambda: None)
    console.write(b"lost")                   # EPIPE: logged, not raised
    console.write(b"also lost")
    os.close(w)
