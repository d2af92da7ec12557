/* pyvisor native shim: the few things Python cannot do cheaply or safely itself.
 *
 * - ioctl wrappers that return -errno instead of touching errno from Python;
 * - KVM_RUN plus decoding of the kvm_run exit union into one flat struct, so the
 *   per-exit path in Python reads plain fields (cffi releases the GIL around every call),
 *   with the console UART's hot registers answered without leaving C;
 * - anonymous mappings for guest RAM and the vCPU's kvm_run area;
 * - the "kick" signal handler that makes a blocked KVM_RUN return with EINTR.
 */
#ifndef PYVISOR_SHIM_H
#define PYVISOR_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>
#include <asm/bootparam.h>

/* Headers older than Linux 5.16 lack this flag; 0 there means "not available". */
#ifndef KVM_GUESTDBG_BLOCKIRQ
#define KVM_GUESTDBG_BLOCKIRQ 0
#endif

/* Bounds of the per-vCPU exit statistics. */
#define PV_EXIT_REASONS 64      /* KVM_EXIT_* numbers counted one by one; larger ones in the last */
#define PV_PORTS 65536
#define PV_MMIO_PAGES 64        /* distinct MMIO pages counted; the rest go to mmio_other */

/* Counters pv_run keeps for one vCPU (read by Python for `Machine.stats`). Counting here
 * costs a few adds per exit and needs no allocation; Python never touches the exit path
 * to count. */
struct pv_stats {
    uint64_t exits[PV_EXIT_REASONS];
    uint64_t interrupted;          /* KVM_RUN returned EINTR (a kick or immediate_exit) */
    uint64_t native_exits;         /* exits served inside pv_run (the UART fast path) */
    uint64_t run_ns;               /* time inside KVM_RUN */
    uint64_t handled_ns[PV_EXIT_REASONS]; /* from an exit's return to the next KVM_RUN, by
                                             that exit's reason: what serving it cost */
    uint64_t last_exit_ns;         /* when KVM_RUN last returned; 0: not timing (parked) */
    uint32_t last_reason;          /* its slot in handled_ns (KVM_EXIT_INTR for EINTR) */
    uint32_t ports[PV_PORTS];      /* port I/O exits by port (served natively or not) */
    uint64_t mmio_page[PV_MMIO_PAGES];   /* guest-physical page number + 1; 0 is free */
    uint64_t mmio_count[PV_MMIO_PAGES];
    uint64_t mmio_other;
};

/* Ports pv_run serves without Python, because serving them has no Python-side effect:
 * what a port does is one action per direction, set by Python (a hook on a port, or a
 * device with state, makes it PV_PORT_PYTHON). Shared by every vCPU; changed only while
 * they are paused. */
#define PV_PORT_PYTHON 0      /* an exit Python handles */
#define PV_PORT_NONE 1        /* nothing there: writes dropped, reads all ones (0x80 POST, 0xED) */
#define PV_PORT_CONSOLE 2     /* a write's byte goes to console_fd (the 0xE9 debug console) */
#define PV_PORT_PM_TIMER 3    /* a 32-bit read is the ACPI PM timer: 3.579545 MHz, 24 bits */
struct pv_ports {
    uint8_t read[PV_PORTS];
    uint8_t write[PV_PORTS];
    int32_t console_fd;           /* non-blocking; -1 drops */
    uint64_t console_dropped;
    uint64_t pm_timer_origin_ns;  /* CLOCK_MONOTONIC when the timer read 0 */
};

/* One vCPU exit, decoded from struct kvm_run. */
struct pv_exit {
    uint32_t reason;      /* KVM_EXIT_* */
    uint32_t is_write;    /* IO: direction == KVM_EXIT_IO_OUT; MMIO: is_write */
    uint32_t size;        /* IO: access size in bytes; MMIO: len */
    uint32_t count;       /* IO: repeat count (string instructions); MMIO: 1 */
    uint64_t addr;        /* IO: port; MMIO: guest-physical address */
    uint64_t value;       /* the first element written (IO out / MMIO write), little endian */
    uint8_t *data;        /* where data lives in kvm_run (to complete reads, or for rep outs) */
    uint32_t read_pending; /* a single read exit: the next pv_run stores its read_value first */
    uint32_t suberror;    /* KVM_EXIT_INTERNAL_ERROR */
    uint32_t ndata;
    uint64_t idata[16];
    uint64_t hw_reason;   /* KVM_EXIT_FAIL_ENTRY / KVM_EXIT_UNKNOWN hardware reason */
    uint32_t event_type;  /* KVM_EXIT_SYSTEM_EVENT type */
    uint32_t cpu;         /* KVM_EXIT_FAIL_ENTRY cpu */
    uint32_t exception;   /* KVM_EXIT_DEBUG: vector (1 = #DB, 3 = #BP) */
    uint64_t pc, dr6, dr7; /* KVM_EXIT_DEBUG */
    struct pv_stats *stats; /* may be NULL: nothing is counted */
    struct pv_ports *ports; /* may be NULL: every port exit goes to Python */
    struct pv_coalesced *coalesced; /* may be NULL: no coalesced ring */
    uint32_t kvm_reason;  /* PV_EXIT_COALESCED: the KVM exit that came with it (decoded) */
};

