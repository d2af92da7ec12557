/* pyvisor._uring: one io_uring per virtio-blk disk, over the raw syscalls (no liburing),
 * or for aio=threads the same interface over a pool of threads (io_pool.c).
 *
 * The ring is made disabled, given the disk's fd as its only fixed file and an eventfd
 * for completions, then restricted before it is enabled: READV, WRITEV and FSYNC on
 * fixed files only (IOSQE_IO_DRAIN allowed, which orders a flush after the writes before
 * it), and no further io_uring_register calls. So io_uring_enter, which
 * pyvisor's seccomp filter lets through, can do nothing with this ring but move disk data
 * into and out of the buffers pyvisor names; io_uring_setup and io_uring_register stay
 * denied by the filter.
 *
 * x86-64 is strongly ordered: the release and acquire fences below are compiler barriers
 * there, and order the ring indices against the entries on any architecture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io_pool.h"
#include "uring.h"

struct pvu_ring {
    int fd;
    unsigned sq_entries, cq_entries, sq_mask, cq_mask;
    unsigned *sq_head, *sq_tail, *sq_array;
    unsigned *cq_head, *cq_tail;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_map_size, cq_map_size, sqes_size;
    unsigned queued;    /* entries written to the SQ and not yet handed to the kernel */
    struct io_pool *pool;   /* aio=threads: every call goes here, and nothing above is used */
};

static long uring_setup(unsigned entries, struct io_uring_params *p)
{
    return syscall(__NR_io_uring_setup, entries, p);
}

static long uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    return syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static long uring_register(int fd, unsigned op, const void *arg, unsigned nr)
{
    return syscall(__NR_io_uring_register, fd, op, arg, nr);
}

static void unmap_ring(struct pvu_ring *r)
{
    if (r->pool)
        pool_close(r->pool);
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_size);
    if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_size);
    if (r->sq_map && r->sq_map != MAP_FAILED)
        munmap(r->sq_map, r->sq_map_size);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

static int restrict_ring(int fd)
{
    struct io_uring_restriction res[5];
    memset(res, 0, sizeof(res));
    res[0].opcode = IORING_RESTRICTION_SQE_OP;
    res[0].sqe_op = IORING_OP_READV;
    res[1].opcode = IORING_RESTRICTION_SQE_OP;
    res[1].sqe_op = IORING_OP_WRITEV;
    res[2].opcode = IORING_RESTRICTION_SQE_OP;
    res[2].sqe_op = IORING_OP_FSYNC;
    res[3].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[3].sqe_flags = IOSQE_FIXED_FILE | IOSQE_IO_DRAIN;
    res[4].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
    res[4].sqe_flags = IOSQE_FIXED_FILE;
    if (uring_register(fd, IORING_REGISTER_RESTRICTIONS, res, 5) < 0)
        return -errno;
    if (uring_register(fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
        return -errno;
    return 0;
}

struct pvu_ring *pvu_open(unsigned entries, int file_fd, int event_fd, int *error)
{
    struct io_uring_params p;
    struct pvu_ring *r = calloc(1, sizeof(*r));
    if (!r) {
        *error = ENOMEM;
        return NULL;
    }
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_R_DISABLED;
    r->fd = uring_setup(entries, &p);
    if (r->fd < 0) {
        *error = errno;
        r->fd = -1;
        unmap_ring(r);
        return NULL;
    }
    r->sq_map_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP && r->cq_map_size > r->sq_map_size)
        r->sq_map_size = r->cq_map_size;
    r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED)
        goto fail;
    r->cq_map = p.features & IORING_FEAT_SINGLE_MMAP ? r->sq_map :
        mmap(NULL, r->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
             r->fd, IORING_OFF_CQ_RING);
    if (r->cq_map == MAP_FAILED)
        goto fail;
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->sq_head = (unsigned *)((char *)r->sq_map + p.sq_off.head);
    r->sq_tail = (unsigned *)((char *)r->sq_map + p.sq_off.tail);
    r->sq_mask = *(unsigned *)((char *)r->sq_map + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)((char *)r->sq_map + p.sq_off.array);
    r->cq_head = (unsigned *)((char *)r->cq_map + p.cq_off.head);
    r->cq_tail = (unsigned *)((char *)r->cq_map + p.cq_off.tail);
    r->cq_mask = *(unsigned *)((char *)r->cq_map + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)((char *)r->cq_map + p.cq_off.cqes);
    if (uring_register(r->fd, IORING_REGISTER_FILES, &file_fd, 1) < 0 ||
        uring_register(r->fd, IORING_REGISTER_EVENTFD, &event_fd, 1) < 0)
        goto fail;
    *error = -restrict_ring(r->fd);
    if (*error) {
        unmap_ring(r);
        return NULL;
    }
    return r;
fail:
    *error = errno;
    unmap_ring(r);
    return NULL;
}

