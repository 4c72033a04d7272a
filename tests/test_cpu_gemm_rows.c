/* test_cpu_gemm_rows.c — GEMMs over an operand's live rows
 * (runtime/cpu_gemm_rows.c: cpu_gemm_live_rows, and cpu_gemm_given_rows
 * over rows a row guard gives, with a bias and relu) against a double
 * reference, every element, with C full of NaN first when beta is 0 (a row
 * left unwritten shows). Row patterns as a training step makes them: none
 * zero, padding tails (long runs), one live row in 128 (<cls>), all zero,
 * and rows whose only nonzero is late in the row or is -0; C = A B,
 * C = A B^T and C = A^T B, beta 0 and 1, pools of 1 to 3 threads. Each
 * pattern must also take the way it is there for (runs, compacted,
 * dense).
 *
 * BC_BENCH=1 test_cpu_gemm_rows bench times each way against the dense
 * GEMM on the BERT step's shapes: the measurements behind the cost model's
 * constants. */
#include "../runtime/cpu_ops.h"
#include "../runtime/threadpool.h"
#include "test.h"

#include <float.h>
#include <time.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float rnd_f(void) { /* xorshift64*, in [-1, 1) */
  rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
  return (float)((double)((rng * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Which rows of the scanned operand are zero. */
typedef enum { NONE_ZERO, TAILS, ONE_IN_128, ALL_ZERO, LATE_ONLY } Pattern;
static const char *pattern_name[] = {"no zero rows", "padding tails", "one live row in 128", "all zero",
                                     "live rows with one late nonzero or -0"};

/* Zeroes the rows of x [R, len] the pattern says, for examples of `ex`
 * rows (TAILS: the last 30, 45 or 60% of an example's rows by turns);
 * LATE_ONLY leaves -0 everywhere but one element of every 7th row, in the
 * middle or at the end of the row by turns. */
static void apply(Pattern pt, float *x, int64_t R, int64_t len, int64_t ex) {
  for (int64_t r = 0; r < R; r++) {
    float *row = x + r * len;
    bool zero = pt == ALL_ZERO || (pt == TAILS && r % ex >= ex * (90 - r / ex % 3 * 20) / 128) ||
                (pt == ONE_IN_128 && r % 128 != 5);
    if (pt == LATE_ONLY) {
      for (int64_t q = 0; q < len; q++) row[q] = -0.0f;
      if (r % 7 == 0) row[r / 7 % 2 ? len - 1 : len / 2 + 1] = 0.5f;
    } else if (zero) {
      memset(row, 0, sizeof(float) * (size_t)len);
    }
  }
}

/* C = op(A) op(B) (+ C0) for a [M, K]/[K, M], b [K, N]/[N, K], in
 * double, against C; every element within the dot-product bound. */
static bool check(const float *A, bool ta, const float *B, bool tb, const float *C0, float beta, const float *C,
                  int64_t M, int64_t N, int64_t K) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        double x = ta ? A[k * M + i] : A[i * K + k], y = tb ? B[j * K + k] : B[k * N + j];
        acc += x * y;
        mag += fabs(x * y);
      }
      if (beta != 0.0f) acc += C0[i * N + j], mag += fabs(C0[i * N + j]);
      double tol = (double)(K + 2) * FLT_EPSILON * mag + 1e-30;
      if (!(fabs(C[i * N + j] - acc) <= tol)) {
        fprintf(stderr, "  C[%lld,%lld] = %.9g, want %.9g\n", (long long)i, (long long)j, C[i * N + j], acc);
        return false;
      }
    }
  return true;
}

typedef struct {
  int64_t M, N, K;
  bool ta, tb;
} Gemm;

/* One GEMM with the pattern on its scanned operand (A's rows of C = A B;
 * B's rows, and A's for TAILS, of C = A^T B); returns the way it ran, or
 * -1 when an element is wrong. */
