"""cffi (API mode) builder for pyvisor._uring: the io_uring ring virtio-blk uses with
`aio=io_uring` (native/uring.c, raw syscalls over <linux/io_uring.h>, no liburing).

A module of its own, apart from pyvisor._native: only the disk's I/O backend loads it,
and a machine without it (or whose kernel refuses io_uring) uses the thread pool.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
struct iovec { void *iov_base; size_t iov_len; };
#define PVU_READ ...
#define PVU_WRITE ...
#define PVU_FSYNC ...
struct pvu_ring;
struct pvu_ring *pvu_open(unsigned entries, int file_fd, int event_fd, int *error);
unsigned pvu_space(const struct pvu_ring *r);
int pvu_queue(struct pvu_ring *r, int op, const struct iovec *iov, unsigned count,
              uint64_t offset, uint64_t user_data);
int pvu_submit(struct pvu_ring *r, unsigned wait);
unsigned pvu_reap(struct pvu_ring *r, uint64_t *user_data, int32_t *result, unsigned max);
void pvu_close(struct pvu_ring *r);
""")
ffibuilder.set_source(
    "pyvisor._uring",
    '#include "uring.h"\n',
    sources=["native/uring.c"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
