import pytest

from pyvisor.errors import ConfigError
from pyvisor.units import format_size, parse_size


@pytest.mark.parametrize("text, expected", [
    ("512M", 512 << 20),
    ("1G", 1 << 30),
    ("65536K", 64 << 20),
    ("2T", 2 << 40),
    ("1073741824", 1 << 30),
    ("512MiB", 512 << 20),
    ("512MB", 512 << 20),
    ("512mib", 512 << 20),
    ("1g", 1 << 30),
    ("  64M \n", 64 << 20),
    ("4096B", 4096),
    ("1.5G", 3 << 29),
    ("0.5K", 512),
])
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "abc", "12Q", "1.5.G", "M", "1 G B", "iB", "5iB",
                                  "0x10", "1e3"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(ConfigError, match=r"expected a number with an optional K, M, G or T"):
        parse_size(text)


def test_parse_size_message_quotes_the_input():
    with pytest.raises(ConfigError) as exc:
        parse_size("abc")
    assert str(exc.value) == ("invalid size 'abc': expected a number with an optional "
                              "K, M, G or T suffix (e.g. 512M)")


@pytest.mark.parametrize("text", ["0", "0M", "0.0G", "-1G", "-512"])
def test_parse_size_rejects_zero_and_negative(text):
    with pytest.raises(ConfigError, match="greater than zero"):
        parse_size(text)


@pytest.mark.parametrize("text", ["1.5", "0.3K", "1.0000000001G"])
def test_parse_size_rejects_fractional_bytes(text):
    with pytest.raises(ConfigError, match="whole number of bytes"):
        parse_size(text)


@pytest.mark.parametrize("n, expected", [
    (256 << 20, "256 MiB"),
    (1 << 30, "1 GiB"),
    (3 << 29, "1.5 GiB"),
    (4096, "4 KiB"),
    (123, "123 bytes"),
    (1, "1 byte"),
    (0, "0 bytes"),
    (3 << 40, "3 TiB"),
    (1536, "1.5 KiB"),
])
def test_format_size(n, expected):
    assert format_size(n) == expected


def test_round_trip():
    for text in ("4K", "1M", "768M", "3G", "5G"):
        assert parse_size(format_size(parse_size(text)).replace(" ", "")) == parse_size(text)


def test_parse_size_refuses_sizes_beyond_64_bits_in_one_short_line():
    with pytest.raises(ConfigError) as exc:
        parse_size("1" + "0" * 400)
    assert "larger than 16 EiB" in str(exc.value) and len(str(exc.value)) < 100
    assert parse_size("16777216T") == 1 << 64
    with pytest.raises(ConfigError, match="larger than 16 EiB"):
        parse_size("16777217T")
