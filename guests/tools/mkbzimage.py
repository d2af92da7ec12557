#!/usr/bin/env python3
"""Wrap a tiny kernel ELF into a bzImage: mkbzimage.py KERNEL.elf OUT.bzImage [--name NAME]

The ELF must be linked with linker-bzimage.ld: PT_LOADs at or above physical 0x100200 and
e_entry 0x100200, the 64-bit entry of the Linux boot protocol (Documentation/arch/x86/
boot.rst) for a kernel loaded at 0x100000 (pref_address). The output is

    sector 0       boot sector: zeros, the setup header from 0x1F1, boot_flag 0xAA55
    sector 1       the rest of the setup header (jump at 0x200, "HdrS", ..., protocol 2.15),
                   a version string
    from 0x400     the protected-mode payload, loaded at 0x100000: a 0x200-byte head, then
                   the PT_LOADs' file bytes at paddr - 0x100000,
                   padded to 16 bytes (syssize counts 16-byte units); the BSS is not stored
                   but covered by init_size, and the kernel clears it itself

It is not compressed and not relocatable (the tiny kernels link at a fixed address). The
head (where a real kernel's 32-bit entry is; pyvisor never uses it) is ud2, so a loader that
jumps there gets a clean #UD, and holds the protocol 2.15 kernel_info at offset 0x100.
Runs with the system python3 and the standard library only.
"""
import argparse
import os
import struct
import sys

LOAD_ADDR = 0x100000
ENTRY_64_OFFSET = 0x200
SECTOR = 512
HEADER_START = 0x1F1
HEADER_END = 0x26C            # end of a protocol 2.15 header (after kernel_info_offset)
PROTOCOL = 0x020F
VERSION_STRING_AT = 0x280     # in the setup sectors; kernel_version stores it less 0x200
KERNEL_INFO_AT = 0x100        # inside the 0x200-byte ud2 head of the payload
KERNEL_ALIGNMENT = 0x200000
MIN_ALIGNMENT_LG2 = 21
CMDLINE_SIZE = 4095           # without the NUL: pyvisor's command-line buffer is 4096 bytes
INITRD_ADDR_MAX = 0x7FFFFFFF
LOADED_HIGH = 1 << 0
XLF_KERNEL_64 = 1 << 0
UD2 = b"\x0f\x0b"
PAGE = 4096


def fail(message):
    sys.exit(f"mkbzimage: {message}")


def load_segments(elf):
    """[(paddr, file bytes, memsz)] of the PT_LOADs, and e_entry."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        fail("not a little-endian ELF64 file")
    (_, _, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = struct.unpack_from(
        "<16sHHIQQQIHHHHHH", elf)
    if machine != 62:
        fail("not an x86-64 ELF file")
    segments = []
    for i in range(phnum):
        p_type, _, offset, _, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == 1 and memsz:
            segments.append((paddr, elf[offset:offset + filesz], memsz))
    if not segments:
        fail("no PT_LOAD segments")
    return sorted(segments), entry


def build(elf, name):
    segments, entry = load_segments(elf)
    if entry != LOAD_ADDR + ENTRY_64_OFFSET:
        fail(f"e_entry is {entry:#x}, but a bzImage is entered at {LOAD_ADDR + ENTRY_64_OFFSET:#x}"
             f" (link with linker-bzimage.ld)")
    if segments[0][0] < LOAD_ADDR + ENTRY_64_OFFSET:
        fail(f"a PT_LOAD starts at {segments[0][0]:#x}, inside the {ENTRY_64_OFFSET:#x}-byte "
             f"head at {LOAD_ADDR:#x} (link with linker-bzimage.ld)")

    # The payload: file bytes of every segment at paddr - LOAD_ADDR; the head and any
    # gaps between segments are ud2.
    file_end = max(paddr + len(data) for paddr, data, _ in segments)
    mem_end = max(paddr + memsz for paddr, _, memsz in segments)
    payload = bytearray(UD2 * ((file_end - LOAD_ADDR + 1) // 2))[:file_end - LOAD_ADDR]
    for paddr, data, _ in segments:
        payload[paddr - LOAD_ADDR:paddr - LOAD_ADDR + len(data)] = data
    # kernel_info (protocol 2.15): "LToP", size, size_total, setup_type_max.
    payload[KERNEL_INFO_AT:KERNEL_INFO_AT + 16] = struct.pack("<4sIII", b"LToP", 16, 16, 0)
    payload += bytes(-len(payload) % 16)
    syssize = len(payload) // 16
    init_size = -(-max(mem_end - LOAD_ADDR, len(payload)) // PAGE) * PAGE

    setup_sects = -(-HEADER_END // SECTOR) - 1  # sectors after the boot sector
    setup = bytearray((setup_sects + 1) * SECTOR)
    version = f"pyvisor tiny kernel {name}".encode() + b"\0"
    if VERSION_STRING_AT + len(version) > len(setup):
        fail("kernel name too long for the setup sectors")
    setup[VERSION_STRING_AT:VERSION_STRING_AT + len(version)] = version

    def put(offset, fmt, value):
        struct.pack_into("<" + fmt, setup, offset, value)

    put(0x1F1, "B", setup_sects)
    put(0x1F4, "I", syssize)
    put(0x1FA, "H", 0xFFFF)                   # vid_mode: "normal"
    put(0x1FE, "H", 0xAA55)                   # boot_flag
    put(0x200, "B", 0xEB)                     # jump: jmp short past the header
    put(0x201, "B", HEADER_END - 0x202)
    put(0x202, "4s", b"HdrS")
    put(0x206, "H", PROTOCOL)
    put(0x20C, "H", 0x1000)                   # start_sys_seg (obsolete)
    put(0x20E, "H", VERSION_STRING_AT - 0x200)  # kernel_version
    put(0x211, "B", LOADED_HIGH)              # loadflags
    put(0x212, "H", 0x8000)                   # setup_move_size (obsolete)
    put(0x214, "I", LOAD_ADDR)                # code32_start
    put(0x22C, "I", INITRD_ADDR_MAX)
    put(0x230, "I", KERNEL_ALIGNMENT)
    put(0x234, "B", 0)                        # relocatable_kernel
    put(0x235, "B", MIN_ALIGNMENT_LG2)
    put(0x236, "H", XLF_KERNEL_64)            # xloadflags
    put(0x238, "I", CMDLINE_SIZE)
    put(0x258, "Q", LOAD_ADDR)                # pref_address
    put(0x260, "I", init_size)
    put(0x268, "I", KERNEL_INFO_AT)           # kernel_info_offset
    return bytes(setup) + bytes(payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elf")
    parser.add_argument("out")
    parser.add_argument("--name", help="for the kernel_version string (default: from OUT)")
    args = parser.parse_args()
    name = args.name or args.out.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        with open(args.elf, "rb") as f:
            elf = f.read()
    except OSError as e:
        fail(f"{args.elf}: {e.strerror}")
    image = build(elf, name)
    with open(args.out + ".tmp", "wb") as f:
        f.write(image)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
