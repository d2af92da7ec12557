"""The registers gdb sees: one table gives the target description (target.xml, served by
qXfer:features:read), the layout of the g/G packets and the numbers of p/P, and how each
register maps onto a vCPU handle (cpu.regs, cpu.sregs, cpu.fpu).

gdb numbers registers by the `regnum` of the description, and g carries them in that
order, each little-endian in its own width. The x87 and SSE registers are the FXSAVE image
KVM keeps (struct kvm_fpu); its abridged tag byte is widened to the two-bit tag word gdb
shows as `ftag`, as gdbserver does. Control registers and EFER have no standard gdb
feature; they go in a feature of our own (QEMU puts them in the core feature). gdb's
i386 code ignores a description's register groups, so they show in `info registers`
with the general registers, and as `$cr3` etc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ARCHITECTURE = "i386:x86-64"
CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SEGMENTS = "org.gnu.gdb.i386.segments"
SYSTEM = "org.pyvisor.i386.system"


class RegisterError(ValueError):
    """A register gdb may not write (a segment selector) or a malformed value."""


class CpuView:
    """The state of one vCPU while a packet is served: each register struct is fetched
    once (a g packet costs three ioctls, not one per register); general and system
    registers are written through as they change, the FPU image once (commit) however
    many x87/SSE registers a G packet changes."""

    def __init__(self, cpu):
        self.cpu = cpu
        self._regs = None
        self._sregs = None
        self._fpu = None
        self._fpu_dirty = False

    @property
    def regs(self):
        if self._regs is None:
            self._regs = self.cpu.regs
        return self._regs

    @property
    def sregs(self):
        if self._sregs is None:
            self._sregs = self.cpu.sregs
        return self._sregs

    @property
    def fpu(self):
        if self._fpu is None:
            self._fpu = self.cpu.fpu
        return self._fpu

    def fpu_changed(self) -> None:
        self._fpu_dirty = True

    def commit(self) -> None:
        if self._fpu_dirty:
            self.cpu.set_fpu(self._fpu)
            self._fpu_dirty = False


Getter = Callable[[CpuView], int]
Setter = Callable[[CpuView, int], None]


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    type: str
    feature: str
    get: Getter
    set: Setter | None          # None: gdb may not change it
    group: str | None = None

    @property
    def size(self) -> int:
        return self.bits // 8

    def read(self, view: CpuView) -> bytes:
        return self.get(view).to_bytes(self.size, "little")

    def write(self, view: CpuView, data: bytes) -> None:
        if len(data) != self.size:
            raise RegisterError(f"{self.name} takes {self.size} bytes, got {len(data)}")
        value = int.from_bytes(data, "little")
        if self.set is None:
            if value != self.get(view):
                raise RegisterError(f"{self.name} cannot be written")
            return
        self.set(view, value)


def _gpr(name: str, attr: str, bits: int = 64, type_: str = "int64") -> Register:
    def get(v: CpuView) -> int:
        return getattr(v.regs, attr) & ((1 << bits) - 1)

    def set_(v: CpuView, value: int) -> None:
        setattr(v.regs, attr, value)
    return Register(name, bits, type_, CORE, get, set_)


def _selector(seg: str) -> Register:
    # Loading a selector means loading a descriptor; that is the guest's job, not gdb's.
    return Register(seg, 32, "int32", CORE,
                    lambda v: getattr(v.sregs, seg).selector, None)


def _segment_base(seg: str) -> Register:
    def set_(v: CpuView, value: int) -> None:
        segment = getattr(v.sregs, seg)
        segment.base = value
        setattr(v.sregs, seg, segment)      # written back with the rest of sregs
    return Register(f"{seg}_base", 64, "int64", SEGMENTS,
                    lambda v: getattr(v.sregs, seg).base, set_)


def _control(name: str) -> Register:
    def set_(v: CpuView, value: int) -> None:
        setattr(v.sregs, name, value)
    return Register(name, 64, "int64", SYSTEM, lambda v: getattr(v.sregs, name), set_)


def _fpu_bytes(name: str, field: str, index: int, bits: int, type_: str, feature: str,
               group: str | None = None) -> Register:
    """An x87 register (80 of the 128 bits of fpr[i]) or an XMM register (xmm[i])."""
    size = bits // 8

    def get(v: CpuView) -> int:
        return int.from_bytes(bytes(getattr(v.fpu, field)[index][0:size]), "little")

    def set_(v: CpuView, value: int) -> None:
        row = getattr(v.fpu, field)[index]
        for i, b in enumerate(value.to_bytes(size, "little")):
            row[i] = b
        v.fpu_changed()
    return Register(name, bits, type_, feature, get, set_, group)


def _fpu_field(name: str, get: Getter, set_: Callable[[object, int], None],
               feature: str = CORE, group: str = "float", type_: str = "int") -> Register:
    def setter(v: CpuView, value: int) -> None:
        set_(v.fpu, value)
        v.fpu_changed()
    return Register(name, 32, type_, feature, get, setter, group)


def _setattr(attr: str, mask: int) -> Callable[[object, int], None]:
    def set_(fpu, value: int) -> None:
        setattr(fpu, attr, value & mask)
    return set_


def x87_tag_word(fsw: int, abridged: int, st: list[bytes]) -> int:
    """The full x87 tag word (2 bits per physical register: 0 valid, 1 zero, 2 special,
    3 empty) from the FXSAVE abridged tag (1 bit per physical register: in use) and the
    stack registers st[0..7]; physical register p holds ST((p - TOP) mod 8)."""
    top = (fsw >> 11) & 7
    word = 0
    for phys in range(8):
        if not (abridged >> phys) & 1:
            tag = 3
        else:
            raw = int.from_bytes(st[(phys - top) & 7][0:10], "little")
            exponent = (raw >> 64) & 0x7FFF
            integer_bit = (raw >> 63) & 1
            if exponent == 0x7FFF:
                tag = 2
            elif exponent == 0:
                tag = 1 if raw & ((1 << 64) - 1) == 0 else 2
            else:
                tag = 0 if integer_bit else 2
        word |= tag << (2 * phys)
    return word


def abridged_tag(word: int) -> int:
    """The FXSAVE abridged tag of a full tag word: a register is in use unless empty (3)."""
    return sum(1 << p for p in range(8) if (word >> (2 * p)) & 3 != 3)


def _ftag(v: CpuView) -> int:
    fpu = v.fpu
    return x87_tag_word(fpu.fsw, fpu.ftwx, [bytes(fpu.fpr[i]) for i in range(8)])


def _set_ftag(fpu, value: int) -> None:
    fpu.ftwx = abridged_tag(value)


def _split64(attr: str, high: bool) -> tuple[Getter, Callable[[object, int], None]]:
    """fioff/fiseg and fooff/foseg: gdb's 32-bit halves of the 64-bit FPU pointers of the
    64-bit FXSAVE image (last_ip, last_dp)."""
    shift = 32 if high else 0

    def get(v: CpuView) -> int:
        return (getattr(v.fpu, attr) >> shift) & 0xFFFFFFFF

    def set_(fpu, value: int) -> None:
        old = getattr(fpu, attr)
        setattr(fpu, attr, (old & ~(0xFFFFFFFF << shift)) | ((value & 0xFFFFFFFF) << shift))
    return get, set_


def _build() -> tuple[Register, ...]:
    regs: list[Register] = [_gpr(n, n) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
    regs += [_gpr("rbp", "rbp", type_="data_ptr"), _gpr("rsp", "rsp", type_="data_ptr")]
    regs += [_gpr(f"r{i}", f"r{i}") for i in range(8, 16)]
    regs += [_gpr("rip", "rip", type_="code_ptr"),
             _gpr("eflags", "rflags", bits=32, type_="i386_eflags")]
    regs += [_selector(s) for s in ("cs", "ss", "ds", "es", "fs", "gs")]
    regs += [_fpu_bytes(f"st{i}", "fpr", i, 80, "i387_ext", CORE) for i in range(8)]
    regs += [
        _fpu_field("fctrl", lambda v: v.fpu.fcw, _setattr("fcw", 0xFFFF)),
        _fpu_field("fstat", lambda v: v.fpu.fsw, _setattr("fsw", 0xFFFF)),
        _fpu_field("ftag", _ftag, _set_ftag),
        _fpu_field("fiseg", *_split64("last_ip", True)),
        _fpu_field("fioff", *_split64("last_ip", False)),
        _fpu_field("foseg", *_split64("last_dp", True)),
        _fpu_field("fooff", *_split64("last_dp", False)),
        _fpu_field("fop", lambda v: v.fpu.last_opcode, _setattr("last_opcode", 0x7FF)),
    ]
    regs += [_fpu_bytes(f"xmm{i}", "xmm", i, 128, "vec128", SSE) for i in range(16)]
    regs += [_fpu_field("mxcsr", lambda v: v.fpu.mxcsr, _setattr("mxcsr", 0xFFFFFFFF),
                        feature=SSE, group="vector", type_="i386_mxcsr")]
    regs += [_segment_base("fs"), _segment_base("gs")]
    regs += [_control("cr0"), _control("cr2"), _control("cr3"), _control("cr4"),
             _control("cr8"), _control("efer")]
    return tuple(regs)


REGISTERS: tuple[Register, ...] = _build()
G_PACKET_SIZE = sum(r.size for r in REGISTERS)


def read_all(cpu) -> bytes:
    """The g packet's data: every register in regnum order."""
    view = CpuView(cpu)
    return b"".join(r.read(view) for r in REGISTERS)


