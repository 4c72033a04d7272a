/* threadpool.c — the persistent pthread pool of threadpool.h.
 *
 * Protocol. A call publishes its job in one 64-bit word `work` =
 * gen (24 bits) | n_chunks (20) | next chunk (20), after writing the job's
 * fields (fn, ctx, n_items, chunk size); a thread claims a chunk with one
 * fetch_add on the word, which returns the job's n_chunks together with the
 * chunk number, so a claim is always on the job that is current; it reads
 * the fields only after a claim with next < n_chunks. The caller returns
 * when every chunk has run (each worker adds the chunks it ran to its own
 * cumulative counter, on its own cache line, once it finds the job
 * exhausted; the caller sums them against what it expects), so a job's fields
 * never change while a claimed chunk of it runs, and a worker's claims
 * before it adds are all of one job. A worker that wakes late finds no
 * chunk (or helps the job that is current). Increments past n_chunks are at
 * most one per thread and wake, far from overflowing the 20-bit field.
 * The generation only makes every published word differ from the last.
 *
 * Waking: `seq` is bumped on every call. Idle workers spin on it for
 * spin_us, then announce themselves in n_sleepers and futex-wait on it; a
 * caller that sees sleepers makes one FUTEX_WAKE. Both sides use seq_cst
 * read-modify-writes, so either the caller sees the sleeper or the sleeper
 * sees the new seq (futex_wait also re-checks the value atomically).
 *
 * Not here: fairness between callers (a second concurrent caller runs its
 * job serially), pinning by default (pool_pin_workers is opt-in), NUMA.
 * Linux only (futex, affinity). */
#include "threadpool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define CHUNKS_PER_THREAD 4
#define FIELD_BITS 20
#define FIELD_MASK ((UINT64_C(1) << FIELD_BITS) - 1)
#define GEN_MASK ((UINT64_C(1) << 24) - 1)

typedef struct {
  struct Pool *pool;
  int index;
  /* Chunks this worker has run, over all jobs: written by it alone, read by
   * callers. A line of its own, so that finishing costs no contended RMW. */
  _Alignas(64) _Atomic int64_t done;
} Worker;

struct Pool {
  int n_threads;
  pthread_t *threads; /* n_threads - 1 workers */
  Worker *workers;
  int n_started;

  /* The current job; written by the caller before `work` is published. */
  PoolFn fn;
  void *ctx;
  int64_t n_items, chunk;
  uint64_t gen;

  _Alignas(64) _Atomic uint64_t work; /* gen | n_chunks | next, see above */
  int64_t done_base; /* sum of the workers' done counters after the last job */
  _Alignas(64) _Atomic uint32_t seq;  /* bumped per call; the futex word */
  _Atomic int n_sleepers;
  _Atomic int stop;
  _Atomic int busy; /* a call is in flight */
  _Atomic int64_t spin_ns;
};

/* Pool job context of this thread: set on workers for their whole life and
 * on a caller while it runs its own chunks, so nested calls run inline. */
static _Thread_local int tls_index;
static _Thread_local int tls_in_job;

int pool_thread_index(void) { return tls_index; }

int pool_n_threads(const Pool *p) { return p ? p->n_threads : 1; }

