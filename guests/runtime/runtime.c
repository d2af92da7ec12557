/* Runtime start-up, exits and panics. */
#include "runtime.h"

void idt_init(void);

void runtime_init(u64 boot_params_addr)
{
    boot_params = (const u8 *)boot_params_addr;
    uart_init();
    idt_init();
    pic_disable();
}

void vm_exit(int status)
{
    cli();
    if (status == 0) {
        outb(0x64, 0xFE);                 /* i8042 pulse reset line: VMM exits 0 */
    } else {
        if (!(status & 1)) {
            printf("vm_exit: even status %d cannot be expressed via port 0xF4; using %d\n",
                   status, status | 1);
            status |= 1;
        }
        outb(0xF4, (u8)((status - 1) / 2)); /* isa-debug-exit: VMM exits (v<<1)|1 */
    }
    for (;;)                              /* a VMM without these devices: just stop */
        hlt();
}

void panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("PANIC: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    vm_exit(STATUS_PANIC);
}
