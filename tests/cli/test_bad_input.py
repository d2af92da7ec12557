"""Hostile or careless command lines (issue 8): each ends in one clear line on stderr and a
non-zero status, quickly, never a traceback or a hang."""
import os
import subprocess

import pytest

from helpers import PYVISOR, guest, needs_kvm, one_line_error, pyvisor

# A hang is the failure these tests look for: every run gets far less than the suite's timeout.
QUICK = 20


def run(*args: str) -> subprocess.CompletedProcess:
    return pyvisor("run", *args, timeout=QUICK)


def run_bytes(*args: bytes) -> subprocess.CompletedProcess:
    """argv as bytes, so a byte that is not UTF-8 reaches pyvisor as it would from a shell."""
    return subprocess.run([PYVISOR.encode(), b"run", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=QUICK)


def test_memory_size_with_400_zeros():
    line = one_line_error(run(guest("hello"), "--mem", "1" + "0" * 400, "--console", "none"))
    assert "invalid size" in line and "larger than 16 EiB" in line
    assert len(line) < 200


@pytest.mark.parametrize("option, value, what", [
    (b"--append", b"console=ttyS0 \xff", "command line"),
    (b"--disk", b"/nonexistent.img,serial=\xfe", "--disk options"),
    (b"--net", b"tap=tap\xff", "--net"),
])
def test_non_utf8_arguments(option, value, what):
    result = run_bytes(guest("hello").encode(), b"--console", b"none", option, value)
    assert result.returncode == 1, result.stderr
    line = one_line_error(result)
    assert f"invalid {what}" in line and "is not UTF-8" in line


def test_too_many_pci_devices(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(512))
    result = run(guest("hello"), "--console", "none", "--rng",
                 *[arg for _ in range(31) for arg in ("--disk", str(disk))])
    assert result.returncode == 1
    assert "too many virtio devices: 32, but the PCI bus has slots for 31" in one_line_error(result)


def test_more_nets_than_macs():
    """171 interfaces would run out of default MACs (52:54:00:12:34:56 + index): refused
    up front, before any tap is touched."""
    result = run(guest("hello"), "--console", "none",
                 *[arg for i in range(171) for arg in ("--net", f"tap=t{i}")])
    assert result.returncode == 1
    assert "too many virtio devices: 171" in one_line_error(result)


def test_net_option_given_twice():
    line = one_line_error(run(guest("hello"), "--console", "none", "--net", "tap=x,tap=y"))
    assert "an option is given twice" in line


@needs_kvm
def test_disk_that_is_not_an_image():
    """/proc/self/mem is a 'regular file' whose size cannot be asked: never a disk."""
    line = one_line_error(run(guest("hello"), "--mem", "16M", "--console", "none",
                              "--disk", "/proc/self/mem"))
    assert "disk '/proc/self/mem'" in line and "not a disk image" in line


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def test_fifo_as_kernel_does_not_block(fifo):
    """A FIFO nobody writes to reads as empty at once (open never waits for a writer)."""
    line = one_line_error(run(fifo, "--mem", "16M", "--console", "none"))
    assert "not a bzImage or ELF kernel (the file is empty)" in line


@needs_kvm
def test_fifo_as_initrd_does_not_block(fifo):
    line = one_line_error(run(guest("hello"), "--mem", "16M", "--console", "none",
                              "--initrd", fifo))
    assert f"initrd {fifo!r}: not a regular file (a FIFO)" in line


def test_fifo_as_console_file_does_not_block(fifo):
    line = one_line_error(run(guest("hello"), "--mem", "16M", "--console", fifo))
    assert "is a FIFO: expected a regular file or a character device" in line


@needs_kvm
def test_kernel_from_a_pipe_is_read_once():
    """`pyvisor run <(cat hello.elf)`: the pipe can be read only once, and that is enough."""
    with open(guest("hello"), "rb") as f:
        data = f.read()
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=write_end)
    os.close(write_end)
    try:
        writer.stdin.write(data)
        writer.stdin.close()
        result = subprocess.run([PYVISOR, "run", f"/dev/fd/{read_end}", "--mem", "16M",
                                 "--console", "none", "--append", "hello=pipe"],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=QUICK,
                                pass_fds=(read_end,))
    finally:
        os.close(read_end)
        writer.wait(QUICK)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("value, words", [
    ("-1", "greater than zero"),
    ("0", "greater than zero"),
    ("nan", "greater than zero"),
])
def test_bad_timeouts(value, words):
    line = one_line_error(run(guest("hello"), "--mem", "16M", "--console", "none",
                              "--timeout", value))
    assert f"invalid timeout" in line and words in line


@needs_kvm
@pytest.mark.parametrize("value", ["inf", "1e10"])
def test_unbounded_timeouts_mean_no_limit(value):
    """Beyond what the host can wait for is no limit, not an OverflowError (or a
    segfault at teardown) once the vCPUs run."""
    result = run(guest("hello"), "--mem", "16M", "--console", "none", "--timeout", value)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""


@needs_kvm
def test_bzimage_that_takes_no_initrd(tmp_path):
    """initrd_addr_max 0 (a header that forbids an initrd anywhere) is named as such."""
    data = bytearray(open(guest("hello", "bzImage"), "rb").read())
    data[0x22C:0x230] = bytes(4)   # initrd_addr_max (boot.rst)
    kernel = tmp_path / "k.bzImage"
    kernel.write_bytes(data)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x" * 4096)
    line = one_line_error(run(str(kernel), "--mem", "64M", "--console", "none",
                              "--initrd", str(initrd)))
    assert "initrd_addr_max is 0x0" in line and "cannot be given an initrd" in line


def test_seccomp_on_with_restart_is_a_usage_error():
    """A restart opens /dev/kvm, disks and taps again, which the filter forbids."""
    result = run(guest("hello"), "--seccomp", "on", "--on-reboot", "restart")
    assert result.returncode == 2
    assert "--seccomp on cannot be combined with --on-reboot restart" in one_line_error(result)


@needs_kvm
@pytest.mark.parametrize("suffix", ["", ",ro"])
def test_fifo_as_disk_does_not_block(fifo, suffix):
    line = one_line_error(run(guest("hello"), "--mem", "16M", "--console", "none",
                              "--disk", fifo + suffix))
    assert "not a regular file or block device" in line
