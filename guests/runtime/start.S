/* 64-bit entry, trap stubs and trap_try.  The VMM enters here in long mode with
 * paging on, interrupts off and RSI = the boot_params zero page. */

#define STACK_SIZE 16384

    .section .text.boot, "ax"
    .code64
    .globl _start
_start:
    cli
    mov     %rsi, %r12                  /* keep boot_params across the BSS clear */
    /* Clear BSS first: the stack lives there.  rep stosq is one emulated insn. */
    lea     _bss_start(%rip), %rdi
    lea     _bss_end(%rip), %rcx
    sub     %rdi, %rcx
    shr     $3, %rcx
    xor     %eax, %eax
    cld
    rep stosq
    lea     boot_stack_top(%rip), %rsp
    /* Our own GDT with the same selectors as the VMM's: iretq reloads CS/SS from
     * memory, so do not depend on where (or whether) the VMM wrote its GDT. */
    lgdt    gdt_ptr(%rip)
    mov     $0x18, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    pushq   $0x10
    lea     1f(%rip), %rax
    pushq   %rax
    lretq
1:  mov     %r12, %rdi
    call    runtime_init
    call    kmain
    xor     %edi, %edi
    call    vm_exit
2:  hlt
    jmp     2b

/* ---- trap stubs: one 16-byte stub per vector, so stub(v) = trap_stubs + 16*v ---- */
    .text
    .globl trap_stubs
    .p2align 4
trap_stubs:
    .set    vec, 0
    .rept   256
    .p2align 4
    /* The CPU pushes an error code only for these; push a zero for the rest. */
    .if !(vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30)
    pushq   $0
    .endif
    pushq   $vec
    jmp     trap_common
    .set    vec, vec + 1
    .endr

trap_common:
    pushq   %rax
    pushq   %rbx
    pushq   %rcx
    pushq   %rdx
    pushq   %rsi
    pushq   %rdi
    pushq   %rbp
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    mov     %rsp, %rdi                  /* struct trap_frame * ; rsp is 16-aligned here */
    cld
    call    trap_dispatch
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rbp
    popq    %rdi
    popq    %rsi
    popq    %rdx
    popq    %rcx
    popq    %rbx
    popq    %rax
    add     $16, %rsp                   /* vector, error */
    iretq

/* int trap_try(void (*fn)(void *), void *arg): setjmp-like.  trap_dispatch sends a
 * caught fault to trap_try_recover with RSP = trap_jmp.rsp. */
    .globl trap_try, trap_try_recover
trap_try:
    mov     %rbx, trap_jmp+0(%rip)
    mov     %rbp, trap_jmp+8(%rip)
    mov     %r12, trap_jmp+16(%rip)
    mov     %r13, trap_jmp+24(%rip)
    mov     %r14, trap_jmp+32(%rip)
    mov     %r15, trap_jmp+40(%rip)
    mov     %rsp, trap_jmp+48(%rip)     /* points at our return address */
    movl    $1, trap_armed(%rip)
    mov     %rdi, %rax
    mov     %rsi, %rdi
    sub     $8, %rsp                    /* keep the ABI's 16-byte alignment for fn */
    call    *%rax
    add     $8, %rsp
    movl    $0, trap_armed(%rip)
    mov     $-1, %eax
    ret
trap_try_recover:
    mov     trap_jmp+0(%rip), %rbx
    mov     trap_jmp+8(%rip), %rbp
    mov     trap_jmp+16(%rip), %r12
    mov     trap_jmp+24(%rip), %r13
    mov     trap_jmp+32(%rip), %r14
    mov     trap_jmp+40(%rip), %r15
    movl    trap_last(%rip), %eax       /* trap_last.vector */
    ret

    .section .rodata
    .p2align 4
gdt:
    .quad   0                           /* null */
    .quad   0x00cf9b000000ffff          /* 0x08: flat 32-bit code */
    .quad   0x00af9b000000ffff          /* 0x10: 64-bit code */
    .quad   0x00cf93000000ffff          /* 0x18: flat data */
gdt_end:
gdt_ptr:
    .word   gdt_end - gdt - 1
    .quad   gdt

    .bss
    .p2align 4
    .globl trap_jmp, trap_armed
trap_jmp:   .skip 56
trap_armed: .skip 8
    .p2align 12
boot_stack: .skip STACK_SIZE
    .globl boot_stack_top
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
