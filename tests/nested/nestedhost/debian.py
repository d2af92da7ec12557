"""Debian packages for the nested test host: tools, kernel packages, kernel modules.

Everything lands in a cache directory so that a second run does no network work. Kernel
packages are unpacked whole (`dpkg-deb -x`); the generic kernel ships no `modules.dep`, so
module dependencies are read from each `.ko`'s own `.modinfo` section.
"""
from __future__ import annotations

import fcntl
import lzma
import os
import re
import shutil
import struct
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_CACHE = "/var/tmp/pyvisor-nested"


class PrepareError(RuntimeError):
    """The nested host could not be prepared (a missing tool, package or module)."""


class ToolsUnavailable(PrepareError):
    """A host tool (QEMU, busybox) is missing and could not be installed here."""


def cache_dir() -> Path:
    """The cache root: $PYVISOR_NESTED_CACHE or /var/tmp/pyvisor-nested."""
    path = Path(os.environ.get("PYVISOR_NESTED_CACHE") or DEFAULT_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise cache writers (two pytest processes may prepare at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run(*args: str, cwd: Path | None = None) -> str:
    """Run a tool; its stdout, or PrepareError with its stderr."""
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0:
        raise PrepareError(f"{' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-2000:]}")
    return result.stdout


_apt_updated = False


def _apt_update() -> None:
    global _apt_updated
    if not _apt_updated:
        run("apt-get", "update", "-q")
        _apt_updated = True


# --- host tools -------------------------------------------------------------------------

def _is_static_elf(path: str) -> bool:
    """True for an ELF without PT_INTERP: the initramfs has no libc to offer."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3
               for i in range(phnum))


BUSYBOX = "/bin/busybox"
# command (or check) -> Debian package that provides it
TOOLS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "dpkg-deb": "dpkg",
    "lz4": "lz4",
}


def missing_tools() -> list[str]:
    """Debian packages still needed on this machine."""
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if not _is_static_elf(BUSYBOX):
        missing.append("busybox-static")
    return missing


def ensure_tools() -> None:
    """Install what is missing with apt-get (we are root on CI); ToolsUnavailable if we can't."""
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        raise ToolsUnavailable(f"need Debian packages {' '.join(missing)} (not root: "
                               f"install them with apt-get)")
    try:
        _apt_update()
        run("apt-get", "install", "-y", "-q", *missing)
    except PrepareError as exc:
        raise ToolsUnavailable(str(exc)) from exc
    still = missing_tools()
    if still:
        raise ToolsUnavailable(f"still missing after apt-get install: {' '.join(still)}")


# --- kernel packages --------------------------------------------------------------------

def newest_kernel_package(flavour: str) -> str:
    """Newest `linux-image-6.1.0-NN-<flavour>` apt knows, e.g. flavour 'amd64' or 'cloud-amd64'."""
    pattern = re.compile(rf"^linux-image-6\.1\.0-(\d+)-{re.escape(flavour)}$")

    def search() -> list[tuple[int, str]]:
        out = run("apt-cache", "search", "--names-only", f"^linux-image-6.1.0-.*-{flavour}$")
        names = [line.split(" ", 1)[0] for line in out.splitlines()]
        return sorted((int(m.group(1)), m.group(0)) for n in names if (m := pattern.match(n)))

    found = search()
    if not found:
        _apt_update()
        found = search()
    if not found:
        raise PrepareError(f"apt knows no linux-image-6.1.0-NN-{flavour} package")
    return found[-1][1]


@dataclass(frozen=True)
class KernelPackage:
    """An unpacked Debian kernel package: its bzImage and its module tree."""
    root: Path           # where the .deb was unpacked
    version: str         # e.g. 6.1.0-56-amd64

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.version

    def module_index(self) -> dict[str, Path]:
        """Module name (dashes as underscores, as the kernel spells them) -> .ko file."""
        index: dict[str, Path] = {}
        for path in (self.modules_dir / "kernel").rglob("*.ko*"):
            name = path.name.split(".ko")[0].replace("-", "_")
            index[name] = path
        return index

    def builtin_modules(self) -> set[str]:
        path = self.modules_dir / "modules.builtin"
        if not path.exists():
            return set()
        return {Path(line).name.split(".ko")[0].replace("-", "_")
                for line in path.read_text().split()}

    def resolve(self, names: list[str]) -> list[Path]:
        """The .ko files to insmod, dependencies first, for the given module names."""
        index = self.module_index()
        builtin = self.builtin_modules()
        order: list[Path] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            name = name.replace("-", "_")
            if name in seen or name in builtin:
                return
            if name not in index:
                raise PrepareError(f"kernel {self.version} has no module {name} "
                                   f"(needed by {' <- '.join(chain) or 'the caller'})")
            seen.add(name)
            for dep in modinfo(index[name]).get("depends", "").split(","):
                if dep:
                    visit(dep, (name, *chain))
            order.append(index[name])

        for name in names:
            visit(name, ())
        return order


def ko_bytes(path: Path) -> bytes:
    """A module's ELF image, decompressed if it ships as .ko.xz or .ko.zst."""
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True,
                              check=True).stdout
    return path.read_bytes()


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """Contents of the named section of an ELF64 little-endian file."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, _ = header(shstrndx)
    for i in range(shnum):
        name, offset, size = header(i)
        end = data.index(b"\0", str_off + name)
        if data[str_off + name:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def modinfo(path: Path) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section (what `modinfo` prints)."""
    section = elf_section(ko_bytes(path), ".modinfo") or b""
    info: dict[str, str] = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep and key not in info:
            info[key] = value
    return info


def kernel_package(flavour: str, cache: Path | None = None) -> KernelPackage:
    """Download (once) and unpack the newest 6.1 kernel of a flavour into the cache.

    The first package found in the cache is reused without asking apt, so a second run is
    offline and fast; delete the cache directory to move to a newer kernel.
    """
    cache = cache or cache_dir()
    kernels = cache / "kernels"
    with locked(cache / ".lock-kernels"):
        pattern = re.compile(rf"^linux-image-6\.1\.0-(\d+)-{re.escape(flavour)}$")
        cached = sorted((int(m.group(1)), d) for d in kernels.glob("linux-image-*")
                        if (m := pattern.match(d.name)) and (d / ".unpacked").exists())
        if cached:
            root = cached[-1][1]
            return KernelPackage(root, (root / ".unpacked").read_text().strip())
        package = newest_kernel_package(flavour)
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            for attempt in range(2):
                result = subprocess.run(["apt-get", "download", package], cwd=debs,
                                        capture_output=True, text=True)
                if result.returncode == 0:
                    break
                if attempt == 0:
                    _apt_update()   # stale package lists name a file the mirror dropped
            else:
                raise PrepareError(f"apt-get download {package} failed: {result.stderr[-2000:]}")
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        root = kernels / package
        shutil.rmtree(root, ignore_errors=True)
        tmp = kernels / f".{package}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run("dpkg-deb", "-x", str(deb), str(tmp))
        version = package.removeprefix("linux-image-")
        if not (tmp / "boot" / f"vmlinuz-{version}").exists():
            raise PrepareError(f"{deb.name} has no /boot/vmlinuz-{version}")
        (tmp / ".unpacked").write_text(version + "\n")
        tmp.rename(root)
        deb.unlink()  # the unpacked tree is what we keep
        return KernelPackage(root, version)
