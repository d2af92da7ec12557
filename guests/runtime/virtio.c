/* A small virtio-pci (modern, virtio 1.2) driver: just enough for test kernels.
 *
 * Deliberately simple: one request in flight per queue, always built from
 * descriptor 0 (or the queue's indirect table), submitted and then waited for.
 * So there is no free-descriptor list, and the used entry we wait for must name
 * head 0.  Memory is identity mapped, so any kernel address is a DMA address. */
#include "runtime.h"

/* struct virtio_pci_common_cfg (section 4.1.4.3) */
enum {
    CC_DFSELECT = 0x00, CC_DF = 0x04, CC_GFSELECT = 0x08, CC_GF = 0x0C,
    CC_MSIX_CONFIG = 0x10, CC_NUM_QUEUES = 0x12, CC_STATUS = 0x14, CC_CFG_GEN = 0x15,
    CC_Q_SELECT = 0x16, CC_Q_SIZE = 0x18, CC_Q_MSIX = 0x1A, CC_Q_ENABLE = 0x1C,
    CC_Q_NOFF = 0x1E, CC_Q_DESC = 0x20, CC_Q_DRIVER = 0x28, CC_Q_DEVICE = 0x30,
};
/* virtio_pci_cap.cfg_type */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4, CAP_PCI_CFG = 5 };

volatile u64 virtio_irqs;

#define ERR(d, fmt, ...) printf("virtio %02x:%02x.%x: " fmt "\n", (d)->bdf >> 8, \
                                ((d)->bdf >> 3) & 31, (d)->bdf & 7, ##__VA_ARGS__)

static u8 cc_r8(struct virtio_dev *d, u32 o) { return mmio_read8(d->common + o); }
static u16 cc_r16(struct virtio_dev *d, u32 o) { return mmio_read16(d->common + o); }
static u32 cc_r32(struct virtio_dev *d, u32 o) { return mmio_read32(d->common + o); }
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

u8 virtio_status(struct virtio_dev *d) { return cc_r8(d, CC_STATUS); }
int virtio_has(struct virtio_dev *d, int bit) { return (d->features >> bit) & 1; }

static void msix_irq(struct trap_frame *f)
{
    (void)f;
    virtio_irqs++;          /* the runtime sends the LAPIC EOI */
}

