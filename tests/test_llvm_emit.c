/* test_llvm_emit.c — the LLVM CPU code generator against the reference
 * evaluator (codegen/kernel_eval.c), on hand-built kernels: every
 * elementwise op of ops.def over f32 and the integer ones over i32,
 * broadcast / permuted / strided / offset views, softmax, layer norm (two
 * reduction phases) and its backward (two independent sums sharing a pass),
 * a cross-entropy row kernel with iota/eq/select, column reductions, random
 * (bit-identical with runtime/philox.c at every width, also when several
 * loops of a row kernel need it and in column kernels), casts, an in-place
 * update; domain last-axis sizes 1, 3, 16, 17, 128 (remainders; random adds
 * 33 and 131), work split over several
 * [begin, end) ranges, at the host's vector width and at W = 8 and 4.
 * Also: the exp/log/tanh polynomials against double libm over wide ranges
 * (max errors printed and asserted), the evaluator's Philox against
 * runtime/philox.c, the evaluator against double references, error paths,
 * and the emitted IR text (named after the kernel, no libm calls, random
 * values drawn once per element). BC_BENCH=1 adds the timing of the
 * dropout kernels (bench). */
#include "codegen/kernel_eval.h"
#include "codegen/llvm_emit.h"
#include "runtime/philox.h"
#include "test.h"

#include <float.h>
#include <stdint.h>
#include <time.h>

/* ---- building kernels by hand ---------------------------------------------- */

static void kinit(Kernel *k, const char *name, Shape dom, int col_axis) {
  memset(k, 0, sizeof *k);
  k->kind = KERNEL_LOOP;
  k->name = name;
  k->first_node = -1;
  k->domain = dom;
  k->col_axis = col_axis;
}

static void kfree(Kernel *k) {
  vec_free(&k->views);
  vec_free(&k->insts);
  vec_free(&k->nodes);
}

static int64_t lastdim(const Kernel *k) { return k->domain.dim[k->domain.rank - 1]; }

/* A view of test buffer `buf` (KView.value is the buffer index here). */
static int kview(Kernel *k, int buf, int64_t offset, const int64_t *stride) {
  KView v = {0};
  v.value = buf;
  v.offset = offset;
  for (int d = 0; d < k->domain.rank; d++) v.stride[d] = stride[d];
  vec_push(&k->views, v);
  return k->views.n - 1;
}
#define ST(...) ((const int64_t[]){__VA_ARGS__})

static KInst kinst(KInstKind kind, DType t) {
  KInst in = {0};
  in.kind = kind;
  in.a = in.b = in.c = in.view = -1;
  in.node = -1;
  in.dtype = t;
  return in;
}

static int kpush(Kernel *k, KInst in) {
  vec_push(&k->insts, in);
  return k->insts.n - 1;
}

static const KInst *kat(const Kernel *k, int i) { return &k->insts.data[i]; }

static int kload(Kernel *k, int view, DType t) {
  KInst in = kinst(KI_LOAD, t);
  in.view = view;
  in.row = k->col_axis < 0 && k->views.data[view].stride[k->domain.rank - 1] == 0 && lastdim(k) > 1;
  return kpush(k, in);
}

static int kconst(Kernel *k, double v, DType t) {
  KInst in = kinst(KI_CONST, t);
  in.imm = v;
  in.row = k->col_axis < 0;
  return kpush(k, in);
}

