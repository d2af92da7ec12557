"""Landlock rules that keep a process's writes beneath one directory: for `pyvisor run`,
the one Ctrl-A s saves in; for `pyvisor serve --files-dir DIR`, DIR.

The seccomp filter lets openat and renameat through when they are relative to the save
directory's fd (seccomp.py), but a filter sees a path's address, never its text, and an
absolute path ignores the directory fd: openat(save_dir_fd, "/home/u/.bashrc", O_WRONLY)
passes it. Landlock judges the path the kernel resolved. With this ruleset, every thread
of the process fails (EACCES; EXDEV for a rename or link across directories) to open a
file for writing, to create, remove or rename a file or directory, to make a device node,
FIFO, socket or symbolic link, and to execute a file; beneath the directory alone it may
create, write and remove regular files (what a snapshot's temporary file and its rename
need, and a drive opened for writing). Files opened before (disks, the console file,
/dev/kvm) are not affected. Reads are not confined: Python imports modules lazily from
anywhere on sys.path, and what a run reads besides is not known in advance.

The rights are Landlock ABI 1's (Linux 5.13), which every later ABI knows. The later ones
are left out: REFER (ABI 2) is denied by every ruleset even unhandled, so cross-directory
renames and links fail anyway; TRUNCATE (ABI 3) is covered by the seccomp filter, which
refuses truncate() and an O_TRUNC open without write access (so `pyvisor serve
--files-dir` with `--seccomp off` lets an open for reading truncate a file elsewhere);
device ioctls (ABI 5), the network (ABI 4) and scopes (ABI 6) are not in the 6.1 headers
this is built against, and the filter already keeps signals inside the process.

landlock_restrict_self confines only the calling thread and the threads it starts later,
and the kernel has no TSYNC for Landlock up to ABI 7 (this module was written against 7).
So every other thread running at install time is sent SIGNAL, whose handler in
native/landlock_threads.c confines it, until a pass over /proc/self/task finds none left
out. io_uring's kernel workers (iou-*) run no user code and only serve the disks' rings,
which are restricted to reads, writes and fsync of their image: they are left as they are.
"""
from __future__ import annotations

import errno
import os
# _signal: the C module; `signal` only adds enums, and enum costs every start 3 ms here
import _signal as signal
import threading
import time

from .._native import ffi, lib
from .syscall import raw_syscall

# The signal that asks a thread to confine itself (run_control.KICK_SIGNAL is SIGRTMIN + 2).
SIGNAL = int(signal.SIGRTMIN) + 3
THREAD_WAIT = 2.0     # seconds a thread gets to answer SIGNAL

# Everything ABI 1 can deny, except reads (see the module docstring).
HANDLED = (lib.LANDLOCK_ACCESS_FS_EXECUTE | lib.LANDLOCK_ACCESS_FS_WRITE_FILE
           | lib.LANDLOCK_ACCESS_FS_REMOVE_DIR | lib.LANDLOCK_ACCESS_FS_REMOVE_FILE
           | lib.LANDLOCK_ACCESS_FS_MAKE_CHAR | lib.LANDLOCK_ACCESS_FS_MAKE_DIR
           | lib.LANDLOCK_ACCESS_FS_MAKE_REG | lib.LANDLOCK_ACCESS_FS_MAKE_SOCK
           | lib.LANDLOCK_ACCESS_FS_MAKE_FIFO | lib.LANDLOCK_ACCESS_FS_MAKE_BLOCK
           | lib.LANDLOCK_ACCESS_FS_MAKE_SYM)
# What a snapshot save needs beneath the directory: a new file, written, renamed over the
# final name (a rename removes the old name and makes the new one), removed on failure.
DIR_ACCESS = (lib.LANDLOCK_ACCESS_FS_WRITE_FILE | lib.LANDLOCK_ACCESS_FS_MAKE_REG
                   | lib.LANDLOCK_ACCESS_FS_REMOVE_FILE)

_result: str | None | bool = False   # False until install() ran: then its answer
_install_lock = threading.Lock()

def abi_version() -> int:
    """The Landlock ABI the running kernel offers, or -errno (ENOSYS: no Landlock in this
    kernel; EOPNOTSUPP: built in but not enabled)."""
    return raw_syscall(lib.__NR_landlock_create_ruleset, ffi.NULL, 0,
                       lib.LANDLOCK_CREATE_RULESET_VERSION)


