/* hpet: finds the HPET through the ACPI tables (RSDP -> XSDT -> "HPET") and checks it
 * against the ACPI PM timer (3.579545 MHz). Prints:
 *   acpi hpet base=0x<base> block_id=0x<id>
 *   caps period_fs=<fs> timers=<n> legacy=<0|1> route_cap=0x<timer 0's INT_ROUTE_CAP>
 *   counter hpet_ticks=<n> pm_inner=<a> pm_outer=<b>   (about 50 ms; PM ticks between the
 *                                 reads just after/before and before/after the counter's)
 *   comparator fired=<irqs> late=<counter at the interrupt - comparator>  (timer 2, pin 2)
 *   legacy periodic irqs=<n> span=<counter ticks between the first and the third>
 *          cmp_step=<how far the comparator moved between them>  (timer 0, IRQ 0, 5 ms)
 *   hpet: done
 * A missing table prints "FAIL: ..." and exits 3. */
#include "runtime.h"

#define PM_TMR 0x608
#define PM_HZ 3579545u
#define CAPS 0x000
#define CONFIG 0x010
#define COUNTER 0x0F0
#define TN_CFG(n) (0x100 + 0x20 * (n))
#define TN_CMP(n) (0x108 + 0x20 * (n))
#define TN_INT_ENB (1u << 2)
#define TN_PERIODIC (1u << 3)
#define TN_SETVAL (1u << 6)
#define VEC_CMP 0x50
#define VEC_LEGACY 0x51

static u64 hpet;
static volatile u32 cmp_hits, legacy_hits;
static volatile u64 cmp_counter, legacy_counter[4], legacy_cmp[4];

static u64 rd(u32 reg) { return *(volatile u64 *)(hpet + reg); }
static void wr(u32 reg, u64 v) { *(volatile u64 *)(hpet + reg) = v; }
static u32 pm(void) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((u16)PM_TMR)); return v & 0xFFFFFF; }

static void pm_wait(u32 ticks)
{
    u32 start = pm();
    while (((pm() - start) & 0xFFFFFF) < ticks)
        ;
}

static void on_cmp(struct trap_frame *f) { (void)f; cmp_counter = rd(COUNTER); cmp_hits++; }
static void on_legacy(struct trap_frame *f)
{
    (void)f;
    if (legacy_hits < 4) {
        legacy_counter[legacy_hits] = rd(COUNTER);
        legacy_cmp[legacy_hits] = rd(TN_CMP(0));
    }
    legacy_hits++;
}

static void wait_for(volatile u32 *hits, u32 n, u32 pm_ticks)
{
    u32 start = pm();
    while (*hits < n && ((pm() - start) & 0xFFFFFF) < pm_ticks)
        cpu_relax();
}

void kmain(void)
{
    const u8 *t = acpi_find_table("HPET");
    if (!t) {
        printf("FAIL: no HPET table\n");
        vm_exit(3);
    }
    hpet = *(const u64 *)(t + 44);
    printf("acpi hpet base=0x%lx block_id=0x%x\n", hpet, *(const u32 *)(t + 36));
    u64 caps = rd(CAPS);
    printf("caps period_fs=%lu timers=%lu legacy=%lu route_cap=0x%lx\n", caps >> 32,
           ((caps >> 8) & 0x1F) + 1, (caps >> 15) & 1, rd(TN_CFG(0)) >> 32);

    /* PM timer reads bracket each counter read, so the counter's interval lies between
     * the inner and the outer PM interval, however long the host keeps us waiting. */
    wr(CONFIG, 1);
    u32 p0 = pm();
    u64 h0 = rd(COUNTER);
    u32 p1 = pm();
    pm_wait(PM_HZ / 20);
    u32 p2 = pm();
    u64 h1 = rd(COUNTER);
    u32 p3 = pm();
    printf("counter hpet_ticks=%lu pm_inner=%u pm_outer=%u\n", h1 - h0, (p2 - p1) & 0xFFFFFF,
           (p3 - p0) & 0xFFFFFF);

    lapic_enable();
    trap_set_handler(VEC_CMP, on_cmp);
    ioapic_route(2, VEC_CMP, lapic_id());
    wr(TN_CFG(2), TN_INT_ENB | (2u << 9));
    u64 target = rd(COUNTER) + 1000000;          /* 10 ms at 100 MHz */
    wr(TN_CMP(2), target);
    sti();
    wait_for(&cmp_hits, 1, PM_HZ);
    cli();
    wr(TN_CFG(2), 0);
    printf("comparator fired=%u late=%ld\n", cmp_hits, (long)(cmp_counter - target));

    trap_set_handler(VEC_LEGACY, on_legacy);
    ioapic_route(0, VEC_LEGACY, lapic_id());
    wr(CONFIG, 3);                               /* ENABLE | LEG_RT */
    wr(TN_CFG(0), TN_INT_ENB | TN_PERIODIC | TN_SETVAL);
    wr(TN_CMP(0), rd(COUNTER) + 500000);          /* first match in 5 ms */
    wr(TN_CMP(0), 500000);                        /* then every 5 ms */
    sti();
    wait_for(&legacy_hits, 3, PM_HZ);
    cli();
    wr(TN_CFG(0), 0);
    wr(CONFIG, 0);
    printf("legacy periodic irqs=%u span=%lu cmp_step=%lu\n", legacy_hits > 3 ? 3 : legacy_hits,
           legacy_counter[2] - legacy_counter[0], legacy_cmp[2] - legacy_cmp[0]);
    printf("hpet: done\n");
    vm_exit(0);
}