static int kun(Kernel *k, Op op, int a) {
  KInst in = kinst(KI_UNARY, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.row = kat(k, a)->row;
  return kpush(k, in);
}

static int kbin(Kernel *k, Op op, int a, int b) {
  KInst in = kinst(KI_BINARY, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.b = b;
  in.row = kat(k, a)->row && kat(k, b)->row;
  return kpush(k, in);
}

static int ksel(Kernel *k, int c, int a, int b) {
  KInst in = kinst(KI_SELECT, kat(k, a)->dtype);
  in.a = c;
  in.b = a;
  in.c = b;
  in.row = kat(k, c)->row && kat(k, a)->row && kat(k, b)->row;
  return kpush(k, in);
}

static int kcast(Kernel *k, int a, DType t) {
  KInst in = kinst(KI_CAST, t);
  in.a = a;
  in.row = kat(k, a)->row;
  return kpush(k, in);
}

static int kiota(Kernel *k, int axis, DType t) {
  KInst in = kinst(KI_IOTA, t);
  in.axis = axis;
  in.row = k->col_axis < 0 && axis != k->domain.rank - 1;
  return kpush(k, in);
}

static int krand(Kernel *k, uint32_t key) {
  KInst in = kinst(KI_RANDOM, DTYPE_F32);
  in.key = key;
  return kpush(k, in);
}

static int kreduce(Kernel *k, Op op, int a) {
  KInst in = kinst(KI_REDUCE, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.axis = k->col_axis >= 0 ? k->col_axis : k->domain.rank - 1;
  in.row = k->col_axis < 0;
  return kpush(k, in);
}

static void kstore(Kernel *k, int view, int a) {
  KInst in = kinst(KI_STORE, kat(k, a)->dtype);
  in.view = view;
  in.a = a;
  in.row = kat(k, a)->row;
  kpush(k, in);
}

/* ---- test buffers and the comparison ------------------------------------------ */

enum { FILL_OUT, FILL_SIGNED, FILL_POS, FILL_INT, FILL_LABEL, FILL_SPECIAL, FILL_BIGINT };
enum { CMP_NONE, CMP_EXACT, CMP_NEAR };
enum { MAX_BUFS = 48 }; /* the every-op case has one output per elementwise op */

typedef struct {
  int64_t n;
  DType t;
  int fill;
  int cmp;
  double atol, rtol; /* CMP_NEAR: |jit - eval| <= atol + rtol |eval| */
} BufSpec;

typedef struct {
  char name[64];
  Kernel k;
  int n_bufs;
  BufSpec buf[MAX_BUFS];
  KernelRunInfo info;
  /* buffers written from a KI_RANDOM (its op key), checked against
   * runtime/philox.c at index i + example_offset * rand_per */
  int n_rand;
  struct {
    int buf;
    uint32_t key;
  } rand[2];
  int64_t rand_per;
} Case;

static uint64_t rng_state;
static uint32_t rng(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rng() & 0xFFFFFF) / 16777216.0f; }

static void fill(const BufSpec *s, void *p, int64_t L) {
  float *f = p;
  int32_t *i = p;
  static const float special[] = {NAN, INFINITY, -INFINITY, 1e10f, -1e10f, 3e9f, -3e9f, 2.5f, -2.5f, 0.999f,
                                  -0.999f, 1e20f, -1e20f, -0.0f, 2147483520.0f, 4294967296.0f, 16777217.0f, 7.0f};
  static const int32_t bigint[] = {INT32_MIN, -1, 0, INT32_MAX, 16777217, -16777217, 5, -5, 1 << 30};
  for (int64_t x = 0; x < s->n; x++) switch (s->fill) {
    case FILL_OUT:
      if (s->t == DTYPE_I32) i[x] = 0x5EED;
      else f[x] = 12345.0f;
      break;
    case FILL_SIGNED: f[x] = frand(-3, 3); break;
    case FILL_POS: f[x] = frand(0.05f, 4); break;
    case FILL_INT: i[x] = (int32_t)(rng() % 101) - 50; break;
    case FILL_LABEL: i[x] = (int32_t)(rng() % (uint32_t)(L > 0 ? L : 1)); break;
    case FILL_SPECIAL: f[x] = special[x % (int64_t)(sizeof special / sizeof *special)]; break;
    case FILL_BIGINT: i[x] = bigint[x % (int64_t)(sizeof bigint / sizeof *bigint)]; break;
  }
}

static bool same_bits_or_nan(float a, float b) {
  if (isnan(a) && isnan(b)) return true;
  return memcmp(&a, &b, sizeof a) == 0;
}

/* Runs the case through kernel_eval (one call, all items) and through fn
 * (several ranges, one empty) on identical inputs; compares the outputs.
 * Returns the max |jit - eval| / (atol + rtol |eval|) over CMP_NEAR buffers. */
static double run_case(const Case *c, KernelFn fn, const char *tag) {
  void *be[MAX_BUFS], *bj[MAX_BUFS], *ve[2 * MAX_BUFS], *vj[2 * MAX_BUFS];
  int64_t L = lastdim(&c->k);
  uint64_t seed = 0x9E3779B97F4A7C15ull ^ (uint64_t)L;
  for (int b = 0; b < c->n_bufs; b++) {
    size_t bytes = (size_t)(c->buf[b].n ? c->buf[b].n : 1) * 4;
    be[b] = malloc(bytes);
    bj[b] = malloc(bytes);
    rng_state = seed + (uint64_t)b * 77;
    fill(&c->buf[b], be[b], L);
    memcpy(bj[b], be[b], bytes);
  }
  BC_ASSERT(c->k.views.n <= 32);
  for (int v = 0; v < c->k.views.n; v++) {
    ve[v] = be[c->k.views.data[v].value];
    vj[v] = bj[c->k.views.data[v].value];
  }
  int64_t items = kernel_work_items(&c->k);
  kernel_eval(&c->k, ve, 0, items, &c->info);
  int64_t a = items / 3, m = 2 * items / 3 + (items > 2);
  if (m > items) m = items;
  fn(vj, 0, a, &c->info);
  fn(vj, a, a, &c->info); /* empty */
  fn(vj, a, m, &c->info);
  fn(vj, m, items, &c->info);
  double worst = 0;
  for (int b = 0; b < c->n_bufs; b++) {
    const BufSpec *s = &c->buf[b];
    int bad = 0;
    for (int64_t x = 0; x < s->n && bad < 3; x++) {
      if (s->t == DTYPE_I32) {
        int32_t e = ((int32_t *)be[b])[x], j = ((int32_t *)bj[b])[x];
        if (s->cmp != CMP_NONE && e != j) {
          CHECK_MSG(e == j, "%s %s buf %d [%lld]: jit %d, eval %d", c->name, tag, b, (long long)x, j, e);
          bad++;
        }
        continue;
      }
      float e = ((float *)be[b])[x], j = ((float *)bj[b])[x];
      if (s->cmp == CMP_EXACT && !same_bits_or_nan(e, j)) {
        CHECK_MSG(0, "%s %s buf %d [%lld]: jit %.9g, eval %.9g (must be bit-identical)", c->name, tag, b,
                  (long long)x, j, e);
        bad++;
      } else if (s->cmp == CMP_NEAR && !same_bits_or_nan(e, j)) {
        double tol = s->atol + s->rtol * fabs(e), err = fabs((double)j - e);
        if (isnan(err) || isinf(err)) err = INFINITY;
        if (err / tol > worst) worst = err / tol;
        if (!(err <= tol)) {
          CHECK_MSG(0, "%s %s buf %d [%lld]: jit %.9g, eval %.9g, |diff| %.3g > tol %.3g", c->name, tag, b,
                    (long long)x, j, e, err, tol);
          bad++;
        }
      }
    }
  }
  for (int b = 0; b < c->n_bufs; b++) {
    free(be[b]);
    free(bj[b]);
  }
  return worst;
}

static void addbuf(Case *c, int64_t n, DType t, int fill_kind, int cmp, double atol, double rtol) {
  BC_ASSERT(c->n_bufs < (int)(sizeof c->buf / sizeof c->buf[0]));
  c->buf[c->n_bufs++] = (BufSpec){n, t, fill_kind, cmp, atol, rtol};
}

/* ---- the JITs: host width, 8 and 4 lanes ---------------------------------------- */

static LlvmJit *jits[3];
static int n_jits;

static bool have_jits(void) {
  if (n_jits) return n_jits > 0;
  Diag d;
  diag_init(&d);
  int widths[3] = {0, 8, 4};
  for (int i = 0; i < 3; i++) {
    LlvmJit *j = llvm_jit_create(&d);
    if (!j) {
      diag_print(&d, stderr);
      n_jits = -1;
      diag_free(&d);
      return false;
    }
    if (widths[i]) llvm_jit_set_vector_width(j, widths[i]);
    jits[n_jits++] = j;
  }
  fprintf(stderr, "  jit: %s\n", llvm_jit_describe(jits[0]));
  diag_free(&d);
  return true;
}

/* Runs fn on case c (inputs zero, random buffers NaN so that an element
 * never written fails; the items split into uneven ranges) and compares the
 * random buffers with runtime/philox.c (c->rand). */
static void check_random(const Case *c, KernelFn fn, const char *tag) {
  int64_t items = kernel_work_items(&c->k);
  void *bufs[MAX_BUFS], *vb[2 * MAX_BUFS];
  for (int b = 0; b < c->n_bufs; b++) bufs[b] = calloc((size_t)(c->buf[b].n ? c->buf[b].n : 1), 4);
  for (int r = 0; r < c->n_rand; r++)
    memset(bufs[c->rand[r].buf], 0xFF, (size_t)c->buf[c->rand[r].buf].n * 4);
  for (int v = 0; v < c->k.views.n; v++) vb[v] = bufs[c->k.views.data[v].value];
  int64_t a = items / 2 - (items > 3), m = items - (items > 1);
  fn(vb, 0, a, &c->info);
  fn(vb, a, m, &c->info);
  fn(vb, m, items, &c->info);
  for (int r = 0; r < c->n_rand; r++) {
    const float *u = bufs[c->rand[r].buf];
    int bad = 0;
    for (int64_t i = 0; i < c->buf[c->rand[r].buf].n && bad < 3; i++) {
      uint64_t index = (uint64_t)i + (uint64_t)c->info.example_offset * (uint64_t)c->rand_per;
      float want = philox_uniform(c->info.seed, c->info.step, c->rand[r].key, index);
      if (memcmp(&u[i], &want, 4) != 0) {
        CHECK_MSG(0, "%s %s buf %d [%lld] (index %llx): %.9g, philox %.9g (must be bit-identical)", c->name, tag,
                  c->rand[r].buf, (long long)i, (unsigned long long)index, u[i], want);
        bad++;
      }
    }
  }
  for (int b = 0; b < c->n_bufs; b++) free(bufs[b]);
}

/* Compiles the case in every JIT and compares; frees the kernel. */
static void check_case(Case *c) {
  if (!have_jits()) return;
  Diag d;
  diag_init(&d);
  CHECK_MSG(kernel_eval_supported(&c->k, &d), "%s: %s", c->name, diag_first(&d));
  double worst = 0;
  for (int i = 0; i < n_jits; i++) {
    KernelFn fn = NULL;
    const Kernel *kp = &c->k;
    bool ok = llvm_jit_compile(jits[i], &kp, 1, &fn, &d);
    CHECK_MSG(ok && fn, "%s: %s", c->name, diag_first(&d));
    if (!ok || !fn) break;
    char tag[32];
    snprintf(tag, sizeof tag, "W=%d", llvm_jit_vector_width(jits[i]));
    double w = run_case(c, fn, tag);
    if (w > worst) worst = w;
    if (c->n_rand) check_random(c, fn, tag);
  }
  if (worst > 0.5) fprintf(stderr, "  %s: worst error %.2f of tolerance\n", c->name, worst);
  diag_free(&d);
  kfree(&c->k);
}

static const int64_t Ls[] = {1, 3, 16, 17, 128};
#define FOR_L for (int li = 0; li < (int)(sizeof Ls / sizeof *Ls); li++)

/* ---- cases ----------------------------------------------------------------------- */

/* Tolerance of one f32 op against the evaluator (double formula rounded to
 * float), from the row's `tol` (graph/ops.def): rows of tol <= 1e-6 are
 * exact or correctly rounded f32 arithmetic, which the JIT and the
 * evaluator both round once: bit-identical. The others are the vector
 * polynomials or two roundings (rsqrt); they are measured to a few ulps
 * over millions of points by the math_* cases below, so here the row's tol
 * per element is a bound for a wrong lowering, with 5e-7 absolute for
 * results near 0: log near 1, and gelu for x near -3, whose 1 + erf(x/√2)
 * cancels to ~0.004 and keeps erf's absolute error (up to 3.8e-7 near
 * erf = -1; measured 2.1e-7 here on results of -0.005). */
static void op_tol(Op op, int *cmp, double *atol, double *rtol) {
  *cmp = CMP_EXACT;
  *atol = *rtol = 0;
  if (op_info[op].tol > 1e-6) *cmp = CMP_NEAR, *rtol = op_info[op].tol, *atol = 5e-7;
}

/* Every f32 unary op of x (signed, and on a positive input for log, sqrt,
 * rsqrt) and every binary op of (x, y); one output buffer per op, reached
 * through a view offset. Domain [5, L]. */
TEST(elementwise_f32_all_ops) {
  FOR_L {
    int64_t L = Ls[li], R = 5, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "ew_f32_L%lld", (long long)L);
    kinit(&c.k, "k_ew_f32", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: x */
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 1: y */
    addbuf(&c, N, DTYPE_F32, FILL_POS, CMP_NONE, 0, 0);    /* 2: p > 0 */
    int x = kload(&c.k, kview(&c.k, 0, 0, ST(L, 1)), DTYPE_F32);
    int y = kload(&c.k, kview(&c.k, 1, 0, ST(L, 1)), DTYPE_F32);
    int p = kload(&c.k, kview(&c.k, 2, 0, ST(L, 1)), DTYPE_F32);
    /* y equals x at every 4th point: ties for max/min/eq */
    int tie = kbin(&c.k, OP_EQ, kcast(&c.k, kbin(&c.k, OP_SUB, kiota(&c.k, 1, DTYPE_I32),
                                                 kbin(&c.k, OP_MUL, kbin(&c.k, OP_DIV, kiota(&c.k, 1, DTYPE_I32),
                                                                         kconst(&c.k, 4, DTYPE_I32)),
                                                      kconst(&c.k, 4, DTYPE_I32))),
                                      DTYPE_F32),
                   kconst(&c.k, 0, DTYPE_F32));
    y = ksel(&c.k, tie, x, y);
    /* every elementwise row of ops.def, input k on p where its dom letter
     * is p, else on x (first) or y (second) */
    for (int o = 0; o < OP_COUNT; o++) {
      const OpInfo *info = &op_info[o];
      if (!(info->flags & OPF_ELEMENTWISE)) continue;
      int cmp, in[2];
      double atol, rtol;
      op_tol((Op)o, &cmp, &atol, &rtol);
      for (int k = 0; k < info->n_in; k++) in[k] = info->dom[k] == 'p' ? p : k == 0 ? x : y;
      addbuf(&c, N, DTYPE_F32, FILL_OUT, cmp, atol, rtol);
      int r = info->n_in == 1 ? kun(&c.k, (Op)o, in[0]) : kbin(&c.k, (Op)o, in[0], in[1]);
      kstore(&c.k, kview(&c.k, c.n_bufs - 1, 0, ST(L, 1)), r);
    }
    check_case(&c);
  }
}

/* i32: neg, relu and every binary op, with INT_MIN, -1, 0 among the inputs
 * (division by zero gives 0, INT_MIN / -1 wraps); wrapping add/mul. All
 * bit-identical. */
TEST(elementwise_i32_ops) {
  FOR_L {
    int64_t L = Ls[li], R = 5, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "ew_i32_L%lld", (long long)L);
    kinit(&c.k, "k_ew_i32", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_I32, FILL_BIGINT, CMP_NONE, 0, 0);
    addbuf(&c, N, DTYPE_I32, FILL_INT, CMP_NONE, 0, 0);
    addbuf(&c, N * (4 + OP_COUNT), DTYPE_I32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(&c.k, kview(&c.k, 0, 0, ST(L, 1)), DTYPE_I32);
    /* y: small ints, and -1 / 0 / x at some points */
    int y = kload(&c.k, kview(&c.k, 1, 0, ST(1, R)), DTYPE_I32); /* transposed read */
    int o = 0;
    kstore(&c.k, kview(&c.k, 2, N * o++, ST(L, 1)), kun(&c.k, OP_NEG, x));
    kstore(&c.k, kview(&c.k, 2, N * o++, ST(L, 1)), kun(&c.k, OP_RELU, x));
    /* binary rows with integer forms (tol <= 1e-6: the others run in f32
     * through a polynomial, kernel_eval.h, and are not bit-exact) */
    for (int b = 0; b < OP_COUNT; b++)
      if ((op_info[b].flags & OPF_BINARY) && op_info[b].tol <= 1e-6)
        kstore(&c.k, kview(&c.k, 2, N * o++, ST(L, 1)), kbin(&c.k, (Op)b, x, y));
    int m1 = kconst(&c.k, -1, DTYPE_I32), z = kconst(&c.k, 0, DTYPE_I32);
    kstore(&c.k, kview(&c.k, 2, N * o++, ST(L, 1)), kbin(&c.k, OP_DIV, x, m1));
    kstore(&c.k, kview(&c.k, 2, N * o++, ST(L, 1)), kbin(&c.k, OP_DIV, x, z));
    check_case(&c);
  }
}

/* Views: a permuted input (last-axis stride 24: gather), a broadcast bias
 * (0, 0, 1), a per-row value (6, 1, 0), a scalar (0, 0, 0), a slice (offset),
 * and a permuted output (scatter). Bit-identical. Domain [4, 6, L]. */
TEST(views_broadcast_permute_slice) {
  FOR_L {
    int64_t L = Ls[li], A = 4, B = 6, N = A * B * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "views_L%lld", (long long)L);
    kinit(&c.k, "k_views", shape_of(3, (int)A, (int)B, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);          /* 0: xt [L, B, A] */
    addbuf(&c, L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);          /* 1: bias [L] */
    addbuf(&c, A * B, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);      /* 2: rowv [A, B, 1] */
    addbuf(&c, 1, DTYPE_F32, FILL_POS, CMP_NONE, 0, 0);             /* 3: scalar */
    addbuf(&c, A * B * (L + 2), DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 4: wide [A, B, L+2] */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);            /* 5: out [A, B, L] */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);            /* 6: out^T [L, B, A] */
    addbuf(&c, A * B, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);        /* 7: row out [A, B, 1] */
    int xt = kload(&c.k, kview(&c.k, 0, 0, ST(1, A, A * B)), DTYPE_F32);
    int bias = kload(&c.k, kview(&c.k, 1, 0, ST(0, 0, 1)), DTYPE_F32);
    int rowv = kload(&c.k, kview(&c.k, 2, 0, ST(B, 1, 0)), DTYPE_F32);
    int sc = kload(&c.k, kview(&c.k, 3, 0, ST(0, 0, 0)), DTYPE_F32);
    int sl = kload(&c.k, kview(&c.k, 4, 1, ST(B * (L + 2), L + 2, 1)), DTYPE_F32); /* wide[.., 1:L+1] */
    int t = kbin(&c.k, OP_SUB, kbin(&c.k, OP_ADD, kbin(&c.k, OP_MUL, xt, bias), rowv), sc);
    t = kbin(&c.k, OP_ADD, t, sl);
    /* iota along axes 0 and 2 (f32), select on x > 0 */
    int io = kbin(&c.k, OP_ADD, kiota(&c.k, 0, DTYPE_F32), kiota(&c.k, 2, DTYPE_F32));
    int pos = kbin(&c.k, OP_LT, kconst(&c.k, 0, DTYPE_F32), xt);
    t = ksel(&c.k, pos, t, io);
    kstore(&c.k, kview(&c.k, 5, 0, ST(B * L, L, 1)), t);
    kstore(&c.k, kview(&c.k, 6, 0, ST(1, A, A * B)), t);
    kstore(&c.k, kview(&c.k, 7, 0, ST(B, 1, 0)), kbin(&c.k, OP_MUL, rowv, sc)); /* row store */
    check_case(&c);
  }
}

/* Softmax over the last axis: max, exp, sum, divide. The row sum adds in
 * another order (W partial sums, then a tree), so each of L <= 128 terms
 * in [0, 1] may differ by ~L ulps of the sum; with exp's few ulps the
 * outputs (<= 1) agree within 2e-6 relative + 1e-9 absolute. */
TEST(softmax_row) {
  FOR_L {
    int64_t L = Ls[li], R = 7, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "softmax_L%lld", (long long)L);
    kinit(&c.k, "k_softmax", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-9, 2e-6);
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0); /* the max: order-free, exact */
    int x = kload(&c.k, kview(&c.k, 0, 0, ST(L, 1)), DTYPE_F32);
    int m = kreduce(&c.k, OP_REDUCE_MAX, x);
    int e = kun(&c.k, OP_EXP, kbin(&c.k, OP_SUB, x, m));
    int s = kreduce(&c.k, OP_REDUCE_SUM, e);
    kstore(&c.k, kview(&c.k, 1, 0, ST(L, 1)), kbin(&c.k, OP_DIV, e, s));
    kstore(&c.k, kview(&c.k, 2, 0, ST(1, 0)), m);
    check_case(&c);
  }
}

