/* test_llvm_math.c — the LLVM emitter's arithmetic beyond single ops
 * (kernels built by hand, tests/llvm_kernels.h): the exp / log / tanh / erf
 * polynomials against double libm over wide ranges (max errors printed and
 * asserted), and the dropout kernels of the BERT step: each random value
 * drawn once in the emitted IR, and (BC_BENCH=1) their timing. */
#include "test.h"
#include "tests/llvm_kernels.h"

/* ---- exp / log / tanh approximations against double libm ---------------------------- */

/* Compiles k (reading buffer 0, writing buffer 1) with the host-width JIT,
 * runs all its work items on xs and ys, and frees it. */
static void jit_run(Kernel *k, const float *xs, float *ys) {
  Diag d;
  diag_init(&d);
  KernelFn fn = NULL;
  const Kernel *kp = k;
  CHECK_MSG(llvm_jit_compile(jits[0], &kp, 1, &fn, &d), "%s", diag_first(&d));
  void *bufs[2] = {(void *)xs, ys};
  if (fn) fn(bufs, 0, kernel_work_items(k), NULL);
  diag_free(&d);
  kfree(k);
}

/* Runs the emitted unary op over xs[0..n) (one row; n - n/W*W lanes take the
 * scalar path) through the host-width JIT. */
static void jit_unary(Op op, const float *xs, float *ys, int64_t n) {
  Kernel k;
  kinit(&k, "k_math", shape_of(2, 1, (int)n), -1);
  int x = kload(&k, kview(&k, 0, 0, ST(n, 1)), DTYPE_F32);
  kstore(&k, kview(&k, 1, 0, ST(n, 1)), kun(&k, op, x));
  jit_run(&k, xs, ys);
}

typedef struct {
  double max_rel, max_ulp, max_abs;
  float at;
} ErrStat;

static double ulp_of(double ref) {
  float f = (float)fabs(ref);
  if (f < FLT_MIN) return ldexp(1, -149);
  if (isinf(f)) f = FLT_MAX;
  return (double)nextafterf(f, INFINITY) - (double)f;
}

static ErrStat measure(Op op, const float *xs, const float *ys, int64_t n, double (*ref)(double), double min_ref) {
  ErrStat s = {0};
  for (int64_t i = 0; i < n; i++) {
    double r = ref(xs[i]);
    if (fabs(r) < min_ref || fabs(r) > FLT_MAX) continue; /* outside the normal f32 range */
    double err = fabs((double)ys[i] - r);
    double rel = r != 0 ? err / fabs(r) : err;
    double ulp = err / ulp_of(r);
    if (rel > s.max_rel) s.max_rel = rel, s.at = xs[i];
    if (ulp > s.max_ulp) s.max_ulp = ulp;
    if (err > s.max_abs) s.max_abs = err;
  }
  (void)op;
  return s;
}

/* Floats by bit pattern from lo to hi (same sign, |lo| < |hi|), every step-th. */
static int64_t sweep_bits(float *xs, int64_t at, float lo, float hi, uint32_t step) {
  uint32_t a, b;
  memcpy(&a, &lo, 4);
  memcpy(&b, &hi, 4);
  for (uint32_t u = a; u <= b && u >= a; u += step) memcpy(&xs[at++], &u, 4);
  return at;
}

static int64_t sweep_lin(float *xs, int64_t at, float lo, float hi, int64_t n) {
  for (int64_t i = 0; i < n; i++) xs[at++] = lo + (hi - lo) * (float)((double)i / (double)n);
  return at;
}

static float *xs_buf, *ys_buf;
#define MATH_N (6 * 1024 * 1024)

static bool math_setup(void) {
  if (!have_jits()) return false;
  if (!xs_buf) {
    xs_buf = malloc(MATH_N * sizeof(float));
    ys_buf = malloc(MATH_N * sizeof(float));
  }
  return true;
}

static void report(const char *name, ErrStat s) {
  fprintf(stderr, "  %s: max rel err %.3g (%.2f ulp) at x = %.9g, max abs err %.3g\n", name, s.max_rel, s.max_ulp,
          s.at, s.max_abs);
}