static int run_case(Pool *p, GemmLib lib, Gemm g, Pattern pt, float beta, const CpuRowsScratch *s) {
  int64_t na = g.M * g.K, nb = g.K * g.N, nc = g.M * g.N;
  float *A = bc_malloc(sizeof(float) * (size_t)na), *B = bc_malloc(sizeof(float) * (size_t)nb);
  float *C = bc_malloc(sizeof(float) * (size_t)nc), *C0 = bc_malloc(sizeof(float) * (size_t)nc);
  for (int64_t i = 0; i < na; i++) A[i] = rnd_f();
  for (int64_t i = 0; i < nb; i++) B[i] = rnd_f();
  for (int64_t i = 0; i < nc; i++) C0[i] = beta != 0.0f ? rnd_f() : NAN;
  memcpy(C, C0, sizeof(float) * (size_t)nc);
  /* rows are K's for C = A^T B: B [K, N] is the gradient; a run there adds
   * into all of C, so it pays for longer examples than C = A B's */
  if (g.ta) {
    apply(pt, B, g.K, g.N, 512);
    if (pt == TAILS) apply(ALL_ZERO, A + 64 * g.M, 1, g.M, 512); /* a zero row of A where B's is live */
  } else {
    apply(pt, A, g.M, g.K, 128);
  }
  Shape as = g.ta ? shape_of(2, (int)g.K, (int)g.M) : shape_of(2, (int)g.M, (int)g.K);
  Shape bs = g.tb ? shape_of(2, (int)g.N, (int)g.K) : shape_of(2, (int)g.K, (int)g.N);
  Shape cs = shape_of(2, (int)g.M, (int)g.N);
  int way = (int)cpu_gemm_live_rows(p, lib, A, &as, g.ta, B, &bs, g.tb, beta, C, &cs, s, NULL, false);
  if (!check(A, g.ta, B, g.tb, C0, beta, C, g.M, g.N, g.K)) way = -1;
  free(A), free(B), free(C), free(C0);
  return way;
}

static CpuRowsScratch scratch_for(int64_t rows, int64_t floats) {
  CpuRowsScratch s = {bc_malloc(sizeof(float) * (size_t)floats), floats, bc_malloc((size_t)rows),
                      bc_malloc(sizeof(int32_t) * (size_t)(2 * rows + 2)), rows};
  return s;
}
static void scratch_free(CpuRowsScratch *s) { free(s->buf), free(s->live), free(s->seg); }

/* The default GEMM library and a pool of n threads (NULL, with a failed
 * CHECK, when there is none). */
static Pool *setup(int n, GemmLib *lib, Diag *d) {
  char err[160];
  CHECK(gemm_lib_select(lib, err, sizeof err));
  diag_init(d);
  Pool *p = pool_create(n, d);
  CHECK(p != NULL);
  return p;
}

TEST(live_rows_match_the_dense_product) {
  /* 1024 or 2048 rows: examples of 128 or 512 */
  static const Gemm gemms[] = {
      {1024, 48, 200, false, false}, /* d x = d y W (K not a multiple of 32: late nonzeros) */
      {1024, 40, 72, false, true},   /* d x = d y W^T */
      {56, 40, 2048, true, false},   /* d W = x^T d y */
  };
  /* the way each pattern must take (a 0 % live product runs no GEMM: RUNS) */
  static const CpuRowsWay want[] = {CPU_ROWS_DENSE, CPU_ROWS_RUNS, CPU_ROWS_COMPACTED, CPU_ROWS_RUNS,
                                    CPU_ROWS_COMPACTED};
  CpuRowsScratch s = scratch_for(2048, 1 << 20);
  for (int threads = 1; threads <= 3; threads++) {
    GemmLib lib;
    Diag d;
    Pool *p = setup(threads, &lib, &d);
    for (size_t gi = 0; p && gi < sizeof gemms / sizeof gemms[0]; gi++)
      for (int pt = NONE_ZERO; pt <= LATE_ONLY; pt++)
        for (int bi = 0; bi < 2; bi++) {
          int way = run_case(p, lib, gemms[gi], (Pattern)pt, bi ? 1.0f : 0.0f, &s);
          if (way != (int)want[pt])
            fprintf(stderr, "  %d threads, gemm %zu, %s, beta %d: way %d, want %d\n", threads, gi,
                    pattern_name[pt], bi, way, (int)want[pt]);
          CHECK_EQ_INT(way, (int)want[pt]);
        }
    if (p) pool_destroy(p);
    diag_free(&d);
  }
  scratch_free(&s);
}

