/* 4 KiB random reads or writes with O_DIRECT at a given queue depth for a fixed time: the
 * IOPS figures of bench/virtio_blk.py (fio's randread/randwrite with ioengine=libaio,
 * direct=1, bs=4k, iodepth=N). Built static on the host and run inside the guest's busybox
 * initramfs, so it calls Linux AIO (io_setup, io_submit, io_getevents) directly, without
 * libaio. Offsets are 4 KiB blocks picked by xorshift64 over the whole device; each
 * completion is replaced by a new request at once, so DEPTH requests stay in flight.
 *   randread DEVICE SECONDS [DEPTH [read|write]]  ->  "rand_read_d1_iops=<n>" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define MAX_DEPTH 256

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t x = 88172645463325252ULL;

static uint64_t next_block(uint64_t blocks)
{
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;          /* xorshift64 */
    return x % blocks;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: randread DEVICE SECONDS [DEPTH [read|write]]\n");
        return 2;
    }
    int depth = argc > 3 ? atoi(argv[3]) : 1;
    int write = argc > 4 && strcmp(argv[4], "write") == 0;
    if (depth < 1 || depth > MAX_DEPTH) {
        fprintf(stderr, "randread: DEPTH is 1 to %d\n", MAX_DEPTH);
        return 2;
    }
    int fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | O_DIRECT);
    unsigned long long bytes;
    if (fd < 0 || ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
        perror(argv[1]);
        return 1;
    }
    uint64_t blocks = bytes / BLOCK;
    char *bufs;
    if (posix_memalign((void **)&bufs, BLOCK, (size_t)depth * BLOCK))
        return 1;
    memset(bufs, 0x5a, (size_t)depth * BLOCK);
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, depth, &ctx) < 0) {
        perror("io_setup");
        return 1;
    }
    static struct iocb iocbs[MAX_DEPTH];
    struct iocb *batch[MAX_DEPTH];
    struct io_event events[MAX_DEPTH];
    for (int i = 0; i < depth; i++) {
        memset(&iocbs[i], 0, sizeof(iocbs[i]));
        iocbs[i].aio_fildes = fd;
        iocbs[i].aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
        iocbs[i].aio_buf = (uint64_t)(uintptr_t)(bufs + (size_t)i * BLOCK);
        iocbs[i].aio_nbytes = BLOCK;
        iocbs[i].aio_offset = (int64_t)(next_block(blocks) * BLOCK);
        iocbs[i].aio_data = i;
        batch[i] = &iocbs[i];
    }
    double start = now(), limit = atof(argv[2]);
    unsigned long long n = 0;
    if (syscall(SYS_io_submit, ctx, depth, batch) != depth) {
        perror("io_submit");
        return 1;
    }
    int stopping = 0, in_flight = depth;
    while (in_flight) {
        long got = syscall(SYS_io_getevents, ctx, 1, depth, events, NULL);
        if (got < 0) {
            perror("io_getevents");
            return 1;
        }
        int again = 0;
        for (long i = 0; i < got; i++) {
            if (events[i].res != BLOCK) {
                fprintf(stderr, "randread: a request returned %lld\n", (long long)events[i].res);
                return 1;
            }
            n++;
            in_flight--;
            if (!stopping) {
                struct iocb *cb = &iocbs[events[i].data];
                cb->aio_offset = (int64_t)(next_block(blocks) * BLOCK);
                batch[again++] = cb;
            }
        }
        stopping = stopping || now() - start >= limit;
        if (!stopping && again) {
            if (syscall(SYS_io_submit, ctx, again, batch) != again) {
                perror("io_submit");
                return 1;
            }
            in_flight += again;
        }
    }
    printf("rand_%s_d%d_iops=%.0f\n", write ? "write" : "read", depth, n / (now() - start));
    return 0;
}
