/* virtio-blk's common requests in C: a kick pops every available chain of a split
 * virtqueue and hands plain reads, writes and flushes to the disk's backend in one call
 * (its io_uring, or the thread pool of aio=threads behind the same interface, io_pool.c);
 * a completion batch writes the status bytes and used-ring entries in one call. Python
 * (blk.py) calls both under the device's lock, so one side at a time touches a queue.
 *
 * The guest is hostile: every index, length and address it wrote is checked here as
 * queue.py checks it (indices inside their table, a chain at most its table's size and
 * PVB_MAX_CHAIN in all, indirect tables only when negotiated and never nested, readable
 * buffers before writable ones, every buffer inside one RAM region). Whatever this path
 * does not serve itself, an invalid chain above all, it leaves in the available ring and
 * returns PVB_PYTHON: Python pops that chain with queue.py and either serves it
 * (GET_ID, DISCARD, WRITE_ZEROES, a cache=none bounce, an I/O error status) or fails the
 * device with the message queue.py gives. So the C path never decides an error, and a bad
 * chain costs it at most one walk of bounded length.
 *
 * A FLUSH goes to the ring with IOSQE_IO_DRAIN (uring.c; the pool drains alike): it starts
 * once every operation submitted before it has completed, and nothing after it starts
 * until it has. Python asks for its FLUSHes (hold_flush) while it holds writes not yet
 * submitted.
 *
 * Buffers the device writes (read data, the status byte) are marked in pyvisor's written
 * map when the chain is popped, as GuestMemory.buffer() marks them for Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>

#include "blk_ring.h"

#define PVB_TAG (1ULL << 63)       /* user_data of the C path's operations */
#define PVB_MAX_CHAIN 1024         /* as queue.py's MAX_CHAIN */
#define PVB_INLINE_IOV 4
#define SECTOR_SHIFT 9
#define PAGE_SHIFT 12

struct slot {
    struct pvb_queue *q;
    uint8_t *status;
    uint32_t length;              /* data bytes; the result a success returns */
    uint16_t head;
    uint8_t op;
    struct iovec *iov;            /* inline or allocated (more than PVB_INLINE_IOV) */
    struct iovec inline_iov[PVB_INLINE_IOV];
    int next_free;
};

struct pvb_disk {
    struct pvu_ring *ring;
    int event_fd;                 /* the ring's completion eventfd */
    uint64_t size, max_transfer;
    unsigned align, direct, readonly, nslots;
    int free_head;
    struct pvb_report report;
    struct slot slots[];
};

struct seg {
    uint8_t *host;
    uint32_t len;
    uint8_t write;
    uint8_t region;
};

struct pvb_disk *pvb_open(struct pvu_ring *ring, int event_fd, uint64_t size,
                          unsigned align, int readonly, uint64_t max_transfer,
                          unsigned slots)
{
    struct pvb_disk *d = calloc(1, sizeof(*d) + slots * sizeof(struct slot));
    if (!d)
        return NULL;
    d->ring = ring;
    d->event_fd = event_fd;
    d->size = size;
    d->direct = align > 1;            /* O_DIRECT: buffers must be aligned too */
    d->align = align < 512 ? 512 : align;
    d->readonly = !!readonly;
    d->max_transfer = max_transfer;
    d->nslots = slots;
    d->free_head = slots ? 0 : -1;
    for (unsigned i = 0; i < slots; i++)
        d->slots[i].next_free = i + 1 < slots ? (int)i + 1 : -1;
    return d;
}

void pvb_close(struct pvb_disk *d)
{
    for (unsigned i = 0; d && i < d->nslots; i++)
        if (d->slots[i].iov && d->slots[i].iov != d->slots[i].inline_iov)
            free(d->slots[i].iov);
    free(d);
}

struct pvb_report *pvb_report(struct pvb_disk *d)
{
    return &d->report;
}

