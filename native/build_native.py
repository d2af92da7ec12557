"""cffi (API mode) builder for pyvisor._native.

The declarations below name only the fields pyvisor uses; every struct ends in `...;`
so the C compiler, reading the real <linux/kvm.h> and <asm/bootparam.h>, supplies the
layout. Integer constants are declared `...` for the same reason: their values come
from the headers, not from this file. This is the one place kernel-header constants
enter pyvisor.
"""

from cffi import FFI


KVM_CONSTANTS = """
KVM_API_VERSION
KVM_GET_API_VERSION KVM_CREATE_VM KVM_CHECK_EXTENSION KVM_GET_VCPU_MMAP_SIZE
KVM_GET_SUPPORTED_CPUID KVM_GET_MSR_INDEX_LIST
KVM_CREATE_VCPU KVM_SET_USER_MEMORY_REGION KVM_SET_TSS_ADDR KVM_SET_IDENTITY_MAP_ADDR
KVM_CREATE_IRQCHIP KVM_CREATE_PIT2 KVM_IRQ_LINE KVM_IOEVENTFD KVM_IRQFD KVM_SET_GSI_ROUTING
KVM_RUN KVM_GET_REGS KVM_SET_REGS KVM_GET_SREGS KVM_SET_SREGS KVM_GET_FPU KVM_SET_FPU
KVM_GET_MSRS KVM_SET_MSRS KVM_SET_CPUID2 KVM_GET_LAPIC KVM_SET_LAPIC
KVM_GET_VCPU_EVENTS KVM_SET_VCPU_EVENTS KVM_GET_MP_STATE KVM_SET_MP_STATE
KVM_CAP_IRQCHIP KVM_CAP_PIT2 KVM_CAP_USER_MEMORY KVM_CAP_SET_TSS_ADDR KVM_CAP_EXT_CPUID
KVM_CAP_MP_STATE KVM_CAP_IOEVENTFD KVM_CAP_IRQFD KVM_CAP_IRQ_ROUTING KVM_CAP_IMMEDIATE_EXIT
KVM_CAP_NR_VCPUS KVM_CAP_MAX_VCPUS KVM_CAP_NR_MEMSLOTS KVM_CAP_VCPU_EVENTS
KVM_CAP_SET_IDENTITY_MAP_ADDR KVM_CAP_INTERNAL_ERROR_DATA KVM_CAP_ADJUST_CLOCK
KVM_CAP_SYNC_REGS KVM_CAP_TSC_DEADLINE_TIMER KVM_CAP_X2APIC_API
KVM_EXIT_UNKNOWN KVM_EXIT_EXCEPTION KVM_EXIT_IO KVM_EXIT_HYPERCALL KVM_EXIT_DEBUG
KVM_EXIT_HLT KVM_EXIT_MMIO KVM_EXIT_IRQ_WINDOW_OPEN KVM_EXIT_SHUTDOWN KVM_EXIT_FAIL_ENTRY
KVM_EXIT_INTR KVM_EXIT_NMI KVM_EXIT_INTERNAL_ERROR KVM_EXIT_SYSTEM_EVENT
KVM_EXIT_IOAPIC_EOI KVM_EXIT_X86_RDMSR KVM_EXIT_X86_WRMSR
KVM_INTERNAL_ERROR_EMULATION KVM_INTERNAL_ERROR_SIMUL_EX KVM_INTERNAL_ERROR_DELIVERY_EV
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
KVM_SYSTEM_EVENT_SHUTDOWN KVM_SYSTEM_EVENT_RESET KVM_SYSTEM_EVENT_CRASH
KVM_IRQCHIP_PIC_MASTER KVM_IRQCHIP_PIC_SLAVE KVM_IRQCHIP_IOAPIC
KVM_IRQ_ROUTING_IRQCHIP KVM_IRQ_ROUTING_MSI
KVM_IRQFD_FLAG_DEASSIGN
KVM_IOEVENTFD_FLAG_DATAMATCH KVM_IOEVENTFD_FLAG_PIO KVM_IOEVENTFD_FLAG_DEASSIGN
KVM_PIT_SPEAKER_DUMMY
KVM_MP_STATE_RUNNABLE KVM_MP_STATE_UNINITIALIZED KVM_MP_STATE_INIT_RECEIVED
KVM_MP_STATE_HALTED KVM_MP_STATE_SIPI_RECEIVED
KVM_VCPUEVENT_VALID_NMI_PENDING KVM_VCPUEVENT_VALID_SIPI_VECTOR
KVM_VCPUEVENT_VALID_SHADOW KVM_VCPUEVENT_VALID_SMM
KVM_MEM_READONLY KVM_CPUID_FLAG_SIGNIFCANT_INDEX
KVM_SET_GUEST_DEBUG KVM_CAP_SET_GUEST_DEBUG KVM_GUESTDBG_ENABLE KVM_GUESTDBG_SINGLESTEP
KVM_GUESTDBG_USE_SW_BP KVM_GUESTDBG_USE_HW_BP KVM_GUESTDBG_BLOCKIRQ
PV_EXIT_REASONS PV_PORTS PV_MMIO_PAGES
PV_PORT_PYTHON PV_PORT_NONE PV_PORT_CONSOLE PV_PORT_PM_TIMER
PV_EXIT_COALESCED KVM_CAP_COALESCED_MMIO KVM_CAP_COALESCED_PIO
PV_RUN_OTHER PV_RUN_PIO_WRITE PV_RUN_PIO_READ PV_RUN_MMIO_WRITE PV_RUN_MMIO_READ
KVM_REGISTER_COALESCED_MMIO KVM_UNREGISTER_COALESCED_MMIO
KVM_GET_IRQCHIP KVM_SET_IRQCHIP KVM_GET_PIT2 KVM_SET_PIT2 KVM_GET_CLOCK KVM_SET_CLOCK
KVM_GET_CPUID2 KVM_MEM_LOG_DIRTY_PAGES KVM_CAP_XSAVE2 KVM_GET_TSC_KHZ
PV_STEP_MP_STATE PV_STEP_REGS PV_STEP_SREGS PV_STEP_XSAVE PV_STEP_XCRS PV_STEP_DEBUGREGS
PV_STEP_LAPIC PV_STEP_MSRS PV_STEP_EVENTS
PV_RESTORE_RUNNABLE PV_RESTORE_SYNC PV_RESTORE_SREGS_STORED
KVM_SYNC_X86_REGS KVM_SYNC_X86_SREGS KVM_SYNC_X86_EVENTS
""".split()

