/* boot_timer: the start-up benchmark's guest (bench/startup.py). Its first instruction
 * writes the boot timer's port 0x99 (`pyvisor run --boot-timer` timestamps it), so the
 * VMM can tell when the guest first ran; then it resets through the i8042 (exit 0).
 * No runtime: nothing runs before the mark. */
    .section .text.boot, "ax"
    .code64
    .globl _start
_start:
    outb    %al, $0x99
    mov     $0xfe, %al
    outb    %al, $0x64
1:  hlt
    jmp     1b

    .section .note.GNU-stack, "", @progbits
