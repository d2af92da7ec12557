"""Snapshot files: save in one process, `pyvisor restore` in another, the same console
continuation; memory stored sparsely; a truncated, corrupt, foreign-version, foreign-CPU
or foreign file and a changed disk are refused in one line."""
import os
import socket
import struct
import subprocess
import threading
import time
import zlib

import pytest

from helpers import PYVISOR, guest, needs_kvm, pyvisor
from pyvisor import Machine
from pyvisor.snapshot import encoding
from pyvisor.snapshot.errors import SnapshotError
from snap_guest import rounds_of

pytestmark = [needs_kvm, pytest.mark.kvm]

ROUND_PORT = 0x84
HEADER = struct.Struct("<8sIIQQIIQQII")   # the layout docs/SNAPSHOT.md gives


def symbol(kernel: str, name: str) -> int:
    out = subprocess.run(["nm", guest(kernel)], capture_output=True, text=True, check=True).stdout
    return next(int(p[0], 16) for p in (line.split() for line in out.splitlines())
                if len(p) == 3 and p[2] == name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """snap_target saved after round 3 of 6, and what it printed after that point."""
    path = str(tmp_path_factory.mktemp("snap") / "vm.snap")
    with Machine(kernel=guest("snap_target"), mem="64M", cmdline="pages=8 rounds=6") as m:
        paused = threading.Event()
        m.on_pio(ROUND_PORT, callback=lambda c, p, s, value, w: (
            value == 3 and (m.pause(), paused.set()), True)[1])
        m.start()
        assert paused.wait(30)
        size = m.save(path)
        assert size == os.path.getsize(path)
        m.resume()
        assert m.wait(60).status == 3
        after = rounds_of(m.console_text)[3:]
    return path, after


def test_restore_in_a_new_process_continues_the_console(saved):
    path, after = saved
    result = pyvisor("restore", path, "--console", "stdio", "--timeout", "60")
    assert result.returncode == 3, result.stderr.decode()
    assert rounds_of(result.stdout.decode()) == after
    assert after[0].startswith("round 4 ") and after[-1].startswith("done 6 ")


def test_restore_from_in_the_library_and_memory_is_sparse(saved):
    path, after = saved
    assert os.path.getsize(path) < 2 << 20          # a 64 MiB guest that touched little
    with Machine.restore_from(path) as m:
        assert m.memory.read_u64(symbol("snap_target", "counter")) == 3
        assert m.run(timeout=60).status == 3
        assert rounds_of(m.console_text) == after


def rewrite(src: str, dst: str, *, version: int | None = None, state_edit=None,
            fix_header: bool = True) -> None:
    """A copy of snapshot src with the header's version or the decoded state changed, and
    the checksums made right again (so only the change itself is wrong)."""
    data = bytearray(open(src, "rb").read())
    fields = list(HEADER.unpack_from(data))
    state = bytes(data[fields[3]:fields[3] + fields[4]])
    if state_edit is not None:
        record = encoding.decode(state)
        state_edit(record)
        new = encoding.encode(record)
        assert fields[3] + len(new) <= fields[7], "the edited state must fit before memory"
        data[fields[3]:fields[3] + len(new)] = new
        fields[4], fields[5] = len(new), zlib.crc32(new)
    if version is not None:
        fields[1] = version
    if fix_header:
        fields[-1] = zlib.crc32(HEADER.pack(*fields)[:-4])
    data[:HEADER.size] = HEADER.pack(*fields)
    open(dst, "wb").write(data)


def refused(path: str, *args: str) -> str:
    result = pyvisor("restore", path, "--console", "none", *args)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_truncated_file_is_refused(saved, tmp_path):
    path = tmp_path / "cut.snap"
    path.write_bytes(open(saved[0], "rb").read()[:-8192])
    assert "is truncated" in refused(str(path))


def test_a_corrupt_state_is_refused(saved, tmp_path):
    data = bytearray(open(saved[0], "rb").read())
    data[HEADER.size + 100] ^= 0x40
    (tmp_path / "bad.snap").write_bytes(data)
    assert "is corrupt (state checksum)" in refused(str(tmp_path / "bad.snap"))
    data = bytearray(open(saved[0], "rb").read())
    data[20] ^= 1                                     # the header's state offset
    (tmp_path / "hdr.snap").write_bytes(data)
    assert "is corrupt (header checksum)" in refused(str(tmp_path / "hdr.snap"))


def test_another_format_version_is_refused(saved, tmp_path):
    rewrite(saved[0], str(tmp_path / "v2.snap"), version=2)
    assert "is a version 2 snapshot; this pyvisor reads version 1" in \
        refused(str(tmp_path / "v2.snap"))


def test_a_snapshot_from_another_cpu_is_refused(saved, tmp_path):
    def other_cpu(record):
        record["host"]["vendor"] = "GenuineOther"
    rewrite(saved[0], str(tmp_path / "cpu.snap"), state_edit=other_cpu)
    err = refused(str(tmp_path / "cpu.snap"))
    assert "was taken on another CPU (GenuineOther" in err
    with pytest.raises(SnapshotError, match="another CPU"):
        Machine.restore_from(str(tmp_path / "cpu.snap"))


def test_a_file_that_is_no_snapshot_is_refused(tmp_path):
    (tmp_path / "x.snap").write_bytes(b"\x7fELF" + bytes(100))
    assert "is not a pyvisor snapshot" in refused(str(tmp_path / "x.snap"))
    assert "cannot open snapshot" in refused(str(tmp_path / "missing.snap"))


def test_a_changed_disk_is_refused_unless_forced(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 64)
    path = str(tmp_path / "blk.snap")
    with Machine(kernel=guest("virtio_blk"), mem="64M", cmdline="write=1",
                 disks=[str(disk)]) as m:
        paused = threading.Event()
        m.add_breakpoint(symbol("virtio_blk", "virtio_blk_request"),
                         callback=lambda cpu, bp: bp.hits == 2 and (m.pause(), paused.set()))
        m.start()
        assert paused.wait(30)
        m.save(path)
    result = pyvisor("restore", path, "--console", "stdio", "--timeout", "60")
    assert result.returncode == 0 and b"write ok" in result.stdout, result.stdout + result.stderr
    # That run wrote sectors 8..9 and flushed: the disk's mtime moved on.
    assert "changed since it was saved" in refused(path)
    result = pyvisor("restore", path, "--console", "stdio", "--timeout", "60", "--force")
    assert result.returncode == 0 and b"write ok" in result.stdout, result.stdout + result.stderr


def test_the_kernel_file_is_not_needed_to_restore(tmp_path):
    kernel = tmp_path / "snap_target.elf"
    kernel.write_bytes(open(guest("snap_target"), "rb").read())
    path = str(tmp_path / "vm.snap")
    with Machine(kernel=str(kernel), mem="64M", cmdline="pages=8 rounds=4") as m:
        paused = threading.Event()
        m.on_pio(ROUND_PORT, callback=lambda c, p, s, value, w: (
            value == 2 and (m.pause(), paused.set()), True)[1])
        m.start()
        assert paused.wait(30)
        m.save(path)
    kernel.unlink()
    with Machine.restore_from(path) as m:
        assert m.run(timeout=60).status == 3
        assert [line.split()[1] for line in rounds_of(m.console_text)] == ["3", "4", "4"]


def test_the_console_kind_must_match_the_snapshots(saved):
    """A virtio console is a device: a snapshot without one cannot be given one."""
    result = pyvisor("restore", saved[0], "--console", "virtio")
    err = result.stderr.decode()
    assert result.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert "restore it with console stdio, none or a file" in err


def test_restore_serves_gdb_and_waits_for_it(saved, tmp_path):
    """--gdb-wait: the restored guest stays where it was saved until gdb continues it."""
    sock_path = str(tmp_path / "gdb.sock")
    proc = subprocess.Popen([PYVISOR, "restore", saved[0], "--console", "stdio",
                             "--gdb", f"unix:{sock_path}", "--gdb-wait", "--timeout", "60"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as gdb:
            gdb.connect(sock_path)
            gdb.settimeout(30)
            gdb.sendall(b"$?#3f")                      # why stopped: a stop reply
            reply = b""
            while b"#" not in reply.lstrip(b"+"):
                reply += gdb.recv(4096)
            assert reply.lstrip(b"+").startswith((b"$T", b"$S")), reply
            gdb.sendall(b"+$c#63")                     # continue: the guest runs on
            out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err.decode()
    assert b"gdb stub on" in err and rounds_of(out.decode()) == saved[1]
