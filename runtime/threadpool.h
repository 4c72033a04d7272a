/* threadpool.h — a persistent pthread pool for the CPU backend: one
 * parallel_for over a range of work items, with the calling thread taking
 * part. A BERT step runs ~500 kernels, so a dispatch must cost a few
 * microseconds: idle workers spin for a short while (pool_set_spin_us) and
 * then sleep on a futex; work is split into about 4 chunks per thread that
 * threads claim one at a time, so a late-waking worker delays no one.
 *
 * Not here: task graphs, futures, priorities, or any allocation per call
 * (pool_parallel_for allocates nothing and makes no syscall while workers
 * are spinning).
 *
 * Invariants: every item of [0, n_items) is passed to fn exactly once, in
 * contiguous chunks of at least min_grain items (the last may be shorter);
 * pool_parallel_for returns after every chunk has finished, and everything
 * fn wrote is visible to the caller then. Which thread runs a chunk is not
 * fixed: results must not depend on it (use the item range, not
 * pool_thread_index, to decide what to compute). */
#ifndef BC_THREADPOOL_H
#define BC_THREADPOOL_H

#include "../graph/base.h"

typedef struct Pool Pool;

/* Work on items [begin, end) of the range; ctx is the caller's. */
typedef void (*PoolFn)(void *ctx, int64_t begin, int64_t end);

/* A pool of n_threads threads counting the caller (n_threads - 1 workers are
 * started); n_threads <= 0 means one per CPU this process may run on.
 * NULL, with an error naming pthread_create's message, on failure. Free
 * with pool_destroy. */
Pool *pool_create(int n_threads, Diag *d);
/* Stops and joins the workers; p may be NULL. No call may be in flight. */
void pool_destroy(Pool *p);

/* Pins worker k (k = 1..n-1) to the k-th CPU this process may run on,
 * skipping the caller's current CPU when there are CPUs to spare; the
 * calling thread itself is left alone. Opt-in: on the 16-core KVM machine
 * it cut the dispatch overhead of a 16-thread pool from 3.7-8 us to 1.7-3 us
 * and of an 8-thread one from 3.7-5 to 1.4 us (unpinned, the scheduler lets
 * spinning workers share a core for a while), but two pinned processes on
 * one machine would share cores; under mpirun, bind each rank to its own
 * cores first. False, with an error, when the affinity calls fail. */
bool pool_pin_workers(Pool *p, Diag *d);

/* Threads taking part in a call, the caller included; 1 for p == NULL. */
int pool_n_threads(const Pool *p);

/* How long an idle worker spins before it sleeps (default 200 us). Longer
 * keeps back-to-back kernels cheap; shorter frees the cores sooner for
 * other work (OpenBLAS's own threads, other processes). */
void pool_set_spin_us(Pool *p, int spin_us);

/* Calls fn(ctx, begin, end) over disjoint chunks covering [0, n_items) on
 * the pool's threads and the caller, and returns when all are done.
 * Runs fn(ctx, 0, n_items) in the caller alone when p is NULL, has one
 * thread, n_items <= min_grain, the call is nested (made from inside a pool
 * job, of this pool or another), or another thread's call on p is in
 * flight: nesting and concurrent callers are therefore safe, only serial. */
void pool_parallel_for(Pool *p, int64_t n_items, int64_t min_grain, PoolFn fn, void *ctx);

/* Inside fn: the index of the running thread in [0, pool_n_threads), 0
 * being the caller of pool_parallel_for; for per-thread scratch space.
 * Outside a pool job (and on threads that are not workers) it is 0. */
int pool_thread_index(void);

#endif
