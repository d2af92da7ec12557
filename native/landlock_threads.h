/* Landlock on threads other than the caller's: see landlock_threads.c. */
#ifndef PYVISOR_LANDLOCK_THREADS_H
#define PYVISOR_LANDLOCK_THREADS_H

int pv_landlock_begin(int ruleset_fd, int signo);
int pv_landlock_signal(int tid);
int pv_landlock_result(int tid);
int pv_landlock_self(void);

#endif
