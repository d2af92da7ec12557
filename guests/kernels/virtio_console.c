/* virtio_console: both queues of a virtio-console (no MULTIPORT), over virtio-mmio or
 * virtio-pci ("transport=<pci|mmio>" first): queue 1 (transmitq)
 * sends "hvc: hello from the transmitq"; with echo=1 one buffer goes on queue 0
 * (receiveq), what arrives within 10 s is printed on COM1 as "received: <text>" and
 * sent back through the transmitq as "hvc echo: <text>".  irq=1 (or msix=1) takes both
 * queues' completions as interrupts: MSI-X on PCI, the GSI on virtio-mmio
 * ("msix irqs=<n>" or "gsi irqs=<n>").
 * Exit 0, or STATUS_TEST_FAILED after a "FAIL: ..." line. */
#include "runtime.h"

#define RECEIVEQ 0
#define TRANSMITQ 1

static struct virtio_dev dev;
static char tx[96], rx[64];

static __attribute__((noreturn)) void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    vm_exit(STATUS_TEST_FAILED);
}

static void transmit(const char *text)
{
    u32 n = (u32)strlen(text);
    memcpy(tx, text, n);
    struct virtq_buf b = { (u64)tx, n, 0 };
    if (virtq_submit(&dev.vq[TRANSMITQ], &b, 1, 0) < 0)
        fail("transmitq request");
}

void kmain(void)
{
    int found = virtio_find(&dev, VIRTIO_ID_CONSOLE, 0);
    if (found < 0)
        fail("no virtio-console device");
    if (found)
        fail("virtio-console transport");
    dev.irq_vector = cmdline_get_u64("irq", 0) || cmdline_get_u64("msix", 0) ? 0x50 : 0;
    if (virtio_init(&dev, 0, 2))
        fail("virtio-console initialisation");
    printf("transport=%s\n", virtio_transport_name(&dev));
    transmit("hvc: hello from the transmitq\n");

    if (cmdline_get_u64("echo", 0)) {
        struct virtq *q = &dev.vq[RECEIVEQ];
        struct virtq_buf b = { (u64)rx, sizeof(rx) - 1, 1 };
        virtq_add(q, &b, 1, 0);
        virtq_publish(q, 0);
        virtq_notify(q);
        long len = virtq_wait(q, 10000, NULL);
        if (len < 0)
            fail("nothing arrived on the receiveq within 10 s");
        rx[len] = 0;
        while (len && (rx[len - 1] == '\n' || rx[len - 1] == '\r'))
            rx[--len] = 0;
        printf("received: %s\n", rx);
        char line[96];
        snprintf(line, sizeof(line), "hvc echo: %s\n", rx);
        transmit(line);
    }
    if (dev.irq_vector)
        printf("%s irqs=%lu\n", virtio_irq_name(&dev), virtio_irqs);
    vm_exit(STATUS_OK);
}
