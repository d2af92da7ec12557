import pytest

from pyvisor.errors import ConfigError
from pyvisor.machine.config import MAX_CPUS, MachineConfig


def test_build_parses_sizes_and_keeps_values():
    cfg = MachineConfig.build("k.elf", mem="64M", cpus=2, cmdline="a=b", console="stdio")
    assert (cfg.mem, cfg.cpus, cfg.cmdline, cfg.console) == (64 << 20, 2, "a=b", "stdio")
    assert MachineConfig.build("k.elf", mem=1 << 30).mem == 1 << 30


@pytest.mark.parametrize("cpus", [0, -1, MAX_CPUS + 1, True, "2"])
def test_bad_cpu_counts(cpus):
    with pytest.raises(ConfigError, match="CPU count"):
        MachineConfig.build("k.elf", mem="16M", cpus=cpus)


def test_zero_memory():
    with pytest.raises(ConfigError, match="greater than zero"):
        MachineConfig.build("k.elf", mem=0)


def test_command_line_limits():
    with pytest.raises(ConfigError, match="too long"):
        MachineConfig.build("k.elf", mem="16M", cmdline="x" * 5000)
    with pytest.raises(ConfigError, match="NUL"):
        MachineConfig.build("k.elf", mem="16M", cmdline="a\0b")


def test_empty_console():
    with pytest.raises(ConfigError, match="console"):
        MachineConfig.build("k.elf", mem="16M", console="")