/* exp of sp (the special points of math_exp) at ys. */
static void check_exp_specials(const float *ys, const float *xs) {
  CHECK_MSG(ys[0] == 1.0f && ys[1] == 1.0f, "exp(0) = %g, exp(-0) = %g", ys[0], ys[1]);
  CHECK(ys[2] == 0.0f && isinf(ys[3]) && ys[3] > 0 && isnan(ys[4]));
  CHECK_MSG(ys[5] == 0.0f && isinf(ys[6]) && isinf(ys[7]) && ys[8] == 0.0f, "exp(%g) = %g, exp(%g) = %g", xs[5],
            ys[5], xs[8], ys[8]);
  CHECK_NEAR(ys[9], exp(-100.0), 2e-45, 0.02); /* denormal: 3.7e-44, rounded once */
  CHECK_NEAR(ys[10], exp((double)88.72f), 0, 4e-7);
}

/* ys[j] = exp(xs[j]) through a column kernel (domain [1, n], the sum over
 * axis 0), whose output chunks are wider than a row kernel's. */
static void jit_col_exp(const float *xs, float *ys, int64_t n) {
  Kernel k;
  kinit(&k, "k_col_exp", shape_of(2, 1, (int)n), 0);
  int x = kload(&k, kview(&k, 0, 0, ST(n, 1)), DTYPE_F32);
  kstore(&k, kview(&k, 1, 0, ST(0, 1)), kreduce(&k, OP_REDUCE_SUM, kun(&k, OP_EXP, x)));
  jit_run(&k, xs, ys);
}

/* exp over x in [-87.3, 88.7] (results in the normal range): evenly spaced,
 * and every 997th float by bits for |x| in [1e-30, 88.7]. */
TEST(math_exp) {
  if (!math_setup()) TEST_SKIP("no LLVM JIT");
  int64_t n = sweep_lin(xs_buf, 0, -87.3f, 88.72f, 1 << 21);
  n = sweep_bits(xs_buf, n, 1e-30f, 88.72f, 997);
  n = sweep_bits(xs_buf, n, -1e-30f, -87.3f, 997);
  n += 5; /* odd count: some points take the scalar remainder */
  for (int64_t i = n - 5; i < n; i++) xs_buf[i] = (float)(i - n) * 3.3f;
  BC_ASSERT(n <= MATH_N);
  jit_unary(OP_EXP, xs_buf, ys_buf, n);
  ErrStat s = measure(OP_EXP, xs_buf, ys_buf, n, exp, FLT_MIN);
  report("exp", s);
  CHECK(s.max_rel < 2.5e-7); /* ~2 ulp; measured ~1 ulp (llvm_math.c) */
  /* the special values alone take the scalar path; repeated over 64 + 11
   * points, they also take every vector lane */
  static const float sp[] = {0.0f, -0.0f, -INFINITY, INFINITY, NAN, -200.0f, 100.0f, 88.8f, -104.5f, -100.0f, 88.72f};
  enum { N_SP = sizeof sp / sizeof *sp, N_REP = 64 + N_SP };
  float in[N_REP], out[N_REP];
  for (int i = 0; i < N_REP; i++) in[i] = sp[i % N_SP];
  for (int n_pts = N_SP; n_pts <= N_REP; n_pts += N_REP - N_SP) {
    jit_unary(OP_EXP, in, out, n_pts);
    for (int at = 0; at + N_SP <= n_pts; at += N_SP) check_exp_specials(out + at, in + at);
  }
  /* a column kernel's wide chunks (4 W lanes): exp(x) summed over one row */
  jit_col_exp(in, out, N_REP);
  for (int at = 0; at + N_SP <= N_REP; at += N_SP) check_exp_specials(out + at, in + at);
}

/* log over every 1021st float by bits from the smallest denormal to FLT_MAX. */
TEST(math_log) {
  if (!math_setup()) TEST_SKIP("no LLVM JIT");
  int64_t n = sweep_bits(xs_buf, 0, 1.4e-45f, FLT_MAX, 1021);
  n = sweep_lin(xs_buf, n, 0.5f, 2.0f, 1 << 20);
  n += 3;
  xs_buf[n - 3] = 1.0f, xs_buf[n - 2] = 0.999999f, xs_buf[n - 1] = 1.000001f;
  BC_ASSERT(n <= MATH_N);
  jit_unary(OP_LOG, xs_buf, ys_buf, n);
  ErrStat s = measure(OP_LOG, xs_buf, ys_buf, n, log, 1e-300);
  report("log", s);
  CHECK(s.max_rel < 2.5e-7); /* ~2 ulp; measured ~1 ulp (llvm_math.c) */
  float sp[] = {0.0f, -0.0f, -1.0f, INFINITY, NAN, 1.0f, -INFINITY};
  float out[7];
  jit_unary(OP_LOG, sp, out, 7);
  CHECK(isinf(out[0]) && out[0] < 0 && isinf(out[1]) && out[1] < 0);
  CHECK(isnan(out[2]) && isinf(out[3]) && out[3] > 0 && isnan(out[4]) && out[5] == 0.0f && isnan(out[6]));
}

