/* platform: checks the PC platform pyvisor gives a Linux kernel, the way Linux finds it.
 *
 *   initrd: <gpa> <size> sum=<32-bit byte sum>        (zero page ramdisk_image/size)
 *   ACPI: RSDP ok, tables: FACP APIC ...               (every checksum verified)
 *   MADT CPUs: <N>  IOAPIC: <addr>
 *   S5: SLP_TYP=<n>                                    (from the DSDT's \_S5 package)
 *   RTC: YYYY-MM-DD HH:MM:SS                           (CMOS, BCD or binary per reg B)
 *   PCI 00:00.0: <vendor>:<device> class <class>       (configuration mechanism #1)
 * then ends the machine as the command line's off= says:
 *   off=acpi (default): SLP_TYP|SLP_EN to the FADT's PM1a control block
 *   off=reset: the FADT reset register
 * Any check that fails prints "FAIL: ..." and exits with STATUS_TEST_FAILED. */
#include "runtime.h"

#define BP_ACPI_RSDP_ADDR 0x070   /* u64 */
#define BP_RAMDISK_IMAGE  0x218   /* u32 */
#define BP_RAMDISK_SIZE   0x21C   /* u32 */

static int failures;

static void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    failures++;
}

static u8 checksum(const u8 *p, u32 len)
{
    u8 sum = 0;
    for (u32 i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

static u32 rd32(const u8 *p) { return *(const u32 *)p; }
static u64 rd64(const u8 *p) { return *(const u64 *)p; }

static void check_initrd(void)
{
    u32 addr = rd32(boot_params + BP_RAMDISK_IMAGE), size = rd32(boot_params + BP_RAMDISK_SIZE);
    if (!size) {
        printf("initrd: none\n");
        return;
    }
    u32 sum = 0;
    for (u32 i = 0; i < size; i++)
        sum += ((const u8 *)(u64)addr)[i];
    printf("initrd: 0x%x %u sum=%u\n", addr, size, sum);
}

static const u8 *fadt, *madt, *dsdt;

static void walk_acpi(void)
{
    const u8 *rsdp = (const u8 *)rd64(boot_params + BP_ACPI_RSDP_ADDR);
    if (!rsdp || strncmp((const char *)rsdp, "RSD PTR ", 8)) {
        fail("no RSDP at acpi_rsdp_addr");
        return;
    }
    if (checksum(rsdp, 20) || checksum(rsdp, rd32(rsdp + 20)))
        fail("RSDP checksum");
    const u8 *xsdt = (const u8 *)rd64(rsdp + 24);
    if (strncmp((const char *)xsdt, "XSDT", 4) || checksum(xsdt, rd32(xsdt + 4)))
        fail("XSDT signature or checksum");
    printf("ACPI: RSDP ok, tables:");
    for (u32 off = 36; off < rd32(xsdt + 4); off += 8) {
        const u8 *t = (const u8 *)rd64(xsdt + off);
        printf(" %c%c%c%c", t[0], t[1], t[2], t[3]);
        if (checksum(t, rd32(t + 4)))
            fail("table checksum");
        if (!strncmp((const char *)t, "FACP", 4))
            fadt = t;
        else if (!strncmp((const char *)t, "APIC", 4))
            madt = t;
    }
    printf("\n");
    if (!fadt || !madt) {
        fail("FADT or MADT missing");
        return;
    }
    dsdt = (const u8 *)rd64(fadt + 140);            /* X_DSDT */
    if (strncmp((const char *)dsdt, "DSDT", 4) || checksum(dsdt, rd32(dsdt + 4)))
        fail("DSDT signature or checksum");
}

static void check_madt(void)
{
    int cpus = 0;
    u32 ioapic = 0;
    for (u32 off = 44; off < rd32(madt + 4); off += madt[off + 1]) {
        if (madt[off] == 0 && (rd32(madt + off + 4) & 1))    /* enabled processor LAPIC */
            cpus++;
        else if (madt[off] == 1)
            ioapic = rd32(madt + off + 4);
    }
    printf("MADT CPUs: %d  IOAPIC: 0x%x\n", cpus, ioapic);
}

/* \_S5 is Name(_S5, Package(){a, b, 0, 0}): the first element is PM1a's SLP_TYP. */
static int s5_slp_typ(void)
{
    u32 len = rd32(dsdt + 4);
    for (u32 i = 36; i + 8 < len; i++) {
        if (strncmp((const char *)dsdt + i, "_S5_", 4) || dsdt[i + 4] != 0x12)
            continue;
        const u8 *p = dsdt + i + 5;
        p += 1 + (*p >> 6);                            /* PkgLength */
        p++;                                           /* NumElements */
        if (*p == 0x0A)                                /* BytePrefix */
            return p[1];
        if (*p <= 1)                                   /* ZeroOp / OneOp */
            return *p;
    }
    return -1;
}

static u8 cmos(u8 index)
{
    outb(0x70, index);
    return inb(0x71);
}

static u32 from_bcd(u8 v, int binary) { return binary ? v : (v >> 4) * 10 + (v & 15); }

static void check_rtc(void)
{
    while (cmos(0x0A) & 0x80)                          /* update in progress */
        cpu_relax();
    int binary = cmos(0x0B) & 0x04;
    u32 sec = from_bcd(cmos(0x00), binary), min = from_bcd(cmos(0x02), binary);
    u32 hour = from_bcd(cmos(0x04), binary), day = from_bcd(cmos(0x07), binary);
    u32 mon = from_bcd(cmos(0x08), binary), year = from_bcd(cmos(0x09), binary);
    u32 century = from_bcd(cmos(0x32), binary);
    printf("RTC: %u%02u-%02u-%02u %02u:%02u:%02u\n", century, year, mon, day, hour, min, sec);
}

static u32 pci_read32(int slot, int fn, int offset)
{
    __asm__ volatile("outl %0, %1" : : "a"(0x80000000u | slot << 11 | fn << 8 | offset),
                     "Nd"((u16)0xCF8));
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((u16)0xCFC));
    return v;
}

static void check_pci(void)
{
    u32 id = pci_read32(0, 0, 0), class = pci_read32(0, 0, 8) >> 8;
    printf("PCI 00:00.0: %04x:%04x class %06x\n", id & 0xFFFF, id >> 16, class);
    if (pci_read32(1, 0, 0) != 0xFFFFFFFF)
        fail("PCI 00:01.0 should be empty");
}

static void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }

void kmain(void)
{
    check_initrd();
    walk_acpi();
    if (fadt) {
        check_madt();
        int typ = s5_slp_typ();
        printf("S5: SLP_TYP=%d\n", typ);
        if (typ < 0)
            fail("no \\_S5 package in the DSDT");
    }
    check_rtc();
    check_pci();
    if (failures || !fadt)
        vm_exit(STATUS_TEST_FAILED);

    char off[16] = "acpi";
    cmdline_get("off", off, sizeof(off));
    if (!strcmp(off, "reset")) {
        const u8 *reg = fadt + 116;                    /* RESET_REG: a GAS */
        printf("resetting through the FADT reset register\n");
        if (reg[0] == 1)                               /* system I/O space */
            outb((u16)rd64(reg + 4), fadt[128]);
    } else {
        u16 pm1a_cnt = (u16)rd32(fadt + 64);
        printf("powering off through PM1a_CNT 0x%x\n", pm1a_cnt);
        outw(pm1a_cnt, (u16)(s5_slp_typ() << 10 | 1 << 13));
    }
    for (;;)
        hlt();
}