BOOT_CONSTANTS = """
LOADED_HIGH KEEP_SEGMENTS CAN_USE_HEAP
XLF_KERNEL_64 XLF_CAN_BE_LOADED_ABOVE_4G
E820_RAM E820_RESERVED E820_ACPI E820_NVS E820_UNUSABLE
E820_MAX_ENTRIES_ZEROPAGE
""".split()

VIRTIO_CONSTANTS = """
VIRTIO_CONFIG_S_ACKNOWLEDGE VIRTIO_CONFIG_S_DRIVER VIRTIO_CONFIG_S_DRIVER_OK
VIRTIO_CONFIG_S_FEATURES_OK VIRTIO_CONFIG_S_NEEDS_RESET VIRTIO_CONFIG_S_FAILED
VIRTIO_F_VERSION_1 VIRTIO_RING_F_INDIRECT_DESC VIRTIO_RING_F_EVENT_IDX
VRING_DESC_F_NEXT VRING_DESC_F_WRITE VRING_DESC_F_INDIRECT
VRING_USED_F_NO_NOTIFY VRING_AVAIL_F_NO_INTERRUPT
VIRTIO_ID_NET VIRTIO_ID_BLOCK VIRTIO_ID_CONSOLE VIRTIO_ID_RNG
VIRTIO_PCI_CAP_COMMON_CFG VIRTIO_PCI_CAP_NOTIFY_CFG VIRTIO_PCI_CAP_ISR_CFG
VIRTIO_PCI_CAP_DEVICE_CFG VIRTIO_PCI_CAP_PCI_CFG
VIRTIO_PCI_COMMON_DFSELECT VIRTIO_PCI_COMMON_DF VIRTIO_PCI_COMMON_GFSELECT VIRTIO_PCI_COMMON_GF
VIRTIO_PCI_COMMON_MSIX VIRTIO_PCI_COMMON_NUMQ VIRTIO_PCI_COMMON_STATUS
VIRTIO_PCI_COMMON_CFGGENERATION VIRTIO_PCI_COMMON_Q_SELECT VIRTIO_PCI_COMMON_Q_SIZE
VIRTIO_PCI_COMMON_Q_MSIX VIRTIO_PCI_COMMON_Q_ENABLE VIRTIO_PCI_COMMON_Q_NOFF
VIRTIO_PCI_COMMON_Q_DESCLO VIRTIO_PCI_COMMON_Q_DESCHI VIRTIO_PCI_COMMON_Q_AVAILLO
VIRTIO_PCI_COMMON_Q_AVAILHI VIRTIO_PCI_COMMON_Q_USEDLO VIRTIO_PCI_COMMON_Q_USEDHI
VIRTIO_PCI_COMMON_Q_NDATA VIRTIO_PCI_COMMON_Q_RESET
VIRTIO_PCI_ISR_CONFIG VIRTIO_MSI_NO_VECTOR
VIRTIO_BLK_F_SIZE_MAX VIRTIO_BLK_F_SEG_MAX VIRTIO_BLK_F_RO VIRTIO_BLK_F_BLK_SIZE
VIRTIO_BLK_F_FLUSH VIRTIO_BLK_F_DISCARD VIRTIO_BLK_F_WRITE_ZEROES VIRTIO_BLK_F_MQ
VIRTIO_BLK_T_IN VIRTIO_BLK_T_OUT VIRTIO_BLK_T_FLUSH VIRTIO_BLK_T_GET_ID
VIRTIO_BLK_T_DISCARD VIRTIO_BLK_T_WRITE_ZEROES
VIRTIO_BLK_S_OK VIRTIO_BLK_S_IOERR VIRTIO_BLK_S_UNSUPP VIRTIO_BLK_ID_BYTES
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
VIRTIO_CONSOLE_F_SIZE
VIRTIO_NET_F_CSUM VIRTIO_NET_F_GUEST_CSUM VIRTIO_NET_F_MAC VIRTIO_NET_F_GUEST_TSO4
VIRTIO_NET_F_GUEST_TSO6 VIRTIO_NET_F_GUEST_UFO VIRTIO_NET_F_HOST_TSO4 VIRTIO_NET_F_HOST_TSO6
VIRTIO_NET_F_HOST_UFO VIRTIO_NET_F_MRG_RXBUF VIRTIO_NET_F_STATUS VIRTIO_NET_S_LINK_UP
FALLOC_FL_KEEP_SIZE FALLOC_FL_PUNCH_HOLE FALLOC_FL_ZERO_RANGE
VIRTIO_MMIO_MAGIC_VALUE VIRTIO_MMIO_VERSION VIRTIO_MMIO_DEVICE_ID VIRTIO_MMIO_VENDOR_ID
VIRTIO_MMIO_DEVICE_FEATURES VIRTIO_MMIO_DEVICE_FEATURES_SEL VIRTIO_MMIO_DRIVER_FEATURES
VIRTIO_MMIO_DRIVER_FEATURES_SEL VIRTIO_MMIO_QUEUE_SEL VIRTIO_MMIO_QUEUE_NUM_MAX
VIRTIO_MMIO_QUEUE_NUM VIRTIO_MMIO_QUEUE_READY VIRTIO_MMIO_QUEUE_NOTIFY
VIRTIO_MMIO_INTERRUPT_STATUS VIRTIO_MMIO_INTERRUPT_ACK VIRTIO_MMIO_STATUS
VIRTIO_MMIO_QUEUE_DESC_LOW VIRTIO_MMIO_QUEUE_DESC_HIGH VIRTIO_MMIO_QUEUE_AVAIL_LOW
VIRTIO_MMIO_QUEUE_AVAIL_HIGH VIRTIO_MMIO_QUEUE_USED_LOW VIRTIO_MMIO_QUEUE_USED_HIGH
VIRTIO_MMIO_SHM_LEN_LOW VIRTIO_MMIO_SHM_LEN_HIGH VIRTIO_MMIO_CONFIG_GENERATION
VIRTIO_MMIO_CONFIG VIRTIO_MMIO_INT_VRING VIRTIO_MMIO_INT_CONFIG
TUNSETIFF TUNSETVNETHDRSZ TUNSETOFFLOAD TUNGETFEATURES IFF_TAP IFF_NO_PI IFF_VNET_HDR
TUN_F_CSUM TUN_F_TSO4 TUN_F_TSO6
""".split()

