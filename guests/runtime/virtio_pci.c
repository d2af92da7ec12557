/* The virtio-pci modern transport (virtio 1.2 section 4.1): the common, notify,
 * ISR and device structures found through the vendor capabilities; queue
 * interrupts through MSI-X. */
#include "virtio_transport.h"

/* struct virtio_pci_common_cfg (section 4.1.4.3) */
enum {
    CC_DFSELECT = 0x00, CC_DF = 0x04, CC_GFSELECT = 0x08, CC_GF = 0x0C,
    CC_MSIX_CONFIG = 0x10, CC_NUM_QUEUES = 0x12, CC_STATUS = 0x14, CC_CFG_GEN = 0x15,
    CC_Q_SELECT = 0x16, CC_Q_SIZE = 0x18, CC_Q_MSIX = 0x1A, CC_Q_ENABLE = 0x1C,
    CC_Q_NOFF = 0x1E, CC_Q_DESC = 0x20, CC_Q_DRIVER = 0x28, CC_Q_DEVICE = 0x30,
};
/* virtio_pci_cap.cfg_type */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4, CAP_PCI_CFG = 5 };

static u8 cc_r8(struct virtio_dev *d, u32 o) { return mmio_read8(d->common + o); }
static u16 cc_r16(struct virtio_dev *d, u32 o) { return mmio_read16(d->common + o); }
static void cc_w8(struct virtio_dev *d, u32 o, u8 v) { mmio_write8(d->common + o, v); }
static void cc_w16(struct virtio_dev *d, u32 o, u16 v) { mmio_write16(d->common + o, v); }
static void cc_w32(struct virtio_dev *d, u32 o, u32 v) { mmio_write32(d->common + o, v); }
/* 64-bit fields as two 32-bit writes, low half first (not every device takes a
 * 64-bit access; the spec lets the driver split them). */
static void cc_w64(struct virtio_dev *d, u32 o, u64 v)
{
    cc_w32(d, o, (u32)v);
    cc_w32(d, o + 4, (u32)(v >> 32));
}

int virtio_open(struct virtio_dev *d, u32 bdf)
{
    virtio_dev_clear(d, &virtio_pci_transport);
    d->bdf = bdf;
    d->pci_device = pci_cfg_read16(bdf, PCI_DEVICE_ID);
    snprintf(d->name, sizeof(d->name), "%02x:%02x.%x", bdf >> 8, (bdf >> 3) & 31, bdf & 7);

    /* The first capability of each type is the one to use (4.1.4). */
    for (u8 cap = pci_find_cap(bdf, PCI_CAP_VNDR, 0); cap; cap = pci_find_cap(bdf, PCI_CAP_VNDR, cap)) {
        u8 type = pci_cfg_read8(bdf, cap + 3), bar = pci_cfg_read8(bdf, cap + 4);
        if (type < CAP_COMMON || type > CAP_DEVICE || bar > 5)
            continue;                              /* PCI cfg access, or unknown */
        u64 base = pci_bar_addr(bdf, bar);
        if (!base)
            continue;
        u64 addr = base + pci_cfg_read32(bdf, cap + 8);
        u64 *slot = type == CAP_COMMON ? &d->common : type == CAP_NOTIFY ? &d->notify
                  : type == CAP_ISR ? &d->isr : &d->devcfg;
        if (*slot)
            continue;
        *slot = addr;
        if (type == CAP_NOTIFY)
            d->notify_mult = pci_cfg_read32(bdf, cap + 16);
    }
    if (!d->common || !d->notify || !d->isr) {
        VIRTIO_ERR(d, "missing capability: common=%lx notify=%lx isr=%lx", d->common, d->notify, d->isr);
        return -1;
    }
    /* The BARs are assigned already (by the VMM, like firmware); we only decode. */
    pci_cfg_write16(bdf, PCI_COMMAND,
                    pci_cfg_read16(bdf, PCI_COMMAND) | PCI_CMD_MEM | PCI_CMD_MASTER);

    d->msix_cap = pci_find_cap(bdf, PCI_CAP_MSIX, 0);
    if (d->msix_cap) {
        u32 table = pci_cfg_read32(bdf, d->msix_cap + 4);
        d->msix_size = (pci_cfg_read16(bdf, d->msix_cap + 2) & 0x7FF) + 1;
        u64 base = pci_bar_addr(bdf, table & 7);
        d->msix_table = base ? base + (table & ~7u) : 0;
    }
    return 0;
}

