/* sse: runs one SSE instruction (addsd). On VT-x/AMD-V it simply executes and the kernel
 * exits 0; under PVM's instruction emulator it cannot be emulated, so the VMM must turn
 * the KVM_EXIT_INTERNAL_ERROR into a clear report. Encoded with .byte because the tiny
 * kernels are compiled without SSE. */
#include "runtime.h"

void kmain(void)
{
    u64 cr0, cr4;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    cr0 = (cr0 & ~(1ull << 2)) | (1ull << 1);   /* EM off, MP on */
    cr4 |= (1ull << 9) | (1ull << 10);          /* OSFXSR, OSXMMEXCPT */
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0));
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
    printf("sse: running addsd\n");
    __asm__ volatile(".byte 0xf2, 0x0f, 0x58, 0xc1" ::: "memory");  /* addsd xmm0, xmm1 */
    printf("sse: addsd ran natively\n");
    vm_exit(0);
}
