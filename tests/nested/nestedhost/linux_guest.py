"""Stock Linux guests (the L2 that pyvisor boots inside the nested host).

Debian's cloud kernel: 8250 serial built in, virtio as modules, LZ4 bzImage with a PVH
note. We keep its bzImage, its uncompressed vmlinux ELF (what pyvisor's ELF loader takes)
and its modules, and build busybox initramfs images that load chosen modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import debian
from .debian import KernelPackage
from .initramfs import INIT_PREAMBLE, busybox_base
from .kernel_image import extract_vmlinux

FLAVOUR = "cloud-amd64"


@dataclass(frozen=True)
class LinuxGuest:
    """A prepared guest kernel; all paths are in the cache, visible inside the nested host."""
    bzimage: Path
    vmlinux: Path
    modules_dir: Path    # .../lib/modules/<version>
    version: str         # e.g. 6.1.0-56-cloud-amd64

    @property
    def package(self) -> KernelPackage:
        return KernelPackage(self.modules_dir.parents[2], self.version)

    def initramfs(self, path: Path, init_script: str, modules: list[str] = (),
                  extra_files: dict[str, bytes | str] | None = None) -> Path:
        """See build_initramfs."""
        return build_initramfs(path, init_script, list(modules), extra_files, guest=self)


def linux_guest(cache: Path | None = None) -> LinuxGuest:
    """Download (once) the newest 6.1 cloud kernel and extract its vmlinux (cached)."""
    debian.ensure_tools()
    kernel = debian.kernel_package(FLAVOUR, cache)
    vmlinux = kernel.root / f"vmlinux-{kernel.version}"
    with debian.locked(kernel.root.parent / ".lock-vmlinux"):
        if not vmlinux.exists():
            extract_vmlinux(kernel.vmlinuz, vmlinux)
    return LinuxGuest(kernel.vmlinuz, vmlinux, kernel.modules_dir, kernel.version)


def build_initramfs(path: Path | str, init_script: str, modules: list[str],
                    extra_files: dict[str, bytes | str] | None = None, *,
                    guest: LinuxGuest | None = None, compress: bool = True) -> Path:
    """Write a busybox initramfs for the guest kernel to `path` and return it.

    Its /init mounts /proc, /sys and /dev, insmods `modules` (names as the kernel spells
    them, e.g. "virtio_blk"; dependencies resolved from each module's `depends=`, in
    order), then runs `init_script` (busybox sh, as PID 1). If the script returns, init
    powers off; a script should end the machine itself, e.g. with `reboot -f` (with
    `reboot=k` on the command line Linux then resets through the i8042). `extra_files`
    maps archive paths to contents (scripts and ELF programs are made executable).
    """
    guest = guest or linux_guest()
    init = (INIT_PREAMBLE + "\n# --- the caller's script\n" + init_script
            + "\necho 'init: script ended'\npoweroff -f\n")
    cpio = busybox_base(init, guest.package, modules)
    for name, data in (extra_files or {}).items():
        raw = data.encode() if isinstance(data, str) else data
        cpio.file(name, raw, 0o755 if raw.startswith((b"#!", b"\x7fELF")) else 0o644)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cpio.gzip() if compress else bytes(cpio))
    return path
