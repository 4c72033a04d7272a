/* test_cpu_ops.c — the CPU backend's hand-written kernels (runtime/cpu_ops.c)
 * and its thread pool (runtime/threadpool.c), each against a naive
 * reference written here (double precision for arithmetic, exact for
 * copies), on random shapes, the BERT shapes, and pools of 1 to 8 threads
 * (more threads than cores is fine: it exercises preemption).
 *
 * Tolerances: sgemm accumulates in f32 over K, so an element may be off by
 * about K * eps * sum_k |a_ik b_kj| (the standard dot-product bound; blocked
 * FMA kernels do much better, the bound is what is guaranteed). Scatter-add
 * must equal a serial f32 sum in index order bit for bit. Copies are exact. */
#include "../runtime/cpu_ops.h"
#include "../runtime/threadpool.h"
#include "test.h"

#include <float.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static int64_t rnd_int(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rnd_f(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }
static void fill(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = rnd_f();
}
static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static Pool *make_pool(int n) {
  Diag d;
  diag_init(&d);
  Pool *p = pool_create(n, &d);
  if (!p) diag_print(&d, stderr);
  diag_free(&d);
  BC_ASSERT(p);
  return p;
}

/* ---- thread pool ------------------------------------------------------- */

typedef struct {
  _Atomic int *hits;
  int64_t n, min_grain;
  _Atomic int short_chunks; /* chunks under min_grain not at the end */
  _Atomic int bad_index;
  int n_threads;
} CountJob;

static void count_fn(void *ctx, int64_t b, int64_t e) {
  CountJob *j = ctx;
  if (e - b < j->min_grain && e != j->n) atomic_fetch_add(&j->short_chunks, 1);
  int ti = pool_thread_index();
  if (ti < 0 || ti >= j->n_threads) atomic_fetch_add(&j->bad_index, 1);
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&j->hits[i], 1);
}

TEST(pool_every_item_once) {
  int sizes[] = {1, 2, 3, 4, 8};
  int64_t ns[] = {1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 100003};
  int64_t grains[] = {0, 1, 2, 5, 64, 1000};
  for (size_t si = 0; si < sizeof(sizes) / sizeof(*sizes); si++) {
    Pool *p = make_pool(sizes[si]);
    CHECK_EQ_INT(pool_n_threads(p), sizes[si]);
    for (size_t ni = 0; ni < sizeof(ns) / sizeof(*ns); ni++)
      for (size_t gi = 0; gi < sizeof(grains) / sizeof(*grains); gi++) {
        int64_t n = ns[ni];
        _Atomic int *hits = bc_calloc((size_t)n, sizeof(*hits));
        CountJob j = {.hits = hits, .n = n, .min_grain = grains[gi], .n_threads = sizes[si]};
        pool_parallel_for(p, n, grains[gi], count_fn, &j);
        int64_t bad = -1;
        for (int64_t i = 0; i < n; i++)
          if (atomic_load(&hits[i]) != 1) bad = i;
        CHECK_MSG(bad < 0, "threads %d n %lld grain %lld: item %lld hit %d times", sizes[si],
                  (long long)n, (long long)grains[gi], (long long)bad,
                  bad >= 0 ? atomic_load(&hits[bad]) : 0);
        CHECK_EQ_INT(atomic_load(&j.short_chunks), 0);
        CHECK_EQ_INT(atomic_load(&j.bad_index), 0);
        free(hits);
      }
    pool_destroy(p);
  }
  _Atomic int hits5[5] = {0};
  CountJob j5 = {.hits = hits5, .n = 5, .n_threads = 1};
  pool_parallel_for(NULL, 5, 1, count_fn, &j5); /* no pool: serial */
  for (int i = 0; i < 5; i++) CHECK_EQ_INT(atomic_load(&hits5[i]), 1);
  pool_destroy(NULL);
}

typedef struct {
  _Atomic int64_t sum;
} SumJob;

static void sum_fn(void *ctx, int64_t b, int64_t e) {
  SumJob *j = ctx;
  int64_t s = 0;
  for (int64_t i = b; i < e; i++) s += i;
  atomic_fetch_add(&j->sum, s);
}

/* Many small calls back to back: workers go between spinning and sleeping
 * (spin 0 forces a futex round trip on every call). */
TEST(pool_many_small_calls) {
  int spins[] = {200, 0};
  for (int si = 0; si < 2; si++)
    for (int t = 2; t <= 4; t++) {
      Pool *p = make_pool(t);
      pool_set_spin_us(p, spins[si]);
      int bad = 0;
      for (int it = 0; it < 20000; it++) {
        int64_t n = 1 + it % 37;
        SumJob j = {0};
        pool_parallel_for(p, n, 1, sum_fn, &j);
        if (atomic_load(&j.sum) != n * (n - 1) / 2) bad++;
      }
      CHECK_EQ_INT(bad, 0);
      pool_destroy(p);
    }
}

/* Every chunk waits for all n: the call completes only if every thread of
 * the pool took one, so a worker that missed its wake-up shows as a
 * timeout (2 s; generous for a loaded machine). */
typedef struct {
  _Atomic int arrived;
  int n;
  _Atomic int timeouts;
} MeetJob;

static void meet_fn(void *ctx, int64_t b, int64_t e) {
  MeetJob *j = ctx;
  atomic_fetch_add(&j->arrived, (int)(e - b));
  double t0 = now_s();
  while (atomic_load(&j->arrived) < j->n) {
    sched_yield(); /* let a preempted member run when threads outnumber cores */
    if (now_s() - t0 > 2.0) {
      atomic_fetch_add(&j->timeouts, 1);
      return;
    }
  }
}

TEST(pool_every_worker_wakes) {
  int sizes[] = {2, 3, 0}; /* 0: one per CPU */
  for (size_t si = 0; si < sizeof(sizes) / sizeof(*sizes); si++) {
    Pool *p = make_pool(sizes[si]);
    sizes[si] = pool_n_threads(p);
    int bad = 0;
    for (int it = 0; it < 200 && !bad; it++) {
      /* Alternate spinning, short and long sleeps between calls. */
      pool_set_spin_us(p, it % 3 == 0 ? 0 : 50);
      if (it % 2) {
        struct timespec gap = {0, (long)(it % 7) * 30 * 1000};
        nanosleep(&gap, NULL);
      }
      MeetJob j = {.n = sizes[si]};
      pool_parallel_for(p, sizes[si], 1, meet_fn, &j);
      bad = atomic_load(&j.timeouts) != 0;
      CHECK_MSG(!bad, "pool of %d: call %d did not get every thread", sizes[si], it);
    }
    pool_destroy(p);
  }
}

