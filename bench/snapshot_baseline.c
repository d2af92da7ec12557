/* snapshot_baseline: the in-place reset loop of a snapshot fuzzer, in the smallest C VMM
 * (pio_baseline.c's boot code, included), as the baseline for bench/snapshot.py.
 *
 *   snapshot_baseline KERNEL.elf CMDLINE RESETS [minimal|full|same-ioctls [MSR,MSR,...]]
 *
 * Boots guests/out/snap_target.elf (64 MiB, dirty logging on the RAM slot). At its write to
 * port 0x85 it saves the state it restores and a copy of RAM; at each write to port 0x84
 * (one round: the guest dirtied its pages) it resets, RESETS times: KVM_GET_DIRTY_LOG, copy
 * the dirty pages back, then the vCPU (and VM) state:
 *   minimal     SREGS, REGS, LAPIC, VCPU_EVENTS (the loop of issue 10's benchmark);
 *   full        what pyvisor restores, each part with its ioctl: IRQCHIP (PIC master, PIC
 *               slave, IOAPIC), PIT2, CLOCK, then MP_STATE, REGS, SREGS, XSAVE, XCRS,
 *               DEBUGREGS, LAPIC, MSRS (the MSR list pyvisor keeps, given as hex), EVENTS;
 *   same-ioctls the same state with the ioctls pyvisor's reset from a hook makes: a KVM_RUN
 *               with immediate_exit that finishes the exit and stores the sregs, the VM
 *               state (each irqchip read, and set only when it differs), XSAVE, XCRS,
 *               DEBUGREGS, LAPIC, MSRS, and REGS, SREGS and EVENTS through kvm_run->s.regs
 *               on the next KVM_RUN (MP_STATE is RUNNABLE already);
 *   ioctls      no loop: the cost of each ioctl a reset makes, RESETS times each, at the
 *               snapshot point, and of the getters a compare-before-set would add (prints
 *               "ioctl NAME us X" lines).
 * Prints "resets N us_per_reset X per_second Y" (per_second: resets+runs per second). */
#define main pio_baseline_main
#include "pio_baseline.c"
#undef main

#include <time.h>

#define READY_PORT 0x85
#define ROUND_PORT 0x84
#define PAGE 4096u
#define MAX_MSRS 256

enum mode { MINIMAL, FULL, SAME_IOCTLS, IOCTLS };

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

/* Everything `full` and `same-ioctls` restore. */
struct full_state {
    struct kvm_irqchip chips[3];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    struct kvm_mp_state mp;
    struct kvm_xsave *xsave;
    unsigned long get_xsave;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct { struct kvm_msrs h; struct kvm_msr_entry e[MAX_MSRS]; } msrs;
};

static void parse_msrs(struct full_state *f, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (f->msrs.h.nmsrs == MAX_MSRS) {
            fprintf(stderr, "snapshot_baseline: more than %d MSRs\n", MAX_MSRS);
            exit(2);
        }
        f->msrs.e[f->msrs.h.nmsrs++].index = (uint32_t)strtoul(tok, NULL, 16);
    }
    free(copy);
}

static void capture_full(int fd, struct full_state *f)
{
    int xsave2 = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    size_t size = xsave2 > (int)sizeof(struct kvm_xsave) ? (size_t)xsave2 : sizeof(struct kvm_xsave);
    f->xsave = calloc(1, size);
    f->get_xsave = size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
    for (int i = 0; i < 3; i++) {
        f->chips[i].chip_id = i;
        if (ioctl(vm_fd, KVM_GET_IRQCHIP, &f->chips[i]) < 0)
            die("KVM_GET_IRQCHIP");
    }
    if (ioctl(vm_fd, KVM_GET_PIT2, &f->pit) < 0 || ioctl(vm_fd, KVM_GET_CLOCK, &f->clock) < 0)
        die("KVM_GET_PIT2/CLOCK");
    f->clock.flags = 0;
    if (ioctl(fd, KVM_GET_MP_STATE, &f->mp) < 0 || ioctl(fd, f->get_xsave, f->xsave) < 0 ||
        ioctl(fd, KVM_GET_XCRS, &f->xcrs) < 0 || ioctl(fd, KVM_GET_DEBUGREGS, &f->debugregs) < 0)
        die("snapshot (full)");
    if (ioctl(fd, KVM_GET_MSRS, &f->msrs) != (int)f->msrs.h.nmsrs)
        die("KVM_GET_MSRS");
}

static void set_vm_state(struct full_state *f)
{
    for (int i = 0; i < 3; i++)
        if (ioctl(vm_fd, KVM_SET_IRQCHIP, &f->chips[i]) < 0)
            die("KVM_SET_IRQCHIP");
    if (ioctl(vm_fd, KVM_SET_PIT2, &f->pit) < 0 || ioctl(vm_fd, KVM_SET_CLOCK, &f->clock) < 0)
        die("KVM_SET_PIT2/CLOCK");
}

