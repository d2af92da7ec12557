/* Reading the Linux zero page (struct boot_params) the VMM hands us in RSI. */
#include "runtime.h"

#define BP_E820_ENTRIES 0x1E8   /* u8 */
#define BP_CMD_LINE_PTR 0x228   /* u32, hdr.cmd_line_ptr */
#define BP_E820_TABLE   0x2D0   /* 20-byte entries */
#define E820_MAX        128

const u8 *boot_params;

int e820_count(void)
{
    int n = boot_params ? boot_params[BP_E820_ENTRIES] : 0;
    return n > E820_MAX ? E820_MAX : n;
}

const struct e820_entry *e820_get(int i)
{
    return (const struct e820_entry *)(boot_params + BP_E820_TABLE) + i;
}

const char *e820_type_name(u32 type)
{
    static const char *const names[] = { "?", "usable", "reserved", "ACPI data", "ACPI NVS", "unusable" };
    return type < ARRAY_SIZE(names) ? names[type] : "other";
}

u64 ram_bytes(void)
{
    u64 total = 0;
    int low = 0;
    for (int i = 0; i < e820_count(); i++) {
        const struct e820_entry *e = e820_get(i);
        if (e->type != E820_RAM)
            continue;
        u64 start = e->addr, end = e->addr + e->size;
        if (start < 0x100000) {          /* count the low 1 MiB once, in full */
            low = 1;
            start = end < 0x100000 ? end : 0x100000;
        }
        total += end - start;
    }
    return total + (low ? 0x100000 : 0);
}

u64 ram_mib(void) { return (ram_bytes() + (1 << 19)) >> 20; }

const char *cmdline(void)
{
    u32 p = boot_params ? *(const u32 *)(boot_params + BP_CMD_LINE_PTR) : 0;
    return p ? (const char *)(u64)p : "";
}

int cmdline_get(const char *key, char *buf, size_t len)
{
    size_t klen = strlen(key);
    for (const char *s = cmdline(); *s;) {
        while (*s == ' ')
            s++;
        if (!strncmp(s, key, klen) && s[klen] == '=') {
            size_t n = 0;
            for (s += klen + 1; *s && *s != ' ' && n + 1 < len; s++)
                buf[n++] = *s;
            buf[n] = 0;
            return 0;
        }
        while (*s && *s != ' ')
            s++;
    }
    return -1;
}

u64 cmdline_get_u64(const char *key, u64 dflt)
{
    char buf[32];
    u64 v;
    if (cmdline_get(key, buf, sizeof(buf)) || parse_u64(buf, &v))
        return dflt;
    return v;
}

const u8 *acpi_find_table(const char *sig)
{
    for (u64 a = 0xE0000; a < 0x100000; a += 16) {
        if (strncmp((const char *)a, "RSD PTR ", 8))
            continue;
        const u8 *xsdt = (const u8 *)*(const u64 *)(a + 24);
        u32 len = *(const u32 *)(xsdt + 4);
        for (u32 off = 36; off + 8 <= len; off += 8) {
            const u8 *t = (const u8 *)*(const u64 *)(xsdt + off);
            if (!strncmp((const char *)t, sig, 4))
                return t;
        }
    }
    return 0;
}
