/* mini: a user's own tiny kernel, the subject of test_mini.py. It talks on the COM1
 * UART by polling (no interrupts), so it needs nothing but a serial port:
 *
 *   mini kernel <command line>
 *   login:            a user name; "root" gets the prompt, anyone else is refused
 *   #                 add A B | echo TEXT | crash (triple fault) | exit N (port 0xF4)
 */
#define COM1 0x3F8
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define EXIT_PORT 0xF4

static inline void outb(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline unsigned char inb(unsigned short port)
{
    unsigned char v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void putc(char c)
{
    if (c == '\n')
        putc('\r');
    while (!(inb(COM1 + 5) & LSR_THRE))
        ;
    outb(COM1, (unsigned char)c);
}

static void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void putnum(long n)
{
    char buf[24];
    int i = 0;
    unsigned long u = n < 0 ? -(unsigned long)n : (unsigned long)n;
    if (n < 0)
        putc('-');
    do
        buf[i++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    while (i)
        putc(buf[--i]);
}

/* One line of input, echoed; carriage return or newline ends it. */
static void getline(char *buf, int size)
{
    int n = 0;
    for (;;) {
        while (!(inb(COM1 + 5) & LSR_DR))
            __asm__ volatile("pause");
        char c = (char)inb(COM1);
        if (c == '\r' || c == '\n') {
            putc('\n');
            break;
        }
        if (n < size - 1) {
            buf[n++] = c;
            putc(c);
        }
    }
    buf[n] = 0;
}

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static const char *number(const char *s, long *out)
{
    long v = 0;
    int neg = 0;
    while (*s == ' ')
        s++;
    if (*s == '-')
        neg = 1, s++;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (*s++ - '0');
    *out = neg ? -v : v;
    return s;
}

static void triple_fault(void)
{
    /* An empty IDT: the #UD cannot be delivered, nor the #GP/#DF after it. */
    struct __attribute__((packed)) { unsigned short limit; unsigned long base; } idt = {0, 0};
    __asm__ volatile("lidt %0; ud2" : : "m"(idt));
}

void kmain(const char *cmdline_unused)
{
    (void)cmdline_unused;
    char line[80];
    puts("mini kernel\n");
    for (;;) {
        puts("login: ");
        getline(line, sizeof line);
        if (streq(line, "root"))
            break;
        puts("login incorrect\n");
    }
    for (;;) {
        puts("# ");
        getline(line, sizeof line);
        if (starts_with(line, "add ")) {
            long a, b;
            number(number(line + 4, &a), &b);
            putnum(a + b);
            putc('\n');
        } else if (starts_with(line, "echo ")) {
            puts(line + 5);
            putc('\n');
        } else if (streq(line, "crash")) {
            triple_fault();
        } else if (starts_with(line, "exit ")) {
            long v;
            number(line + 5, &v);
            outb(EXIT_PORT, (unsigned char)v);
        } else if (line[0]) {
            puts("unknown command\n");
        }
    }
}
