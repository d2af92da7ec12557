/* pio_bench: `iterations=N` (default 100000) outb's to `port=P` (default 0x80, which
 * no device claims), each one PIO exit round trip to the VMM. `value=V` is the byte
 * written (default 0). With `mmio=A` the writes are 32-bit stores to guest-physical A
 * instead (inside the identity map, outside RAM), each an MMIO exit. Exits 0 via i8042
 * reset.  Timing is done from outside, see bench/pio_exits.py. */
#include "runtime.h"

void kmain(void)
{
    u64 n = cmdline_get_u64("iterations", 100000);
    u16 port = (u16)cmdline_get_u64("port", 0x80);
    u8 value = (u8)cmdline_get_u64("value", 0);
    u64 mmio = cmdline_get_u64("mmio", 0);
    if (mmio) {
        printf("pio_bench: %lu iterations to MMIO 0x%x\n", n, (u32)mmio);
        for (u64 i = 0; i < n; i++)
            *(volatile u32 *)mmio = value;
    } else {
        printf("pio_bench: %lu iterations to port %#x\n", n, port);
        for (u64 i = 0; i < n; i++)
            outb(port, value);
    }
    vm_exit(0);
}