typedef struct {
  Pool *p;
  _Atomic int *hits;
  int64_t inner;
} NestJob;

static void nest_inner(void *ctx, int64_t b, int64_t e) {
  _Atomic int *hits = ctx;
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&hits[i], 1);
}

static void nest_outer(void *ctx, int64_t b, int64_t e) {
  NestJob *j = ctx;
  for (int64_t i = b; i < e; i++) /* a nested call runs inline in this thread */
    pool_parallel_for(j->p, j->inner, 1, nest_inner, (void *)(j->hits + i * j->inner));
}

TEST(pool_nested_calls_run_inline) {
  Pool *p = make_pool(3);
  int64_t outer = 50, inner = 40;
  _Atomic int *hits = bc_calloc((size_t)(outer * inner), sizeof(*hits));
  NestJob j = {p, hits, inner};
  pool_parallel_for(p, outer, 1, nest_outer, &j);
  int bad = 0;
  for (int64_t i = 0; i < outer * inner; i++) bad += atomic_load(&hits[i]) != 1;
  CHECK_EQ_INT(bad, 0);
  free(hits);
  pool_destroy(p);
}

typedef struct {
  Pool *p;
  int bad;
} CallerArg;

static void *caller_main(void *arg) {
  CallerArg *c = arg;
  for (int it = 0; it < 5000; it++) {
    int64_t n = 100 + it % 50;
    SumJob j = {0};
    pool_parallel_for(c->p, n, 1, sum_fn, &j);
    if (atomic_load(&j.sum) != n * (n - 1) / 2) c->bad++;
  }
  return NULL;
}

/* Two threads calling one pool at once: one of them runs serially. */
TEST(pool_concurrent_callers) {
  Pool *p = make_pool(3);
  pthread_t th[2];
  CallerArg args[2] = {{p, 0}, {p, 0}};
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, caller_main, &args[i]);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CHECK_EQ_INT(args[0].bad + args[1].bad, 0);
  pool_destroy(p);
}

/* A chunk of about `us` microseconds of busy work (no memory traffic). */
typedef struct {
  double us;
  _Atomic int workers_took_part;
} BusyJob;

static void busy_fn(void *ctx, int64_t b, int64_t e) {
  BusyJob *j = ctx;
  if (pool_thread_index() != 0 && !atomic_load(&j->workers_took_part))
    atomic_store(&j->workers_took_part, 1);
  double t0 = now_s();
  while ((now_s() - t0) * 1e6 < j->us * (double)(e - b)) {
  }
}

/* Not a pass/fail check: prints what one dispatch costs, as the time of a
 * call with one 5 us chunk per thread minus those 5 us, with the workers
 * spinning (back-to-back kernels) and asleep (after an idle gap), for the
 * pool as created and with its workers pinned. Noisy on a loaded machine.
 * BC_THREADS=n picks the pool size (default one per CPU). */
static void measure_dispatch(Pool *p, const char *what) {
  int n = pool_n_threads(p);
  double work_us = 5.0;
  BusyJob j = {.us = work_us};
  pool_set_spin_us(p, 200);
  for (int i = 0; i < 1000; i++) pool_parallel_for(p, n, 1, busy_fn, &j);
  int calls = 20000;
  double t0 = now_s();
  for (int i = 0; i < calls; i++) pool_parallel_for(p, n, 1, busy_fn, &j);
  double hot = (now_s() - t0) / calls * 1e6 - work_us;
  pool_set_spin_us(p, 0);
  int cold_calls = 500;
  double cold = 0;
  for (int i = 0; i < cold_calls; i++) {
    struct timespec gap = {0, 200 * 1000}; /* workers fall asleep */
    nanosleep(&gap, NULL);
    t0 = now_s();
    pool_parallel_for(p, n, 1, busy_fn, &j);
    cold += now_s() - t0;
  }
  cold = cold / cold_calls * 1e6 - work_us;
  fprintf(stderr, "  pool of %d threads, %s: %.2f us overhead per call spinning, %.2f us asleep\n", n,
          what, hot, cold);
  CHECK(n == 1 || atomic_load(&j.workers_took_part));
  CHECK(hot < 1000);
}

