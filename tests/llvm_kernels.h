/* llvm_kernels.h — what the LLVM emitter's tests share: kernels built by
 * hand (kinit, kload, kbin, kstore, ...), cases of buffers filled and
 * compared against the reference evaluator (codegen/kernel_eval.c) at
 * every JIT's width (host, 8 and 4 lanes), random buffers against
 * runtime/philox.c, and the JITs themselves. Static functions; include
 * after tests/test.h in test_llvm_emit.c and test_llvm_math.c. */
#ifndef BC_TEST_LLVM_KERNELS_H
#define BC_TEST_LLVM_KERNELS_H

#include "codegen/kernel_eval.h"
#include "codegen/llvm_emit.h"
#include "runtime/philox.h"
#include "tests/test.h"

#include <float.h>
#include <stdint.h>
#include <time.h>

/* Each test file uses some of these; unused ones are not a warning. */
#define LK_FN static __attribute__((unused))

/* ---- building kernels by hand ---------------------------------------------- */

LK_FN void kinit(Kernel *k, const char *name, Shape dom, int col_axis) {
  memset(k, 0, sizeof *k);
  k->kind = KERNEL_LOOP;
  k->name = name;
  k->first_node = -1;
  k->domain = dom;
  k->col_axis = col_axis;
}

LK_FN void kfree(Kernel *k) {
  vec_free(&k->views);
  vec_free(&k->insts);
  vec_free(&k->nodes);
}

LK_FN int64_t lastdim(const Kernel *k) { return k->domain.dim[k->domain.rank - 1]; }

/* A view of test buffer `buf` (KView.value is the buffer index here). */
LK_FN int kview(Kernel *k, int buf, int64_t offset, const int64_t *stride) {
  KView v = {0};
  v.value = buf;
  v.offset = offset;
  for (int d = 0; d < k->domain.rank; d++) v.stride[d] = stride[d];
  vec_push(&k->views, v);
  return k->views.n - 1;
}
#define ST(...) ((const int64_t[]){__VA_ARGS__})

LK_FN KInst kinst(KInstKind kind, DType t) {
  KInst in = {0};
  in.kind = kind;
  in.a = in.b = in.c = in.view = -1;
  in.node = -1;
  in.dtype = t;
  return in;
}

LK_FN int kpush(Kernel *k, KInst in) {
  vec_push(&k->insts, in);
  return k->insts.n - 1;
}

static const KInst *kat(const Kernel *k, int i) { return &k->insts.data[i]; }

LK_FN int kload(Kernel *k, int view, DType t) {
  KInst in = kinst(KI_LOAD, t);
  in.view = view;
  in.row = k->col_axis < 0 && k->views.data[view].stride[k->domain.rank - 1] == 0 && lastdim(k) > 1;
  return kpush(k, in);
}

LK_FN int kconst(Kernel *k, double v, DType t) {
  KInst in = kinst(KI_CONST, t);
  in.imm = v;
  in.row = k->col_axis < 0;
  return kpush(k, in);
}

LK_FN int kun(Kernel *k, Op op, int a) {
  KInst in = kinst(KI_UNARY, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.row = kat(k, a)->row;
  return kpush(k, in);
}

LK_FN int kbin(Kernel *k, Op op, int a, int b) {
  KInst in = kinst(KI_BINARY, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.b = b;
  in.row = kat(k, a)->row && kat(k, b)->row;
  return kpush(k, in);
}

LK_FN int ksel(Kernel *k, int c, int a, int b) {
  KInst in = kinst(KI_SELECT, kat(k, a)->dtype);
  in.a = c;
  in.b = a;
  in.c = b;
  in.row = kat(k, c)->row && kat(k, a)->row && kat(k, b)->row;
  return kpush(k, in);
}

LK_FN int kcast(Kernel *k, int a, DType t) {
  KInst in = kinst(KI_CAST, t);
  in.a = a;
  in.row = kat(k, a)->row;
  return kpush(k, in);
}

LK_FN int kiota(Kernel *k, int axis, DType t) {
  KInst in = kinst(KI_IOTA, t);
  in.axis = axis;
  in.row = k->col_axis < 0 && axis != k->domain.rank - 1;
  return kpush(k, in);
}

LK_FN int krand(Kernel *k, uint32_t key) {
  KInst in = kinst(KI_RANDOM, DTYPE_F32);
  in.key = key;
  return kpush(k, in);
}

LK_FN int kreduce(Kernel *k, Op op, int a) {
  KInst in = kinst(KI_REDUCE, kat(k, a)->dtype);
  in.op = op;
  in.a = a;
  in.axis = k->col_axis >= 0 ? k->col_axis : k->domain.rank - 1;
  in.row = k->col_axis < 0;
  return kpush(k, in);
}

LK_FN void kstore(Kernel *k, int view, int a) {
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
LK_FN uint32_t rng(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
LK_FN float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rng() & 0xFFFFFF) / 16777216.0f; }

LK_FN void fill(const BufSpec *s, void *p, int64_t L) {
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

LK_FN bool same_bits_or_nan(float a, float b) {
  if (isnan(a) && isnan(b)) return true;
  return memcmp(&a, &b, sizeof a) == 0;
}

/* Runs the case through kernel_eval (one call, all items) and through fn
 * (several ranges, one empty) on identical inputs; compares the outputs.
 * Returns the max |jit - eval| / (atol + rtol |eval|) over CMP_NEAR buffers. */
LK_FN double run_case(const Case *c, KernelFn fn, const char *tag) {
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

LK_FN void addbuf(Case *c, int64_t n, DType t, int fill_kind, int cmp, double atol, double rtol) {
  BC_ASSERT(c->n_bufs < (int)(sizeof c->buf / sizeof c->buf[0]));
  c->buf[c->n_bufs++] = (BufSpec){n, t, fill_kind, cmp, atol, rtol};
}

/* Kernel k's optimized IR (llvm_emit_ir_text), checked to exist; the
 * caller frees it. BC_DUMP=1 prints it. */
LK_FN char *ir_of(const Kernel *k) {
  Diag d;
  diag_init(&d);
  char *ir = llvm_emit_ir_text(k, &d);
  CHECK_MSG(ir != NULL, "%s", diag_first(&d));
  diag_free(&d);
  if (ir && getenv("BC_DUMP")) fputs(ir, stderr);
  return ir;
}

/* ---- the JITs: host width, 8 and 4 lanes ---------------------------------------- */

static LlvmJit *jits[3];
static int n_jits;

LK_FN bool have_jits(void) {
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
LK_FN void check_random(const Case *c, KernelFn fn, const char *tag) {
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
LK_FN void check_case(Case *c) {
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

/* The JITs freed at exit (each test file's main). */
LK_FN void free_jits(void) {
  for (int i = 0; i < n_jits; i++) llvm_jit_free(jits[i]);
}

/* A test file's main: exit 77 (skipped) without LLVM, else the tests, then
 * cleanup. */
#define LLVM_TEST_MAIN(cleanup) \
  int main_tests(int argc, char **argv); \
  int main(int argc, char **argv) { \
    if (!llvm_jit_available()) { \
      fprintf(stderr, "skipped: built without LLVM (-DBC_LLVM=OFF)\n"); \
      return 77; \
    } \
    int rc = main_tests(argc, argv); \
    cleanup(); \
    return rc; \
  }

#endif
