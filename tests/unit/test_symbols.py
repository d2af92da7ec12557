"""pyvisor.loader.symbols against binutils' nm, an independent reader of the same table."""
import subprocess

import pytest

from helpers import guest
from pyvisor.errors import KernelError
from pyvisor.loader.symbols import symbols


def test_functions_and_objects_match_nm():
    path = guest("script_target")
    ours = symbols(path)
    nm = subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True,
                        check=True).stdout
    theirs = {name: int(addr, 16) for addr, kind, name in
              (line.split() for line in nm.splitlines()) if kind in "TtBbDdRr"}
    for name in ("kmain", "target_function", "counter", "watched", "printf"):
        assert ours[name] == theirs[name]


def test_not_an_elf_and_a_truncated_one(tmp_path):
    bad = tmp_path / "k"
    bad.write_bytes(b"MZ" + bytes(100))
    with pytest.raises(KernelError, match="not an ELF64"):
        symbols(bad)
    data = open(guest("script_target"), "rb").read()
    bad.write_bytes(data[:0x40])
    with pytest.raises(KernelError, match="corrupt"):
        symbols(bad)
