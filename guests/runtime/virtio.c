/* A small virtio (1.2) driver: just enough for test kernels.  The register
 * access of each transport is in virtio_pci.c and virtio_mmio.c (behind struct
 * virtio_transport); everything else is here, shared.
 *
 * Deliberately simple: one request in flight per queue, always built from
 * descriptor 0 (or the queue's indirect table), submitted and then waited for.
 * So there is no free-descriptor list, and the used entry we wait for must name
 * head 0.  Memory is identity mapped, so any kernel address is a DMA address. */
#include "virtio_transport.h"

volatile u64 virtio_irqs;

#define ERR VIRTIO_ERR

void virtio_dev_clear(struct virtio_dev *d, const struct virtio_transport *t)
{
    memset(&d->transport, 0, sizeof(*d) - offsetof(struct virtio_dev, transport));
    d->transport = t;
    time_init();                                   /* the timeouts use time_ms() */
}

const char *virtio_transport_name(struct virtio_dev *d) { return d->transport->name; }
const char *virtio_irq_name(struct virtio_dev *d) { return d->transport->irq_name; }
u8 virtio_status(struct virtio_dev *d) { return d->transport->get_status(d); }
static void set_status(struct virtio_dev *d, u8 s) { d->transport->set_status(d, s); }
int virtio_has(struct virtio_dev *d, int bit) { return (d->features >> bit) & 1; }

int virtio_find(struct virtio_dev *d, u32 device_id, int index)
{
    u64 base, size;
    u32 gsi;
    for (int i = 0; !virtio_mmio_cmdline(i, &base, &size, &gsi); i++)
        if (virtio_mmio_device_id(base, size) == device_id && index-- == 0)
            return virtio_mmio_open(d, base, gsi) ? 1 : 0;
    int bdf = pci_find_device(VIRTIO_VENDOR, (u16)VIRTIO_PCI_DEVICE(device_id), index);
    if (bdf < 0)
        return -1;
    return virtio_open(d, (u32)bdf) ? 1 : 0;
}

int virtio_reset(struct virtio_dev *d)
{
    set_status(d, 0);
    /* A reset may finish asynchronously (4.1.4.3.2): wait until it reads 0. */
    u64 deadline = time_ms() + VIRTIO_TIMEOUT_MS;
    while (virtio_status(d) != 0) {
        if (time_ms() > deadline) {
            ERR(d, "reset: device_status stays 0x%x", virtio_status(d));
            return -1;
        }
        cpu_relax();
    }
    return 0;
}

static int setup_queue(struct virtio_dev *d, int i)
{
    struct virtq *q = &d->vq[i];
    u16 max = d->transport->queue_max(d, i);
    if (max == 0) {
        ERR(d, "queue %d does not exist (queue size 0)", i);
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
    return d->transport->queue_enable(d, q);
}

/* The 64 feature bits, 32 at a time through the transport's select register. */
static u64 read_features(struct virtio_dev *d)
{
    const struct virtio_transport *t = d->transport;
    u64 regs = t->regs(d);
    mmio_write32(regs + t->dev_features_sel, 0);
    u64 f = mmio_read32(regs + t->dev_features);
    mmio_write32(regs + t->dev_features_sel, 1);
    return f | (u64)mmio_read32(regs + t->dev_features) << 32;
}

static void write_features(struct virtio_dev *d, u64 f)
{
    const struct virtio_transport *t = d->transport;
    u64 regs = t->regs(d);
    mmio_write32(regs + t->drv_features_sel, 0);
    mmio_write32(regs + t->drv_features, (u32)f);
    mmio_write32(regs + t->drv_features_sel, 1);
    mmio_write32(regs + t->drv_features, (u32)(f >> 32));
}

int virtio_init(struct virtio_dev *d, u64 want, int nqueues)
{
    const struct virtio_transport *t = d->transport;
    if (nqueues < 1 || nqueues > VIRTIO_MAX_QUEUES)
        return -1;
    if (virtio_reset(d))
        return -1;
    set_status(d, VIRTIO_ACKNOWLEDGE);
    set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);

    u64 offered = read_features(d);
    d->device_features = offered;
    if (!(offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
        /* Without VERSION_1 this is a legacy device: not ours to drive. */
        ERR(d, "device does not offer VIRTIO_F_VERSION_1 (features 0x%lx)", offered);
        set_status(d, VIRTIO_FAILED);
        return -1;
    }
    d->features = offered & (want | VIRTIO_BIT(VIRTIO_F_VERSION_1));
    write_features(d, d->features);
    set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK);
    if (!(virtio_status(d) & VIRTIO_FEATURES_OK)) {
        ERR(d, "FEATURES_OK did not stick (features 0x%lx)", d->features);
        set_status(d, VIRTIO_FAILED);
        return -1;
    }

    int have = t->num_queues(d);
    if (have < nqueues) {
        ERR(d, "want %d queues, device has %d", nqueues, have);
        set_status(d, VIRTIO_FAILED);
        return -1;
    }
    if (t->irq_setup(d))
        goto failed;
    d->nqueues = nqueues;
    for (int i = 0; i < nqueues; i++)
        if (setup_queue(d, i))
            goto failed;
    if (d->irq_vector) {
        if (t->irq_done)
            t->irq_done(d);
        /* hlt in virtq_wait needs something to end it if the interrupt never comes. */
        if (!timer_period())
            timer_start(10);
    }
    set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    u8 st = virtio_status(d);
    if (st & (VIRTIO_NEEDS_RESET | VIRTIO_FAILED) || !(st & VIRTIO_DRIVER_OK)) {
        ERR(d, "device_status 0x%x after DRIVER_OK", st);
        return -1;
    }
    return 0;
failed:
    set_status(d, VIRTIO_FAILED);
    return -1;
}

u32 virtio_cfg_read32(struct virtio_dev *d, u32 off)
{
    const struct virtio_transport *t = d->transport;
    u32 gen, v;
    do {                          /* retry if the device changed it meanwhile */
        gen = t->config_generation(d);
        v = t->config_read32(d, off);
    } while (gen != t->config_generation(d));
    return v;
}

u64 virtio_cfg_read64(struct virtio_dev *d, u32 off)
{
    const struct virtio_transport *t = d->transport;
    u32 gen;
    u64 v;
    do {                          /* two halves: only consistent within one generation */
        gen = t->config_generation(d);
        v = t->config_read32(d, off) | (u64)t->config_read32(d, off + 4) << 32;
    } while (gen != t->config_generation(d));
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
     * with IF set (sleep_ms() leaves it on) the interrupt could otherwise be counted
     * before virtq_wait looks. */
    q->irqs_before = virtio_irqs;
    q->dev->transport->notify(q);
}

long virtq_wait(struct virtq *q, u32 timeout_ms, u32 *id)
{
    u64 deadline = time_ms() + timeout_ms;
    volatile u16 *used_idx = &q->used->idx;
    int irq = q->dev->irq_vector != 0;
    u64 irqs0 = q->irqs_before;
    for (;;) {
        int done = *used_idx != q->last_used;
        if (done && (!irq || virtio_irqs != irqs0))
            break;
        if (time_ms() > deadline) {
            if (done)             /* used, but no interrupt: report, return it anyway */
                ERR(q->dev, "queue %u: used entry but no %s interrupt", q->index,
                    q->dev->transport->irq_name);
            else
                return -1;
            break;
        }
        if (irq) {
            /* Re-check with IF clear: sti's one-instruction shadow then makes
             * "sti; hlt" atomic, so an interrupt arriving after the check still ends the
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