/* tanh over [-20, 20] evenly, and by bits for |x| in [1e-30, 20]. */
TEST(math_tanh) {
  if (!math_setup()) TEST_SKIP("no LLVM JIT");
  int64_t n = sweep_lin(xs_buf, 0, -20.0f, 20.0f, 1 << 21);
  n = sweep_bits(xs_buf, n, 1e-30f, 20.0f, 997);
  n = sweep_bits(xs_buf, n, -1e-30f, -20.0f, 997);
  n += 1;
  xs_buf[n - 1] = 0.625f;
  BC_ASSERT(n <= MATH_N);
  jit_unary(OP_TANH, xs_buf, ys_buf, n);
  ErrStat s = measure(OP_TANH, xs_buf, ys_buf, n, tanh, FLT_MIN);
  report("tanh", s);
  CHECK(s.max_rel < 2.5e-7); /* ~2 ulp; measured ~1 ulp (llvm_math.c) */
  float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 50.0f, -50.0f, 1e-30f};
  float out[8];
  jit_unary(OP_TANH, sp, out, 8);
  CHECK(out[0] == 0.0f && !signbit(out[0]) && out[1] == 0.0f && signbit(out[1]));
  CHECK(out[2] == 1.0f && out[3] == -1.0f && isnan(out[4]) && out[5] == 1.0f && out[6] == -1.0f);
  CHECK(out[7] == 1e-30f);
}

/* erf over [-5, 5] evenly, and by bits for |x| in [1e-30, 5]. */
TEST(math_erf) {
  if (!math_setup()) TEST_SKIP("no LLVM JIT");
  int64_t n = sweep_lin(xs_buf, 0, -5.0f, 5.0f, 1 << 21);
  n = sweep_bits(xs_buf, n, 1e-30f, 5.0f, 997);
  n = sweep_bits(xs_buf, n, -1e-30f, -5.0f, 997);
  BC_ASSERT(n <= MATH_N);
  jit_unary(OP_ERF, xs_buf, ys_buf, n);
  ErrStat s = measure(OP_ERF, xs_buf, ys_buf, n, erf, FLT_MIN);
  report("erf", s);
  CHECK(s.max_rel < 5e-7); /* measured 3.8e-7 (5.6 ulp) near |x| = 4 (llvm_math.c) */
  float sp[] = {0.0f, INFINITY, -INFINITY, NAN, 10.0f, -10.0f, 1e-30f};
  float out[7];
  jit_unary(OP_ERF, sp, out, 7);
  CHECK(out[0] == 0.0f && out[1] == 1.0f && out[2] == -1.0f && isnan(out[3]) && out[4] == 1.0f && out[5] == -1.0f);
  CHECK_NEAR(out[6], 1.1283791670955126e-30, 0, 1e-6);
}

/* ---- benchmark (BC_BENCH=1 test_llvm_math bench) ----------------------------------
 *
 * Not a check: ns per element, one thread, of the dropout kernels of the BERT
 * training step and of the same kernels without dropout, at the host width
 * and at W = 8. The minimum of repeated runs (the machine is shared). These
 * numbers chose llvm_emit_uniforms's form (llvm_math.c). BC_DUMP=1 also prints the
 * random-only kernel's optimized IR. */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best time of fn over all items: at least 5 runs and 0.3 s, after one
 * warm-up run. */
static double time_kernel(KernelFn fn, void **bufs, int64_t items, const KernelRunInfo *info) {
  fn(bufs, 0, items, info);
  double best = 1e30, total = 0;
  for (int rep = 0; rep < 5 || total < 0.3; rep++) {
    double t0 = now_s();
    fn(bufs, 0, items, info);
    double t = now_s() - t0;
    total += t;
    if (t < best) best = t;
  }
  return best;
}

