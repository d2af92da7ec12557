/* pio_baseline: the smallest C VMM that boots a pyvisor tiny kernel (same boot
 * contract as pyvisor), used as the "what does a PIO exit cost in C" baseline.
 *
 *   pio_baseline KERNEL.elf [CMDLINE]
 *
 * 64 MiB RAM, in-kernel irqchip + PIT, long mode entry.  Ports: 0x80 ignored;
 * COM1 THR and 0xE9 to stdout; 0xF4 write v -> exit((v<<1)|1); 0x64 write 0xFE
 * -> exit(0); HLT -> exit(0); other exits print the reason and exit(2).  IN from
 * LSR gives 0x60 (plus DR when input is pending), other unmodelled INs 0xFF.  MMIO
 * outside RAM is unclaimed: writes are dropped, reads all ones (the MMIO-exit baseline).
 *
 * Extras so the interrupt-driven kernels can be tried without pyvisor: stdin
 * bytes are fed to COM1's receiver with its RX interrupt (IER bit 0, IRQ 4), and
 * PIO_BASELINE_CPUS=N creates N vCPUs (APs wait in the in-kernel LAPIC);
 * PIO_BASELINE_MEM_MB=M sets the RAM size (default 64, below 3 GiB). */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GDT_ADDR   0x500
#define ZP_ADDR    0x7000
#define STACK_TOP  0x8ff0
#define PML4_ADDR  0x9000          /* PML4, PDPT, then 4 PDs: up to 0xEFFF */
#define CMDLINE    0x20000
#define COM1       0x3F8
#define MAX_CPUS   8

static uint8_t *ram;
static uint64_t RAM_SIZE = 64ull << 20;   /* PIO_BASELINE_MEM_MB overrides (< 3 GiB) */
static int vm_fd;
static int kvm_fd;
static size_t run_size;

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void load_elf(const char *path, uint64_t *entry)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die(path);
    uint8_t *f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED)
        die("mmap kernel");
    Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
    if (st.st_size < (off_t)sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64) {
        fprintf(stderr, "%s: not an ELF64 x86-64 file\n", path);
        exit(2);
    }
    for (int i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr *ph = (Elf64_Phdr *)(f + eh->e_phoff + (uint64_t)i * eh->e_phentsize);
        if (ph->p_type != PT_LOAD)
            continue;
        if (ph->p_paddr + ph->p_memsz > RAM_SIZE || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size) {
            fprintf(stderr, "%s: segment %d outside RAM or file\n", path, i);
            exit(2);
        }
        memcpy(ram + ph->p_paddr, f + ph->p_offset, ph->p_filesz);
        memset(ram + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
    }
    *entry = eh->e_entry;
    munmap(f, st.st_size);
    close(fd);
}

static void setup_boot_structures(const char *cmdline)
{
    /* Identity map 0..4 GiB with 2 MiB pages (covers LAPIC/IOAPIC). */
    uint64_t *pml4 = (uint64_t *)(ram + PML4_ADDR), *pdpt = pml4 + 512;
    pml4[0] = (PML4_ADDR + 0x1000) | 3;
    for (int i = 0; i < 4; i++) {
        uint64_t pd_addr = PML4_ADDR + 0x2000 + i * 0x1000;
        uint64_t *pd = (uint64_t *)(ram + pd_addr);
        pdpt[i] = pd_addr | 3;
        for (int j = 0; j < 512; j++)
            pd[j] = (((uint64_t)i << 30) + ((uint64_t)j << 21)) | 0x83;   /* P|RW|PS */
    }
    uint64_t gdt[4] = { 0, 0x00cf9b000000ffff, 0x00af9b000000ffff, 0x00cf93000000ffff };
    memcpy(ram + GDT_ADDR, gdt, sizeof(gdt));

    /* Linux zero page: e820 (low RAM below the EBDA, then 1 MiB..top) and cmdline. */
    uint8_t *zp = ram + ZP_ADDR;
    struct { uint64_t addr, size; uint32_t type; } __attribute__((packed)) e820[2] = {
        { 0, 0x9FC00, 1 }, { 0x100000, RAM_SIZE - 0x100000, 1 },
    };
    zp[0x1e8] = 2;
    memcpy(zp + 0x2d0, e820, sizeof(e820));
    zp[0x210] = 0xFF;                                  /* hdr.type_of_loader: undefined */
    *(uint32_t *)(zp + 0x228) = CMDLINE;               /* hdr.cmd_line_ptr */
    snprintf((char *)ram + CMDLINE, 4096, "%s", cmdline);
}

