#define _GNU_SOURCE
#include "shim.h"

#include <cpuid.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#define UART_THR 0
#define UART_LSR 5
#define UART_LSR_IDLE 0x60   /* THRE | TEMT */

int pv_ioctl(int fd, unsigned long request, void *arg)
{
    int ret = ioctl(fd, request, arg);
    return ret < 0 ? -errno : ret;
}

int pv_irq_line(int vm_fd, uint32_t irq, uint32_t level)
{
    struct kvm_irq_level line = { .irq = irq, .level = level };
    return ioctl(vm_fd, KVM_IRQ_LINE, &line) < 0 ? -errno : 0;
}

int pv_ioctl_int(int fd, unsigned long request, unsigned long arg)
{
    int ret = ioctl(fd, request, arg);
    return ret < 0 ? -errno : ret;
}

static uint64_t load_le(const uint8_t *p, uint32_t size)
{
    uint64_t v = 0;
    if (size > 8)
        size = 8;
    memcpy(&v, p, size);  /* x86 is little endian */
    return v;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One byte to a non-blocking console pipe: 1 if it went, 0 if it was dropped. */
static int console_byte(int fd, const uint8_t *byte)
{
    ssize_t n;
    do
        n = write(fd, byte, 1);
    while (n < 0 && errno == EINTR);
    return n == 1;
}

/* One byte to the UART's output pipe; dropped and counted when it is full. */
static void uart_transmit(struct pv_uart *u, const uint8_t *byte)
{
    if (console_byte(u->out_fd, byte))
        __atomic_fetch_add(&u->tx_bytes, 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&u->dropped, 1, __ATOMIC_RELAXED);
}

#define PM_TIMER_HZ 3579545ull
#define PM_TIMER_MASK 0xFFFFFFu

/* Serve a single port access from the port table; 1 if done. */
static int ports_fast_path(struct pv_ports *p, struct kvm_run *run)
{
    if (run->io.count != 1)
        return 0;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    uint16_t port = run->io.port;
    if (run->io.direction == KVM_EXIT_IO_OUT) {
        switch (p->write[port]) {
        case PV_PORT_NONE:
            return 1;
        case PV_PORT_CONSOLE:
            if (!console_byte(p->console_fd, data))
                __atomic_fetch_add(&p->console_dropped, 1, __ATOMIC_RELAXED);
            return 1;
        default:
            return 0;
        }
    }
    switch (p->read[port]) {
    case PV_PORT_NONE:
        memset(data, 0xFF, run->io.size);
        return 1;
    case PV_PORT_PM_TIMER: {
        if (run->io.size != 4)
            return 0;
        uint64_t ns = now_ns() - p->pm_timer_origin_ns;
        /* ns * HZ overflows 64 bits after about 85 minutes: split the product. */
        uint64_t ticks = ns / 1000000000u * PM_TIMER_HZ
                         + ns % 1000000000u * PM_TIMER_HZ / 1000000000u;
        uint32_t value = (uint32_t)ticks & PM_TIMER_MASK;
        memcpy(data, &value, 4);
        return 1;
    }
    default:
        return 0;
    }
}

/* Serve a one-byte access to the UART if Python says the shortcut is exact; 1 if done. */
static int uart_fast_path(struct pv_uart *u, struct kvm_run *run)
{
    if (run->io.size != 1 || run->io.count != 1)
        return 0;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    unsigned offset = (unsigned)run->io.port - u->base;
    if (run->io.direction == KVM_EXIT_IO_OUT) {
        if (offset != UART_THR || !u->thr_fast)
            return 0;
        uart_transmit(u, data);
        return 1;
    }
    if (offset != UART_LSR || !u->lsr_fast)
        return 0;
    *data = UART_LSR_IDLE;
    __atomic_fetch_add(&u->lsr_reads, 1, __ATOMIC_RELAXED);
    return 1;
}


static void count_mmio(struct pv_stats *st, uint64_t gpa)
{
    uint64_t key = (gpa >> 12) + 1;
    unsigned start = (unsigned)(key * 0x9E3779B97F4A7C15ull >> 58);   /* 6 bits */
    for (unsigned i = 0; i < PV_MMIO_PAGES; i++) {
        unsigned slot = (start + i) % PV_MMIO_PAGES;
        if (st->mmio_page[slot] == key || st->mmio_page[slot] == 0) {
            st->mmio_page[slot] = key;
            st->mmio_count[slot]++;
            return;
        }
    }
    st->mmio_other++;
}

static void count_exit(struct pv_stats *st, struct kvm_run *run)
{
    uint32_t reason = run->exit_reason;
    st->exits[reason < PV_EXIT_REASONS ? reason : PV_EXIT_REASONS - 1]++;
    if (reason == KVM_EXIT_IO)
        st->ports[run->io.port]++;
    else if (reason == KVM_EXIT_MMIO)
        count_mmio(st, run->mmio.phys_addr);
}

/* --- the coalesced ring ----------------------------------------------------------------- */

void pv_coalesced_init(struct pv_coalesced *c, void *ring_page, uint32_t page_size)
{
    c->ring = ring_page;
    c->max = (page_size - sizeof(struct kvm_coalesced_mmio_ring)) / sizeof(struct kvm_coalesced_mmio);
    c->lock = 0;
    c->drained = 0;
}

static void ring_lock(struct pv_coalesced *c)
{
    while (__atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE))
        sched_yield();   /* held only for a bounded walk of the ring, never across Python */
}

