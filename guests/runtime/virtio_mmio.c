/* The virtio-mmio transport, version 2 register layout (virtio 1.2 section 4.2.2):
 * one register window per device, found on the kernel command line
 * (virtio_mmio.device=<size>@<base>:<gsi>), and one interrupt line.  Registers are
 * accessed 32 bits wide, as 4.2.2.2 requires; the device configuration at 0x100. */
#include "virtio_transport.h"

enum {
    MMIO_MAGIC = 0x000, MMIO_VERSION = 0x004, MMIO_DEVICE_ID = 0x008, MMIO_VENDOR_ID = 0x00C,
    MMIO_DEV_FEATURES = 0x010, MMIO_DEV_FEATURES_SEL = 0x014,
    MMIO_DRV_FEATURES = 0x020, MMIO_DRV_FEATURES_SEL = 0x024,
    MMIO_QUEUE_SEL = 0x030, MMIO_QUEUE_NUM_MAX = 0x034, MMIO_QUEUE_NUM = 0x038,
    MMIO_QUEUE_READY = 0x044, MMIO_QUEUE_NOTIFY = 0x050,
    MMIO_INT_STATUS = 0x060, MMIO_INT_ACK = 0x064, MMIO_STATUS = 0x070,
    MMIO_QUEUE_DESC = 0x080, MMIO_QUEUE_DRIVER = 0x090, MMIO_QUEUE_DEVICE = 0x0A0,
    MMIO_CONFIG_GEN = 0x0FC, MMIO_CONFIG = 0x100,
};
#define MMIO_MAGIC_VALUE 0x74726976u     /* "virt" */
#define MMIO_MIN_SIZE    0x200

static u32 rd(struct virtio_dev *d, u32 o) { return mmio_read32(d->mmio_base + o); }
static void wr(struct virtio_dev *d, u32 o, u32 v) { mmio_write32(d->mmio_base + o, v); }
static void wr64(struct virtio_dev *d, u32 o, u64 v)      /* Low, then High */
{
    wr(d, o, (u32)v);
    wr(d, o + 4, (u32)(v >> 32));
}

/* ---- command line: virtio_mmio.device=<size>[KMG]@<base>:<gsi>[:<id>] ---- */

/* A decimal or 0x-hex number at *s; advances *s.  0, or -1 when there is none. */
static int take_number(const char **s, u64 *out)
{
    const char *p = *s;
    u64 v = 0;
    int base = 10, digits = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        base = 16, p += 2;
    for (;; p++, digits++) {
        int c = *p, dv;
        if (c >= '0' && c <= '9')
            dv = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f')
            dv = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F')
            dv = c - 'A' + 10;
        else
            break;
        v = v * base + dv;
    }
    if (!digits)
        return -1;
    *s = p;
    *out = v;
    return 0;
}

static int parse_device(const char *s, u64 *base, u64 *size, u32 *gsi)
{
    u64 g;
    if (take_number(&s, size))
        return -1;
    switch (*s) {                        /* memparse's suffixes, as Linux reads it */
    case 'G': case 'g': *size <<= 10; /* fall through */
    case 'M': case 'm': *size <<= 10; /* fall through */
    case 'K': case 'k': *size <<= 10; s++; break;
    default: break;
    }
    if (*s++ != '@' || take_number(&s, base) || *s++ != ':' || take_number(&s, &g))
        return -1;
    if (*s && *s != ' ' && *s != ':')
        return -1;
    *gsi = (u32)g;
    return 0;
}

int virtio_mmio_cmdline(int index, u64 *base, u64 *size, u32 *gsi)
{
    static const char key[] = "virtio_mmio.device=";
    for (const char *s = cmdline(); *s;) {
        while (*s == ' ')
            s++;
        if (str_starts_with(s, key)) {
            if (parse_device(s + sizeof(key) - 1, base, size, gsi)) {
                char word[64];
                size_t n = 0;
                while (s[n] && s[n] != ' ' && n + 1 < sizeof(word))
                    word[n] = s[n], n++;
                word[n] = 0;
                printf("virtio mmio: cannot parse %s\n", word);
            } else if (index-- == 0)
                return 0;
        }
        while (*s && *s != ' ')
            s++;
    }
    return -1;
}

int virtio_mmio_open(struct virtio_dev *d, u64 base, u32 gsi)
{
    virtio_dev_clear(d, &virtio_mmio_transport);
    d->mmio_base = base;
    d->gsi = gsi;
    snprintf(d->name, sizeof(d->name), "mmio 0x%lx", base);
    u32 magic = rd(d, MMIO_MAGIC), version = rd(d, MMIO_VERSION), id = rd(d, MMIO_DEVICE_ID);
    if (magic != MMIO_MAGIC_VALUE || version != 2 || id == 0) {
        /* Version 1 is the legacy layout; DeviceID 0 a placeholder window. */
        VIRTIO_ERR(d, "not a virtio-mmio version 2 device: magic 0x%x version %u device %u",
                   magic, version, id);
        return -1;
    }
    return 0;
}

