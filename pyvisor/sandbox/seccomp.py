"""A seccomp filter for the whole process, installed once the machine is built.

From then on pyvisor only runs the guest: it reads and writes the fds it already holds,
waits on them, maps memory, makes threads and signals itself. A guest that found a bug in
a device model could otherwise turn pyvisor into a shell; with the filter these fail with
EPERM instead:

- running another program or process: execve, execveat, fork, vfork, and clone without
  CLONE_THREAD (clone3, whose flags sit in memory a filter cannot read, answers ENOSYS,
  and glibc then falls back to clone);
- reaching into other processes: ptrace, process_vm_readv/writev, pidfd_getfd, and any
  signal to another process (kill and tgkill only to pyvisor's own pid; tkill, the
  sigqueueinfo calls and pidfds not at all);
- changing the system: mount and the new mount API, umount2, pivot_root, chroot, module
  loading, kexec, bpf, perf_event_open, the key rings, namespaces, swap, reboot, iopl,
  ioperm, userfaultfd, open_by_handle_at; making or changing an io_uring
  (io_uring_setup, io_uring_register), which would issue all of the above without
  passing the filter. io_uring_enter stays allowed: the only rings are the disks', made
  before the filter and restricted for good to READV, WRITEV and FSYNC on the image
  (native/uring.c);
- touching files: opening for writing (open and openat with O_WRONLY, O_RDWR, O_CREAT or
  O_TRUNC; creat; openat2, whose flags a filter cannot read), truncate, mknod, unlink,
  rename, mkdir, rmdir, link, symlink, chmod, chown, extended attributes and timestamps
  by path (the last two are what Landlock cannot restrict).

With ``save_dir_fd`` (Ctrl-A s), openat, renameat and unlinkat relative to that
directory stay allowed (an open without write access still may not truncate). A filter
cannot confine them to it: an absolute path ignores the directory fd, and a filter sees
only the path's address, never its text. So pass ``save_dir_fd`` only once Landlock
(landlock.py) holds every thread's writes beneath that directory; where Landlock is not
available, Machine.start passes none and Ctrl-A s says it cannot save.

In API mode (``file_writes=True``) opening for writing (but not O_TRUNC without write
access), link, rename and unlink are allowed: Firecracker's API names any path for a snapshot (PUT /snapshot/create) or a
drive's new backing file (PATCH /drives), to be opened, linked and renamed after the
machine is built, and no seccomp filter can tell one path from another. Everything else above stays forbidden. Confining
the files too needs the paths checked where the guest cannot reach: a second process that
serves the API and opens the files, handing the fds to the filtered VMM over a Unix socket
(Firecracker's jailer gets the same effect with a chroot), or Landlock rules for a
directory fixed at start-up, as landlock.py makes for Ctrl-A s; API mode has neither yet.

Everything else is allowed, so threads started afterwards (vCPUs, the I/O loop, the
console) work as before. A call from another ABI (i386 int 0x80, x32) always fails: the
numbers differ there. The filter is BPF built here from the header constants in
pyvisor._native; no library is needed beyond the kernel's seccomp (Linux 3.17+ for
TSYNC).
"""
from __future__ import annotations

import errno
import os
import struct
import threading

from .._native import ffi, lib
from ..errors import PyvisorError
from .syscall import raw_syscall

DENIED = """
execve execveat fork vfork ptrace process_vm_readv process_vm_writev pidfd_getfd
mount umount2 pivot_root chroot move_mount fsopen fsconfig fsmount fspick open_tree
mount_setattr init_module finit_module delete_module kexec_load kexec_file_load bpf
perf_event_open keyctl add_key request_key tkill rt_sigqueueinfo rt_tgsigqueueinfo
pidfd_open pidfd_send_signal unshare setns swapon swapoff reboot iopl ioperm
userfaultfd open_by_handle_at name_to_handle_at io_uring_setup
io_uring_register creat openat2 truncate mknod mknodat unlink unlinkat rename renameat
renameat2 rmdir mkdir mkdirat link linkat symlink symlinkat chmod fchmodat chown lchown
fchownat setxattr lsetxattr removexattr lremovexattr utime utimes utimensat futimesat
""".split()
# What PUT /snapshot/create and the API socket's removal need, allowed with file_writes.
FILE_NAMING = ("link", "linkat", "rename", "renameat", "renameat2", "unlink", "unlinkat")
# open(path, flags) and openat(dirfd, path, flags): the argument that holds the flags.
OPEN_FLAGS_ARG = {"open": 1, "openat": 2}
# kill(pid, sig) and tgkill(tgid, tid, sig): the process the signal goes to, in argument 0.
SIGNAL_CALLS = ("kill", "tgkill")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC

_installed = False
_install_lock = threading.Lock()   # two machines starting at once install it once


