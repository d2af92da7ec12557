/* Landlock for threads other than the caller (pyvisor/sandbox/landlock.py).
 *
 * landlock_restrict_self confines the calling thread and the threads it starts later,
 * never the threads already running, and up to Landlock ABI 7 the kernel has no flag to
 * reach them as seccomp's TSYNC does. So landlock.py sends each other thread a signal
 * whose handler, here, confines that thread with the same ruleset (as glibc's setxid
 * broadcast or libcap's psx reach every thread), and waits until each has answered.
 * The handler stays installed: a late signal only finds the ruleset closed (EBADF). */
#define _GNU_SOURCE
#include "landlock_threads.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LL_SLOTS 4096   /* answers kept per pv_landlock_begin: one per thread signalled */

static int ll_ruleset = -1;
static int ll_signo;
static unsigned ll_claimed;
static struct { int tid; int result; int ready; } ll_slots[LL_SLOTS];

static int restrict_me(void)
{
    int fd = __atomic_load_n(&ll_ruleset, __ATOMIC_ACQUIRE);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    if (syscall(__NR_landlock_restrict_self, fd, 0) != 0)
        return -errno;
    return 0;
}

static void ll_handler(int signo)
{
    int saved = errno;
    unsigned slot = __atomic_fetch_add(&ll_claimed, 1, __ATOMIC_ACQ_REL);
    (void)signo;
    if (slot < LL_SLOTS) {
        ll_slots[slot].result = restrict_me();
        ll_slots[slot].tid = (int)syscall(SYS_gettid);
        __atomic_store_n(&ll_slots[slot].ready, 1, __ATOMIC_RELEASE);
    }
    errno = saved;
}

/* Take signal signo for the handler and forget earlier answers; 0 or -errno. */
int pv_landlock_begin(int ruleset_fd, int signo)
{
    struct sigaction sa;
    memset(ll_slots, 0, sizeof(ll_slots));
    __atomic_store_n(&ll_claimed, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ll_ruleset, ruleset_fd, __ATOMIC_RELEASE);
    ll_signo = signo;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ll_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

/* Ask thread tid of this process to confine itself; 0 or -errno (ESRCH: it is gone). */
int pv_landlock_signal(int tid)
{
    return syscall(SYS_tgkill, getpid(), tid, ll_signo) != 0 ? -errno : 0;
}

/* 1 once thread tid is confined, -errno if it could not be, 0 while it has not answered. */
int pv_landlock_result(int tid)
{
    unsigned count = __atomic_load_n(&ll_claimed, __ATOMIC_ACQUIRE);
    if (count > LL_SLOTS)
        count = LL_SLOTS;
    for (unsigned i = 0; i < count; i++)
        if (__atomic_load_n(&ll_slots[i].ready, __ATOMIC_ACQUIRE) && ll_slots[i].tid == tid)
            return ll_slots[i].result == 0 ? 1 : ll_slots[i].result;
    return 0;
}

/* Confine the calling thread; 0 or -errno. */
int pv_landlock_self(void)
{
    return restrict_me();
}
