/* s3: suspends to RAM through ACPI and checks how it comes back. It copies a real-mode
 * wake stub to WAKE_ADDR, writes that into the FACS firmware waking vector, reads SLP_TYP
 * from the DSDT's \_S3, arms the RTC alarm 2 s ahead (unless the command line says
 * wake=button; novector=1 leaves the vector 0) and writes SLP_TYP | SLP_EN to PM1a_CNT.
 * Prints:
 *   s3 slp_typ=<n> facs=0x<addr> vector=0x<vector> wake=<rtc|button>
 *   s3: suspending
 * and after the wake, from the stub (real mode, on COM1):
 *   s3: resumed in real mode at the waking vector      (CS = vector >> 4, CR0.PE = 0)
 *   s3: resumed in a wrong state                       (otherwise)
 * then halts with interrupts off. If the machine does not sleep, "FAIL: ..." and exit 3. */
#include "runtime.h"

#define WAKE_ADDR 0x18000
#define PM1A_CNT 0x604
#define SLP_EN (1u << 13)

extern const u8 wake_start[], wake_end[];

__asm__(
    ".section .rodata\n"
    ".code16\n"
    "wake_start:\n"
    "    cli\n"
    "    mov %cs, %ax\n"
    "    mov %ax, %ds\n"
    "    mov $(bad - wake_start), %si\n"
    "    cmp $0x1800, %ax\n"            /* WAKE_ADDR >> 4 */
    "    jne 1f\n"
    "    smsw %ax\n"
    "    test $1, %ax\n"
    "    jnz 1f\n"
    "    mov $(good - wake_start), %si\n"
    "1:  mov $0x3FD, %dx\n"             /* COM1 LSR */
    "2:  in %dx, %al\n"
    "    test $0x20, %al\n"
    "    jz 2b\n"
    "    lodsb\n"
    "    test %al, %al\n"
    "    jz 3f\n"
    "    mov $0x3F8, %dx\n"
    "    out %al, %dx\n"
    "    jmp 1b\n"
    "3:  hlt\n"
    "    jmp 3b\n"
    "good: .asciz \"s3: resumed in real mode at the waking vector\\r\\n\"\n"
    "bad:  .asciz \"s3: resumed in a wrong state\\r\\n\"\n"
    "wake_end:\n"
    ".code64\n"
    ".text\n");

/* The first value of Name(_S3, Package(){...}): ZeroOp, OneOp or BytePrefix n. */
static int s3_slp_typ(const u8 *dsdt)
{
    u32 len = *(const u32 *)(dsdt + 4);
    for (u32 i = 36; i + 8 < len; i++) {
        if (dsdt[i] != 0x08 || strncmp((const char *)dsdt + i + 1, "_S3_", 4) || dsdt[i + 5] != 0x12)
            continue;
        const u8 *v = dsdt + i + 8;             /* PackageOp, PkgLength, NumElements */
        return v[0] == 0x0A ? v[1] : v[0] == 0x01 ? 1 : v[0] == 0x00 ? 0 : -1;
    }
    return -1;
}

static void outw_pm(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static u8 cmos(u8 reg) { outb(0x70, reg); return inb(0x71); }
static void cmos_set(u8 reg, u8 v) { outb(0x70, reg); outb(0x71, v); }

void kmain(void)
{
    const u8 *fadt = acpi_find_table("FACP");
    if (!fadt) {
        printf("FAIL: no FADT\n");
        vm_exit(3);
    }
    u8 *facs = (u8 *)(u64) * (const u32 *)(fadt + 36);
    const u8 *dsdt = (const u8 *)*(const u64 *)(fadt + 140);
    int slp_typ = s3_slp_typ(dsdt);
    char wake[16];
    if (cmdline_get("wake", wake, sizeof(wake)))
        memcpy(wake, "rtc", 4);
    memcpy((void *)WAKE_ADDR, wake_start, wake_end - wake_start);
    *(volatile u32 *)(facs + 12) = cmdline_get_u64("novector", 0) ? 0 : WAKE_ADDR;
    printf("s3 slp_typ=%d facs=0x%lx vector=0x%x wake=%s\n", slp_typ, (u64)facs,
           *(volatile u32 *)(facs + 12), wake);
    if (slp_typ < 0) {
        printf("FAIL: no \\_S3 in the DSDT\n");
        vm_exit(3);
    }
    if (!strcmp(wake, "rtc")) {
        cmos_set(0x0B, cmos(0x0B) | 0x04);    /* binary mode, so the arithmetic is plain */
        u8 sec = cmos(0x00);
        cmos_set(0x01, (u8)((sec + 2) % 60)); /* seconds alarm */
        cmos_set(0x03, 0xFF);                 /* any minute */
        cmos_set(0x05, 0xFF);                 /* any hour */
        cmos(0x0C);                           /* clear pending flags */
        cmos_set(0x0B, cmos(0x0B) | 0x20);    /* AIE */
    }
    printf("s3: suspending\n");
    outw_pm(PM1A_CNT, (u16)(slp_typ << 10 | SLP_EN));
    u64 t = rdtsc();
    while (rdtsc() - t < 20000000000ull)
        cpu_relax();
    printf("FAIL: still running after SLP_EN\n");
    vm_exit(3);
}
