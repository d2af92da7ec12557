/* Real-time measurement: TSC and LAPIC timer calibrated against the PIT, whose
 * 1.193182 MHz input is the one clock every PC-like VMM models faithfully. */
#include "runtime.h"

#define PIT_HZ 1193182u
u64 tsc_per_ms;
u32 lapic_ticks_per_ms;
static u64 tsc_base;
u32 lapic_timer_current(void);

/* Busy-waits ms (<= 50) on PIT channel 2 in mode 0, gated through port 0x61 (as
 * Linux's pit_calibrate_tsc does).  Returns 0 if the PIT does not seem to tick. */
static int pit_wait_ms(u32 ms)
{
    u32 count = PIT_HZ / 1000 * ms;
    u8 p61 = inb(0x61);
    if (p61 == 0xFF)
        return 0;                                /* nothing at 0x61: no PIT */
    outb(0x61, (p61 & ~0x02) | 0x01);            /* gate on, speaker off */
    outb(0x43, 0xB0);                            /* ch2, lo/hi byte, mode 0 */
    outb(0x42, count & 0xFF);
    outb(0x42, count >> 8);
    u32 polls = 0;
    while (!(inb(0x61) & 0x20))                  /* OUT2 goes high at terminal count */
        if (++polls > 10000000)
            return 0;
    return polls > 0;                            /* instantly high means no counting */
}

void time_init(void)
{
    if (tsc_per_ms)
        return;
    lapic_enable();
    /* IF is off: the one-shot (68 s at most) is stopped long before it fires. */
    lapic_timer_oneshot(0xFFFFFFFFu);
    u64 t0 = rdtsc();
    int ok = pit_wait_ms(10);
    u64 t1 = rdtsc();
    u32 lapic_left = lapic_timer_current();
    lapic_timer_stop();
    if (ok && t1 > t0) {
        tsc_per_ms = (t1 - t0) / 10;
        lapic_ticks_per_ms = (0xFFFFFFFFu - lapic_left) / 10;
    }
    if (!tsc_per_ms || !lapic_ticks_per_ms) {
        /* Fall back to KVM's usual values (1 GHz LAPIC bus / 16) and a 2 GHz TSC. */
        printf("time: PIT calibration failed, using defaults\n");
        tsc_per_ms = 2000000;
        lapic_ticks_per_ms = 62500;
    }
    tsc_base = rdtsc();
}

u64 time_ms(void) { return (rdtsc() - tsc_base) / tsc_per_ms; }

void delay_us(u64 us)
{
    u64 end = rdtsc() + us * tsc_per_ms / 1000;
    while (rdtsc() < end)
        cpu_relax();
}

void delay_ms(u64 ms) { delay_us(ms * 1000); }

/* ---- periodic LAPIC timer tick ---- */
volatile u64 timer_ticks;
static u32 timer_period_ms;

static void timer_tick(struct trap_frame *f)
{
    (void)f;
    timer_ticks++;
}

void timer_start(u32 period_ms)
{
    time_init();
    trap_set_handler(VEC_TIMER, timer_tick);
    timer_period_ms = period_ms;
    lapic_timer_periodic(lapic_timer_ms(period_ms));
}

void timer_stop(void)
{
    lapic_timer_stop();
    timer_period_ms = 0;
}

u32 timer_period(void) { return timer_period_ms; }

void sleep_ms(u64 ms)
{
    if (!timer_period_ms) {              /* nothing would wake a hlt: busy-wait */
        delay_ms(ms);
        return;
    }
    u64 end = time_ms() + ms;
    cli();
    while (time_ms() < end)
        sti_hlt(), cli();
    sti();
}
