/* What differs between the virtio transports: register access only.  virtio.c
 * holds the driver (negotiation, status, queues, requests); virtio_pci.c and
 * virtio_mmio.c each fill in one struct virtio_transport. */
#ifndef PYVISOR_VIRTIO_TRANSPORT_H
#define PYVISOR_VIRTIO_TRANSPORT_H

#include "runtime.h"

struct virtio_transport {
    const char *name;                    /* "pci", "mmio" */
    const char *irq_name;                /* "msix", "gsi" */
    u8 (*get_status)(struct virtio_dev *d);
    void (*set_status)(struct virtio_dev *d, u8 status);
    /* The feature bits, 32 at a time through a select register: offsets of the
     * select/value pairs (device's offer, driver's choice) from regs(d). */
    u64 (*regs)(const struct virtio_dev *d);
    u16 dev_features_sel, dev_features, drv_features_sel, drv_features;
    /* Queues the device has; VIRTIO_MAX_QUEUES when the transport cannot say
     * (virtio-mmio: queue_max() of a missing queue is 0). */
    int (*num_queues)(struct virtio_dev *d);
    /* Before the queues are set up: interrupts for d->irq_vector (when nonzero),
     * no configuration-change interrupts.  0 or -1 (printed). */
    int (*irq_setup)(struct virtio_dev *d);
    /* After the queues (may be NULL). */
    void (*irq_done)(struct virtio_dev *d);
    /* Selects queue i and returns its maximum size (0: no such queue). */
    u16 (*queue_max)(struct virtio_dev *d, int i);
    /* For the selected queue q: q->size, the interrupt (when d->irq_vector), the
     * three ring addresses, q->notify_addr, then enable.  0 or -1 (printed). */
    int (*queue_enable)(struct virtio_dev *d, struct virtq *q);
    void (*notify)(struct virtq *q);
    u32 (*config_generation)(struct virtio_dev *d);
    u32 (*config_read32)(struct virtio_dev *d, u32 off);
};

extern const struct virtio_transport virtio_pci_transport, virtio_mmio_transport;

/* The DeviceID of the virtio-mmio window at base (size bytes), 0 when it is none. */
u32 virtio_mmio_device_id(u64 base, u64 size);

/* Clears everything but the queue pages (virtio_init clears those): memset runs
 * byte by byte in the emulator, so 12 KiB would cost ~25 ms.  Also time_init(),
 * since the timeouts use time_ms(). */
void virtio_dev_clear(struct virtio_dev *d, const struct virtio_transport *t);

#define VIRTIO_ERR(d, fmt, ...) printf("virtio %s: " fmt "\n", (d)->name, ##__VA_ARGS__)

#endif
