/* pyvisor._uring: virtio-blk's data path in C (see blk_ring.c). */
#ifndef PYVISOR_BLK_RING_H
#define PYVISOR_BLK_RING_H

#include <stdint.h>
#include "uring.h"

/* cdef begin: build_uring.py hands what follows, to "cdef end", to cffi as it is */
enum {
    PVB_EMPTY = 0,        /* pvb_serve: the available ring is empty */
    PVB_PYTHON = 1,       /* the next chain is left for Python (unusual, or invalid) */
    PVB_FULL = 2,         /* a bound was reached with chains still available */
    PVB_MAX_REGIONS = 8,
    PVB_MAX_SEGMENTS = 256,   /* data buffers of a request served in C */
};

/* One RAM region of the guest: gpa .. gpa + size at host, one byte per 4 KiB page in
 * written (pyvisor's own dirty map, for snapshots). */
struct pvb_region {
    uint64_t gpa, size;
    uint8_t *host;
    uint8_t *written;
};

/* One split virtqueue as the C path sees it. The Python Virtqueue keeps its ring indices
 * here (blk_ring.py), so both sides always agree on them. */
struct pvb_queue {
    uint8_t *desc, *avail, *used;   /* NULL while the queue is not in use */
    uint16_t size, last_avail, used_idx;
    uint16_t signalled_used;        /* used_idx at the last interrupt (EVENT_IDX) */
    uint8_t event_idx, indirect;
    unsigned index;                 /* the queue's number (completions name it) */
    unsigned in_flight;             /* requests the C path has in flight on it */
    unsigned nregions;
    struct pvb_region regions[PVB_MAX_REGIONS];
};

/* What the C path tells Python, read as fields (no call): Python clears touched and
 * failures once it has acted on them. */
struct pvb_report {
    uint64_t touched;       /* queues (a bit per index, up to 64) given used entries */
    unsigned in_flight;     /* requests the C path has in flight, all queues */
    unsigned failures;      /* requests that failed (IOERR) */
    int last_error;         /* the errno of the last of them */
};

struct pvb_disk;
struct pvb_disk *pvb_open(struct pvu_ring *ring, int event_fd, uint64_t size,
                          unsigned align, int readonly, uint64_t max_transfer,
                          unsigned slots);
struct pvb_report *pvb_report(struct pvb_disk *d);
int pvb_serve(struct pvb_disk *d, struct pvb_queue *q, unsigned room, int hold_flush);
int pvb_kick(struct pvb_disk *d, struct pvb_queue *q, unsigned room, int hold_flush,
             int python_idle);
int pvb_needs_interrupt(struct pvb_queue *q);
unsigned pvb_reap(struct pvb_disk *d, uint64_t *user_data, int32_t *result, unsigned max,
                  int drop);
void pvb_close(struct pvb_disk *d);
/* cdef end */

#endif
