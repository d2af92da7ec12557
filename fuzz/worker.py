"""One fuzz target in this process, under atheris (libFuzzer): `python -m fuzz.worker TARGET
[libFuzzer arguments, corpus directories]`. fuzz/run.py starts one per target.

pyvisor is imported with atheris's bytecode instrumentation (coverage and comparison
tracing); the harness itself is not instrumented. The address-space limit is set after the
target mapped its guest RAM; each input then runs inside a limits.Budget.
"""
from __future__ import annotations

import sys

import atheris

from .limits import Budget, limit_address_space


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m fuzz.worker TARGET [libFuzzer arguments...]")
    with atheris.instrument_imports(include=["pyvisor"]):
        from .targets import load
        target = load(argv[1])
        from .devices import quiet_logs
    quiet_logs()
    run, errors = target.make(), target.ERRORS
    limit_address_space()
    budget = Budget()

    def one_input(data: bytes) -> None:
        with budget:
            try:
                run(data)
            except errors:
                pass

    atheris.Setup([argv[0]] + argv[2:], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
