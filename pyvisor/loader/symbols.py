"""ELF symbol tables: what a script needs to stop at a function or read a variable by
name (`symbols("kernel.elf")["counter"]`). Reads .symtab, or .dynsym when stripped of it."""
from __future__ import annotations

import os
import struct

from ..errors import KernelError

_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_SECTION = struct.Struct("<IIQQQQIIQQ")   # Elf64_Shdr
_SYMBOL = struct.Struct("<IBBHQQ")        # Elf64_Sym
_STT_OBJECT, _STT_FUNC = 1, 2


def symbols(path: str | os.PathLike) -> dict[str, int]:
    """Names of the functions and data objects in an ELF64 file, with their addresses."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise KernelError(f"{os.fspath(path)}: not an ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    try:
        sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        tables = [s for s in sections if s[1] == _SHT_SYMTAB] or \
                 [s for s in sections if s[1] == _SHT_DYNSYM]
        found: dict[str, int] = {}
        for table in tables:
            strtab = sections[table[6]]            # sh_link: the table's string section
            names = data[strtab[4]:strtab[4] + strtab[5]]
            for offset in range(table[4], table[4] + table[5], _SYMBOL.size):
                name_at, info, _, shndx, value, _ = _SYMBOL.unpack_from(data, offset)
                if info & 0xF in (_STT_OBJECT, _STT_FUNC) and shndx:
                    found[names[name_at:names.index(b"\0", name_at)].decode()] = value
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise KernelError(f"{os.fspath(path)}: corrupt section or symbol table") from None
    return found
