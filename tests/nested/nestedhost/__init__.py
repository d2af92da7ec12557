"""Test harness for the nested test host (see tests/nested/README.md)."""
from .debian import PrepareError, ToolsUnavailable, cache_dir
from .host import (NestedHost, NestedHostError, NestedHostWedged, NestedResult, NestedRun,
                   again_if_wedged)
from .linux_guest import LinuxGuest, build_initramfs, linux_guest

__all__ = ["NestedHost", "NestedHostError", "NestedHostWedged", "NestedResult", "NestedRun",
           "PrepareError", "ToolsUnavailable", "again_if_wedged", "cache_dir", "LinuxGuest",
           "build_initramfs", "linux_guest"]
