"""Architectural bits of the x86 control registers and EFER (Intel SDM vol. 3, 2.5),
in one place for the boot setup, the page walker and fault reports."""

CR0_PE = 1 << 0    # protected mode
CR0_MP = 1 << 1
CR0_ET = 1 << 4
CR0_NE = 1 << 5    # native x87 error reporting
CR0_WP = 1 << 16   # supervisor writes honour read-only pages
CR0_PG = 1 << 31   # paging

CR4_PSE = 1 << 4   # 4 MiB pages in 32-bit paging
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12  # 5-level paging

EFER_SCE = 1 << 0  # syscall/sysret
EFER_LME = 1 << 8  # long mode enable
EFER_LMA = 1 << 10  # long mode active
