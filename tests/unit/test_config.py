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


@pytest.mark.parametrize("value, expected", [
    (None, None), (5, 5.0), (0.25, 0.25), (float("inf"), None), (1e10, None),
])
def test_parse_timeout(value, expected):
    from pyvisor.machine.config import parse_timeout

    assert parse_timeout(value) == expected


@pytest.mark.parametrize("value", [-1, 0, float("nan"), float("-inf"), "5", True])
def test_parse_timeout_refuses(value):
    from pyvisor.machine.config import parse_timeout

    with pytest.raises(ConfigError, match="invalid timeout"):
        parse_timeout(value)


def test_text_that_is_not_utf8():
    """What Python makes of the byte 0xff in argv (surrogateescape) is refused by name."""
    arg = b"ro,serial=\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(ConfigError, match=r"invalid --disk options: byte 0xff at position 10"):
        MachineConfig.build("k.elf", mem="16M", disks=["d.img," + arg])
    with pytest.raises(ConfigError, match="invalid command line: byte 0xfe at position 1"):
        MachineConfig.build("k.elf", mem="16M", cmdline="a\udcfe")
    with pytest.raises(ConfigError, match="invalid --net"):
        MachineConfig.build("k.elf", mem="16M", nets=["tap=\udcff"])


def test_disk_path_may_be_any_bytes():
    path = b"/images/\xff.img".decode("utf-8", "surrogateescape")
    assert MachineConfig.build("k.elf", mem="16M", disks=[path]).disks[0].path == path


def test_pci_slots_are_counted_before_anything_opens():
    from pyvisor.machine.config import MAX_PCI_DEVICES

    assert MAX_PCI_DEVICES == 31   # 32 slots on bus 0 (PCI spec), 00:00.0 is the host bridge
    MachineConfig.build("k.elf", mem="16M", disks=["d.img"] * 30, rng=True)
    with pytest.raises(ConfigError, match="too many virtio devices: 32"):
        MachineConfig.build("k.elf", mem="16M", disks=["d.img"] * 30, rng=True,
                            console="virtio")


def test_console_file_kinds(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo")
    for path, words in ((tmp_path / "fifo", "is a FIFO"), (tmp_path, "is a directory")):
        with pytest.raises(ConfigError, match=words):
            MachineConfig.build("k.elf", mem="16M", console=str(path))
    for ok in ("/dev/null", str(tmp_path / "new.log")):
        assert MachineConfig.build("k.elf", mem="16M", console=ok).console == ok


def test_memory_beyond_64_bits():
    with pytest.raises(ConfigError, match="larger than 16 EiB"):
        MachineConfig.build("k.elf", mem=(1 << 64) + 1)


def test_huge_cpu_count_stays_a_short_line():
    with pytest.raises(ConfigError) as exc:
        MachineConfig.build("k.elf", mem="16M", cpus=10 ** 400)
    assert str(exc.value) == f"invalid CPU count (a huge number): expected 1 to {MAX_CPUS}"
