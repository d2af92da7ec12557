/* IDT and the C side of trap handling. */
#include "runtime.h"

struct idt_gate {
    u16 off_lo, selector;
    u8 ist, type_attr;
    u16 off_mid;
    u32 off_hi, zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
static trap_handler_t handlers[256];
struct trap_info trap_last;

extern char trap_stubs[], trap_try_recover[];
extern u64 trap_jmp[7];
extern u32 trap_armed;

static const char *const exc_names[32] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
    "#BR bound range", "#UD invalid opcode", "#NM device not available",
    "#DF double fault", "coprocessor overrun", "#TS invalid TSS", "#NP segment not present",
    "#SS stack fault", "#GP general protection", "#PF page fault", "reserved 15",
    "#MF x87 error", "#AC alignment check", "#MC machine check", "#XM SIMD error",
    "#VE virtualization", "#CP control protection", "reserved 22", "reserved 23",
    "reserved 24", "reserved 25", "reserved 26", "reserved 27",
    "#HV hypervisor injection", "#VC VMM communication", "#SX security", "reserved 31",
};

const char *exception_name(int vector)
{
    return (vector >= 0 && vector < 32) ? exc_names[vector] : "interrupt";
}

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        u64 a = (u64)(trap_stubs + 16 * v);
        idt[v] = (struct idt_gate){
            .off_lo = a & 0xFFFF, .selector = 0x10, .ist = 0,
            .type_attr = 0x8E, /* present, DPL 0, 64-bit interrupt gate (clears IF) */
            .off_mid = (a >> 16) & 0xFFFF, .off_hi = a >> 32,
        };
    }
    struct { u16 limit; u64 base; } __attribute__((packed)) p = { sizeof(idt) - 1, (u64)idt };
    __asm__ volatile("lidt %0" : : "m"(p));
}

void trap_set_handler(int vector, trap_handler_t h)
{
    handlers[vector & 0xFF] = h;
}

/* An exception nobody expected: say everything useful in one place, then leave. */
static void fatal_exception(struct trap_frame *f)
{
    printf("EXCEPTION %s (vector %lu) error=0x%lx rip=0x%lx rsp=0x%lx",
           exception_name((int)f->vector), f->vector, f->error, f->rip, f->rsp);
    if (f->vector == 14)
        printf(" cr2=0x%lx", read_cr2());
    printf("\n");
    printf("  rax=%016lx rbx=%016lx rcx=%016lx rdx=%016lx\n", f->rax, f->rbx, f->rcx, f->rdx);
    printf("  rsi=%016lx rdi=%016lx rbp=%016lx rflags=%lx\n", f->rsi, f->rdi, f->rbp, f->rflags);
    vm_exit(STATUS_EXCEPTION);
}

void trap_dispatch(struct trap_frame *f)
{
    int v = (int)f->vector;
    if (handlers[v]) {
        handlers[v](f);
    } else if (v < 32 && trap_armed) {
        /* trap_try() is waiting: record the fault and unwind to it. */
        trap_armed = 0;
        trap_last = (struct trap_info){ v, f->error, f->rip, v == 14 ? read_cr2() : 0 };
        f->rip = (u64)trap_try_recover;
        f->rsp = trap_jmp[6];
    } else if (v < 32) {
        fatal_exception(f);
    } else if (v != VEC_SPURIOUS) {
        printf("unexpected interrupt vector 0x%x\n", v);
    }
    if (v >= 32 && v != VEC_SPURIOUS)
        lapic_eoi();
}
