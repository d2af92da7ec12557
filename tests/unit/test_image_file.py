"""Kernel and initrd files are opened without blocking and a pipe is read once, boundedly."""
import os
import threading

import pytest

from pyvisor.errors import KernelError
from pyvisor.loader.image_file import ImageSource, open_nonblocking, read_image


def test_regular_file(tmp_path):
    (tmp_path / "k").write_bytes(b"kernel")
    assert read_image(tmp_path / "k", "kernel 'k'", 1) == b"kernel"   # the limit is for pipes


def test_pipe_is_read_to_its_end():
    r, w = os.pipe()
    data = os.urandom(3 << 20)
    writer = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    writer.start()
    try:
        assert read_image(f"/dev/fd/{r}", "kernel", len(data)) == data
    finally:
        writer.join()
        os.close(r)


def test_pipe_longer_than_the_limit():
    r, w = os.pipe()
    os.write(w, bytes(8192))
    try:
        with pytest.raises(KernelError, match="more than 4 KiB"):
            read_image(f"/dev/fd/{r}", "kernel", 4096)
    finally:
        os.close(w)
        os.close(r)


def test_fifo_without_a_writer_reads_empty_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert read_image(tmp_path / "fifo", "kernel", 1 << 20) == b""


@pytest.mark.parametrize("path, words", [
    ("/dev/zero", r"not a regular file \(a device\)"),
    ("/", "Is a directory"),
    ("/nonexistent", "No such file"),
])
def test_refused(path, words):
    with pytest.raises(KernelError, match=rf"^kernel: {words}"):
        read_image(path, "kernel", 1 << 20)


def test_pipe_only_when_allowed(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KernelError, match=r"a FIFO"):
        open_nonblocking(tmp_path / "fifo", "initrd")


def test_source_reads_a_file_where_it_is_used(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "k").write_bytes(data)
    with ImageSource(tmp_path / "k", "kernel 'k'", 1) as source:
        assert source.size == len(data)
        assert source.head(512) == data[:512]
        buffer = bytearray(1 << 20)
        source.read_into(memoryview(buffer), 12345)
        assert buffer == data[12345:12345 + (1 << 20)]
        assert source.data() == data


def test_source_of_a_pipe_is_read_once():
    r, w = os.pipe()
    os.write(w, b"0123456789")
    os.close(w)
    try:
        with ImageSource(f"/dev/fd/{r}", "kernel", 4096) as source:
            assert (source.size, source.head(4)) == (10, b"0123")
            buffer = bytearray(3)
            source.read_into(memoryview(buffer), 5)
            assert buffer == b"567"
    finally:
        os.close(r)


def test_a_file_that_shrinks_while_it_is_read_is_refused(tmp_path):
    (tmp_path / "k").write_bytes(bytes(8192))
    with ImageSource(tmp_path / "k", "kernel 'k'", 1) as source:
        os.truncate(tmp_path / "k", 4096)
        with pytest.raises(KernelError, match=r"^kernel 'k': the file became shorter"):
            source.read_into(memoryview(bytearray(8192)), 0)


def test_a_file_that_shrinks_before_it_is_read_whole_is_refused(tmp_path):
    (tmp_path / "k").write_bytes(bytes(8192))
    with ImageSource(tmp_path / "k", "kernel 'k'", 1) as source:
        os.truncate(tmp_path / "k", 4096)
        with pytest.raises(KernelError, match=r"^kernel 'k': the file became shorter"):
            source.data()
