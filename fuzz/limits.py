"""What one fuzz input may cost the host, and the checks that enforce it.

The guest (or a kernel file) is hostile: nothing it controls may make the host allocate
memory or burn time in proportion to lengths it declares. Three limits, cheap enough to
check around every input:

- an address-space limit (RLIMIT_AS) for the whole worker, set once guest RAM is mapped,
  so a huge allocation fails at once with MemoryError instead of swapping the machine;
- peak RSS: guest RAM is touched in full before fuzzing starts, so any later growth of the
  process's high-water mark is host memory, and more than INPUT_MEMORY for one input fails;
- CPU time of the fuzzing thread (not wall time: the machine is shared) per input.

A MemoryError the code under test catches and turns into something else (a device marked
DEVICE_NEEDS_RESET) would hide an amplification from the first limit; targets report such
contained exceptions themselves (see `contained` in devices.py).
"""
from __future__ import annotations

import resource
import time
import traceback
from pathlib import Path

MIB = 1 << 20
ADDRESS_SPACE_HEADROOM = 1024 * MIB   # above the worker's size once set up
INPUT_MEMORY = 32 * MIB               # peak RSS growth one input may cause
INPUT_CPU_SECONDS = 2.0


class BudgetExceeded(AssertionError):
    """One input cost the host more than a bounded amount: the fuzzer's failure."""


def where(exc: BaseException) -> str:
    """The innermost frames an exception came through, for a one-line report (the worker
    prints only the last exception's traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def limit_address_space(headroom: int = ADDRESS_SPACE_HEADROOM) -> int:
    """Cap the process's address space at its current size plus `headroom`; return it."""
    limit = _vm_size() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Budget:
    """Measures one input at a time: `with budget: run(data)` raises BudgetExceeded after
    an input that pushed peak RSS up by more than `memory` bytes or used more than
    `cpu_seconds` of this thread's CPU."""

    def __init__(self, memory: int = INPUT_MEMORY, cpu_seconds: float = INPUT_CPU_SECONDS):
        self.memory, self.cpu_seconds = memory, cpu_seconds

    def __enter__(self) -> "Budget":
        self._rss = _peak_rss()
        self._cpu = time.thread_time()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        grew = _peak_rss() - self._rss
        cpu = time.thread_time() - self._cpu
        if exc_type is not None and not issubclass(exc_type, MemoryError):
            return   # the input's own failure says more than its cost
        out_of_memory = exc_type is not None and issubclass(exc_type, MemoryError)
        if out_of_memory or grew > self.memory:
            raise BudgetExceeded(f"one input made the host allocate {grew / MIB:.1f} MiB "
                                 f"(peak RSS; budget {self.memory / MIB:.0f} MiB)"
                                 + (f": MemoryError at the address-space limit ({where(exc)})"
                                    if out_of_memory else ""))
        if cpu > self.cpu_seconds:
            raise BudgetExceeded(f"one input took {cpu:.2f} s of CPU "
                                 f"(budget {self.cpu_seconds:.1f} s)")
