"""The gdb stub's register description and g/G/p/P layout.

Expected numbers come from gdb's own amd64 description (features/i386/64bit-core.xml and
64bit-sse.xml: rax rbx rcx rdx rsi rdi rbp rsp r8-r15 rip eflags cs ss ds es fs gs st0-7
fctrl fstat ftag fiseg fioff foseg fooff fop, then xmm0-15 mxcsr), the x87 tag word from
the Intel SDM (vol. 1, 8.1.7: 00 valid, 01 zero, 10 special, 11 empty; FXSAVE keeps one
bit per physical register)."""
import xml.etree.ElementTree as ET

import pytest

from gdbstub_fake import FakeMachine
from pyvisor.debug.gdbstub import registers
from pyvisor.debug.gdbstub.registers import (RegisterError, abridged_tag, read_all,
                                             read_one, write_all, write_one, x87_tag_word)

GDB_AMD64_ORDER = (["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
                   + [f"r{i}" for i in range(8, 16)]
                   + ["rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]
                   + [f"st{i}" for i in range(8)]
                   + ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]
                   + [f"xmm{i}" for i in range(16)] + ["mxcsr"])
# Byte offsets in the g packet: 17 x 8 (GPRs, rip), eflags at 136, six selectors, then
# st0-7 (10 bytes each), the eight x87 control registers (4 each), xmm0.
OFF_CS = 140
OFF_ST0 = OFF_CS + 6 * 4
OFF_XMM0 = OFF_ST0 + 8 * 10 + 8 * 4


def _regs(xml: bytes):
    root = ET.fromstring(xml)
    return root, [(f.get("name"), r) for f in root.iter("feature") for r in f.iter("reg")]


def test_target_xml_is_gdbs_amd64_layout_plus_segment_bases_and_control_registers():
    root, regs = _regs(registers.TARGET_XML)
    assert root.tag == "target"
    assert root.find("architecture").text == "i386:x86-64"
    names = [r.get("name") for _, r in regs]
    assert names[:len(GDB_AMD64_ORDER)] == GDB_AMD64_ORDER
    assert names[len(GDB_AMD64_ORDER):] == ["fs_base", "gs_base", "cr0", "cr2", "cr3", "cr4",
                                            "cr8", "efer"]
    assert [int(r.get("regnum")) for _, r in regs] == list(range(len(names)))
    features = {name for name, _ in regs}
    assert {"org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse",
            "org.gnu.gdb.i386.segments"} <= features
    by_name = {r.get("name"): (feature, r) for feature, r in regs}
    assert by_name["rip"][0] == "org.gnu.gdb.i386.core"
    assert by_name["xmm15"][0] == by_name["mxcsr"][0] == "org.gnu.gdb.i386.sse"
    assert by_name["fs_base"][0] == "org.gnu.gdb.i386.segments"
    assert by_name["cr3"][0] == "org.pyvisor.i386.system"
    sizes = {n: int(r.get("bitsize")) for n, (_, r) in by_name.items()}
    assert sizes["rax"] == sizes["rip"] == sizes["cr3"] == sizes["fs_base"] == 64
    assert sizes["eflags"] == sizes["cs"] == sizes["fctrl"] == sizes["mxcsr"] == 32
    assert sizes["st0"] == 80 and sizes["xmm0"] == 128


def test_every_type_used_is_defined_in_its_feature_or_predefined():
    predefined = {"int", "int32", "int64", "data_ptr", "code_ptr", "i387_ext", "uint128",
                  "int8", "int16", "ieee_single", "ieee_double"}
    root = ET.fromstring(registers.TARGET_XML)
    for feature in root.iter("feature"):
        defined = {e.get("id") for e in feature if e.tag in ("flags", "vector", "union")}
        for reg in feature.iter("reg"):
            assert reg.get("type") in predefined | defined, reg.get("name")


def test_g_packet_size():
    # 16 GPRs + rip (8 each), eflags + 6 selectors (4), 8 x 80-bit st, 8 x 32-bit x87
    # control, 16 x 128-bit xmm, mxcsr, 2 bases and 6 control registers (8 each).
    assert registers.G_PACKET_SIZE == 17 * 8 + 7 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 8 * 8


def test_read_all_places_values_little_endian_in_regnum_order():
    cpu = FakeMachine().vcpus[0]
    cpu.regs.rax = 0x1122334455667788
    cpu.regs.rip = 0x100123
    cpu.regs.rflags = 0x246
    cpu.sregs.cs.selector = 0x10
    cpu.sregs.fs.base = 0xDEAD000
    cpu.sregs.cr3 = 0x12345000
    fpu = cpu.fpu
    fpu.xmm[1][0] = 0xAA
    fpu.xmm[1][15] = 0xBB
    cpu.set_fpu(fpu)
    data = read_all(cpu)
    assert len(data) == registers.G_PACKET_SIZE
    assert data[0:8] == (0x1122334455667788).to_bytes(8, "little")
    assert data[16 * 8:17 * 8] == (0x100123).to_bytes(8, "little")
    assert data[136:140] == (0x246).to_bytes(4, "little")
    assert data[OFF_CS:OFF_CS + 4] == (0x10).to_bytes(4, "little")
    fctrl = OFF_ST0 + 8 * 10
    assert data[fctrl:fctrl + 4] == (0x37F).to_bytes(4, "little")
    assert data[fctrl + 8:fctrl + 12] == (0xFFFF).to_bytes(4, "little")   # ftag: all empty
    xmm1 = OFF_XMM0 + 16
    assert data[xmm1] == 0xAA and data[xmm1 + 15] == 0xBB
    assert read_one(cpu, 56) == (0x1F80).to_bytes(4, "little")            # mxcsr
    assert read_one(cpu, 57) == (0xDEAD000).to_bytes(8, "little")         # fs_base
    assert read_one(cpu, 61) == (0x12345000).to_bytes(8, "little")        # cr3


def test_write_all_writes_only_what_changed_and_the_fpu_once():
    cpu = FakeMachine().vcpus[0]
    data = bytearray(read_all(cpu))
    write_all(cpu, bytes(data))
    assert cpu.fpu_sets == 0                   # nothing changed: FPU image not reloaded
    data[8:16] = (0xABCD).to_bytes(8, "little")                 # rbx
    data[OFF_XMM0:OFF_XMM0 + 16] = bytes(range(16))
    data[OFF_XMM0 + 16:OFF_XMM0 + 32] = bytes(range(16, 32))    # xmm1
    write_all(cpu, bytes(data))
    assert cpu.regs.rbx == 0xABCD
    assert bytes(cpu.fpu.xmm[0]) == bytes(range(16))
    assert bytes(cpu.fpu.xmm[1]) == bytes(range(16, 32))
    assert cpu.fpu_sets == 1


def test_selectors_are_read_only_and_sizes_checked():
    cpu = FakeMachine().vcpus[0]
    data = bytearray(read_all(cpu))
    data[OFF_CS:OFF_CS + 4] = (0x33).to_bytes(4, "little")                # cs
    with pytest.raises(RegisterError):
        write_all(cpu, bytes(data))
    with pytest.raises(RegisterError):
        write_all(cpu, bytes(data[:-1]))
    with pytest.raises(RegisterError):
        write_one(cpu, 0, b"\x00" * 4)
    with pytest.raises(RegisterError):
        read_one(cpu, len(registers.REGISTERS))


def test_write_one_targets_regs_sregs_and_fpu():
    cpu = FakeMachine().vcpus[0]
    write_one(cpu, 16, (0x200000).to_bytes(8, "little"))
    assert cpu.regs.rip == 0x200000
    write_one(cpu, 59, (0x80000011).to_bytes(8, "little"))     # cr0
    assert cpu.sregs.cr0 == 0x80000011
    write_one(cpu, 58, (0x7000).to_bytes(8, "little"))         # gs_base
    assert cpu.sregs.gs.base == 0x7000 and cpu.sregs.gs.selector == 0
    write_one(cpu, 24, bytes(range(10)))                       # st0: 80 of the 128 bits
    assert bytes(cpu.fpu.fpr[0][0:10]) == bytes(range(10))
    assert cpu.fpu_sets == 1


def test_x87_tag_word():
    empty = [bytes(16)] * 8
    one = (0x3FFF << 64 | 1 << 63).to_bytes(10, "little") + bytes(6)    # 1.0
    nan = (0x7FFF << 64 | 3 << 62).to_bytes(10, "little") + bytes(6)
    denormal = (1).to_bytes(10, "little") + bytes(6)
    assert x87_tag_word(0, 0x00, empty) == 0xFFFF
    assert x87_tag_word(0, 0x01, [one] + empty[1:]) == 0xFFFC            # phys 0 valid
    assert x87_tag_word(0, 0x01, empty) == 0xFFFD                        # +0.0: zero
    assert x87_tag_word(0, 0x01, [nan] + empty[1:]) == 0xFFFE            # special
    assert x87_tag_word(0, 0x01, [denormal] + empty[1:]) == 0xFFFE
    # TOP = 7: ST(0) is physical register 7
    assert x87_tag_word(7 << 11, 0x80, [one] + empty[1:]) == 0x3FFF
    assert abridged_tag(0xFFFF) == 0
    assert abridged_tag(0x3FFF) == 0x80
    assert abridged_tag(0xFFFC) == 0x01
    cpu = FakeMachine().vcpus[0]
    write_one(cpu, 34, (0x3FFF).to_bytes(4, "little"))         # ftag
    assert cpu.fpu.ftwx == 0x80
