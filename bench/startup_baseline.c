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
    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        die("/dev/kvm");
    vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm_fd < 0 || ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0 ||
        ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        die("VM setup");
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        die("KVM_CREATE_PIT2");
    ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        die("mmap RAM");
    struct kvm_userspace_memory_region mr = { .slot = 0, .guest_phys_addr = 0,
                                              .memory_size = RAM_SIZE, .userspace_addr = (uint64_t)ram };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    uint64_t entry;
    load_elf(argv[1], &entry);
    setup_boot_structures("");
    run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    int fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
    if (fd < 0)
        die("KVM_CREATE_VCPU");
    set_cpuid(fd, 0, 1);
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
