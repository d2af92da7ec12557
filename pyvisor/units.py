"""Human-friendly sizes for options like ``--memory 512M``.

Suffixes are always binary (K = KiB): that is what memory sizes mean to a hypervisor user,
and "512MB" meaning 512,000,000 bytes would never be page-aligned.
"""

import re

from pyvisor.errors import ConfigError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"(-?)(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?|B)?", re.IGNORECASE)
_EXPECTED = "expected a number with an optional K, M, G or T suffix (e.g. 512M)"
# The largest size anything in pyvisor can mean (a 64-bit address space): a bigger number is
# refused here rather than overflowing a float or a C field further on.
MAX_SIZE = 1 << 64
_INT_DIGITS = len(str(MAX_SIZE))   # a longer number of bytes is too large, or zero padded


def parse_size(text: str) -> int:
    """Parse ``512M``, ``1G``, ``1.5G``, ``512MiB`` or plain bytes into a positive byte count."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"invalid size {_short(text)}: {_EXPECTED}")
    sign, number, unit = match.groups()
    scale = _UNITS[(unit or "").upper()]
    if number.isdigit() and len(number) <= _INT_DIGITS:
        value = int(number) * scale
    else:   # 1.5G, or digits past any size: exact decimal arithmetic (decimal is ~1.5 ms to import)
        from decimal import Decimal

        value = Decimal(number) * scale
    if sign or value == 0:
        raise ConfigError(f"invalid size {_short(text)}: must be greater than zero")
    if value > MAX_SIZE:
        raise ConfigError(f"invalid size {_short(text)}: larger than 16 EiB")
    if value != int(value):
        raise ConfigError(f"invalid size {_short(text)}: is not a whole number of bytes")
    return int(value)


def _short(text: str) -> str:
    """The input quoted, cut to a readable length (the message stays one short line)."""
    text = text.strip()
    return repr(text) if len(text) <= 40 else repr(text[:20] + "..." + text[-8:])


def format_size(n: int) -> str:
    """Render a byte count with the largest binary unit that keeps it at least 1."""
    for suffix, unit in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= unit:
            return f"{n / unit:.2f}".rstrip("0").rstrip(".") + f" {suffix}"
    return "1 byte" if n == 1 else f"{n} bytes"