u32 virtio_mmio_device_id(u64 base, u64 size)
{
    if (size < MMIO_MIN_SIZE || mmio_read32(base + MMIO_MAGIC) != MMIO_MAGIC_VALUE)
        return 0;
    return mmio_read32(base + MMIO_DEVICE_ID);
}

static u8 mmio_get_status(struct virtio_dev *d) { return (u8)rd(d, MMIO_STATUS); }
static void mmio_set_status(struct virtio_dev *d, u8 s) { wr(d, MMIO_STATUS, s); }

static u64 mmio_regs(const struct virtio_dev *d) { return d->mmio_base; }

static int mmio_num_queues(struct virtio_dev *d) { (void)d; return VIRTIO_MAX_QUEUES; }

/* Devices whose interrupt is routed, by window: the handler gets only the vector.
 * Keyed by base rather than by struct virtio_dev, since a kernel may open several
 * devices in turn through one struct (virtio_blk looking for a serial). */
static struct { u64 base; int vector; } routed[8];

static void gsi_irq(struct trap_frame *f)
{
    int any = 0;
    for (u32 i = 0; i < ARRAY_SIZE(routed); i++) {
        if (!routed[i].base || routed[i].vector != (int)f->vector)
            continue;
        u32 why = mmio_read32(routed[i].base + MMIO_INT_STATUS);
        if (why) {
            mmio_write32(routed[i].base + MMIO_INT_ACK, why);
            any = 1;
        }
    }
    if (any)
        virtio_irqs++;      /* the runtime sends the LAPIC EOI */
}

static int mmio_irq_setup(struct virtio_dev *d)
{
    if (!d->irq_vector)
        return 0;
    if ((int)d->gsi > ioapic_max_pin()) {
        VIRTIO_ERR(d, "GSI %u is beyond the IOAPIC's pins (0-%d)", d->gsi, ioapic_max_pin());
        return -1;
    }
    u32 slot = ARRAY_SIZE(routed);
    for (u32 i = 0; i < ARRAY_SIZE(routed); i++) {
        if (routed[i].base == d->mmio_base) {
            slot = i;
            break;
        }
        if (!routed[i].base && slot == ARRAY_SIZE(routed))
            slot = i;
    }
    if (slot == ARRAY_SIZE(routed)) {
        VIRTIO_ERR(d, "too many virtio-mmio interrupts");
        return -1;
    }
    routed[slot].base = d->mmio_base;
    routed[slot].vector = d->irq_vector;
    trap_set_handler(d->irq_vector, gsi_irq);
    lapic_enable();
    /* The DSDT gives these GSIs as edge-triggered, active high (Interrupt(,Edge,
     * ActiveHigh)): the VMM pulses the line through an irqfd per interrupt, so the
     * IOAPIC's default ISA programming is the right one. */
    ioapic_route((int)d->gsi, d->irq_vector, lapic_id());
    return 0;
}

static u16 mmio_queue_max(struct virtio_dev *d, int i)
{
    wr(d, MMIO_QUEUE_SEL, (u32)i);
    if (rd(d, MMIO_QUEUE_READY)) {       /* 4.2.3.2: must not be in use */
        VIRTIO_ERR(d, "queue %d: QueueReady is already set", i);
        return 0;
    }
    u32 max = rd(d, MMIO_QUEUE_NUM_MAX);
    return max > 0xFFFF ? 0xFFFF : (u16)max;
}

static int mmio_queue_enable(struct virtio_dev *d, struct virtq *q)
{
    wr(d, MMIO_QUEUE_NUM, q->size);
    wr64(d, MMIO_QUEUE_DESC, (u64)q->desc);
    wr64(d, MMIO_QUEUE_DRIVER, (u64)q->avail);
    wr64(d, MMIO_QUEUE_DEVICE, (u64)q->used);
    q->notify_addr = d->mmio_base + MMIO_QUEUE_NOTIFY;
    wr(d, MMIO_QUEUE_READY, 1);
    return 0;
}

static void mmio_notify(struct virtq *q) { mmio_write32(q->notify_addr, q->index); }

static u32 mmio_config_generation(struct virtio_dev *d) { return rd(d, MMIO_CONFIG_GEN); }
static u32 mmio_config_read32(struct virtio_dev *d, u32 off) { return rd(d, MMIO_CONFIG + off); }

const struct virtio_transport virtio_mmio_transport = {
    .name = "mmio",
    .irq_name = "gsi",
    .get_status = mmio_get_status,
    .set_status = mmio_set_status,
    .regs = mmio_regs,
    .dev_features_sel = MMIO_DEV_FEATURES_SEL, .dev_features = MMIO_DEV_FEATURES,
    .drv_features_sel = MMIO_DRV_FEATURES_SEL, .drv_features = MMIO_DRV_FEATURES,
    .num_queues = mmio_num_queues,
    .irq_setup = mmio_irq_setup,
    .irq_done = NULL,
    .queue_max = mmio_queue_max,
    .queue_enable = mmio_queue_enable,
    .notify = mmio_notify,
    .config_generation = mmio_config_generation,
    .config_read32 = mmio_config_read32,
};
