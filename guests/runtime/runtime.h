/* pyvisor tiny-kernel runtime: everything the test kernels share.
 *
 * A kernel defines `void kmain(void)`; start.S sets up a stack, our own GDT,
 * clears BSS and calls runtime_init() (UART, IDT, 8259 masked) and then kmain().
 * Returning from kmain() is vm_exit(0).
 *
 * Output conventions: uart_* / printf go to COM1 (0x3F8) only; '\n' is sent as
 * "\r\n" so a raw-mode terminal shows proper lines (tests should match per line).
 * debugcon_putc() writes to port 0xE9 instead.
 *
 * Vector map: 0-31 exceptions, 0x20+pin IOAPIC pins (VEC_IRQ(pin)),
 * 0x40 LAPIC timer, 0xE0-0xEF 8259 (remapped and masked), 0xFF LAPIC spurious.
 */
#ifndef PYVISOR_RUNTIME_H
#define PYVISOR_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void kmain(void);

/* ---- exit statuses (what the VMM process exits with) ----
 * vm_exit(0)        -> i8042 reset (0xFE to port 0x64); the VMM exits 0.
 * vm_exit(odd s)    -> writes (s-1)/2 to the isa-debug-exit port 0xF4; the VMM
 *                      exits with (v<<1)|1 == s.
 * vm_exit(even s!=0) cannot be expressed by isa-debug-exit (it only yields odd
 *                      statuses); it is rounded up to s|1 (2 -> 3) after a note
 *                      on the console.  Callers wanting exact codes use odd ones. */
#define STATUS_OK          0
#define STATUS_TEST_FAILED 3   /* selftest: at least one check failed */
#define STATUS_EXCEPTION   5   /* unexpected CPU exception */
#define STATUS_PANIC       7   /* runtime assertion (panic()) */
__attribute__((noreturn)) void vm_exit(int status);
__attribute__((noreturn)) void panic(const char *fmt, ...);

