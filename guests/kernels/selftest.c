/* selftest: runtime and VMM checks, each printing "PASS <name>" (maybe with a
 * detail in parentheses) or "FAIL <name>: <why>".  Names: page_fault,
 * invalid_opcode, lapic_timer, uart_rx, ram_pattern.  Ends with
 * "selftest: all passed" + vm_exit(0), or "selftest: <N> failed" +
 * vm_exit(STATUS_TEST_FAILED) (= 3).
 * uart_rx prints "selftest: waiting for input" and expects the line "ping"
 * within 5 s (bytes sent earlier are fine: the VMM's UART buffers them). */
#include "runtime.h"

#define UNMAPPED 0x8000000000ull   /* PML4 slot 1: outside the VMM's identity map */
static int failures;

static void pass(const char *name) { printf("PASS %s\n", name); }

static void fail(const char *name, const char *why)
{
    printf("FAIL %s: %s\n", name, why);
    failures++;
}

static void touch_unmapped(void *arg)
{
    (void)arg;
    (void)*(volatile u64 *)UNMAPPED;
}

static void test_page_fault(void)
{
    char why[96];
    int v = trap_try(touch_unmapped, 0);
    if (v != 14)
        snprintf(why, sizeof(why), "expected vector 14, got %d", v);
    else if (trap_last.cr2 != UNMAPPED)
        snprintf(why, sizeof(why), "cr2=0x%lx, expected 0x%llx", trap_last.cr2, UNMAPPED);
    else if (trap_last.error & 1)
        snprintf(why, sizeof(why), "error code 0x%lx says present", trap_last.error);
    else
        return pass("page_fault");
    fail("page_fault", why);
}

static volatile int ud_seen;

static void ud_handler(struct trap_frame *f)
{
    ud_seen++;
    f->rip += 2;                 /* resume after the 2-byte ud2 */
}

static void test_invalid_opcode(void)
{
    trap_set_handler(6, ud_handler);
    __asm__ volatile("ud2" ::: "memory");
    trap_set_handler(6, 0);
    if (ud_seen == 1)
        pass("invalid_opcode");
    else
        fail("invalid_opcode", "handler did not run exactly once");
}

static void test_lapic_timer(void)
{
    u64 before = timer_ticks;
    timer_start(10);
    sleep_ms(100);               /* hlt: only the timer wakes us */
    u64 n = timer_ticks - before;
    if (n)
        printf("PASS lapic_timer (%lu ticks in 100 ms at 10 ms)\n", n);
    else
        fail("lapic_timer", "no timer interrupts in 100 ms");
}

static void test_uart_rx(void)
{
    char line[32];
    printf("selftest: waiting for input\n");
    int n = serial_readline(line, sizeof(line), 0, 5000);
    if (n < 0) {
        fail("uart_rx", uart_rx_ready() ? "input pending in the UART but no RX interrupt"
                                        : "no input within 5 s");
    } else if (strcmp(line, "ping")) {
        char why[64];
        snprintf(why, sizeof(why), "got '%s', expected 'ping'", line);
        fail("uart_rx", why);
    } else if (!uart_rx_irqs) {
        fail("uart_rx", "line arrived without an RX interrupt");
    } else {
        printf("PASS uart_rx (%lu interrupts)\n", uart_rx_irqs);
    }
}

/* Address-dependent, so aliasing (two addresses hitting one cell) is caught. */
static u64 pattern(u64 a) { return (a * 0x9E3779B97F4A7C15ull) ^ 0xA5A5A5A5A5A5A5A5ull; }

/* Calls fn for every 4 KiB page of usable RAM we may clobber: above 1 MiB (boot
 * structures, trampoline) and outside our own image, BSS and stack. */
static u64 for_each_test_page(int (*fn)(u64 a))
{
    u64 lo = (u64)_kernel_start & ~0xFFFull, hi = ((u64)_kernel_end + 0xFFF) & ~0xFFFull, n = 0;
    for (int i = 0; i < e820_count(); i++) {
        const struct e820_entry *e = e820_get(i);
        if (e->type != E820_RAM)
            continue;
        u64 a = (e->addr + 0xFFF) & ~0xFFFull;
        if (a < 0x100000)
            a = 0x100000;
        for (; a + 8 <= e->addr + e->size; a += 4096) {
            if (a >= lo && a < hi)
                continue;
            if (fn(a))
                return ~0ull;
            n++;
        }
    }
    return n;
}

static u64 bad_addr;
static int write_page(u64 a) { *(volatile u64 *)a = pattern(a); return 0; }
static int check_page(u64 a)
{
    if (*(volatile u64 *)a == pattern(a))
        return 0;
    bad_addr = a;
    return 1;
}

static void test_ram_pattern(void)
{
    u64 pages = for_each_test_page(write_page);
    if (for_each_test_page(check_page) == ~0ull) {
        char why[80];
        snprintf(why, sizeof(why), "mismatch at 0x%lx: read 0x%lx", bad_addr, *(volatile u64 *)bad_addr);
        fail("ram_pattern", why);
    } else if (!pages) {
        fail("ram_pattern", "no usable RAM above 1 MiB in the e820 map");
    } else {
        printf("PASS ram_pattern (%lu pages, %lu MiB)\n", pages, pages >> 8);
    }
}

void kmain(void)
{
    printf("selftest: starting\n");
    test_page_fault();
    test_invalid_opcode();
    time_init();
    test_lapic_timer();
    test_uart_rx();             /* the 10 ms tick keeps running for its deadline */
    timer_stop();
    test_ram_pattern();
    if (failures) {
        printf("selftest: %d failed\n", failures);
        vm_exit(STATUS_TEST_FAILED);
    }
    printf("selftest: all passed\n");
    vm_exit(0);
}
