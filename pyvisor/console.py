"""The terminal side of the serial console.

The host terminal is put in raw mode so every key, Ctrl-C included, reaches the guest; the
only keys pyvisor keeps for itself are the Ctrl-A escapes, as in QEMU's `-serial mon:stdio`.
Input is one more fd in the machine's I/O loop (pyvisor.devices.io_loop), next to the
virtio eventfds and tap fds: device work, typing included, runs on that one thread.
"""
from __future__ import annotations

import os
import termios
import threading
from collections.abc import Callable

from .devices.io_loop import IoLoop
from .log import get_logger
from .output_sink import FdSink

_log = get_logger("pyvisor.console")

ESCAPE = 0x01   # Ctrl-A

HELP_TEXT = (
    "\r\n"
    "C-a h    print this help\r\n"
    "C-a x    exit pyvisor\r\n"
    "C-a s    save a snapshot of the machine (its file name is printed)\r\n"
    "C-a C-a  send C-a to the guest\r\n"
)

_COMMANDS = {ord("x"): "quit", ord("h"): "help", ord("s"): "save"}

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
    """Reads input_fd on the I/O loop's thread and writes guest output to output_fd.

    `on_input(data)`, `on_quit()` and `on_save()` are called from the I/O thread; `on_quit`
    may call `stop()`. `write()` may be called from any thread. Either fd may be None (no input /
    output discarded). The fds are borrowed, never closed. The end of input (EOF, a pty's
    hangup) only stops reading: quitting is left to the guest or the user.
    """

    def __init__(self, io_loop: IoLoop, input_fd: int | None, output_fd: int | None,
                 on_input: Callable[[bytes], None], on_quit: Callable[[], None],
                 on_save: Callable[[], None] | None = None) -> None:
        self._io_loop = io_loop
        self._input_fd = input_fd
        self._output_fd = output_fd
        self._on_input = on_input
        self._on_quit = on_quit
        self._on_save = on_save
        self._parser = EscapeParser()
        self._sink = FdSink(output_fd, "terminal") if output_fd is not None else None
        # Held by the input handler, so stop() waits for a read in progress; re-entrant
        # because on_quit may call stop() from the handler.
        self._lock = threading.RLock()
        self._saved_termios: list | None = None
        self._watched: int | None = None   # the fd registered with the I/O loop
        self._started = False
        self._stopped = False

    def __enter__(self) -> "Console":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Raw mode on a TTY input, then the input joins the I/O loop (nothing without
        input)."""
        with self._lock:
            if self._started or self._stopped:
                raise RuntimeError("a console can be started only once")
            self._started = True
            if self._input_fd is None:
                return
            try:
                if os.isatty(self._input_fd):
                    saved = termios.tcgetattr(self._input_fd)
                    termios.tcsetattr(self._input_fd, termios.TCSANOW, make_raw(saved))
                    self._saved_termios = saved
                self._watch()
            except BaseException:
                self._restore_terminal()
                raise

    def stop(self) -> None:
        """Stop reading input and restore the terminal. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._unwatch()
            finally:
                self._restore_terminal()

    def write(self, data: bytes) -> None:
        """Guest output to the terminal, from any thread. A terminal that stops taking
        output costs at most a bounded wait, then output is dropped (output_sink.FdSink)."""
        if self._sink is not None:
            self._sink.write(data)

    def _watch(self) -> None:
        try:
            self._io_loop.add(self._input_fd, self._readable)
            self._watched = self._input_fd
        except PermissionError:
            # epoll refuses what is always readable (a regular file, /dev/null): an eventfd
            # left signalled stands in for it, so the file is read on the I/O thread too,
            # a chunk per turn of the loop, until EOF.
            self._watched = os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._io_loop.add(self._watched, self._readable)

    def _unwatch(self) -> None:
        if self._watched is not None:
            self._io_loop.remove(self._watched)
            if self._watched != self._input_fd:
                os.close(self._watched)
            self._watched = None

    def _restore_terminal(self) -> None:
        if self._saved_termios is not None:
            try:
                termios.tcsetattr(self._input_fd, termios.TCSANOW, self._saved_termios)
            except termios.error:
                pass   # the terminal went away; nothing left to restore
            self._saved_termios = None

    def _readable(self) -> None:
        """The I/O loop's handler: one read, passed through the escape parser."""
        with self._lock:
            if self._watched is None:
                return   # stop() or the end of input came first
            try:
                data = os.read(self._input_fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:   # EIO once a pty's other side has closed, EBADF: end of input
                data = b""
            if not data:
                self._unwatch()
                return
            guest, commands = self._parser.feed(data)
            if guest:
                self._on_input(guest)
            for command in commands:
                if command == "quit":
                    self._on_quit()
                elif command == "save" and self._on_save is not None:
                    self._on_save()
                elif command == "help":
                    self.write(HELP_TEXT.encode())