int virtio_open(struct virtio_dev *d, u32 bdf)
{
    /* Everything but the queue pages (setup_queue clears those): memset runs
     * byte by byte in the emulator, so 24 KiB would cost ~50 ms. */
    memset(&d->bdf, 0, sizeof(*d) - offsetof(struct virtio_dev, bdf));
    d->bdf = bdf;
    d->pci_device = pci_cfg_read16(bdf, PCI_DEVICE_ID);
    time_init();                                   /* the timeouts use time_ms() */

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
        ERR(d, "missing capability: common=%lx notify=%lx isr=%lx", d->common, d->notify, d->isr);
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

int virtio_reset(struct virtio_dev *d)
{
    cc_w8(d, CC_STATUS, 0);
    /* A reset may finish asynchronously (4.1.4.3.2): wait until it reads 0. */
    u64 deadline = time_ms() + VIRTIO_TIMEOUT_MS;
    while (cc_r8(d, CC_STATUS) != 0) {
        if (time_ms() > deadline) {
            ERR(d, "reset: device_status stays 0x%x", cc_r8(d, CC_STATUS));
            return -1;
        }
        cpu_relax();
    }
    return 0;
}

/* MSI-X on, function-masked while we program entries (so nothing fires half set). */
static int msix_begin(struct virtio_dev *d)
{
    if (!d->msix_cap || !d->msix_table) {
        ERR(d, "MSI-X requested but the device has no usable MSI-X capability");
        return -1;
    }
    u16 ctrl = pci_cfg_read16(d->bdf, d->msix_cap + 2);
    pci_cfg_write16(d->bdf, d->msix_cap + 2, ctrl | 0x8000 | 0x4000);
    trap_set_handler(d->irq_vector, msix_irq);
    lapic_enable();
    return 0;
}

static void msix_program(struct virtio_dev *d, u16 entry)
{
    u64 e = d->msix_table + 16ull * entry;
    mmio_write32(e + 0, 0xFEE00000u | lapic_id() << 12);   /* fixed, physical dest */
    mmio_write32(e + 4, 0);
    mmio_write32(e + 8, (u32)d->irq_vector);                /* edge, fixed delivery */
    mmio_write32(e + 12, 0);                                /* unmasked */
}

static void msix_end(struct virtio_dev *d)
{
    u16 ctrl = pci_cfg_read16(d->bdf, d->msix_cap + 2);
    pci_cfg_write16(d->bdf, d->msix_cap + 2, (ctrl | 0x8000) & ~0x4000);
}

static int setup_queue(struct virtio_dev *d, int i)
{
    struct virtq *q = &d->vq[i];
    cc_w16(d, CC_Q_SELECT, (u16)i);
    u16 max = cc_r16(d, CC_Q_SIZE);
    if (max == 0) {
        ERR(d, "queue %d does not exist (queue_size 0)", i);
        return -1;
    }
    /* Largest power of two <= min(max, ours): split rings want powers of two. */
    u16 size = VIRTQ_MAX_SIZE;
    while (size > max)
        size >>= 1;
    memset(q->mem, 0, 0x300);     /* desc, avail, used; the indirect table is written per use */
    q->dev = d;
    q->index = (u16)i;
    q->size = size;
    q->desc = (struct virtq_desc *)q->mem;
    q->avail = (struct virtq_avail *)(q->mem + 0x100);
    q->used = (struct virtq_used *)(q->mem + 0x200);
    q->indirect = (struct virtq_desc *)(q->mem + 0x800);
    q->avail_idx = q->last_used = q->head = 0;
    q->msix_entry = VIRTIO_NO_VECTOR;
    /* Polling: ask the device not to interrupt (a hint it may ignore). */
    q->avail->flags = d->irq_vector ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;

    cc_w16(d, CC_Q_SIZE, size);
    if (d->irq_vector) {
        u16 entry = (u16)(i < d->msix_size ? i : 0);
        msix_program(d, entry);
        cc_w16(d, CC_Q_MSIX, entry);
        u16 back = cc_r16(d, CC_Q_MSIX);
        if (back != entry) {           /* NO_VECTOR back: the device refused it */
            ERR(d, "queue %d: queue_msix_vector %u reads back 0x%x", i, entry, back);
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

int virtio_init(struct virtio_dev *d, u64 want, int nqueues)
{
    if (nqueues < 1 || nqueues > VIRTIO_MAX_QUEUES)
        return -1;
    if (virtio_reset(d))
        return -1;
    cc_w8(d, CC_STATUS, VIRTIO_ACKNOWLEDGE);
    cc_w8(d, CC_STATUS, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);

    cc_w32(d, CC_DFSELECT, 0);
    u64 offered = cc_r32(d, CC_DF);
    cc_w32(d, CC_DFSELECT, 1);
    offered |= (u64)cc_r32(d, CC_DF) << 32;
    d->device_features = offered;
    if (!(offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
        /* Without VERSION_1 this is a legacy device: not ours to drive. */
        ERR(d, "device does not offer VIRTIO_F_VERSION_1 (features 0x%lx)", offered);
        cc_w8(d, CC_STATUS, VIRTIO_FAILED);
        return -1;
    }
    d->features = offered & (want | VIRTIO_BIT(VIRTIO_F_VERSION_1));
    cc_w32(d, CC_GFSELECT, 0);
    cc_w32(d, CC_GF, (u32)d->features);
    cc_w32(d, CC_GFSELECT, 1);
    cc_w32(d, CC_GF, (u32)(d->features >> 32));
    cc_w8(d, CC_STATUS, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK);
    if (!(cc_r8(d, CC_STATUS) & VIRTIO_FEATURES_OK)) {
        ERR(d, "FEATURES_OK did not stick (features 0x%lx)", d->features);
        cc_w8(d, CC_STATUS, VIRTIO_FAILED);
        return -1;
    }

    u16 have = cc_r16(d, CC_NUM_QUEUES);
    if (have < nqueues) {
        ERR(d, "want %d queues, device has %u", nqueues, have);
        cc_w8(d, CC_STATUS, VIRTIO_FAILED);
        return -1;
    }
    if (d->irq_vector && msix_begin(d))
        goto failed;
    cc_w16(d, CC_MSIX_CONFIG, VIRTIO_NO_VECTOR);     /* no config-change interrupts */
    d->nqueues = nqueues;
    for (int i = 0; i < nqueues; i++)
        if (setup_queue(d, i))
            goto failed;
    if (d->irq_vector) {
        msix_end(d);
        /* hlt in virtq_wait needs something to end it if the MSI never comes. */
        if (!timer_period())
            timer_start(10);
    }
    cc_w8(d, CC_STATUS, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    u8 st = cc_r8(d, CC_STATUS);
    if (st & (VIRTIO_NEEDS_RESET | VIRTIO_FAILED) || !(st & VIRTIO_DRIVER_OK)) {
        ERR(d, "device_status 0x%x after DRIVER_OK", st);
        return -1;
    }
    return 0;
failed:
    cc_w8(d, CC_STATUS, VIRTIO_FAILED);
    return -1;
}

u32 virtio_cfg_read32(struct virtio_dev *d, u32 off)
{
    if (!d->devcfg)
        return 0;
    u8 gen;
    u32 v;
    do {                          /* retry if the device changed it meanwhile */
        gen = cc_r8(d, CC_CFG_GEN);
        v = mmio_read32(d->devcfg + off);
    } while (gen != cc_r8(d, CC_CFG_GEN));
    return v;
}

u64 virtio_cfg_read64(struct virtio_dev *d, u32 off)
{
    if (!d->devcfg)
        return 0;
    u8 gen;
    u64 v;
    do {                          /* two halves: only consistent within one generation */
        gen = cc_r8(d, CC_CFG_GEN);
        v = mmio_read32(d->devcfg + off) | (u64)mmio_read32(d->devcfg + off + 4) << 32;
    } while (gen != cc_r8(d, CC_CFG_GEN));
    return v;
}

static void fill_chain(struct virtq_desc *t, const struct virtq_buf *bufs, int n)
{
    for (int i = 0; i < n; i++) {
        t[i].addr = bufs[i].addr;
        t[i].len = bufs[i].len;
        t[i].flags = (u16)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                           (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        t[i].next = (u16)(i + 1 < n ? i + 1 : 0);
    }
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, int n, int flags)
{
    if (flags & VIRTQ_SUBMIT_INDIRECT) {
        if (!virtio_has(q->dev, VIRTIO_RING_F_INDIRECT_DESC)) {
            ERR(q->dev, "indirect descriptors not negotiated");
            return -1;
        }
        if (n < 1 || n > VIRTQ_MAX_INDIRECT)
            return -1;
        fill_chain(q->indirect, bufs, n);
        q->desc[0] = (struct virtq_desc){ (u64)q->indirect, (u32)(16 * n), VIRTQ_DESC_F_INDIRECT, 0 };
    } else {
        if (n < 1 || n > q->size) {
            ERR(q->dev, "queue %u: %d buffers do not fit %u descriptors", q->index, n, q->size);
            return -1;
        }
        fill_chain(q->desc, bufs, n);
    }
    return 0;                     /* one request in flight: always head 0 */
}

void virtq_publish(struct virtq *q, u16 head)
{
    q->head = head;
    q->avail->ring[q->avail_idx % q->size] = head;
    barrier();                    /* descriptors and ring entry before the index */
    q->avail->idx = ++q->avail_idx;
    mb();                         /* the index is visible before the notify */
}

void virtq_notify(struct virtq *q)
{
    /* The baseline for virtq_wait, taken before the device can possibly answer:
     * with IF set (sleep_ms() leaves it on) the MSI could otherwise be counted
     * before virtq_wait looks. */
    q->irqs_before = virtio_irqs;
    mmio_write16(q->notify_addr, q->index);
}

long virtq_wait(struct virtq *q, u32 timeout_ms, u32 *id)
{
    u64 deadline = time_ms() + timeout_ms;
    volatile u16 *used_idx = &q->used->idx;
    int irq = q->msix_entry != VIRTIO_NO_VECTOR;
    u64 irqs0 = q->irqs_before;
    for (;;) {
        int done = *used_idx != q->last_used;
        if (done && (!irq || virtio_irqs != irqs0))
            break;
        if (time_ms() > deadline) {
            if (done)             /* used, but no interrupt: report, return it anyway */
                ERR(q->dev, "queue %u: used entry but no MSI-X interrupt", q->index);
            else
                return -1;
            break;
        }
        if (irq) {
            /* Re-check with IF clear: sti's one-instruction shadow then makes
             * "sti; hlt" atomic, so an MSI arriving after the check still ends the
             * hlt (as does the 10 ms tick).  IF is put back as the caller had it. */
            u64 rflags;
            __asm__ volatile("pushfq; popq %0; cli" : "=r"(rflags) : : "memory");
            if (*used_idx == q->last_used || virtio_irqs == irqs0)
                sti_hlt();
            if (rflags & 0x200)
                sti();
            else
                cli();
        } else {
            cpu_relax();
        }
    }
    barrier();                    /* used->idx before the entry it covers */
    struct virtq_used_elem e = ((volatile struct virtq_used *)q->used)->ring[q->last_used % q->size];
    q->last_used++;
    if (id)
        *id = e.id;
    return e.len;
}

long virtq_submit(struct virtq *q, const struct virtq_buf *bufs, int n, int flags)
{
    int head = virtq_add(q, bufs, n, flags);
    if (head < 0)
        return -1;
    virtq_publish(q, (u16)head);
    virtq_notify(q);
    u32 id;
    long len = virtq_wait(q, VIRTIO_TIMEOUT_MS, &id);
    if (len < 0) {
        ERR(q->dev, "queue %u: no used entry within %u ms (device_status 0x%x)",
            q->index, VIRTIO_TIMEOUT_MS, virtio_status(q->dev));
        return -1;
    }
    if (id != (u32)head) {
        ERR(q->dev, "queue %u: used id %u, expected %d", q->index, id, head);
        return -1;
    }
    return len;
}

/* ---- virtio-blk ---- */
static struct { u32 type, reserved; u64 sector; } blk_hdr __attribute__((aligned(16)));
static volatile u8 blk_status;

int virtio_blk_request(struct virtio_dev *d, u32 type, u64 sector,
                       struct virtq_buf *data, int n, int flags)
{
    struct virtq_buf bufs[VIRTQ_MAX_INDIRECT];
    if (n < 0 || n + 2 > VIRTQ_MAX_INDIRECT)
        return -1;
    blk_hdr.type = type;
    blk_hdr.reserved = 0;
    blk_hdr.sector = sector;
    blk_status = 0xFF;            /* so "never written" is visible */
    int to_mem = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    bufs[0] = (struct virtq_buf){ (u64)&blk_hdr, sizeof(blk_hdr), 0 };
    for (int i = 0; i < n; i++) {
        data[i].write = to_mem;
        bufs[1 + i] = data[i];
    }
    bufs[n + 1] = (struct virtq_buf){ (u64)&blk_status, 1, 1 };
    if (virtq_submit(&d->vq[0], bufs, n + 2, flags) < 0)
        return -1;
    return blk_status;
}
