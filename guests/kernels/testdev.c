/* testdev: QEMU's pc-testdev (pyvisor --testdev), as kvm-unit-tests use it. Prints:
 *   scratch=0x<32-bit read> byte1=0x<byte at 0xE9> after_byte=0x<..> after_word=0x<..>
 *   flush before=0x<word> after=0x<word>      (a page written, flushed, read again)
 *   irq line=<n> raised=<hits> lowered=<hits> again=<hits>   (lines 10 and 17, edge)
 *   iomem quad=0x<8-byte read> last=0x<the window's last byte> tail=0x<4 bytes at its end>
 *   testdev: done
 * Then exits with status 0. */
#include "runtime.h"

#define SCRATCH  0xE0
#define FLUSH    0xE4
#define BYTES    0xE8
#define IRQ_BASE 0x2000
#define IOMEM    0xFF000000ull

static inline void out32(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 in32(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void out16(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }

static volatile u32 hits[24];
static u8 page[4096] __attribute__((aligned(4096)));

static void on_irq(struct trap_frame *f)
{
    hits[f->vector - VEC_IRQ(0)]++;
}

static void settle(void)
{
    for (int i = 0; i < 100; i++)
        cpu_relax();
}

static void irq_line(int n)
{
    trap_set_handler(VEC_IRQ(n), on_irq);
    ioapic_route(n, VEC_IRQ(n), lapic_id());
    sti();
    outb(IRQ_BASE + n, 1);
    settle();
    u32 raised = hits[n];
    outb(IRQ_BASE + n, 0);
    settle();
    u32 lowered = hits[n];
    outb(IRQ_BASE + n, 1);
    settle();
    u32 again = hits[n];
    outb(IRQ_BASE + n, 0);
    cli();
    ioapic_mask(n, 1);
    printf("irq line=%d raised=%u lowered=%u again=%u\n", n, raised, lowered, again);
}

void kmain(void)
{
    out32(SCRATCH, 0x12345678);
    u32 scratch = in32(SCRATCH);
    u8 byte1 = inb(BYTES + 1);
    outb(BYTES + 2, 0xAB);
    u32 after_byte = in32(SCRATCH);
    out16(SCRATCH + 2, 0xBEEF);
    u32 after_word = in32(SCRATCH);
    printf("scratch=0x%x byte1=0x%x after_byte=0x%x after_word=0x%x\n", scratch, byte1,
           after_byte, after_word);

    *(volatile u32 *)page = 0xC0FFEE11;
    u32 before = *(volatile u32 *)page;
    out32(FLUSH, (u32)(u64)page);
    *(volatile u32 *)(page + 4) = 0x22;
    printf("flush before=0x%x after=0x%x\n", before, *(volatile u32 *)page);

    lapic_enable();
    irq_line(10);
    irq_line(17);

    *(volatile u64 *)(IOMEM + 0x100) = 0x1122334455667788ull;
    *(volatile u8 *)(IOMEM + 0xFFFF) = 0xAA;
    printf("iomem quad=0x%lx last=0x%x tail=0x%x\n", *(volatile u64 *)(IOMEM + 0x100),
           *(volatile u8 *)(IOMEM + 0xFFFF), *(volatile u32 *)(IOMEM + 0xFFFC));
    printf("testdev: done\n");
    vm_exit(0);
}