/* Layer norm: mean, then variance of x - mean (a second phase that needs
 * the first), rsqrt, scale and shift by broadcast gamma/beta; stores y and
 * the row values mean and rstd. Sums of L <= 128 terms |x| <= 3 in
 * different orders differ by ~1e-6 relative; rstd <= ~2 and |y| <~ 6, so
 * 2e-5 absolute + 2e-5 relative covers it with margin. */
static void build_layer_norm(Case *c, int64_t L) {
  int64_t R = 6, N = R * L;
  kinit(&c->k, "k_layer_norm", shape_of(2, (int)R, (int)L), -1);
  addbuf(c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: x */
  addbuf(c, L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 1: gamma */
  addbuf(c, L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 2: beta */
  addbuf(c, N, DTYPE_F32, FILL_OUT, CMP_NEAR, 2e-5, 2e-5);
  addbuf(c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-6, 1e-5);
  addbuf(c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-6, 1e-5);
  Kernel *k = &c->k;
  int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
  int inv_n = kconst(k, 1.0 / (double)L, DTYPE_F32);
  int mean = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, x), inv_n);
  int xc = kbin(k, OP_SUB, x, mean);
  int var = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, xc, xc)), inv_n);
  int rstd = kun(k, OP_RSQRT, kbin(k, OP_ADD, var, kconst(k, 1e-5, DTYPE_F32)));
  int g = kload(k, kview(k, 1, 0, ST(0, 1)), DTYPE_F32), b = kload(k, kview(k, 2, 0, ST(0, 1)), DTYPE_F32);
  kstore(k, kview(k, 3, 0, ST(L, 1)), kbin(k, OP_ADD, kbin(k, OP_MUL, kbin(k, OP_MUL, xc, rstd), g), b));
  kstore(k, kview(k, 4, 0, ST(1, 0)), mean);
  kstore(k, kview(k, 5, 0, ST(1, 0)), rstd);
}

