/* Entered in long mode with paging on and interrupts off; the stack is ours. */
    .section .text.boot, "ax"
    .globl _start
_start:
    lea     stack_top(%rip), %rsp
    call    kmain
1:  hlt
    jmp     1b

    .bss
    .p2align 4
    .space  8192
stack_top:
