import pytest

from pyvisor.acpi import aml


def decode_pkg_length(data: bytes) -> tuple[int, int]:
    """(encoded value, number of PkgLength bytes), decoded independently of the encoder."""
    lead = data[0]
    extra = lead >> 6
    if extra == 0:
        return lead & 0x3F, 1
    value = lead & 0x0F
    for i in range(extra):
        value |= data[1 + i] << (4 + 8 * i)
    return value, 1 + extra


@pytest.mark.parametrize("body,encoded", [
    (0, b"\x01"),
    (62, b"\x3F"),                     # 63 = largest one-byte value
    (63, b"\x41\x04"),                 # 63 + 2 = 65
    (64, b"\x42\x04"),
    (4093, b"\x4F\xFF"),               # 4095 = largest two-byte value
    (4094, b"\x81\x00\x01"),           # 4094 + 3 = 4097
    (4095, b"\x82\x00\x01"),
    (4096, b"\x83\x00\x01"),
    ((1 << 20) - 4, b"\x8F\xFF\xFF"),  # largest three-byte value
    ((1 << 20) - 3, b"\xC1\x00\x00\x01"),
])
def test_pkg_length_boundaries(body, encoded):
    got = aml.pkg_length(body)
    assert got == encoded
    value, size = decode_pkg_length(got)
    assert size == len(got)
    assert value == body + size        # PkgLength counts its own bytes


@pytest.mark.parametrize("body", [0, 1, 61, 62, 63, 64, 100, 4092, 4093, 4094, 5000, 70000])
def test_pkg_length_is_minimal_and_self_inclusive(body):
    got = aml.pkg_length(body)
    value, size = decode_pkg_length(got)
    assert value == body + size
    # No shorter encoding could hold the value.
    limits = {1: 0x3F, 2: 0xFFF, 3: 0xFFFFF}
    if size > 1:
        assert body + size - 1 > limits[size - 1]


def test_pkg_length_too_large():
    with pytest.raises(ValueError):
        aml.pkg_length(1 << 28)
    with pytest.raises(ValueError):
        aml.pkg_length(-1)


@pytest.mark.parametrize("path,encoded", [
    ("_S5", b"_S5_"),
    ("PCI0", b"PCI0"),
    ("\\_SB", b"\\_SB_"),
    ("\\_SB.PCI0", b"\\\x2E_SB_PCI0"),
    ("\\_SB.PCI0.RTC", b"\\\x2F\x03_SB_PCI0RTC_"),
    ("^FOO", b"^FOO_"),
    ("^^A.B", b"^^\x2EA___B___"),
    ("\\", b"\\\x00"),
])
def test_name_string(path, encoded):
    assert aml.name_string(path) == encoded


@pytest.mark.parametrize("bad", ["1ABC", "ABCDE", "a", "\\_SB.", "A-B"])
def test_name_string_rejects_bad_segments(bad):
    with pytest.raises(ValueError):
        aml.name_string(bad)


@pytest.mark.parametrize("value,encoded", [
    (0, b"\x00"),
    (1, b"\x01"),
    (2, b"\x0A\x02"),
    (0xFF, b"\x0A\xFF"),
    (0x100, b"\x0B\x00\x01"),
    (0xFFFF, b"\x0B\xFF\xFF"),
    (0x10000, b"\x0C\x00\x00\x01\x00"),
    (0xFFFFFFFF, b"\x0C\xFF\xFF\xFF\xFF"),
    (0x100000000, b"\x0E\x00\x00\x00\x00\x01\x00\x00\x00"),
    ((1 << 64) - 1, b"\x0E" + b"\xFF" * 8),
])
def test_integer(value, encoded):
    assert aml.integer(value) == encoded


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_integer_out_of_range(value):
    with pytest.raises(ValueError):
        aml.integer(value)


def test_string():
    assert aml.string("ACPI0007") == b"\x0DACPI0007\x00"
    with pytest.raises(ValueError):
        aml.string("a\0b")


@pytest.mark.parametrize("pnp,value", [
    ("PNP0A03", 0x030AD041), ("PNP0B00", 0x000BD041), ("PNP0501", 0x0105D041),
    ("PNP0C0C", 0x0C0CD041)])
def test_eisaid(pnp, value):
    assert aml.eisaid_value(pnp) == value
    assert aml.eisaid(pnp) == b"\x0C" + value.to_bytes(4, "little")


@pytest.mark.parametrize("bad", ["PNP0A0", "pnp0a03", "PNP0A0G", "P1P0A03"])
def test_eisaid_rejects_malformed(bad):
    with pytest.raises(ValueError):
        aml.eisaid_value(bad)


def test_s5_name_package():
    # Name(_S5, Package(4){5, 5, 0, 0}) as iasl emits it.
    got = aml.name("_S5", aml.package(*(aml.integer(v) for v in (5, 5, 0, 0))))
    assert got == b"\x08_S5_\x12\x08\x04\x0A\x05\x0A\x05\x00\x00"


def test_package_limits():
    assert aml.package() == b"\x12\x02\x00"
    with pytest.raises(ValueError):
        aml.package(*[b"\x00"] * 256)


def test_big_package_uses_two_byte_length():
    got = aml.package(*[aml.integer(0x12345678)] * 20)   # 1 + 20 * 5 = 101 byte body
    assert got[:4] == b"\x12\x47\x06\x14"                   # 101 + 2 = 0x67


def test_device_scope_method_buffer():
    assert (aml.device("PCI0", aml.name("_ADR", aml.integer(0)))
            == b"\x5B\x82\x0BPCI0\x08_ADR\x00")
    assert aml.scope("\\_SB") == b"\x10\x06\\_SB_"
    assert (aml.method("_STA", 0, aml.return_(aml.integer(0x0F)))
            == b"\x14\x09_STA\x00\xA4\x0A\x0F")
    assert aml.method("FOO", 2, serialized=True)[-1] == 0x0A
    assert aml.buffer(b"\x01\x02") == b"\x11\x05\x0A\x02\x01\x02"


def test_small_resource_descriptors():
    assert aml.io_port(0x70, 0x70, 1, 2) == b"\x47\x01\x70\x00\x70\x00\x01\x02"
    assert aml.irq_noflags(8) == b"\x22\x00\x01"
    assert aml.irq_noflags(1, 12) == b"\x22\x02\x10"
    with pytest.raises(ValueError):
        aml.irq_noflags(16)


def test_large_resource_descriptors():
    assert aml.word_bus_number(0, 0xFF) == bytes.fromhex(
        "880d00" "02" "0c" "00" "0000" "0000" "ff00" "0000" "0001")
    assert aml.word_io(0x0D00, 0xFFFF) == bytes.fromhex(
        "880d00" "01" "0c" "03" "0000" "000d" "ffff" "0000" "00f3")
    assert aml.dword_memory(0xC0000000, 0xFBFFFFFF) == bytes.fromhex(
        "871700" "00" "0c" "01" "00000000" "000000c0" "fffffffb" "00000000" "0000003c")


def test_resource_template_has_end_tag():
    got = aml.resource_template(aml.io_port(0x70, 0x70, 1, 2))
    assert got == b"\x11\x0D\x0A\x0A" + aml.io_port(0x70, 0x70, 1, 2) + b"\x79\x00"
