"""Multiboot 1 and 2 kernels booted as QEMU's -kernel would: what they print of the boot
information they were handed is compared with what pyvisor built (the e820 map, the
placed modules, the ACPI RSDP in guest memory), and malformed images are refused."""
import re
import struct

import pytest

from helpers import guest, needs_kvm, one_line_error, pyvisor
from pyvisor import Machine

pytestmark = [needs_kvm, pytest.mark.kvm]

KERNELS = {"mb1": ("mb1", "elf", 0x2BADB002), "mb1_aout": ("mb1_aout", "bin", 0x2BADB002),
           "mb2": ("mb2", "elf", 0x36D76289)}


@pytest.fixture
def modules(tmp_path):
    one, two = tmp_path / "one.txt", tmp_path / "two.bin"
    one.write_bytes(b"first module text")
    two.write_bytes(b"SECOND" + bytes(range(0x41, 0x5b)))
    return one, two


def boot(kernel: str, modules, cmdline="console=ttyS0 x=1", mem="64M"):
    """Run the kernel; return its output, the BootPlan, the e820 map and the RSDP bytes."""
    one, two = modules
    with Machine(kernel=kernel, mem=mem, cmdline=cmdline,
                 initrd=f"{one} alpha beta,{two}") as m:
        outcome = m.run(timeout=60)
        assert (outcome.kind, outcome.status) == ("reset", 0), (outcome, m.console_text)
        return (m.console_text.replace("\r\n", "\n"), m.boot, m.layout.e820(),
                m.memory.read(m.boot.rsdp, 36))


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_boot_information_matches_what_pyvisor_built(name, modules):
    stem, ext, magic = KERNELS[name]
    kernel = guest(stem, ext)
    out, plan, e820, raw = boot(kernel, modules)
    assert "multiboot: done" in out, out
    # Entry state: the magic, protected mode with paging off (PE | ET), IF clear, CS 0x08.
    assert f"entry magic={magic:#x} cr0=0x11 eflags=0x2 cs=0x8\n" in out, out

    shown = re.findall(r"mmap base=(0x[0-9a-f]+) len=(0x[0-9a-f]+) type=(\d+)", out)
    assert [(int(a, 16), int(n, 16), int(t)) for a, n, t in shown] == \
        [(e.addr, e.size, e.type) for e in e820]
    # mem_lower: conventional memory below the EBDA; mem_upper: RAM from 1 MiB, in KiB.
    assert "mem_lower=639 mem_upper=64512\n" in out

    assert f"cmdline={kernel} console=ttyS0 x=1\n" in out
    assert f"argv0={kernel}\n" in out
    assert "loader=pyvisor\n" in out

    one, two = modules
    placed = plan.image.multiboot.modules
    lines = re.findall(r"module start=0x([0-9a-f]+) end=0x([0-9a-f]+) cmdline=(.*) data=(.*)",
                       out)
    assert [(int(s, 16), int(e, 16)) for s, e, _, _ in lines] == \
        [(p.gpa, p.end) for p in placed]
    assert [c for _, _, c, _ in lines] == [f"{one} alpha beta", str(two)]
    assert [d for _, _, _, d in lines] == ["first module text",
                                           "SECOND" + "".join(map(chr, range(0x41, 0x5b)))]
    kernel_end = plan.image.high
    assert placed[0].gpa >= kernel_end and placed[0].gpa % 4096 == 0
    assert placed[1].gpa >= placed[0].end and placed[1].gpa % 4096 == 0

    assert f"rsdp scan={plan.rsdp:#x}\n" in out
    if name == "mb2":
        oem = raw[9:15].decode()
        rsdt, xsdt = struct.unpack_from("<I", raw, 16)[0], struct.unpack_from("<Q", raw, 24)[0]
        assert f"rsdp old={oem} rev={raw[15]} rsdt={rsdt:#x}\n" in out
        assert f"rsdp new={oem} rev={raw[15]} rsdt={rsdt:#x} xsdt={xsdt:#x}\n" in out
        assert f"load_base={plan.image.low:#x}\n" in out


def test_boot_multiboot_forced_from_the_cli(modules):
    """--boot multiboot and --initrd with QEMU's module syntax, through the command."""
    one, two = modules
    result = pyvisor("run", guest("mb1"), "--mem", "32M", "--boot", "multiboot",
                     "--initrd", f"{one} arg,{two}", "--console", "stdio")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"cmdline={one} arg data=first module text" in out.replace("\r\n", "\n"), out


def test_a_bad_checksum_is_one_line(tmp_path):
    data = bytearray(open(guest("mb1_aout", "bin"), "rb").read())
    offset = data.find(struct.pack("<I", 0x1BADB002))
    data[offset + 8] ^= 1
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    line = one_line_error(pyvisor("run", str(bad), "--mem", "32M"))
    assert "bad Multiboot header checksum" in line and "bad.bin" in line


def test_a_truncated_image_is_one_line(tmp_path):
    data = open(guest("mb2", "elf"), "rb").read()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:0x1800])
    line = one_line_error(pyvisor("run", str(cut), "--mem", "32M"))
    assert "truncated" in line, line


def test_a_module_beyond_ram_is_one_line(tmp_path):
    """The kernel ends near 1.1 MiB; a 1 MiB module cannot follow it in 2 MiB of RAM."""
    big = tmp_path / "big"
    big.write_bytes(bytes(1 << 20))
    line = one_line_error(pyvisor("run", guest("mb1"), "--mem", "2M", "--initrd", str(big)))
    assert f"module {str(big)!r} does not fit" in line, line
