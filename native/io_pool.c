/* aio=threads: a disk's operations served by a few threads in preadv, pwritev and
 * fdatasync, behind the same submission/completion interface as its io_uring (uring.c).
 * So blk_ring.c's C data path and blk_io.py run unchanged on either backend, and a host
 * without io_uring (an old kernel, kernel.io_uring_disabled, a container's seccomp
 * profile) still serves a guest's requests without Python on each one.
 *
 * What the caller sees is what io_uring gives it: operations are queued, handed over
 * together at submit (which may wait for completions), complete in any order, and each
 * completion signals the eventfd. A FLUSH drains as IOSQE_IO_DRAIN does: it starts once
 * every operation handed over before it has completed, and nothing handed over after it
 * starts until it has. The caller (Python, under the device's lock) is one thread at a
 * time; the workers touch only the handed-over operations and the completion ring, both
 * under the pool's lock. At most `entries` operations are outstanding (queued, running or
 * completed and not yet reaped), so neither ring can overflow.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "io_pool.h"
#include "uring.h"

#define WORKER_STACK (256 * 1024)   /* a system call and a signal handler at most */

struct op {
    int op;
    const struct iovec *iov;
    unsigned count;
    uint64_t offset, user_data;
};

struct done {
    uint64_t user_data;
    int32_t result;
};

struct io_pool {
    int file_fd, event_fd;
    unsigned entries;
    unsigned outstanding;           /* the caller's: queued, running, or not yet reaped */
    unsigned queued_tail;           /* the caller's: next free entry of ops */
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    unsigned handed_tail;           /* ops before this are the workers' to start */
    unsigned start;                 /* the next op a worker starts */
    unsigned running;
    int draining;                   /* a FLUSH is running */
    int stopping;
    unsigned cq_head, cq_tail;
    struct op *ops;                 /* entries, used as a ring */
    struct done *cq;                /* entries, used as a ring */
    unsigned nthreads;
    pthread_t *threads;
};

static int32_t perform(const struct io_pool *p, const struct op *o)
{
    ssize_t n;
    do {
        n = o->op == PVU_READ ? preadv(p->file_fd, o->iov, (int)o->count, (off_t)o->offset)
          : o->op == PVU_WRITE ? pwritev(p->file_fd, o->iov, (int)o->count, (off_t)o->offset)
          : fdatasync(p->file_fd);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int32_t)n;
}

/* As io_uring signals a registered eventfd. Only a closed eventfd fails, and then nobody
 * is left to tell. */
static void signal_completion(const struct io_pool *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->event_fd, &one, sizeof(one));
    (void)n;
}

/* Whether the next handed-over op may start now (the lock held). */
static int startable(const struct io_pool *p)
{
    if (p->start == p->handed_tail || p->draining)
        return 0;
    return p->ops[p->start % p->entries].op != PVU_FSYNC || !p->running;
}

static void *worker(void *arg)
{
    struct io_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stopping) {
        if (!startable(p)) {
            pthread_cond_wait(&p->work, &p->lock);
            continue;
        }
        struct op o = p->ops[p->start++ % p->entries];
        p->running++;
        if (o.op == PVU_FSYNC)
            p->draining = 1;
        pthread_mutex_unlock(&p->lock);
        int32_t result = perform(p, &o);
        pthread_mutex_lock(&p->lock);
        p->running--;
        if (o.op == PVU_FSYNC) {   /* this thread starts the next op itself; the rest */
            p->draining = 0;       /* behind the flush need the others */
            pthread_cond_broadcast(&p->work);
        }
        p->cq[p->cq_tail++ % p->entries] = (struct done){o.user_data, result};
        signal_completion(p);
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void stop_workers(struct io_pool *p, unsigned started)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
}

static void free_pool(struct io_pool *p)
{
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p->cq);
    free(p->ops);
    free(p);
}

struct io_pool *pool_open(unsigned entries, int file_fd, int event_fd, unsigned threads,
                          int *error)
{
    struct io_pool *p = calloc(1, sizeof(*p));
    if (!p || !entries || !threads) {
        free(p);
        *error = p ? EINVAL : ENOMEM;
        return NULL;
    }
    p->file_fd = file_fd;
    p->event_fd = event_fd;
    p->entries = entries;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->ops = calloc(entries, sizeof(*p->ops));
    p->cq = calloc(entries, sizeof(*p->cq));
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->ops || !p->cq || !p->threads) {
        free_pool(p);
        *error = ENOMEM;
        return NULL;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    for (; p->nthreads < threads; p->nthreads++) {
        int err = pthread_create(&p->threads[p->nthreads], &attr, worker, p);
        if (err) {
            pthread_attr_destroy(&attr);
            stop_workers(p, p->nthreads);
            free_pool(p);
            *error = err;
            return NULL;
        }
        pthread_setname_np(p->threads[p->nthreads], "blk-io");
    }
    pthread_attr_destroy(&attr);
    return p;
}

unsigned pool_space(const struct io_pool *p)
{
    return p->entries - p->outstanding;
}

int pool_queue(struct io_pool *p, int op, const struct iovec *iov, unsigned count,
               uint64_t offset, uint64_t user_data)
{
    if (p->outstanding == p->entries)
        return -EBUSY;
    /* outside the lock: no worker reads this entry before submit hands it over */
    p->ops[p->queued_tail++ % p->entries] = (struct op){op, iov, count, offset, user_data};
    p->outstanding++;
    return 0;
}

int pool_submit(struct io_pool *p, unsigned wait)
{
    pthread_mutex_lock(&p->lock);
    unsigned handed = p->queued_tail - p->handed_tail;
    p->handed_tail = p->queued_tail;
    if (handed > 1)
        pthread_cond_broadcast(&p->work);
    else if (handed)
        pthread_cond_signal(&p->work);
    /* never for more than can complete: io_uring would wait forever there too */
    if (wait > p->outstanding)
        wait = p->outstanding;
    while (p->cq_tail - p->cq_head < wait)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return (int)handed;
}

unsigned pool_reap(struct io_pool *p, uint64_t *user_data, int32_t *result, unsigned max)
{
    unsigned n = 0;
    pthread_mutex_lock(&p->lock);
    for (; n < max && p->cq_head != p->cq_tail; n++) {
        const struct done *d = &p->cq[p->cq_head++ % p->entries];
        user_data[n] = d->user_data;
        result[n] = d->result;
    }
    pthread_mutex_unlock(&p->lock);
    p->outstanding -= n;
    return n;
}

int pool_peek(struct io_pool *p, uint64_t *user_data, int32_t *result)
{
    pthread_mutex_lock(&p->lock);
    int found = p->cq_head != p->cq_tail;
    if (found) {
        const struct done *d = &p->cq[p->cq_head % p->entries];
        *user_data = d->user_data;
        *result = d->result;
    }
    pthread_mutex_unlock(&p->lock);
    return found;
}

void pool_close(struct io_pool *p)
{
    stop_workers(p, p->nthreads);
    free_pool(p);
}