/* The host address of guest [gpa, gpa + len) if it lies inside one region, else NULL. */
static uint8_t *translate(const struct pvb_queue *q, uint64_t gpa, uint64_t len,
                          uint8_t *region)
{
    for (unsigned i = 0; i < q->nregions; i++) {
        const struct pvb_region *r = &q->regions[i];
        if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len) {
            *region = (uint8_t)i;
            return r->host + (gpa - r->gpa);
        }
    }
    return NULL;
}

static void mark_written(const struct pvb_queue *q, const struct seg *s)
{
    if (!s->len)
        return;
    const struct pvb_region *r = &q->regions[s->region];
    uint64_t off = (uint64_t)(s->host - r->host);
    memset(r->written + (off >> PAGE_SHIFT), 1,
           ((off + s->len - 1) >> PAGE_SHIFT) - (off >> PAGE_SHIFT) + 1);
}

/* Walk chain `head` into segs, as queue.py's _walk does; the number of buffers, or -1
 * for anything queue.py would refuse or this path does not take (too many buffers). */
static int walk(const struct pvb_queue *q, uint16_t head, struct seg *segs)
{
    const uint8_t *table = q->desc;
    unsigned count = q->size, index = head, seen = 0, total = 0, n = 0;
    int indirect = 0, writing = 0;
    for (;;) {
        struct vring_desc desc;
        if (index >= count || ++seen > count || ++total > PVB_MAX_CHAIN)
            return -1;
        memcpy(&desc, table + 16 * (size_t)index, sizeof(desc));   /* read once */
        if (desc.flags & VRING_DESC_F_INDIRECT) {
            uint8_t region;
            if (indirect || !q->indirect || desc.flags & VRING_DESC_F_NEXT ||
                desc.len == 0 || desc.len % 16 || desc.len / 16 > PVB_MAX_CHAIN)
                return -1;
            table = translate(q, desc.addr, desc.len, &region);
            if (!table)
                return -1;
            count = desc.len / 16;
            index = seen = 0;
            indirect = 1;
            total--;          /* the indirect descriptor itself carries no buffer */
            continue;
        }
        if (n == PVB_MAX_SEGMENTS + 2)
            return -1;
        struct seg *s = &segs[n];
        s->host = translate(q, desc.addr, desc.len, &s->region);
        if (!s->host)
            return -1;
        s->len = desc.len;
        s->write = !!(desc.flags & VRING_DESC_F_WRITE);
        if (writing && !s->write)
            return -1;
        writing = s->write;
        n++;
        if (!(desc.flags & VRING_DESC_F_NEXT))
            return (int)n;
        index = desc.next;
    }
}

static int aligned(const struct pvb_disk *d, const struct seg *s, int n)
{
    for (int i = 0; i < n; i++)
        if (((uintptr_t)s[i].host | s[i].len) % d->align)
            return 0;
    return 1;
}

