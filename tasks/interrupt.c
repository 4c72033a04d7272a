/* interrupt.c — SIGINT and SIGTERM taken by a thread of their own
 * (interrupt.h). */
#include "interrupt.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_bool catching;
static atomic_int recorded;

static void fill_set(sigset_t *s) {
  sigemptyset(s);
  sigaddset(s, SIGINT);
  sigaddset(s, SIGTERM);
}

/* The signal's default action, from this thread: it terminates the
 * process with the signal's status. */
static void die_of(int sig) {
  signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, NULL);
  raise(sig);
  _Exit(128 + sig); /* not reached: the default action of both terminates */
}

/* The first signal while catching is recorded; any other is fatal. */
static void take(int sig) {
  int none = 0;
  if (atomic_load(&catching) && atomic_compare_exchange_strong(&recorded, &none, sig)) return;
  die_of(sig);
}

static void *waiter(void *arg) {
  (void)arg;
  sigset_t s;
  fill_set(&s);
  for (;;) {
    int sig;
    if (sigwait(&s, &sig) == 0) take(sig);
  }
  return NULL;
}

void interrupt_init(void) {
  static bool done;
  if (done) return;
  done = true;
  sigset_t s;
  fill_set(&s);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  /* Threads that libraries started before main (OpenBLAS's, idle while
   * bertrun calls it single-threaded) do not block the signals and may be
   * picked: there a handler takes them. It is also needed because an
   * ignored signal is discarded, never pending for sigwait (a shell
   * without job control starts background commands with SIGINT ignored). */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = take;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  pthread_t t;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &a, waiter, NULL) != 0) {
    /* no waiter: the handler takes them on whichever thread, as before */
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  }
  pthread_attr_destroy(&a);
}

void interrupt_catch(bool on) {
  if (on) atomic_store(&recorded, 0);
  atomic_store(&catching, on);
}

int interrupt_signal(void) { return atomic_load(&recorded); }
