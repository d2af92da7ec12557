"""Initramfs archives in the kernel's `newc` cpio format, written in Python.

Writing the format ourselves (it is a 110-byte ASCII header per entry) keeps ownership
and timestamps deterministic and needs no root. Linux unpacks concatenated archives in
order, so a cached base archive plus a small per-run archive make one initrd.
"""
from __future__ import annotations

import gzip
import stat
from pathlib import Path

from .debian import BUSYBOX, KernelPackage, ko_bytes

TRAILER = "TRAILER!!!"


class Cpio:
    """An in-memory newc archive: add directories, files and symlinks, then `bytes()`."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1
        self._dirs: set[str] = set()

    @staticmethod
    def _record(ino: int, name: str, mode: int, data: bytes = b"") -> bytes:
        """One newc entry: header, NUL-terminated name and data, each padded to 4 bytes."""
        name_bytes = name.strip("/").encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0)
        head = b"070701" + "".join(f"{v:08X}" for v in fields).encode() + name_bytes
        return head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        self._out += self._record(self._ino, name, mode, data)
        self._ino += 1

    def dir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory and its missing parents."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path and path not in self._dirs:
                self._dirs.add(path)
                self._entry(path, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes | str, mode: int = 0o644) -> None:
        """Add a regular file (parents created as needed)."""
        if isinstance(data, str):
            data = data.encode()
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def __bytes__(self) -> bytes:
        return bytes(self._out) + self._record(0, TRAILER, 0)

    def gzip(self) -> bytes:
        return gzip.compress(bytes(self), compresslevel=6, mtime=0)


def busybox_base(init: str, kernel: KernelPackage, modules: list[str],
                 parameters: dict[str, str] | None = None) -> Cpio:
    """A busybox initramfs: /init, /bin/busybox and the modules with their dependencies.

    The modules are stored decompressed under /lib/modules/ and listed, dependencies first,
    in /lib/modules/load-order, which the init script insmods in turn, each with the
    parameters in /lib/modules/NAME.args if there is one (`parameters`, by module name).
    """
    cpio = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "lib/modules"):
        cpio.dir(d)
    cpio.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    order = []
    for ko in kernel.resolve(modules):
        name = ko.name.split(".ko")[0]
        cpio.file(f"lib/modules/{name}.ko", ko_bytes(ko))
        order.append(name)
    cpio.file("lib/modules/load-order", "".join(f"{n}\n" for n in order))
    for name, args in (parameters or {}).items():
        cpio.file(f"lib/modules/{name}.args", args)
    cpio.file("init", init, 0o755)
    return cpio


# Shell that every init starts with: busybox applets, the pseudo file systems, the modules.
INIT_PREAMBLE = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko $(cat /lib/modules/$m.args 2>/dev/null) \
        || echo "init: insmod $m failed"
done
"""
