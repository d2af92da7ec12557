/* Real-mode AP trampoline, copied to 0x10000 by smp_start_aps().  A SIPI with
 * vector 0x10 starts each AP at CS=0x1000, IP=0.  The AP only checks in (so the
 * BSP can count it) and halts: the test kernels need no second CPU to work. */
    .section .rodata
    .globl ap_tramp_start, ap_tramp_end, ap_tramp_count_off
    .code16
ap_tramp_start:
    cli
    mov     %cs, %ax
    mov     %ax, %ds
    lock incw (ap_tramp_count - ap_tramp_start)
1:  hlt
    jmp     1b
    .p2align 2
ap_tramp_count:
    .word   0
ap_tramp_end:
    .code64
    .p2align 2
ap_tramp_count_off:
    .long   ap_tramp_count - ap_tramp_start

    .section .note.GNU-stack, "", @progbits
