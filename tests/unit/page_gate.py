"""Hold a disk backend's I/O in flight from a test: a read into, or a write from, a page of
test guest RAM that PageGate holds blocks inside the kernel (userfaultfd, missing-page
mode) until the test releases the page, whichever thread makes the access: a C worker of
aio=threads, Python, or the kernel for io_uring. So a test can look at a device with
requests provably in flight, which no timing can promise.

The ioctl numbers are the _IOWR/_IOR encodings of <linux/userfaultfd.h> (type 0xAA), and
the message layout is that header's struct uffd_msg.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import struct
import time

import pytest

NR_USERFAULTFD = 323                      # x86-64
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F                   # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFDIO_REGISTER = 0xC020AA00              # _IOWR(0xAA, 0x00, struct uffdio_register)
UFFDIO_UNREGISTER = 0x8010AA01            # _IOR(0xAA, 0x01, struct uffdio_range)
UFFDIO_COPY = 0xC028AA03                  # _IOWR(0xAA, 0x03, struct uffdio_copy)
UFFDIO_REGISTER_MODE_MISSING = 1
UFFD_EVENT_PAGEFAULT = 0x12
MSG_SIZE = 32                             # sizeof(struct uffd_msg)
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class PageGate:
    """Pages of `mem` (a GuestMemory) held by guest-physical address."""

    def __init__(self, mem) -> None:
        self.mem = mem
        fd = _libc.syscall(NR_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            pytest.skip(f"this host refuses userfaultfd ({os.strerror(err)})")
        self.fd = fd
        self._ioctl(UFFDIO_API, bytearray(struct.pack("<QQQ", UFFD_API, 0, 0)))
        self._saved: dict[int, bytes] = {}      # held page's host address -> contents
        self.faults = 0                          # accesses blocked so far

    def _ioctl(self, request: int, arg: bytearray) -> None:
        buf = (ctypes.c_char * len(arg)).from_buffer(arg)
        if _libc.ioctl(self.fd, request, ctypes.addressof(buf)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _host(self, gpa: int) -> int:
        for start, size, host in self.mem.regions:
            if start <= gpa < start + size:
                return host + gpa - start
        raise AssertionError(f"{gpa:#x} is outside guest RAM")

    def hold(self, gpa: int, length: int = PAGE) -> None:
        """Hold the pages of gpa .. gpa + length (each kept as it is now for release)."""
        first = gpa & ~(PAGE - 1)
        for page in range(first, gpa + length, PAGE):
            host = self._host(page)
            self._saved[host] = ctypes.string_at(host, PAGE)
            if _libc.madvise(host, PAGE, mmap.MADV_DONTNEED) < 0:
                raise OSError(ctypes.get_errno(), "madvise")
            self._ioctl(UFFDIO_REGISTER, bytearray(struct.pack(
                "<QQQQ", host, PAGE, UFFDIO_REGISTER_MODE_MISSING, 0)))

    def blocked(self) -> int:
        """Accesses that have blocked on held pages so far."""
        while True:
            try:
                data = os.read(self.fd, 16 * MSG_SIZE)
            except BlockingIOError:
                return self.faults
            self.faults += sum(1 for i in range(0, len(data), MSG_SIZE)
                               if data[i] == UFFD_EVENT_PAGEFAULT)

    def wait_held(self, count: int, timeout: float = 10) -> None:
        """Until `count` accesses in all have blocked on held pages."""
        deadline = time.monotonic() + timeout
        while self.blocked() < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.faults} of {count} accesses blocked"
            select.select([self.fd], [], [], left)

    def release(self, gpa: int | None = None) -> None:
        """Let the accesses to gpa's page (None: every held page) go on, on the contents
        the page had when it was held."""
        hosts = list(self._saved) if gpa is None else [self._host(gpa & ~(PAGE - 1))]
        for host in hosts:
            contents = ctypes.create_string_buffer(self._saved.pop(host), PAGE)
            try:
                self._ioctl(UFFDIO_COPY, bytearray(struct.pack(
                    "<QQQQq", host, ctypes.addressof(contents), PAGE, 0, 0)))
            except OSError as e:
                if e.errno != errno.EEXIST:      # already there: nothing blocks on it
                    raise
            self._ioctl(UFFDIO_UNREGISTER, bytearray(struct.pack("<QQ", host, PAGE)))

    def close(self) -> None:
        """Release what is still held, then let the pages fault as usual again."""
        if self.fd >= 0:
            self.release()
            os.close(self.fd)
            self.fd = -1
