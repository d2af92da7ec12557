/* flood: prints forever, as fast as it can, through every console path: the UART
 * (served by the native fast path), the 0xE9 debug console (Python) and, with
 * thre=1 on the command line, the UART with its THRE interrupt enabled (Python).
 * For the tests that stall or break the output: pyvisor must still stop on time. */
#include "runtime.h"

void kmain(void)
{
    int thre = cmdline_get_u64("thre", 0) != 0;
    if (thre)
        outb(COM1 + 1, 0x02);   /* IER: THRE interrupt on (the 8259s stay masked) */
    for (u64 line = 0;; line++) {
        printf("flood line %lu: the quick brown fox jumps over the lazy dog\n", line);
        debugcon_puts("0xE9 flood line\n");
    }
}
