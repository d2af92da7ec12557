/* snapshot_baseline: the in-place reset loop of a snapshot fuzzer, in the smallest C VMM
 * (pio_baseline.c's boot code, included), as the baseline for bench/snapshot.py.
 *
 *   snapshot_baseline KERNEL.elf CMDLINE RESETS
 *
 * Boots guests/out/snap_target.elf (64 MiB, dirty logging on the RAM slot). At its write to
 * port 0x85 it saves regs, sregs, LAPIC, vCPU events and a copy of RAM; at each write to
 * port 0x84 (one round: the guest dirtied its pages) it resets: KVM_GET_DIRTY_LOG, copy the
 * dirty pages back, set sregs/regs/LAPIC/events, and runs again, RESETS times. Prints
 * "resets N us_per_reset X per_second Y" (per_second: resets+runs per second). */
#define main pio_baseline_main
#include "pio_baseline.c"
#undef main

#include <time.h>

#define READY_PORT 0x85
#define ROUND_PORT 0x84
#define PAGE 4096u

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Run until an OUT to port 0x84 or 0x85; other port I/O as pio_baseline does it. */
static uint16_t run_to_port(int fd, struct kvm_run *run)
{
    for (;;) {
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "snapshot_baseline: exit reason %u\n", run->exit_reason);
            exit(2);
        }
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        if (run->io.direction == KVM_EXIT_IO_OUT &&
            (run->io.port == READY_PORT || run->io.port == ROUND_PORT))
            return run->io.port;
        for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
            if (run->io.direction == KVM_EXIT_IO_OUT)
                pio_out(run->io.port, data[0]);
            else {
                memset(data, 0xFF, run->io.size);
                data[0] = pio_in(run->io.port);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s KERNEL.elf CMDLINE RESETS\n", argv[0]);
        return 2;
    }
    long resets = atol(argv[3]);
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
    uint8_t *saved = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED || saved == MAP_FAILED)
        die("mmap RAM");
    struct kvm_userspace_memory_region mr = { .slot = 0, .flags = KVM_MEM_LOG_DIRTY_PAGES,
                                              .guest_phys_addr = 0, .memory_size = RAM_SIZE,
                                              .userspace_addr = (uint64_t)ram };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    uint64_t entry;
    load_elf(argv[1], &entry);
    setup_boot_structures(argv[2]);
    run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    int fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
    if (fd < 0)
        die("KVM_CREATE_VCPU");
    set_cpuid(fd, 0, 1);
    setup_bsp(fd, entry);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    if (run_to_port(fd, run) != READY_PORT) {
        fprintf(stderr, "snapshot_baseline: no write to port 0x85\n");
        return 2;
    }
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    uint64_t npages = RAM_SIZE / PAGE;
    uint64_t *bitmap = calloc((npages + 63) / 64, 8);
    struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = bitmap };
    if (ioctl(fd, KVM_GET_REGS, &regs) < 0 || ioctl(fd, KVM_GET_SREGS, &sregs) < 0 ||
        ioctl(fd, KVM_GET_LAPIC, &lapic) < 0 || ioctl(fd, KVM_GET_VCPU_EVENTS, &events) < 0 ||
        ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        die("snapshot");
    memcpy(saved, ram, RAM_SIZE);

    double in_reset = 0, start = now();
    for (long n = 0; n < resets; n++) {
        if (run_to_port(fd, run) != ROUND_PORT) {
            fprintf(stderr, "snapshot_baseline: the guest did not finish its round\n");
            return 2;
        }
        double t0 = now();
        if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
            die("KVM_GET_DIRTY_LOG");
        for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
            for (uint64_t bits = bitmap[w]; bits; bits &= bits - 1) {
                uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
                memcpy(ram + p * PAGE, saved + p * PAGE, PAGE);
            }
        }
        if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(fd, KVM_SET_REGS, &regs) < 0 ||
            ioctl(fd, KVM_SET_LAPIC, &lapic) < 0 || ioctl(fd, KVM_SET_VCPU_EVENTS, &events) < 0)
            die("reset");
        in_reset += now() - t0;
    }
    double total = now() - start;
    printf("resets %ld us_per_reset %.2f per_second %.0f\n", resets, in_reset / resets * 1e6,
           resets / total);
    return 0;
}