TEST(layer_norm_row) {
  FOR_L {
    Case c = {0};
    snprintf(c.name, sizeof c.name, "layer_norm_L%lld", (long long)Ls[li]);
    build_layer_norm(&c, Ls[li]);
    check_case(&c);
  }
}

/* Layer-norm backward: dx = rstd (gg - mean(gg) - xhat mean(gg xhat)) with
 * gg = g gamma, xhat = (x - mean) rstd from saved row values. Its two sums
 * are independent, so the emitter runs them in one pass. Values O(1) to
 * O(10); sums differ in order only: 5e-5 absolute + 2e-5 relative. */
TEST(layer_norm_backward_row) {
  FOR_L {
    int64_t L = Ls[li], R = 5, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "ln_bwd_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_ln_bwd", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: x */
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 1: g */
    addbuf(&c, L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 2: gamma */
    addbuf(&c, R, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 3: mean */
    addbuf(&c, R, DTYPE_F32, FILL_POS, CMP_NONE, 0, 0);    /* 4: rstd */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_NEAR, 5e-5, 2e-5);
    int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32), g = kload(k, kview(k, 1, 0, ST(L, 1)), DTYPE_F32);
    int gm = kload(k, kview(k, 2, 0, ST(0, 1)), DTYPE_F32);
    int mean = kload(k, kview(k, 3, 0, ST(1, 0)), DTYPE_F32), rstd = kload(k, kview(k, 4, 0, ST(1, 0)), DTYPE_F32);
    int xhat = kbin(k, OP_MUL, kbin(k, OP_SUB, x, mean), rstd);
    int gg = kbin(k, OP_MUL, g, gm);
    int inv_n = kconst(k, 1.0 / (double)L, DTYPE_F32);
    int s1 = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, gg), inv_n);
    int s2 = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, gg, xhat)), inv_n);
    int dx = kbin(k, OP_MUL, rstd, kbin(k, OP_SUB, kbin(k, OP_SUB, gg, s1), kbin(k, OP_MUL, xhat, s2)));
    kstore(k, kview(k, 5, 0, ST(L, 1)), dx);
    check_case(&c);
  }
}