/* --- KVM's coalesced MMIO/PIO ring ------------------------------------------------------
 * Writes to the zones pyvisor registers (KVM_REGISTER_COALESCED_MMIO: write-only registers
 * whose writes matter only to a later access, like the CMOS index port, and ports whose
 * writes do nothing) do not exit: KVM queues them in one ring per VM, the page at
 * KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO) of every vCPU's kvm_run mapping. They must
 * reach the devices in order, before anything that follows them is handled. pv_run serves
 * the ones the port table serves itself; at the first one Python must dispatch it returns
 * PV_EXIT_COALESCED, with the KVM exit that came along decoded as usual (its reason in
 * kvm_reason), and Python takes them with pv_coalesced_next / pv_coalesced_done: a write
 * leaves the ring only once its device has it, so another vCPU's exit cannot overtake it
 * (that vCPU finds it still queued). One consumer at a time (lock); all vCPUs share it. */
#define PV_EXIT_COALESCED 0x10000   /* above every KVM_EXIT_* */
struct pv_coalesced {
    struct kvm_coalesced_mmio_ring *ring;
    uint32_t max;                 /* entries in the ring: KVM_COALESCED_MMIO_MAX */
    int32_t lock;
    uint64_t drained;             /* writes taken off the ring (Machine.stats) */
};
/* One queued write, as a device takes it. */
struct pv_write {
    uint64_t addr;                /* port, or guest-physical address */
    uint64_t value;               /* little endian, size bytes */
    uint32_t size;
    uint32_t pio;
};
/* ring_page: the mapped ring page; page_size: KVM's page size (the ring fills one page). */
void pv_coalesced_init(struct pv_coalesced *c, void *ring_page, uint32_t page_size);
/* Serve the queued writes the port table serves, then copy the first one Python must
 * dispatch into w and return 1 (it stays queued until pv_coalesced_done); 0 when the ring
 * is empty. Counted in st (may be NULL): per port or MMIO page, as exits are. */
int pv_coalesced_next(struct pv_coalesced *c, struct pv_ports *ports,
                      struct pv_stats *st, struct pv_write *w);
/* The write pv_coalesced_next returned has been dispatched: take it off the ring. */
void pv_coalesced_done(struct pv_coalesced *c, struct pv_stats *st);

/* The UART registers the guest hits once per console character, served inside pv_run so
 * that a verbose boot does not cost two trips through Python per byte. Python owns the
 * UART model and publishes, under its lock, when each shortcut is exact:
 *   thr_fast: a THR write only transmits (DLAB and loopback off, THRE interrupt disabled),
 *             so the byte can go straight to out_fd (the pipe Python drains, in order with
 *             the bytes Python itself transmits);
 *   lsr_fast: an LSR read has no side effect and reads THRE|TEMT (no input, no overrun).
 * out_fd is non-blocking: a byte that does not fit (nobody drains the pipe) is dropped
 * and counted, never waited for. */
struct pv_uart {
    volatile int32_t thr_fast;
    volatile int32_t lsr_fast;
    int32_t out_fd;
    uint16_t base;
    uint64_t tx_bytes;    /* served here, for measurements */
    uint64_t lsr_reads;
    uint64_t dropped;     /* bytes the full pipe could not take */
};

int pv_ioctl(int fd, unsigned long request, void *arg);
/* KVM_IRQ_LINE without an allocation per call (devices raise and lower lines often). */
int pv_irq_line(int vm_fd, uint32_t irq, uint32_t level);
int pv_ioctl_int(int fd, unsigned long request, unsigned long arg);
/* KVM_RUN until an exit Python must see (uart may be NULL: every exit returns). When the
 * previous exit was a single read (exit->read_pending), read_value is its answer and is
 * stored before the guest re-enters: one crossing per exit. Returns -errno, or what the
 * exit asks of Python, so the hot path reads no field to decide: PV_RUN_OTHER (look at
 * exit->reason: string I/O, PV_EXIT_COALESCED, the rest) or one of the single accesses. */
