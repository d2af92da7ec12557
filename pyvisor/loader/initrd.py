"""The initial ramdisk: placed page-aligned as high as the kernel allows, below 4 GiB.

Boot loaders put the initrd at the top of usable low memory (boot.rst: "as high as
possible") so the kernel's own decompression and early allocations below it stay free.
The file is read straight into guest RAM, never held twice in host memory.
"""
from __future__ import annotations

import os

from pyvisor.errors import KernelError
from pyvisor.loader.image_file import open_nonblocking
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.units import format_size
from pyvisor.x86.boot_layout import KERNEL_MIN_ADDR

INITRD_ALIGN = 4096
FOUR_GIB = 1 << 32


def _highest_slot(mem: GuestMemory, size: int, limit: int, floor: int) -> tuple[int | None, int]:
    """The highest page-aligned gpa with [gpa, gpa + size) inside one RAM region, at or above
    ``floor`` and ending at or below ``limit``; and the largest room seen (for the error)."""
    best_room = 0
    for region in sorted(mem.layout.regions, key=lambda r: r.gpa, reverse=True):
        top = min(region.end, limit)
        bottom = max(region.gpa, floor)
        if top <= bottom:
            continue
        bottom = -(-bottom // INITRD_ALIGN) * INITRD_ALIGN
        best_room = max(best_room, top - bottom)
        gpa = (top - size) // INITRD_ALIGN * INITRD_ALIGN
        if size <= top - bottom and gpa >= bottom:
            return gpa, best_room
    return None, best_room


def place_initrd(mem: GuestMemory, path: str | os.PathLike, addr_max: int,
                 avoid_below: int) -> tuple[int, int]:
    """Copy the initrd at ``path`` into guest RAM and return (gpa, size).

    It goes page-aligned, as high as possible with its last byte at or below ``addr_max``
    (the kernel's initrd_addr_max) and below 4 GiB, and entirely at or above
    ``avoid_below`` (the end of the kernel's init_size range; never below 1 MiB).
    An empty file is refused: Linux would silently boot without an initramfs.
    """
    name = os.fspath(path)
    f, _ = open_nonblocking(path, f"initrd {name!r}")
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise KernelError(f"initrd {name!r}: the file is empty")
        limit = min(addr_max + 1, FOUR_GIB)
        floor = max(avoid_below, KERNEL_MIN_ADDR)
        if limit <= floor:
            raise KernelError(
                f"initrd {name!r}: the kernel takes an initrd only below {limit:#x} (its "
                f"initrd_addr_max is {addr_max:#x}), which is under the kernel's own end "
                f"at {floor:#x}: this kernel cannot be given an initrd")
        gpa, room = _highest_slot(mem, size, limit, floor)
        if gpa is None:
            raise KernelError(
                f"initrd {name!r} is too large: {format_size(size)} ({size} bytes) but there "
                f"are only {format_size(room)} of RAM free between the kernel's end "
                f"{floor:#x} and {limit:#x}")
        view = mem.buffer(gpa, size)
        done = 0
        try:
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise KernelError(f"initrd {name!r}: the file shrank while being read "
                                      f"({done} of {size} bytes)")
                done += n
        except OSError as e:
            raise KernelError(f"initrd {name!r}: {e.strerror}") from None
        finally:
            view.release()
    return gpa, size
