/* aio=threads behind uring.c's interface (see io_pool.c); uring.c alone calls these. */
#ifndef PYVISOR_IO_POOL_H
#define PYVISOR_IO_POOL_H

#include <stdint.h>
#include <sys/uio.h>

struct io_pool;
struct io_pool *pool_open(unsigned entries, int file_fd, int event_fd, unsigned threads,
                          int *error);
unsigned pool_space(const struct io_pool *p);
int pool_queue(struct io_pool *p, int op, const struct iovec *iov, unsigned count,
               uint64_t offset, uint64_t user_data);
int pool_submit(struct io_pool *p, unsigned wait);
unsigned pool_reap(struct io_pool *p, uint64_t *user_data, int32_t *result, unsigned max);
int pool_peek(struct io_pool *p, uint64_t *user_data, int32_t *result);
void pool_close(struct io_pool *p);

#endif
