/* interrupt.h — SIGINT and SIGTERM for bertrun: taken by one thread of
 * their own (sigwait), never by a thread that computes.
 *
 * A signal handler runs on whichever thread the kernel picks, in the middle
 * of whatever it was doing; the GEMM libraries' JIT kernels (oneDNN's) are
 * not safe to interrupt so, and their heap was found corrupted after a
 * SIGTERM landed in one. So interrupt_init, called first in main, blocks
 * both signals (every thread bertrun starts later inherits the mask) and
 * starts the one thread that waits for them; threads that libraries
 * started before main (OpenBLAS's idle ones) take them in a handler.
 * Either way:
 *  - while catching (interrupt_catch(true), the training loop): the first
 *    signal is recorded (interrupt_signal) and the run ends after its step;
 *  - otherwise, or for a second signal: the default action, at once (exit
 *    status 128 + the signal, as without bertrun's handling), also where
 *    the signal was ignored when bertrun started.
 * Programs started from bertrun would inherit the blocked mask: bertrun
 * starts none. */
#ifndef BC_INTERRUPT_H
#define BC_INTERRUPT_H

#include <stdbool.h>

/* Blocks SIGINT/SIGTERM and starts the waiting thread; once, first thing in
 * main. */
void interrupt_init(void);

/* Starts (true: the next signal is recorded, and interrupt_signal is reset
 * to 0) or stops (false: signals are fatal again) catching. */
void interrupt_catch(bool on);

/* The signal recorded while catching, or 0. */
int interrupt_signal(void);

#endif
