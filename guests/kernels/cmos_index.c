/* cmos_index: CMOS reads through the index port, for coalesced port writes.
 *
 * Fills NVRAM bytes 0x40-0x7F with a pattern, then `rounds=N` (default 1000) times writes
 * a decoy index, a POST byte (port 0x80), the index it means and reads the data port: the
 * value read must be the pattern byte of the last index written. Prints the counts and
 * exits 0 (i8042 reset) when every read was right, else status 3. With `park=1` it then
 * prints "parking", writes index 0x4A and spins without another port access, so that
 * write is still queued when the VMM pauses it. */
#include "runtime.h"

#define RTC_INDEX 0x70
#define RTC_DATA 0x71
#define NVRAM_FIRST 0x40
#define NVRAM_BYTES 64
#define PARK_INDEX 0x4A

static u8 pattern(u8 index)
{
    return (u8)(index * 37 + 11);
}

/* Its own function, so a test can stop at it and step over the write. */
__attribute__((noinline)) void park_index(void)
{
    outb(RTC_INDEX, PARK_INDEX);
}

void kmain(void)
{
    u64 rounds = cmdline_get_u64("rounds", 1000);
    u64 errors = 0, index_writes = 0;
    for (u8 i = 0; i < NVRAM_BYTES; i++) {
        outb(RTC_INDEX, NVRAM_FIRST + i);
        outb(RTC_DATA, pattern(NVRAM_FIRST + i));
        index_writes++;
    }
    for (u64 r = 0; r < rounds; r++) {
        u8 index = NVRAM_FIRST + (u8)(r * 7 % NVRAM_BYTES);
        outb(RTC_INDEX, NVRAM_FIRST + (u8)((r + 1) % NVRAM_BYTES));
        outb(0x80, (u8)r);
        outb(RTC_INDEX, index);
        index_writes += 2;
        if (inb(RTC_DATA) != pattern(index))
            errors++;
    }
    printf("cmos_index: %lu reads, %lu errors, %lu index writes\n", rounds, errors, index_writes);
    if (cmdline_get_u64("park", 0)) {
        printf("parking\n");
        park_index();
        for (volatile u64 spin = 0;; spin++)
            ;
    }
    vm_exit(errors ? 3 : 0);
}