def write_all(cpu, data: bytes) -> None:
    """Apply a G packet: only registers whose value differs are written, so the read-only
    selectors may come back unchanged and an unchanged FPU image is not reloaded."""
    if len(data) != G_PACKET_SIZE:
        raise RegisterError(f"G packet of {len(data)} bytes, expected {G_PACKET_SIZE}")
    view = CpuView(cpu)
    offset = 0
    for reg in REGISTERS:
        chunk = data[offset:offset + reg.size]
        offset += reg.size
        if chunk != reg.read(view):
            reg.write(view, chunk)
    view.commit()


def register(number: int) -> Register:
    if not 0 <= number < len(REGISTERS):
        raise RegisterError(f"no register {number}")
    return REGISTERS[number]


def read_one(cpu, number: int) -> bytes:
    return register(number).read(CpuView(cpu))


def write_one(cpu, number: int, data: bytes) -> None:
    view = CpuView(cpu)
    register(number).write(view, data)
    view.commit()


_EFLAGS_FIELDS = ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"),
                  (8, "TF"), (9, "IF"), (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"),
                  (17, "VM"), (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID"))
_MXCSR_FIELDS = ((0, "IE"), (1, "DE"), (2, "ZE"), (3, "OE"), (4, "UE"), (5, "PE"),
                 (6, "DAZ"), (7, "IM"), (8, "DM"), (9, "ZM"), (10, "OM"), (11, "UM"),
                 (12, "PM"), (15, "FZ"))
_VEC128 = """  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v16i8" type="int8" count="16"/>
  <vector id="v8i16" type="int16" count="8"/>
  <vector id="v4i32" type="int32" count="4"/>
  <vector id="v2i64" type="int64" count="2"/>
  <union id="vec128">
    <field name="v4_float" type="v4f"/>
    <field name="v2_double" type="v2d"/>
    <field name="v16_int8" type="v16i8"/>
    <field name="v8_int16" type="v8i16"/>
    <field name="v4_int32" type="v4i32"/>
    <field name="v2_int64" type="v2i64"/>
    <field name="uint128" type="uint128"/>
  </union>
"""


def _flags(type_id: str, fields: tuple[tuple[int, str], ...]) -> str:
    body = "".join(f'    <field name="{n}" start="{b}" end="{b}"/>\n' for b, n in fields)
    return f'  <flags id="{type_id}" size="4">\n{body}  </flags>\n'


_FEATURE_TYPES = {CORE: _flags("i386_eflags", _EFLAGS_FIELDS),
                  SSE: _VEC128 + _flags("i386_mxcsr", _MXCSR_FIELDS)}


def target_xml() -> bytes:
    """The target description gdb reads as target.xml: the architecture and one feature
    per group of registers, with explicit regnums so p/P numbers are ours."""
    parts = ['<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n<target>\n',
             f"  <architecture>{ARCHITECTURE}</architecture>\n"]
    for feature in dict.fromkeys(r.feature for r in REGISTERS):
        parts.append(f'  <feature name="{feature}">\n')
        parts.append(_FEATURE_TYPES.get(feature, ""))
        for number, reg in enumerate(REGISTERS):
            if reg.feature == feature:
                group = f' group="{reg.group}"' if reg.group else ""
                parts.append(f'    <reg name="{reg.name}" bitsize="{reg.bits}" '
                             f'type="{reg.type}" regnum="{number}"{group}/>\n')
        parts.append("  </feature>\n")
    parts.append("</target>\n")
    return "".join(parts).encode("ascii")


TARGET_XML = target_xml()