enum { BENCH_RANDOM, BENCH_SOFTMAX, BENCH_ADD_NORM };

/* The kernel of one benchmark: random only (u), masked-free softmax of
 * scaled scores (attention weights, then dropped), or x + dropout(h) then
 * layer norm (the add&norm sites), with or without the dropout. Buffers:
 * 0 and 1 inputs [numel], 2 and 3 outputs [numel], 4 and 5 row stats [rows],
 * 6 and 7 gamma and beta [L]. */
static void build_bench(Kernel *k, int which, bool dropout, Shape dom) {
  int r = dom.rank;
  int64_t L = dom.dim[r - 1];
  int64_t st[BC_MAX_RANK], rowst[BC_MAX_RANK], bcast[BC_MAX_RANK] = {0}, acc = 1;
  for (int d = r - 1; d >= 0; d--) {
    st[d] = acc;
    rowst[d] = d == r - 1 ? 0 : acc / L;
    acc *= dom.dim[d];
  }
  bcast[r - 1] = 1;
  kinit(k, which == BENCH_RANDOM ? "k_bench_random" : which == BENCH_SOFTMAX ? "k_bench_softmax" : "k_bench_add_norm",
        dom, -1);
  int u = -1, drop = -1;
  if (dropout || which == BENCH_RANDOM) {
    u = krand(k, 0x5EEDu);
    drop = kbin(k, OP_LT, u, kconst(k, 0.2, DTYPE_F32));
  }
  if (which == BENCH_RANDOM) {
    kstore(k, kview(k, 2, 0, st), u);
    return;
  }
  int x = kload(k, kview(k, 0, 0, st), DTYPE_F32);
  if (which == BENCH_SOFTMAX) {
    int s = kbin(k, OP_MUL, x, kconst(k, 0.125, DTYPE_F32));
    int e = kun(k, OP_EXP, kbin(k, OP_SUB, s, kreduce(k, OP_REDUCE_MAX, s)));
    int p = kbin(k, OP_DIV, e, kreduce(k, OP_REDUCE_SUM, e));
    kstore(k, kview(k, 2, 0, st), p);
    if (dropout)
      kstore(k, kview(k, 3, 0, st),
             ksel(k, drop, kconst(k, 0, DTYPE_F32), kbin(k, OP_MUL, p, kconst(k, 1.25, DTYPE_F32))));
    return;
  }
  int h = kload(k, kview(k, 1, 0, st), DTYPE_F32);
  if (dropout) h = ksel(k, drop, kconst(k, 0, DTYPE_F32), kbin(k, OP_MUL, h, kconst(k, 1.25, DTYPE_F32)));
  int z = kbin(k, OP_ADD, x, h);
  int inv_n = kconst(k, 1.0 / (double)L, DTYPE_F32);
  int mean = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, z), inv_n);
  int zc = kbin(k, OP_SUB, z, mean);
  int var = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, zc, zc)), inv_n);
  int rstd = kun(k, OP_RSQRT, kbin(k, OP_ADD, var, kconst(k, 1e-5, DTYPE_F32)));
  int g = kload(k, kview(k, 6, 0, bcast), DTYPE_F32), b = kload(k, kview(k, 7, 0, bcast), DTYPE_F32);
  kstore(k, kview(k, 2, 0, st), kbin(k, OP_ADD, kbin(k, OP_MUL, kbin(k, OP_MUL, zc, rstd), g), b));
  kstore(k, kview(k, 4, 0, rowst), mean);
  kstore(k, kview(k, 5, 0, rowst), rstd);
}

static int count_substr(const char *s, const char *sub) {
  int n = 0;
  for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
  return n;
}

/* The emitted code draws each random value once: the add&norm kernel, whose
 * three loops need u, holds as many Philox multiplies (by M0 = 3528531795)
 * as the random-only kernel, and a row buffer; the softmax kernel, whose
 * final loop alone needs u, keeps no buffer (LLVM deletes its dead stores)
 * and holds no more multiplies than the random-only kernel. (Not exactly as
 * many: how often LLVM interleaves that busier loop depends on the host
 * CPU; an AMD family 25 host unrolls it half as often as a Xeon.) */
