"""Guest RAM for snapshots: a snapshot's copy of it (`MemoryImage`), and which pages changed
since the machine last matched a snapshot (`DirtyTracker`).

Changed pages are what KVM's dirty log reports for the guest's own writes (every RAM slot
carries KVM_MEM_LOG_DIRTY_PAGES once the first snapshot is taken) plus what pyvisor wrote
itself (GuestMemory's written map, marked by its write paths and by `buffer()`). A restore
of the snapshot the machine last matched copies back only those pages, in C
(`pv_reset_memory`); restoring another snapshot compares every page instead.
"""
from __future__ import annotations

import os

from .._native import ffi, lib
from ..memory.guest_memory import PAGE, GuestMemory
from ..memory.slots import MemorySlots
from ..kvm.vm import Vm
from ..errors import KvmError
from .errors import SnapshotError


def _anon(size: int):
    ptr = lib.pv_mmap_anon(size)
    if ptr == ffi.NULL:
        raise SnapshotError(f"cannot allocate {size >> 20} MiB for a snapshot of guest RAM: "
                            f"{os.strerror(ffi.errno)}")
    return ffi.gc(ffi.cast("uint8_t *", ptr), lambda p: lib.pv_munmap(p, size))


class MemoryImage:
    """A copy of guest RAM, one anonymous mapping per region; only pages that are not all
    zero take host memory."""

    def __init__(self, memory: GuestMemory) -> None:
        self.sizes = [size for _, size, _ in memory.regions]
        self._maps = [_anon(size) for size in self.sizes]
        self.saved = ffi.new("uint8_t *[]", self._maps)
        self.pages = 0
        for ptr, (_, size, host) in zip(self._maps, memory.regions):
            self.pages += lib.pv_copy_nonzero(ptr, ffi.cast("uint8_t *", host), size // PAGE)

    def copy_into(self, memory: GuestMemory) -> int:
        """Make guest RAM equal to this image, page by page; the pages copied."""
        copied = 0
        for ptr, (_, size, host) in zip(self._maps, memory.regions):
            copied += lib.pv_copy_differing(ffi.cast("uint8_t *", host), ptr, size // PAGE)
        return copied


class DirtyTracker:
    """Per machine: the pages that changed since guest RAM last matched `base`."""

    def __init__(self, vm: Vm, memory: GuestMemory, slots: MemorySlots) -> None:
        self._vm, self._memory, self._slots = vm, memory, slots
        self._written = memory.written_maps
        self._regions = memory.regions          # (gpa, size, host)
        self._table = ffi.new("struct pv_ram_region[]", len(self._regions))
        for entry, (_, size, host), written in zip(self._table, self._regions, self._written):
            entry.ram = ffi.cast("uint8_t *", host)
            entry.written = written
            entry.npages = size // PAGE
        self._logs = None
        self._log_count = 0
        self._generation = -1
        self.base: MemoryImage | None = None
        slots.before_change = self.harvest
        slots.set_dirty_log(True)

    def _log_table(self):
        """The pv_log_slot table for the current slot layout (rebuilt when it changes)."""
        if self._generation != self._slots.generation:
            logged = self._slots.logged_slots()
            table = ffi.new("struct pv_log_slot[]", max(len(logged), 1))
            keep = []
            for entry, (slot, gpa, size) in zip(table, logged):
                region = next(i for i, (start, length, _) in enumerate(self._regions)
                              if start <= gpa < start + length)
                npages = size // PAGE
                bitmap = ffi.new("uint64_t[]", (npages + 63) // 64)
                keep.append(bitmap)
                entry.slot, entry.region = slot, region
                entry.first_page = (gpa - self._regions[region][0]) // PAGE
                entry.npages, entry.bitmap = npages, bitmap
            self._logs, self._log_count, self._bitmaps = table, len(logged), keep
            self._generation = self._slots.generation
        return self._logs

    def harvest(self) -> None:
        """Fold KVM's dirty log into the written maps (before slots are rebuilt)."""
        if not self._slots.dirty_log:
            return
        ret = lib.pv_harvest_dirty(self._vm.fd, self._log_table(), self._log_count, self._table)
        if ret < 0:
            raise KvmError("KVM_GET_DIRTY_LOG", -ret)

    def _clear(self, keep_marked: list[tuple[int, int]]) -> None:
        """Forget every change so far: guest RAM matches the new base. Areas a device may
        write through views it holds (its used rings) count as changed from the start."""
        self.harvest()
        for written in self._written:
            ffi.memmove(written, bytes(len(written)), len(written))
        for gpa, size in keep_marked:
            self._memory.mark_written(gpa, size)

    def capture(self, keep_marked: list[tuple[int, int]]) -> MemoryImage:
        """Copy guest RAM (every vCPU out of KVM_RUN, devices quiet) as the new base."""
        image = MemoryImage(self._memory)
        self._clear(keep_marked)
        self.base = image
        return image

    def reset_args(self, image: MemoryImage) -> tuple | None:
        """pv_reset_memory's arguments when image is the base (its dirty pages are all that
        differ), for a caller that makes the call with more work in the same crossing
        (pv_reset_guest) and then calls reset_done; None for another image (reset)."""
        if image is not self.base:
            return None
        return (self._vm.fd, self._log_table(), self._log_count, self._table, image.saved,
                len(self._regions))

    def reset_done(self, keep_marked: list[tuple[int, int]]) -> None:
        """After the pages were copied back: areas a device writes through views it holds
        count as changed from the start again."""
        for gpa, size in keep_marked:
            self._memory.mark_written(gpa, size)

    def reset(self, image: MemoryImage, keep_marked: list[tuple[int, int]]) -> int:
        """Make guest RAM equal to image again; the number of pages copied."""
        args = self.reset_args(image)
        if args is not None:
            copied = lib.pv_reset_memory(*args)
            if copied < 0:
                raise KvmError("KVM_GET_DIRTY_LOG", -copied)
        else:
            self._clear([])
            copied = image.copy_into(self._memory)
            self.base = image
        self.reset_done(keep_marked)
        return copied