#define PV_RUN_OTHER 0
#define PV_RUN_PIO_WRITE 1
#define PV_RUN_PIO_READ 2
#define PV_RUN_MMIO_WRITE 3
#define PV_RUN_MMIO_READ 4
int pv_run(int vcpu_fd, struct kvm_run *run, struct pv_exit *exit, struct pv_uart *uart,
           uint64_t read_value);
void *pv_mmap_shared(int fd, size_t size);
void *pv_mmap_anon(size_t size);
void *pv_mmap_ram(size_t size);
void pv_host_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]);
int pv_munmap(void *addr, size_t size);
int pv_install_kick_handler(int signo);
/* fallocate(2) with its mode flags (hole punching for virtio-blk DISCARD/WRITE_ZEROES). */
int pv_fallocate(int fd, int mode, uint64_t offset, uint64_t length);
/* A full memory barrier (mfence): virtio's EVENT_IDX handshake needs one between a store
 * to the ring and the load of the other side's index, as vhost and QEMU have. */
void pv_mb(void);

/* --- snapshots (pyvisor/snapshot) -------------------------------------------------------
 * The state of one vCPU as a snapshot keeps it, set back in the order Firecracker documents
 * (MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, MSRS, VCPU_EVENTS; CPUID is set
 * once, before any of them, when a vCPU is created for a restore). One crossing each way. */
struct pv_vcpu_state {
    struct kvm_mp_state mp_state;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_xsave *xsave;     /* xsave_size bytes: KVM_CAP_XSAVE2's size, at least 4096 */
    uint32_t xsave_size;
    struct kvm_msrs *msrs;       /* the indices to save, TSC before TSC_DEADLINE */
    uint32_t failed;             /* which PV_STEP_* failed (0: none) */
    uint32_t msrs_done;          /* KVM_GET/SET_MSRS's count when it fell short */
};
#define PV_STEP_MP_STATE 1
#define PV_STEP_REGS 2
#define PV_STEP_SREGS 3
#define PV_STEP_XSAVE 4
#define PV_STEP_XCRS 5
#define PV_STEP_DEBUGREGS 6
#define PV_STEP_LAPIC 7
#define PV_STEP_MSRS 8
#define PV_STEP_EVENTS 9

/* 0, or -errno with s->failed naming the ioctl. Setting it back: pv_restore_vcpu_state. */
int pv_get_vcpu_state(int vcpu_fd, struct pv_vcpu_state *s);

/* The in-place reset (a restore of a snapshot into the machine it was taken of), with as
 * few vCPU ioctls as can be proven to give the same state: each costs a vcpu_load/put.
 *
 * pv_complete_exit: KVM_RUN with immediate_exit, which finishes the exit the vCPU is in
 * (an IN's or MMIO read's emulation writes registers and memory) without entering the
 * guest; `store` (KVM_SYNC_X86_*) asks KVM to store those parts into run->s.regs on the
 * way out. 0, -EBUSY if the guest ran, or -errno. */
int pv_complete_exit(int vcpu_fd, struct kvm_run *run, uint32_t store);
/* pv_restore_vcpu_state sets s in Firecracker's order (with how 0: every part with its
 * ioctl, as into a vCPU restored from a file), except:
 * - PV_RESTORE_RUNNABLE: the caller knows the vCPU is RUNNABLE now (it is in an exit from
 *   guest code, and nothing set MP_STATE since): an MP_STATE that says RUNNABLE is not set;
 * - PV_RESTORE_SYNC: VCPU_EVENTS, the last part, rides on the next KVM_RUN
 *   (KVM_CAP_SYNC_REGS: run->s.regs and kvm_dirty_regs); with PV_RESTORE_SREGS_STORED
 *   (run->s.regs.sregs holds the current sregs, from pv_complete_exit) REGS and SREGS do too
 *   when what the later parts depend on is the same before and after them: APIC base,
 *   CR0, CR4, EFER equal, and CR8 equal to the saved TPR (KVM_SET_SREGS writes TPR from CR8).
 * KVM applies synced parts REGS, SREGS, EVENTS in that order before anything else of the
 * next KVM_RUN. 0, or -errno with s->failed naming the ioctl. */
#define PV_RESTORE_RUNNABLE 1u
#define PV_RESTORE_SYNC 2u
#define PV_RESTORE_SREGS_STORED 4u
int pv_restore_vcpu_state(int vcpu_fd, struct kvm_run *run, struct pv_vcpu_state *s,
                          uint32_t how);
/* Apply what is pending in run->kvm_dirty_regs now, with the ioctls (REGS, SREGS, EVENTS):
 * before any other vCPU ioctl, so none sees or is overtaken by state still pending. 0, or
 * -errno with *failed the PV_STEP_* that failed. */
