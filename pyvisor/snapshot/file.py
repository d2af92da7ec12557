"""Snapshot files: `save(machine, path)` and `restore(cls, path, ...)` (the format is in
docs/SNAPSHOT.md).

A file is a 64-byte header (magic, version, where the state and the memory are, CRC-32s of
both the header and the state), the state (the machine's configuration, the host CPU it
was taken on, the disks it uses with their size and mtime, vCPU, VM and device state) in
pyvisor's plain-data encoding, then guest memory: only pages that are not all zero, as
page-aligned runs, so the file is about as large as what the guest touched. A restore
maps each run MAP_PRIVATE from the file (as Firecracker does): nothing is read before the
guest touches it, and the guest's writes never reach the file.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from .. import __version__
from .._native import ffi, lib
from ..devices.virtio.blk import DiskSpec
from ..devices.virtio.net import NetSpec
from ..errors import KvmError, PyvisorError
from ..kvm.backend import detect_backend
from ..machine.config import MachineConfig
from ..memory.guest_memory import PAGE
from .encoding import EncodingError, decode, encode
from .errors import SnapshotError
from .vcpu_state import VcpuState
from .vm_state import VmState

MAGIC = b"PYVISNAP"
VERSION = 1
HEADER = struct.Struct("<8sIIQQIIQQII")   # magic, version, header size, state offset and
#   length, state CRC, flags, memory offset and length, reserved, header CRC
HEADER_SIZE = HEADER.size
RUN_GAP = 8        # zero pages a run may bridge (fewer mappings for scattered pages)
MAX_RUNS = 16384   # mappings per region at most: the gap doubles until the runs fit
# What a restore may choose; the rest is the snapshot's.
RESTORE_OPTIONS = ("console", "capture_output", "console_limit", "kvm_path")


# --- what the file says about the machine and the host ----------------------------------------

def _config_record(cfg: MachineConfig) -> dict:
    return {"kernel": cfg.kernel, "mem": cfg.mem, "cpus": cfg.cpus, "cmdline": cfg.cmdline,
            "initrd": cfg.initrd, "boot_protocol": cfg.boot_protocol,
            "disks": [{"path": d.path, "readonly": d.readonly, "serial": d.serial}
                      for d in cfg.disks],
            "nets": [{"tap": n.tap, "mac": n.mac} for n in cfg.nets],
            "rng": cfg.rng, "virtio_transport": cfg.virtio_transport,
            "virtio_console": cfg.console == "virtio"}


def _config_from(record: dict, options: dict) -> MachineConfig:
    unknown = set(options) - set(RESTORE_OPTIONS)
    if unknown:
        raise SnapshotError(f"a restore takes only {', '.join(RESTORE_OPTIONS)} (not "
                            f"{', '.join(sorted(unknown))}): the rest is the snapshot's")
    virtio_console = options.get("console", "none") == "virtio"
    if bool(record["virtio_console"]) != virtio_console:
        raise SnapshotError("this snapshot's console is " + (
            "a virtio console: restore it with console virtio" if record["virtio_console"]
            else "the UART: restore it with console stdio, none or a file"))
    disks = [DiskSpec(d["path"], bool(d["readonly"]), d["serial"]) for d in record["disks"]]
    nets = [NetSpec(n["tap"], bytes(n["mac"])) for n in record["nets"]]
    return MachineConfig.build(record["kernel"], mem=int(record["mem"]), cpus=int(record["cpus"]),
                               cmdline=record["cmdline"], initrd=record["initrd"],
                               boot_protocol=record["boot_protocol"], disks=disks, nets=nets,
                               rng=bool(record["rng"]),
                               virtio_transport=record["virtio_transport"], **options)


def host_identity(kvm) -> dict:
    """The CPU a snapshot's vCPU state belongs to: vendor, family/model/stepping (CPUID
    leaf 1 EAX) and the KVM backend."""
    leaves = {(e.function, e.index): e for e in kvm.supported_cpuid()}
    zero, one = leaves.get((0, 0)), leaves.get((1, 0))
    vendor = b"".join(r.to_bytes(4, "little") for r in (zero.ebx, zero.edx, zero.ecx)) if zero else b""
    return {"vendor": vendor.decode("ascii", "replace"), "signature": one.eax if one else 0,
            "backend": detect_backend().name}


def _disk_record(spec: DiskSpec) -> dict:
    st = os.stat(spec.path)
    return {"path": spec.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_disks(disks: list[dict], force: bool) -> None:
    for disk in disks:
        try:
            st = os.stat(disk["path"])
        except OSError as e:
            raise SnapshotError(f"the snapshot's disk {disk['path']} is gone: {e.strerror}") from None
        if (st.st_size, st.st_mtime_ns) != (disk["size"], disk["mtime_ns"]) and not force:
            raise SnapshotError(f"the snapshot's disk {disk['path']} changed since it was "
                                f"saved (size or mtime); restore with force to use it anyway")


# --- memory as runs ---------------------------------------------------------------------

def _runs(host: int, npages: int) -> list[tuple[int, int]]:
    """(first page, page count) of the pages that are not all zero, bridging short gaps."""
    marks = bytearray(npages)
    lib.pv_scan_nonzero(ffi.cast("uint8_t *", host), npages, ffi.from_buffer(marks))
    gap = RUN_GAP
    while True:
        runs, pos, zeros = [], 0, bytes(gap + 1)
        while (start := marks.find(1, pos)) >= 0:
            stop = marks.find(zeros, start)            # gap + 1 zero pages end a run
            stop = npages if stop < 0 else stop
            stop = marks.rfind(1, start, stop) + 1
            runs.append((start, stop - start))
            pos = stop
        if len(runs) <= MAX_RUNS:
            return runs
        gap *= 2


def save(machine, path: str, dir_fd: int | None = None) -> int:
    """Write the (paused) machine to path (through a temporary file, renamed into place);
    returns the file's size. With dir_fd, path is relative to that directory (which the
    seccomp filter lets a machine write into)."""
    snapshotter = machine._snapshotter()
    snap = snapshotter.capture(with_memory=False)
    regions, offset = [], 0
    for gpa, size, host in machine.memory.regions:
        runs = []
        for first, count in _runs(host, size // PAGE):
            runs.append([first, count, offset])
            offset += count * PAGE
        regions.append({"gpa": gpa, "size": size, "runs": runs})
    state = encode({
        "pyvisor": __version__, "host": host_identity(machine.kvm),
        "config": _config_record(machine.config),
        "disks": [_disk_record(d) for d in machine.config.disks],
        "vcpus": [v.to_record() for v in snap.vcpus], "vm": snap.vm.to_record(),
        "devices": snap.devices, "memory": {"regions": regions}})
    memory_offset = -(-(HEADER_SIZE + len(state)) // PAGE) * PAGE
    fields = [MAGIC, VERSION, HEADER_SIZE, HEADER_SIZE, len(state), zlib.crc32(state), 0,
              memory_offset, offset, 0]
    header = HEADER.pack(*fields, 0)
    header = HEADER.pack(*fields, zlib.crc32(header[:-4]))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
    except OSError as e:
        raise SnapshotError(f"cannot write snapshot {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + state)
            f.seek(memory_offset)
            for (gpa, size, host), region in zip(machine.memory.regions, regions):
                ram = ffi.buffer(ffi.cast("uint8_t *", host), size)
                for first, count, _ in region["runs"]:
                    f.write(ram[first * PAGE:(first + count) * PAGE])
            f.truncate(memory_offset + offset)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as e:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise SnapshotError(f"cannot write snapshot {path}: {e.strerror}") from None
    return memory_offset + offset


# --- reading ----------------------------------------------------------------------------

def read_state(fd: int, path: str) -> tuple[dict, int, int]:
    """The decoded state, and where guest memory lies in the file; one clear error for a
    file that is not a snapshot, truncated, corrupt or from another format version."""
    size = os.fstat(fd).st_size
    header = os.pread(fd, HEADER_SIZE, 0)
    if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
        raise SnapshotError(f"{path} is not a pyvisor snapshot")
    (_, version, header_size, state_offset, state_length, state_crc, _flags, memory_offset,
     memory_length, _, header_crc) = HEADER.unpack(header)
    if zlib.crc32(header[:-4]) != header_crc:
        raise SnapshotError(f"{path} is corrupt (header checksum)")
    if version != VERSION or header_size != HEADER_SIZE:
        raise SnapshotError(f"{path} is a version {version} snapshot; this pyvisor reads "
                            f"version {VERSION}")
    if state_offset + state_length > size or memory_offset + memory_length > size or \
            memory_offset % PAGE:
        raise SnapshotError(f"{path} is truncated ({size} bytes; its header says "
                            f"{max(state_offset + state_length, memory_offset + memory_length)})")
    state = os.pread(fd, state_length, state_offset)
    if len(state) != state_length:
        raise SnapshotError(f"{path} is truncated")
    if zlib.crc32(state) != state_crc:
        raise SnapshotError(f"{path} is corrupt (state checksum)")
    try:
        record = decode(state)
    except EncodingError as e:
        raise SnapshotError(f"{path} is corrupt ({e})") from None
    if not isinstance(record, dict):
        raise SnapshotError(f"{path} is corrupt (no state)")
    return record, memory_offset, memory_length


def restore(cls, path: str, *, force: bool = False, **options: Any):
    """A new machine (class cls) from a snapshot file, paused before its next instruction
    (start or run it). options: console, capture_output, console_limit, kvm_path; force
    uses disks whose size or mtime changed since the save."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SnapshotError(f"cannot open snapshot {path}: {e.strerror}") from None
    try:
        record, memory_offset, memory_length = read_state(fd, path)
        try:
            config = _config_from(record["config"], options)
            host, disks = record["host"], record["disks"]
            vcpus, vm, devices = record["vcpus"], record["vm"], record["devices"]
            regions = record["memory"]["regions"]
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"{path} is corrupt (state: {e!r})") from None
        _check_disks(disks, force)
        machine = cls.__new__(cls)
        machine._restoring = True            # built without loading the kernel
        machine.__init__(config)
        try:
            here = host_identity(machine.kvm)
            if here != host:
                raise SnapshotError(
                    f"{path} was taken on another CPU ({host.get('vendor')} "
                    f"{host.get('signature', 0):#x}, {host.get('backend')}); this host is "
                    f"{here['vendor']} {here['signature']:#x}, {here['backend']}")
            _map_memory(machine, fd, path, regions, memory_offset, memory_length)
            _load_state(machine, vcpus, vm, devices)
        except BaseException:
            machine.close()
            raise
        return machine
    finally:
        os.close(fd)