static void ring_unlock(struct pv_coalesced *c)
{
    __atomic_store_n(&c->lock, 0, __ATOMIC_RELEASE);
}

/* The write at the head of the ring, or NULL when it is empty. Both indices are KVM's to
 * keep below max; one that is not reads as an empty ring rather than outside the page. */
static const struct kvm_coalesced_mmio *ring_head(struct pv_coalesced *c)
{
    uint32_t first = c->ring->first;
    uint32_t last = __atomic_load_n(&c->ring->last, __ATOMIC_ACQUIRE);   /* entry before index */
    if (first == last || first >= c->max || last >= c->max)
        return NULL;
    return &c->ring->coalesced_mmio[first];
}

static void ring_pop(struct pv_coalesced *c, struct pv_stats *st)
{
    const struct kvm_coalesced_mmio *m = &c->ring->coalesced_mmio[c->ring->first];
    if (st) {
        if (m->pio)
            st->ports[(uint16_t)m->phys_addr]++;
        else
            count_mmio(st, m->phys_addr);
    }
    c->drained++;
    __atomic_store_n(&c->ring->first, (c->ring->first + 1) % c->max, __ATOMIC_RELEASE);
}

/* Serve from the head the writes the port table serves; the first one Python must
 * dispatch is left there. Caller holds the lock. */
static const struct kvm_coalesced_mmio *ring_serve_native(struct pv_coalesced *c,
                                                          struct pv_ports *p,
                                                          struct pv_stats *st)
{
    const struct kvm_coalesced_mmio *m;
    while ((m = ring_head(c))) {
        uint8_t action = m->pio && p ? p->write[(uint16_t)m->phys_addr] : PV_PORT_PYTHON;
        if (action == PV_PORT_CONSOLE) {
            if (!console_byte(p->console_fd, m->data))
                __atomic_fetch_add(&p->console_dropped, 1, __ATOMIC_RELAXED);
        } else if (action != PV_PORT_NONE) {
            return m;
        }
        ring_pop(c, st);
    }
    return NULL;
}

int pv_coalesced_next(struct pv_coalesced *c, struct pv_ports *ports,
                      struct pv_stats *st, struct pv_write *w)
{
    ring_lock(c);
    const struct kvm_coalesced_mmio *m = ring_serve_native(c, ports, st);
    if (m) {
        w->addr = m->phys_addr;
        w->size = m->len > 8 ? 8 : m->len;
        w->value = load_le(m->data, w->size);
        w->pio = m->pio;
    }
    ring_unlock(c);
    return m != NULL;
}

