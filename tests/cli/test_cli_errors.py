"""User errors end in one clear line and a non-zero status, never a traceback."""
import struct

import pytest

from helpers import guest, needs_kvm, one_line_error, pyvisor


def test_missing_kernel(tmp_path):
    line = one_line_error(pyvisor("run", str(tmp_path / "nope.elf")))
    assert "nope.elf" in line and "No such file" in line


def test_kernel_is_a_directory(tmp_path):
    line = one_line_error(pyvisor("run", str(tmp_path)))
    assert "directory" in line.lower()


def test_not_an_elf(tmp_path):
    path = tmp_path / "kernel.img"
    path.write_bytes(b"MZ this is not an ELF file at all" * 10)
    line = one_line_error(pyvisor("run", str(path), "--mem", "16M"))
    assert "not a bzImage or ELF kernel" in line


def test_truncated_elf(tmp_path):
    from pyvisor.loader.elf import parse_elf

    data = open(guest("hello"), "rb").read()
    segment = parse_elf(data, "hello").segments[-1]
    path = tmp_path / "truncated.elf"
    path.write_bytes(data[: segment.offset + segment.filesz // 2])
    line = one_line_error(pyvisor("run", str(path), "--mem", "16M"))
    assert "truncated" in line


def test_truncated_header(tmp_path):
    path = tmp_path / "short.elf"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, 62))
    line = one_line_error(pyvisor("run", str(path), "--mem", "16M"))
    assert "truncated" in line


@pytest.mark.parametrize("size, words", [
    ("0", "greater than zero"),
    ("abc", "invalid size"),
    ("-5M", "invalid size"),
    ("12Q", "invalid size"),
])
def test_bad_memory_size(size, words):
    line = one_line_error(pyvisor("run", guest("hello"), "--mem", size))
    assert words in line


@needs_kvm
def test_memory_the_host_cannot_back():
    line = one_line_error(pyvisor("run", guest("hello"), "--mem", "64T"))
    assert "cannot back" in line


def test_bad_cpu_count():
    line = one_line_error(pyvisor("run", guest("hello"), "--cpus", "0"))
    assert "CPU count" in line
    line = one_line_error(pyvisor("run", guest("hello"), "--cpus", "many"))
    assert "many" in line


def test_kvm_device_missing():
    line = one_line_error(pyvisor("run", guest("hello"), "--kvm-device", "/nonexistent/kvm"))
    assert "/nonexistent/kvm does not exist" in line


def test_kvm_device_not_kvm():
    line = one_line_error(pyvisor("run", guest("hello"), "--kvm-device", "/dev/null"))
    assert "/dev/null" in line


def test_kvm_device_not_accessible(tmp_path, monkeypatch, capsys):
    """In-process, so the permission failure is real for root too: os.open refuses."""
    import errno

    from pyvisor import cli
    from pyvisor.kvm import system

    def refuse(path, flags, *args):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(system.os, "open", refuse)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", guest("hello"), "--mem", "16M"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no permission to open /dev/kvm" in err[0], err


def test_unknown_option():
    result = pyvisor("run", guest("hello"), "--frobnicate")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "unrecognized arguments: --frobnicate" in line and "'pyvisor run --help'" in line


@pytest.mark.parametrize("args, words", [
    ((), "missing COMMAND: one of check, restore, run, serve"),
    (("-v",), "missing COMMAND"),
    (("frob",), "invalid choice: 'frob'"),
    (("run", "k.elf", "--boot", "bios"), "argument --boot: invalid choice: 'bios'"),
    (("run", "k.elf", "--mem"), "argument -m/--mem: expected one argument"),
    (("run", "k.elf", "--timeout", "soon"), "invalid float value: 'soon'"),
    (("serve",), "the following arguments are required: --api-sock"),
    (("restore",), "the following arguments are required: SNAPSHOT"),
    (("restore", "x.snap", "--gdb-wait"), "--gdb-wait needs --gdb"),
])
def test_usage_errors(args, words):
    """A malformed command line: one line naming what is wrong, status 2."""
    result = pyvisor(*args)
    assert result.returncode == 2, result.stderr
    assert words in one_line_error(result)


def test_version_and_help():
    result = pyvisor("--version")
    assert result.returncode == 0 and result.stdout == b"pyvisor, version 0.1.0\n"
    for args in (["--help"], ["-h"], ["run", "--help"], ["check", "-h"], ["serve", "--help"],
                 ["restore", "--help"], ["-v", "run", "--help"]):
        result = pyvisor(*args)
        assert result.returncode == 0 and result.stdout.startswith(b"Usage: pyvisor"), args
        assert result.stderr == b"", args
    commands = pyvisor("--help").stdout.decode().partition("Commands:")[2].split()
    assert {"check", "restore", "run", "serve"} <= set(commands)
    assert b"[default: 512M]" in pyvisor("run", "--help").stdout