static void set_cpuid(int vcpu_fd, int id, int ncpus)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(struct kvm_cpuid_entry2));
    c->nent = 256;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0)
        die("KVM_GET_SUPPORTED_CPUID");
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 1) {   /* APIC ID and logical CPU count, like a real VMM */
            e->ebx = (e->ebx & 0xFFFF) | ((uint32_t)ncpus << 16) | ((uint32_t)id << 24);
            e->edx |= 1u << 28;
        }
    }
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0)
        die("KVM_SET_CPUID2");
    free(c);
}

static void setup_bsp(int vcpu_fd, uint64_t entry)
{
    struct kvm_sregs s;
    if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0)   /* keeps apic_base etc. */
        die("KVM_GET_SREGS");
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 11,
                                .present = 1, .s = 1, .l = 1, .g = 1 };
    struct kvm_segment data = { .base = 0, .limit = 0xffffffff, .selector = 0x18, .type = 3,
                                .present = 1, .s = 1, .db = 1, .g = 1 };
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = 4 * 8 - 1;
    s.cr3 = PML4_ADDR;
    s.cr4 = 1u << 5;                                   /* PAE */
    s.cr0 = 0x80050033;                                /* PG|AM|WP|NE|ET|MP|PE */
    s.efer = 0x500;                                    /* LME|LMA */
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &s) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs r = { .rflags = 2, .rip = entry, .rsi = ZP_ADDR, .rsp = STACK_TOP };
    if (ioctl(vcpu_fd, KVM_SET_REGS, &r) < 0)
        die("KVM_SET_REGS");
}

/* ---- COM1 receive side: just enough for an RX-interrupt driven console ---- */
static pthread_mutex_t uart_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t rx_buf[4096];
static unsigned rx_head, rx_tail;
static uint8_t uart_ier, uart_lcr;

static void uart_update_irq(void)   /* caller holds uart_lock */
{
    struct kvm_irq_level l = { .irq = 4, .level = (uart_ier & 1) && rx_head != rx_tail };
    ioctl(vm_fd, KVM_IRQ_LINE, &l);
}

static void *stdin_reader(void *arg)
{
    (void)arg;
    uint8_t buf[256];
    ssize_t n;
    while ((n = read(0, buf, sizeof(buf))) > 0) {
        pthread_mutex_lock(&uart_lock);
        for (ssize_t i = 0; i < n && rx_head - rx_tail < sizeof(rx_buf); i++)
            rx_buf[rx_head++ % sizeof(rx_buf)] = buf[i];
        uart_update_irq();
        pthread_mutex_unlock(&uart_lock);
    }
    return NULL;
}

static uint8_t pio_in(uint16_t port)
{
    uint8_t v = 0xFF;
    if (port < COM1 || port > COM1 + 7)
        return v;
    pthread_mutex_lock(&uart_lock);
    int dlab = uart_lcr & 0x80, pending = rx_head != rx_tail;
    switch (port - COM1) {
    case 0: v = dlab ? 1 : (pending ? rx_buf[rx_tail++ % sizeof(rx_buf)] : 0); break;
    case 1: v = dlab ? 0 : uart_ier; break;
    case 2: v = ((uart_ier & 1) && pending) ? 0xC4 : 0xC1; break;   /* IIR: RX data / none */
    case 3: v = uart_lcr; break;
    case 5: v = 0x60 | (pending ? 1 : 0); break;                    /* LSR: THR empty */
    default: v = 0; break;
    }
    uart_update_irq();
    pthread_mutex_unlock(&uart_lock);
    return v;
}

static void pio_out(uint16_t port, uint8_t v)
{
    if (port == 0x80)
        return;                                        /* the benchmark's port */
    if (port == 0xE9) {
        (void)!write(1, &v, 1);
    } else if (port == 0xF4) {
        exit((v << 1) | 1);
    } else if (port == 0x64) {
        if (v == 0xFE)
            exit(0);
    } else if (port >= COM1 && port <= COM1 + 7) {
        pthread_mutex_lock(&uart_lock);
        if (port == COM1 && !(uart_lcr & 0x80))
            (void)!write(1, &v, 1);                    /* THR; unbuffered so it interleaves */
        else if (port == COM1 + 1 && !(uart_lcr & 0x80))
            uart_ier = v & 0x0F;
        else if (port == COM1 + 3)
            uart_lcr = v;
        uart_update_irq();
        pthread_mutex_unlock(&uart_lock);
    }
}

