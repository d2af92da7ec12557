/* hello: banner, RAM size from e820, command line; exits 0 via i8042 reset.
 * Output (each line ends "\r\n" on the UART):
 *   pyvisor hello
 *   RAM: <N> MiB        (ram_mib(): usable e820 with the low 1 MiB counted whole)
 *   cmdline: <command line> */
#include "runtime.h"

void kmain(void)
{
    printf("pyvisor hello\n");
    printf("RAM: %lu MiB\n", ram_mib());
    printf("cmdline: %s\n", cmdline());
    vm_exit(0);
}
