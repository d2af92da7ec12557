"""MachineConfig: everything a machine is built from, validated once, shared by the CLI and
the library so both refuse the same bad input with the same one-line message."""
from __future__ import annotations

import math
import os
import stat
import threading
from collections.abc import Sequence

from ..devices.pci.root import SLOT_COUNT
from ..errors import ConfigError
from ..loader.kernel import BOOT_PROTOCOLS
from ..units import MAX_SIZE, parse_size
from ..value import Value
from .console_pipe import DEFAULT_CONSOLE_LIMIT
from ..x86.boot_layout import CMDLINE_MAX

TYPE_CHECKING = False
if TYPE_CHECKING:   # their device modules are imported only for a machine that has them
    from ..devices.virtio.blk import DiskSpec
    from ..devices.virtio.net import NetSpec

DEFAULT_MEM = "512M"
VIRTIO_TRANSPORTS = ("pci", "mmio")
# xAPIC IDs are 8 bits and 0xFF is the broadcast ID.
MAX_CPUS = 254
# Slot 0 is the host bridge; every virtio-pci device takes one of the others.
MAX_PCI_DEVICES = SLOT_COUNT - 1


def parse_console(value: str) -> str:
    """'stdio', 'virtio' (the terminal on hvc0), 'none' or a file path (output only).

    A file that exists must be one that opening for output cannot block on or misuse:
    a regular file or a character device (/dev/null, a tty), never a FIFO (open waits for
    a reader), a socket or a directory."""
    if not value:
        raise ConfigError("invalid console '': expected stdio, virtio, none or a file path")
    if value in ("stdio", "virtio", "none"):
        return value
    try:
        mode = os.stat(value).st_mode
    except FileNotFoundError:
        return value
    except OSError as e:
        raise ConfigError(f"console file {value!r}: {e.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ConfigError(f"console file {value!r} is {kind}: expected a regular file or a "
                          f"character device")
    return value


