"""Opening the files a guest boots from (kernel, initrd) without ever blocking in open.

A plain open() of a FIFO waits for a writer, forever if none comes. These files are opened
with O_NONBLOCK (which never waits) and checked with fstat before anything is read. A
kernel may also come from a pipe (``pyvisor run <(zcat vmlinux.gz)``): it is read once,
to its end, and everything after works on those bytes.
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import stat

from pyvisor.errors import KernelError
from pyvisor.units import format_size

_CHUNK = 1 << 20


def _not_readable(mode: int) -> str:
    """Why a file of this type is refused, in the words of the error line."""
    if stat.S_ISDIR(mode):
        return os.strerror(errno.EISDIR)
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
            stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
    return f"not a regular file ({kind})"


def open_nonblocking(path: str | os.PathLike, what: str, allow_pipe: bool = False
                     ) -> tuple[io.FileIO, bool]:
    """Open ``path`` for reading without waiting on a FIFO; return (file, is_pipe).

    The file must be a regular file, or with ``allow_pipe`` a pipe or FIFO (then switched
    back to blocking reads, which end when the writer closes its end: a FIFO with no
    writer reads as empty at once). ``what`` starts every error line ("kernel 'k.elf'")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError(f"{what}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        pipe = stat.S_ISFIFO(mode)
        if not (stat.S_ISREG(mode) or (pipe and allow_pipe)):
            raise KernelError(f"{what}: {_not_readable(mode)}")
        if pipe:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return io.FileIO(fd, "rb", closefd=True), pipe
    except BaseException:
        os.close(fd)
        raise


def read_image(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The whole file (regular file or pipe), read once. A pipe is read at most
    ``limit`` bytes far, so a writer that never stops costs bounded host memory."""
    f, pipe = open_nonblocking(path, what, allow_pipe=True)
    with f:
        try:
            if not pipe:
                return f.read()
            data = bytearray()
            while len(data) <= limit:
                chunk = f.read(min(_CHUNK, limit + 1 - len(data)))
                if not chunk:
                    return bytes(data)
                data += chunk
        except OSError as e:
            raise KernelError(f"{what}: {e.strerror}") from None
    raise KernelError(f"{what}: the pipe gave more than {format_size(limit)}, more than "
                      f"guest RAM")
