/* COM1 16550A output/input, the 0xE9 debug console, and a small printf. */
#include "runtime.h"

enum { THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, FCR = 2, LCR = 3, MCR = 4, LSR = 5 };
#define LSR_DR   0x01
#define LSR_THRE 0x20

void uart_init(void)
{
    outb(COM1 + IER, 0x00);   /* no interrupts until a kernel asks */
    outb(COM1 + LCR, 0x80);   /* DLAB: set divisor */
    outb(COM1 + DLL, 0x01);   /* 115200 baud */
    outb(COM1 + DLM, 0x00);
    outb(COM1 + LCR, 0x03);   /* 8N1 */
    outb(COM1 + FCR, 0xC7);   /* enable + clear FIFOs */
    outb(COM1 + MCR, 0x0B);   /* DTR, RTS, OUT2 (OUT2 gates the IRQ on PCs) */
}

static void uart_raw(char c)
{
    /* Bounded wait: a VMM whose LSR never says "empty" must not hang us. */
    for (int i = 0; i < 100000 && !(inb(COM1 + LSR) & LSR_THRE); i++)
        cpu_relax();
    outb(COM1 + THR, (u8)c);
}

void uart_putc(char c)
{
    if (c == '\n')
        uart_raw('\r');
    uart_raw(c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

int uart_rx_ready(void) { return inb(COM1 + LSR) & LSR_DR; }
u8 uart_rx_byte(void) { return inb(COM1 + RBR); }
void uart_enable_rx_irq(int on) { outb(COM1 + IER, on ? 0x01 : 0x00); }

void debugcon_putc(char c) { outb(0xE9, (u8)c); }
void debugcon_puts(const char *s)
{
    while (*s)
        debugcon_putc(*s++);
}

/* ---- formatting: %s %c %d %i %u %x %X %p %%, flags '-' '0', width, l/ll/z ---- */
struct sink { char *buf; size_t cap, len; };  /* buf == NULL: straight to the UART */

static void put(struct sink *s, char c)
{
    if (!s->buf)
        uart_putc(c);
    else if (s->len + 1 < s->cap)
        s->buf[s->len] = c;
    s->len++;
}

static void put_field(struct sink *s, const char *str, size_t n, int width, int left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    /* zero padding goes after a sign so -0042 stays readable */
    if (!left && pad == '0' && n && *str == '-') {
        put(s, *str++);
        n--;
    }
    if (!left)
        while (fill--)
            put(s, pad);
    while (n--)
        put(s, *str++);
    if (left)
        while (fill-- > 0)
            put(s, ' ');
}

static int format(struct sink *s, const char *fmt, va_list ap)
{
    char tmp[24];
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(s, *fmt);
            continue;
        }
        int left = 0, width = 0, lng = 0;
        char pad = ' ';
        for (fmt++; *fmt == '-' || *fmt == '0'; fmt++) {
            if (*fmt == '-')
                left = 1;
            else
                pad = '0';
        }
        for (; *fmt >= '0' && *fmt <= '9'; fmt++)
            width = width * 10 + (*fmt - '0');
        for (; *fmt == 'l' || *fmt == 'z'; fmt++)
            lng = 1;
        char conv = *fmt;
        if (!conv)
            break;
        if (conv == 's') {
            const char *str = va_arg(ap, const char *);
            if (!str)
                str = "(null)";
            put_field(s, str, strlen(str), width, left, ' ');
            continue;
        }
        if (conv == 'c') {
            tmp[0] = (char)va_arg(ap, int);
            put_field(s, tmp, 1, width, left, ' ');
            continue;
        }
        if (conv == '%') {
            put(s, '%');
            continue;
        }
        u64 v;
        int neg = 0, base = 10;
        const char *digits = "0123456789abcdef";
        if (conv == 'd' || conv == 'i') {
            long long x = lng ? va_arg(ap, long long) : va_arg(ap, int);
            neg = x < 0;
            v = neg ? -(u64)x : (u64)x;
        } else if (conv == 'p') {
            v = (u64)va_arg(ap, void *);
            base = 16;
            put(s, '0');
            put(s, 'x');
        } else {
            v = lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned int);
            if (conv == 'x' || conv == 'X')
                base = 16;
            if (conv == 'X')
                digits = "0123456789ABCDEF";
        }
        char *p = tmp + sizeof(tmp);
        do {
            *--p = digits[v % base];
            v /= base;
        } while (v);
        if (neg)
            *--p = '-';
        put_field(s, p, tmp + sizeof(tmp) - p, width, left, left ? ' ' : pad);
    }
    return (int)s->len;
}

int vprintf(const char *fmt, va_list ap)
{
    struct sink s = { 0, 0, 0 };
    return format(&s, fmt, ap);
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int snprintf(char *buf, size_t n, const char *fmt, ...)
{
    struct sink s = { buf, n, 0 };
    va_list ap;
    va_start(ap, fmt);
    format(&s, fmt, ap);
    va_end(ap);
    if (n)
        buf[s.len < n ? s.len : n - 1] = 0;
    return (int)s.len;
}