def handled_access(abi: int) -> int:
    """The rights a ruleset handles on a kernel with that ABI: HANDLED from ABI 1 on."""
    return HANDLED if abi >= 1 else 0


def unavailable(abi: int) -> str | None:
    """Why a kernel that answered abi_version() with abi cannot take the ruleset, or None."""
    if abi >= 1:
        return None
    if abi == -errno.ENOSYS:
        return "this kernel has no Landlock (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)"
    if abi == -errno.EOPNOTSUPP:
        return "Landlock is not enabled in this kernel (it must be in lsm= or CONFIG_LSM)"
    return f"Landlock cannot be used here ({os.strerror(-abi)})"


def build_ruleset(dir_fd: int, abi: int) -> int:
    """A ruleset fd: the rights handled_access(abi) denied, except DIR_ACCESS beneath the
    directory dir_fd (an O_PATH fd does). Raises OSError."""
    attr = ffi.new("struct landlock_ruleset_attr *", {"handled_access_fs": handled_access(abi)})
    fd = raw_syscall(lib.__NR_landlock_create_ruleset, attr,
                     ffi.sizeof("struct landlock_ruleset_attr"), 0)
    if fd < 0:
        raise OSError(-fd, f"landlock_create_ruleset: {os.strerror(-fd)}")
    rule = ffi.new("struct landlock_path_beneath_attr *",
                   {"allowed_access": DIR_ACCESS & handled_access(abi), "parent_fd": dir_fd})
    added = raw_syscall(lib.__NR_landlock_add_rule, fd, lib.LANDLOCK_RULE_PATH_BENEATH,
                        rule, 0)
    if added < 0:
        os.close(fd)
        raise OSError(-added, f"landlock_add_rule: {os.strerror(-added)}")
    return fd


def install(dir_fd: int) -> str | None:
    """Confine every thread of this process to the ruleset (writes only beneath dir_fd);
    None once they all are, else why not, in a few words (the caller then forbids writes
    altogether, or stops). Once per process: a second call says the first one's rules
    stand. Call it once every file written outside the directory is open."""
    global _result
    with _install_lock:
        if _result is not False:
            return "an earlier machine's Landlock rules are in place in this process"
        abi = abi_version()
        _result = unavailable(abi)
        if _result is None:
            try:
                ruleset = build_ruleset(dir_fd, abi)
            except OSError as e:
                _result = f"cannot build the Landlock rules ({e.strerror})"
            else:
                try:
                    _result = _confine_all_threads(ruleset)
                finally:
                    os.close(ruleset)
        return _result


def _confine_all_threads(ruleset_fd: int) -> str | None:
    """Each other thread confines itself on SIGNAL, then this one; passes over
    /proc/self/task until no thread is left out (one may start another meanwhile)."""
    failed = lib.pv_landlock_begin(ruleset_fd, SIGNAL)
    if failed:
        return f"cannot take signal {SIGNAL} for Landlock ({os.strerror(-failed)})"
    done = {threading.get_native_id()}
    while pending := [tid for tid in _user_threads() if tid not in done]:
        for tid in pending:
            failed = lib.pv_landlock_signal(tid)
            if failed and failed != -errno.ESRCH:    # ESRCH: it has ended
                return f"cannot signal thread {tid} ({os.strerror(-failed)})"
        deadline = time.monotonic() + THREAD_WAIT
        for tid in pending:
            while (answer := lib.pv_landlock_result(tid)) == 0 and \
                    os.path.exists(f"/proc/self/task/{tid}"):
                if time.monotonic() > deadline:
                    return f"thread {tid} did not answer signal {SIGNAL} (is it blocked?)"
                time.sleep(0.001)
            if answer < 0:
                return f"thread {tid} could not take the Landlock rules ({os.strerror(-answer)})"
            done.add(tid)
    failed = lib.pv_landlock_self()
    if failed:
        return f"cannot take the Landlock rules ({os.strerror(-failed)})"
    return None


def _user_threads() -> list[int]:
    """This process's threads, without io_uring's kernel workers."""
    threads = []
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/comm", "rb") as f:
                if f.read().startswith(b"iou-"):
                    continue
        except FileNotFoundError:    # it has ended
            continue
        threads.append(int(name))
    return threads