int pv_flush_sync(int vcpu_fd, struct kvm_run *run, uint32_t *failed);
/* The VM-wide state of a snapshot: nchips KVM_SET_IRQCHIP, KVM_SET_PIT2, KVM_SET_CLOCK.
 * 0, or -errno with *failed the index of the ioctl (chips, then nchips, nchips + 1). */
int pv_set_vm_state(int vm_fd, struct kvm_irqchip *chips, uint32_t nchips,
                    struct kvm_pit_state2 *pit, struct kvm_clock_data *clock, uint32_t *failed);

/* Guest RAM as the dirty tracking sees it: per RAM region, the host mapping and one byte
 * per page that is set when pyvisor itself writes the page (KVM's log never shows those);
 * per KVM slot with KVM_MEM_LOG_DIRTY_PAGES, where its pages sit in a region. */
struct pv_ram_region {
    uint8_t *ram;
    uint8_t *written;
    uint64_t npages;
};
struct pv_log_slot {
    uint32_t slot;
    uint32_t region;
    uint64_t first_page;         /* the slot's first page, as a page index into the region */
    uint64_t npages;
    uint64_t *bitmap;            /* scratch for KVM_GET_DIRTY_LOG: (npages + 63) / 64 words */
};
/* KVM_GET_DIRTY_LOG on every slot (which also clears it), merged into the regions'
 * written maps. 0 or -errno. */
int pv_harvest_dirty(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                     const struct pv_ram_region *regions);
/* The reset hot path: harvest, then copy every marked page back from saved[region] and
 * clear the marks. The number of pages copied, or -errno. */
int64_t pv_reset_memory(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                        const struct pv_ram_region *regions, uint8_t *const *saved,
                        uint32_t nregions);
/* The in-place reset in two crossings, around the devices' restore (Python): pv_reset_vm
 * first (with vcpu_fd >= 0: pv_complete_exit of that vCPU's exit, storing its sregs, then),
 * the VM-wide state: each irqchip is read (KVM_GET_IRQCHIP, a VM ioctl without vcpu_load,
 * far cheaper than the set) and set only when it differs from the snapshot's; PIT2 and the
 * clock are always set (the PIT's state holds the time its count was loaded, and every
 * KVM_SET_PIT2 loads it anew; the clock moves on). 0, or -errno with r->failed the step. */
struct pv_reset_vm {
    int vm_fd;
    struct kvm_irqchip *chips;   /* the snapshot's, nchips of them */
    struct kvm_irqchip *now;     /* scratch for KVM_GET_IRQCHIP, nchips of them */
    uint32_t nchips;
    struct kvm_pit_state2 *pit;
    struct kvm_clock_data *clock;
    uint32_t failed;             /* PV_RESET_STEP_* (0: none) */
    uint32_t chips_set;          /* how many chips differed and were set */
};
#define PV_RESET_STEP_RUN 1
#define PV_RESET_STEP_GET_IRQCHIP 2
#define PV_RESET_STEP_SET_IRQCHIP 3
#define PV_RESET_STEP_PIT2 4
#define PV_RESET_STEP_CLOCK 5
int pv_reset_vm(int vcpu_fd, struct kvm_run *run, struct pv_reset_vm *r);
/* Then pv_reset_guest: pv_reset_memory, and pv_restore_vcpu_state(fd, run, state, how) of
 * each vCPU in order. The pages copied, or -errno with *failed_vcpu the vCPU that failed
 * (its state->failed names the ioctl), nvcpus when the dirty log did. */
struct pv_reset_vcpu {
    int fd;
    struct kvm_run *run;
    struct pv_vcpu_state *state;
    uint32_t how;
};
int64_t pv_reset_guest(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                       const struct pv_ram_region *regions, uint8_t *const *saved,
                       uint32_t nregions, struct pv_reset_vcpu *vcpus, uint32_t nvcpus,
                       uint32_t *failed_vcpu);
/* Copy npages pages from src to dst where they differ (memcmp first: untouched pages of
 * either side stay unallocated); the number copied. */
uint64_t pv_copy_differing(uint8_t *dst, const uint8_t *src, uint64_t npages);
/* Copy the pages of src that are not all zero into dst (a fresh, zero mapping, so the copy
 * costs host memory only for them); the number copied. */
uint64_t pv_copy_nonzero(uint8_t *dst, const uint8_t *src, uint64_t npages);
/* Whether a page is all zero (the file format writes only the others). */
int pv_page_is_zero(const uint8_t *page);
/* mmap(MAP_PRIVATE | MAP_FIXED) of a file range over addr: guest RAM loaded lazily. */
int pv_mmap_file_private(void *addr, size_t size, int fd, uint64_t offset);
/* Mark in map (one byte per page) which of npages pages are not all zero; their count. */
uint64_t pv_scan_nonzero(const uint8_t *base, uint64_t npages, uint8_t *map);

#endif
