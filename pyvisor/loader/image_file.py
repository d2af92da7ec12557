"""Opening the files a guest boots from (kernel, initrd) without ever blocking in open.

A plain open() of a FIFO waits for a writer, forever if none comes. These files are opened
with O_NONBLOCK (which never waits) and checked with fstat before anything is read. A
kernel may also come from a pipe (``pyvisor run <(zcat vmlinux.gz)``): it is read once,
to its end, and everything after works on those bytes.

A regular file is read where it is used: `ImageSource` gives its first bytes to the
parsers, then reads a range straight into the guest RAM it goes to, so a 14 MiB bzImage
is never held twice in host memory nor copied once more (about 0.1 s of start-up in the
nested test host).
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


class ImageSource:
    """A kernel file, opened: `size`, its first bytes (`head`), any range read into a
    buffer (`read_into`), or all of it (`data`). A pipe is read whole at open, at most
    `limit` bytes (it cannot seek). A file that shrinks while it is read is refused."""

    def __init__(self, path: str | os.PathLike, what: str, limit: int) -> None:
        self.what = what
        f, pipe = open_nonblocking(path, what, allow_pipe=True)
        if pipe:
            with f:
                self._bytes: bytes | None = _read_pipe(f, what, limit)
            self._file = None
            self.size = len(self._bytes)
        else:
            self._bytes, self._file = None, f
            self.size = os.fstat(f.fileno()).st_size

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()

    def head(self, size: int) -> bytes:
        """The first `size` bytes (fewer in a shorter file)."""
        if self._bytes is not None:
            return self._bytes[:size]
        return self._pread(min(size, self.size), 0)

    def data(self) -> bytes:
        """The whole file (for the loaders that parse all of it: ELF, Multiboot)."""
        if self._bytes is not None:
            return self._bytes
        return self._pread(self.size, 0)

    def read_into(self, buffer: memoryview, offset: int) -> None:
        """Fill `buffer` with the file's bytes from `offset` on."""
        if self._bytes is not None:
            buffer[:] = memoryview(self._bytes)[offset:offset + len(buffer)]
            return
        done = 0
        try:
            while done < len(buffer):
                got = os.preadv(self._file.fileno(), [buffer[done:]], offset + done)
                if got == 0:
                    raise self._shrunk()
                done += got
        except OSError as e:
            raise KernelError(f"{self.what}: {e.strerror}") from None

    def _shrunk(self) -> KernelError:
        return KernelError(f"{self.what}: the file became shorter while it was read")

    def _pread(self, size: int, offset: int) -> bytes:
        """`size` bytes from `offset`, in one allocation unless a read comes back short."""
        chunks, done = [], 0
        try:
            while done < size:
                chunk = os.pread(self._file.fileno(), size - done, offset + done)
                if not chunk:
                    raise self._shrunk()
                chunks.append(chunk)
                done += len(chunk)
        except OSError as e:
            raise KernelError(f"{self.what}: {e.strerror}") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_pipe(f: io.FileIO, what: str, limit: int) -> bytes:
    """A pipe to its end, or KernelError beyond `limit` bytes."""
    data = bytearray()
    try:
        while len(data) <= limit:
            chunk = f.read(min(_CHUNK, limit + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
    except OSError as e:
        raise KernelError(f"{what}: {e.strerror}") from None
    raise KernelError(f"{what}: the pipe gave more than {format_size(limit)}, more than "
                      f"guest RAM")


def read_image(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The whole file (regular file or pipe), read once. A pipe is read at most
    ``limit`` bytes far, so a writer that never stops costs bounded host memory."""
    with ImageSource(path, what, limit) as source:
        return source.data()