/* pyvisor's pv_reset_vm: an irqchip is set only when it differs from the saved one. */
static void reset_vm_state(struct full_state *f)
{
    for (int i = 0; i < 3; i++) {
        struct kvm_irqchip now;
        memset(&now, 0, sizeof(now));
        now.chip_id = f->chips[i].chip_id;
        if (ioctl(vm_fd, KVM_GET_IRQCHIP, &now) < 0)
            die("KVM_GET_IRQCHIP");
        if (memcmp(&now, &f->chips[i], sizeof(now)) && ioctl(vm_fd, KVM_SET_IRQCHIP, &f->chips[i]) < 0)
            die("KVM_SET_IRQCHIP");
    }
    if (ioctl(vm_fd, KVM_SET_PIT2, &f->pit) < 0 || ioctl(vm_fd, KVM_SET_CLOCK, &f->clock) < 0)
        die("KVM_SET_PIT2/CLOCK");
}

static void set_middle(int fd, struct full_state *f, const struct kvm_lapic_state *lapic)
{
    if (ioctl(fd, KVM_SET_XSAVE, f->xsave) < 0 || ioctl(fd, KVM_SET_XCRS, &f->xcrs) < 0 ||
        ioctl(fd, KVM_SET_DEBUGREGS, &f->debugregs) < 0 || ioctl(fd, KVM_SET_LAPIC, lapic) < 0)
        die("reset (full)");
    if (ioctl(fd, KVM_SET_MSRS, &f->msrs) != (int)f->msrs.h.nmsrs)
        die("KVM_SET_MSRS");
}

/* The cost of each ioctl of a reset, n times each, with the vCPU at the snapshot point. */
/* What a hook reset's first ioctl does: KVM_RUN with immediate_exit finishes the exit
 * and stores the sregs in kvm_run (sync regs) without running the guest. */
static void finish_exit(int fd, struct kvm_run *run)
{
    run->immediate_exit = 1;
    run->kvm_valid_regs = KVM_SYNC_X86_SREGS;
    if (ioctl(fd, KVM_RUN, 0) == 0 || errno != EINTR)
        die("KVM_RUN (immediate_exit)");
    run->kvm_valid_regs = 0;
    run->immediate_exit = 0;
}