/* Cross-entropy with an i32 label per row: lse = log(sum(exp(x - max))) +
 * max; picked = sum(select(eq(iota, label), x, 0)); loss = lse - picked;
 * grad = exp(x - lse) - onehot. The loss (O(1..5)) carries log's and the
 * sum's few ulps: 1e-5 absolute; grad in [-1, 1]: 1e-6 absolute + 4e-6
 * relative. picked sums one non-zero: exact. */
TEST(cross_entropy_row) {
  FOR_L {
    int64_t L = Ls[li], R = 9, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "xent_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_xent", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: logits */
    addbuf(&c, R, DTYPE_I32, FILL_LABEL, CMP_NONE, 0, 0);  /* 1: label */
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-5, 1e-6);
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-6, 4e-6);
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
    int lab = kload(k, kview(k, 1, 0, ST(1, 0)), DTYPE_I32);
    int m = kreduce(k, OP_REDUCE_MAX, x);
    int se = kreduce(k, OP_REDUCE_SUM, kun(k, OP_EXP, kbin(k, OP_SUB, x, m)));
    int lse = kbin(k, OP_ADD, kun(k, OP_LOG, se), m);
    int hot = kbin(k, OP_EQ, kiota(k, 1, DTYPE_I32), lab); /* i32 1/0 */
    int picked = kreduce(k, OP_REDUCE_SUM, ksel(k, hot, x, kconst(k, 0, DTYPE_F32)));
    kstore(k, kview(k, 2, 0, ST(1, 0)), kbin(k, OP_SUB, lse, picked));
    kstore(k, kview(k, 3, 0, ST(L, 1)),
           kbin(k, OP_SUB, kun(k, OP_EXP, kbin(k, OP_SUB, x, lse)), kcast(k, hot, DTYPE_F32)));
    kstore(k, kview(k, 4, 0, ST(1, 0)), picked);
    check_case(&c);
  }
}

/* Column reductions (bias and layer-norm parameter gradients): over 37
 * rows, sum(g) and sum(g * xhat) with xhat from per-row saved values, plus
 * a max and a full store of xhat inside the loop. Each lane adds its column
 * in row order exactly as the evaluator does: bit-identical. */
TEST(column_reduce) {
  FOR_L {
    int64_t L = Ls[li], C = 37, N = C * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "colreduce_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_colreduce", shape_of(2, (int)C, (int)L), 0);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: g */
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 1: x */
    addbuf(&c, C, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 2: mean */
    addbuf(&c, C, DTYPE_F32, FILL_POS, CMP_NONE, 0, 0);    /* 3: rstd */
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);   /* 4: dbeta */
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);   /* 5: dgamma * 0.5 */
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);   /* 6: max */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);   /* 7: xhat */
    int g = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32), x = kload(k, kview(k, 1, 0, ST(L, 1)), DTYPE_F32);
    int mean = kload(k, kview(k, 2, 0, ST(1, 0)), DTYPE_F32), rstd = kload(k, kview(k, 3, 0, ST(1, 0)), DTYPE_F32);
    int xhat = kbin(k, OP_MUL, kbin(k, OP_SUB, x, mean), rstd);
    kstore(k, kview(k, 7, 0, ST(L, 1)), xhat);
    kstore(k, kview(k, 4, 0, ST(0, 1)), kreduce(k, OP_REDUCE_SUM, g));
    int dg = kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, g, xhat));
    kstore(k, kview(k, 5, 0, ST(0, 1)), kbin(k, OP_MUL, dg, kconst(k, 0.5, DTYPE_F32)));
    kstore(k, kview(k, 6, 0, ST(0, 1)), kreduce(k, OP_REDUCE_MAX, kbin(k, OP_MUL, g, x)));
    check_case(&c);
  }
}

/* A bias gradient over many rows with one output row: the columns are cut
 * into blocks (kernel_col_block) so threads share the work; every block
 * runs 4W, W and single-lane chunks (1000 = 3 blocks of 256 + 232 =
 * 3 x 64 + 2 x 16 + 8). Still bit-identical, and the blocks cover the
 * columns exactly once (all outputs NaN-checked). */
TEST(column_reduce_in_blocks) {
  int64_t L = 1000, C = 37, N = C * L;
  Case c = {0};
  snprintf(c.name, sizeof c.name, "colblocks_L%lld", (long long)L);
  Kernel *k = &c.k;
  kinit(k, "k_colblocks", shape_of(2, (int)C, (int)L), 0);
  addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: g */
  addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);   /* 1: sum */
  int g = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
  kstore(k, kview(k, 1, 0, ST(0, 1)), kreduce(k, OP_REDUCE_SUM, g));
  CHECK_EQ_INT(kernel_col_block(k), 256);
  CHECK_EQ_INT(kernel_work_items(k), 4);
  check_case(&c);
}

/* A column reduction over the middle axis of [3, 5, L] (3 work items),
 * reading a permuted input (gather) and an i32 sum. Bit-identical. */
TEST(column_reduce_middle_axis) {
  FOR_L {
    int64_t L = Ls[li], A = 3, B = 5, N = A * B * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "colmid_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_colmid", shape_of(3, (int)A, (int)B, (int)L), 1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: x^T [L, B, A] */
    addbuf(&c, N, DTYPE_I32, FILL_INT, CMP_NONE, 0, 0);    /* 1: n */
    addbuf(&c, A * L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, A * L, DTYPE_I32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(k, kview(k, 0, 0, ST(1, A, A * B)), DTYPE_F32);
    int n = kload(k, kview(k, 1, 0, ST(B * L, L, 1)), DTYPE_I32);
    int io = kiota(k, 1, DTYPE_F32);
    kstore(k, kview(k, 2, 0, ST(L, 0, 1)), kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, x, io)));
    kstore(k, kview(k, 3, 0, ST(L, 0, 1)), kreduce(k, OP_REDUCE_SUM, n));
    check_case(&c);
  }
}

/* ---- random: bit-identical with runtime/philox.c ------------------------------------ */

/* Seeds, steps and example offsets for the random cases: a plain one; high
 * bits set (the seed's high word, a step near 2^32); indices that cross 2^32
 * (per: elements per example): the offset puts the first index at
 * 2^32 - per - 3 - ((2^32 - 3) mod per), so 2^32 comes per + 3 to 2 per + 2
 * elements in. 2^32 is then lane 2^32 mod L of a row: for L = 17, 33 and 131
 * index hi changes between the lanes of one vector. */
static KernelRunInfo random_info(int which, int64_t per) {
  switch (which) {
  case 0:
    return (KernelRunInfo){.seed = 0x0123456789ABCDEFull, .step = 7, .example_offset = 3};
  case 1:
    return (KernelRunInfo){.seed = 0xFEDCBA9876543210ull, .step = 0xFFFFFFFEu, .example_offset = 0};
  default:
    return (KernelRunInfo){.seed = 42, .step = 1, .example_offset = (int64_t)(((1ull << 32) - 3) / (uint64_t)per) - 1};
  }
}

/* Buffer buf of c holds the KI_RANDOM of op key `key`; per: elements per
 * example (kernel_eval.h's example offset unit). */
static void expect_random(Case *c, int buf, uint32_t key, int64_t per) {
  BC_ASSERT(c->n_rand < 2);
  c->rand[c->n_rand].buf = buf;
  c->rand[c->n_rand++].key = key;
  c->rand_per = per;
}

static const int64_t random_Ls[] = {1, 3, 16, 17, 33, 128, 131};
#define N_RANDOM_L ((int)(sizeof random_Ls / sizeof *random_Ls))

