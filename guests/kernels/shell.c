/* shell: an interactive prompt over COM1, input by the UART RX interrupt.
 *
 *   pyvisor> help | info | echo ARGS | ticks | reboot | exit N
 *
 * info prints one "e820: [mem 0x...-0x...] <type>" line per entry, then
 * "RAM: <N> MiB", "CPUs: <N>", "APs started: <M>" and "cmdline: <...>".
 * ticks prints "ticks: <n> in <ms> ms" (1 ms periodic LAPIC timer over 100 ms).
 * Unknown commands print "unknown command: <word>". */
#include "runtime.h"

static int aps_started = -1;   /* woken once; INIT-SIPI again would only repeat it */

static void cmd_help(const char *args)
{
    (void)args;
    printf("commands:\n"
           "  help        this text\n"
           "  info        memory map, RAM, CPUs, command line\n"
           "  echo ARGS   print ARGS\n"
           "  ticks       count LAPIC timer interrupts over 100 ms\n"
           "  reboot      reset via the i8042 (the VMM exits 0)\n"
           "  exit N      leave with status N (0 or odd, see runtime.h)\n");
}

static void cmd_info(const char *args)
{
    (void)args;
    for (int i = 0; i < e820_count(); i++) {
        const struct e820_entry *e = e820_get(i);
        printf("e820: [mem 0x%016lx-0x%016lx] %s\n", e->addr, e->addr + e->size - 1,
               e820_type_name(e->type));
    }
    printf("RAM: %lu MiB\n", ram_mib());
    int cpus = cpu_count();
    printf("CPUs: %d\n", cpus);
    if (aps_started < 0)
        aps_started = smp_start_aps(cpus - 1, 200);
    printf("APs started: %d\n", aps_started);
    printf("cmdline: %s\n", cmdline());
}

static void cmd_echo(const char *args)
{
    printf("%s\n", args);
}

static void cmd_ticks(const char *args)
{
    (void)args;
    time_init();
    u64 before = timer_ticks, start = time_ms();
    timer_start(1);
    sleep_ms(100);
    timer_stop();
    printf("ticks: %lu in %lu ms\n", timer_ticks - before, time_ms() - start);
}

static void cmd_reboot(const char *args)
{
    (void)args;
    vm_exit(0);
}

static void cmd_exit(const char *args)
{
    u64 n = 0;
    if (*args && (parse_u64(args, &n) || n > 511)) {
        printf("exit: expected a status 0..511, got '%s'\n", args);
        return;
    }
    if (n && !(n & 1)) {
        printf("exit: even status %lu cannot be produced: port 0xF4 makes the VMM exit "
               "with (v<<1)|1 (always odd), and 0 is the i8042 reset\n", n);
        return;
    }
    vm_exit((int)n);
}

static const struct { const char *name; void (*fn)(const char *args); } commands[] = {
    { "help", cmd_help }, { "info", cmd_info }, { "echo", cmd_echo },
    { "ticks", cmd_ticks }, { "reboot", cmd_reboot }, { "exit", cmd_exit },
};

static void run_line(char *line)
{
    while (*line == ' ')
        line++;
    char *args = line;
    while (*args && *args != ' ')
        args++;
    if (*args)
        *args++ = 0;
    while (*args == ' ')
        args++;
    if (!*line)
        return;
    for (unsigned i = 0; i < ARRAY_SIZE(commands); i++) {
        if (!strcmp(line, commands[i].name)) {
            commands[i].fn(args);
            return;
        }
    }
    printf("unknown command: %s\n", line);
}

void kmain(void)
{
    char line[128];
    printf("pyvisor shell; type 'help'\n");
    serial_rx_irq_init();
    for (;;) {
        printf("pyvisor> ");
        serial_readline(line, sizeof(line), 1, 0);
        run_line(line);
    }
}