struct pvu_ring *pvu_open_threads(unsigned entries, int file_fd, int event_fd,
                                  unsigned threads, int *error)
{
    struct pvu_ring *r = calloc(1, sizeof(*r));
    if (!r) {
        *error = ENOMEM;
        return NULL;
    }
    r->fd = -1;
    r->pool = pool_open(entries, file_fd, event_fd, threads, error);
    if (!r->pool) {
        free(r);
        return NULL;
    }
    return r;
}

unsigned pvu_space(const struct pvu_ring *r)
{
    if (r->pool)
        return pool_space(r->pool);
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    return r->sq_entries - (*r->sq_tail - head);
}

int pvu_queue(struct pvu_ring *r, int op, const struct iovec *iov, unsigned count,
              uint64_t offset, uint64_t user_data)
{
    if (r->pool)
        return pool_queue(r->pool, op, iov, count, offset, user_data);
    if (!pvu_space(r))
        return -EBUSY;
    unsigned tail = *r->sq_tail, index = tail & r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[index];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = op == PVU_READ ? IORING_OP_READV : op == PVU_WRITE ? IORING_OP_WRITEV
                                                                    : IORING_OP_FSYNC;
    /* a flush starts once everything submitted before it has completed (and holds back
     * what comes after it): virtio-blk's FLUSH guarantee, kept by the kernel */
    sqe->flags = IOSQE_FIXED_FILE | (op == PVU_FSYNC ? IOSQE_IO_DRAIN : 0);
    sqe->fd = 0;                          /* the one registered file */
    sqe->off = offset;
    sqe->addr = (uint64_t)(uintptr_t)iov;
    sqe->len = op == PVU_FSYNC ? 0 : count;
    if (op == PVU_FSYNC)
        sqe->fsync_flags = IORING_FSYNC_DATASYNC;
    sqe->user_data = user_data;
    r->sq_array[index] = index;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    r->queued++;
    return 0;
}

int pvu_submit(struct pvu_ring *r, unsigned wait)
{
    if (r->pool)
        return pool_submit(r->pool, wait);
    if (!r->queued && !wait)
        return 0;                   /* nothing to hand over: no system call */
    long done = uring_enter(r->fd, r->queued, wait, wait ? IORING_ENTER_GETEVENTS : 0);
    if (done < 0)
        return -errno;
    r->queued -= (unsigned)done <= r->queued ? (unsigned)done : r->queued;
    return (int)done;
}

unsigned pvu_reap(struct pvu_ring *r, uint64_t *user_data, int32_t *result, unsigned max)
{
    if (r->pool)
        return pool_reap(r->pool, user_data, result, max);
    unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE), n = 0;
    while (head != tail && n < max) {
        const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        user_data[n] = cqe->user_data;
        result[n] = cqe->res;
        n++;
        head++;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return n;
}

/* The next completion, left in the ring; 0 when there is none. */
int pvu_peek(const struct pvu_ring *r, uint64_t *user_data, int32_t *result)
{
    if (r->pool)
        return pool_peek(r->pool, user_data, result);
    unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    if (head == tail)
        return 0;
    const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
    *user_data = cqe->user_data;
    *result = cqe->res;
    return 1;
}

void pvu_close(struct pvu_ring *r)
{
    unmap_ring(r);
}
