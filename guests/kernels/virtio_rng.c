/* virtio_rng: reads 64 bytes from a virtio-rng device (virtio-mmio or virtio-pci)
 * twice.
 *   transport=<pci|mmio>
 *   rng: <128 hex digits>      (two lines)
 * irq=1: the reads complete through interrupts ("<msix|gsi> irqs=<n>").
 * Fails when a read returns nothing, all zeros, or both reads are equal. */
#include "runtime.h"

static struct virtio_dev dev;
static u8 buf[2][64];

static __attribute__((noreturn)) void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    vm_exit(STATUS_TEST_FAILED);
}

void kmain(void)
{
    int found = virtio_find(&dev, VIRTIO_ID_RNG, 0);
    if (found < 0)
        fail("no virtio-rng device");
    dev.irq_vector = cmdline_get_u64("irq", 0) ? 0x50 : 0;
    if (found || virtio_init(&dev, 0, 1))
        fail("virtio-rng initialisation");
    printf("transport=%s\n", virtio_transport_name(&dev));
    for (int r = 0; r < 2; r++) {
        struct virtq_buf b = { (u64)buf[r], sizeof(buf[r]), 1 };
        long len = virtq_submit(&dev.vq[0], &b, 1, 0);
        if (len <= 0 || len > (long)sizeof(buf[r]))
            fail("rng read: bad used length");
        /* The device may fill less than asked: top up with further requests. */
        for (long got = len; got < (long)sizeof(buf[r]); got += len) {
            b = (struct virtq_buf){ (u64)buf[r] + got, (u32)(sizeof(buf[r]) - got), 1 };
            len = virtq_submit(&dev.vq[0], &b, 1, 0);
            if (len <= 0)
                fail("rng read: bad used length");
        }
        u8 any = 0;
        printf("rng: ");
        for (u32 i = 0; i < sizeof(buf[r]); i++) {
            printf("%02x", buf[r][i]);
            any |= buf[r][i];
        }
        printf("\n");
        if (!any)
            fail("rng returned only zeros");
    }
    int same = 1;
    for (u32 i = 0; i < sizeof(buf[0]); i++)
        same &= buf[0][i] == buf[1][i];
    if (same)
        fail("two rng reads are equal");
    if (dev.irq_vector) {
        printf("%s irqs=%lu\n", virtio_irq_name(&dev), virtio_irqs);
        if (!virtio_irqs)
            fail("no interrupt for the reads");
    }
    vm_exit(STATUS_OK);
}
