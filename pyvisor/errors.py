"""Exception types. Anything derived from PyvisorError is a user-facing error: the CLI
prints its message as one line and exits non-zero, never a traceback."""


class PyvisorError(Exception):
    """An error the user can act on; str() is the whole message."""


class ConfigError(PyvisorError):
    """A bad option value: a size, a CPU count, a console target."""


class KernelError(PyvisorError):
    """A kernel image that is missing, unreadable, malformed or does not fit in guest RAM."""


class GuestMemoryError(PyvisorError):
    """An access to guest-physical memory outside guest RAM."""


class KvmError(PyvisorError):
    """A KVM ioctl failed; names the ioctl and the errno text."""

    def __init__(self, what: str, errno_: int):
        import os

        self.what = what
        self.errno = errno_
        super().__init__(f"{what} failed: {os.strerror(errno_)} (errno {errno_})")


class KvmUnavailableError(PyvisorError):
    """/dev/kvm is missing, not accessible, or too old to use."""
