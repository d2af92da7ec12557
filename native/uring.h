/* pyvisor._uring: see uring.c. */
#ifndef PYVISOR_URING_H
#define PYVISOR_URING_H

#include <stdint.h>
#include <sys/uio.h>
#include <linux/io_uring.h>

/* cdef begin: build_uring.py hands what follows, to "cdef end", to cffi as it is */
enum { PVU_READ = 0, PVU_WRITE = 1, PVU_FSYNC = 2 };

struct pvu_ring;
struct pvu_ring *pvu_open(unsigned entries, int file_fd, int event_fd, int *error);
struct pvu_ring *pvu_open_threads(unsigned entries, int file_fd, int event_fd,
                                  unsigned threads, int *error);
unsigned pvu_space(const struct pvu_ring *r);
int pvu_queue(struct pvu_ring *r, int op, const struct iovec *iov, unsigned count,
              uint64_t offset, uint64_t user_data);
int pvu_submit(struct pvu_ring *r, unsigned wait);
unsigned pvu_reap(struct pvu_ring *r, uint64_t *user_data, int32_t *result, unsigned max);
int pvu_peek(const struct pvu_ring *r, uint64_t *user_data, int32_t *result);
void pvu_close(struct pvu_ring *r);
/* cdef end */

#endif