static void time_ioctls(int fd, struct kvm_run *run, long n, struct full_state *f,
                        struct kvm_dirty_log *log, struct kvm_regs *regs, struct kvm_sregs *sregs,
                        struct kvm_lapic_state *lapic, struct kvm_vcpu_events *events)
{
    struct kvm_irqchip chip;
    static struct full_state scratch;    /* what the getters read: the saved state stays */
    static struct kvm_lapic_state scratch_lapic;
    scratch.msrs = f->msrs;
    scratch.xsave = calloc(1, ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2) > 4096 ?
                           (size_t)ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2) : 4096);
    struct { const char *name; int vm; unsigned long request; void *arg; } calls[] = {
        { "KVM_GET_DIRTY_LOG", 1, KVM_GET_DIRTY_LOG, log },
        { "KVM_GET_IRQCHIP (IOAPIC)", 1, KVM_GET_IRQCHIP, &chip },
        { "KVM_SET_IRQCHIP (IOAPIC)", 1, KVM_SET_IRQCHIP, &f->chips[2] },
        { "KVM_SET_IRQCHIP (PIC)", 1, KVM_SET_IRQCHIP, &f->chips[0] },
        { "KVM_SET_PIT2", 1, KVM_SET_PIT2, &f->pit },
        { "KVM_SET_CLOCK", 1, KVM_SET_CLOCK, &f->clock },
        { "KVM_SET_MP_STATE", 0, KVM_SET_MP_STATE, &f->mp },
        { "KVM_SET_REGS", 0, KVM_SET_REGS, regs },
        { "KVM_SET_SREGS", 0, KVM_SET_SREGS, sregs },
        { "KVM_SET_XSAVE", 0, KVM_SET_XSAVE, f->xsave },
        { "KVM_SET_XCRS", 0, KVM_SET_XCRS, &f->xcrs },
        { "KVM_SET_DEBUGREGS", 0, KVM_SET_DEBUGREGS, &f->debugregs },
        { "KVM_SET_LAPIC", 0, KVM_SET_LAPIC, lapic },
        { "KVM_SET_MSRS", 0, KVM_SET_MSRS, &f->msrs },
        { "KVM_SET_VCPU_EVENTS", 0, KVM_SET_VCPU_EVENTS, events },
        { "KVM_GET_REGS", 0, KVM_GET_REGS, regs },
        { "KVM_GET_XSAVE", 0, f->get_xsave, scratch.xsave },
        { "KVM_GET_XCRS", 0, KVM_GET_XCRS, &scratch.xcrs },
        { "KVM_GET_DEBUGREGS", 0, KVM_GET_DEBUGREGS, &scratch.debugregs },
        { "KVM_GET_LAPIC", 0, KVM_GET_LAPIC, &scratch_lapic },
        { "KVM_GET_MSRS", 0, KVM_GET_MSRS, &scratch.msrs },
    };
    chip = f->chips[2];
    for (unsigned c = 0; c < sizeof(calls) / sizeof(calls[0]); c++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            if (ioctl(calls[c].vm ? vm_fd : fd, calls[c].request, calls[c].arg) < 0)
                die(calls[c].name);
        printf("ioctl %s us %.2f\n", calls[c].name, (now() - t0) / n * 1e6);
    }
    double t0 = now();
    for (long i = 0; i < n; i++)
        finish_exit(fd, run);
    printf("ioctl KVM_RUN (immediate_exit, storing sregs) us %.2f\n", (now() - t0) / n * 1e6);
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s KERNEL.elf CMDLINE RESETS [minimal|full|same-ioctls|ioctls [MSRS]]\n",
                argv[0]);
        return 2;
    }
    long resets = atol(argv[3]);
    enum mode mode = MINIMAL;
    if (argc > 4 && !strcmp(argv[4], "full"))
        mode = FULL;
    else if (argc > 4 && !strcmp(argv[4], "same-ioctls"))
        mode = SAME_IOCTLS;
    else if (argc > 4 && !strcmp(argv[4], "ioctls"))
        mode = IOCTLS;
    else if (argc > 4 && strcmp(argv[4], "minimal")) {
        fprintf(stderr, "snapshot_baseline: unknown mode %s\n", argv[4]);
        return 2;
    }
    static struct full_state full;
    if (argc > 5)
        parse_msrs(&full, argv[5]);
    uint64_t entry = create_vm(argv[1], argv[2], KVM_MEM_LOG_DIRTY_PAGES);
    uint8_t *saved = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (saved == MAP_FAILED)
        die("mmap the saved RAM");
    int fd = create_vcpu(0, 1);
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
    if (mode != MINIMAL)
        capture_full(fd, &full);
    if (ioctl(fd, KVM_GET_REGS, &regs) < 0 || ioctl(fd, KVM_GET_SREGS, &sregs) < 0 ||
        ioctl(fd, KVM_GET_LAPIC, &lapic) < 0 || ioctl(fd, KVM_GET_VCPU_EVENTS, &events) < 0 ||
        ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        die("snapshot");
    if (mode != MINIMAL)     /* as pyvisor keeps them */
        events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    memcpy(saved, ram, RAM_SIZE);
    if (mode == IOCTLS) {
        time_ioctls(fd, run, resets, &full, &log, &regs, &sregs, &lapic, &events);
        return 0;
    }

    double in_reset = 0, start = now();
    for (long n = 0; n < resets; n++) {
        if (run_to_port(fd, run) != ROUND_PORT) {
            fprintf(stderr, "snapshot_baseline: the guest did not finish its round\n");
            return 2;
        }
        double t0 = now();
        if (mode == SAME_IOCTLS)
            finish_exit(fd, run);
        if (mode == FULL)
            set_vm_state(&full);
        else if (mode == SAME_IOCTLS)
            reset_vm_state(&full);
        if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
            die("KVM_GET_DIRTY_LOG");
        for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
            for (uint64_t bits = bitmap[w]; bits; bits &= bits - 1) {
                uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
                memcpy(ram + p * PAGE, saved + p * PAGE, PAGE);
            }
        }
        if (mode == MINIMAL) {
            if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(fd, KVM_SET_REGS, &regs) < 0 ||
                ioctl(fd, KVM_SET_LAPIC, &lapic) < 0 || ioctl(fd, KVM_SET_VCPU_EVENTS, &events) < 0)
                die("reset");
        } else if (mode == FULL) {
            if (ioctl(fd, KVM_SET_MP_STATE, &full.mp) < 0 || ioctl(fd, KVM_SET_REGS, &regs) < 0 ||
                ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
                die("reset (full)");
            set_middle(fd, &full, &lapic);
            if (ioctl(fd, KVM_SET_VCPU_EVENTS, &events) < 0)
                die("KVM_SET_VCPU_EVENTS");
        } else {
            set_middle(fd, &full, &lapic);
            run->s.regs.regs = regs;
            run->s.regs.sregs = sregs;
            run->s.regs.events = events;
            run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
        }
        in_reset += now() - t0;
    }
    double total = now() - start;
    printf("resets %ld us_per_reset %.2f per_second %.0f\n", resets, in_reset / resets * 1e6,
           resets / total);
    return 0;
}
