/* fw_cfg: reads QEMU's fw_cfg I/O interface (selector 0x510, data 0x511) the way a kernel
 * written for QEMU does, and prints it:
 *   fw_cfg signature=<4 chars> id=0x<id>
 *   fw_cfg ram_size=<bytes> nb_cpus=<n> max_cpus=<n>
 *   e820 ram=<bytes>                     (the zero page's map, for comparison)
 *   file name=<name> select=0x<sel> size=<bytes>          (per directory entry)
 *   etc/e820 addr=0x<a> len=0x<l> type=<t>                (per entry of that file)
 *   past_end=<the byte after NB_CPUS> missing=<4 bytes of selector 0x1234, hex>
 *   fw_cfg: done
 * A signature other than "QEMU" prints "FAIL: ..." and exits 3. */
#include "runtime.h"

#define FW_CFG_PORT_SEL  0x510
#define FW_CFG_PORT_DATA 0x511

static void fw_select(u16 key)
{
    __asm__ volatile("outw %0, %1" : : "a"(key), "Nd"((u16)FW_CFG_PORT_SEL));
}

static u8 fw_byte(void) { return inb(FW_CFG_PORT_DATA); }

static u64 fw_le(unsigned n)
{
    u64 v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (u64)fw_byte() << (8 * i);
    return v;
}

static u32 fw_be(unsigned n)
{
    u32 v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | fw_byte();
    return v;
}

void kmain(void)
{
    char sig[5] = {0};
    fw_select(0x00);
    for (int i = 0; i < 4; i++)
        sig[i] = (char)fw_byte();
    fw_select(0x01);
    u32 id = (u32)fw_le(4);
    printf("fw_cfg signature=%s id=0x%x\n", sig, id);
    if (strcmp(sig, "QEMU")) {
        printf("FAIL: no fw_cfg signature\n");
        vm_exit(3);
    }
    fw_select(0x03);
    u64 ram = fw_le(8);
    fw_select(0x05);
    u32 nb = (u32)fw_le(2);
    u8 past = fw_byte();
    fw_select(0x0f);
    u32 max = (u32)fw_le(2);
    printf("fw_cfg ram_size=%lu nb_cpus=%u max_cpus=%u\n", ram, nb, max);
    printf("e820 ram=%lu\n", ram_bytes());

    u16 e820_sel = 0;
    u32 e820_size = 0;
    fw_select(0x19);
    u32 count = fw_be(4);
    for (u32 i = 0; i < count && i < 32; i++) {
        u32 size = fw_be(4);
        u16 sel = (u16)fw_be(2);
        fw_be(2);
        char name[57] = {0};
        for (int j = 0; j < 56; j++)
            name[j] = (char)fw_byte();
        printf("file name=%s select=0x%x size=%u\n", name, sel, size);
        if (!strcmp(name, "etc/e820")) {
            e820_sel = sel;
            e820_size = size;
        }
    }
    if (e820_sel) {
        fw_select(e820_sel);
        for (u32 off = 0; off + 20 <= e820_size; off += 20) {
            u64 addr = fw_le(8), len = fw_le(8);
            u32 type = (u32)fw_le(4);
            printf("etc/e820 addr=0x%lx len=0x%lx type=%u\n", addr, len, type);
        }
    }
    fw_select(0x1234);
    u32 missing = (u32)fw_le(4);
    printf("past_end=%u missing=%x\n", past, missing);
    printf("fw_cfg: done\n");
    vm_exit(0);
}