/* ---- port and MMIO access ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline u8 mmio_read8(u64 a) { return *(volatile u8 *)a; }
static inline void mmio_write8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)a; }
/* Explicit movw: a notify register must see exactly one 16-bit store. */
static inline void mmio_write16(u64 a, u16 v) { __asm__ volatile("movw %w1, (%0)" : : "r"(a), "r"(v) : "memory"); }
/* Ordering for memory shared with a device (x86 is TSO, so stores are seen in
 * program order: a compiler barrier orders store->store; a locked add is the
 * full barrier for store->load.  Not mfence: KVM's emulator may not run it). */
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mb(void) { __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc"); }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ volatile("hlt" ::: "memory"); }
/* sti's one-instruction interrupt shadow makes "sti; hlt" race-free: an IRQ that
 * is already pending wakes the hlt instead of being taken before it. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline u64 read_cr2(void) { u64 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline u64 rdmsr(u32 msr) { u32 lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr)); return ((u64)hi << 32) | lo; }
static inline void wrmsr(u32 msr, u64 v) { __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32))); }
static inline void cpuid(u32 leaf, u32 sub, u32 r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* ---- string helpers (string.c) ---- */
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int str_starts_with(const char *s, const char *prefix);
/* Parses an unsigned decimal (or 0x-prefixed hex) number; returns 0 on success. */
int parse_u64(const char *s, u64 *out);

/* ---- console (console.c) ---- */
#define COM1 0x3F8
void uart_init(void);
void uart_putc(char c);          /* '\n' becomes "\r\n" */
void uart_puts(const char *s);
int uart_rx_ready(void);         /* LSR.DR */
u8 uart_rx_byte(void);           /* read RBR (check uart_rx_ready first) */
void uart_enable_rx_irq(int on); /* IER bit 0 */
void debugcon_putc(char c);      /* port 0xE9 */
void debugcon_puts(const char *s);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- traps (trap.c, start.S) ---- */
struct trap_frame {          /* layout pushed by start.S's trap_common */
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss;   /* pushed by the CPU */
};
typedef void (*trap_handler_t)(struct trap_frame *f);
/* Installs a handler for one vector (NULL restores the default).  A handler may
 * edit the frame (e.g. f->rip += 2 to resume after a ud2).  For vectors >= 32
 * (except 0xFF, spurious) the runtime sends the LAPIC EOI after the handler. */
void trap_set_handler(int vector, trap_handler_t h);
const char *exception_name(int vector);

/* What the last caught exception looked like. */
struct trap_info { int vector; u64 error, rip, cr2; };
extern struct trap_info trap_last;
/* Calls fn(arg); if it raises a CPU exception (vector < 32) that has no installed
 * handler, the runtime records it in trap_last and unwinds back here (like
 * setjmp/longjmp).  Returns the vector, or -1 if fn returned normally. */
int trap_try(void (*fn)(void *), void *arg);

/* ---- interrupt controllers (apic.c) ---- */
#define LAPIC_BASE   0xFEE00000ull
#define IOAPIC_BASE  0xFEC00000ull
#define VEC_IRQ(pin) (0x20 + (pin))
#define VEC_TIMER    0x40
#define VEC_PIC_BASE 0xE0
#define VEC_SPURIOUS 0xFF
#define UART_IRQ     4
void pic_disable(void);                  /* remap to 0xE0.. and mask every line */
void lapic_enable(void);                 /* once: APIC_BASE MSR enable, SVR, LINT0/1 masked */
u32 lapic_id(void);
void lapic_eoi(void);
/* Timer counts in LAPIC ticks at divide-by-16; lapic_timer_ms() converts from ms
 * using the calibration (time_init() must have run). */
void lapic_timer_oneshot(u32 count);
void lapic_timer_periodic(u32 count);
void lapic_timer_stop(void);
u32 lapic_timer_ms(u32 ms);
/* ICR delivery: mode bits as in the SDM; dest is an APIC ID, or use the shorthand. */
#define ICR_INIT            0x00500
#define ICR_STARTUP         0x00600
#define ICR_LEVEL_ASSERT    0x04000
#define ICR_ALL_BUT_SELF    0xC0000
void lapic_send_ipi(u32 dest, u32 icr_low);
void ioapic_route(int pin, int vector, u32 dest_apic_id); /* edge, active high, unmasked */
void ioapic_mask(int pin, int masked);
int ioapic_max_pin(void);

/* ---- boot_params (boot.c) ---- */
#define E820_RAM 1
struct e820_entry { u64 addr, size; u32 type; } __attribute__((packed));
extern const u8 *boot_params;            /* zero page from RSI */
int e820_count(void);
const struct e820_entry *e820_get(int i);
const char *e820_type_name(u32 type);
/* Usable RAM in bytes: the sum of type-1 entries, with the first 1 MiB counted
 * in full when any part of it is usable (the PC's legacy hole 0x9FC00-0xFFFFF is
 * RAM that the firmware reserves).  A 256M guest with [0,0x9FC00)+[1M,256M)
 * gives exactly 256 MiB.  ram_mib() rounds that to the nearest MiB. */
u64 ram_bytes(void);
u64 ram_mib(void);
const char *cmdline(void);               /* never NULL; "" when absent */
/* Finds "key=value" (space separated) on the command line; copies the value. */
int cmdline_get(const char *key, char *buf, size_t len);
u64 cmdline_get_u64(const char *key, u64 dflt);
extern char _kernel_start[], _kernel_end[];
/* The ACPI table with this signature, found through the RSDP in 0xE0000-0xFFFFF and its
 * XSDT; NULL if there is none. */
const u8 *acpi_find_table(const char *sig);

/* ---- time (time.c) ---- */
/* Calibrates the TSC and LAPIC timer against PIT channel 2 (gated through port
 * 0x61, like Linux) over 10 ms of real time.  Idempotent. */
void time_init(void);
extern u64 tsc_per_ms;
extern u32 lapic_ticks_per_ms;           /* at divide-by-16 */
u64 time_ms(void);                       /* ms since time_init() */
void delay_us(u64 us);
void delay_ms(u64 ms);
/* Periodic LAPIC timer at VEC_TIMER counting into timer_ticks. */
extern volatile u64 timer_ticks;
void timer_start(u32 period_ms);
void timer_stop(void);
u32 timer_period(void);                  /* 0 when stopped */
/* Sleeps in hlt between timer ticks (busy-waits if no timer runs); enables IRQs. */
void sleep_ms(u64 ms);

/* ---- interrupt-driven COM1 input (serial.c) ---- */
/* Routes IOAPIC pin 4 to this CPU, enables IER RX and interrupts (sti). */
void serial_rx_irq_init(void);
extern volatile u64 uart_rx_irqs;        /* RX interrupts taken so far */
/* Next received byte; deadline_ms (time_ms() based, 0 = none) -> -1 on timeout. */
int serial_getc(u64 deadline_ms);
/* Reads one line (ended by CR, LF or CR LF) into buf, NUL-terminated.  Editing:
 * DEL/BS erase one char, Ctrl-U the line; other control bytes are ignored.
 * echo != 0 echoes to the UART.  timeout_ms != 0 gives up after that long
 * (running a 10 ms tick meanwhile if none runs).  Returns the length, -1 on timeout. */
int serial_readline(char *buf, size_t len, int echo, u32 timeout_ms);

/* ---- CPUs (smp.c) ---- */
int cpu_count(void);     /* CPUID leaf 0xB / leaf 1 EBX[23:16]; at least 1 */
/* Wakes all APs with INIT-SIPI-SIPI via a real-mode trampoline at 0x10000 and
 * returns how many checked in within timeout_ms. */
int smp_start_aps(int expected, u32 timeout_ms);

/* ---- PCI configuration mechanism #1 (pci.c) ---- */
/* A function is named by bdf = bus << 8 | device << 3 | function. */
#define PCI_BDF(bus, dev, fn) ((u32)(bus) << 8 | (u32)(dev) << 3 | (u32)(fn))
#define PCI_VENDOR_ID   0x00
#define PCI_DEVICE_ID   0x02
#define PCI_COMMAND     0x04
#define PCI_STATUS      0x06
#define PCI_REVISION    0x08
#define PCI_BAR0        0x10
#define PCI_CAP_PTR     0x34
#define PCI_CMD_MEM     0x0002
#define PCI_CMD_MASTER  0x0004
#define PCI_STATUS_CAPS 0x0010
#define PCI_CAP_VNDR    0x09
#define PCI_CAP_MSIX    0x11
u8 pci_cfg_read8(u32 bdf, u32 off);
u16 pci_cfg_read16(u32 bdf, u32 off);
u32 pci_cfg_read32(u32 bdf, u32 off);
void pci_cfg_write8(u32 bdf, u32 off, u8 v);
void pci_cfg_write16(u32 bdf, u32 off, u16 v);
void pci_cfg_write32(u32 bdf, u32 off, u32 v);
/* The index-th (0-based) function 0 on bus 0 with this vendor:device; -1 if none. */
int pci_find_device(u16 vendor, u16 device, int index);
/* Offset of the first capability with this id after the one at `after` (0: from the
 * start of the list); 0 when there is none. */
u8 pci_find_cap(u32 bdf, u8 id, u8 after);
/* Address of memory BAR n (64-bit BARs combine n and n+1); 0 for an I/O BAR. */
u64 pci_bar_addr(u32 bdf, int n);

/* ---- virtio driver (virtio.c; transports virtio_pci.c, virtio_mmio.c) ----
 * One driver, two transports: virtio-pci modern (vendor capabilities, MSI-X) and
 * virtio-mmio version 2 (virtio 1.2 section 4.2.2; windows and GSIs listed on the
 * command line as virtio_mmio.device=<size>@<base>:<gsi>, the GSI routed through
 * the IOAPIC).  Queues, feature negotiation, status and requests are shared; a
 * struct virtio_transport (virtio_transport.h) holds the register access. */
#define VIRTIO_VENDOR        0x1AF4
#define VIRTIO_PCI_DEVICE(t) (0x1040 + (t))
#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLK     2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG     4
/* device_status bits */
#define VIRTIO_ACKNOWLEDGE  0x01
#define VIRTIO_DRIVER       0x02
#define VIRTIO_DRIVER_OK    0x04
#define VIRTIO_FEATURES_OK  0x08
#define VIRTIO_NEEDS_RESET  0x40
#define VIRTIO_FAILED       0x80
/* transport feature bits */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32
#define VIRTIO_BIT(n) (1ull << (n))

/* split virtqueue layout (virtio 1.2 section 2.7) */
#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
struct virtq_desc { u64 addr; u32 len; u16 flags, next; };
struct virtq_avail { u16 flags, idx, ring[]; };          /* ring[size], then used_event */
struct virtq_used_elem { u32 id, len; };
struct virtq_used { u16 flags, idx; struct virtq_used_elem ring[]; };  /* then avail_event */

#define VIRTQ_MAX_SIZE     16   /* we use min(device's size, this) */
#define VIRTQ_MAX_INDIRECT 64   /* entries of the per-queue indirect table */
#define VIRTIO_MAX_QUEUES  3
#define VIRTIO_TIMEOUT_MS  2000
#define VIRTIO_NO_VECTOR   0xFFFF

struct virtio_dev;
struct virtio_transport;
struct virtq {
    /* One page per queue, so every ring is naturally aligned and its address is a
     * DMA address (identity mapping): desc @0, avail @0x100, used @0x200, indirect
     * table @0x800. */
    u8 mem[4096] __attribute__((aligned(4096)));
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    struct virtq_desc *indirect;
    struct virtio_dev *dev;
    u16 index, size;
    u16 avail_idx;        /* our copy of avail->idx */
    u16 last_used;        /* used->idx we have consumed up to */
    u16 head;             /* head of the request in flight */
    u64 notify_addr;      /* the register a kick writes (transport's width) */
    u16 msix_entry;       /* PCI: MSI-X table entry, VIRTIO_NO_VECTOR when polling */
    u64 irqs_before;      /* virtio_irqs when we last notified */
};

struct virtio_dev {
    struct virtq vq[VIRTIO_MAX_QUEUES];
    const struct virtio_transport *transport;
    char name[24];                     /* "pci 00:01.0" or "mmio 0xfe000000", for messages */
    u64 device_features, features;     /* offered, negotiated */
    int nqueues;
    int irq_vector;                    /* IDT vector for the queues' interrupts, 0: poll */
    /* virtio-pci */
    u32 bdf;
    u16 pci_device;
    u64 common, isr, devcfg, notify;   /* addresses of the structures in the BARs */
    u32 notify_mult;
    u8 msix_cap;
    u16 msix_size;
    u64 msix_table;
    /* virtio-mmio */
    u64 mmio_base;
    u32 gsi;                           /* IOAPIC pin (GSI n = pin n) */
};

/* A buffer of a request: device-writable when write != 0. */
struct virtq_buf { u64 addr; u32 len; int write; };
#define VIRTQ_SUBMIT_INDIRECT 1

/* The index-th (0-based) device of this virtio device ID: first the virtio-mmio
 * devices of the command line (in their order), then virtio-pci on bus 0.  Opens it
 * (virtio_open / virtio_mmio_open).  Returns 0, -1 when there is no such device, 1
 * when it is there but could not be opened (printed). */
int virtio_find(struct virtio_dev *d, u32 device_id, int index);
/* virtio-pci: finds the structures through the vendor capabilities, turns on memory
 * decoding and bus mastering.  Returns 0, or -1 (printed) when something is missing. */
int virtio_open(struct virtio_dev *d, u32 bdf);
/* virtio-mmio: checks MagicValue, Version 2 and a nonzero DeviceID at base; gsi is
 * the device's interrupt line.  Returns 0 or -1 (printed). */
int virtio_mmio_open(struct virtio_dev *d, u64 base, u32 gsi);
/* The index-th virtio_mmio.device=<size>@<base>:<gsi> of the command line (size
 * with an optional K/M/G suffix, as Linux takes it); 0, or -1 when there is none. */
int virtio_mmio_cmdline(int index, u64 *base, u64 *size, u32 *gsi);
/* "pci" or "mmio"; and what its queue interrupts are: "msix" or "gsi". */
const char *virtio_transport_name(struct virtio_dev *d);
const char *virtio_irq_name(struct virtio_dev *d);
/* Spec 3.1.1: reset, ACKNOWLEDGE, DRIVER, negotiate (want | VERSION_1) & offered,
 * FEATURES_OK, set up nqueues queues, DRIVER_OK.  With d->irq_vector != 0 (set it
 * after opening) the queues interrupt at that IDT vector: virtio-pci through MSI-X,
 * queue i on table entry i; virtio-mmio through the device's GSI, routed by the
 * IOAPIC (edge, active high, as the ACPI DSDT describes it), whose handler reads
 * InterruptStatus and writes InterruptACK.  A 10 ms LAPIC tick (timer_start) bounds
 * each wait in hlt.  Returns 0 or negative. */
int virtio_init(struct virtio_dev *d, u64 want, int nqueues);
/* Writes 0 to device_status and waits (up to 2 s) until it reads back 0. */
int virtio_reset(struct virtio_dev *d);
u8 virtio_status(struct virtio_dev *d);
int virtio_has(struct virtio_dev *d, int bit);     /* negotiated? */
/* Device-specific configuration, read consistently (config_generation). */
u32 virtio_cfg_read32(struct virtio_dev *d, u32 off);
u64 virtio_cfg_read64(struct virtio_dev *d, u32 off);
/* The pieces of a request, for kernels that misbehave on purpose: */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, int n, int flags); /* -> head */
void virtq_publish(struct virtq *q, u16 head);  /* avail ring entry, then avail->idx */
void virtq_notify(struct virtq *q);
/* Waits for the next used entry (polling, or the interrupt when set up); returns
 * its len, -1 on timeout.  *id gets the used entry's id when id != NULL. */
long virtq_wait(struct virtq *q, u32 timeout_ms, u32 *id);
/* add + publish + notify + wait: a blocking request, returns used.len or < 0. */
long virtq_submit(struct virtq *q, const struct virtq_buf *bufs, int n, int flags);
/* Queue interrupts taken: MSI-X messages, or GSI interrupts for which some
 * virtio-mmio device's InterruptStatus was nonzero. */
extern volatile u64 virtio_irqs;

/* virtio-blk requests (spec 5.2.6) */
#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO       5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9
/* Header + data (n buffers; their write flags are set from type) + status on
 * queue 0.  Returns the status byte (0..255), or < 0 when the request never
 * completed. */
int virtio_blk_request(struct virtio_dev *d, u32 type, u64 sector,
                       struct virtq_buf *data, int n, int flags);

/* ---- runtime entry (runtime.c) ---- */
void runtime_init(u64 boot_params_addr);

#endif
