/* virtio_hostile: chains that would make a naive VMM allocate or work far beyond the
 * guest's RAM (run with --mem 128M --rng --disk IMG --console virtio).  Every buffer
 * below names the same 8 MiB of RAM at ALIAS, so the lengths a chain declares add up
 * to hundreds of MiB the guest does not have:
 *   rng-alias    virtio-rng: one indirect chain of 64 writable 8 MiB descriptors
 *   blk-discard  virtio-blk DISCARD whose segment data is 100 readable 8 MiB buffers
 *   console-tx   virtio-console transmitq: 64 readable 8 MiB buffers
 *   rng-icycle   virtio-rng: a 2-entry cycle in an indirect table declared 4M entries
 *                (64 MiB, inside RAM) long
 * For each, one line "<case>: used=<0|1> len=<used length> needs_reset=<0|1>" (blk adds
 * " blk_status=<status byte>"): the device either completed the request (within its
 * own bounds) or gave up (DEVICE_NEEDS_RESET); both are fine, a hang is not.  Then each
 * device is reset and serves one ordinary request ("rng recovered", "blk recovered",
 * "console recovered"), and "hostile: done" ends the run with exit status 5 (so
 * the guest, not a reset or a timeout, ended it), or "FAIL: ..." with
 * STATUS_TEST_FAILED. */
#include "runtime.h"

#define ALIAS        0x1000000ull    /* 16 MiB: the 8 MiB every buffer names */
#define ALIAS_LEN    (8u << 20)
#define CYCLE_TABLE  0x2000000ull    /* 32 MiB: the cycle's table, 64 MiB declared */
#define CYCLE_LEN    (16u << 22)
#define WANT         VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC)
#define DISCARD      11              /* VIRTIO_BLK_T_DISCARD */
#define TRANSMITQ    1
#define DONE_STATUS  5

static struct virtio_dev rng, blk, con;
static struct virtq_desc table[128] __attribute__((aligned(16)));
static struct { u32 type, reserved; u64 sector; } hdr = { DISCARD, 0, 0 };
static volatile u8 blk_status;
static u8 data[512];

static __attribute__((noreturn)) void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    vm_exit(STATUS_TEST_FAILED);
}

static void open_dev(struct virtio_dev *d, u32 id, int nqueues, const char *what)
{
    if (virtio_find(d, id, 0) != 0 || virtio_init(d, WANT, nqueues))
        fail(what);
    if (!virtio_has(d, VIRTIO_RING_F_INDIRECT_DESC))
        fail("the device does not offer VIRTIO_RING_F_INDIRECT_DESC");
}

/* Descriptor 0 of q names the table at addr (len bytes); publish it and kick. */
static void post_indirect(struct virtq *q, u64 addr, u32 len)
{
    q->desc[0] = (struct virtq_desc){ addr, len, VIRTQ_DESC_F_INDIRECT, 0 };
    virtq_publish(q, 0);
    virtq_notify(q);
}

/* n entries of table t, all naming ALIAS, device-writable when write. */
static void alias_entries(struct virtq_desc *t, int from, int n, int write)
{
    for (int i = from; i < from + n; i++)
        t[i] = (struct virtq_desc){ ALIAS, ALIAS_LEN,
                                    (u16)(VIRTQ_DESC_F_NEXT | (write ? VIRTQ_DESC_F_WRITE : 0)),
                                    (u16)(i + 1) };
}

/* Waits until the request is used or the device needs a reset, and reports which. */
static void outcome(const char *name, struct virtio_dev *d, struct virtq *q, int with_status)
{
    u64 deadline = time_ms() + VIRTIO_TIMEOUT_MS;
    volatile u16 *used_idx = &q->used->idx;
    int used;
    u8 st;
    do {
        used = *used_idx != q->last_used;
        st = virtio_status(d);
    } while (!used && !(st & VIRTIO_NEEDS_RESET) && time_ms() < deadline);
    u32 len = 0;
    if (used) {
        barrier();
        len = ((volatile struct virtq_used *)q->used)->ring[q->last_used % q->size].len;
        q->last_used++;
    }
    printf("%s: used=%d len=%u needs_reset=%d", name, used, len, !!(st & VIRTIO_NEEDS_RESET));
    if (with_status)
        printf(" blk_status=%u", blk_status);
    printf("\n");
    if (!used && !(st & VIRTIO_NEEDS_RESET))
        fail("neither completed nor DEVICE_NEEDS_RESET");
}

