/* startup_baseline: the smallest C VMM's start-up (pio_baseline.c's boot code, included),
 * the baseline for bench/startup.py.
 *
 *   startup_baseline KERNEL.elf MEM_MB
 *
 * Opens /dev/kvm, creates the VM (irqchip, PIT), maps MEM_MB of RAM, loads the kernel,
 * sets CPUID and the long-mode entry state, as pyvisor does, and runs the vCPU to its
 * first exit, which must be guests/out/boot_timer.elf's write to port 0x99. Prints
 * "mark_ns T": CLOCK_MONOTONIC at that exit, in nanoseconds. */
#define main pio_baseline_main
#include "pio_baseline.c"
#undef main

#include <time.h>

#define BOOT_TIMER_PORT 0x99

int main(int argc, char **argv)
{
    if (argc != 3 || atoi(argv[2]) < 2 || atoi(argv[2]) >= 3072) {
        fprintf(stderr, "usage: %s KERNEL.elf MEM_MB (2 to 3071)\n", argv[0]);
        return 2;
    }
    RAM_SIZE = (uint64_t)atoi(argv[2]) << 20;
    uint64_t entry = create_vm(argv[1], "", 0);
    int fd = create_vcpu(0, 1);
    setup_bsp(fd, entry);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    while (ioctl(fd, KVM_RUN, 0) < 0) {
        if (errno != EINTR && errno != EAGAIN)
            die("KVM_RUN");
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != BOOT_TIMER_PORT ||
        run->io.direction != KVM_EXIT_IO_OUT) {
        fprintf(stderr, "startup_baseline: the first exit is not a write to port %#x\n",
                BOOT_TIMER_PORT);
        return 2;
    }
    printf("mark_ns %llu\n", (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec);
    return 0;
}