void pool_set_spin_us(Pool *p, int spin_us) {
  if (p) atomic_store(&p->spin_ns, (int64_t)(spin_us < 0 ? 0 : spin_us) * 1000);
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
  /* EAGAIN (value changed) and EINTR both just mean "look again". */
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Claims and runs chunks of the current job until none is left; returns how
 * many this thread ran. */
static int64_t run_chunks(Pool *p) {
  int64_t ran = 0;
  for (;;) {
    /* Look before the read-modify-write: finding the job exhausted then
     * costs no exclusive access to the contended line. */
    uint64_t w = atomic_load_explicit(&p->work, memory_order_relaxed);
    if ((w & FIELD_MASK) >= ((w >> FIELD_BITS) & FIELD_MASK)) break;
    w = atomic_fetch_add_explicit(&p->work, 1, memory_order_acq_rel);
    uint64_t next = w & FIELD_MASK, total = (w >> FIELD_BITS) & FIELD_MASK;
    if (next >= total) break; /* exhausted: the increment was harmless */
    /* A claim on the current job: its fields are stable until this chunk
     * is counted done. */
    int64_t begin = (int64_t)next * p->chunk;
    int64_t end = begin + p->chunk;
    if (end > p->n_items) end = p->n_items;
    p->fn(p->ctx, begin, end);
    ran++;
  }
  return ran;
}

/* Waits until seq differs from `seen`; returns the new value. */
static uint32_t wait_seq(Pool *p, uint32_t seen) {
  uint32_t s;
  int64_t deadline = now_ns() + atomic_load_explicit(&p->spin_ns, memory_order_relaxed);
  for (int i = 0;; i++) {
    s = atomic_load_explicit(&p->seq, memory_order_acquire);
    if (s != seen) return s;
    if ((i & 31) == 0 && now_ns() >= deadline) break; /* clock read ~every 1-2 us */
    cpu_relax();
  }
  atomic_fetch_add(&p->n_sleepers, 1);
  while ((s = atomic_load(&p->seq)) == seen) futex_wait(&p->seq, seen);
  atomic_fetch_sub(&p->n_sleepers, 1);
  return s;
}

static void *worker_main(void *arg) {
  Worker *wk = arg;
  Pool *p = wk->pool;
  tls_index = wk->index;
  tls_in_job = 1; /* a worker's own calls run inline */
  uint32_t seen = 0; /* seq starts at 0 and only the caller bumps it */
  for (;;) {
    seen = wait_seq(p, seen);
    if (atomic_load(&p->stop)) break;
    int64_t ran = run_chunks(p);
    if (ran)
      atomic_store_explicit(&wk->done, atomic_load_explicit(&wk->done, memory_order_relaxed) + ran,
                            memory_order_release);
  }
  return NULL;
}

static int online_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Zeroed memory aligned to a cache line, as the _Alignas(64) members need
 * (sizes of such structs are multiples of 64); out of memory is a bug as in
 * bc_malloc. */
static void *alloc_aligned(size_t n_bytes) {
  void *m = aligned_alloc(64, (n_bytes + 63) / 64 * 64);
  BC_ASSERT(m);
  memset(m, 0, n_bytes);
  return m;
}

Pool *pool_create(int n_threads, Diag *d) {
  if (n_threads <= 0) n_threads = online_cpus();
  /* Chunks per job must fit the 20-bit field of `work`. */
  if (n_threads > 4096) n_threads = 4096;
  Pool *p = alloc_aligned(sizeof(*p));
  p->n_threads = n_threads;
  atomic_store(&p->spin_ns, (int64_t)200 * 1000);
  if (n_threads > 1) {
    p->threads = bc_calloc((size_t)n_threads - 1, sizeof(pthread_t));
    p->workers = alloc_aligned((size_t)(n_threads - 1) * sizeof(Worker));
  }
  for (int i = 0; i < n_threads - 1; i++) {
    p->workers[i].pool = p;
    p->workers[i].index = i + 1;
    int rc = pthread_create(&p->threads[i], NULL, worker_main, &p->workers[i]);
    if (rc != 0) {
      diag_error(d, SRCLOC_NONE, "thread pool: pthread_create (worker %d of %d): %s", i + 1,
                 n_threads - 1, strerror(rc));
      pool_destroy(p);
      return NULL;
    }
    p->n_started++;
  }
  return p;
}

bool pool_pin_workers(Pool *p, Diag *d) {
  if (!p || p->n_started == 0) return true;
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    diag_error(d, SRCLOC_NONE, "thread pool: sched_getaffinity: %s", strerror(errno));
    return false;
  }
  int self = sched_getcpu(), n_cpus = CPU_COUNT(&allowed);
  int k = 0; /* worker k goes to the k-th allowed CPU other than the caller's */
  for (int c = 0; c < CPU_SETSIZE && k < p->n_started; c++) {
    if (!CPU_ISSET(c, &allowed) || (c == self && n_cpus > p->n_started)) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c, &one);
    int rc = pthread_setaffinity_np(p->threads[k], sizeof(one), &one);
    if (rc != 0) {
      diag_error(d, SRCLOC_NONE, "thread pool: pthread_setaffinity_np (worker %d, CPU %d): %s",
                 k + 1, c, strerror(rc));
      return false;
    }
    k++;
  }
  return true; /* more workers than CPUs: the rest stay unpinned */
}

void pool_destroy(Pool *p) {
  if (!p) return;
  atomic_store(&p->stop, 1);
  atomic_fetch_add(&p->seq, 1);
  futex_wake_all(&p->seq);
  for (int i = 0; i < p->n_started; i++) pthread_join(p->threads[i], NULL);
  free(p->threads);
  free(p->workers);
  free(p);
}

void pool_parallel_for(Pool *p, int64_t n_items, int64_t min_grain, PoolFn fn, void *ctx) {
  if (n_items <= 0) return;
  if (min_grain < 1) min_grain = 1;
  if (!p || p->n_threads == 1 || n_items <= min_grain || tls_in_job ||
      atomic_exchange_explicit(&p->busy, 1, memory_order_acquire)) {
    fn(ctx, 0, n_items);
    return;
  }
  int64_t n_chunks = n_items / min_grain; /* so that chunks hold >= min_grain */
  int64_t cap = (int64_t)CHUNKS_PER_THREAD * p->n_threads;
  if (n_chunks > cap) n_chunks = cap;
  int64_t chunk = (n_items + n_chunks - 1) / n_chunks;
  n_chunks = (n_items + chunk - 1) / chunk;

  p->fn = fn;
  p->ctx = ctx;
  p->n_items = n_items;
  p->chunk = chunk;
  p->gen = (p->gen + 1) & GEN_MASK;
  atomic_store_explicit(&p->work, (p->gen << (2 * FIELD_BITS)) | ((uint64_t)n_chunks << FIELD_BITS),
                        memory_order_release);
  atomic_fetch_add(&p->seq, 1);
  if (atomic_load(&p->n_sleepers) > 0) futex_wake_all(&p->seq);

  tls_in_job = 1;
  int64_t mine = run_chunks(p);
  tls_in_job = 0;
  /* Wait for chunks claimed by workers. They are running, so this is short;
   * yield now and then in case a worker was descheduled. */
  int64_t want = p->done_base + (n_chunks - mine);
  for (int i = 1;; i++) {
    int64_t sum = 0;
    for (int k = 0; k < p->n_threads - 1; k++)
      sum += atomic_load_explicit(&p->workers[k].done, memory_order_acquire);
    if (sum == want) break;
    cpu_relax();
    if ((i & 4095) == 0) sched_yield();
  }
  p->done_base = want;
  atomic_store_explicit(&p->busy, 0, memory_order_release);
}