static void rng_read(void)
{
    u8 buf[16];
    memset(buf, 0, sizeof(buf));
    struct virtq_buf b = { (u64)buf, sizeof(buf), 1 };
    if (virtq_submit(&rng.vq[0], &b, 1, 0) != (long)sizeof(buf))
        fail("rng after reset");
}

void kmain(void)
{
    open_dev(&rng, VIRTIO_ID_RNG, 1, "virtio-rng");
    open_dev(&blk, VIRTIO_ID_BLK, 1, "virtio-blk");
    open_dev(&con, VIRTIO_ID_CONSOLE, 2, "virtio-console");

    /* rng-alias: 64 x 8 MiB writable, all the same 8 MiB */
    alias_entries(table, 0, 64, 1);
    table[63].flags = VIRTQ_DESC_F_WRITE;
    post_indirect(&rng.vq[0], (u64)table, 16 * 64);
    outcome("rng-alias", &rng, &rng.vq[0], 0);

    /* blk-discard: header, 100 x 8 MiB of "segments", status */
    blk_status = 0xFF;
    table[0] = (struct virtq_desc){ (u64)&hdr, sizeof(hdr), VIRTQ_DESC_F_NEXT, 1 };
    alias_entries(table, 1, 100, 0);
    table[101] = (struct virtq_desc){ (u64)&blk_status, 1, VIRTQ_DESC_F_WRITE, 0 };
    post_indirect(&blk.vq[0], (u64)table, 16 * 102);
    outcome("blk-discard", &blk, &blk.vq[0], 1);

    /* console-tx: 64 x 8 MiB readable */
    alias_entries(table, 0, 64, 0);
    table[63].flags = 0;
    post_indirect(&con.vq[TRANSMITQ], (u64)table, 16 * 64);
    outcome("console-tx", &con, &con.vq[TRANSMITQ], 0);

    /* rng-icycle: entries 0 -> 1 -> 0 of a table declared 4M entries long */
    if (virtio_init(&rng, WANT, 1))
        fail("rng re-initialisation");
    volatile struct virtq_desc *cycle = (volatile struct virtq_desc *)CYCLE_TABLE;
    cycle[0] = (struct virtq_desc){ ALIAS, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1 };
    cycle[1] = (struct virtq_desc){ ALIAS, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0 };
    post_indirect(&rng.vq[0], CYCLE_TABLE, CYCLE_LEN);
    outcome("rng-icycle", &rng, &rng.vq[0], 0);

    /* Every device works again after a reset. */
    if (virtio_init(&rng, WANT, 1))
        fail("rng re-initialisation");
    rng_read();
    printf("rng recovered\n");
    if (virtio_init(&blk, WANT, 1))
        fail("blk re-initialisation");
    struct virtq_buf r = { (u64)data, 512, 1 };
    if (virtio_blk_request(&blk, VIRTIO_BLK_T_IN, 0, &r, 1, 0) != VIRTIO_BLK_S_OK)
        fail("blk read after reset");
    printf("blk recovered\n");
    if (virtio_init(&con, WANT, 2))
        fail("console re-initialisation");
    static char line[] = "hvc: console recovered\n";
    struct virtq_buf t = { (u64)line, sizeof(line) - 1, 0 };
    if (virtq_submit(&con.vq[TRANSMITQ], &t, 1, 0) < 0)
        fail("console after reset");
    printf("console recovered\n");
    printf("hostile: done\n");
    vm_exit(DONE_STATUS);
}
