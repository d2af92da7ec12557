/* snap_access: one access of each kind for a script to snapshot at
 * (tests/kernels/test_snapshot_in_exit.py).
 *
 * Command line: access=out|mmio_write|in|mmio_read|outs|ins (default out), rounds=R
 * (default 3). It makes that access once to the ready port 0x86 or the MMIO word at
 * 0xD0001000 (a string access moves 4 bytes, "abcd" out or 4 in), folding what a read
 * returns into `got`; then each round r: counter++ and write counter | got << 8 to port
 * 0x84. After R rounds it exits with status 3 (isa-debug-exit). A script that snapshots
 * at the access and restores at a round sees from the rounds whether the restored run
 * made the access again and what it read. */
#include "runtime.h"

#define READY_PORT 0x86
#define READY_MMIO 0xD0001000ull
#define ROUND_PORT 0x84

volatile u64 counter;
static volatile u8 buf[4];

static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static u32 ready_access(const char *mode)
{
    if (!strcmp(mode, "mmio_write")) {
        mmio_write32(READY_MMIO, 1);
    } else if (!strcmp(mode, "in")) {
        return inb(READY_PORT);
    } else if (!strcmp(mode, "mmio_read")) {
        return mmio_read32(READY_MMIO) & 0xFF;
    } else if (!strcmp(mode, "outs")) {
        const char *s = "abcd";
        u64 n = 4;
        __asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"(READY_PORT) : "memory");
    } else if (!strcmp(mode, "ins")) {
        volatile u8 *d = buf;
        u64 n = 4;
        __asm__ volatile("rep insb" : "+D"(d), "+c"(n) : "d"(READY_PORT) : "memory");
        return (buf[0] + buf[1] + buf[2] + buf[3]) & 0xFF;
    } else {
        outb(READY_PORT, 1);
    }
    return 0;
}

void kmain(void)
{
    char mode[16];
    if (cmdline_get("access", mode, sizeof mode) < 0)
        mode[0] = 0;
    u64 rounds = cmdline_get_u64("rounds", 3);
    u32 got = ready_access(mode);
    for (u64 r = 1; r <= rounds; r++) {
        counter++;
        outl(ROUND_PORT, (u32)(counter | got << 8));
    }
    vm_exit(3);
}
