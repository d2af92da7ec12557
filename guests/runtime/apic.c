/* 8259 PIC, local APIC (xAPIC MMIO) and IOAPIC helpers. */
#include "runtime.h"

enum {
    LAPIC_ID = 0x20, LAPIC_EOI = 0xB0, LAPIC_SVR = 0xF0, LAPIC_ICR_LO = 0x300,
    LAPIC_ICR_HI = 0x310, LAPIC_LVT_TIMER = 0x320, LAPIC_LVT_LINT0 = 0x350,
    LAPIC_LVT_LINT1 = 0x360, LAPIC_LVT_ERROR = 0x370, LAPIC_TIMER_INIT = 0x380,
    LAPIC_TIMER_DIV = 0x3E0,
};
#define LVT_MASKED    (1u << 16)
#define LVT_PERIODIC  (1u << 17)
#define MSR_APIC_BASE 0x1B

static u32 lapic_read(u32 reg) { return mmio_read32(LAPIC_BASE + reg); }
static void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC_BASE + reg, v); }

void pic_disable(void)
{
    /* Remap first so a stray 8259 interrupt can never look like an exception,
     * then mask every line: interrupts come through the IOAPIC. */
    static const u8 seq[][2] = {
        { 0x20, 0x11 }, { 0xA0, 0x11 },                       /* ICW1: init, ICW4 follows */
        { 0x21, VEC_PIC_BASE }, { 0xA1, VEC_PIC_BASE + 8 },   /* ICW2: vector bases */
        { 0x21, 0x04 }, { 0xA1, 0x02 },                       /* ICW3: cascade on IRQ2 */
        { 0x21, 0x01 }, { 0xA1, 0x01 },                       /* ICW4: 8086 mode */
        { 0x21, 0xFF }, { 0xA1, 0xFF },                       /* OCW1: mask all */
    };
    for (unsigned i = 0; i < ARRAY_SIZE(seq); i++)
        outb(seq[i][0], seq[i][1]);
}

void lapic_enable(void)
{
    static int done;   /* idempotent: re-running would mask a running timer */
    if (done)
        return;
    done = 1;
    /* A VMM that zeroed sregs.apic_base would have disabled the LAPIC: re-enable. */
    u64 base = rdmsr(MSR_APIC_BASE);
    if (!(base & (1u << 11)))
        wrmsr(MSR_APIC_BASE, base | (1u << 11));
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);  /* software enable */
    lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);      /* no ExtINT from the 8259 */
    lapic_write(LAPIC_LVT_LINT1, LVT_MASKED);
    lapic_write(LAPIC_LVT_ERROR, LVT_MASKED);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
    lapic_write(LAPIC_TIMER_DIV, 0x3);             /* divide by 16 */
}

u32 lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
u32 lapic_timer_current(void) { return lapic_read(0x390); }

void lapic_timer_oneshot(u32 count)
{
    lapic_write(LAPIC_LVT_TIMER, VEC_TIMER);
    lapic_write(LAPIC_TIMER_INIT, count);
}

void lapic_timer_periodic(u32 count)
{
    lapic_write(LAPIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
    lapic_write(LAPIC_TIMER_INIT, count);
}

void lapic_timer_stop(void)
{
    lapic_write(LAPIC_TIMER_INIT, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
}

u32 lapic_timer_ms(u32 ms)
{
    u64 c = (u64)ms * lapic_ticks_per_ms;
    return c > 0xFFFFFFFFu ? 0xFFFFFFFFu : (c ? (u32)c : 1);
}

void lapic_send_ipi(u32 dest, u32 icr_low)
{
    lapic_write(LAPIC_ICR_HI, dest << 24);
    lapic_write(LAPIC_ICR_LO, icr_low);           /* this write sends it */
    for (int i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & (1u << 12)); i++)
        cpu_relax();                              /* delivery status: pending */
}

static u32 ioapic_read(u32 reg)
{
    mmio_write32(IOAPIC_BASE, reg);               /* IOREGSEL */
    return mmio_read32(IOAPIC_BASE + 0x10);       /* IOWIN */
}

static void ioapic_write(u32 reg, u32 v)
{
    mmio_write32(IOAPIC_BASE, reg);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

int ioapic_max_pin(void) { return (ioapic_read(1) >> 16) & 0xFF; }

void ioapic_route(int pin, int vector, u32 dest_apic_id)
{
    /* ISA IRQs are edge-triggered, active high; fixed delivery, physical dest. */
    ioapic_write(0x11 + 2 * pin, dest_apic_id << 24);
    ioapic_write(0x10 + 2 * pin, (u32)vector);
}

void ioapic_mask(int pin, int masked)
{
    u32 lo = ioapic_read(0x10 + 2 * pin);
    ioapic_write(0x10 + 2 * pin, masked ? lo | LVT_MASKED : lo & ~LVT_MASKED);
}
