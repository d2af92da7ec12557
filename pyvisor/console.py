"""The terminal side of the serial console.

The host terminal is put in raw mode so every key, Ctrl-C included, reaches the guest; the
only keys pyvisor keeps for itself are the Ctrl-A escapes, as in QEMU's `-serial mon:stdio`.
"""
from __future__ import annotations

import logging
import os
import select
import termios
import threading
from typing import Callable

_log = logging.getLogger("pyvisor.console")

ESCAPE = 0x01   # Ctrl-A

HELP_TEXT = (
    "\r\n"
    "C-a h    print this help\r\n"
    "C-a x    exit pyvisor\r\n"
    "C-a C-a  send C-a to the guest\r\n"
)

_COMMANDS = {ord("x"): "quit", ord("h"): "help"}

_READ_SIZE = 4096


class EscapeParser:
    """Splits terminal input into bytes for the guest and escape commands ("quit", "help").

    A Ctrl-A at the end of one chunk applies to the first byte of the next. An unknown key
    after Ctrl-A is swallowed along with the Ctrl-A, as QEMU does.
    """

    def __init__(self) -> None:
        self._escaped = False

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        if not self._escaped and ESCAPE not in data:
            return data, []
        out = bytearray()
        commands: list[str] = []
        for byte in data:
            if self._escaped:
                self._escaped = False
                if byte == ESCAPE:
                    out.append(ESCAPE)
                elif byte in _COMMANDS:
                    commands.append(_COMMANDS[byte])
            elif byte == ESCAPE:
                self._escaped = True
            else:
                out.append(byte)
        return bytes(out), commands


def make_raw(attrs: list) -> list:
    """termios attributes as cfmakeraw(3) sets them: no echo, no line editing, no signals
    from keys, no CR/LF translation either way, 8-bit bytes, reads return per byte."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


class Console:
    """Reads input_fd on its own thread and writes guest output to output_fd.

    `on_input(data)` and `on_quit()` are called from the reader thread; `on_quit` may call
    `stop()`. `write()` may be called from any thread. Either fd may be None (no input /
    output discarded). The fds are borrowed, never closed.
    """

    def __init__(self, input_fd: int | None, output_fd: int | None,
                 on_input: Callable[[bytes], None], on_quit: Callable[[], None]) -> None:
        self._input_fd = input_fd
        self._output_fd = output_fd
        self._on_input = on_input
        self._on_quit = on_quit
        self._parser = EscapeParser()
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._saved_termios: list | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopping = False

    def __enter__(self) -> "Console":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Raw mode on a TTY input, then the reader thread (none without input)."""
        with self._state_lock:
            if self._started or self._stopping:
                raise RuntimeError("a console can be started only once")
            self._started = True
            if self._input_fd is None:
                return
            self._wake = os.pipe()
            try:
                if os.isatty(self._input_fd):
                    saved = termios.tcgetattr(self._input_fd)
                    termios.tcsetattr(self._input_fd, termios.TCSANOW, make_raw(saved))
                    self._saved_termios = saved
                self._thread = threading.Thread(target=self._read_loop,
                                                name="pyvisor-console", daemon=True)
                self._thread.start()
            except BaseException:
                self._thread = None
                self._cleanup()
                raise

    def stop(self) -> None:
        """End the reader thread (joined unless called from it, e.g. by on_quit), close the
        wake-up pipe and restore the terminal. Idempotent."""
        with self._state_lock:
            if self._stopping:
                return
            self._stopping = True
            thread = self._thread
        # The lock is released first: on_quit may call stop() while we join.
        if thread is not None:
            os.write(self._wake[1], b"\0")
            if thread is not threading.current_thread():
                thread.join()
        self._cleanup()

    def write(self, data: bytes) -> None:
        """Write all of data, unbuffered, whatever partial writes the fd makes (os.write
        retries EINTR itself, PEP 475). An output that fails (terminal gone, pipe reader
        exited) is dropped from then on rather than killing the vCPU thread printing."""
        with self._write_lock:
            fd = self._output_fd
            if fd is None:
                return
            written = 0
            try:
                while True:
                    try:
                        written += os.write(fd, memoryview(data)[written:] if written else data)
                    except BlockingIOError:   # someone left the fd O_NONBLOCK
                        select.select([], [fd], [])
                        continue
                    if written >= len(data):
                        return
            except OSError as e:
                _log.warning("console output failed, discarding further output: %s", e)
                self._output_fd = None

    def _cleanup(self) -> None:
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._saved_termios is not None:
            try:
                termios.tcsetattr(self._input_fd, termios.TCSANOW, self._saved_termios)
            except termios.error:
                pass   # the terminal went away; nothing left to restore
            self._saved_termios = None

    def _read_loop(self) -> None:
        input_fd = self._input_fd
        wake_fd = self._wake[0]
        poller = select.poll()
        poller.register(input_fd, select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while not self._stopping:
            events = dict(poller.poll())
            if wake_fd in events:
                return
            if events.get(input_fd, 0) & select.POLLNVAL:
                return
            try:
                data = os.read(input_fd, _READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:   # EIO once a pty's other side has closed: end of input
                return
            if not data:
                return   # EOF: stop reading, but leave quitting to the guest or the user
            guest, commands = self._parser.feed(data)
            if guest:
                self._on_input(guest)
            for command in commands:
                if command == "quit":
                    self._on_quit()
                else:
                    self.write(HELP_TEXT.encode())