void pv_coalesced_done(struct pv_coalesced *c, struct pv_stats *st)
{
    ring_lock(c);
    if (ring_head(c))
        ring_pop(c, st);
    ring_unlock(c);
}

/* 1 when no queued write waits for Python (after serving those C serves): the exit that
 * just happened may be handled. The common case is one comparison of the two indices. */
static int coalesced_settled(struct pv_coalesced *c, struct pv_ports *p, struct pv_stats *st)
{
    if (__atomic_load_n(&c->ring->first, __ATOMIC_RELAXED)
        == __atomic_load_n(&c->ring->last, __ATOMIC_RELAXED))
        return 1;
    ring_lock(c);
    int settled = ring_serve_native(c, p, st) == NULL;
    ring_unlock(c);
    return settled;
}

int pv_run(int vcpu_fd, struct kvm_run *run, struct pv_exit *e, struct pv_uart *uart,
           uint64_t read_value)
{
    struct pv_stats *st = e->stats;
    int held = 0;   /* coalesced writes Python must dispatch before this exit */
    if (e->read_pending) {
        memcpy(e->data, &read_value, e->size > 8 ? 8 : e->size);
        e->read_pending = 0;
    }
    for (;;) {
        uint64_t t0 = st ? now_ns() : 0;
        if (st && st->last_exit_ns)
            st->handled_ns[st->last_reason] += t0 - st->last_exit_ns;
        int ret = ioctl(vcpu_fd, KVM_RUN, 0);
        int err = errno;
        if (st) {
            st->last_exit_ns = now_ns();
            st->run_ns += st->last_exit_ns - t0;
            if (ret < 0) {
                st->interrupted += err == EINTR;
                st->last_reason = KVM_EXIT_INTR;
            } else {
                count_exit(st, run);
                st->last_reason = run->exit_reason < PV_EXIT_REASONS
                                  ? run->exit_reason : PV_EXIT_REASONS - 1;
            }
        }
        if (ret < 0)
            return -err;
        if (e->coalesced && !coalesced_settled(e->coalesced, e->ports, st)) {
            held = 1;
            break;
        }
        if (run->exit_reason != KVM_EXIT_IO
            || !((uart && uart_fast_path(uart, run)) || (e->ports && ports_fast_path(e->ports, run))))
            break;
        if (st)
            st->native_exits++;
    }
    e->reason = run->exit_reason;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        e->is_write = run->io.direction == KVM_EXIT_IO_OUT;
        e->size = run->io.size;
        e->count = run->io.count;
        e->addr = run->io.port;
        e->data = (uint8_t *)run + run->io.data_offset;
        e->value = e->is_write ? load_le(e->data, e->size) : 0;
        e->read_pending = !e->is_write && e->count == 1;
        break;
    case KVM_EXIT_MMIO:
        e->is_write = run->mmio.is_write;
        e->size = run->mmio.len;
        e->count = 1;
        e->addr = run->mmio.phys_addr;
        e->data = run->mmio.data;
        e->value = e->is_write ? load_le(e->data, e->size) : 0;
        e->read_pending = !e->is_write;
        break;
    case KVM_EXIT_DEBUG:
        e->exception = run->debug.arch.exception;
        e->pc = run->debug.arch.pc;
        e->dr6 = run->debug.arch.dr6;
        e->dr7 = run->debug.arch.dr7;
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        e->suberror = run->internal.suberror;
        e->ndata = run->internal.ndata > 16 ? 16 : run->internal.ndata;
        memcpy(e->idata, run->internal.data, e->ndata * sizeof(uint64_t));
        break;
    case KVM_EXIT_FAIL_ENTRY:
        e->hw_reason = run->fail_entry.hardware_entry_failure_reason;
        e->cpu = run->fail_entry.cpu;
        break;
    case KVM_EXIT_UNKNOWN:
        e->hw_reason = run->hw.hardware_exit_reason;
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        e->event_type = run->system_event.type;
        break;
    default:
        break;
    }
    if (held) {
        e->kvm_reason = e->reason;
        e->reason = PV_EXIT_COALESCED;
        return PV_RUN_OTHER;
    }
    if (e->reason == KVM_EXIT_IO && e->count == 1)
        return e->is_write ? PV_RUN_PIO_WRITE : PV_RUN_PIO_READ;
    if (e->reason == KVM_EXIT_MMIO)
        return e->is_write ? PV_RUN_MMIO_WRITE : PV_RUN_MMIO_READ;
    return PV_RUN_OTHER;
}

