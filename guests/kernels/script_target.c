/* script_target: something for the scripting API to drive (pause, step, hooks,
 * breakpoints, watchpoints, stats).
 *
 * Command line: loops=N (default 10), aps=1 (wake the APs into a real-mode loop that
 * writes an increasing counter to port 0x82, so every vCPU keeps exiting).
 * Each of the N iterations: counter++, OUT to port 0x80 (POST), target_function(i)
 * (which writes `watched`). Then it asks two devices a script may emulate:
 *   port 0x90: write x, read port 0x91;   MMIO 0xD0000000: write x at +0, read +4
 * and prints "pio answer <v>" and "mmio answer <v>" (all ones when nothing answers),
 * then "done <counter>", and exits with status 1 + 2 * (pio answer == 3 * x) via
 * isa-debug-exit (so 3 when a script answered correctly, 1 otherwise). */
#include "runtime.h"

#define POST_PORT 0x80
#define AP_PORT 0x82
#define DEV_IN 0x90
#define DEV_OUT 0x91
#define DEV_MMIO 0xD0000000ull
#define QUESTION 14

volatile u64 counter;
volatile u64 watched;

__attribute__((noinline)) u64 target_function(u64 x)
{
    watched = x * 2;
    return x + 1;
}

/* The APs' program, copied to 0x10000: count in AX and write it to AP_PORT, with a
 * short delay so they do not flood the host with exits. */
extern const char ap_loop_start[], ap_loop_end[];
__asm__(".section .rodata\n"
        ".globl ap_loop_start, ap_loop_end\n"
        ".code16\n"
        "ap_loop_start:\n"
        "    cli\n"
        "    xorw %ax, %ax\n"
        "1:  incw %ax\n"
        "    outw %ax, $0x82\n"
        "    movw $200, %cx\n"
        "2:  decw %cx\n"
        "    jnz 2b\n"
        "    jmp 1b\n"
        "ap_loop_end:\n"
        ".code64\n"
        ".previous\n");

static void start_aps(void)
{
    time_init();
    memcpy((void *)0x10000ull, ap_loop_start, ap_loop_end - ap_loop_start);
    lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_INIT);
    delay_ms(10);
    lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_STARTUP | (0x10000 >> 12));
}

static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

void kmain(void)
{
    u64 loops = cmdline_get_u64("loops", 10);
    printf("script target\n");
    if (cmdline_get_u64("aps", 0))
        start_aps();
    u64 sum = 0;
    for (u64 i = 0; i < loops; i++) {
        counter++;
        outb(POST_PORT, (u8)i);
        sum += target_function(i);
    }
    outl(DEV_IN, QUESTION);
    u32 pio = inl(DEV_OUT);
    mmio_write32(DEV_MMIO, QUESTION);
    u32 mmio = mmio_read32(DEV_MMIO + 4);
    printf("pio answer %u\n", pio);
    printf("mmio answer %u\n", mmio);
    printf("done %lu sum %lu\n", counter, sum);
    vm_exit(pio == 3 * QUESTION ? 3 : 1);
}