TEST(pool_dispatch_overhead) {
  int n = getenv("BC_THREADS") ? atoi(getenv("BC_THREADS")) : 0;
  Pool *p = make_pool(n);
  measure_dispatch(p, "unpinned");
  pool_destroy(p);
  p = make_pool(n);
  Diag d;
  diag_init(&d);
  CHECK(pool_pin_workers(p, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  measure_dispatch(p, "pinned");
  pool_destroy(p);
}

/* ---- GEMM ------------------------------------------------------------------ */

/* A batch shape of rank r broadcast into out batch `ob`: trailing dims of ob,
 * each kept or set to 1, maybe fewer of them. */
static Shape batch_into(const Shape *ob) {
  Shape s = {0};
  s.rank = (int)rnd_int(0, ob->rank);
  for (int i = 0; i < s.rank; i++) {
    int oi = ob->rank - s.rank + i;
    s.dim[i] = rnd_int(0, 3) == 0 ? 1 : ob->dim[oi];
  }
  return s;
}

static Shape with_matrix(const Shape *batch, int64_t r, int64_t c) {
  Shape s = *batch;
  s.dim[s.rank++] = r;
  s.dim[s.rank++] = c;
  return s;
}

/* Offset, in matrices, of batch multi-index `ix` (of out batch rank r) in a
 * batch shape `b` broadcast to it. */
static int64_t bcast_offset(const Shape *b, const int64_t *ix, int r) {
  int64_t off = 0;
  for (int i = 0; i < b->rank; i++) {
    int oi = r - b->rank + i;
    off = off * b->dim[i] + (b->dim[i] == 1 ? 0 : ix[oi]);
  }
  return off;
}

/* Checks C (after cpu_gemm with beta, from C0) element (bi, i, j) against a
 * double dot product; returns false (and reports) on the first failure. */
static bool check_gemm_elem(const float *A, const Shape *as, bool ta, const float *B, const Shape *bs,
                            bool tb, const float *C0, float beta, const float *C, const Shape *cs,
                            int64_t bi, int64_t i, int64_t j) {
  int r = cs->rank - 2;
  int64_t M = cs->dim[r], N = cs->dim[r + 1], K = ta ? as->dim[as->rank - 2] : as->dim[as->rank - 1];
  int64_t ix[BC_MAX_RANK], rest = bi;
  for (int q = r - 1; q >= 0; q--) {
    ix[q] = rest % cs->dim[q];
    rest /= cs->dim[q];
  }
  Shape ab = *as, bb = *bs;
  ab.rank -= 2;
  bb.rank -= 2;
  const float *Ab = A + bcast_offset(&ab, ix, r) * M * K;
  const float *Bb = B + bcast_offset(&bb, ix, r) * K * N;
  double acc = 0, mag = 0;
  for (int64_t k = 0; k < K; k++) {
    double x = ta ? Ab[k * M + i] : Ab[i * K + k];
    double y = tb ? Bb[j * K + k] : Bb[k * N + j];
    acc += x * y;
    mag += fabs(x * y);
  }
  int64_t ci = (bi * M + i) * N + j;
  if (beta != 0.0f) {
    acc += C0[ci];
    mag += fabs(C0[ci]);
  }
  /* f32 dot product over K (+1 for beta): |err| <= (K+1) eps sum|terms|. */
  double tol = (double)(K + 2) * FLT_EPSILON * mag + 1e-30;
  if (fabs(C[ci] - acc) <= tol) return true;
  char s1[96], s2[96], s3[96];
  fprintf(stderr, "  gemm %s%s x %s%s -> %s beta %g: C[%lld,%lld,%lld] = %.9g, want %.9g (tol %.3g)\n",
          shape_str(as, s1), ta ? "^T" : "", shape_str(bs, s2), tb ? "^T" : "", shape_str(cs, s3),
          beta, (long long)bi, (long long)i, (long long)j, C[ci], acc, tol);
  return false;
}

/* Runs one GEMM case with the given pool and mode and checks every element
 * (or `samples` random ones when > 0). */
static bool run_gemm_case(Pool *p, CpuGemmPar par, GemmLib lib, const Shape *as, bool ta, const Shape *bs, bool tb,
                          const Shape *cs, float beta, int64_t samples) {
  int64_t na = shape_numel(as), nb = shape_numel(bs), nc = shape_numel(cs);
  float *A = bc_malloc((size_t)(na ? na : 1) * 4), *B = bc_malloc((size_t)(nb ? nb : 1) * 4);
  float *C = bc_malloc((size_t)(nc ? nc : 1) * 4), *C0 = bc_malloc((size_t)(nc ? nc : 1) * 4);
  fill(A, na);
  fill(B, nb);
  if (beta != 0.0f) fill(C0, nc);
  else
    for (int64_t i = 0; i < nc; i++) C0[i] = NAN; /* beta 0 must overwrite NaN */
  memcpy(C, C0, (size_t)nc * 4);
  cpu_gemm(p, par, lib, A, as, ta, B, bs, tb, beta, C, cs);
  int r = cs->rank - 2;
  int64_t M = cs->dim[r], N = cs->dim[r + 1], nbatch = (M > 0 && N > 0) ? nc / (M * N) : 0;
  bool ok = true;
  if (samples <= 0) {
    for (int64_t bi = 0; bi < nbatch && ok; bi++)
      for (int64_t i = 0; i < M && ok; i++)
        for (int64_t j = 0; j < N && ok; j++)
          ok = check_gemm_elem(A, as, ta, B, bs, tb, C0, beta, C, cs, bi, i, j);
  } else {
    for (int64_t s = 0; s < samples && ok; s++)
      ok = check_gemm_elem(A, as, ta, B, bs, tb, C0, beta, C, cs, rnd_int(0, nbatch - 1),
                           rnd_int(0, M - 1), rnd_int(0, N - 1));
  }
  free(A);
  free(B);
  free(C);
  free(C0);
  return ok;
}

/* The GEMM libraries that load here (gemm_lib.h); those that do not are
 * named on stderr. OpenBLAS is linked, so there is always one. */
static int installed_libs(GemmLib *out) {
  static bool told;
  int n = 0;
  for (int i = 0; i < GEMM_LIB_COUNT; i++) {
    if (gemm_lib_load((GemmLib)i)) out[n++] = (GemmLib)i;
    else if (!told) fprintf(stderr, "  GEMM library %s is not installed: not checked\n", gemm_lib_name((GemmLib)i));
  }
  told = true;
  return n;
}

TEST(gemm_random_shapes) {
  Pool *pools[3] = {NULL, make_pool(2), make_pool(3)};
  CpuGemmPar pars[3] = {CPU_GEMM_AUTO, CPU_GEMM_POOL, CPU_GEMM_BLAS};
  GemmLib libs[GEMM_LIB_COUNT];
  int n_libs = installed_libs(libs);
  int fails = 0;
  for (int c = 0; c < 300 * n_libs; c++) {
    Shape ob = {0};
    ob.rank = (int)rnd_int(0, 3);
    for (int i = 0; i < ob.rank; i++) ob.dim[i] = rnd_int(1, 3);
    bool big = c % 10 == 0; /* some large enough to be split over threads */
    int64_t M = big ? rnd_int(60, 200) : rnd_int(1, 9);
    int64_t N = big ? rnd_int(60, 200) : rnd_int(1, 9);
    int64_t K = big ? rnd_int(30, 150) : rnd_int(1, 9);
    bool ta = rnd() & 1, tb = rnd() & 1;
    Shape abt = batch_into(&ob), bbt = batch_into(&ob);
    /* The result's batch is the broadcast of the two (dims set to 1 above
     * may leave an ob dim unused). */
    Shape cb;
    BC_ASSERT(shape_broadcast(&abt, &bbt, &cb));
    Shape as = ta ? with_matrix(&abt, K, M) : with_matrix(&abt, M, K);
    Shape bs = tb ? with_matrix(&bbt, N, K) : with_matrix(&bbt, K, N);
    Shape cs = with_matrix(&cb, M, N);
    float beta = (c % 3 == 0) ? 1.0f : 0.0f;
    GemmLib lib = libs[c / 300];
    if (!run_gemm_case(pools[c % 3], pars[(c / 3) % 3], lib, &as, ta, &bs, tb, &cs, beta, 0)) {
      fprintf(stderr, "  (library %s)\n", gemm_lib_name(lib));
      fails++;
    }
  }
  CHECK_EQ_INT(fails, 0);
  for (int i = 1; i < 3; i++) pool_destroy(pools[i]);
}

/* GEMM epilogues (gemm_lib.h) on every installed library, through
 * cpu_gemm_epilogue's tiles (3 threads): oneDNN's post-ops, the product
 * by blocks of rows then the steps on the others and for relu masks.
 * Every element against double. */
static int epilogue_case(Pool *p, int M, int N, int K);
TEST(gemm_epilogue_steps_on_each_library) {
  Pool *p = make_pool(3);
  /* tiles along M (3 of 100 rows), then along N (M too short to cut) */
  CHECK_EQ_INT(epilogue_case(p, 300, 70, 80), 0);
  CHECK_EQ_INT(epilogue_case(p, 40, 300, 200), 0);
  pool_destroy(p);
}

/* Elements that differ, for one shape on every library and chain. */
static int epilogue_case(Pool *p, int M, int N, int K) {
  static const GemmEpiKind chains[][3] = {{GEMM_EPI_BIAS, GEMM_EPI_RELU},
                                          {GEMM_EPI_BIAS, GEMM_EPI_GELU, GEMM_EPI_ADD},
                                          {GEMM_EPI_GELU_TANH},
                                          {GEMM_EPI_ADD, GEMM_EPI_RELU},
                                          {GEMM_EPI_RELU_MASK},
                                          {GEMM_EPI_BIAS, GEMM_EPI_RELU_MASK}};
  enum { N_CHAINS = sizeof chains / sizeof chains[0] };
  static const int chain_len[N_CHAINS] = {2, 3, 1, 2, 1, 2};
  GemmLib libs[GEMM_LIB_COUNT];
  int n_libs = installed_libs(libs), fails = 0;
  float *A = bc_malloc(sizeof(float) * (size_t)(M * K)), *B = bc_malloc(sizeof(float) * (size_t)(K * N));
  float *bias = bc_malloc(sizeof(float) * (size_t)N), *R = bc_malloc(sizeof(float) * (size_t)(M * N));
  float *C = bc_malloc(sizeof(float) * (size_t)(M * N)), *Y = bc_malloc(sizeof(float) * (size_t)(M * N));
  fill(A, M * K);
  fill(B, K * N);
  fill(bias, N);
  fill(R, M * N);
  for (int i = 0; i < M * N; i++) Y[i] = (float)((i * 7919) % 13) - 6.0f; /* a relu mask's source: both signs and 0 */
  for (int l = 0; l < n_libs; l++)
    for (int c = 0; c < N_CHAINS; c++)
      for (int t = 0; t < 4; t++) { /* A and B transposed or not: the buffers read as [K, M], [N, K] */
        bool ta = t & 1, tb = t & 2;
        GemmEpilogue e = {chain_len[c], {{0}}};
        for (int s = 0; s < e.n; s++) {
          e.step[s].kind = chains[c][s];
          GemmEpiKind kind = chains[c][s];
          e.step[s].src = kind == GEMM_EPI_BIAS ? bias : kind == GEMM_EPI_ADD ? R : kind == GEMM_EPI_RELU_MASK ? Y : NULL;
          e.step[s].ld = N;
        }
        Shape as = ta ? shape_of(2, K, M) : shape_of(2, M, K), bs = tb ? shape_of(2, N, K) : shape_of(2, K, N);
        Shape cs = shape_of(2, M, N);
        for (int i = 0; i < M * N; i++) C[i] = NAN; /* every element must be written */
        cpu_gemm_epilogue(p, libs[l], A, &as, ta, B, &bs, tb, C, &cs, &e);
        for (int i = 0; i < M && fails < 5; i++)
          for (int j = 0; j < N && fails < 5; j++) {
            double x = 0;
            for (int k = 0; k < K; k++) x += (double)A[ta ? k * M + i : i * K + k] * B[tb ? j * K + k : k * N + j];
            for (int s = 0; s < e.n; s++) switch (e.step[s].kind) {
              case GEMM_EPI_BIAS: x += bias[j]; break;
              case GEMM_EPI_ADD: x += R[i * N + j]; break;
              case GEMM_EPI_RELU_MASK: x = Y[i * N + j] > 0 ? x : 0; break;
              case GEMM_EPI_RELU: x = x > 0 ? x : 0; break;
              case GEMM_EPI_GELU: x = 0.5 * x * (1 + erf(x / sqrt(2.0))); break;
              case GEMM_EPI_GELU_TANH: x = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); break;
              }
            /* f32 sums of up to 200 products, then f32 activations
             * (oneDNN's polynomial erf among them): ~1e-6 of the scale */
            if (!(fabs(C[i * N + j] - x) <= 1e-5 * (1 + fabs(x)))) {
              fprintf(stderr, "  %s, chain %d, ta %d tb %d: C[%d][%d] = %.8g, want %.8g\n", gemm_lib_name(libs[l]), c,
                      ta, tb, i, j, C[i * N + j], x);
              fails++;
            }
          }
      }
  free(A);
  free(B);
  free(bias);
  free(R);
  free(C);
  free(Y);
  return fails;
}

/* Batch-dims folding: B without batch (or broadcast over A's trailing
 * batch dims) makes one tall GEMM; check the cases around it. */
TEST(gemm_fold_cases) {
  Pool *p = make_pool(3);
  struct {
    Shape a, b;
    bool ta, tb;
  } cs[] = {
      {shape_of(3, 4, 5, 6), shape_of(2, 6, 7), false, false},          /* x W */
      {shape_of(3, 4, 5, 6), shape_of(2, 7, 6), false, true},           /* x W^T */
      {shape_of(4, 2, 3, 5, 6), shape_of(4, 2, 1, 6, 7), false, false}, /* fold inner axis only */
      {shape_of(4, 2, 3, 5, 6), shape_of(4, 1, 3, 6, 7), false, false}, /* no fold */
      {shape_of(4, 1, 3, 5, 6), shape_of(4, 2, 1, 6, 7), false, false}, /* both broadcast */
      {shape_of(2, 5, 6), shape_of(3, 4, 6, 7), false, false},          /* A without batch */
      {shape_of(3, 4, 6, 5), shape_of(2, 6, 7), true, false},           /* trans_a: no fold */
      {shape_of(4, 1, 1, 5, 6), shape_of(2, 6, 7), false, false},       /* size-1 batch dims */
      {shape_of(3, 1, 1, 1), shape_of(2, 1, 1), false, false},          /* all ones */
      {shape_of(3, 2, 0, 3), shape_of(2, 3, 4), false, false},          /* M = 0 */
      {shape_of(3, 2, 3, 0), shape_of(2, 0, 4), false, false},          /* K = 0 */
  };
  for (size_t i = 0; i < sizeof(cs) / sizeof(*cs); i++) {
    Shape ab = cs[i].a, bb = cs[i].b, cb;
    ab.rank -= 2;
    bb.rank -= 2;
    BC_ASSERT(shape_broadcast(&ab, &bb, &cb));
    int64_t M = cs[i].ta ? cs[i].a.dim[cs[i].a.rank - 1] : cs[i].a.dim[cs[i].a.rank - 2];
    int64_t N = cs[i].tb ? cs[i].b.dim[cs[i].b.rank - 2] : cs[i].b.dim[cs[i].b.rank - 1];
    Shape c = with_matrix(&cb, M, N);
    GemmLib libs[GEMM_LIB_COUNT];
    int n_libs = installed_libs(libs);
    for (int l = 0; l < n_libs; l++)
      for (int par = 0; par < 3; par++)
        for (int beta = 0; beta < 2; beta++)
          CHECK_MSG(run_gemm_case(p, (CpuGemmPar)par, libs[l], &cs[i].a, cs[i].ta, &cs[i].b, cs[i].tb, &c,
                                  (float)beta, 0),
                    "case %zu, %s", i, gemm_lib_name(libs[l]));
  }
  pool_destroy(p);
}

/* The shapes of the d2l BERT step (batch 64, length 128, hidden 128, 2
 * heads, vocab 20256, 19 masked positions per example), forward and the
 * transposed backward forms; sampled elements are checked. */
TEST(gemm_bert_shapes) {
  Pool *p = make_pool(0);
  struct {
    Shape a, b;
    bool ta, tb;
    Shape c;
    const char *what;
  } cs[] = {
      {shape_of(3, 64, 128, 128), shape_of(2, 128, 128), false, false, shape_of(3, 64, 128, 128), "dense"},
      {shape_of(2, 8192, 128), shape_of(2, 8192, 128), true, false, shape_of(2, 128, 128), "dense dW"},
      {shape_of(2, 8192, 128), shape_of(2, 128, 128), false, true, shape_of(2, 8192, 128), "dense dX"},
      {shape_of(4, 64, 2, 128, 64), shape_of(4, 64, 2, 128, 64), false, true,
       shape_of(4, 64, 2, 128, 128), "QK^T"},
      {shape_of(4, 64, 2, 128, 128), shape_of(4, 64, 2, 128, 64), false, false,
       shape_of(4, 64, 2, 128, 64), "PV"},
      {shape_of(2, 64 * 19, 128), shape_of(2, 128, 20256), false, false, shape_of(2, 64 * 19, 20256),
       "MLM logits"},
  };
  GemmLib libs[GEMM_LIB_COUNT];
  int n_libs = installed_libs(libs);
  for (size_t i = 0; i < sizeof(cs) / sizeof(*cs); i++)
    for (int l = 0; l < n_libs; l++)
      for (int par = 1; par < 3; par++)
        CHECK_MSG(run_gemm_case(p, (CpuGemmPar)par, libs[l], &cs[i].a, cs[i].ta, &cs[i].b, cs[i].tb, &cs[i].c,
                                0.0f, 3000),
                  "%s, %s", cs[i].what, gemm_lib_name(libs[l]));
  pool_destroy(p);
}

/* Same inputs, same number of threads: the same bits, from any pool of that
 * size and on every call. The cases are one GEMM, batched GEMMs, and one cut
 * into tiles whose edges fall inside the micro-kernels' blocks (M and N not
 * multiples of 16). Another thread count may give other bits under
 * OpenBLAS kernels that round by sub-matrix (OPENBLAS_CORETYPE=Haswell's
 * do), which is why the promise is per thread count (README, cpu_ops.h). */
TEST(gemm_reproducible) {
  struct {
    Shape a, b, c;
  } cs[] = {
      {shape_of(2, 300, 70), shape_of(2, 70, 90), shape_of(2, 300, 90)},
      {shape_of(3, 6, 100, 40), shape_of(3, 6, 40, 120), shape_of(3, 6, 100, 120)},
      {shape_of(2, 1000, 256), shape_of(2, 256, 650), shape_of(2, 1000, 650)},
  };
  GemmLib libs[GEMM_LIB_COUNT];
  int n_libs = installed_libs(libs);
  for (size_t cl = 0; cl < sizeof(cs) / sizeof(*cs) * (size_t)n_libs; cl++) {
    size_t ci = cl % (sizeof(cs) / sizeof(*cs));
    GemmLib lib = libs[cl / (sizeof(cs) / sizeof(*cs))];
    int64_t na = shape_numel(&cs[ci].a), nb = shape_numel(&cs[ci].b), nc = shape_numel(&cs[ci].c);
    float *A = bc_malloc((size_t)na * 4), *B = bc_malloc((size_t)nb * 4);
    float *C1 = bc_malloc((size_t)nc * 4), *C2 = bc_malloc((size_t)nc * 4);
    fill(A, na);
    fill(B, nb);
    int threads[] = {1, 2, 3, 5, 8, 16};
    for (size_t ti = 0; ti < sizeof(threads) / sizeof(*threads); ti++) {
      int t = threads[ti];
      Pool *p1 = make_pool(t);
      cpu_gemm(p1, CPU_GEMM_POOL, lib, A, &cs[ci].a, false, B, &cs[ci].b, false, 0.0f, C1, &cs[ci].c);
      pool_destroy(p1);
      Pool *p = make_pool(t);
      for (int rep = 0; rep < 2; rep++) {
        memset(C2, 0xff, (size_t)nc * 4);
        cpu_gemm(p, rep ? CPU_GEMM_AUTO : CPU_GEMM_POOL, lib, A, &cs[ci].a, false, B, &cs[ci].b, false, 0.0f,
                 C2, &cs[ci].c);
        CHECK_MSG(memcmp(C1, C2, (size_t)nc * 4) == 0, "case %zu, threads %d, call %d, %s", ci, t, rep,
                  gemm_lib_name(lib));
      }
      pool_destroy(p);
    }
    free(A);
    free(B);
    free(C1);
    free(C2);
  }
}

/* ---- benchmark (BC_BENCH=1 test_cpu_ops bench) --------------------------
 *
 * Not a check: GFLOP/s of the BERT step's GEMMs in both parallel modes,
 * and the cost of OpenBLAS's threads to pool kernels that follow a GEMM.
 * These numbers chose cpu_gemm_choose's rule (cpu_ops.c). */

typedef struct {
  float *x;
  int64_t n;
} ScaleJob;

static void scale_fn(void *ctx, int64_t b, int64_t e) { /* a memory-bound pool kernel */
  ScaleJob *j = ctx;
  for (int64_t i = b; i < e; i++) j->x[i] = j->x[i] * 0.5f + 1.0f;
}

static GemmLib bench_lib;

static double time_gemm(Pool *p, CpuGemmPar par, const float *A, const Shape *as, bool ta,
                        const float *B, const Shape *bs, bool tb, float *C, const Shape *cs,
                        double min_s) {
  cpu_gemm(p, par, bench_lib, A, as, ta, B, bs, tb, 0.0f, C, cs); /* warm up */
  double best = 1e30, total = 0;
  while (total < min_s) {
    double t0 = now_s();
    cpu_gemm(p, par, bench_lib, A, as, ta, B, bs, tb, 0.0f, C, cs);
    double t = now_s() - t0;
    total += t;
    if (t < best) best = t;
  }
  return best;
}

TEST(bench) {
  if (!getenv("BC_BENCH")) TEST_SKIP("set BC_BENCH=1 to run the benchmark");
  Pool *p = make_pool(getenv("BC_THREADS") ? atoi(getenv("BC_THREADS")) : 0);
  char err[160];
  if (!gemm_lib_select(&bench_lib, err, sizeof err)) {
    fprintf(stderr, "  %s\n", err);
    CHECK(0);
    return;
  }
  fprintf(stderr, "  %s (%s); pool of %d threads\n", gemm_lib_name(bench_lib), gemm_lib_info(bench_lib),
          pool_n_threads(p));
  struct {
    Shape a, b;
    bool ta, tb;
    Shape c;
    const char *what;
  } cs[] = {
      {shape_of(3, 64, 128, 128), shape_of(2, 128, 128), false, false, shape_of(3, 64, 128, 128), "dense [8192,128]x[128,128]"},
      {shape_of(2, 8192, 128), shape_of(2, 8192, 128), true, false, shape_of(2, 128, 128), "dense dW [8192,128]^T x [8192,128]"},
      {shape_of(2, 8192, 128), shape_of(2, 128, 128), false, true, shape_of(2, 8192, 128), "dense dX [8192,128]x[128,128]^T"},
      {shape_of(4, 64, 2, 128, 64), shape_of(4, 64, 2, 128, 64), false, true, shape_of(4, 64, 2, 128, 128), "QK^T [64,2,128,64]x[..]^T"},
      {shape_of(4, 64, 2, 128, 128), shape_of(4, 64, 2, 128, 64), false, false, shape_of(4, 64, 2, 128, 64), "PV [64,2,128,128]x[64,2,128,64]"},
      {shape_of(2, 64 * 19, 128), shape_of(2, 128, 20256), false, false, shape_of(2, 64 * 19, 20256), "MLM [1216,128]x[128,20256]"},
      {shape_of(2, 64 * 19, 20256), shape_of(2, 128, 20256), false, true, shape_of(2, 64 * 19, 128), "MLM dX [1216,20256]x[128,20256]^T"},
      {shape_of(2, 64 * 19, 128), shape_of(2, 64 * 19, 20256), true, false, shape_of(2, 128, 20256), "MLM dW [1216,128]^T x [1216,20256]"},
  };
  for (size_t i = 0; i < sizeof(cs) / sizeof(*cs); i++) {
    int64_t na = shape_numel(&cs[i].a), nb = shape_numel(&cs[i].b), nc = shape_numel(&cs[i].c);
    float *A = bc_malloc((size_t)na * 4), *B = bc_malloc((size_t)nb * 4), *C = bc_malloc((size_t)nc * 4);
    fill(A, na);
    fill(B, nb);
    int64_t K = cs[i].ta ? cs[i].a.dim[cs[i].a.rank - 2] : cs[i].a.dim[cs[i].a.rank - 1];
    double flops = 2.0 * (double)nc * (double)K;
    double t_pool = time_gemm(p, CPU_GEMM_POOL, A, &cs[i].a, cs[i].ta, B, &cs[i].b, cs[i].tb, C, &cs[i].c, 0.5);
    double t_blas = time_gemm(p, CPU_GEMM_BLAS, A, &cs[i].a, cs[i].ta, B, &cs[i].b, cs[i].tb, C, &cs[i].c, 0.5);
    double t_one = time_gemm(NULL, CPU_GEMM_POOL, A, &cs[i].a, cs[i].ta, B, &cs[i].b, cs[i].tb, C, &cs[i].c, 0.5);
    fprintf(stderr, "  %-38s pool %7.1f  blas %7.1f  1 thread %7.1f GFLOP/s  (%.0f / %.0f / %.0f us)\n",
            cs[i].what, flops / t_pool * 1e-9, flops / t_blas * 1e-9, flops / t_one * 1e-9,
            t_pool * 1e6, t_blas * 1e6, t_one * 1e6);
    free(A);
    free(B);
    free(C);
  }

  /* A GEMM followed by 20 memory-bound pool kernels, as in a step. */
  Shape as = shape_of(2, 8192, 128), bs = shape_of(2, 128, 128), csh = shape_of(2, 8192, 128);
  int64_t n = 8192 * 128;
  float *A = bc_malloc((size_t)n * 4), *B = bc_malloc(128 * 128 * 4), *C = bc_malloc((size_t)n * 4);
  fill(A, n);
  fill(B, 128 * 128);
  ScaleJob sj = {C, n};
  for (int mode = 0; mode < 2; mode++) {
    CpuGemmPar par = mode ? CPU_GEMM_BLAS : CPU_GEMM_POOL;
    double best = 1e30;
    for (int rep = 0; rep < 30; rep++) {
      double t0 = now_s();
      cpu_gemm(p, par, bench_lib, A, &as, false, B, &bs, false, 0.0f, C, &csh);
      for (int k = 0; k < 20; k++) pool_parallel_for(p, n, 4096, scale_fn, &sj);
      double t = now_s() - t0;
      if (t < best) best = t;
    }
    fprintf(stderr, "  gemm [8192,128]x[128,128] + 20 pool kernels, gemm mode %s: %.0f us\n",
            mode ? "blas" : "pool", best * 1e6);
  }
  free(A);
  free(B);
  free(C);
  pool_destroy(p);
}

/* ---- gather / scatter-add ---------------------------------------------- */

TEST(gather_rows) {
  Pool *p = make_pool(3);
  int64_t shapes[][3] = {{10, 1, 7}, {50, 3, 1}, {20256, 128, 8192}, {7, 0, 5}, {5, 4, 0}, {512, 128, 8192}};
  for (size_t s = 0; s < sizeof(shapes) / sizeof(*shapes); s++) {
    int64_t rows = shapes[s][0], row = shapes[s][1], n_idx = shapes[s][2];
    float *t = bc_malloc((size_t)(rows * row + 1) * 4), *o = bc_malloc((size_t)(n_idx * row + 1) * 4);
    int32_t *ix = bc_malloc((size_t)(n_idx + 1) * 4);
    fill(t, rows * row);
    for (int64_t i = 0; i < n_idx; i++) ix[i] = (int32_t)rnd_int(0, rows - 1);
    int64_t bad = -7;
    CHECK(cpu_gather(p, t, rows, row, ix, n_idx, o, &bad));
    CHECK_EQ_INT(bad, -7);
    int wrong = 0;
    for (int64_t i = 0; i < n_idx; i++)
      wrong += memcmp(o + i * row, t + (int64_t)ix[i] * row, (size_t)row * 4) != 0;
    CHECK_EQ_INT(wrong, 0);
    /* Out of range: the first bad position is reported, out untouched. */
    if (n_idx >= 3) {
      for (int64_t i = 0; i < n_idx * row; i++) o[i] = 42.0f;
      ix[n_idx - 1] = -1;
      ix[n_idx / 2] = (int32_t)rows;
      CHECK(!cpu_gather(p, t, rows, row, ix, n_idx, o, &bad));
      CHECK_EQ_INT(bad, n_idx / 2);
      int touched = 0;
      for (int64_t i = 0; i < n_idx * row; i++) touched += o[i] != 42.0f;
      CHECK_EQ_INT(touched, 0);
    }
    free(t);
    free(o);
    free(ix);
  }
  pool_destroy(p);
}

/* The oracle: a serial f32 sum in index order (what the contract promises
 * bit for bit), itself checked against double within n_dup * eps. */
static void scatter_ref(const int32_t *ix, int64_t n_idx, const float *u, int64_t rows, int64_t row,
                        float *o) {
  memset(o, 0, (size_t)(rows * row) * 4);
  for (int64_t i = 0; i < n_idx; i++)
    for (int64_t j = 0; j < row; j++) o[ix[i] * row + j] += u[i * row + j];
}

TEST(scatter_add_deterministic) {
  int64_t shapes[][3] = {{10, 1, 7},     {50, 3, 1000},  {20256, 128, 8192}, {512, 128, 8192},
                         {2, 128, 8192}, {3, 33, 5000},  {7, 0, 5},          {5, 4, 0},
                         {1, 17, 70000}, {1000, 1, 30000}};
  Pool *pools[5] = {NULL, make_pool(2), make_pool(3), make_pool(5), make_pool(8)};
  for (size_t s = 0; s < sizeof(shapes) / sizeof(*shapes); s++) {
    int64_t rows = shapes[s][0], row = shapes[s][1], n_idx = shapes[s][2];
    size_t ob = (size_t)(rows * row + 1) * 4;
    float *u = bc_malloc((size_t)(n_idx * row + 1) * 4), *ref = bc_malloc(ob), *o = bc_malloc(ob);
    int32_t *ix = bc_malloc((size_t)(n_idx + 1) * 4);
    fill(u, n_idx * row);
    /* Skewed like token ids: many repeats of a few rows (padding). */
    for (int64_t i = 0; i < n_idx; i++)
      ix[i] = (int32_t)(rnd_int(0, 3) == 0 ? 0 : rnd_int(0, rows - 1));
    scatter_ref(ix, n_idx, u, rows, row, ref);
    /* The f32 reference against double. */
    double *dref = bc_calloc((size_t)(rows * row + 1), sizeof(double));
    double *mag = bc_calloc((size_t)(rows * row + 1), sizeof(double));
    int64_t *cnt = bc_calloc((size_t)rows + 1, sizeof(int64_t));
    for (int64_t i = 0; i < n_idx; i++) {
      cnt[ix[i]]++;
      for (int64_t j = 0; j < row; j++) {
        dref[ix[i] * row + j] += u[i * row + j];
        mag[ix[i] * row + j] += fabs(u[i * row + j]);
      }
    }
    int far = 0;
    for (int64_t e = 0; e < rows * row; e++) /* n adds in f32: |err| <= n eps sum|u| */
      far += !(fabs(ref[e] - dref[e]) <= (double)cnt[e / row] * FLT_EPSILON * mag[e] + 1e-30);
    CHECK_EQ_INT(far, 0);
    for (int pi = 0; pi < 5; pi++)
      for (int rep = 0; rep < 2; rep++) {
        for (int64_t e = 0; e < rows * row; e++) o[e] = NAN; /* must be zeroed */
        int64_t bad = -1;
        CHECK(cpu_scatter_add(pools[pi], ix, n_idx, u, rows, row, o, &bad));
        CHECK_MSG(memcmp(o, ref, (size_t)(rows * row) * 4) == 0,
                  "shape %zu, %d threads: not bit-identical to the serial sum", s,
                  pool_n_threads(pools[pi]));
      }
    if (n_idx >= 2) {
      ix[1] = (int32_t)rows;
      int64_t bad = -1;
      for (int64_t e = 0; e < rows * row; e++) o[e] = 42.0f;
      CHECK(!cpu_scatter_add(pools[2], ix, n_idx, u, rows, row, o, &bad));
      CHECK_EQ_INT(bad, 1);
      int touched = 0;
      for (int64_t e = 0; e < rows * row; e++) touched += o[e] != 42.0f;
      CHECK_EQ_INT(touched, 0);
    }
    free(u);
    free(ref);
    free(o);
    free(ix);
    free(dref);
    free(mag);
    free(cnt);
  }
  for (int pi = 1; pi < 5; pi++) pool_destroy(pools[pi]);
}

/* ---- concat / strided copy ---------------------------------------------- */

TEST(concat_axes) {
  Pool *pools[3] = {NULL, make_pool(2), make_pool(4)};
  for (int c = 0; c < 200; c++) {
    Shape os = {0};
    os.rank = (int)rnd_int(1, 4);
    bool big = c % 8 == 0;
    for (int i = 0; i < os.rank; i++) os.dim[i] = big ? rnd_int(1, 40) : rnd_int(1, 5);
    int axis = (int)rnd_int(0, os.rank - 1);
    int n_in = (int)rnd_int(1, 4);
    int64_t len[4], total = 0;
    for (int k = 0; k < n_in; k++) {
      len[k] = rnd_int(0, big ? 30 : 4); /* zero-length inputs too */
      total += len[k];
    }
    os.dim[axis] = total;
    int64_t inner = 1, outer = 1;
    for (int i = axis + 1; i < os.rank; i++) inner *= os.dim[i];
    for (int i = 0; i < axis; i++) outer *= os.dim[i];
    uint32_t *in[4];
    for (int k = 0; k < n_in; k++) {
      int64_t n = outer * len[k] * inner;
      in[k] = bc_malloc((size_t)(n + 1) * 4);
      for (int64_t e = 0; e < n; e++) in[k][e] = (uint32_t)rnd();
    }
    int64_t numel = shape_numel(&os);
    uint32_t *o = bc_malloc((size_t)(numel + 1) * 4), *ref = bc_malloc((size_t)(numel + 1) * 4);
    int64_t at = 0;
    for (int k = 0; k < n_in; k++) {
      for (int64_t pp = 0; pp < outer; pp++)
        for (int64_t q = 0; q < len[k] * inner; q++)
          ref[(pp * total + at) * inner + q] = in[k][pp * len[k] * inner + q];
      at += len[k];
    }
    cpu_concat(pools[c % 3], n_in, (const void *const *)in, len, &os, axis, o);
    CHECK_MSG(memcmp(o, ref, (size_t)numel * 4) == 0, "case %d", c);
    for (int k = 0; k < n_in; k++) free(in[k]);
    free(o);
    free(ref);
  }
  for (int i = 1; i < 3; i++) pool_destroy(pools[i]);
}

TEST(copy_strided_views) {
  Pool *pools[3] = {NULL, make_pool(2), make_pool(3)};
  int64_t cap = 1 << 16;
  uint32_t *src = bc_malloc((size_t)cap * 4);
  for (int64_t e = 0; e < cap; e++) src[e] = (uint32_t)rnd();
  for (int c = 0; c < 400; c++) {
    Shape s = {0};
    s.rank = (int)rnd_int(0, BC_MAX_RANK);
    bool big = c % 10 == 0;
    for (int i = 0; i < s.rank; i++) s.dim[i] = big && i >= s.rank - 3 ? rnd_int(1, 30) : rnd_int(1, 4);
    /* A view: random strides (permuted row-major, broadcasts 0, slices,
     * negative), then an offset that keeps every element inside src. */
    int64_t st[BC_MAX_RANK], acc = 1, lo = 0, hi = 0;
    int perm[BC_MAX_RANK];
    for (int i = 0; i < s.rank; i++) perm[i] = i;
    for (int i = s.rank - 1; i > 0; i--) {
      int k = (int)rnd_int(0, i), tmp = perm[i];
      perm[i] = perm[k];
      perm[k] = tmp;
    }
    for (int i = s.rank - 1; i >= 0; i--) {
      int a = perm[i];
      int kind = (int)rnd_int(0, 5);
      st[a] = kind == 0 ? 0 : kind == 1 ? -acc : acc * rnd_int(1, 2);
      acc *= s.dim[a] * 2;
    }
    for (int i = 0; i < s.rank; i++) {
      if (st[i] < 0) lo += st[i] * (s.dim[i] - 1);
      else hi += st[i] * (s.dim[i] - 1);
    }
    if (hi - lo >= cap) continue;
    int64_t off = -lo + rnd_int(0, cap - 1 - (hi - lo));
    int64_t numel = shape_numel(&s);
    uint32_t *o = bc_malloc((size_t)numel * 4);
    cpu_copy_strided(pools[c % 3], src, off, st, &s, o);
    int wrong = 0;
    int64_t ix[BC_MAX_RANK] = {0};
    for (int64_t e = 0; e < numel; e++) {
      int64_t at = off;
      for (int i = 0; i < s.rank; i++) at += ix[i] * st[i];
      wrong += o[e] != src[at];
      for (int i = s.rank - 1; i >= 0; i--) {
        if (++ix[i] < s.dim[i]) break;
        ix[i] = 0;
      }
    }
    CHECK_MSG(wrong == 0, "case %d: %d wrong", c, wrong);
    free(o);
  }
  free(src);
  for (int i = 1; i < 3; i++) pool_destroy(pools[i]);
}

TEST_MAIN()
