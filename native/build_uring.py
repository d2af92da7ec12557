"""cffi (API mode) builder for pyvisor._uring: the I/O backends of virtio-blk, the io_uring
ring of `aio=io_uring` (native/uring.c, raw syscalls over <linux/io_uring.h>, no
liburing) and the thread pool of `aio=threads` behind the same interface
(native/io_pool.c), and the C data path of virtio-blk's common requests on either
(native/blk_ring.c).

A module of its own, apart from pyvisor._native: only a machine with a disk loads it.
"""

from pathlib import Path

from cffi import FFI


def declarations(header: str) -> str:
    """What a header holds between its "cdef begin" and "cdef end" comments."""
    text = (Path(__file__).parent / header).read_text()
    return text.split("cdef begin", 1)[1].split("*/", 1)[1].split("/* cdef end", 1)[0]


ffibuilder = FFI()
ffibuilder.cdef("struct iovec { void *iov_base; size_t iov_len; };\n"
                + declarations("uring.h") + declarations("blk_ring.h"))
ffibuilder.set_source(
    "pyvisor._uring",
    '#include "uring.h"\n#include "blk_ring.h"\n',
    sources=["native/uring.c", "native/io_pool.c", "native/blk_ring.c"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