/* Start the request at `head`: 0 when it went to the ring, -1 when Python must see it. */
static int start(struct pvb_disk *d, struct pvb_queue *q, uint16_t head, int hold_flush)
{
    struct seg segs[PVB_MAX_SEGMENTS + 2];
    int n = walk(q, head, segs);
    /* the usual layout: a 16-byte header buffer, data buffers, a status buffer */
    if (n < 2 || segs[0].write || segs[0].len != sizeof(struct virtio_blk_outhdr) ||
        !segs[n - 1].write || segs[n - 1].len != 1 || d->free_head < 0)
        return -1;
    struct virtio_blk_outhdr hdr;
    memcpy(&hdr, segs[0].host, sizeof(hdr));
    struct seg *data = &segs[1];
    int ndata = n - 2, op;
    uint64_t length = 0;
    for (int i = 0; i < ndata; i++)
        length += data[i].len;
    if (hdr.type == VIRTIO_BLK_T_IN || hdr.type == VIRTIO_BLK_T_OUT) {
        op = hdr.type == VIRTIO_BLK_T_IN ? PVU_READ : PVU_WRITE;
        for (int i = 0; i < ndata; i++)
            if (data[i].write != (op == PVU_READ))
                return -1;
        if ((op == PVU_WRITE && d->readonly) || length > d->max_transfer ||
            length % d->align || hdr.sector > d->size >> SECTOR_SHIFT ||
            (hdr.sector << SECTOR_SHIFT) % d->align ||
            length > d->size - (hdr.sector << SECTOR_SHIFT))
            return -1;
        if (d->direct && !aligned(d, data, ndata))
            return -1;                      /* bounced by Python */
    } else if (hdr.type == VIRTIO_BLK_T_FLUSH) {
        if (d->readonly || hold_flush)
            return -1;
        op = PVU_FSYNC;
        ndata = 0;
        length = 0;
    } else {
        return -1;
    }
    if (!pvu_space(d->ring)) {
        pvu_submit(d->ring, 0);
        if (!pvu_space(d->ring))
            return -1;
    }
    int index = d->free_head;
    struct slot *sl = &d->slots[index];
    sl->iov = ndata <= PVB_INLINE_IOV ? sl->inline_iov : malloc(ndata * sizeof(struct iovec));
    if (!sl->iov) {
        sl->iov = NULL;
        return -1;
    }
    for (int i = 0; i < ndata; i++) {
        sl->iov[i].iov_base = data[i].host;
        sl->iov[i].iov_len = data[i].len;
        if (op == PVU_READ)
            mark_written(q, &data[i]);
    }
    mark_written(q, &segs[n - 1]);
    /* a flush's sector means nothing (and as an fsync range it would be refused) */
    uint64_t offset = op == PVU_FSYNC ? 0 : hdr.sector << SECTOR_SHIFT;
    if (pvu_queue(d->ring, op, ndata ? sl->iov : NULL, (unsigned)ndata, offset,
                  PVB_TAG | (uint64_t)index)) {
        if (sl->iov != sl->inline_iov)
            free(sl->iov);
        sl->iov = NULL;
        return -1;
    }
    d->free_head = sl->next_free;
    sl->q = q;
    sl->status = segs[n - 1].host;
    sl->length = (uint32_t)length;
    sl->head = head;
    sl->op = (uint8_t)op;
    q->in_flight++;
    d->report.in_flight++;
    return 0;
}

static uint16_t load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