def _map_memory(machine, fd: int, path: str, regions: list, memory_offset: int,
                memory_length: int) -> None:
    """Guest RAM: zero everywhere (what the build put there is dropped), then each saved
    run mapped privately from the file."""
    ram = machine.memory.regions
    if [(r.get("gpa"), r.get("size")) for r in regions] != [(g, s) for g, s, _ in ram]:
        raise SnapshotError(f"{path} is corrupt (its memory layout does not match its "
                            f"configuration)")
    zero = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for (gpa, size, host), region in zip(ram, regions):
            _mmap(host, size, zero, 0, path)
            for run in region["runs"]:
                first, count, offset = (int(x) for x in run)
                if first < 0 or count <= 0 or (first + count) * PAGE > size or offset < 0 \
                        or offset % PAGE or offset + count * PAGE > memory_length:
                    raise SnapshotError(f"{path} is corrupt (a memory run lies outside RAM "
                                        f"or the file)")
                _mmap(host + first * PAGE, count * PAGE, fd, memory_offset + offset, path)
    finally:
        os.close(zero)


def _mmap(addr: int, size: int, fd: int, offset: int, path: str) -> None:
    ret = lib.pv_mmap_file_private(ffi.cast("void *", addr), size, fd, offset)
    if ret < 0:
        raise SnapshotError(f"cannot map {path}'s memory: {os.strerror(-ret)}")


def _load_state(machine, vcpus: list, vm: dict, devices: dict) -> None:
    if not isinstance(vcpus, list) or len(vcpus) != len(machine.vm.vcpus):
        raise SnapshotError("the snapshot's vCPUs do not match its configuration")
    try:
        VmState.from_record(vm).apply(machine.vm)
        for vcpu, saved in zip(machine.vm.vcpus, vcpus):
            state = VcpuState.from_record(vcpu.index, saved)
            vcpu.set_cpuid(state.cpuid)
            state.apply(vcpu)
    except KvmError as e:
        raise SnapshotError(f"this host's KVM refuses the snapshot's state: {e}") from None
    machine._snapshotter().restore_devices(devices)