void *pv_mmap_shared(int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *pv_mmap_anon(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* sparse on purpose (a snapshot's copy of RAM holds only its non-zero pages): no
       transparent huge pages even where the host makes them for every mapping */
    madvise(p, size, MADV_NOHUGEPAGE);
    return p;
}

void pv_host_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    /* the host CPU's own answer, for what KVM_GET_SUPPORTED_CPUID leaves to userspace */
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}

#define RAM_ALIGN (2UL << 20)

void *pv_mmap_ram(size_t size)
{
    /* Guest RAM starts on a 2 MiB boundary and asks for transparent huge pages, as QEMU's
       does: KVM maps a guest 2 MiB page with one large page only where the host address is
       congruent to the guest's (every region starts 2 MiB-aligned in guest-physical
       space), so each first touch of a guest page costs one fault per 2 MiB, not per 4 KiB,
       and every later TLB miss a shorter walk. */
    size_t span = size + RAM_ALIGN;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *start = (char *)(((uintptr_t)p + RAM_ALIGN - 1) & ~(RAM_ALIGN - 1));
    if (start > p)
        munmap(p, start - p);
    munmap(start + size, p + span - (start + size));
    madvise(start, size, MADV_HUGEPAGE);   /* EINVAL without THP: 4 KiB pages then */
    return start;
}

int pv_munmap(void *addr, size_t size)
{
    return munmap(addr, size) < 0 ? -errno : 0;
}

static void kick_handler(int signo)
{
    (void)signo;  /* its only job is to interrupt KVM_RUN with EINTR */
}

int pv_install_kick_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  /* no SA_RESTART: KVM_RUN must come back */
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

int pv_fallocate(int fd, int mode, uint64_t offset, uint64_t length)
{
    return fallocate(fd, mode, (off_t)offset, (off_t)length) < 0 ? -errno : 0;
}

void pv_mb(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* --- snapshots --------------------------------------------------------------------------- */

#define PV_PAGE 4096u

static int vcpu_step(int fd, unsigned long request, void *arg, uint32_t step,
                     struct pv_vcpu_state *s)
{
    if (ioctl(fd, request, arg) < 0) {
        s->failed = step;
        return -errno;
    }
    return 0;
}

/* KVM_GET_MSRS or KVM_SET_MSRS: every MSR of s->msrs, or s->failed and how many went. */
static int msrs_step(int fd, unsigned long request, struct pv_vcpu_state *s)
{
    int n = ioctl(fd, request, s->msrs);
    if (n >= 0 && (uint32_t)n == s->msrs->nmsrs)
        return 0;
    s->failed = PV_STEP_MSRS;
    s->msrs_done = n < 0 ? 0 : (uint32_t)n;
    return n < 0 ? -errno : -EINVAL;
}

int pv_get_vcpu_state(int fd, struct pv_vcpu_state *s)
{
    int r;
    s->failed = 0;
    if ((r = vcpu_step(fd, KVM_GET_MP_STATE, &s->mp_state, PV_STEP_MP_STATE, s)) ||
        (r = vcpu_step(fd, KVM_GET_REGS, &s->regs, PV_STEP_REGS, s)) ||
        (r = vcpu_step(fd, KVM_GET_SREGS, &s->sregs, PV_STEP_SREGS, s)) ||
        (r = vcpu_step(fd, s->xsave_size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
                       s->xsave, PV_STEP_XSAVE, s)) ||
        (r = vcpu_step(fd, KVM_GET_XCRS, &s->xcrs, PV_STEP_XCRS, s)) ||
        (r = vcpu_step(fd, KVM_GET_DEBUGREGS, &s->debugregs, PV_STEP_DEBUGREGS, s)) ||
        (r = vcpu_step(fd, KVM_GET_LAPIC, &s->lapic, PV_STEP_LAPIC, s)) ||
        (r = msrs_step(fd, KVM_GET_MSRS, s)) ||
        (r = vcpu_step(fd, KVM_GET_VCPU_EVENTS, &s->events, PV_STEP_EVENTS, s)))
        return r;
    /* Hand the pending NMI and the SIPI vector back too (as QEMU does). */
    s->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    return 0;
}

int pv_complete_exit(int fd, struct kvm_run *run, uint32_t store)
{
    uint8_t before = run->immediate_exit;
    run->immediate_exit = 1;
    run->kvm_valid_regs = store;
    int r = ioctl(fd, KVM_RUN, 0);
    int err = errno;
    run->kvm_valid_regs = 0;        /* storing costs every later exit: only this once */
    run->immediate_exit = before;
    if (r == 0)                     /* it ran: that must not happen with immediate_exit */
        return -EBUSY;
    return err == EINTR ? 0 : -err;
}

#define APIC_TPR_OFFSET 0x80

/* Whether REGS and SREGS may be set after XSAVE..MSRS instead of before: nothing those
 * depend on (APIC base and mode, CR0/CR4/EFER for MSR checks, TPR) changes when they are. */
static int sregs_may_follow(const struct kvm_sregs *now, const struct pv_vcpu_state *s)
{
    uint32_t tpr;
    memcpy(&tpr, s->lapic.regs + APIC_TPR_OFFSET, sizeof(tpr));
    return now->apic_base == s->sregs.apic_base && now->cr0 == s->sregs.cr0
           && now->cr4 == s->sregs.cr4 && now->efer == s->sregs.efer
           && (tpr & 0xFF) == ((s->sregs.cr8 & 0xF) << 4);
}

int pv_restore_vcpu_state(int fd, struct kvm_run *run, struct pv_vcpu_state *s, uint32_t how)
{
    int r;
    int sync = (how & PV_RESTORE_SYNC) != 0;
    int sync_regs = sync && (how & PV_RESTORE_SREGS_STORED)
                    && sregs_may_follow(&run->s.regs.sregs, s);
    s->failed = 0;
    if (run->kvm_dirty_regs) {      /* an earlier restore's, not yet run: this one replaces it */
        sync_regs = 0;              /* and s.regs.sregs is that one's, not the vCPU's */
        run->kvm_dirty_regs = 0;
    }
    if (!((how & PV_RESTORE_RUNNABLE) && s->mp_state.mp_state == KVM_MP_STATE_RUNNABLE)
        && (r = vcpu_step(fd, KVM_SET_MP_STATE, &s->mp_state, PV_STEP_MP_STATE, s)))
        return r;
    if (!sync_regs &&
        ((r = vcpu_step(fd, KVM_SET_REGS, &s->regs, PV_STEP_REGS, s)) ||
         (r = vcpu_step(fd, KVM_SET_SREGS, &s->sregs, PV_STEP_SREGS, s))))
        return r;
    if ((r = vcpu_step(fd, KVM_SET_XSAVE, s->xsave, PV_STEP_XSAVE, s)) ||
        (r = vcpu_step(fd, KVM_SET_XCRS, &s->xcrs, PV_STEP_XCRS, s)) ||
        (r = vcpu_step(fd, KVM_SET_DEBUGREGS, &s->debugregs, PV_STEP_DEBUGREGS, s)) ||
        (r = vcpu_step(fd, KVM_SET_LAPIC, &s->lapic, PV_STEP_LAPIC, s)) ||
        (r = msrs_step(fd, KVM_SET_MSRS, s)))
        return r;
    if (!sync)
        return vcpu_step(fd, KVM_SET_VCPU_EVENTS, &s->events, PV_STEP_EVENTS, s);
    if (sync_regs) {
        run->s.regs.regs = s->regs;
        run->s.regs.sregs = s->sregs;
        run->kvm_dirty_regs |= KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    }
    run->s.regs.events = s->events;
    run->kvm_dirty_regs |= KVM_SYNC_X86_EVENTS;
    return 0;
}

int pv_flush_sync(int fd, struct kvm_run *run, uint32_t *failed)
{
    static const struct { uint64_t bit; unsigned long request; uint32_t step; } parts[] = {
        { KVM_SYNC_X86_REGS, KVM_SET_REGS, PV_STEP_REGS },
        { KVM_SYNC_X86_SREGS, KVM_SET_SREGS, PV_STEP_SREGS },
        { KVM_SYNC_X86_EVENTS, KVM_SET_VCPU_EVENTS, PV_STEP_EVENTS },
    };
    void *args[] = { &run->s.regs.regs, &run->s.regs.sregs, &run->s.regs.events };
    for (unsigned i = 0; i < 3; i++) {
        if (!(run->kvm_dirty_regs & parts[i].bit))
            continue;
        if (ioctl(fd, parts[i].request, args[i]) < 0) {
            *failed = parts[i].step;
            return -errno;
        }
        run->kvm_dirty_regs &= ~parts[i].bit;
    }
    return 0;
}

int pv_set_vm_state(int vm_fd, struct kvm_irqchip *chips, uint32_t nchips,
                    struct kvm_pit_state2 *pit, struct kvm_clock_data *clock, uint32_t *failed)
{
    for (uint32_t i = 0; i < nchips; i++) {
        if (ioctl(vm_fd, KVM_SET_IRQCHIP, &chips[i]) < 0) {
            *failed = i;
            return -errno;
        }
    }
    if (ioctl(vm_fd, KVM_SET_PIT2, pit) < 0) {
        *failed = nchips;
        return -errno;
    }
    if (ioctl(vm_fd, KVM_SET_CLOCK, clock) < 0) {
        *failed = nchips + 1;
        return -errno;
    }
    return 0;
}

int pv_harvest_dirty(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                     const struct pv_ram_region *regions)
{
    for (uint32_t i = 0; i < nslots; i++) {
        const struct pv_log_slot *sl = &slots[i];
        struct kvm_dirty_log log;
        memset(&log, 0, sizeof(log));
        log.slot = sl->slot;
        log.dirty_bitmap = sl->bitmap;
        if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
            return -errno;
        uint8_t *written = regions[sl->region].written + sl->first_page;
        uint64_t words = (sl->npages + 63) / 64;
        for (uint64_t w = 0; w < words; w++) {
            uint64_t bits = sl->bitmap[w];
            while (bits) {
                unsigned b = (unsigned)__builtin_ctzll(bits);
                bits &= bits - 1;
                written[w * 64 + b] = 1;
            }
        }
    }
    return 0;
}

int64_t pv_reset_memory(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                        const struct pv_ram_region *regions, uint8_t *const *saved,
                        uint32_t nregions)
{
    int r = pv_harvest_dirty(vm_fd, slots, nslots, regions);
    if (r < 0)
        return r;
    int64_t copied = 0;
    for (uint32_t i = 0; i < nregions; i++) {
        const struct pv_ram_region *rg = &regions[i];
        uint8_t *written = rg->written;
        uint64_t n = rg->npages, p = 0;
        while (p < n) {
            /* Skip eight clean pages at a time: the map is mostly zero. */
            if (p + 8 <= n && ((uint64_t)(uintptr_t)(written + p) & 7) == 0
                && *(uint64_t *)(written + p) == 0) {
                p += 8;
                continue;
            }
            if (written[p]) {
                memcpy(rg->ram + p * PV_PAGE, saved[i] + p * PV_PAGE, PV_PAGE);
                written[p] = 0;
                copied++;
            }
            p++;
        }
    }
    return copied;
}

uint64_t pv_copy_differing(uint8_t *dst, const uint8_t *src, uint64_t npages)
{
    uint64_t copied = 0;
    for (uint64_t p = 0; p < npages; p++) {
        if (memcmp(dst + p * PV_PAGE, src + p * PV_PAGE, PV_PAGE)) {
            memcpy(dst + p * PV_PAGE, src + p * PV_PAGE, PV_PAGE);
            copied++;
        }
    }
    return copied;
}

int pv_page_is_zero(const uint8_t *page)
{
    const uint64_t *w = (const uint64_t *)page;
    for (unsigned i = 0; i < PV_PAGE / 8; i++)
        if (w[i])
            return 0;
    return 1;
}

uint64_t pv_copy_nonzero(uint8_t *dst, const uint8_t *src, uint64_t npages)
{
    uint64_t copied = 0;
    for (uint64_t p = 0; p < npages; p++) {
        if (!pv_page_is_zero(src + p * PV_PAGE)) {
            memcpy(dst + p * PV_PAGE, src + p * PV_PAGE, PV_PAGE);
            copied++;
        }
    }
    return copied;
}

int pv_mmap_file_private(void *addr, size_t size, int fd, uint64_t offset)
{
    void *p = mmap(addr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, (off_t)offset);
    return p == MAP_FAILED ? -errno : 0;
}

uint64_t pv_scan_nonzero(const uint8_t *base, uint64_t npages, uint8_t *map)
{
    uint64_t count = 0;
    for (uint64_t p = 0; p < npages; p++) {
        map[p] = !pv_page_is_zero(base + p * PV_PAGE);
        count += map[p];
    }
    return count;
}

/* --- the in-place reset in two crossings (pyvisor/snapshot/engine.py) -------------------- */

int pv_reset_vm(int vcpu_fd, struct kvm_run *run, struct pv_reset_vm *r)
{
    int ret;
    r->failed = 0;
    r->chips_set = 0;
    if (vcpu_fd >= 0 && (ret = pv_complete_exit(vcpu_fd, run, KVM_SYNC_X86_SREGS)) < 0) {
        r->failed = PV_RESET_STEP_RUN;
        return ret;
    }
    for (uint32_t i = 0; i < r->nchips; i++) {
        struct kvm_irqchip *now = &r->now[i];
        memset(now, 0, sizeof(*now));
        now->chip_id = r->chips[i].chip_id;
        if (ioctl(r->vm_fd, KVM_GET_IRQCHIP, now) < 0) {
            r->failed = PV_RESET_STEP_GET_IRQCHIP;
            return -errno;
        }
        if (!memcmp(now, &r->chips[i], sizeof(*now)))
            continue;
        if (ioctl(r->vm_fd, KVM_SET_IRQCHIP, &r->chips[i]) < 0) {
            r->failed = PV_RESET_STEP_SET_IRQCHIP;
            return -errno;
        }
        r->chips_set++;
    }
    if (ioctl(r->vm_fd, KVM_SET_PIT2, r->pit) < 0) {
        r->failed = PV_RESET_STEP_PIT2;
        return -errno;
    }
    if (ioctl(r->vm_fd, KVM_SET_CLOCK, r->clock) < 0) {
        r->failed = PV_RESET_STEP_CLOCK;
        return -errno;
    }
    return 0;
}

int64_t pv_reset_guest(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                       const struct pv_ram_region *regions, uint8_t *const *saved,
                       uint32_t nregions, struct pv_reset_vcpu *vcpus, uint32_t nvcpus,
                       uint32_t *failed_vcpu)
{
    *failed_vcpu = nvcpus;
    int64_t copied = pv_reset_memory(vm_fd, slots, nslots, regions, saved, nregions);
    if (copied < 0)
        return copied;
    for (uint32_t i = 0; i < nvcpus; i++) {
        int r = pv_restore_vcpu_state(vcpus[i].fd, vcpus[i].run, vcpus[i].state, vcpus[i].how);
        if (r < 0) {
            *failed_vcpu = i;
            return r;
        }
    }
    return copied;
}
