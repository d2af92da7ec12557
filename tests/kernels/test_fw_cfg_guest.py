"""A tiny kernel reads fw_cfg as kernels written for QEMU do: the signature, its CPU count
and RAM size, and the etc/e820 file, compared with what the machine was given."""
import re

import pytest

from helpers import guest, needs_kvm, pyvisor
from pyvisor.memory.layout import MemoryLayout

pytestmark = [needs_kvm, pytest.mark.kvm]


def test_fw_cfg_reports_cpus_and_memory():
    result = pyvisor("run", guest("fw_cfg"), "--mem", "96M", "--cpus", "3",
                     "--console", "stdio")
    out = result.stdout.decode().replace("\r\n", "\n")
    assert result.returncode == 0, result.stderr.decode() + out
    assert "fw_cfg signature=QEMU id=0x1\n" in out
    assert f"fw_cfg ram_size={96 << 20} nb_cpus=3 max_cpus=3\n" in out
    assert f"e820 ram={96 << 20}\n" in out
    e820 = MemoryLayout(96 << 20).e820()
    assert f"file name=etc/e820 select=0x20 size={20 * len(e820)}\n" in out
    shown = re.findall(r"etc/e820 addr=0x([0-9a-f]+) len=0x([0-9a-f]+) type=(\d+)", out)
    assert [(int(a, 16), int(n, 16), int(t)) for a, n, t in shown] == \
        [(e.addr, e.size, e.type) for e in e820]
    assert "past_end=0 missing=0\n" in out
    assert "fw_cfg: done" in out
