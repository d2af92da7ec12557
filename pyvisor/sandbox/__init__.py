"""Least privilege for a running machine: what the process may still ask of the host kernel."""