CDEF = """
struct kvm_userspace_memory_region {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr; uint64_t memory_size;
    uint64_t userspace_addr; ...;
};
struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags; ...;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl, unusable; ...;
};
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    unsigned long long interrupt_bitmap[4]; ...;   /* __u64 is unsigned long long */
};
struct kvm_fpu {
    uint8_t fpr[8][16]; uint16_t fcw; uint16_t fsw; uint8_t ftwx; uint16_t last_opcode;
    uint64_t last_ip; uint64_t last_dp; uint8_t xmm[16][16]; uint32_t mxcsr; ...;
};
struct kvm_msr_entry { uint32_t index; uint64_t data; ...; };
struct kvm_msrs { uint32_t nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; ...; };
struct kvm_cpuid_entry2 {
    uint32_t function; uint32_t index; uint32_t flags;
    uint32_t eax, ebx, ecx, edx; ...;
};
struct kvm_cpuid2 { uint32_t nent; struct kvm_cpuid_entry2 entries[]; ...; };
struct kvm_lapic_state { char regs[...]; };
struct kvm_vcpu_events {
    struct { uint8_t injected; uint8_t nr; uint8_t has_error_code; uint8_t pending;
             uint32_t error_code; } exception;
    struct { uint8_t injected; uint8_t nr; uint8_t soft; uint8_t shadow; } interrupt;
    struct { uint8_t injected; uint8_t pending; uint8_t masked; uint8_t pad; } nmi;
    uint32_t sipi_vector; uint32_t flags;
    struct { uint8_t smm; uint8_t pending; uint8_t smm_inside_nmi; uint8_t latched_init; } smi;
    ...;   /* 6.0 added triple_fault; 5.15 (Ubuntu 22.04) headers must build too */
};
struct kvm_mp_state { uint32_t mp_state; };
struct kvm_guest_debug_arch { unsigned long long debugreg[8]; };
struct kvm_guest_debug { uint32_t control; struct kvm_guest_debug_arch arch; ...; };
struct kvm_pit_config { uint32_t flags; ...; };
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_ioeventfd {
    uint64_t datamatch; uint64_t addr; uint32_t len; int32_t fd; uint32_t flags; ...;
};
struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_irq_routing_irqchip { uint32_t irqchip; uint32_t pin; };
struct kvm_irq_routing_msi { uint32_t address_lo; uint32_t address_hi; uint32_t data; uint32_t devid; };
/* Declared only because its u64 fields give the routing union its 8-byte alignment. */
struct kvm_irq_routing_s390_adapter {
    uint64_t ind_addr; uint64_t summary_addr; uint64_t ind_offset;
    uint32_t summary_offset; uint32_t adapter_id;
};
struct kvm_irq_routing_entry {
    uint32_t gsi; uint32_t type; uint32_t flags; uint32_t pad;
    union { struct kvm_irq_routing_irqchip irqchip; struct kvm_irq_routing_msi msi;
            struct kvm_irq_routing_s390_adapter adapter; uint32_t pad[8]; } u;
};
struct kvm_irq_routing { uint32_t nr; uint32_t flags; struct kvm_irq_routing_entry entries[]; ...; };
struct kvm_run {
    uint8_t request_interrupt_window; uint8_t immediate_exit;
    uint32_t exit_reason; uint8_t ready_for_interrupt_injection; uint8_t if_flag;
    uint64_t cr8; uint64_t apic_base; uint64_t kvm_valid_regs; uint64_t kvm_dirty_regs; ...;
};

struct setup_header {
    uint8_t setup_sects; uint16_t vid_mode; uint16_t boot_flag; uint32_t header;
    uint16_t version; uint8_t type_of_loader; uint8_t loadflags; uint32_t code32_start;
    uint32_t ramdisk_image; uint32_t ramdisk_size; uint16_t heap_end_ptr;
    uint32_t cmd_line_ptr; uint32_t initrd_addr_max; uint32_t kernel_alignment;
    uint8_t relocatable_kernel; uint8_t min_alignment; uint16_t xloadflags;
    uint32_t cmdline_size; uint32_t payload_offset; uint32_t payload_length;
    uint64_t setup_data; uint64_t pref_address; uint32_t init_size; ...;
};
struct boot_e820_entry { uint64_t addr; uint64_t size; uint32_t type; ...; };
struct boot_params {
    uint32_t ext_ramdisk_image; uint32_t ext_ramdisk_size; uint32_t ext_cmd_line_ptr;
    uint64_t acpi_rsdp_addr; uint8_t e820_entries;
    struct setup_header hdr;
    struct boot_e820_entry e820_table[...]; ...;
};

struct pv_stats {
    uint64_t exits[64]; uint64_t interrupted; uint64_t native_exits; uint64_t run_ns;
    uint64_t handled_ns[64]; uint64_t last_exit_ns; uint32_t last_reason;
    uint32_t ports[65536]; uint64_t mmio_page[64]; uint64_t mmio_count[64]; uint64_t mmio_other;
};
struct pv_ports {
    uint8_t read[65536]; uint8_t write[65536]; int32_t console_fd; uint64_t console_dropped;
    uint64_t pm_timer_origin_ns;
};
struct kvm_coalesced_mmio_zone { uint64_t addr; uint32_t size; uint32_t pio; ...; };
struct pv_coalesced { uint32_t max; uint64_t drained; ...; };
struct pv_write { uint64_t addr; uint64_t value; uint32_t size; uint32_t pio; };
struct pv_exit {
    uint32_t reason; uint32_t is_write; uint32_t size; uint32_t count;
    uint64_t addr; uint64_t value; uint8_t *data; uint32_t read_pending;
    uint32_t suberror; uint32_t ndata; uint64_t idata[16];
    uint64_t hw_reason; uint32_t event_type; uint32_t cpu;
    uint32_t exception; uint64_t pc, dr6, dr7;
    struct pv_stats *stats;
    struct pv_ports *ports;
    struct pv_coalesced *coalesced;
    uint32_t kvm_reason;
};
void pv_coalesced_init(struct pv_coalesced *c, void *ring_page, uint32_t page_size);
int pv_coalesced_next(struct pv_coalesced *c, struct pv_ports *ports, struct pv_stats *st,
                      struct pv_write *w);
void pv_coalesced_done(struct pv_coalesced *c, struct pv_stats *st);
int pv_irq_line(int vm_fd, uint32_t irq, uint32_t level);

int pv_ioctl(int fd, unsigned long request, void *arg);
int pv_ioctl_int(int fd, unsigned long request, unsigned long arg);
struct pv_uart {
    int32_t thr_fast; int32_t lsr_fast; int32_t out_fd; uint16_t base;
    uint64_t tx_bytes; uint64_t lsr_reads; uint64_t dropped;
};
int pv_run(int vcpu_fd, struct kvm_run *run, struct pv_exit *exit, struct pv_uart *uart,
           uint64_t read_value);
void *pv_mmap_shared(int fd, size_t size);
void *pv_mmap_anon(size_t size);
void *pv_mmap_ram(size_t size);
void pv_host_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]);
int pv_munmap(void *addr, size_t size);
int pv_install_kick_handler(int signo);
int pv_fallocate(int fd, int mode, uint64_t offset, uint64_t length);
void pv_mb(void);

/* Landlock (pyvisor/sandbox/landlock.py builds the ruleset; native/landlock_threads.c
   confines the threads already running) */
struct landlock_ruleset_attr { uint64_t handled_access_fs; ...; };
struct landlock_path_beneath_attr { uint64_t allowed_access; int32_t parent_fd; ...; };
#define LANDLOCK_CREATE_RULESET_VERSION ...
#define LANDLOCK_RULE_PATH_BENEATH ...
#define LANDLOCK_ACCESS_FS_EXECUTE ...
#define LANDLOCK_ACCESS_FS_WRITE_FILE ...
#define LANDLOCK_ACCESS_FS_READ_FILE ...
#define LANDLOCK_ACCESS_FS_READ_DIR ...
#define LANDLOCK_ACCESS_FS_REMOVE_DIR ...
#define LANDLOCK_ACCESS_FS_REMOVE_FILE ...
#define LANDLOCK_ACCESS_FS_MAKE_CHAR ...
#define LANDLOCK_ACCESS_FS_MAKE_DIR ...
#define LANDLOCK_ACCESS_FS_MAKE_REG ...
#define LANDLOCK_ACCESS_FS_MAKE_SOCK ...
#define LANDLOCK_ACCESS_FS_MAKE_FIFO ...
#define LANDLOCK_ACCESS_FS_MAKE_BLOCK ...
#define LANDLOCK_ACCESS_FS_MAKE_SYM ...
#define __NR_landlock_create_ruleset ...
#define __NR_landlock_add_rule ...
int pv_landlock_begin(int ruleset_fd, int signo);
int pv_landlock_signal(int tid);
int pv_landlock_result(int tid);
int pv_landlock_self(void);
/* libc's raw system call, for the sandbox's calls Python's os module lacks */
long syscall(long number, ...);

/* seccomp (pyvisor/sandbox/seccomp.py builds the filter program from these) */
struct seccomp_data {
    int nr; uint32_t arch; unsigned long long instruction_pointer; unsigned long long args[6];
};
struct sock_filter { uint16_t code; uint8_t jt; uint8_t jf; uint32_t k; };
struct sock_fprog { unsigned short len; struct sock_filter *filter; ...; };
#define SECCOMP_SET_MODE_FILTER ...
#define SECCOMP_FILTER_FLAG_TSYNC ...
#define SECCOMP_RET_ALLOW ...
#define SECCOMP_RET_ERRNO ...
#define SECCOMP_RET_DATA ...
#define BPF_LD ...
#define BPF_W ...
#define BPF_ABS ...
#define BPF_JMP ...
#define BPF_JEQ ...
#define BPF_JGE ...
#define BPF_JSET ...
#define BPF_K ...
#define BPF_RET ...
#define AUDIT_ARCH_X86_64 ...
#define __X32_SYSCALL_BIT ...
#define CLONE_THREAD ...
#define PR_SET_NO_NEW_PRIVS ...
#define __NR_prctl ...
#define __NR_seccomp ...
#define __NR_execve ...
#define __NR_execveat ...
#define __NR_fork ...
#define __NR_vfork ...
#define __NR_clone ...
#define __NR_clone3 ...
#define __NR_ptrace ...
#define __NR_process_vm_readv ...
#define __NR_process_vm_writev ...
#define __NR_mount ...
#define __NR_umount2 ...
#define __NR_pivot_root ...
#define __NR_chroot ...
#define __NR_move_mount ...
#define __NR_fsopen ...
#define __NR_fsconfig ...
#define __NR_fsmount ...
#define __NR_fspick ...
#define __NR_open_tree ...
#define __NR_mount_setattr ...
#define __NR_init_module ...
#define __NR_finit_module ...
#define __NR_delete_module ...
#define __NR_kexec_load ...
#define __NR_kexec_file_load ...
#define __NR_bpf ...
#define __NR_perf_event_open ...
#define __NR_keyctl ...
#define __NR_add_key ...
#define __NR_request_key ...
#define __NR_unshare ...
#define __NR_setns ...
#define __NR_io_uring_setup ...
#define __NR_io_uring_enter ...
#define __NR_io_uring_register ...
#define __NR_userfaultfd ...
#define __NR_open_by_handle_at ...
#define __NR_name_to_handle_at ...
#define __NR_pidfd_getfd ...
#define __NR_iopl ...
#define __NR_ioperm ...
#define __NR_reboot ...
#define __NR_swapon ...
#define __NR_swapoff ...
#define __NR_open ...
#define __NR_openat ...
#define __NR_openat2 ...
#define __NR_creat ...
#define __NR_truncate ...
#define __NR_mknod ...
#define __NR_mknodat ...
#define __NR_unlink ...
#define __NR_unlinkat ...
#define __NR_rename ...
#define __NR_renameat ...
#define __NR_renameat2 ...
#define __NR_rmdir ...
#define __NR_mkdir ...
#define __NR_mkdirat ...
#define __NR_link ...
#define __NR_linkat ...
#define __NR_symlink ...
#define __NR_symlinkat ...
#define __NR_chmod ...
#define __NR_fchmodat ...
#define __NR_chown ...
#define __NR_lchown ...
#define __NR_fchownat ...
#define __NR_setxattr ...
#define __NR_lsetxattr ...
#define __NR_removexattr ...
#define __NR_lremovexattr ...
#define __NR_utime ...
#define __NR_utimes ...
#define __NR_utimensat ...
#define __NR_futimesat ...
#define __NR_kill ...
#define __NR_tgkill ...
#define __NR_tkill ...
#define __NR_rt_sigqueueinfo ...
#define __NR_rt_tgsigqueueinfo ...
#define __NR_pidfd_open ...
#define __NR_pidfd_send_signal ...
/* snapshots (pyvisor/snapshot): vCPU state in one crossing, dirty pages copied back in C */
struct kvm_xcrs { uint32_t nr_xcrs; ...; };
struct kvm_debugregs { uint64_t db[4]; uint64_t dr6; uint64_t dr7; ...; };
struct kvm_xsave { ...; };
struct kvm_irqchip { uint32_t chip_id; ...; };
struct kvm_pit_state2 { uint32_t flags; ...; };
struct kvm_clock_data { uint64_t clock; uint32_t flags; ...; };
struct pv_vcpu_state {
    struct kvm_mp_state mp_state; struct kvm_regs regs; struct kvm_sregs sregs;
    struct kvm_xcrs xcrs; struct kvm_debugregs debugregs; struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events; struct kvm_xsave *xsave; uint32_t xsave_size;
    struct kvm_msrs *msrs; uint32_t failed; uint32_t msrs_done;
};
int pv_get_vcpu_state(int vcpu_fd, struct pv_vcpu_state *s);
int pv_complete_exit(int vcpu_fd, struct kvm_run *run, uint32_t store);
int pv_restore_vcpu_state(int vcpu_fd, struct kvm_run *run, struct pv_vcpu_state *s,
                          uint32_t how);
int pv_flush_sync(int vcpu_fd, struct kvm_run *run, uint32_t *failed);
int pv_set_vm_state(int vm_fd, struct kvm_irqchip *chips, uint32_t nchips,
                    struct kvm_pit_state2 *pit, struct kvm_clock_data *clock, uint32_t *failed);
struct pv_ram_region { uint8_t *ram; uint8_t *written; uint64_t npages; };
struct pv_log_slot { uint32_t slot; uint32_t region; uint64_t first_page; uint64_t npages;
                     uint64_t *bitmap; };
int pv_harvest_dirty(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                     const struct pv_ram_region *regions);
int64_t pv_reset_memory(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                        const struct pv_ram_region *regions, uint8_t *const *saved,
                        uint32_t nregions);
struct pv_reset_vm { int vm_fd; struct kvm_irqchip *chips; struct kvm_irqchip *now;
                     uint32_t nchips; struct kvm_pit_state2 *pit; struct kvm_clock_data *clock;
                     uint32_t failed; uint32_t chips_set; };
#define PV_RESET_STEP_RUN ...
#define PV_RESET_STEP_GET_IRQCHIP ...
#define PV_RESET_STEP_SET_IRQCHIP ...
#define PV_RESET_STEP_PIT2 ...
#define PV_RESET_STEP_CLOCK ...
int pv_reset_vm(int vcpu_fd, struct kvm_run *run, struct pv_reset_vm *r);
struct pv_reset_vcpu { int fd; struct kvm_run *run; struct pv_vcpu_state *state; uint32_t how; };
int64_t pv_reset_guest(int vm_fd, const struct pv_log_slot *slots, uint32_t nslots,
                       const struct pv_ram_region *regions, uint8_t *const *saved,
                       uint32_t nregions, struct pv_reset_vcpu *vcpus, uint32_t nvcpus,
                       uint32_t *failed_vcpu);
uint64_t pv_copy_differing(uint8_t *dst, const uint8_t *src, uint64_t npages);
uint64_t pv_copy_nonzero(uint8_t *dst, const uint8_t *src, uint64_t npages);
int pv_page_is_zero(const uint8_t *page);
int pv_mmap_file_private(void *addr, size_t size, int fd, uint64_t offset);
uint64_t pv_scan_nonzero(const uint8_t *base, uint64_t npages, uint8_t *map);
"""