TEST(small_or_unfit_products_run_densely) {
  GemmLib lib;
  Diag d;
  Pool *p = setup(2, &lib, &d);
  CpuRowsScratch s = scratch_for(1024, 1 << 20), tiny = scratch_for(1024, 64), few = scratch_for(512, 1 << 20);
  if (p) {
    /* fewer rows than the scan pays for */
    CHECK_EQ_INT(run_case(p, lib, (Gemm){128, 32, 64, false, false}, ONE_IN_128, 0.0f, &s), CPU_ROWS_DENSE);
    /* the copies do not fit the scratch: runs instead (one row per run
     * costs more than dense, so dense) */
    CHECK_EQ_INT(run_case(p, lib, (Gemm){1024, 32, 64, false, false}, LATE_ONLY, 0.0f, &tiny), CPU_ROWS_DENSE);
    /* more rows than the scratch has flags for */
    CHECK_EQ_INT(run_case(p, lib, (Gemm){1024, 32, 64, false, false}, ONE_IN_128, 0.0f, &few), CPU_ROWS_DENSE);
    /* no scratch */
    CHECK_EQ_INT(run_case(p, lib, (Gemm){1024, 32, 64, false, false}, ONE_IN_128, 0.0f, NULL), CPU_ROWS_DENSE);
    pool_destroy(p);
  }
  scratch_free(&s), scratch_free(&tiny), scratch_free(&few);
  diag_free(&d);
}

/* Rows a guard gives stand for the scan: a gradient G [R, 848] whose rows
 * r % 19 >= 12 are dead (12 of 19 MLM slots) but not zero, so that only
 * a GEMM keeping to the given rows gets the product over them. C1 = G W
 * (the MLM head's shapes) compacts G's live rows first in the scratch;
 * C2 = X^T G then takes them from there (`ready`): G's live rows are
 * overwritten with NaN in between, and X's dead rows hold NaN
 * throughout. */
TEST(given_rows_stand_for_the_scan_and_carry_over) {
  enum { R = 1216, NG = 848, NW = 128, NX = 128 };
  GemmLib lib;
  Diag d;
  Pool *p = setup(2, &lib, &d);
  CpuRowsScratch s = scratch_for(R, 1 << 20);
  float *G = bc_malloc(sizeof(float) * R * NG), *G0 = bc_malloc(sizeof(float) * R * NG);
  float *W = bc_malloc(sizeof(float) * NG * NW), *X = bc_malloc(sizeof(float) * R * NX);
  float *C1 = bc_malloc(sizeof(float) * R * NW), *C2 = bc_malloc(sizeof(float) * NX * NG);
  uint8_t live[R];
  for (int r = 0; r < R; r++) live[r] = r % 19 < 12;
  for (int i = 0; i < R * NG; i++) G[i] = G0[i] = rnd_f();
  for (int i = 0; i < NG * NW; i++) W[i] = rnd_f();
  for (int i = 0; i < R * NX; i++) X[i] = live[i / NX] ? rnd_f() : NAN;
  for (int i = 0; i < R * NW; i++) C1[i] = NAN;
  Shape gs = shape_of(2, R, NG), ws = shape_of(2, NG, NW), xs = shape_of(2, R, NX);
  Shape c1s = shape_of(2, R, NW), c2s = shape_of(2, NX, NG);
  if (p) {
    CHECK_EQ_INT(cpu_gemm_live_rows(p, lib, G, &gs, false, W, &ws, false, 0.0f, C1, &c1s, &s, live, false),
                 CPU_ROWS_COMPACTED);
    for (int i = 0; i < R * NG; i++) G[i] = live[i / NG] ? NAN : G0[i];
    CHECK_EQ_INT(cpu_gemm_live_rows(p, lib, X, &xs, true, G, &gs, false, 0.0f, C2, &c2s, &s, live, true),
                 CPU_ROWS_COMPACTED);
    int bad = 0;
    for (int i = 0; i < R; i++)
      for (int j = 0; j < NW; j++) {
        double acc = 0, mag = 0;
        for (int k = 0; live[i] && k < NG; k++) acc += (double)G0[i * NG + k] * W[k * NW + j], mag += fabs(acc);
        bad += !(fabs(C1[i * NW + j] - acc) <= (NG + 2) * FLT_EPSILON * (mag + 1) * 4);
      }
    for (int i = 0; i < NX; i++)
      for (int j = 0; j < NG; j++) {
        double acc = 0, mag = 0;
        for (int r = 0; r < R; r++)
          if (live[r]) acc += (double)X[r * NX + i] * G0[r * NG + j], mag += fabs((double)X[r * NX + i] * G0[r * NG + j]);
        bad += !(fabs(C2[i * NG + j] - acc) <= (R + 2) * FLT_EPSILON * mag + 1e-30);
      }
    CHECK_EQ_INT(bad, 0);
    pool_destroy(p);
  }
  free(G), free(G0), free(W), free(X), free(C1), free(C2);
  scratch_free(&s);
  diag_free(&d);
}

