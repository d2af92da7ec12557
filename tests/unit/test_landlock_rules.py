"""The Landlock ruleset (pyvisor.sandbox.landlock): its rights against the kernel's
documented values (Documentation/userspace-api/landlock.rst, ABI 1), what a kernel without
Landlock gets, and, in child processes (Landlock cannot be taken off), that every thread
already running is confined and that a thread which never answers leaves it refused."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from pyvisor._native import ffi, lib
from pyvisor.sandbox import landlock
from sandbox_calls import child_env

# ABI 1's filesystem rights, bit by bit, as the kernel documents them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR, REMOVE_DIR, REMOVE_FILE = (1 << b for b in range(6))
MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = (
    1 << b for b in range(6, 13))


@pytest.mark.parametrize("abi", [1, 2, 3, 6, 7, 8])
def test_every_abi_handles_all_but_reads(abi):
    assert landlock.handled_access(abi) == (EXECUTE | WRITE_FILE | REMOVE_DIR | REMOVE_FILE
                                            | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK
                                            | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM)


def test_the_directory_may_hold_new_written_and_removed_files():
    assert landlock.DIR_ACCESS == WRITE_FILE | MAKE_REG | REMOVE_FILE
    assert landlock.DIR_ACCESS & ~landlock.handled_access(1) == 0   # else EINVAL


@pytest.mark.parametrize("answer, words", [
    (-errno.ENOSYS, "this kernel has no Landlock"),
    (-errno.EOPNOTSUPP, "Landlock is not enabled in this kernel"),
    (-errno.EINVAL, "Landlock cannot be used here (Invalid argument)"),
])
def test_a_kernel_without_landlock_handles_nothing_and_says_why(answer, words):
    assert landlock.handled_access(answer) == 0
    assert landlock.unavailable(answer).startswith(words)
    assert landlock.unavailable(1) is None


def test_the_system_call_interface_matches_the_specification():
    assert (lib.__NR_landlock_create_ruleset, lib.__NR_landlock_add_rule) == (444, 445)
    assert lib.LANDLOCK_CREATE_RULESET_VERSION == 1 and lib.LANDLOCK_RULE_PATH_BENEATH == 1
    # struct landlock_path_beneath_attr is packed: a u64 and an s32, 12 bytes.
    assert ffi.sizeof("struct landlock_path_beneath_attr") == 12
    assert ffi.offsetof("struct landlock_path_beneath_attr", "parent_fd") == 8
    assert ffi.offsetof("struct landlock_ruleset_attr", "handled_access_fs") == 0


needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1,
                                    reason="the kernel offers no Landlock")

CONFINE = textwrap.dedent("""
    import json, os, signal, sys, threading
    from pyvisor.sandbox import landlock
    from sandbox_calls import attempt

    inside, outside, mode = sys.argv[1:]

    def create(path, **kw):
        return attempt(lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600, **kw)))

    report, go, started = {}, threading.Event(), threading.Event()
    def early():
        if mode == "deaf":
            signal.pthread_sigmask(signal.SIG_BLOCK, {landlock.SIGNAL})
        started.set()
        go.wait()
        report["early_outside"] = create(outside + ".early")
        report["early_inside"] = create(os.path.join(inside, "early"))
    thread = threading.Thread(target=early)
    thread.start()
    started.wait()
    fd = os.open(inside, os.O_PATH | os.O_DIRECTORY)
    landlock.THREAD_WAIT = 0.3
    report["install"] = landlock.install(fd)
    report["again"] = landlock.install(fd)
    go.set()
    thread.join()
    report["main_absolute_via_fd"] = create(outside, dir_fd=fd)
    report["main_inside"] = create("main", dir_fd=fd)
    report["rename_inside"] = attempt(lambda: os.rename("main", "renamed", src_dir_fd=fd,
                                                        dst_dir_fd=fd))
    report["rename_out"] = attempt(lambda: os.rename("renamed", outside, src_dir_fd=fd,
                                                     dst_dir_fd=fd))
    report["mkdir_inside"] = attempt(lambda: os.mkdir("d", dir_fd=fd))
    report["symlink_inside"] = attempt(lambda: os.symlink("/etc", "l", dir_fd=fd))
    report["unlink_inside"] = attempt(lambda: os.unlink("renamed", dir_fd=fd))
    report["read_elsewhere"] = attempt(lambda: open(sys.executable, "rb").close())
    print(json.dumps(report))
""")


def confine(tmp_path, mode: str) -> dict:
    inside = tmp_path / "save"
    inside.mkdir()
    result = subprocess.run([sys.executable, "-c", CONFINE, str(inside),
                             str(tmp_path / "outside"), mode],
                            capture_output=True, text=True, timeout=60, env=child_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_landlock
def test_every_running_thread_writes_only_beneath_the_directory(tmp_path):
    report = confine(tmp_path, "listening")
    assert not list(tmp_path.glob("outside*"))
    assert report == {
        "install": None, "again": "an earlier machine's Landlock rules are in place in "
                                  "this process",
        "early_outside": "EACCES", "early_inside": "allowed",
        "main_absolute_via_fd": "EACCES", "main_inside": "allowed",
        "rename_inside": "allowed", "rename_out": "EACCES", "mkdir_inside": "EACCES",
        "symlink_inside": "EACCES", "unlink_inside": "allowed", "read_elsewhere": "allowed"}


@needs_landlock
def test_a_thread_that_blocks_the_signal_makes_the_install_refuse(tmp_path):
    report = confine(tmp_path, "deaf")
    assert report["install"].startswith("thread ") and "did not answer signal" in report["install"]
    assert report["early_outside"] == "allowed"    # why the caller must then forbid writes