static u8 pci_get_status(struct virtio_dev *d) { return cc_r8(d, CC_STATUS); }
static void pci_set_status(struct virtio_dev *d, u8 s) { cc_w8(d, CC_STATUS, s); }

static u64 pci_regs(const struct virtio_dev *d) { return d->common; }

static int pci_num_queues(struct virtio_dev *d) { return cc_r16(d, CC_NUM_QUEUES); }

static void msix_irq(struct trap_frame *f)
{
    (void)f;
    virtio_irqs++;          /* the runtime sends the LAPIC EOI */
}

/* MSI-X on, function-masked while we program entries (so nothing fires half set). */
static int pci_irq_setup(struct virtio_dev *d)
{
    if (d->irq_vector) {
        if (!d->msix_cap || !d->msix_table) {
            VIRTIO_ERR(d, "MSI-X requested but the device has no usable MSI-X capability");
            return -1;
        }
        u16 ctrl = pci_cfg_read16(d->bdf, d->msix_cap + 2);
        pci_cfg_write16(d->bdf, d->msix_cap + 2, ctrl | 0x8000 | 0x4000);
        trap_set_handler(d->irq_vector, msix_irq);
        lapic_enable();
    }
    cc_w16(d, CC_MSIX_CONFIG, VIRTIO_NO_VECTOR);     /* no config-change interrupts */
    return 0;
}

static void pci_irq_done(struct virtio_dev *d)
{
    if (!d->irq_vector)
        return;
    u16 ctrl = pci_cfg_read16(d->bdf, d->msix_cap + 2);
    pci_cfg_write16(d->bdf, d->msix_cap + 2, (ctrl | 0x8000) & ~0x4000);
}

static void msix_program(struct virtio_dev *d, u16 entry)
{
    u64 e = d->msix_table + 16ull * entry;
    mmio_write32(e + 0, 0xFEE00000u | lapic_id() << 12);   /* fixed, physical dest */
    mmio_write32(e + 4, 0);
    mmio_write32(e + 8, (u32)d->irq_vector);                /* edge, fixed delivery */
    mmio_write32(e + 12, 0);                                /* unmasked */
}

static u16 pci_queue_max(struct virtio_dev *d, int i)
{
    cc_w16(d, CC_Q_SELECT, (u16)i);
    return cc_r16(d, CC_Q_SIZE);
}

static int pci_queue_enable(struct virtio_dev *d, struct virtq *q)
{
    cc_w16(d, CC_Q_SIZE, q->size);
    if (d->irq_vector) {
        u16 entry = (u16)(q->index < d->msix_size ? q->index : 0);
        msix_program(d, entry);
        cc_w16(d, CC_Q_MSIX, entry);
        u16 back = cc_r16(d, CC_Q_MSIX);
        if (back != entry) {           /* NO_VECTOR back: the device refused it */
            VIRTIO_ERR(d, "queue %u: queue_msix_vector %u reads back 0x%x", q->index, entry, back);
            return -1;
        }
        q->msix_entry = entry;
    } else {
        cc_w16(d, CC_Q_MSIX, VIRTIO_NO_VECTOR);
    }
    q->notify_addr = d->notify + (u64)cc_r16(d, CC_Q_NOFF) * d->notify_mult;
    cc_w64(d, CC_Q_DESC, (u64)q->desc);
    cc_w64(d, CC_Q_DRIVER, (u64)q->avail);
    cc_w64(d, CC_Q_DEVICE, (u64)q->used);
    cc_w16(d, CC_Q_ENABLE, 1);
    return 0;
}

static void pci_notify(struct virtq *q) { mmio_write16(q->notify_addr, q->index); }

static u32 pci_config_generation(struct virtio_dev *d) { return cc_r8(d, CC_CFG_GEN); }

static u32 pci_config_read32(struct virtio_dev *d, u32 off)
{
    return d->devcfg ? mmio_read32(d->devcfg + off) : 0;
}

const struct virtio_transport virtio_pci_transport = {
    .name = "pci",
    .irq_name = "msix",
    .get_status = pci_get_status,
    .set_status = pci_set_status,
    .regs = pci_regs,
    .dev_features_sel = CC_DFSELECT, .dev_features = CC_DF,
    .drv_features_sel = CC_GFSELECT, .drv_features = CC_GF,
    .num_queues = pci_num_queues,
    .irq_setup = pci_irq_setup,
    .irq_done = pci_irq_done,
    .queue_max = pci_queue_max,
    .queue_enable = pci_queue_enable,
    .notify = pci_notify,
    .config_generation = pci_config_generation,
    .config_read32 = pci_config_read32,
};
