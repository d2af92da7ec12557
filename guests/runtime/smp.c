/* CPU count from CPUID and AP wake-up with INIT-SIPI-SIPI. */
#include "runtime.h"

#define TRAMP_ADDR 0x10000   /* free for the guest per the boot contract; 4 KiB aligned */
extern const char ap_tramp_start[], ap_tramp_end[];
extern const u32 ap_tramp_count_off;

int cpu_count(void)
{
    u32 r[4];
    cpuid(0, 0, r);
    u32 max_leaf = r[0];
    if (max_leaf >= 0xB) {
        /* Leaf 0xB subleaf 1 is the core level: EBX = logical CPUs in the package.
         * KVM reports zeros here unless the VMM filled it in. */
        cpuid(0xB, 1, r);
        if ((r[1] & 0xFFFF) && ((r[2] >> 8) & 0xFF) == 2)
            return r[1] & 0xFFFF;
    }
    cpuid(1, 0, r);
    if ((r[3] & (1u << 28)) && ((r[1] >> 16) & 0xFF))   /* HTT: EBX[23:16] valid */
        return (r[1] >> 16) & 0xFF;
    return 1;
}

int smp_start_aps(int expected, u32 timeout_ms)
{
    volatile u16 *count = (volatile u16 *)(u64)(TRAMP_ADDR + ap_tramp_count_off);
    time_init();
    memcpy((void *)(u64)TRAMP_ADDR, ap_tramp_start, ap_tramp_end - ap_tramp_start);
    *count = 0;
    lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_INIT);
    delay_ms(10);
    for (int i = 0; i < 2; i++) {   /* the second SIPI is ignored by started APs */
        lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_STARTUP | (TRAMP_ADDR >> 12));
        delay_us(200);
    }
    u64 end = time_ms() + timeout_ms;
    while (time_ms() < end && !(expected > 0 && *count >= expected))
        cpu_relax();
    return *count;
}
