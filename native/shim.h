/* pyvisor native shim: the few things Python cannot do cheaply or safely itself.
 *
 * - ioctl wrappers that return -errno instead of touching errno from Python;
 * - KVM_RUN plus decoding of the kvm_run exit union into one flat struct, so the
 *   per-exit path in Python reads plain fields (cffi releases the GIL around every call);
 * - anonymous mappings for guest RAM and the vCPU's kvm_run area;
 * - the "kick" signal handler that makes a blocked KVM_RUN return with EINTR.
 */
#ifndef PYVISOR_SHIM_H
#define PYVISOR_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>
#include <asm/bootparam.h>

/* One vCPU exit, decoded from struct kvm_run. */
struct pv_exit {
    uint32_t reason;      /* KVM_EXIT_* */
    uint32_t is_write;    /* IO: direction == KVM_EXIT_IO_OUT; MMIO: is_write */
    uint32_t size;        /* IO: access size in bytes; MMIO: len */
    uint32_t count;       /* IO: repeat count (string instructions); MMIO: 1 */
    uint64_t addr;        /* IO: port; MMIO: guest-physical address */
    uint64_t value;       /* the first element written (IO out / MMIO write), little endian */
    uint8_t *data;        /* where data lives in kvm_run (to complete reads, or for rep outs) */
    uint32_t suberror;    /* KVM_EXIT_INTERNAL_ERROR */
    uint32_t ndata;
    uint64_t idata[16];
    uint64_t hw_reason;   /* KVM_EXIT_FAIL_ENTRY / KVM_EXIT_UNKNOWN hardware reason */
    uint32_t event_type;  /* KVM_EXIT_SYSTEM_EVENT type */
    uint32_t cpu;         /* KVM_EXIT_FAIL_ENTRY cpu */
};

int pv_ioctl(int fd, unsigned long request, void *arg);
int pv_ioctl_int(int fd, unsigned long request, unsigned long arg);
int pv_run(int vcpu_fd, struct kvm_run *run, struct pv_exit *exit);
void pv_complete_read(struct pv_exit *exit, uint64_t value);
void *pv_mmap_shared(int fd, size_t size);
void *pv_mmap_anon(size_t size);
int pv_munmap(void *addr, size_t size);
int pv_install_kick_handler(int signo);

#endif