/* ---- rows given by a row guard (cpu_gemm_given_rows) ---- */

/* C = A B (+ bias, relu) over the rows r with live[r] = (r % period) <
 * keep, against double, compacted where the cost model says (by runs when
 * `runs`); the other rows of C, NaN before, must be 0 (or, without
 * zero_dead, still NaN), or the product of A's rows there where a run's
 * last piece was rounded up into them. */
static bool given_case(Pool *p, GemmLib lib, int64_t M, int64_t N, int64_t K, bool tb, int epi, int period,
                       int keep, bool runs, bool zero_dead) {
  float *A = bc_malloc(sizeof(float) * (size_t)(M * K)), *B = bc_malloc(sizeof(float) * (size_t)(K * N));
  float *C = bc_malloc(sizeof(float) * (size_t)(M * N)), *bias = bc_malloc(sizeof(float) * (size_t)N);
  float *Y = bc_malloc(sizeof(float) * (size_t)(M * N)); /* a relu mask's source, both signs */
  uint8_t *live = bc_malloc((size_t)M);
  int32_t *idx = bc_malloc(sizeof(int32_t) * (size_t)(M + 64));
  for (int64_t i = 0; i < M * K; i++) A[i] = rnd_f();
  for (int64_t i = 0; i < K * N; i++) B[i] = rnd_f();
  for (int64_t i = 0; i < M * N; i++) C[i] = NAN;
  for (int64_t i = 0; i < N; i++) bias[i] = rnd_f();
  for (int64_t i = 0; i < M * N; i++) Y[i] = rnd_f();
  int64_t n = 0, n_runs = 0;
  for (int64_t r = 0; r < M; r++)
    if ((live[r] = r % period < keep)) {
      n_runs += r == 0 || !live[r - 1];
      idx[n++] = (int32_t)r;
    }
  for (int64_t r = n; r < M; r++) idx[r] = n ? idx[n - 1] : 0; /* as runtime/cpu.c leaves them */
  for (int64_t r = M; r < M + 64; r++) idx[r] = 1 << 30;        /* past them: a row no one may read */
  int32_t *seg = bc_malloc(sizeof(int32_t) * (size_t)(2 * M + 2));
  /* epi 1: bias, relu; 2: bias, relu mask by Y (read at C's own rows) */
  GemmEpilogue e = {2, {{GEMM_EPI_BIAS, bias, 0, NULL}, {GEMM_EPI_RELU, NULL, 0, NULL}}};
  if (epi == 2) e.step[1] = (GemmEpiStep){GEMM_EPI_RELU_MASK, Y, N, NULL};
  int64_t floats = cpu_gemm_given_rows_scratch(M, N, K, pool_n_threads(p)), canary = 1 << 18;
  float *buf = bc_malloc(sizeof(float) * (size_t)(floats + canary));
  for (int64_t i = 0; i < floats; i++) buf[i] = NAN; /* the rounding's rows hold NaN: they must go nowhere */
  for (int64_t i = floats; i < floats + canary; i++) buf[i] = 1234.5f; /* past the scratch: untouched */
  cpu_gemm_given_rows(p, lib, A, M, K, B, tb, N, C, epi ? &e : NULL, live, idx, n, n_runs, seg, runs ? NULL : buf,
                      zero_dead);
  bool ok = true;
  for (int64_t i = floats; i < floats + canary && ok; i++)
    if (buf[i] != 1234.5f) ok = false, fprintf(stderr, "  M %lld K %lld: wrote past the scratch\n", (long long)M, (long long)K);
  for (int64_t i = 0; i < M && ok; i++) {
    bool unwritten = !live[i] && !zero_dead;
    for (int64_t j = 0; j < N && unwritten; j++) unwritten = C[i * N + j] != C[i * N + j];
    if (unwritten) continue;
    /* a dead row within 15 of the live row before it may hold the product */
    int64_t back = 0;
    while (back < 16 && i - back - 1 >= 0 && !live[i - back - 1]) back++;
    bool rounded = false; /* a row computed as a rounded piece's: any nonzero */
    for (int64_t j = 0; j < N && !live[i] && back < 15 && i - back - 1 >= 0; j++) rounded |= C[i * N + j] != 0.0f;
    for (int64_t j = 0; j < N && ok; j++) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; (live[i] || rounded) && k < K; k++) {
        double x = A[i * K + k], y = tb ? B[j * K + k] : B[k * N + j];
        acc += x * y, mag += fabs(x * y);
      }
      if ((live[i] || rounded) && epi) acc += bias[j], mag += fabs(bias[j]);
      if ((live[i] || rounded) && epi) acc = (epi == 2 ? Y[i * N + j] : acc) > 0 ? acc : 0;
      ok = fabs(C[i * N + j] - acc) <= (double)(K + 2) * FLT_EPSILON * mag + 1e-30;
      if (!ok)
        fprintf(stderr, "  given rows %lldx%lldx%lld, %d of %d live%s: C[%lld,%lld] = %.9g, want %.9g\n",
                (long long)M, (long long)N, (long long)K, keep, period, runs ? ", by runs" : "", (long long)i,
                (long long)j, C[i * N + j], acc);
    }
  }
  free(A), free(B), free(C), free(bias), free(Y), free(live), free(idx), free(buf), free(seg);
  return ok;
}

