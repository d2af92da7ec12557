/* Interrupt-driven COM1 input: IRQ 4 through the IOAPIC (the 8259 stays masked),
 * a ring buffer filled by the ISR, and line input with simple editing. */
#include "runtime.h"

static volatile u8 ring[256];
static volatile u32 ring_head, ring_tail;
static int rx_irq_on;
volatile u64 uart_rx_irqs;

static void uart_isr(struct trap_frame *f)
{
    (void)f;
    uart_rx_irqs++;
    /* Drain everything: the IRQ is edge-triggered, so the line must drop (empty
     * receiver) before the next byte can raise a new edge. */
    while (uart_rx_ready()) {
        u8 c = uart_rx_byte();
        if (ring_head - ring_tail < sizeof(ring))
            ring[ring_head++ % sizeof(ring)] = c;
    }
}

void serial_rx_irq_init(void)
{
    if (rx_irq_on)
        return;
    rx_irq_on = 1;
    lapic_enable();
    trap_set_handler(VEC_IRQ(UART_IRQ), uart_isr);
    ioapic_route(UART_IRQ, VEC_IRQ(UART_IRQ), lapic_id());
    sti();
    /* Last, so input the VMM buffered before we were ready raises a fresh edge
     * now that the route exists. */
    uart_enable_rx_irq(1);
}

int serial_getc(u64 deadline_ms)
{
    serial_rx_irq_init();
    cli();
    while (ring_head == ring_tail) {
        if (deadline_ms && time_ms() >= deadline_ms) {
            sti();
            return -1;
        }
        sti_hlt();          /* woken by the RX IRQ (or a timer tick for deadlines) */
        cli();
    }
    u8 c = ring[ring_tail++ % sizeof(ring)];
    sti();
    return c;
}

static void erase(int n)
{
    while (n-- > 0)
        uart_puts("\b \b");
}

int serial_readline(char *buf, size_t len, int echo, u32 timeout_ms)
{
    static int after_cr;    /* swallow the LF of a CR LF pair */
    size_t n = 0;
    u64 deadline = 0;
    int own_timer = 0;
    if (timeout_ms) {
        time_init();
        deadline = time_ms() + timeout_ms;
        if (!timer_period()) {          /* something must wake hlt to see the deadline */
            timer_start(10);
            own_timer = 1;
        }
    }
    int r = -1;
    for (;;) {
        int c = serial_getc(deadline);
        if (c < 0)
            break;
        if (c == '\n' && after_cr) {
            after_cr = 0;
            continue;
        }
        after_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            if (echo)
                uart_putc('\n');
            r = (int)n;
            break;
        }
        if (c == 0x7F || c == 0x08) {               /* DEL / backspace */
            if (n) {
                n--;
                if (echo)
                    erase(1);
            }
        } else if (c == 0x15) {                     /* Ctrl-U: kill the line */
            if (echo)
                erase((int)n);
            n = 0;
        } else if (c >= 0x20 && c < 0x7F && n + 1 < len) {
            buf[n++] = (char)c;
            if (echo)
                uart_putc((char)c);
        }
    }
    buf[n] = 0;
    if (own_timer)
        timer_stop();
    return r;
}