TEST(ir_random_drawn_once) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  Kernel k[3];
  build_bench(&k[0], BENCH_RANDOM, true, shape_of(2, 4, 128));
  build_bench(&k[1], BENCH_ADD_NORM, true, shape_of(2, 4, 128));
  build_bench(&k[2], BENCH_SOFTMAX, true, shape_of(2, 4, 128));
  char *ir[3];
  Diag d;
  diag_init(&d);
  for (int i = 0; i < 3; i++) {
    ir[i] = llvm_emit_ir_text(&k[i], &d);
    CHECK_MSG(ir[i] != NULL, "%s", diag_first(&d));
  }
  if (ir[0] && ir[1] && ir[2]) {
    int n0 = count_substr(ir[0], "3528531795"), n1 = count_substr(ir[1], "3528531795");
    CHECK_MSG(n0 > 0 && n1 == n0, "M0 appears %d times in the add&norm kernel, %d in the random one", n1, n0);
    CHECK(count_substr(ir[1], "alloca") == 1);
    CHECK(count_substr(ir[2], "alloca") == 0 && count_substr(ir[0], "alloca") == 0);
    int n2 = count_substr(ir[2], "3528531795");
    CHECK_MSG(n2 > 0 && n2 <= n0, "M0 appears %d times in the softmax kernel, %d in the random one", n2, n0);
  }
  for (int i = 0; i < 3; i++) {
    free(ir[i]);
    kfree(&k[i]);
  }
  diag_free(&d);
}

TEST(bench) {
  if (!getenv("BC_BENCH")) TEST_SKIP("set BC_BENCH=1 to run the benchmark");
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  static const struct {
    int which;
    bool dropout;
    const char *what;
  } bs[] = {
      {BENCH_RANDOM, true, "random [16384,128]"},
      {BENCH_SOFTMAX, false, "softmax [64,2,128,128]"},
      {BENCH_SOFTMAX, true, "softmax+dropout [64,2,128,128]"},
      {BENCH_ADD_NORM, false, "add&norm [64,128,128]"},
      {BENCH_ADD_NORM, true, "add&norm+dropout [64,128,128]"},
  };
  const int64_t max_n = 64 * 2 * 128 * 128;
  void *bufs[8];
  for (int b = 0; b < 8; b++) {
    bufs[b] = malloc((size_t)max_n * 4);
    float *f = bufs[b];
    rng_state = 1 + (uint64_t)b;
    for (int64_t i = 0; i < max_n; i++) f[i] = frand(-3, 3);
  }
  KernelRunInfo info = {.seed = 0x0123456789ABCDEFull, .step = 11, .example_offset = 0};
  for (size_t i = 0; i < sizeof bs / sizeof *bs; i++) {
    Shape dom = bs[i].which == BENCH_RANDOM    ? shape_of(2, 16384, 128)
                : bs[i].which == BENCH_SOFTMAX ? shape_of(4, 64, 2, 128, 128)
                                               : shape_of(3, 64, 128, 128);
    Kernel k;
    build_bench(&k, bs[i].which, bs[i].dropout, dom);
    fprintf(stderr, "  %-32s", bs[i].what);
    for (int j = 0; j < 2; j++) {
      Diag d;
      diag_init(&d);
      KernelFn fn = NULL;
      const Kernel *kp = &k;
      CHECK_MSG(llvm_jit_compile(jits[j], &kp, 1, &fn, &d), "%s", diag_first(&d));
      if (fn) {
        double t = time_kernel(fn, bufs, kernel_work_items(&k), &info);
        fprintf(stderr, "  W=%-2d %6.3f ns/elem", llvm_jit_vector_width(jits[j]), t * 1e9 / (double)shape_numel(&dom));
      }
      diag_free(&d);
    }
    fputc('\n', stderr);
    if (i == 0 && getenv("BC_DUMP")) {
      Diag d;
      diag_init(&d);
      char *ir = llvm_emit_ir_text(&k, &d);
      if (ir) fputs(ir, stderr);
      free(ir);
      diag_free(&d);
    }
    kfree(&k);
  }
  for (int b = 0; b < 8; b++) free(bufs[b]);
}

static void cleanup(void) {
  free_jits();
  free(xs_buf);
  free(ys_buf);
}

int main_tests(int argc, char **argv);
#define main main_tests
TEST_MAIN()
#undef main
LLVM_TEST_MAIN(cleanup)
