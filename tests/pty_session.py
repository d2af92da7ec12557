"""Driving a program through a pseudo-terminal, as a user at a terminal would: used by the
tiny-kernel shell tests and, inside the nested host, by the Linux console sessions."""
from __future__ import annotations

import os
import select
import subprocess
import termios
import time


class PtySession:
    """A command on the slave side of a pty; the test types on the master side."""

    def __init__(self, argv: list[str]):
        self.master, self.slave = os.openpty()
        self.saved = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(argv,
                                     stdin=self.slave, stdout=self.slave, stderr=self.slave)
        self.seen = b""
        self.transcript = b""   # everything read, for failure messages

    def expect(self, needle: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; output so far: {self.seen!r}")
            if select.select([self.master], [], [], left)[0]:
                try:
                    data = os.read(self.master, 4096)
                    self.seen += data
                    self.transcript += data
                except OSError:  # EIO: every slave fd closed
                    break
        assert needle in self.seen, self.seen
        before, _, after = self.seen.partition(needle)
        self.seen = after
        return before

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
