"""Test harness for the nested test host (see tests/nested/README.md)."""
from .debian import PrepareError, ToolsUnavailable, cache_dir
from .host import NestedHost, NestedHostError, NestedResult, NestedRun
from .linux_guest import LinuxGuest, build_initramfs, linux_guest

__all__ = ["NestedHost", "NestedHostError", "NestedResult", "NestedRun", "PrepareError",
           "ToolsUnavailable", "cache_dir", "LinuxGuest", "build_initramfs", "linux_guest"]