static const char *exit_name(uint32_t r)
{
    static const char *const names[] = {
        [KVM_EXIT_UNKNOWN] = "KVM_EXIT_UNKNOWN", [KVM_EXIT_EXCEPTION] = "KVM_EXIT_EXCEPTION",
        [KVM_EXIT_IO] = "KVM_EXIT_IO", [KVM_EXIT_HLT] = "KVM_EXIT_HLT",
        [KVM_EXIT_MMIO] = "KVM_EXIT_MMIO", [KVM_EXIT_SHUTDOWN] = "KVM_EXIT_SHUTDOWN",
        [KVM_EXIT_FAIL_ENTRY] = "KVM_EXIT_FAIL_ENTRY", [KVM_EXIT_INTERNAL_ERROR] = "KVM_EXIT_INTERNAL_ERROR",
        [KVM_EXIT_SYSTEM_EVENT] = "KVM_EXIT_SYSTEM_EVENT",
    };
    return r < sizeof(names) / sizeof(names[0]) && names[r] ? names[r] : "?";
}

static void *run_vcpu(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    for (;;) {
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason == KVM_EXIT_IO) {
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
                if (run->io.direction == KVM_EXIT_IO_OUT)
                    pio_out(run->io.port, data[0]);    /* byte-wide devices: low byte */
                else {
                    memset(data, 0xFF, run->io.size);
                    data[0] = pio_in(run->io.port);
                }
            }
            continue;
        }
        if (run->exit_reason == KVM_EXIT_MMIO) {
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0xFF, run->mmio.len);
            continue;
        }
        if (run->exit_reason == KVM_EXIT_HLT)
            exit(0);
        fprintf(stderr, "pio_baseline: exit reason %u (%s)", run->exit_reason, exit_name(run->exit_reason));
        if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
            fprintf(stderr, " suberror %u", run->internal.suberror);
        if (run->exit_reason == KVM_EXIT_MMIO)
            fprintf(stderr, " addr 0x%llx", (unsigned long long)run->mmio.phys_addr);
        struct kvm_regs r;
        if (ioctl(fd, KVM_GET_REGS, &r) == 0)
            fprintf(stderr, " rip 0x%llx", (unsigned long long)r.rip);
        fprintf(stderr, "\n");
        exit(2);
    }
}

/* The VM every baseline runs: irqchip and PIT as pyvisor has them, RAM_SIZE of RAM in
 * slot 0 (slot_flags: KVM_MEM_LOG_DIRTY_PAGES for the reset loop), the kernel loaded and
 * its boot structures written. Returns the kernel's entry point. */
static uint64_t create_vm(const char *kernel, const char *cmdline, uint32_t slot_flags)
{
    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        die("/dev/kvm");
    vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm_fd < 0)
        die("KVM_CREATE_VM");
    if (ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
        die("KVM_SET_TSS_ADDR");
    if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        die("KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        die("KVM_CREATE_PIT2");

    ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        die("mmap RAM");
    struct kvm_userspace_memory_region mr = { .slot = 0, .flags = slot_flags,
                                              .guest_phys_addr = 0, .memory_size = RAM_SIZE,
                                              .userspace_addr = (uint64_t)ram };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0)
        die("KVM_SET_USER_MEMORY_REGION");

    uint64_t entry;
    load_elf(kernel, &entry);
    setup_boot_structures(cmdline);
    run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    return entry;
}

/* vCPU `id` of ncpus with its CPUID set. */
static int create_vcpu(int id, int ncpus)
{
    int fd = ioctl(vm_fd, KVM_CREATE_VCPU, id);
    if (fd < 0)
        die("KVM_CREATE_VCPU");
    set_cpuid(fd, id, ncpus);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s KERNEL.elf [CMDLINE]\n", argv[0]);
        return 2;
    }
    const char *env = getenv("PIO_BASELINE_CPUS");
    int ncpus = env ? atoi(env) : 1;
    if (ncpus < 1 || ncpus > MAX_CPUS)
        ncpus = 1;
    if ((env = getenv("PIO_BASELINE_MEM_MB")) && atoi(env) >= 2 && atoi(env) < 3072)
        RAM_SIZE = (uint64_t)atoi(env) << 20;

    uint64_t entry = create_vm(argv[1], argc > 2 ? argv[2] : "", 0);
    int vcpu[MAX_CPUS];
    for (int i = 0; i < ncpus; i++)
        vcpu[i] = create_vcpu(i, ncpus);
    setup_bsp(vcpu[0], entry);

    pthread_t t;
    pthread_create(&t, NULL, stdin_reader, NULL);
    pthread_detach(t);
    for (int i = 1; i < ncpus; i++) {                  /* APs block in KVM_RUN until SIPI */
        pthread_create(&t, NULL, run_vcpu, (void *)(intptr_t)vcpu[i]);
        pthread_detach(t);
    }
    run_vcpu((void *)(intptr_t)vcpu[0]);
    return 0;
}
