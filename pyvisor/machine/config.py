"""MachineConfig: everything a machine is built from, validated once, shared by the CLI and
the library so both refuse the same bad input with the same one-line message."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..devices.virtio.blk import DiskSpec
from ..devices.virtio.net import NetSpec
from ..errors import ConfigError
from ..loader.kernel import BOOT_PROTOCOLS
from ..units import parse_size
from .console_pipe import DEFAULT_CONSOLE_LIMIT
from ..x86.boot_layout import CMDLINE_MAX

DEFAULT_MEM = "512M"
VIRTIO_TRANSPORTS = ("pci", "mmio")
# xAPIC IDs are 8 bits and 0xFF is the broadcast ID.
MAX_CPUS = 254


def parse_console(value: str) -> str:
    """'stdio', 'virtio' (the terminal on hvc0), 'none' or a file path (output only)."""
    if not value:
        raise ConfigError("invalid console '': expected stdio, virtio, none or a file path")
    return value


def _positive_int(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"invalid {name} {value!r}: expected a positive whole number")
    return value


@dataclass(frozen=True)
class MachineConfig:
    """A validated machine description. Build it with `MachineConfig.build(...)` from user
    input (sizes as strings like '512M'); the fields hold parsed values."""
    kernel: str
    mem: int
    cpus: int = 1
    cmdline: str = ""
    console: str = "none"
    capture_output: bool = True
    console_limit: int = DEFAULT_CONSOLE_LIMIT   # bytes of console output the library keeps
    kvm_path: str = "/dev/kvm"
    initrd: str | None = None
    boot_protocol: str = "auto"
    disks: tuple[DiskSpec, ...] = ()
    rng: bool = False
    nets: tuple[NetSpec, ...] = ()
    virtio_transport: str = "pci"

    @classmethod
    def build(cls, kernel: str, mem: str | int = DEFAULT_MEM, cpus: int = 1, cmdline: str = "",
              console: str = "none", capture_output: bool = True,
              console_limit: int = DEFAULT_CONSOLE_LIMIT, kvm_path: str = "/dev/kvm", initrd: str | None = None,
              boot_protocol: str = "auto", disks: Sequence[str | DiskSpec] = (),
              rng: bool = False, nets: Sequence[str | NetSpec] = (),
              virtio_transport: str = "pci") -> "MachineConfig":
        mem_bytes = parse_size(mem) if isinstance(mem, str) else int(mem)
        if mem_bytes <= 0:
            raise ConfigError(f"invalid memory size {mem!r}: must be greater than zero")
        if not isinstance(cpus, int) or isinstance(cpus, bool) or not 1 <= cpus <= MAX_CPUS:
            raise ConfigError(f"invalid CPU count {cpus!r}: expected 1 to {MAX_CPUS}")
        encoded = cmdline.encode()
        if b"\0" in encoded:
            raise ConfigError("invalid command line: it contains a NUL byte")
        if len(encoded) + 1 > CMDLINE_MAX:
            raise ConfigError(f"command line too long: {len(encoded)} bytes, "
                              f"at most {CMDLINE_MAX - 1}")
        if boot_protocol not in BOOT_PROTOCOLS:
            raise ConfigError(f"invalid boot protocol {boot_protocol!r}: expected one of "
                              f"{', '.join(BOOT_PROTOCOLS)}")
        if virtio_transport not in VIRTIO_TRANSPORTS:
            raise ConfigError(f"invalid virtio transport {virtio_transport!r}: expected "
                              f"{' or '.join(VIRTIO_TRANSPORTS)}")
        return cls(kernel=str(kernel), mem=mem_bytes, cpus=cpus, cmdline=cmdline,
                   console=parse_console(console), capture_output=capture_output,
                   console_limit=_positive_int(console_limit, "console_limit"),
                   kvm_path=kvm_path, initrd=None if initrd is None else str(initrd),
                   boot_protocol=boot_protocol,
                   disks=tuple(d if isinstance(d, DiskSpec) else DiskSpec.parse(d) for d in disks),
                   rng=bool(rng),
                   nets=tuple(n if isinstance(n, NetSpec) else NetSpec.parse(n, i)
                              for i, n in enumerate(nets)),
                   virtio_transport=virtio_transport)
