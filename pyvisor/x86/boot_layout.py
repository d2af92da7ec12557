"""Where pyvisor puts the boot structures in guest-physical memory.

Everything lives below 1 MiB, in conventional memory the e820 map reports as RAM, so a
kernel loaded at or above KERNEL_MIN_ADDR can never overwrite them before it has read them.

    0x00500  GDT (BOOT_GDT: null, code32, code64, data, 16-byte TSS descriptor)
    0x00600  TSS (64-bit, no I/O bitmap): VMX needs a usable TR in long mode
    0x06000  PVH hvm_start_info, its module list and memory map (pvh.py)
    0x07000  zero page (struct boot_params), RSI at entry
    0x08000  boot stack, growing down from BOOT_STACK_TOP
    0x09000  PML4, 0x0A000 PDPT, 0x0B000.. page directories (2 MiB pages only)
    0x10000  left free for the guest (e.g. AP trampolines, which need a page below 1 MiB)
    0x20000  kernel command line (NUL-terminated)
    0x9FC00  EBDA (reserved in e820), then the legacy video/BIOS areas up to 1 MiB
"""

GDT_ADDR = 0x500
TSS_ADDR = 0x600
TSS_SIZE = 0x68  # a 64-bit TSS without an I/O permission bitmap

START_INFO_ADDR = 0x6000
START_INFO_END = 0x7000

ZERO_PAGE_ADDR = 0x7000
BOOT_STACK_TOP = 0x8FF0

PAGE_TABLES_ADDR = 0x9000
PML4_ADDR = PAGE_TABLES_ADDR
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000
PAGE_TABLES_END = 0x9F000  # page directories must end below this (just under the EBDA)

GUEST_FREE_START = 0x10000
GUEST_FREE_END = 0x20000

CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 4096  # bytes including the terminating NUL

KERNEL_MIN_ADDR = 0x100000
