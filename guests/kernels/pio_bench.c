/* pio_bench: `iterations=N` (default 100000) outb's to port 0x80, which no
 * device claims, so each is one full PIO exit round trip to the VMM.  Exits 0
 * via i8042 reset.  Timing is done from outside, see bench/pio_exits.py. */
#include "runtime.h"

void kmain(void)
{
    u64 n = cmdline_get_u64("iterations", 100000);
    printf("pio_bench: %lu iterations\n", n);
    for (u64 i = 0; i < n; i++)
        outb(0x80, 0);
    vm_exit(0);
}