/* Random and dropout: bit-identical with the evaluator (run_case) and with
 * runtime/philox.c (check_random), at every width, for last-axis sizes with
 * and without a scalar remainder, with each of the offsets above. */
TEST(random_dropout) {
  for (int li = 0; li < N_RANDOM_L; li++)
    for (int which = 0; which < 3; which++) {
      int64_t L = random_Ls[li], R = 6, N = R * L;
      Case c = {0};
      snprintf(c.name, sizeof c.name, "random_L%lld_%d", (long long)L, which);
      Kernel *k = &c.k;
      kinit(k, "k_dropout", shape_of(2, (int)R, (int)L), -1);
      c.info = random_info(which, L);
      addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
      addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
      addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
      int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
      int u = krand(k, 0xDEADBEEFu);
      kstore(k, kview(k, 1, 0, ST(L, 1)), u);
      int keep = kbin(k, OP_LT, u, kconst(k, 0.8, DTYPE_F32));
      kstore(k, kview(k, 2, 0, ST(L, 1)),
             ksel(k, keep, kbin(k, OP_MUL, x, kconst(k, 1.25, DTYPE_F32)), kconst(k, 0, DTYPE_F32)));
      expect_random(&c, 1, 0xDEADBEEFu, L);
      check_case(&c);
    }
}

/* add&norm with dropout, as in BERT: z = x + (u < 0.2 ? 0 : 1.25 h), then
 * layer norm of z. u is needed by the mean's loop, the variance's and the
 * final one: the first draws it into a row buffer that the others read
 * (llvm_emit.c). u itself and a second stream (key 7, stored only) are
 * stored from the final loop: bit-identical; the normalized values as
 * layer_norm_row. Domain [4, 3, L] (per example: 3 L). */
TEST(random_in_several_phases) {
  for (int li = 0; li < N_RANDOM_L; li++) {
    int64_t L = random_Ls[li], A = 4, B = 3, N = A * B * L;
    int which = li % 3;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "random_phases_L%lld_%d", (long long)L, which);
    Kernel *k = &c.k;
    kinit(k, "k_add_norm_dropout", shape_of(3, (int)A, (int)B, (int)L), -1);
    c.info = random_info(which, B * L);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);        /* 0: x */
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);        /* 1: h */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_NEAR, 2e-5, 2e-5);     /* 2: y */
    addbuf(&c, A * B, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-6, 1e-5); /* 3: rstd */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);          /* 4: u */
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);          /* 5: u' */
    const int64_t *st = ST(B * L, L, 1);
    int x = kload(k, kview(k, 0, 0, st), DTYPE_F32), h = kload(k, kview(k, 1, 0, st), DTYPE_F32);
    int u = krand(k, 0x5EEDu);
    int hd = ksel(k, kbin(k, OP_LT, u, kconst(k, 0.2, DTYPE_F32)), kconst(k, 0, DTYPE_F32),
                  kbin(k, OP_MUL, h, kconst(k, 1.25, DTYPE_F32)));
    int z = kbin(k, OP_ADD, x, hd);
    int inv_n = kconst(k, 1.0 / (double)L, DTYPE_F32);
    int zc = kbin(k, OP_SUB, z, kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, z), inv_n));
    int var = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, zc, zc)), inv_n);
    int rstd = kun(k, OP_RSQRT, kbin(k, OP_ADD, var, kconst(k, 1e-5, DTYPE_F32)));
    kstore(k, kview(k, 2, 0, st), kbin(k, OP_MUL, zc, rstd));
    kstore(k, kview(k, 3, 0, ST(B, 1, 0)), rstd);
    kstore(k, kview(k, 4, 0, st), u);
    kstore(k, kview(k, 5, 0, st), krand(k, 7));
    expect_random(&c, 4, 0x5EEDu, B * L);
    expect_random(&c, 5, 7, B * L);
    check_case(&c);
  }
}

/* Random in a column kernel (chunks of 4W, W and 1 lanes): u stored and
 * summed down the columns (column sums add in the evaluator's order). */
TEST(random_column) {
  for (int li = 0; li < N_RANDOM_L; li++) {
    int64_t L = random_Ls[li], C = 5, N = C * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "random_col_L%lld_%d", (long long)L, li % 3);
    Kernel *k = &c.k;
    kinit(k, "k_random_col", shape_of(2, (int)C, (int)L), 0);
    c.info = random_info(li % 3, L);
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int u = krand(k, 0xABCDu);
    kstore(k, kview(k, 0, 0, ST(L, 1)), u);
    kstore(k, kview(k, 1, 0, ST(0, 1)), kreduce(k, OP_REDUCE_SUM, u));
    expect_random(&c, 0, 0xABCDu, L);
    check_case(&c);
  }
}

/* Casts: f32 -> i32 truncates toward zero and wraps (3e9 -> -1294967296),
 * NaN, ±inf and |x| >= 2^63 give 0; i32 -> f32 rounds to nearest. Exact. */
TEST(casts) {
  FOR_L {
    int64_t L = Ls[li], R = 4, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "cast_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_cast", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SPECIAL, CMP_NONE, 0, 0);
    addbuf(&c, N, DTYPE_I32, FILL_BIGINT, CMP_NONE, 0, 0);
    addbuf(&c, N, DTYPE_I32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, N, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32), n = kload(k, kview(k, 1, 0, ST(L, 1)), DTYPE_I32);
    kstore(k, kview(k, 2, 0, ST(L, 1)), kcast(k, x, DTYPE_I32));
    kstore(k, kview(k, 3, 0, ST(L, 1)), kcast(k, n, DTYPE_F32));
    kstore(k, kview(k, 4, 0, ST(L, 1)), kcast(k, kcast(k, x, DTYPE_F32), DTYPE_F32)); /* identity */
    check_case(&c);
  }
  /* the evaluator's values against the interpreter's rule, spelled out */
  Kernel k;
  kinit(&k, "k_cast_values", shape_of(1, 6), -1);
  int x = kload(&k, kview(&k, 0, 0, ST(1)), DTYPE_F32);
  kstore(&k, kview(&k, 1, 0, ST(1)), kcast(&k, x, DTYPE_I32));
  float in[6] = {3e9f, -2.9f, NAN, -INFINITY, 1e20f, 2147483648.0f};
  int32_t out[6], want[6] = {-1294967296, -2, 0, 0, 0, INT32_MIN};
  void *bufs[2] = {in, out};
  kernel_eval(&k, bufs, 0, 1, NULL);
  for (int i = 0; i < 6; i++) CHECK_EQ_INT(out[i], want[i]);
  kfree(&k);
}

/* Max over rows and columns of NaN, ±inf and finite values: a NaN sticks in
 * the vector lanes, the shuffle tree and the scalar tail alike (max is
 * order-free, so exact); i32 sum and max over rows wrap and are exact. */
