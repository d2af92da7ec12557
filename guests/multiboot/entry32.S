/* A Multiboot header and the 32-bit entry the boot loader jumps to, shared by the
 * Multiboot test kernels (guests/Makefile builds it once per header):
 *   -DHEADER_mb1       Multiboot 1, loaded by its ELF program headers (flags 0x3)
 *   -DHEADER_mb1_aout  Multiboot 1 with the a.out kludge address fields (flag 16)
 *   -DHEADER_mb2       Multiboot 2 with an information request and module alignment
 * The entry keeps what the loader handed over (EAX, EBX, CR0, EFLAGS, CS) in .data,
 * identity-maps the first 4 GiB with 2 MiB pages, enters long mode and goes on to the
 * runtime's 64-bit _start with RSI = 0 (no Linux zero page); kmain reads mb_*.
 * The page tables live in .data, not .bss: _start clears the BSS while running on them. */

#define MB1_MAGIC   0x1BADB002
#define MB2_MAGIC   0xE85250D6

    .section .text.boot, "ax"
    .code32
    .p2align 3
mb_header:
#if defined(HEADER_mb1)
    .long   MB1_MAGIC, 0x3, -(MB1_MAGIC + 0x3)
#elif defined(HEADER_mb1_aout)
    .long   MB1_MAGIC, 0x10003, -(MB1_MAGIC + 0x10003)
    .long   mb_header                   /* header_addr */
    .long   _kernel_start               /* load_addr */
    .long   0                           /* load_end_addr: the whole file */
    .long   _bss_end                    /* bss_end_addr */
    .long   mb_entry32                  /* entry_addr */
#elif defined(HEADER_mb2)
    .long   MB2_MAGIC, 0, mb2_end - mb_header, 0x100000000 - MB2_MAGIC - (mb2_end - mb_header)
    .p2align 3
    .short  1, 0                        /* information request (required) */
    .long   8 + 4 * 6
    .long   1, 3, 4, 6, 14, 15          /* cmdline, modules, meminfo, mmap, ACPI old/new */
    .p2align 3
    .short  6, 0                        /* module alignment */
    .long   8
    .p2align 3
    .short  0, 0                        /* end */
    .long   8
mb2_end:
#else
#error "define HEADER_mb1, HEADER_mb1_aout or HEADER_mb2"
#endif

    .globl  mb_entry32
mb_entry32:
    mov     %eax, mb_magic
    mov     %ebx, mb_info
    mov     %cr0, %eax
    mov     %eax, mb_cr0
    mov     %cs, %ax
    mov     %ax, mb_cs
    pushf                               /* the loader's ESP is not ours to trust for long, */
    pop     %eax                        /* but one word on it is what any kernel assumes */
    mov     %eax, mb_eflags

    /* PML4[0] -> PDPT, PDPT[0..3] -> 4 page directories of 2 MiB pages: 0-4 GiB. */
    movl    $mb_pdpt + 3, mb_pml4
    mov     $mb_pd + 3, %eax
    xor     %ecx, %ecx
1:  mov     %eax, mb_pdpt(,%ecx,8)
    add     $4096, %eax
    inc     %ecx
    cmp     $4, %ecx
    jne     1b
    xor     %ecx, %ecx
2:  mov     %ecx, %eax
    shl     $21, %eax
    or      $0x83, %eax                 /* present, writable, 2 MiB */
    mov     %eax, mb_pd(,%ecx,8)
    inc     %ecx
    cmp     $2048, %ecx
    jne     2b

    mov     $mb_pml4, %eax
    mov     %eax, %cr3
    mov     %cr4, %eax
    or      $0x20, %eax                 /* PAE */
    mov     %eax, %cr4
    mov     $0xC0000080, %ecx           /* EFER.LME */
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax           /* PG | PE */
    mov     %eax, %cr0
    lgdt    mb_gdt_ptr
    ljmp    $0x10, $mb_entry64

    .code64
mb_entry64:
    xor     %esi, %esi
    jmp     _start

    .section .rodata
    .p2align 3
mb_gdt:
    .quad   0
    .quad   0x00cf9b000000ffff          /* 0x08: flat 32-bit code */
    .quad   0x00af9b000000ffff          /* 0x10: 64-bit code */
    .quad   0x00cf93000000ffff          /* 0x18: flat data */
mb_gdt_end:
mb_gdt_ptr:
    .word   mb_gdt_end - mb_gdt - 1
    .long   mb_gdt

    .data
    .p2align 2
    .globl  mb_magic, mb_info, mb_cr0, mb_eflags, mb_cs
mb_magic:   .long 0
mb_info:    .long 0
mb_cr0:     .long 0
mb_eflags:  .long 0
mb_cs:      .short 0
    .p2align 12
mb_pml4:    .fill 4096
mb_pdpt:    .fill 4096
mb_pd:      .fill 4 * 4096

    .section .note.GNU-stack, "", @progbits
