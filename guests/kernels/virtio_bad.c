/* virtio_bad: a hostile virtio-blk driver (virtio-mmio or virtio-pci, whichever has
 * the disk).  The command line's case= picks one
 * malformed request; the device should refuse it (DEVICE_NEEDS_RESET), not crash
 * or hang the VMM, and work again after a reset:
 *   oob   a data descriptor far beyond RAM (0x7fff00000000)
 *   loop  descriptor 0 -> 1 -> 0 with NEXT (both device-writable)
 *   iloop the same kind of cycle inside an indirect table
 *   long  an indirect table of queue size + 1 entries (a chain longer than the
 *         queue size: a driver MUST NOT, but the spec asks nothing of the device,
 *         and QEMU and Linux both allow indirect chains longer than the queue, so
 *         the device may refuse it or just do the request)
 *   dir   an IN request whose data buffer is device-readable
 *   idx   avail->idx advanced by more than the queue size
 *   head  an avail ring entry naming descriptor >= queue size
 * prints "case=<c> used=<0|1> status=0x<device_status> needs_reset=<0|1>
 * blk_status=<status byte, 255 if unwritten>", then
 * resets, re-initialises, reads sector 0: "recovered read sum=<n>" and
 * "recovered read ok".  Exit 0 once recovered, STATUS_TEST_FAILED otherwise. */
#include "runtime.h"

#define WANT (VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_BLK_F_RO))

static struct virtio_dev dev;
static struct { u32 type, reserved; u64 sector; } hdr = { VIRTIO_BLK_T_IN, 0, 0 };
static u8 status;
static u8 data[VIRTQ_MAX_SIZE * 512] __attribute__((aligned(4096)));

static __attribute__((noreturn)) void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    vm_exit(STATUS_TEST_FAILED);
}

static struct virtq_buf hdr_buf(void) { return (struct virtq_buf){ (u64)&hdr, sizeof(hdr), 0 }; }
static struct virtq_buf status_buf(void) { return (struct virtq_buf){ (u64)&status, 1, 1 }; }

/* Puts the malformed request in the ring and notifies; 0, or -1 if skipped. */
static int misbehave(const char *c)
{
    struct virtq *q = &dev.vq[0];
    struct virtq_buf b[VIRTQ_MAX_INDIRECT];
    b[0] = hdr_buf();
    b[1] = (struct virtq_buf){ (u64)data, 512, 1 };
    b[2] = status_buf();
    u16 head = 0;
    if (!strcmp(c, "oob")) {
        b[1].addr = 0x7fff00000000ull;
        virtq_add(q, b, 3, 0);
    } else if (!strcmp(c, "loop")) {
        /* Both device-writable, so only the cycle is wrong (a readable one after
         * a writable one would be refused for its order before the loop shows). */
        q->desc[0] = (struct virtq_desc){ (u64)data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1 };
        q->desc[1] = (struct virtq_desc){ (u64)data + 512, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0 };
    } else if (!strcmp(c, "iloop")) {
        if (!virtio_has(&dev, VIRTIO_RING_F_INDIRECT_DESC)) {
            printf("iloop: skipped, the device does not offer VIRTIO_RING_F_INDIRECT_DESC\n");
            return -1;
        }
        virtq_add(q, b, 3, VIRTQ_SUBMIT_INDIRECT);
        q->indirect[2].flags |= VIRTQ_DESC_F_NEXT;    /* status -> data -> status ... */
        q->indirect[2].next = 1;
    } else if (!strcmp(c, "long")) {
        if (!virtio_has(&dev, VIRTIO_RING_F_INDIRECT_DESC)) {
            printf("long: skipped, the device does not offer VIRTIO_RING_F_INDIRECT_DESC\n");
            return -1;
        }
        int n = q->size + 1;        /* header, size - 1 sectors, status */
        for (int i = 1; i < n - 1; i++)
            b[i] = (struct virtq_buf){ (u64)data + 512 * (i - 1), 512, 1 };
        b[n - 1] = status_buf();
        virtq_add(q, b, n, VIRTQ_SUBMIT_INDIRECT);
    } else if (!strcmp(c, "dir")) {
        b[1].write = 0;
        virtq_add(q, b, 3, 0);
    } else if (!strcmp(c, "idx")) {
        virtq_add(q, b, 3, 0);
        q->avail->ring[0] = 0;
        barrier();
        q->avail->idx = (u16)(q->size + 1);   /* claims size + 1 new entries */
        mb();
        virtq_notify(q);
        return 0;
    } else if (!strcmp(c, "head")) {
        virtq_add(q, b, 3, 0);
        head = (u16)(q->size + 3);
    } else {
        fail("unknown case= (oob loop iloop long dir idx head)");
    }
    virtq_publish(q, head);
    virtq_notify(q);
    return 0;
}

void kmain(void)
{
    char c[16] = "";
    cmdline_get("case", c, sizeof(c));
    int found = virtio_find(&dev, VIRTIO_ID_BLK, 0);
    if (found < 0)
        fail("no virtio-blk device");
    if (found || virtio_init(&dev, WANT, 1))
        fail("virtio-blk initialisation");

    status = 0xFF;
    if (!misbehave(c)) {
        /* Either outcome ends the wait: a used entry, or the device giving up. */
        u64 deadline = time_ms() + VIRTIO_TIMEOUT_MS;
        volatile u16 *used_idx = &dev.vq[0].used->idx;
        int used;
        u8 st;
        do {
            used = *used_idx != 0;
            st = virtio_status(&dev);
        } while (!used && !(st & VIRTIO_NEEDS_RESET) && time_ms() < deadline);
        printf("case=%s used=%d status=0x%02x needs_reset=%d blk_status=%u\n", c, used, st,
               !!(st & VIRTIO_NEEDS_RESET), *(volatile u8 *)&status);
    }

    if (virtio_init(&dev, WANT, 1))        /* begins with a reset */
        fail("re-initialisation after reset");
    memset(data, 0, 512);
    struct virtq_buf r = { (u64)data, 512, 1 };
    int st = virtio_blk_request(&dev, VIRTIO_BLK_T_IN, 0, &r, 1, 0);
    if (st != VIRTIO_BLK_S_OK) {
        printf("FAIL: recovered read status=%d\n", st);
        vm_exit(STATUS_TEST_FAILED);
    }
    u32 sum = 0;
    for (int i = 0; i < 512; i++)
        sum += data[i];
    printf("recovered read sum=%u\n", sum);
    printf("recovered read ok\n");
    vm_exit(STATUS_OK);
}
