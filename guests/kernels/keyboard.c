/* keyboard: drives the i8042 and its PS/2 keyboard as a PC driver does, then takes
 * scancodes on IRQ 1 (IOAPIC pin 1), one byte per interrupt as Linux reads them, until
 * Ctrl-Alt-Del has been pressed and released.
 * cmdline mode=xlate (the firmware's command byte: set 2 translated to set 1), raw (no
 * translation: set 2) or set1 (no translation, the keyboard switched to set 1 with F0 01).
 * Prints:
 *   keyboard: id=<2 bytes after GETID's ACK> set=<F0 00's answer> mode=<mode>
 *   keyboard: ready                      (then the host types)
 *   scancodes: <hex bytes> irqs=<IRQ 1 interrupts>
 *   keyboard: ctrl-alt-del               (Ctrl and Alt held when Delete went down)
 * and ends with status 0; a reply missing or no keys within 20 s: "FAIL: ..." + 3. */
#include "runtime.h"

#define DATA 0x60
#define STATUS 0x64
#define OBF 0x01
#define CTR_KBDINT 0x01
#define CTR_SYS 0x04
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40
#define KBD_IRQ 1

static volatile u8 codes[32];
static volatile u32 ncodes, irqs;

__attribute__((noreturn)) static void fail(const char *why)
{
    printf("FAIL: %s\n", why);
    vm_exit(3);
}

static u8 read_byte(const char *what)
{
    for (int i = 0; i < 100000; i++)
        if (inb(STATUS) & OBF)
            return inb(DATA);
    fail(what);
}

static void command(u8 cmd, int param)
{
    outb(STATUS, cmd);
    if (param >= 0)
        outb(DATA, (u8)param);
}

static void to_keyboard(u8 b)
{
    outb(DATA, b);
    if (read_byte("no ACK from the keyboard") != 0xFA)
        fail("the keyboard did not ACK");
}

static void on_irq1(struct trap_frame *f)
{
    (void)f;
    irqs++;
    if (inb(STATUS) & OBF) {           /* one byte per interrupt, as Linux's i8042 */
        u8 b = inb(DATA);
        if (ncodes < ARRAY_SIZE(codes))
            codes[ncodes++] = b;
    }
}

/* Ctrl-Alt-Del in what arrived: Delete's make code while both modifiers were down. */
static int saw_ctrl_alt_del(int set1)
{
    int ctrl = 0, alt = 0, ext = 0, brk = 0;
    for (u32 i = 0; i < ncodes; i++) {
        u8 b = codes[i];
        if (b == 0xE0) { ext = 1; continue; }
        if (!set1 && b == 0xF0) { brk = 1; continue; }
        int up = set1 ? (b & 0x80) != 0 : brk;
        u8 code = set1 ? (b & 0x7F) : b;
        if (code == (set1 ? 0x1D : 0x14) && !ext) ctrl = !up;
        else if (code == (set1 ? 0x38 : 0x11) && !ext) alt = !up;
        else if (code == (set1 ? 0x53 : 0x71) && ext && !up && ctrl && alt) return 1;
        ext = brk = 0;
    }
    return 0;
}

void kmain(void)
{
    char mode[8] = "xlate";
    cmdline_get("mode", mode, sizeof(mode));
    int xlate = strcmp(mode, "xlate") == 0, set1 = strcmp(mode, "set1") == 0;
    time_init();

    while (inb(STATUS) & OBF)          /* flush, as Linux's i8042_flush */
        inb(DATA);
    command(0x60, CTR_SYS | CTR_AUXDIS | (xlate ? CTR_XLATE : 0));   /* polled for now */
    outb(DATA, 0xF2);                  /* GETID */
    if (read_byte("no GETID ACK") != 0xFA)
        fail("GETID not ACKed");
    u8 id0 = read_byte("no ID byte"), id1 = read_byte("no second ID byte");
    if (set1) {
        to_keyboard(0xF0);
        to_keyboard(0x01);
    }
    to_keyboard(0xF0);
    to_keyboard(0x00);
    u8 set = read_byte("no scancode set");
    to_keyboard(0xF4);                 /* enable scanning */
    printf("keyboard: id=%02x %02x set=%02x mode=%s\n", id0, id1, set, mode);

    trap_set_handler(VEC_IRQ(KBD_IRQ), on_irq1);
    ioapic_route(KBD_IRQ, VEC_IRQ(KBD_IRQ), lapic_id());
    command(0x60, CTR_SYS | CTR_AUXDIS | CTR_KBDINT | (xlate ? CTR_XLATE : 0));
    printf("keyboard: ready\n");

    int set1_codes = xlate || set1;
    u32 expected = set1_codes ? 8 : 11;   /* three presses, three releases */
    u64 deadline = time_ms() + 20000;
    timer_start(10);                   /* a tick, so the deadline is looked at */
    while (ncodes < expected && time_ms() < deadline)
        sti_hlt();
    cli();
    timer_stop();
    if (ncodes < expected)
        fail("no Ctrl-Alt-Del within 20 s");
    printf("scancodes:");
    for (u32 i = 0; i < ncodes; i++)
        printf(" %02x", codes[i]);
    printf(" irqs=%u\n", irqs);
    if (!saw_ctrl_alt_del(set1_codes))
        fail("not Ctrl-Alt-Del");
    printf("keyboard: ctrl-alt-del\n");
    vm_exit(0);
}
