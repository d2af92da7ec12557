"""Files the targets hand to pyvisor by path without leaving anything on disk: a memfd,
reached through /proc/self/fd (opening that path opens the same file again)."""
from __future__ import annotations

import os


class MemFile:
    def __init__(self, name: str, data: bytes = b"") -> None:
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self.path = f"/proc/self/fd/{self.fd}"
        self.set(data)

    def set(self, data: bytes) -> None:
        """Replace the whole content."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def resize(self, size: int) -> None:
        """A file of `size` zero bytes (sparse: no host memory until written)."""
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, size)