# QEMU's fw_cfg interface (linux/qemu_fw_cfg.h): item selectors and sizes.
FW_CFG_CONSTANTS = """
FW_CFG_SIGNATURE FW_CFG_ID FW_CFG_UUID FW_CFG_RAM_SIZE FW_CFG_NB_CPUS FW_CFG_MAX_CPUS
FW_CFG_FILE_DIR FW_CFG_FILE_FIRST FW_CFG_MAX_FILE_PATH FW_CFG_VERSION FW_CFG_CTL_SIZE
""".split()

ffibuilder = FFI()
ffibuilder.cdef(CDEF + "static char *const FW_CFG_ACPI_DEVICE_ID;\n"
                + "".join(f"#define {name} ...\n" for name in
                          KVM_CONSTANTS + BOOT_CONSTANTS + VIRTIO_CONSTANTS + FW_CFG_CONSTANTS))
ffibuilder.set_source(
    "pyvisor._native",
    '#include <unistd.h>\n#include "shim.h"\n#include "landlock_threads.h"\n#include <asm/e820.h>\n'
    + "".join(f"#include <linux/{h}.h>\n" for h in (
        "virtio_config", "virtio_ring", "virtio_ids", "virtio_pci", "virtio_blk",
        "virtio_console", "virtio_net", "falloc", "if_tun", "virtio_mmio",
        "seccomp", "filter", "audit", "unistd", "sched", "prctl", "qemu_fw_cfg",
        "landlock")),
    sources=["native/shim.c", "native/landlock_threads.c"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