TEST(reductions_special_values) {
  FOR_L {
    int64_t L = Ls[li], R = 7, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "maxnan_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_maxnan", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SPECIAL, CMP_NONE, 0, 0);
    addbuf(&c, N, DTYPE_I32, FILL_BIGINT, CMP_NONE, 0, 0);
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, R, DTYPE_I32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, R, DTYPE_I32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    /* rows read the specials at an offset so the NaN moves between lanes */
    int x = kload(k, kview(k, 0, 0, ST(L > 1 ? L - 1 : 1, 1)), DTYPE_F32);
    int n = kload(k, kview(k, 1, 0, ST(L, 1)), DTYPE_I32);
    kstore(k, kview(k, 2, 0, ST(1, 0)), kreduce(k, OP_REDUCE_MAX, x));
    kstore(k, kview(k, 3, 0, ST(1, 0)), kreduce(k, OP_REDUCE_SUM, n));
    kstore(k, kview(k, 4, 0, ST(1, 0)), kreduce(k, OP_REDUCE_MAX, n));
    /* finite values only (NaN and inf replaced by 0): max is exact */
    int fin = kbin(k, OP_LT, kun(k, OP_NEG, kconst(k, 1e30, DTYPE_F32)), x);
    fin = kbin(k, OP_MUL, fin, kbin(k, OP_LT, x, kconst(k, 1e30, DTYPE_F32)));
    kstore(k, kview(k, 5, 0, ST(1, 0)), kreduce(k, OP_REDUCE_MAX, ksel(k, fin, x, kconst(k, 0, DTYPE_F32))));
    check_case(&c);
  }
  FOR_L {
    int64_t L = Ls[li], C = 19, N = C * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "colmaxnan_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_colmaxnan", shape_of(2, (int)C, (int)L), 0);
    addbuf(&c, N, DTYPE_F32, FILL_SPECIAL, CMP_NONE, 0, 0);
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
    kstore(k, kview(k, 1, 0, ST(0, 1)), kreduce(k, OP_REDUCE_MAX, x));
    check_case(&c);
  }
}

/* A rank-1 domain: one work item, the whole vector in the inner loop. */
TEST(rank1_domain) {
  int64_t sizes[] = {1, 5, 64, 1000};
  for (int si = 0; si < 4; si++) {
    int64_t L = sizes[si];
    Case c = {0};
    snprintf(c.name, sizeof c.name, "rank1_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_rank1", shape_of(1, (int)L), -1);
    addbuf(&c, L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
    addbuf(&c, L, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    addbuf(&c, 1, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(k, kview(k, 0, 0, ST(1)), DTYPE_F32);
    kstore(k, kview(k, 1, 0, ST(1)), kbin(k, OP_ADD, kun(k, OP_RELU, x), kiota(k, 0, DTYPE_F32)));
    kstore(k, kview(k, 2, 0, ST(0)), kreduce(k, OP_REDUCE_MAX, x));
    check_case(&c);
  }
}

/* In place: p := p - 0.1 g with the load and store on the same buffer. */
TEST(in_place_update) {
  FOR_L {
    int64_t L = Ls[li], R = 3, N = R * L;
    Case c = {0};
    snprintf(c.name, sizeof c.name, "inplace_L%lld", (long long)L);
    Kernel *k = &c.k;
    kinit(k, "k_sgd", shape_of(2, (int)R, (int)L), -1);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_EXACT, 0, 0);
    addbuf(&c, N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
    int pv = kview(k, 0, 0, ST(L, 1));
    int p = kload(k, pv, DTYPE_F32), g = kload(k, kview(k, 1, 0, ST(L, 1)), DTYPE_F32);
    kstore(k, pv, kbin(k, OP_SUB, p, kbin(k, OP_MUL, g, kconst(k, 0.1, DTYPE_F32))));
    check_case(&c);
  }
}

/* ---- the evaluator against independent double references ------------------------- */

TEST(evaluator_vs_double_reference) {
  const int64_t L = 33, R = 4;
  Case c = {0};
  build_layer_norm(&c, L);
  float *x = malloc((size_t)(6 * L) * 4), *gm = malloc((size_t)L * 4), *bt = malloc((size_t)L * 4);
  float *y = malloc((size_t)(6 * L) * 4), mean[6], rstd[6];
  rng_state = 5;
  for (int64_t i = 0; i < 6 * L; i++) x[i] = frand(-3, 3);
  for (int64_t i = 0; i < L; i++) gm[i] = frand(-2, 2), bt[i] = frand(-1, 1);
  void *bufs[6] = {x, gm, bt, y, mean, rstd};
  kernel_eval(&c.k, bufs, 0, 6, NULL);
  for (int r = 0; r < 6; r++) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < L; j++) m += x[r * L + j];
    m /= (double)L;
    for (int64_t j = 0; j < L; j++) v += (x[r * L + j] - m) * (x[r * L + j] - m);
    v /= (double)L;
    double rs = 1 / sqrt(v + 1e-5);
    CHECK_NEAR(mean[r], m, 1e-6, 1e-6);
    CHECK_NEAR(rstd[r], rs, 1e-6, 1e-6);
    for (int64_t j = 0; j < L; j++) CHECK_NEAR(y[r * L + j], (x[r * L + j] - m) * rs * gm[j] + bt[j], 1e-5, 1e-5);
  }
  kfree(&c.k);
  /* softmax rows, R x L */
  Kernel k;
  kinit(&k, "k_softmax_ref", shape_of(2, (int)R, (int)L), -1);
  int xi = kload(&k, kview(&k, 0, 0, ST(L, 1)), DTYPE_F32);
  int e = kun(&k, OP_EXP, kbin(&k, OP_SUB, xi, kreduce(&k, OP_REDUCE_MAX, xi)));
  kstore(&k, kview(&k, 1, 0, ST(L, 1)), kbin(&k, OP_DIV, e, kreduce(&k, OP_REDUCE_SUM, e)));
  void *b2[2] = {x, y};
  kernel_eval(&k, b2, 0, R, NULL);
  for (int r = 0; r < R; r++) {
    double s = 0, m = -INFINITY;
    for (int64_t j = 0; j < L; j++) m = fmax(m, x[r * L + j]);
    for (int64_t j = 0; j < L; j++) s += exp(x[r * L + j] - m);
    for (int64_t j = 0; j < L; j++) CHECK_NEAR(y[r * L + j], exp(x[r * L + j] - m) / s, 1e-8, 1e-6);
  }
  kfree(&k);
  free(x);
  free(gm);
  free(bt);
  free(y);
}

/* The evaluator's Philox against runtime/philox.c, on scattered inputs. */
TEST(evaluator_philox_bit_identical) {
  rng_state = 99;
  for (int i = 0; i < 200000; i++) {
    uint64_t seed = (uint64_t)rng() << 32 | rng(), index = (uint64_t)rng() << (i % 33) | rng();
    uint32_t step = rng(), key = rng();
    float a = kernel_eval_philox_uniform(seed, step, key, index), b = philox_uniform(seed, step, key, index);
    if (a != b) {
      CHECK_MSG(a == b, "seed %llx step %u key %u index %llx: %.9g != %.9g", (unsigned long long)seed, step, key,
                (unsigned long long)index, a, b);
      break;
    }
  }
}

/* ---- exp / log / tanh approximations against double libm ---------------------------- */

/* Runs the emitted unary op over xs[0..n) (one row; n - n/W*W lanes take the
 * scalar path) through the host-width JIT. */
static void jit_unary(Op op, const float *xs, float *ys, int64_t n) {
  Kernel k;
  kinit(&k, "k_math", shape_of(2, 1, (int)n), -1);
  int x = kload(&k, kview(&k, 0, 0, ST(n, 1)), DTYPE_F32);
  kstore(&k, kview(&k, 1, 0, ST(n, 1)), kun(&k, op, x));
  Diag d;
  diag_init(&d);
  KernelFn fn = NULL;
  const Kernel *kp = &k;
  CHECK_MSG(llvm_jit_compile(jits[0], &kp, 1, &fn, &d), "%s", diag_first(&d));
  void *bufs[2] = {(void *)xs, ys};
  if (fn) fn(bufs, 0, 1, NULL);
  diag_free(&d);
  kfree(&k);
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
  float sp[] = {0.0f, -0.0f, -INFINITY, INFINITY, NAN, -200.0f, 100.0f, 88.8f, -104.5f, -100.0f, 88.72f};
  float out[11];
  jit_unary(OP_EXP, sp, out, 11);
  CHECK(out[0] == 1.0f && out[1] == 1.0f);
  CHECK(out[2] == 0.0f && isinf(out[3]) && out[3] > 0 && isnan(out[4]));
  CHECK(out[5] == 0.0f && isinf(out[6]) && isinf(out[7]) && out[8] == 0.0f);
  CHECK_NEAR(out[9], exp(-100.0), 2e-45, 0.02); /* denormal: 3.7e-44, rounded once */
  CHECK_NEAR(out[10], exp((double)88.72f), 0, 4e-7);
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

/* ---- compile many, names, errors, IR text ------------------------------------------- */

/* Several kernels (and a non-LOOP one) in one module; a repeated name gets
 * a suffix; each function still computes its own kernel. */
TEST(compile_many_and_names) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  Kernel ks[4];
  for (int i = 0; i < 3; i++) {
    kinit(&ks[i], "k_same_name", shape_of(2, 2, 5), -1);
    int x = kload(&ks[i], kview(&ks[i], 0, 0, ST(5, 1)), DTYPE_F32);
    kstore(&ks[i], kview(&ks[i], 1, 0, ST(5, 1)), kbin(&ks[i], OP_MUL, x, kconst(&ks[i], i + 2, DTYPE_F32)));
  }
  memset(&ks[3], 0, sizeof ks[3]);
  ks[3].kind = KERNEL_GEMM;
  ks[3].name = "k_gemm";
  const Kernel *kp[4] = {&ks[0], &ks[1], &ks[3], &ks[2]};
  KernelFn fns[4];
  Diag d;
  diag_init(&d);
  CHECK(llvm_jit_compile(jits[0], kp, 4, fns, &d));
  CHECK(fns[2] == NULL && fns[0] && fns[1] && fns[3]);
  float x[10], y[10];
  for (int i = 0; i < 10; i++) x[i] = (float)i;
  void *bufs[2] = {x, y};
  int mult[4] = {2, 3, 0, 4};
  for (int f = 0; f < 4; f++) {
    if (!fns[f]) continue;
    fns[f](bufs, 0, 2, NULL);
    for (int i = 0; i < 10; i++) CHECK(y[i] == (float)(i * mult[f]));
  }
  for (int i = 0; i < 3; i++) kfree(&ks[i]);
  diag_free(&d);
}

/* A kernel the checker rejects: an error naming it, no code, and the JIT
 * still works afterwards. */
TEST(bad_kernel_is_an_error) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  Kernel k;
  kinit(&k, "k_bad", shape_of(2, 3, 4), -1);
  int x = kload(&k, kview(&k, 0, 0, ST(4, 1)), DTYPE_F32);
  KInst r = kinst(KI_REDUCE, DTYPE_F32); /* reduces axis 0 in a row kernel */
  r.op = OP_REDUCE_SUM;
  r.a = x;
  r.axis = 0;
  kstore(&k, kview(&k, 1, 0, ST(0, 1)), kpush(&k, r));
  Diag d;
  diag_init(&d);
  CHECK(!kernel_eval_supported(&k, &d));
  CHECK(strstr(diag_first(&d), "k_bad") != NULL);
  KernelFn fn;
  const Kernel *kp = &k;
  CHECK(!llvm_jit_compile(jits[0], &kp, 1, &fn, &d));
  CHECK(llvm_emit_ir_text(&k, &d) == NULL);
  kfree(&k);
  diag_free(&d);
}

