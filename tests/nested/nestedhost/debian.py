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


# --- bookworm-backports, without touching this machine's apt configuration -------------

BACKPORTS_SUITE = "bookworm-backports"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def debian_mirror(policy: str) -> str:
    """The URI apt fetches Debian bookworm's main archive from, out of `apt-cache policy`'s
    output (so whichever sources format configured it; not -updates or -security)."""
    uri = None
    for line in policy.splitlines():
        entry = re.match(r"\s*-?\d+\s+(\S+://\S+)\s+bookworm/main\s", line)
        if entry:
            uri = entry.group(1)
        elif uri and "release" in line:
            if "o=Debian," in line and "l=Debian," in line:
                return uri
            uri = None
    raise PrepareError("apt has no Debian bookworm main archive configured, so no mirror "
                       f"to take {BACKPORTS_SUITE} from")


def backports_entry(mirror: str) -> str:
    """A deb822 sources entry for bookworm-backports' main on `mirror`."""
    signed = f"Signed-By: {KEYRING}\n" if KEYRING.exists() else ""
    return (f"Types: deb\nURIs: {mirror}\nSuites: {BACKPORTS_SUITE}\nComponents: main\n"
            f"{signed}")


class Apt:
    """apt-get / apt-cache, either this machine's as configured or (backports=True) a
    private one that sees only bookworm-backports on this machine's own Debian mirror,
    with its lists and caches in the cache directory: nothing in /etc/apt changes and
    nothing from backports is installed (its packages are downloaded and unpacked)."""

    def __init__(self, cache: Path, backports: bool = False) -> None:
        self.options: list[str] = []
        self.state = cache / "apt-backports"
        self.backports = backports
        self._updated = False
        if backports:
            self.options = [f"-oDir::Etc::SourceList={self.state / 'backports.sources'}",
                            "-oDir::Etc::SourceParts=/nonexistent",
                            f"-oDir::State::Lists={self.state / 'lists'}",
                            f"-oDir::Cache={self.state / 'cache'}"]

    def __call__(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        if self.backports and not (self.state / "backports.sources").exists():
            self.update()
        return run(tool, *self.options, *args, cwd=cwd)

    def update(self) -> None:
        """apt-get update, once per Apt (the private lists are fetched when missing)."""
        if not self.backports:
            _apt_update()
            return
        if self._updated:
            return
        (self.state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        try:
            mirror = debian_mirror(run("apt-cache", "policy"))
        except PrepareError:   # policy lists only archives whose lists were fetched
            _apt_update()
            mirror = debian_mirror(run("apt-cache", "policy"))
        (self.state / "backports.sources").write_text(backports_entry(mirror))
        self._updated = True
        self("apt-get", "update", "-q")

    def download(self, packages: list[str], into: Path) -> None:
        """apt-get download, after one update if the lists are stale or missing."""
        try:
            self("apt-get", "download", *packages, cwd=into)
        except PrepareError:
            self.update()
            self("apt-get", "download", *packages, cwd=into)


# --- kernel packages --------------------------------------------------------------------

@dataclass(frozen=True)
class KernelSeries:
    """A Debian kernel series: how its image packages are named and where apt finds them."""
    name: str            # e.g. "6.1"
    package: str         # regex, {flavour} filled in; group 1 orders the packages
    backports: bool      # from bookworm-backports rather than bookworm's main archive

    def pattern(self, flavour: str) -> re.Pattern:
        return re.compile("^" + self.package.replace("{flavour}", re.escape(flavour)) + "$")


SERIES = {s.name: s for s in (
    KernelSeries("6.1", r"linux-image-6\.1\.0-(\d+)-{flavour}", backports=False),
    KernelSeries("6.12", r"linux-image-6\.12\.(\d+)\+deb12-{flavour}", backports=True),
)}


def newest_kernel_package(flavour: str, series: KernelSeries, apt: Apt) -> str:
    """Newest image package of a series apt knows, e.g. flavour 'amd64' or 'cloud-amd64'."""
    pattern = series.pattern(flavour)

    def search() -> list[tuple[int, str]]:
        out = apt("apt-cache", "search", "--names-only", f"^linux-image-{series.name}.*-{flavour}$")
        names = [line.split(" ", 1)[0] for line in out.splitlines()]
        return sorted((int(m.group(1)), m.group(0)) for n in names if (m := pattern.match(n)))

    found = search()
    if not found:
        apt.update()
        found = search()
    if not found:
        raise PrepareError(f"apt knows no linux-image-{series.name} package for {flavour}")
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


def kernel_package(flavour: str, cache: Path | None = None,
                   series: str = "6.1") -> KernelPackage:
    """Download (once) and unpack the newest kernel of a series and flavour into the cache
    (6.1 from bookworm, 6.12 from bookworm-backports).

    The first package found in the cache is reused without asking apt, so a second run is
    offline and fast; delete the cache directory to move to a newer kernel.
    """
    cache = cache or cache_dir()
    kernels = cache / "kernels"
    if series not in SERIES:
        raise PrepareError(f"no kernel series {series} (known: {', '.join(SERIES)})")
    with locked(cache / ".lock-kernels"):
        pattern = SERIES[series].pattern(flavour)
        apt = Apt(cache, SERIES[series].backports)
        cached = sorted((int(m.group(1)), d) for d in kernels.glob("linux-image-*")
                        if (m := pattern.match(d.name)) and (d / ".unpacked").exists())
        if cached:
            root = cached[-1][1]
            return KernelPackage(root, (root / ".unpacked").read_text().strip())
        package = newest_kernel_package(flavour, SERIES[series], apt)
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            apt.download([package], debs)   # updates once if stale lists name a dropped file
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
