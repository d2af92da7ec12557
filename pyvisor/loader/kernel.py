"""One entry point for every kernel format: detect bzImage or ELF, load it, place the
initrd, and say how the vCPU must enter it.

Formats and boot protocols:

- a bzImage (``boot_flag`` 0xAA55 and "HdrS"): always the 64-bit Linux boot protocol
  ("linux64"), at load address + 0x200, with the kernel's setup header copied into the zero
  page (bzimage.fill_zero_page);
- an ELF (a tiny test kernel or a Linux ``vmlinux``): "linux64" at ``e_entry`` by default
  (the path every tiny kernel uses, and one a Debian vmlinux supports too), or "pvh" at its
  XEN_ELFNOTE_PHYS32_ENTRY when the caller asks with ``boot_protocol="pvh"``.

- a Multiboot 1 or 2 kernel (an ELF32/ELF64 or a flat image with a Multiboot header, and
  no Linux setup header): "multiboot", in 32-bit protected mode, EBX = the boot
  information (multiboot.py); ``initrd`` is then QEMU's module list "mod1 args,mod2".

``boot_protocol="auto"`` is "multiboot" for an image with a Multiboot header and no setup
header, else "linux64"; "linux64", "pvh" and "multiboot" force one and fail (KernelError,
one line) when the image cannot be entered that way.
"""
from __future__ import annotations

import os

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.bzimage import (DEFAULT_INITRD_ADDR_MAX, HEAD_SIZE, LoadedBzImage,
                                    check_cmdline, cmdline_limit, is_bzimage, parse_bzimage,
                                    place_bzimage)
from pyvisor.loader.image_file import ImageSource
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.value import Value
from pyvisor.x86.boot_layout import CMDLINE_MAX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyvisor.loader.multiboot import MultibootKernel

BOOT_PROTOCOLS = ("auto", "linux64", "pvh", "multiboot")


def detect_format(data: bytes) -> str | None:
    """'bzimage', 'elf', or None, from the first bytes of a file."""
    if is_bzimage(data):
        return "bzimage"
    if data[:4] == b"\x7fELF":
        return "elf"
    return None


class BootImage(Value):
    """A kernel in guest memory and how to enter it.

    protocol: "linux64" (64-bit long mode at ``entry``, RSI = zero page), "pvh"
      (32-bit protected mode at ``entry``, EBX = hvm_start_info) or "multiboot" (32-bit
      protected mode, EAX = the magic, EBX = the boot information).
    setup_header: a bzImage's raw setup header for the zero page, else None.
    initrd: (gpa, size) of the placed initrd, or None.
    cmdline_max: the longest command line (without its NUL) this kernel accepts.
    low, high: the guest-physical range the kernel occupies (a bzImage: its init_size).
    bzimage: the LoadedBzImage for bzimage.fill_zero_page, else None.
    multiboot: the MultibootKernel (its modules, where its boot information goes), else None.
    """

    __slots__ = ("format", "protocol", "entry", "setup_header", "initrd", "cmdline_max", "low",
                 "high", "bzimage", "multiboot")

    def __init__(self, format: str, protocol: str, entry: int, setup_header: bytes | None,
                 initrd: tuple[int, int] | None, cmdline_max: int, low: int, high: int,
                 bzimage: LoadedBzImage | None = None,
                 multiboot: MultibootKernel | None = None) -> None:
        self.format, self.protocol, self.entry = format, protocol, entry
        self.setup_header, self.initrd, self.cmdline_max = setup_header, initrd, cmdline_max
        self.low, self.high = low, high
        self.bzimage, self.multiboot = bzimage, multiboot


def _load_bzimage(source: ImageSource, head: bytes, name: str, mem: GuestMemory,
                  cmdline: bytes, boot_protocol: str) -> BootImage:
    """A bzImage, its protected-mode kernel read from the file straight into RAM."""
    if boot_protocol == "multiboot":
        raise KernelError(f"kernel {name!r}: Multiboot needs a Multiboot kernel, not a bzImage")
    if boot_protocol == "pvh":
        raise KernelError(f"kernel {name!r}: PVH boot needs an ELF vmlinux with a Xen PVH "
                          f"note, not a bzImage")
    parsed = parse_bzimage(head, name, source.size)
    limit = cmdline_limit(parsed)
    check_cmdline(cmdline, limit)
    kernel = place_bzimage(parsed, source, name, mem)
    return BootImage(format="bzimage", protocol="linux64", entry=kernel.entry,
                     setup_header=kernel.setup_header, initrd=None, cmdline_max=limit,
                     low=kernel.low, high=kernel.high, bzimage=kernel)


def load_kernel(path: str | os.PathLike, mem: GuestMemory, *, cmdline: bytes = b"",
                initrd: str | os.PathLike | None = None,
                boot_protocol: str = "auto") -> BootImage:
    """Load the kernel at ``path`` (and the initrd, if any) into ``mem``.

    ``cmdline`` (with or without its NUL) is checked against the kernel's limit first
    (ConfigError), so nothing is written for a command line the kernel would truncate.
    """
    name = os.fspath(path)
    if boot_protocol not in BOOT_PROTOCOLS:
        raise ConfigError(f"unknown boot protocol {boot_protocol!r} "
                          f"(expected one of {', '.join(BOOT_PROTOCOLS)})")
    with ImageSource(path, f"kernel {name!r}", mem.layout.ram_size) as source:
        head = source.head(HEAD_SIZE)
        kind = detect_format(head)
        if kind == "bzimage":
            image = _load_bzimage(source, head, name, mem, cmdline, boot_protocol)
            addr_max = image.bzimage.initrd_addr_max
        else:
            data = source.data()
    if kind != "bzimage":
        if boot_protocol in ("auto", "multiboot"):
            # The Multiboot and ELF loaders (five modules) are not imported for a bzImage.
            from pyvisor.loader.multiboot import detect, load_multiboot

            if boot_protocol == "multiboot" or detect(data) is not None:
                mb = load_multiboot(data, name, mem,
                                    None if initrd is None else os.fspath(initrd))
                return BootImage(format="multiboot", protocol="multiboot", entry=mb.entry,
                                 setup_header=None, initrd=None, cmdline_max=CMDLINE_MAX - 1,
                                 low=mb.low, high=mb.high, multiboot=mb)
        if kind is None:
            empty = " (the file is empty)" if not data else ""
            raise KernelError(f"kernel {name!r}: not a bzImage or ELF kernel{empty}")
        from pyvisor.loader.elf import load_elf_data

        limit = CMDLINE_MAX - 1
        check_cmdline(cmdline, limit)
        elf = load_elf_data(data, name, mem)
        if boot_protocol == "pvh":
            if elf.pvh_entry is None:
                raise KernelError(f"kernel {name!r}: PVH boot needs a Xen PVH entry note "
                                  f"(XEN_ELFNOTE_PHYS32_ENTRY), and this ELF has none")
            protocol, entry = "pvh", elf.pvh_entry
        else:
            protocol, entry = "linux64", elf.entry
        # No setup header to ask: the limit every 64-bit Linux has advertised.
        addr_max = DEFAULT_INITRD_ADDR_MAX
        image = BootImage(format="elf", protocol=protocol, entry=entry, setup_header=None,
                          initrd=None, cmdline_max=limit, low=elf.low, high=elf.high)

    if initrd is None:
        return image
    from pyvisor.loader.initrd import place_initrd   # only with --initrd

    placed = place_initrd(mem, initrd, addr_max, image.high)
    return image.replace(initrd=placed)
