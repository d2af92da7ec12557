/* snap_target: something to snapshot and restore (tests/kernels/test_snapshot.py,
 * bench/snapshot.py).
 *
 * Command line: pages=N (0..64, default 8) pages dirtied per round, rounds=R (default 20),
 * quiet=1 (no line per round: a reset loop then measures the reset, not the UART), irqchip=1
 * (each round also reads the master PIC's mask register and IOAPIC redirection entry 5 into
 * its checksum, then writes new values there: state the in-kernel chips keep, which a
 * restore must put back), devices=1 (each round with an even counter folds the UART's
 * scratch and line control registers, the i8042 command byte and the CMOS byte at the index
 * the previous such round left into its checksum, then changes them all, the CMOS index
 * too; odd rounds touch no device, so a restore after one finds the devices untouched).
 * Before its first round it writes 1 to port 0x85 (where a script snapshots it). Each
 * round r: counter++, write counter+i*r into the first word of each of N pages, fold
 * everything into a checksum, print "round <counter> sum <checksum>", and write counter to
 * port 0x84 (where a reset loop restores the snapshot). After R rounds: "done <counter>
 * <checksum>" and exit status 3 (isa-debug-exit). The printing goes through COM1, so a
 * restore that lost any UART, memory or register state shows up in the text. */
#include "runtime.h"

#define READY_PORT 0x85
#define ROUND_PORT 0x84
#define MAX_PAGES 64

volatile u64 counter;
static volatile u64 area[MAX_PAGES][512] __attribute__((aligned(4096)));

static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

#define PIC_MASTER_DATA 0x21
#define IOAPIC_REGSEL ((volatile u32 *)0xFEC00000)
#define IOAPIC_WINDOW ((volatile u32 *)0xFEC00010)
#define IOAPIC_REDIR5_LOW (0x10 + 2 * 5)
#define IOAPIC_MASKED (1u << 16)

#define COM1_LCR 0x3FB
#define COM1_SCR 0x3FF
#define I8042_DATA 0x60
#define I8042_COMMAND 0x64
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define CMOS_NVRAM 0x40     /* 0x40..0x47: battery-backed bytes nobody else uses */

/* Fold the devices' registers into sum and change them (devices=1, even rounds). */
static u64 touch_devices(u64 sum, u64 counter)
{
    sum = sum * 31 + inb(COM1_SCR);
    sum = sum * 31 + inb(COM1_LCR);
    outb(I8042_COMMAND, 0x20);                  /* read the command byte */
    sum = sum * 31 + inb(I8042_DATA);
    sum = sum * 31 + inb(CMOS_DATA);            /* at the index the last round left */
    outb(COM1_SCR, (u8)(counter * 7));
    outb(COM1_LCR, 0x03 | (u8)((counter & 6) << 2));   /* parity bits; DLAB stays off */
    outb(I8042_COMMAND, 0x60);                  /* write the command byte: KBDINT, SYS, */
    outb(I8042_DATA, 0x45 | (u8)((counter & 6) << 2)); /* XLATE kept */
    outb(CMOS_INDEX, CMOS_NVRAM + (counter & 7));
    outb(CMOS_DATA, (u8)(counter * 13));
    outb(CMOS_INDEX, CMOS_NVRAM + ((counter + 3) & 7));
    return sum;
}

/* Fold the chips' registers into sum and change them (irqchip=1). */
static u64 touch_irqchips(u64 sum, u64 counter)
{
    sum = sum * 31 + inb(PIC_MASTER_DATA);
    outb(PIC_MASTER_DATA, (u8)(counter * 37) | 0x01);
    *IOAPIC_REGSEL = IOAPIC_REDIR5_LOW;
    sum = sum * 31 + *IOAPIC_WINDOW;
    *IOAPIC_WINDOW = IOAPIC_MASKED | (u32)(0x40 + (counter & 0x3F));
    return sum;
}

void kmain(void)
{
    u64 pages = cmdline_get_u64("pages", 8);
    u64 rounds = cmdline_get_u64("rounds", 20);
    u64 quiet = cmdline_get_u64("quiet", 0);
    u64 irqchip = cmdline_get_u64("irqchip", 0);
    u64 devices = cmdline_get_u64("devices", 0);
    if (pages > MAX_PAGES)
        pages = MAX_PAGES;
    printf("snap target: %lu pages, %lu rounds\n", pages, rounds);
    if (devices)
        outb(CMOS_INDEX, CMOS_NVRAM);   /* the first round reads a byte, not the clock */
    outb(READY_PORT, 1);
    u64 sum = 0;
    for (u64 r = 1; r <= rounds; r++) {
        counter++;
        for (u64 i = 0; i < pages; i++) {
            area[i][0] = counter + i * r;
            sum = sum * 31 + area[i][0];
        }
        if (irqchip)
            sum = touch_irqchips(sum, counter);
        if (devices && !(counter & 1))
            sum = touch_devices(sum, counter);
        if (!quiet)
            printf("round %lu sum %lx\n", counter, sum);
        outl(ROUND_PORT, (u32)counter);
    }
    printf("done %lu %lx\n", counter, sum);
    vm_exit(3);
}
