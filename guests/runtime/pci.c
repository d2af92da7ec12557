/* PCI configuration space through mechanism #1: the dword address goes to 0xCF8,
 * the data is at 0xCFC + (offset & 3) with the access's own width. */
#include "runtime.h"

#define PCI_ADDR 0xCF8
#define PCI_DATA 0xCFC

static inline void outw_(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline u16 inw_(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl_(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl_(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void select_reg(u32 bdf, u32 off)
{
    outl_(PCI_ADDR, 0x80000000u | bdf << 8 | (off & 0xFC));
}

u8 pci_cfg_read8(u32 bdf, u32 off) { select_reg(bdf, off); return inb(PCI_DATA + (off & 3)); }
u16 pci_cfg_read16(u32 bdf, u32 off) { select_reg(bdf, off); return inw_(PCI_DATA + (off & 2)); }
u32 pci_cfg_read32(u32 bdf, u32 off) { select_reg(bdf, off); return inl_(PCI_DATA); }
void pci_cfg_write8(u32 bdf, u32 off, u8 v) { select_reg(bdf, off); outb(PCI_DATA + (off & 3), v); }
void pci_cfg_write16(u32 bdf, u32 off, u16 v) { select_reg(bdf, off); outw_(PCI_DATA + (off & 2), v); }
void pci_cfg_write32(u32 bdf, u32 off, u32 v) { select_reg(bdf, off); outl_(PCI_DATA, v); }

int pci_find_device(u16 vendor, u16 device, int index)
{
    /* Bus 0, function 0 of every slot: all our VMM puts there. */
    for (int slot = 0; slot < 32; slot++) {
        u32 bdf = PCI_BDF(0, slot, 0);
        u32 id = pci_cfg_read32(bdf, PCI_VENDOR_ID);
        if (id == 0xFFFFFFFFu || (id & 0xFFFF) != vendor || (id >> 16) != device)
            continue;
        if (index-- == 0)
            return (int)bdf;
    }
    return -1;
}

u8 pci_find_cap(u32 bdf, u8 id, u8 after)
{
    if (!(pci_cfg_read16(bdf, PCI_STATUS) & PCI_STATUS_CAPS))
        return 0;
    u8 pos = after ? pci_cfg_read8(bdf, after + 1) : pci_cfg_read8(bdf, PCI_CAP_PTR);
    /* 48 = the most capabilities that fit in 192 bytes: a cycle cannot hang us. */
    for (int n = 0; pos >= 0x40 && n < 48; n++) {
        pos &= 0xFC;
        if (pci_cfg_read8(bdf, pos) == id)
            return pos;
        pos = pci_cfg_read8(bdf, pos + 1);
    }
    return 0;
}

u64 pci_bar_addr(u32 bdf, int n)
{
    if (n < 0 || n > 5)
        return 0;
    u32 lo = pci_cfg_read32(bdf, PCI_BAR0 + 4 * n);
    if (lo & 1)
        return 0;                               /* I/O BAR */
    u64 addr = lo & ~0xFull;
    if (((lo >> 1) & 3) == 2 && n < 5)          /* 64-bit: the next BAR is the high half */
        addr |= (u64)pci_cfg_read32(bdf, PCI_BAR0 + 4 * (n + 1)) << 32;
    return addr;
}