int pvb_serve(struct pvb_disk *d, struct pvb_queue *q, unsigned room, int hold_flush)
{
    int ret = PVB_EMPTY;
    if (!q->avail)
        return PVB_PYTHON;
    uint16_t *avail_event = (uint16_t *)(q->used + 4 + 8 * (size_t)q->size);
    for (;;) {
        uint16_t avail_idx = load16(q->avail + 2);
        uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
        if (!pending) {
            if (!q->event_idx)
                break;
            /* ask for a kick at the next entry; the store is seen before avail idx is
             * loaded again (a store-load pair: a full fence, as queue.py's pv_mb) */
            __atomic_store_n(avail_event, q->last_avail, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (load16(q->avail + 2) == q->last_avail)
                break;
            continue;
        }
        if (pending > q->size) {
            ret = PVB_PYTHON;      /* queue.py says what is wrong */
            break;
        }
        if (!room) {
            ret = PVB_FULL;
            break;
        }
        uint16_t head;
        memcpy(&head, q->avail + 4 + 2 * (size_t)(q->last_avail % q->size), 2);
        if (start(d, q, head, hold_flush)) {
            ret = PVB_PYTHON;
            break;
        }
        q->last_avail++;
        room--;
    }
    if (ret != PVB_EMPTY && q->event_idx)
        __atomic_store_n(avail_event, q->last_avail, __ATOMIC_RELAXED);
    int err = pvu_submit(d->ring, 0);
    if (err < 0 && err != -EAGAIN && err != -EBUSY && err != -EINTR)
        return err;
    return ret;
}

/* vring_need_event: did the used index pass `event` moving from old to new? */
static int need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

int pvb_needs_interrupt(struct pvb_queue *q)
{
    uint16_t old = q->signalled_used, new_idx = q->used_idx;
    if (old == new_idx || !q->avail)
        return 0;
    q->signalled_used = new_idx;
    /* used idx stored before used_event or the flags are loaded (a store-load pair) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (q->event_idx) {
        uint16_t used_event;
        memcpy(&used_event, q->avail + 4 + 2 * (size_t)q->size, 2);
        return need_event(used_event, new_idx, old);
    }
    uint16_t flags;
    memcpy(&flags, q->avail, 2);
    return !(flags & VRING_AVAIL_F_NO_INTERRUPT);
}

static void push_used(struct pvb_queue *q, uint16_t head, uint32_t written)
{
    uint8_t *elem = q->used + 4 + 8 * (size_t)(q->used_idx % q->size);
    uint32_t id = head;
    memcpy(elem, &id, 4);
    memcpy(elem + 4, &written, 4);
    q->used_idx++;
    __atomic_store_n((uint16_t *)(q->used + 2), q->used_idx, __ATOMIC_RELEASE);
}

/* Return the C request of a completion: status byte and used entry, unless dropped. */
static void complete(struct pvb_disk *d, uint64_t token, int32_t res, int drop)
{
    unsigned index = (unsigned)(token & ~PVB_TAG);
    if (index >= d->nslots)
        return;
    struct slot *sl = &d->slots[index];
    struct pvb_queue *q = sl->q;
    int ok = res >= 0 && (uint32_t)res == sl->length;
    if (!ok) {
        d->report.failures++;
        d->report.last_error = res < 0 ? -res : EIO;
    }
    if (!drop && q->used) {
        *sl->status = ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
        push_used(q, sl->head, (ok && sl->op == PVU_READ ? sl->length : 0) + 1);
        if (q->index < 64)
            d->report.touched |= 1ULL << q->index;
    }
    if (sl->iov != sl->inline_iov)
        free(sl->iov);
    sl->iov = NULL;
    q->in_flight--;
    d->report.in_flight--;
    sl->next_free = d->free_head;
    d->free_head = (int)index;
}

unsigned pvb_reap(struct pvb_disk *d, uint64_t *user_data, int32_t *result, unsigned max,
                  int drop)
{
    unsigned n = 0;
    uint64_t token;
    int32_t res;
    while (n < max && pvu_reap(d->ring, &token, &res, 1)) {
        if (token & PVB_TAG) {
            complete(d, token, res, drop);
        } else {
            user_data[n] = token;
            result[n++] = res;
        }
    }
    return n;
}

/* A kick: serve the queue; when Python has nothing in flight on the ring, also wait for a
 * lone request (a driver at depth 1: no round trip through the eventfd and the I/O
 * thread before its interrupt), return what completed, and take the completion signal
 * once nothing is left in flight. */
int pvb_kick(struct pvb_disk *d, struct pvb_queue *q, unsigned room, int hold_flush,
             int python_idle)
{
    unsigned before = d->report.in_flight;
    int ret = pvb_serve(d, q, room, hold_flush);
    if (ret < 0 || !python_idle)
        return ret;
    uint64_t token;
    int32_t res;
    if (ret == PVB_EMPTY && !before && d->report.in_flight == 1 &&
        !pvu_peek(d->ring, &token, &res))   /* not already done inside the submission */
        pvu_submit(d->ring, 1);     /* an error or a signal: reaped later, as usual */
    while (pvu_peek(d->ring, &token, &res) && token & PVB_TAG) {
        pvu_reap(d->ring, &token, &res, 1);
        complete(d, token, res, 0);
    }
    if (!d->report.in_flight) {
        uint64_t count;
        if (read(d->event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
            return -errno;
    }
    return ret;
}
