/* gdb_target: a small program for the gdb stub's test (tests/kernels/test_gdb.py) to
 * debug with symbols: a function to break on (work), a global to read (marker) and
 * one to watch (counter, written once per round by tick), a loop, and an exit status
 * that depends on what gdb may change (rounds): (2 * sum(1..rounds) + 1) through port
 * 0xF4, so 31 for the default 5 rounds.
 * Output: "gdb_target: rounds=<n>", then "gdb_target: sum=<s>". */
#include "runtime.h"

volatile u64 rounds = 5;
volatile u64 counter;
volatile u32 marker = 0x600DCAFE;

__attribute__((noinline)) void tick(u64 n)
{
    counter = n;
}

__attribute__((noinline)) u64 work(u64 n)
{
    u64 sum = 0;
    for (u64 i = 1; i <= n; i++) {
        sum += i;
        tick(i);
    }
    return sum;
}

void kmain(void)
{
    printf("gdb_target: rounds=%lu\n", (unsigned long)rounds);
    u64 sum = work(rounds);
    printf("gdb_target: sum=%lu\n", (unsigned long)sum);
    vm_exit((int)(2 * sum + 1));
}