TEST(given_rows_match_the_dense_product) {
  for (int threads = 1; threads <= 3; threads += 2) {
    GemmLib lib;
    Diag d;
    Pool *p = setup(threads, &lib, &d);
    if (p) {
      for (int runs = 0; runs < 2; runs++) {
        /* MLM slots: 12 of every 19 live, a vocabulary wider than a block */
        CHECK(given_case(p, lib, 190, 700, 24, false, false, 19, 12, runs, true));
        CHECK(given_case(p, lib, 190, 700, 24, true, true, 19, 12, runs, true));
        /* few columns: the rows are cut into blocks for the threads */
        CHECK(given_case(p, lib, 333, 40, 56, false, true, 7, 5, runs, true));
        /* relu's backward mask: read at each block's own live rows */
        CHECK(given_case(p, lib, 190, 700, 24, true, 2, 19, 12, runs, true));
        CHECK(given_case(p, lib, 333, 40, 56, false, 2, 7, 5, runs, true));
        CHECK(given_case(p, lib, 1024, 48, 40, false, 2, 128, 100, runs, false));
        CHECK(given_case(p, lib, 40, 48, 16, false, 2, 10, 9, runs, true)); /* rounded up past M */
        CHECK(given_case(p, lib, 64, 16, 8, true, false, 4, 1, runs, true));
        CHECK(given_case(p, lib, 64, 16, 8, false, true, 4, 0, runs, true)); /* none live: all zero */
        /* padding tails: runs of 100 rows in 128, cut into pieces */
        CHECK(given_case(p, lib, 1024, 48, 40, false, true, 128, 100, runs, true));
        /* more live rows than one chunk of copies holds (2M floats): K
         * of 4096, 288-row chunks */
        CHECK(given_case(p, lib, 1500, 48, 4096, false, true, 19, 12, runs, true));
        /* long K, all rows live: one block per thread, chunks no larger
         * than the scratch holds (3 blocks of 544 rows would not fit) */
        if (threads == 3 && !runs) CHECK(given_case(p, lib, 1600, 128, 4096, false, false, 1, 1, runs, true));
        /* dead rows no one reads: left unwritten */
        CHECK(given_case(p, lib, 190, 700, 24, false, true, 19, 12, runs, false));
        CHECK(given_case(p, lib, 1024, 48, 40, false, true, 128, 100, runs, false));
      }
      pool_destroy(p);
    }
    diag_free(&d);
  }
}

