/* 4 KiB random reads with O_DIRECT for a fixed time: the IOPS figure of bench/virtio_blk.py.
 * Built static on the host and run inside the guest's busybox initramfs.
 *   randread DEVICE SECONDS  ->  prints "randread iops=<n>" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: randread DEVICE SECONDS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    unsigned long long bytes;
    if (fd < 0 || ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
        perror(argv[1]);
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096))
        return 1;
    unsigned long long blocks = bytes / 4096, n = 0, x = 88172645463325252ULL;
    double start = now(), limit = atof(argv[2]);
    while (now() - start < limit) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;          /* xorshift64 */
        if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096) {
            perror("pread");
            return 1;
        }
        n++;
    }
    printf("randread iops=%.0f\n", n / (now() - start));
    return 0;
}