def parse_timeout(seconds: float | None) -> float | None:
    """A run time limit in seconds: None (no limit) stays None, and so does one beyond what
    the host can wait for (inf, or more than threading.TIMEOUT_MAX, about 292 years);
    nan, zero and negative values are refused instead of meaning 'stop at once'."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(f"invalid timeout {seconds!r}: expected a number of seconds")
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigError(f"invalid timeout {seconds!r}: expected a number of seconds "
                          f"greater than zero")
    return None if seconds > threading.TIMEOUT_MAX else float(seconds)


def check_utf8(text: str, what: str) -> str:
    """Refuse text that cannot be encoded as UTF-8: a command-line argument with bytes that
    are not UTF-8 arrives as lone surrogates, which would fail later, mid-build."""
    try:
        text.encode()
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        bad = (f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF
               else f"character U+{code:04X}")
        raise ConfigError(f"invalid {what}: {bad} at position {e.start} is not UTF-8") from None
    return text


def virtio_device_count(console: str, disks: int, nets: int, rng: bool) -> int:
    """How many virtio devices (and so PCI slots or MMIO windows) a machine needs."""
    return (console == "virtio") + disks + nets + bool(rng)


def _disk_specs(disks: Sequence[str | DiskSpec]) -> tuple[DiskSpec, ...]:
    """--disk PATH[,options]: the path may be any bytes, the options must be UTF-8."""
    if not disks:
        return ()
    from ..devices.virtio.blk import DiskSpec

    specs = []
    for disk in disks:
        if not isinstance(disk, DiskSpec):
            check_utf8(disk.partition(",")[2], "--disk options")
            disk = DiskSpec.parse(disk)
        specs.append(disk)
    return tuple(specs)


def _net_specs(nets: Sequence[str | NetSpec]) -> tuple[NetSpec, ...]:
    """--net tap=NAME[,mac=MAC]; the index numbers the default MAC address."""
    if not nets:
        return ()
    from ..devices.virtio.net import NetSpec

    return tuple(n if isinstance(n, NetSpec) else NetSpec.parse(check_utf8(n, "--net"), i)
                 for i, n in enumerate(nets))


def _positive_int(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"invalid {name} {value!r}: expected a positive whole number")
    return value


class MachineConfig(Value):
    """A validated machine description. Build it with `MachineConfig.build(...)` from user
    input (sizes as strings like '512M'); the fields hold parsed values. console_limit:
    the bytes of console output the library keeps; seccomp: install the process-wide
    seccomp filter once the machine is built; testdev: QEMU's pc-testdev
    (devices/legacy/pc_testdev.py); hpet: the HPET and its ACPI table (devices/legacy/hpet.py)."""

    __slots__ = ("kernel", "mem", "cpus", "cmdline", "console", "capture_output",
                 "console_limit", "kvm_path", "initrd", "boot_protocol", "disks", "rng", "nets",
                 "virtio_transport", "seccomp", "testdev", "hpet")

    def __init__(self, kernel: str, mem: int, cpus: int = 1, cmdline: str = "",
                 console: str = "none", capture_output: bool = True,
                 console_limit: int = DEFAULT_CONSOLE_LIMIT, kvm_path: str = "/dev/kvm",
                 initrd: str | None = None, boot_protocol: str = "auto",
                 disks: tuple[DiskSpec, ...] = (), rng: bool = False,
                 nets: tuple[NetSpec, ...] = (), virtio_transport: str = "pci",
                 seccomp: bool = False, testdev: bool = False, hpet: bool = False) -> None:
        self.kernel, self.mem, self.cpus, self.cmdline = kernel, mem, cpus, cmdline
        self.console, self.capture_output, self.console_limit = console, capture_output, console_limit
        self.kvm_path, self.initrd, self.boot_protocol = kvm_path, initrd, boot_protocol
        self.disks, self.rng, self.nets = disks, rng, nets
        self.virtio_transport, self.seccomp = virtio_transport, seccomp
        self.testdev, self.hpet = testdev, hpet

    @classmethod
    def build(cls, kernel: str, mem: str | int = DEFAULT_MEM, cpus: int = 1, cmdline: str = "",
              console: str = "none", capture_output: bool = True,
              console_limit: int = DEFAULT_CONSOLE_LIMIT, kvm_path: str = "/dev/kvm", initrd: str | None = None,
              boot_protocol: str = "auto", disks: Sequence[str | DiskSpec] = (),
              rng: bool = False, nets: Sequence[str | NetSpec] = (),
              virtio_transport: str = "pci", seccomp: bool = False,
              testdev: bool = False, hpet: bool = False) -> "MachineConfig":
        mem_bytes = parse_size(mem) if isinstance(mem, str) else int(mem)
        if mem_bytes <= 0:
            raise ConfigError(f"invalid memory size {mem!r}: must be greater than zero")
        if mem_bytes > MAX_SIZE:
            raise ConfigError(f"invalid memory size {mem_bytes:#x}: larger than 16 EiB")
        if not isinstance(cpus, int) or isinstance(cpus, bool) or not 1 <= cpus <= MAX_CPUS:
            shown = repr(cpus) if len(repr(cpus)) <= 20 else "(a huge number)"
            raise ConfigError(f"invalid CPU count {shown}: expected 1 to {MAX_CPUS}")
        encoded = check_utf8(cmdline, "command line").encode()
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
        count = virtio_device_count(console, len(disks), len(nets), rng)
        if virtio_transport == "pci" and count > MAX_PCI_DEVICES:
            raise ConfigError(f"too many virtio devices: {count}, but the PCI bus has slots "
                              f"for {MAX_PCI_DEVICES}")
        return cls(kernel=str(kernel), mem=mem_bytes, cpus=cpus, cmdline=cmdline,
                   console=parse_console(console), capture_output=capture_output,
                   console_limit=_positive_int(console_limit, "console_limit"),
                   kvm_path=kvm_path, initrd=None if initrd is None else str(initrd),
                   boot_protocol=boot_protocol,
                   disks=_disk_specs(disks), rng=bool(rng), nets=_net_specs(nets),
                   virtio_transport=virtio_transport, seccomp=bool(seccomp),
                   testdev=bool(testdev), hpet=bool(hpet))
