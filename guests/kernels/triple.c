/* triple: prints one line, then triple-faults so the VMM sees KVM_EXIT_SHUTDOWN.
 * With an empty IDT (limit 0) the ud2's #UD cannot be delivered -> #GP, which
 * cannot be delivered either -> #DF, and that failing is a triple fault. */
#include "runtime.h"

void kmain(void)
{
    printf("triple: about to triple fault\n");
    struct { u16 limit; u64 base; } __attribute__((packed)) empty = { 0, 0 };
    __asm__ volatile("lidt %0\n\tud2" : : "m"(empty));
    printf("triple: still alive?!\n");   /* not reached */
    vm_exit(STATUS_PANIC);
}