/* ---- benchmark (BC_BENCH=1 test_cpu_gemm_rows bench) ---- */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + 1e-6 * (double)t.tv_nsec;
}

TEST(bench) {
  if (!getenv("BC_BENCH")) TEST_SKIP("set BC_BENCH=1 to run the benchmark");
  GemmLib lib;
  Diag d;
  Pool *p = setup(2, &lib, &d);
  /* nli b64's backward (8192 token rows) and pretrain b64's MLM blocks
   * (1216 slots, 848 columns) */
  static const Gemm gemms[] = {{8192, 128, 128, false, false}, {128, 128, 8192, true, false},
                               {1216, 128, 848, false, true},  {128, 848, 1216, true, false}};
  CpuRowsScratch s = scratch_for(8192, 4 << 20);
  for (size_t gi = 0; p && gi < sizeof gemms / sizeof gemms[0]; gi++) {
    Gemm g = gemms[gi];
    int64_t R = g.ta ? g.K : g.M, len = g.ta ? g.N : g.K;
    float *A = bc_malloc(sizeof(float) * (size_t)(g.M * g.K)), *B = bc_malloc(sizeof(float) * (size_t)(g.K * g.N));
    float *C = bc_malloc(sizeof(float) * (size_t)(g.M * g.N));
    for (int64_t i = 0; i < g.M * g.K; i++) A[i] = rnd_f();
    for (int64_t i = 0; i < g.K * g.N; i++) B[i] = rnd_f();
    Shape as = g.ta ? shape_of(2, (int)g.K, (int)g.M) : shape_of(2, (int)g.M, (int)g.K);
    Shape bs = g.tb ? shape_of(2, (int)g.N, (int)g.K) : shape_of(2, (int)g.K, (int)g.N);
    Shape cs = shape_of(2, (int)g.M, (int)g.N);
    for (int pt = NONE_ZERO; pt <= ONE_IN_128; pt++) {
      apply((Pattern)pt, g.ta ? B : A, R, len, 128);
      double t[2] = {1e30, 1e30};
      int way = 0;
      for (int rep = 0; rep < 20; rep++)
        for (int live = 0; live < 2; live++) {
          double t0 = now_ms();
          if (live) way = (int)cpu_gemm_live_rows(p, lib, A, &as, g.ta, B, &bs, g.tb, 0.0f, C, &cs, &s, NULL, false);
          else cpu_gemm(p, CPU_GEMM_AUTO, lib, A, &as, g.ta, B, &bs, g.tb, 0.0f, C, &cs);
          double dt = now_ms() - t0;
          t[live] = dt < t[live] ? dt : t[live];
        }
      fprintf(stderr, "  [%lld,%lld,%lld]%s%s %-20s dense %.3f ms, live rows %.3f ms (way %d)\n", (long long)g.M,
              (long long)g.N, (long long)g.K, g.ta ? " A^T" : "", g.tb ? " B^T" : "", pattern_name[pt], t[0], t[1],
              way);
    }
    free(A), free(B), free(C);
  }
  scratch_free(&s);
  if (p) pool_destroy(p);
  diag_free(&d);
}

TEST_MAIN()