/* The optimized IR: the function is named after the kernel, uses vectors
 * of the host width, and calls nothing but LLVM intrinsics (no libm). */
TEST(ir_text) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  Case c = {0};
  build_layer_norm(&c, 128);
  Kernel *k = &c.k;
  int x = kload(k, kview(k, 0, 0, ST(128, 1)), DTYPE_F32);
  kstore(k, kview(k, 3, 0, ST(128, 1)), kun(k, OP_TANH, kun(k, OP_LOG, kun(k, OP_EXP, x))));
  Diag d;
  diag_init(&d);
  char *ir = llvm_emit_ir_text(k, &d);
  CHECK_MSG(ir != NULL, "%s", diag_first(&d));
  if (ir) {
    CHECK(strstr(ir, "define void @k_layer_norm(") != NULL);
    char vec[32];
    snprintf(vec, sizeof vec, "<%d x float>", llvm_jit_vector_width(jits[0]));
    CHECK(strstr(ir, vec) != NULL);
    for (const char *p = strstr(ir, "call "); p; p = strstr(p + 1, "call ")) {
      const char *at = strchr(p, '@');
      CHECK_MSG(at && !strncmp(at, "@llvm.", 6), "non-intrinsic call: %.60s", p);
    }
    if (getenv("BC_DUMP")) fputs(ir, stderr);
    free(ir);
  }
  kfree(k);
  diag_free(&d);
}

/* A column block of rows that lie apart (a [5, 40] block of a [5, 2048]
 * matrix, as the MLM logits' column blocks): the values match the C
 * evaluator at every width, and the IR prefetches the next row's points;
 * whole rows read contiguously are left to the hardware prefetchers. */
TEST(rows_apart_prefetch_next_row) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  enum { R = 5, C = 40, N = 2048 };
  for (int apart = 0; apart < 2; apart++) {
    Case c = {0};
    snprintf(c.name, sizeof c.name, "rows_%s", apart ? "apart" : "whole");
    kinit(&c.k, c.name, shape_of(2, R, apart ? C : N), -1);
    addbuf(&c, R * N, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
    addbuf(&c, R * (apart ? C : N), DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
    int x = kload(&c.k, kview(&c.k, 0, apart ? 7 : 0, ST(N, 1)), DTYPE_F32);
    kstore(&c.k, kview(&c.k, 1, 0, ST(apart ? C : N, 1)), kbin(&c.k, OP_MUL, x, x));
    Diag d;
    diag_init(&d);
    char *ir = llvm_emit_ir_text(&c.k, &d);
    CHECK_MSG(ir != NULL, "%s", diag_first(&d));
    if (ir) CHECK_MSG((strstr(ir, "@llvm.prefetch") != NULL) == (apart == 1), "%s", c.name);
    free(ir);
    diag_free(&d);
    check_case(&c);
  }
}

/* ---- benchmark (BC_BENCH=1 test_llvm_emit bench) ----------------------------------
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
  for (int i = 0; i < n_jits; i++) llvm_jit_free(jits[i]);
  free(xs_buf);
  free(ys_buf);
}

int main_tests(int argc, char **argv);
#define main main_tests
TEST_MAIN()
#undef main
int main(int argc, char **argv) {
  if (!llvm_jit_available()) {
    fprintf(stderr, "skipped: built without LLVM (-DBC_LLVM=OFF)\n");
    return 77;
  }
  int rc = main_tests(argc, argv);
  cleanup();
  return rc;
}
