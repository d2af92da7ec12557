/* multiboot: prints what a Multiboot 1 or 2 boot loader handed over, for the test to
 * compare with what pyvisor built (linked behind multiboot/entry32.S, which saves the
 * entry state in mb_*). Output, one item a line:
 *   entry magic=0x<eax> cr0=0x<cr0> eflags=0x<eflags> cs=0x<cs>
 *   [mb1 flags=0x<flags>]
 *   mem_lower=<KiB> mem_upper=<KiB>
 *   mmap base=0x<addr> len=0x<len> type=<type>          (per entry)
 *   cmdline=<command line>
 *   argv0=<its first word>
 *   loader=<boot loader name>
 *   module start=0x<a> end=0x<b> cmdline=<text> data=<first 64 bytes>   (per module)
 *   rsdp old=<OEM ID> rev=<r> rsdt=0x<a> / rsdp new=<OEM ID> rev=<r> rsdt=0x<a> xsdt=0x<a>
 *                                                  (the Multiboot 2 ACPI tags)
 *   rsdp scan=0x<address of "RSD PTR " in 0xE0000-0xFFFFF>
 *   multiboot: done
 * A wrong magic prints "FAIL: ..." and exits 3. */
#include "runtime.h"

extern u32 mb_magic, mb_info, mb_cr0, mb_eflags;
extern u16 mb_cs;

#define MB1_BOOTLOADER_MAGIC 0x2BADB002
#define MB2_BOOTLOADER_MAGIC 0x36D76289

static void put_bytes(const u8 *p, u32 n)
{
    for (u32 i = 0; i < n; i++)
        uart_putc(p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.');
}

static void cmdline_lines(const char *s)
{
    printf("cmdline=%s\n", s);
    printf("argv0=");
    for (; *s && *s != ' '; s++)
        uart_putc(*s);
    printf("\n");
}

static void module_line(u32 start, u32 end, const char *cmdline)
{
    printf("module start=0x%x end=0x%x cmdline=%s data=", start, end, cmdline);
    put_bytes((const u8 *)(u64)start, end - start < 64 ? end - start : 64);
    printf("\n");
}

static void rsdp_line(const char *kind, const u8 *r)
{
    printf("rsdp %s=", kind);
    put_bytes(r + 9, 6);
    printf(" rev=%u rsdt=0x%x", r[15], *(const u32 *)(r + 16));
    if (kind[0] == 'n')
        printf(" xsdt=0x%lx", *(const u64 *)(r + 24));
    printf("\n");
}

static void mb1(const u8 *info)
{
    u32 flags = *(const u32 *)info;
    printf("mb1 flags=0x%x\n", flags);
    if (flags & 1)
        printf("mem_lower=%u mem_upper=%u\n", *(const u32 *)(info + 4), *(const u32 *)(info + 8));
    if (flags & (1 << 6)) {
        u32 len = *(const u32 *)(info + 44), at = *(const u32 *)(info + 48);
        for (u32 off = 0; off < len; off += *(const u32 *)(u64)(at + off) + 4) {
            const u8 *e = (const u8 *)(u64)(at + off + 4);
            printf("mmap base=0x%lx len=0x%lx type=%u\n", *(const u64 *)e,
                   *(const u64 *)(e + 8), *(const u32 *)(e + 16));
        }
    }
    if (flags & (1 << 2))
        cmdline_lines((const char *)(u64) * (const u32 *)(info + 16));
    if (flags & (1 << 9))
        printf("loader=%s\n", (const char *)(u64) * (const u32 *)(info + 64));
    if (flags & (1 << 3)) {
        const u32 *mod = (const u32 *)(u64) * (const u32 *)(info + 24);
        for (u32 i = 0; i < *(const u32 *)(info + 20); i++, mod += 4)
            module_line(mod[0], mod[1], (const char *)(u64)mod[2]);
    }
}

static void mb2(const u8 *info)
{
    u32 total = *(const u32 *)info;
    printf("mb2 size=%u\n", total);
    for (u32 off = 8; off + 8 <= total;) {
        const u8 *tag = info + off;
        u32 type = *(const u32 *)tag & 0xffff, size = *(const u32 *)(tag + 4);
        if (type == 0)
            break;
        switch (type) {
        case 1: cmdline_lines((const char *)(tag + 8)); break;
        case 2: printf("loader=%s\n", (const char *)(tag + 8)); break;
        case 3: module_line(*(const u32 *)(tag + 8), *(const u32 *)(tag + 12),
                            (const char *)(tag + 16)); break;
        case 4: printf("mem_lower=%u mem_upper=%u\n", *(const u32 *)(tag + 8),
                       *(const u32 *)(tag + 12)); break;
        case 6:
            for (u32 e = 16; e + 24 <= size; e += *(const u32 *)(tag + 8))
                printf("mmap base=0x%lx len=0x%lx type=%u\n", *(const u64 *)(tag + e),
                       *(const u64 *)(tag + e + 8), *(const u32 *)(tag + e + 16));
            break;
        case 14: rsdp_line("old", tag + 8); break;
        case 15: rsdp_line("new", tag + 8); break;
        case 21: printf("load_base=0x%x\n", *(const u32 *)(tag + 8)); break;
        default: printf("tag type=%u size=%u\n", type, size); break;
        }
        off += (size + 7) & ~7u;
    }
}

void kmain(void)
{
    printf("entry magic=0x%x cr0=0x%x eflags=0x%x cs=0x%x\n", mb_magic, mb_cr0, mb_eflags,
           mb_cs);
    if (mb_magic == MB1_BOOTLOADER_MAGIC)
        mb1((const u8 *)(u64)mb_info);
    else if (mb_magic == MB2_BOOTLOADER_MAGIC)
        mb2((const u8 *)(u64)mb_info);
    else {
        printf("FAIL: not a Multiboot magic\n");
        vm_exit(3);
    }
    for (u64 a = 0xE0000; a < 0x100000; a += 16)
        if (!strncmp((const char *)a, "RSD PTR ", 8)) {
            printf("rsdp scan=0x%lx\n", a);
            break;
        }
    printf("multiboot: done\n");
    vm_exit(0);
}
