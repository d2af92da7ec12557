/* virtio_blk: drives a virtio-blk disk through the runtime's virtio driver, over
 * virtio-mmio (devices on the command line) or virtio-pci, whichever has it.
 *
 *   transport=<pci|mmio>
 *   capacity=<sectors> seg_max=<n> blk_size=<n> ro=<0|1> serial=<id>
 *   read sum=<u32 byte sum of sectors 0..7>     (one request, 3 data descriptors)
 * command line:
 *   serial=ID   use the disk whose GET_ID serial is ID (default: the first disk)
 *   indirect=1  the read goes through an indirect descriptor table
 *   irq=1       the read completes through an interrupt (MSI-X on PCI, the GSI on
 *               virtio-mmio): "msix irqs=<n>" or "gsi irqs=<n>"; msix=1 is the same
 *   write=1     writes sectors 8..9 (byte i = (i*7+1) & 255, 2 descriptors),
 *               FLUSH, reads back: "write ok"; on a read-only disk the write
 *               must fail with IOERR: "write status=1"
 * Exit 0 on success, STATUS_TEST_FAILED after "FAIL: ..." lines otherwise. */
#include "runtime.h"

#define IRQ_VECTOR 0x50
#define WANT (VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_RO) | \
              VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) | \
              VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC))

static struct virtio_dev dev;
static u8 data[4096] __attribute__((aligned(4096)));
static u8 wbuf[1024] __attribute__((aligned(512)));
static char serial[24];
static int failures;

static void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    failures++;
}

static void finish(void)
{
    vm_exit(failures ? STATUS_TEST_FAILED : STATUS_OK);
}

/* GET_ID: up to 20 bytes, NUL-padded only when shorter. */
static int get_serial(void)
{
    memset(serial, 0, sizeof(serial));
    struct virtq_buf b = { (u64)serial, 20, 1 };
    return virtio_blk_request(&dev, VIRTIO_BLK_T_GET_ID, 0, &b, 1, 0);
}

/* Opens and initialises the disk the command line asks for. */
static int find_disk(int irq)
{
    char want[24];
    int by_serial = !cmdline_get("serial", want, sizeof(want));
    for (int i = 0;; i++) {
        int found = virtio_find(&dev, VIRTIO_ID_BLK, i);
        if (found < 0)
            return -1;
        if (found)
            continue;
        dev.irq_vector = irq ? IRQ_VECTOR : 0;
        if (virtio_init(&dev, WANT, 1))
            continue;
        int st = get_serial();
        if (st != VIRTIO_BLK_S_OK)
            printf("GET_ID status=%d\n", st);
        if (!by_serial || !strcmp(serial, want))
            return 0;
        virtio_reset(&dev);                  /* not this one: leave it quiet */
    }
}

static u32 byte_sum(const u8 *p, u32 n)
{
    u32 s = 0;
    for (u32 i = 0; i < n; i++)
        s += p[i];
    return s;
}

static void do_write(int ro)
{
    for (u32 i = 0; i < sizeof(wbuf); i++)
        wbuf[i] = (u8)(i * 7 + 1);
    struct virtq_buf w[2] = { { (u64)wbuf, 512, 0 }, { (u64)wbuf + 512, 512, 0 } };
    int st = virtio_blk_request(&dev, VIRTIO_BLK_T_OUT, 8, w, 2, 0);
    if (ro) {
        printf("write status=%d\n", st);
        if (st != VIRTIO_BLK_S_IOERR)
            fail("a write to a read-only disk must end with VIRTIO_BLK_S_IOERR");
        return;
    }
    if (st != VIRTIO_BLK_S_OK) {
        printf("FAIL: write status=%d\n", st);
        failures++;
        return;
    }
    if (virtio_has(&dev, VIRTIO_BLK_F_FLUSH)) {
        st = virtio_blk_request(&dev, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0);
        if (st != VIRTIO_BLK_S_OK) {
            printf("FAIL: flush status=%d\n", st);
            failures++;
        }
    }
    memset(data, 0, 1024);
    struct virtq_buf r = { (u64)data, 1024, 1 };
    st = virtio_blk_request(&dev, VIRTIO_BLK_T_IN, 8, &r, 1, 0);
    if (st != VIRTIO_BLK_S_OK) {
        printf("FAIL: read back status=%d\n", st);
        failures++;
        return;
    }
    for (u32 i = 0; i < sizeof(wbuf); i++) {
        if (data[i] != wbuf[i]) {
            printf("FAIL: write mismatch at byte %u: read 0x%x, wrote 0x%x\n", i, data[i], wbuf[i]);
            failures++;
            return;
        }
    }
    printf("write ok\n");
}

void kmain(void)
{
    int irq = cmdline_get_u64("irq", 0) || cmdline_get_u64("msix", 0);
    int indirect = cmdline_get_u64("indirect", 0) != 0;
    if (find_disk(irq)) {
        fail("no (matching) virtio-blk device");
        finish();
    }
    printf("transport=%s\n", virtio_transport_name(&dev));
    u64 capacity = virtio_cfg_read64(&dev, 0);
    u32 seg_max = virtio_has(&dev, VIRTIO_BLK_F_SEG_MAX) ? virtio_cfg_read32(&dev, 0x0C) : 0;
    u32 blk_size = virtio_has(&dev, VIRTIO_BLK_F_BLK_SIZE) ? virtio_cfg_read32(&dev, 0x14) : 512;
    int ro = virtio_has(&dev, VIRTIO_BLK_F_RO);
    printf("capacity=%lu seg_max=%u blk_size=%u ro=%d serial=%s\n", capacity, seg_max,
           blk_size, ro, serial);

    /* Sectors 0..7 as 1 KiB + 2 KiB + 1 KiB: scatter-gather across descriptors. */
    if (seg_max && seg_max < 3)
        printf("note: seg_max %u < 3 data segments\n", seg_max);
    if (indirect && !virtio_has(&dev, VIRTIO_RING_F_INDIRECT_DESC))
        fail("indirect=1 but the device does not offer VIRTIO_RING_F_INDIRECT_DESC");
    memset(data, 0, sizeof(data));
    struct virtq_buf r[3] = { { (u64)data, 1024, 1 }, { (u64)data + 1024, 2048, 1 },
                              { (u64)data + 3072, 1024, 1 } };
    u64 irqs0 = virtio_irqs;
    int st = virtio_blk_request(&dev, VIRTIO_BLK_T_IN, 0, r, 3, indirect ? VIRTQ_SUBMIT_INDIRECT : 0);
    if (st != VIRTIO_BLK_S_OK) {
        printf("FAIL: read status=%d\n", st);
        failures++;
    } else {
        printf("read sum=%u\n", byte_sum(data, sizeof(data)));
    }
    if (irq) {
        printf("%s irqs=%lu\n", virtio_irq_name(&dev), virtio_irqs - irqs0);
        if (virtio_irqs == irqs0)
            fail("no interrupt for the read");
    }
    if (cmdline_get_u64("write", 0))
        do_write(ro);
    finish();
}