def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` in struct seccomp_data."""
    return ffi.offsetof("struct seccomp_data", "args") + 8 * index


def build_program(pid: int, save_dir_fd: int | None = None, file_writes: bool = False) -> bytes:
    """The filter for process ``pid``, as an array of struct sock_filter (8 bytes each).
    Each test on the syscall number is followed by a body that always returns, so the
    accumulator holds the number again wherever a test is reached. With ``save_dir_fd``
    (a directory opened before the filter, whose writes Landlock confines), openat,
    renameat and unlinkat relative to that directory stay allowed: that is where a
    snapshot saved from the console (Ctrl-A s) goes. With ``file_writes`` (API mode)
    opening for writing and FILE_NAMING are allowed."""
    ld_abs = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS
    jeq, jge, jset = (lib.BPF_JMP | op | lib.BPF_K for op in (lib.BPF_JEQ, lib.BPF_JGE,
                                                              lib.BPF_JSET))
    ret = lib.BPF_RET | lib.BPF_K
    allow = _insn(ret, lib.SECCOMP_RET_ALLOW)
    eperm = _insn(ret, lib.SECCOMP_RET_ERRNO | (errno.EPERM & lib.SECCOMP_RET_DATA))
    enosys = _insn(ret, lib.SECCOMP_RET_ERRNO | (errno.ENOSYS & lib.SECCOMP_RET_DATA))
    nr = ffi.offsetof("struct seccomp_data", "nr")

    def verdict(arg: int, jump: int, k: int, when_true: bytes, when_false: bytes) -> bytes:
        """Load the low half of ``arg`` (the kernel reads ints and flags from just that
        half) and go on to one of two bodies, each of which returns, on ``jump`` (jset,
        jeq) against ``k``."""
        return (_insn(ld_abs, _arg_low(arg)) + _insn(jump, k, 0, len(when_true) // 8)
                + when_true + when_false)

    def on(syscall: str, body: bytes) -> bytes:
        """If the call is ``syscall``, run ``body`` (which returns); else skip past it."""
        return _insn(jeq, getattr(lib, f"__NR_{syscall}"), 0, len(body) // 8) + body

    def truncate_check(arg: int) -> bytes:
        """O_TRUNC only with write access: Landlock, without its ABI 3 TRUNCATE right,
        would let an open for reading truncate a file outside its directory."""
        writes = verdict(arg, jset, os.O_WRONLY | os.O_RDWR, allow, eperm)
        return verdict(arg, jset, os.O_TRUNC, writes, allow)

    program = [
        _insn(ld_abs, ffi.offsetof("struct seccomp_data", "arch")),
        _insn(jeq, lib.AUDIT_ARCH_X86_64, 1, 0), eperm,
        _insn(ld_abs, nr),
        _insn(jge, lib.__X32_SYSCALL_BIT, 0, 1), eperm,
        on("clone", verdict(0, jset, lib.CLONE_THREAD, allow, eperm)),
        on("clone3", enosys),
    ]
    if save_dir_fd is not None and not file_writes:
        # openat(save_dir_fd, ...), renameat(save_dir_fd, old, save_dir_fd, new) and
        # unlinkat(save_dir_fd, ...).
        flags = OPEN_FLAGS_ARG["openat"]
        flags_check = verdict(flags, jset, WRITE_FLAGS, eperm, allow)
        program.append(on("openat", verdict(0, jeq, save_dir_fd, truncate_check(flags),
                                            flags_check)))
        program.append(on("unlinkat", verdict(0, jeq, save_dir_fd, allow, eperm)))
        same_dir = verdict(2, jeq, save_dir_fd, allow, eperm)
        program += [on(name, verdict(0, jeq, save_dir_fd, same_dir, eperm))
                    for name in ("renameat", "renameat2")]
    program += [on(syscall, truncate_check(arg) if file_writes
                   else verdict(arg, jset, WRITE_FLAGS, eperm, allow))
                for syscall, arg in OPEN_FLAGS_ARG.items()]
    program += [on(syscall, verdict(0, jeq, pid, allow, eperm)) for syscall in SIGNAL_CALLS]
    program += [on(name, eperm) for name in DENIED
                if not (file_writes and name in FILE_NAMING)]
    program.append(allow)
    return b"".join(program)


def install(save_dir_fd: int | None = None, file_writes: bool = False) -> bool:
    """Install the filter on every thread of this process (SECCOMP_FILTER_FLAG_TSYNC);
    False if this process already has it. It cannot be taken off again.

    Call it once the machine holds every fd it will use (guest memory mapped, /dev/kvm,
    disks, taps, the console file open) and before the vCPUs run. Sets no_new_privs,
    which seccomp needs without CAP_SYS_ADMIN."""
    global _installed
    with _install_lock:
        if _installed:
            return False
        _install(build_program(os.getpid(), save_dir_fd, file_writes))
        _installed = True
        return True


def _install(code: bytes) -> None:
    """no_new_privs, then the program for all threads; a PyvisorError line if either fails."""
    count = len(code) // 8
    filters = ffi.new("struct sock_filter[]", count)
    ffi.memmove(filters, code, len(code))
    prog = ffi.new("struct sock_fprog *", {"len": count, "filter": filters})
    done = raw_syscall(lib.__NR_prctl, lib.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if done < 0:
        raise PyvisorError(f"cannot set no_new_privs for the seccomp filter: "
                           f"{os.strerror(-done)}")
    result = raw_syscall(lib.__NR_seccomp, lib.SECCOMP_SET_MODE_FILTER,
                         lib.SECCOMP_FILTER_FLAG_TSYNC, prog)
    if result != 0:
        why = (f"thread {result} could not take it" if result > 0
               else os.strerror(-result))
        raise PyvisorError(f"cannot install the seccomp filter: {why} "
                           f"(pyvisor run --seccomp off runs without it)")
