"""Least privilege for a running machine: what the process may still ask of the host kernel
(seccomp.py) and which files it may still write (landlock.py)."""
