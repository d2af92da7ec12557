"""The one error kind of the snapshot layer (a PyvisorError: one line for the user)."""
from ..errors import PyvisorError


class SnapshotError(PyvisorError):
    """A snapshot cannot be taken, saved, loaded or restored; the message says why."""
