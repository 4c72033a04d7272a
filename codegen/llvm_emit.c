/* llvm_emit.c — LLVM IR for KERNEL_LOOP kernels (llvm_emit.h), built with
 * the LLVM 14 C API, optimized with default<O3> for the host TargetMachine
 * and JIT-compiled with ORC LLJIT.
 *
 * Shape of the code for a row kernel (col_axis < 0):
 *
 *   for item in [begin, end):               one row of the domain
 *     row values, in instruction order      scalars, once per row
 *     for each reduction phase:             reductions whose inputs are ready
 *       for j in steps of W: acc = op(acc, <W x value>)   (vector accumulator)
 *       horizontal reduction (shuffle tree), then a scalar remainder loop
 *     final loop over j (W lanes, then scalar): full values and their stores
 *
 * A loop body computes only the full instructions its results depend on, so
 * a value two phases need is computed twice (cheaper than a buffer). Random
 * values are the exception (~1.2 ns each at W = 16): the first loop that
 * draws one stores it in a row buffer on the stack ([L x float], for
 * L <= ROWBUF_MAX) and later loops load it; where no later loop does, LLVM
 * deletes the stores. Column kernels (col_axis >= 0) vectorize along the
 * last axis in chunks of 4W, W and 1 lanes; each chunk loops over col_axis
 * accumulating in registers.
 *
 * Numerics against kernel_eval.c (the oracle): loads, stores, + - * /, sqrt,
 * recip, comparisons, select, casts, iota and random are bit-identical;
 * rsqrt is 1/sqrt in float (<= 1 ulp from the evaluator's double formula);
 * exp, log, tanh and erf are the polynomials below (max errors in their
 * comments); row sums add in another order (W partial sums); column sums add
 * in the same order and are bit-identical. LLVM 14's C API cannot set
 * fast-math flags, so nothing is reassociated or contracted behind our back.
 *
 * Not here: non-LOOP kernels, threads, caching. Invariant: no libm calls in
 * emitted code (LLVM 14 scalarizes llvm.exp into them). */
#include "llvm_emit.h"

#include "kernel_eval.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <math.h>
#include <pthread.h>
#include <string.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

#define MAX_W 64 /* widest vector we build (column chunks of 4 x 16) */
#define ROWBUF_MAX 4096 /* longest row whose random values are kept on the stack */

/* ---- the host ----------------------------------------------------------- */

typedef struct {
  char *triple, *cpu, *features, *layout; /* LLVM messages */
  LLVMTargetMachineRef tm;
  int width; /* default f32 lanes */
} Host;

static pthread_once_t llvm_once = PTHREAD_ONCE_INIT;
static bool llvm_init_ok;
static void llvm_init(void) {
  llvm_init_ok = !LLVMInitializeNativeTarget() && !LLVMInitializeNativeAsmPrinter() &&
                 !LLVMInitializeNativeAsmParser();
}

/* Reports an LLVMErrorRef (consuming it) as a library error at our call. */
static void llvm_error(Diag *d, const char *call, LLVMErrorRef err) {
  char *msg = LLVMGetErrorMessage(err);
  diag_error(d, SRCLOC_NONE, "llvm_emit.c: %s failed: %s", call, msg);
  LLVMDisposeErrorMessage(msg);
}

static void host_free(Host *h) {
  if (h->tm) LLVMDisposeTargetMachine(h->tm);
  if (h->triple) LLVMDisposeMessage(h->triple);
  if (h->cpu) LLVMDisposeMessage(h->cpu);
  if (h->features) LLVMDisposeMessage(h->features);
  if (h->layout) LLVMDisposeMessage(h->layout);
  memset(h, 0, sizeof *h);
}

/* Triple, CPU, features and a TargetMachine for the host. The CPU name may be
 * "generic" on CPUs newer than LLVM 14; the feature string is complete. */
static bool host_init(Host *h, Diag *d) {
  memset(h, 0, sizeof *h);
  pthread_once(&llvm_once, llvm_init);
  if (!llvm_init_ok) {
    diag_error(d, SRCLOC_NONE, "llvm_emit.c: LLVMInitializeNativeTarget failed: no native target in this LLVM");
    return false;
  }
  char *def = LLVMGetDefaultTargetTriple();
  h->triple = LLVMNormalizeTargetTriple(def);
  LLVMDisposeMessage(def);
  h->cpu = LLVMGetHostCPUName();
  h->features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(h->triple, &target, &err)) {
    diag_error(d, SRCLOC_NONE, "llvm_emit.c: LLVMGetTargetFromTriple(%s) failed: %s", h->triple, err);
    LLVMDisposeMessage(err);
    host_free(h);
    return false;
  }
  h->tm = LLVMCreateTargetMachine(target, h->triple, h->cpu, h->features, LLVMCodeGenLevelAggressive,
                                  LLVMRelocDefault, LLVMCodeModelJITDefault);
  if (!h->tm) {
    diag_error(d, SRCLOC_NONE, "llvm_emit.c: LLVMCreateTargetMachine(%s, %s) failed", h->triple, h->cpu);
    host_free(h);
    return false;
  }
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(h->tm);
  h->layout = LLVMCopyStringRepOfTargetData(td);
  LLVMDisposeTargetData(td);
  h->width = strstr(h->features, "+avx512f") ? 16 : 8;
  return true;
}

/* ---- the emitter's state -------------------------------------------------- */

typedef struct {
  LLVMContextRef C;
  LLVMModuleRef M;
  LLVMBuilderRef B;
  LLVMTypeRef f32, i32, i64, i1, i8p, info_ty;
  const Host *host;
  int W;
  Diag *d;
  /* the kernel being emitted */
  const Kernel *k;
  int rank, n;
  int64_t L; /* last domain axis */
  LLVMValueRef fn;
  LLVMValueRef *vptr; /* per view: typed base pointer */
  DType *vtype;       /* per view */
  LLVMValueRef step, ex_base; /* KI_RANDOM inputs (i32, i64) */
  LLVMValueRef round_key[10][2]; /* Philox's key schedule from the seed (i32) */
  /* the current point: leading indices, per-view element offsets and linear
   * index at last index 0, and the last index of lane 0 */
  LLVMValueRef idx[BC_MAX_RANK];
  LLVMValueRef *pbase;
  LLVMValueRef lin0, j;
  /* values: fixed ones exist outside the current loop body (row scalars,
   * finished reductions), cur ones were computed in it at its width */
  LLVMValueRef *fixed;
  int *fixed_w;
  LLVMValueRef *cur;
  /* row kernels: per KI_RANDOM instruction, a stack buffer of one row
   * ([L x float]) and whether a finished loop body has filled it */
  LLVMValueRef *rowbuf;
  bool *rowbuf_full;
} Em;

static const KInst *inst(const Em *E, int i) { return &E->k->insts.data[i]; }

static int64_t view_last_stride(const Em *E, int v) {
  return E->rank ? E->k->views.data[v].stride[E->rank - 1] : 0;
}

static void em_error(Em *E, int i, const char *what) {
  diag_error(E->d, SRCLOC_NONE, "llvm_emit.c: kernel %s, instruction %d: %s",
             E->k->name ? E->k->name : "(unnamed)", i, what);
}

/* ---- types, constants, intrinsics ----------------------------------------- */

static LLVMTypeRef ty(const Em *E, DType t, int w) {
  LLVMTypeRef s = t == DTYPE_I32 ? E->i32 : E->f32;
  return w == 1 ? s : LLVMVectorType(s, (unsigned)w);
}

static LLVMValueRef splat(Em *E, LLVMValueRef s, int w) {
  if (w == 1) return s;
  BC_ASSERT(w <= MAX_W);
  if (LLVMIsConstant(s)) {
    LLVMValueRef el[MAX_W];
    for (int i = 0; i < w; i++) el[i] = s;
    return LLVMConstVector(el, (unsigned)w);
  }
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(s), (unsigned)w);
  LLVMValueRef v = LLVMBuildInsertElement(E->B, LLVMGetUndef(vt), s, LLVMConstInt(E->i32, 0, 0), "");
  return LLVMBuildShuffleVector(E->B, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(E->i32, (unsigned)w)),
                                "splat");
}

static LLVMValueRef cf(Em *E, double x, int w) { return splat(E, LLVMConstReal(E->f32, x), w); }
static LLVMValueRef ci(Em *E, int64_t x, int w) {
  return splat(E, LLVMConstInt(E->i32, (unsigned long long)x, 1), w);
}
static LLVMValueRef cl(Em *E, int64_t x, int w) {
  return splat(E, LLVMConstInt(E->i64, (unsigned long long)x, 1), w);
}

/* <base + stride*0, ..., base + stride*(w-1)> in i64 (base: scalar i64). */
static LLVMValueRef lanes64(Em *E, LLVMValueRef base, int64_t stride, int w) {
  if (w == 1) return base;
  LLVMValueRef el[MAX_W];
  for (int i = 0; i < w; i++) el[i] = LLVMConstInt(E->i64, (unsigned long long)(stride * i), 1);
  return LLVMBuildAdd(E->B, splat(E, base, w), LLVMConstVector(el, (unsigned)w), "lanes");
}

static LLVMValueRef call_intrinsic(Em *E, const char *name, LLVMTypeRef *ovl, int n_ovl, LLVMValueRef *args,
                                   int n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  BC_ASSERT(id != 0);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(E->M, id, ovl, (size_t)n_ovl);
  LLVMTypeRef ft = LLVMIntrinsicGetType(E->C, id, ovl, (size_t)n_ovl);
  return LLVMBuildCall2(E->B, ft, f, args, (unsigned)n_args, "");
}

/* A one-argument intrinsic overloaded on its argument's type (llvm.floor...). */
static LLVMValueRef intr1(Em *E, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return call_intrinsic(E, name, &t, 1, &x, 1);
}

static LLVMValueRef intr2(Em *E, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef args[2] = {x, y};
  return call_intrinsic(E, name, &t, 1, args, 2);
}

/* a * b + c, fused when the target has FMA (llvm.fmuladd), for polynomials. */
static LLVMValueRef fmuladd(Em *E, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[3] = {a, b, c};
  return call_intrinsic(E, "llvm.fmuladd", &t, 1, args, 3);
}

static LLVMValueRef fsel(Em *E, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b, LLVMValueRef t,
                         LLVMValueRef f) {
  return LLVMBuildSelect(E->B, LLVMBuildFCmp(E->B, p, a, b, ""), t, f, "");
}

/* Horner: c[0] x^(n-1) + ... + c[n-1]. */
static LLVMValueRef poly(Em *E, LLVMValueRef x, const double *c, int n, int w) {
  LLVMValueRef y = cf(E, c[0], w);
  for (int i = 1; i < n; i++) y = fmuladd(E, y, x, cf(E, c[i], w));
  return y;
}

/* 2^n for i32 n in [-126, 127]: the exponent field. */
static LLVMValueRef pow2i(Em *E, LLVMValueRef n, int w) {
  LLVMValueRef bits = LLVMBuildShl(E->B, LLVMBuildAdd(E->B, n, ci(E, 127, w), ""), ci(E, 23, w), "");
  return LLVMBuildBitCast(E->B, bits, ty(E, DTYPE_F32, w), "");
}

/* ---- math: exp, log, tanh, erf as inline polynomials ----------------------
 *
 * Cephes' single-precision algorithms (S. Moshier), evaluated with fmuladd.
 * Measured against double libm by tests/test_llvm_emit.c (math_* cases) on
 * an AVX-512 host (W = 16, FMA), over ~4 million points each:
 *   exp:  x in [-87.3, 88.72] (normal results):   max rel err 8.3e-8 (0.99 ulp)
 *   log:  every 1021st float from 1.4e-45 (denormals) to FLT_MAX, and
 *         [0.5, 2] evenly:                         max rel err 8.0e-8 (0.81 ulp)
 *   tanh: x in [-20, 20], and |x| down to 1e-30:   max rel err 1.3e-7 (1.22 ulp)
 *   erf:  x in [-5, 5], and |x| down to 1e-30:     max rel err 3.8e-7 (5.6 ulp,
 *         at |x| near 4, where erf is within 1e-7 of 1)
 * The tests assert 2.5e-7 relative (~2 ulp, room for hosts without FMA);
 * erf 5e-7. */

/* exp(x): n = round(x / ln2), r = x - n ln2 in two parts (Cody-Waite), e^r
 * by a degree-7 polynomial on |r| <= ln2/2, times 2^n applied as two powers
 * of two so that results down to denormals round once and large x gives
 * +inf. x is clamped to [-104, 89] first (exp(-104) rounds to 0, exp(89)
 * overflows), which also keeps n's exponent arithmetic in range. NaN gives
 * NaN (the clamps map NaN to -104 so n stays defined; the last select puts
 * the NaN back). */
static LLVMValueRef emit_exp(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef xc = fsel(E, LLVMRealOGT, x, cf(E, -104.0, w), x, cf(E, -104.0, w));
  xc = fsel(E, LLVMRealOLT, xc, cf(E, 89.0, w), xc, cf(E, 89.0, w));
  LLVMValueRef fn = intr1(E, "llvm.floor", fmuladd(E, xc, cf(E, 1.44269504088896341, w), cf(E, 0.5, w)));
  LLVMValueRef r = fmuladd(E, fn, cf(E, -0.693359375, w), xc); /* n * C1 is exact */
  r = fmuladd(E, fn, cf(E, 2.12194440e-4, w), r);
  static const double P[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                             4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef z = LLVMBuildFMul(b, r, r, "");
  LLVMValueRef y = fmuladd(E, poly(E, r, P, 6, w), z, r);
  y = LLVMBuildFAdd(b, y, cf(E, 1.0, w), "");
  LLVMValueRef n = LLVMBuildFPToSI(b, fn, ty(E, DTYPE_I32, w), ""); /* in [-150, 128] */
  LLVMValueRef n1 = LLVMBuildAShr(b, n, ci(E, 1, w), "");
  LLVMValueRef n2 = LLVMBuildSub(b, n, n1, "");
  y = LLVMBuildFMul(b, LLVMBuildFMul(b, y, pow2i(E, n1, w), ""), pow2i(E, n2, w), "");
  return fsel(E, LLVMRealUNO, x, x, x, y);
}

/* log(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)) (exponent bits;
 * denormals are scaled by 2^23 first), log(m) = t - t^2/2 + t^3 P(t) with
 * t = m - 1, plus e ln2 in two parts. log(0) = -inf, log(+inf) = +inf,
 * log(x < 0) = log(NaN) = NaN. */
static LLVMValueRef emit_log(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMTypeRef it = ty(E, DTYPE_I32, w);
  LLVMValueRef tiny = LLVMBuildFCmp(b, LLVMRealOLT, x, cf(E, 1.17549435e-38, w), "");
  LLVMValueRef xs = LLVMBuildSelect(b, tiny, LLVMBuildFMul(b, x, cf(E, 8388608.0, w), ""), x, "");
  LLVMValueRef bits = LLVMBuildBitCast(b, xs, it, "");
  LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, ci(E, 23, w), ""), ci(E, 126, w), "");
  e = LLVMBuildSub(b, e, LLVMBuildSelect(b, tiny, ci(E, 23, w), ci(E, 0, w), ""), "");
  LLVMValueRef mbits = LLVMBuildOr(b, LLVMBuildAnd(b, bits, ci(E, 0x007FFFFF, w), ""), ci(E, 0x3F000000, w), "");
  LLVMValueRef m = LLVMBuildBitCast(b, mbits, ty(E, DTYPE_F32, w), ""); /* [0.5, 1) */
  LLVMValueRef lo = LLVMBuildFCmp(b, LLVMRealOLT, m, cf(E, 0.707106781186547524, w), "");
  e = LLVMBuildSub(b, e, LLVMBuildZExt(b, lo, it, ""), "");
  /* t = 2m - 1 when m < sqrt(1/2), else m - 1 (both exact) */
  LLVMValueRef t = LLVMBuildFSub(b, m, cf(E, 1.0, w), "");
  t = LLVMBuildFAdd(b, t, LLVMBuildSelect(b, lo, m, cf(E, 0.0, w), ""), "");
  static const double P[] = {7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1,
                             -1.2420140846E-1, 1.4249322787E-1, -1.6668057665E-1,
                             2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1};
  LLVMValueRef z = LLVMBuildFMul(b, t, t, "");
  LLVMValueRef y = LLVMBuildFMul(b, LLVMBuildFMul(b, poly(E, t, P, 9, w), t, ""), z, "");
  LLVMValueRef fe = LLVMBuildSIToFP(b, e, ty(E, DTYPE_F32, w), "");
  y = fmuladd(E, fe, cf(E, -2.12194440e-4, w), y);
  y = fmuladd(E, z, cf(E, -0.5, w), y);
  LLVMValueRef r = LLVMBuildFAdd(b, t, y, "");
  r = fmuladd(E, fe, cf(E, 0.693359375, w), r);
  r = fsel(E, LLVMRealOEQ, x, cf(E, INFINITY, w), x, r);
  r = fsel(E, LLVMRealOEQ, x, cf(E, 0.0, w), cf(E, -INFINITY, w), r);
  return fsel(E, LLVMRealULT, x, cf(E, 0.0, w), cf(E, NAN, w), r);
}

/* tanh(x) = copysign(t(|x|), x): for a = |x| < 0.625, a + a^3 P(a^2) (no
 * cancellation near 0); else 1 - 2 / (exp(2a) + 1), which tends to 1
 * without NaN as exp overflows to +inf. Working on |x| and restoring the
 * sign last keeps tanh(-0) = -0. NaN fails a >= 0.625 and stays NaN. */
static LLVMValueRef emit_tanh(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef a = intr1(E, "llvm.fabs", x);
  LLVMValueRef s = emit_exp(E, LLVMBuildFAdd(b, a, a, ""), w);
  LLVMValueRef big = LLVMBuildFSub(
      b, cf(E, 1.0, w), LLVMBuildFDiv(b, cf(E, 2.0, w), LLVMBuildFAdd(b, s, cf(E, 1.0, w), ""), ""), "");
  static const double P[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1,
                             -3.33332819422E-1};
  LLVMValueRef z = LLVMBuildFMul(b, a, a, "");
  LLVMValueRef small = fmuladd(E, LLVMBuildFMul(b, poly(E, z, P, 5, w), z, ""), a, a);
  return intr2(E, "llvm.copysign", fsel(E, LLVMRealOGE, a, cf(E, 0.625, w), big, small), x);
}

/* erf(x) = x P(x^2) / Q(x^2), the rational approximation of Eigen's and
 * XLA's fast erf (degrees 13 and 8), on x clamped to [-4, 4] (beyond it
 * erf rounds to +-1 in f32). In double the approximation is within 6.5e-8
 * relative of erf over [-4, 4]; NaN stays NaN (the clamps map it to -4,
 * the last select puts it back). */
static LLVMValueRef emit_erf(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef xc = fsel(E, LLVMRealOGT, x, cf(E, -4.0, w), x, cf(E, -4.0, w));
  xc = fsel(E, LLVMRealOLT, xc, cf(E, 4.0, w), xc, cf(E, 4.0, w));
  static const double P[] = {-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                             -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                             -1.60960333262415e-02};
  static const double Q[] = {-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                             -7.37332916720468e-03, -1.42647390514189e-02};
  LLVMValueRef z = LLVMBuildFMul(b, xc, xc, "");
  LLVMValueRef num = LLVMBuildFMul(b, xc, poly(E, z, P, 7, w), "");
  LLVMValueRef r = LLVMBuildFDiv(b, num, poly(E, z, Q, 5, w), "");
  return fsel(E, LLVMRealUNO, x, x, x, r);
}

/* pow(a, b) = exp(b log|a|), negated for a < 0 (or -0) and an odd integer
 * b, NaN for a < 0 and a b that is not an integer, 1 for b = 0 (C's pow).
 * The error grows with |b log|a||: log's ~1 ulp becomes |b log|a|| ulps
 * of the result (~3e-7 relative for x^3 of x in [0.05, 4]). */
static LLVMValueRef emit_pow(Em *E, LLVMValueRef a, LLVMValueRef y, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef r = emit_exp(E, LLVMBuildFMul(b, y, emit_log(E, intr1(E, "llvm.fabs", a), w), ""), w);
  LLVMValueRef half = LLVMBuildFMul(b, y, cf(E, 0.5, w), "");
  LLVMValueRef is_int = LLVMBuildFCmp(b, LLVMRealOEQ, intr1(E, "llvm.floor", y), y, "");
  LLVMValueRef odd = LLVMBuildAnd(b, is_int, LLVMBuildFCmp(b, LLVMRealONE, intr1(E, "llvm.floor", half), half, ""), "");
  r = LLVMBuildSelect(b, odd, intr2(E, "llvm.copysign", r, a), r, "");
  LLVMValueRef neg = LLVMBuildFCmp(b, LLVMRealOLT, a, cf(E, 0.0, w), "");
  r = LLVMBuildSelect(b, LLVMBuildAnd(b, neg, LLVMBuildNot(b, is_int, ""), ""), cf(E, NAN, w), r, "");
  return fsel(E, LLVMRealOEQ, y, cf(E, 0.0, w), cf(E, 1.0, w), r);
}

/* f32 -> i32 like kernel_eval.c: truncate, wrap modulo 2^32; NaN, ±inf and
 * |x| >= 2^63 give 0. The select comes before fptosi so that no out-of-range
 * conversion (poison) is ever evaluated. */
static LLVMValueRef emit_f2i(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef ok = LLVMBuildFCmp(b, LLVMRealOLT, intr1(E, "llvm.fabs", x), cf(E, 9223372036854775808.0, w), "");
  LLVMValueRef x0 = LLVMBuildSelect(b, ok, x, cf(E, 0.0, w), "");
  LLVMTypeRef i64t = w == 1 ? E->i64 : LLVMVectorType(E->i64, (unsigned)w);
  return LLVMBuildTrunc(b, LLVMBuildFPToSI(b, x0, i64t, ""), ty(E, DTYPE_I32, w), "");
}

/* ---- Philox4x32-10, inline (runtime/philox.h's layout) --------------------
 *
 * The four 32-bit words of the state live in the low halves of i64 lanes
 * (<w x i64>: two zmm registers per word at W = 16); the high halves hold
 * garbage that nothing reads. Each 32x32->64-bit multiply is then
 * `mul (and x, 0xffffffff), M`, which x86 selects as one vpmuludq (it reads
 * only the low halves, so the `and` folds into it), and a product's low word
 * is the product itself. Per register, a round is two vpmuludq, two 32-bit
 * lane shuffles that bring the high words down (vpshufd runs on the shuffle
 * port; vpsrlq would queue behind the multiplies on port 0, ~6% slower) and
 * two three-way xors (vpternlog). The first version kept the words in i32
 * lanes with a zext to i64 around each multiply, and LLVM packed and
 * unpacked every round: 2.4 ns per element against 1.2 at W = 16
 * (tests/test_llvm_emit.c, bench).
 *
 * Loop-invariant parts: round 1's product of the op key is folded here; the
 * key schedule and the splats of the step and key words depend only on the
 * function's arguments, and LLVM hoists them out of the loops. Only word 0
 * of the output is used, so round 10 computes only its n0, in i32 lanes.
 * Round 9's multiply for n1 then has only its low word used; LLVM sees that
 * and makes it one vpmulld on packed lanes (LLVM 14 has no pmuludq intrinsic
 * to stop it: llvm.x86.*.pmulu.dq are upgraded to this same generic form). */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u

/* The full 64-bit products of the low halves of the lanes of x (i64 or
 * <w x i64>) and the constant m. */
static LLVMValueRef philox_mul(Em *E, LLVMValueRef x, uint32_t m, int w) {
  LLVMValueRef lo = LLVMBuildAnd(E->B, x, cl(E, 0xFFFFFFFFll, w), "");
  return LLVMBuildMul(E->B, lo, cl(E, (int64_t)m, w), "");
}

/* Shuffle of the 32-bit halves of x (<w x i64> as <2w x i32>): n_out lanes,
 * lane i taking half `first + 2 * (dup ? i / 2 : i)`. */
static LLVMValueRef halves(Em *E, LLVMValueRef x, int w, int n_out, int first, bool dup) {
  LLVMTypeRef dt = LLVMVectorType(E->i32, (unsigned)(2 * w));
  LLVMValueRef m[2 * MAX_W];
  for (int i = 0; i < n_out; i++) m[i] = LLVMConstInt(E->i32, (unsigned long long)(first + 2 * (dup ? i / 2 : i)), 0);
  return LLVMBuildShuffleVector(E->B, LLVMBuildBitCast(E->B, x, dt, ""), LLVMGetUndef(dt),
                                LLVMConstVector(m, (unsigned)n_out), "");
}

/* The high words of the products p, in the low halves of their lanes. */
static LLVMValueRef philox_hi(Em *E, LLVMValueRef p, int w) {
  if (w == 1) return LLVMBuildLShr(E->B, p, cl(E, 32, 1), "");
  return LLVMBuildBitCast(E->B, halves(E, p, w, 2 * w, 1, true), LLVMTypeOf(p), "hi"); /* (hi, hi) per lane */
}

/* The low (or high) halves of the lanes of x as i32 lanes. */
static LLVMValueRef philox_words(Em *E, LLVMValueRef x, int w, bool high) {
  if (w == 1) return LLVMBuildTrunc(E->B, high ? LLVMBuildLShr(E->B, x, cl(E, 32, 1), "") : x, E->i32, "");
  return halves(E, x, w, w, high, false);
}

/* zext(splat(s)): the i32 scalar s in the low half of w i64 lanes. */
static LLVMValueRef philox_wide(Em *E, LLVMValueRef s, int w) {
  return LLVMBuildZExt(E->B, splat(E, s, w), w == 1 ? E->i64 : LLVMVectorType(E->i64, (unsigned)w), "");
}

/* Uniform in [0, 1) for the i64 global indices `gi` (width w): counter
 * (gi lo, gi hi, key, step), key (seed lo, seed hi); top 24 bits of word 0
 * times 2^-24. Bit-identical with runtime/philox.c: in each round
 *   n0 = hi(M1 c2) ^ c1 ^ k0, n1 = lo(M1 c2), n2 = hi(M0 c0) ^ c3 ^ k1, n3 = lo(M0 c0). */
static LLVMValueRef emit_philox(Em *E, LLVMValueRef gi, uint32_t key, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef(*rk)[2] = E->round_key;
  /* round 1: c0 = gi's low half as it is, c1 = gi >> 32, c2 = key (so M1 c2
   * is a constant), c3 = step */
  uint64_t pk = (uint64_t)PHILOX_M1 * key;
  LLVMValueRef p0 = philox_mul(E, gi, PHILOX_M0, w);
  LLVMValueRef c0 = LLVMBuildXor(
      b, LLVMBuildLShr(b, gi, cl(E, 32, w), ""),
      philox_wide(E, LLVMBuildXor(b, rk[0][0], LLVMConstInt(E->i32, pk >> 32, 0), ""), w), "");
  LLVMValueRef c1 = cl(E, (int64_t)(uint32_t)pk, w);
  LLVMValueRef c2 =
      LLVMBuildXor(b, philox_hi(E, p0, w), philox_wide(E, LLVMBuildXor(b, E->step, rk[0][1], ""), w), "");
  LLVMValueRef c3 = p0;
  for (int r = 1; r < 9; r++) {
    LLVMValueRef p1 = philox_mul(E, c2, PHILOX_M1, w);
    p0 = philox_mul(E, c0, PHILOX_M0, w);
    c0 = LLVMBuildXor(b, LLVMBuildXor(b, philox_hi(E, p1, w), c1, ""), philox_wide(E, rk[r][0], w), "");
    c2 = LLVMBuildXor(b, LLVMBuildXor(b, philox_hi(E, p0, w), c3, ""), philox_wide(E, rk[r][1], w), "");
    c1 = p1;
    c3 = p0;
  }
  /* round 10: n0 only, in i32 lanes */
  LLVMValueRef p1 = philox_mul(E, c2, PHILOX_M1, w);
  LLVMValueRef n0 = LLVMBuildXor(b, philox_words(E, p1, w, true), philox_words(E, c1, w, false), "");
  n0 = LLVMBuildXor(b, n0, splat(E, rk[9][0], w), "");
  LLVMValueRef top = LLVMBuildLShr(b, n0, ci(E, 8, w), "");
  return LLVMBuildFMul(b, LLVMBuildSIToFP(b, top, ty(E, DTYPE_F32, w), ""), cf(E, 1.0 / 16777216.0, w), "uniform");
}

/* ---- elementwise ops ---------------------------------------------------------- */

/* The vocabulary of the `llvm` column of graph/ops.def: f32 values of
 * width w (E, w in scope). The row's expression is the whole lowering; a
 * new function (a polynomial) goes with its siblings above. */
#define L_ADD(x, y) LLVMBuildFAdd(E->B, (x), (y), "")
#define L_SUB(x, y) LLVMBuildFSub(E->B, (x), (y), "")
#define L_MUL(x, y) LLVMBuildFMul(E->B, (x), (y), "")
#define L_DIV(x, y) LLVMBuildFDiv(E->B, (x), (y), "")
#define L_NEG(x) LLVMBuildFNeg(E->B, (x), "")
#define L_C(c) cf(E, (c), w)
#define L_SEL(pred, x, y, t, f) fsel(E, LLVMReal##pred, (x), (y), (t), (f))
#define L_SQRT(x) intr1(E, "llvm.sqrt", (x))
#define L_ABS(x) intr1(E, "llvm.fabs", (x))
#define L_EXP(x) emit_exp(E, (x), w)
#define L_LOG(x) emit_log(E, (x), w)
#define L_TANH(x) emit_tanh(E, (x), w)
#define L_ERF(x) emit_erf(E, (x), w)
#define L_POW(x, y) emit_pow(E, (x), (y), w)

/* op(a) on f32 at width w. */
static LLVMValueRef emit_unary_f32(Em *E, int i, Op op, LLVMValueRef a, int w) {
  switch (op) {
#define UNARY(ID, name, ref, cuda, llvm, ...) \
  case OP_##ID: \
    return (llvm);
#include "../graph/ops.def"
  default:
    break;
  }
  em_error(E, i, "not a unary op");
  return NULL;
}

/* op(a, c) on f32 at width w. */
static LLVMValueRef emit_binary_f32(Em *E, int i, Op op, LLVMValueRef a, LLVMValueRef c, int w) {
  LLVMValueRef b = c; /* the rows call the second operand b */
  switch (op) {
#define BINARY(ID, name, ref, cuda, llvm, ...) \
  case OP_##ID: \
    return (llvm);
#include "../graph/ops.def"
  default:
    break;
  }
  (void)b;
  em_error(E, i, "not a binary op");
  return NULL;
}

static LLVMValueRef emit_binary_i32(Em *E, int i, Op op, LLVMValueRef a, LLVMValueRef c, int w) {
  LLVMBuilderRef b = E->B;
  LLVMTypeRef it = ty(E, DTYPE_I32, w);
  switch (op) {
  case OP_ADD:
    return LLVMBuildAdd(b, a, c, "add"); /* wraps: no nsw */
  case OP_SUB:
    return LLVMBuildSub(b, a, c, "sub");
  case OP_MUL:
    return LLVMBuildMul(b, a, c, "mul");
  case OP_DIV: {
    /* x / 0 = 0 and INT_MIN / -1 = INT_MIN: divide by 1 in both cases (so
     * sdiv never traps), then zero the division by zero. */
    LLVMValueRef z = LLVMBuildICmp(b, LLVMIntEQ, c, ci(E, 0, w), "");
    LLVMValueRef ovf = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntEQ, a, ci(E, INT32_MIN, w), ""),
                                    LLVMBuildICmp(b, LLVMIntEQ, c, ci(E, -1, w), ""), "");
    LLVMValueRef safe = LLVMBuildSelect(b, LLVMBuildOr(b, z, ovf, ""), ci(E, 1, w), c, "");
    return LLVMBuildSelect(b, z, ci(E, 0, w), LLVMBuildSDiv(b, a, safe, ""), "div");
  }
  case OP_MAX:
    return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGE, a, c, ""), a, c, "max");
  case OP_MIN:
    return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLE, a, c, ""), a, c, "min");
  case OP_LT:
    return LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntSLT, a, c, ""), it, "lt");
  case OP_EQ:
    return LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntEQ, a, c, ""), it, "eq");
  default: { /* like kernel_eval.c: in f32, converted back like KI_CAST */
    LLVMValueRef r = emit_binary_f32(E, i, op, LLVMBuildSIToFP(b, a, ty(E, DTYPE_F32, w), ""),
                                     LLVMBuildSIToFP(b, c, ty(E, DTYPE_F32, w), ""), w);
    return r ? emit_f2i(E, r, w) : NULL;
  }
  }
}

/* ---- loads and stores ------------------------------------------------------- */

/* Element offset (i64 scalar) of view v at lane 0 of the current point. */
static LLVMValueRef view_off(Em *E, int v) {
  int64_t s = view_last_stride(E, v);
  if (s == 0) return E->pbase[v];
  return LLVMBuildAdd(E->B, E->pbase[v], LLVMBuildMul(E->B, E->j, LLVMConstInt(E->i64, (unsigned long long)s, 1), ""),
                      "");
}

/* Stride 1: one unaligned vector load; stride 0: scalar load and splat;
 * otherwise llvm.masked.gather with an all-true mask. */
static LLVMValueRef emit_load(Em *E, int v, DType t, int w) {
  LLVMBuilderRef b = E->B;
  int64_t s = view_last_stride(E, v);
  LLVMTypeRef et = ty(E, t, 1), vt = ty(E, t, w);
  LLVMValueRef off = view_off(E, v);
  if (w == 1 || s == 0) {
    LLVMValueRef x = LLVMBuildLoad2(b, et, LLVMBuildGEP2(b, et, E->vptr[v], &off, 1, ""), "ld");
    LLVMSetAlignment(x, 4);
    return splat(E, x, w);
  }
  if (s == 1) {
    LLVMValueRef p = LLVMBuildGEP2(b, et, E->vptr[v], &off, 1, "");
    p = LLVMBuildBitCast(b, p, LLVMPointerType(vt, 0), "");
    LLVMValueRef x = LLVMBuildLoad2(b, vt, p, "vld");
    LLVMSetAlignment(x, 4);
    return x;
  }
  LLVMValueRef ix = lanes64(E, off, s, w);
  LLVMValueRef ps = LLVMBuildGEP2(b, et, E->vptr[v], &ix, 1, "");
  LLVMTypeRef ovl[2] = {vt, LLVMTypeOf(ps)};
  LLVMValueRef args[4] = {ps, LLVMConstInt(E->i32, 4, 0),
                          splat(E, LLVMConstInt(E->i1, 1, 0), w), LLVMGetUndef(vt)};
  return call_intrinsic(E, "llvm.masked.gather", ovl, 2, args, 4);
}

/* Stride 1: vector store; stride 0: the last lane (the last point written
 * wins, as in sequential order); otherwise llvm.masked.scatter (whose
 * overlapping lanes are written in lane order). */
static void emit_store(Em *E, int v, LLVMValueRef x, DType t, int w) {
  LLVMBuilderRef b = E->B;
  int64_t s = view_last_stride(E, v);
  LLVMTypeRef et = ty(E, t, 1), vt = ty(E, t, w);
  LLVMValueRef off = view_off(E, v);
  if (w == 1 || s == 0) {
    if (w > 1) x = LLVMBuildExtractElement(b, x, LLVMConstInt(E->i32, (unsigned long long)(w - 1), 0), "");
    LLVMValueRef st = LLVMBuildStore(b, x, LLVMBuildGEP2(b, et, E->vptr[v], &off, 1, ""));
    LLVMSetAlignment(st, 4);
    return;
  }
  if (s == 1) {
    LLVMValueRef p = LLVMBuildGEP2(b, et, E->vptr[v], &off, 1, "");
    p = LLVMBuildBitCast(b, p, LLVMPointerType(vt, 0), "");
    LLVMSetAlignment(LLVMBuildStore(b, x, p), 4);
    return;
  }
  LLVMValueRef ix = lanes64(E, off, s, w);
  LLVMValueRef ps = LLVMBuildGEP2(b, et, E->vptr[v], &ix, 1, "");
  LLVMTypeRef ovl[2] = {vt, LLVMTypeOf(ps)};
  LLVMValueRef args[4] = {x, ps, LLVMConstInt(E->i32, 4, 0), splat(E, LLVMConstInt(E->i1, 1, 0), w)};
  call_intrinsic(E, "llvm.masked.scatter", ovl, 2, args, 4);
}

/* ---- instructions ------------------------------------------------------------ */


/* Operand o at width w: a fixed value (splatted when scalar) or one computed
 * earlier in this body. */
static LLVMValueRef opnd(Em *E, int o, int w) {
  if (E->fixed[o]) {
    if (E->fixed_w[o] == w) return E->fixed[o];
    BC_ASSERT(E->fixed_w[o] == 1);
    return splat(E, E->fixed[o], w);
  }
  BC_ASSERT(E->cur[o]);
  return E->cur[o];
}

/* f32 -> i32 of a constant, as emit_f2i does at run time. */
static int32_t const_i32(double imm) {
  float x = (float)imm;
  if (!(fabsf(x) < 9223372036854775808.0f)) return 0;
  return (int32_t)(uint32_t)(uint64_t)(int64_t)x;
}

/* Instruction i (not a reduce or store) at the current point, width w. */
static LLVMValueRef emit_inst(Em *E, int i, int w) {
  const KInst *in = inst(E, i);
  LLVMBuilderRef b = E->B;
  switch (in->kind) {
  case KI_LOAD:
    return emit_load(E, in->view, in->dtype, w);
  case KI_CONST:
    return in->dtype == DTYPE_I32 ? ci(E, const_i32(in->imm), w) : cf(E, (float)in->imm, w);
  case KI_UNARY: {
    LLVMValueRef a = opnd(E, in->a, w);
    if (in->dtype == DTYPE_F32) return emit_unary_f32(E, i, in->op, a, w);
    if (in->op == OP_NEG) return LLVMBuildSub(b, ci(E, 0, w), a, "neg");
    if (in->op == OP_RELU) return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, a, ci(E, 0, w), ""), a, ci(E, 0, w), "relu");
    LLVMValueRef r = emit_unary_f32(E, i, in->op, LLVMBuildSIToFP(b, a, ty(E, DTYPE_F32, w), ""), w);
    return r ? emit_f2i(E, r, w) : NULL;
  }
  case KI_BINARY: {
    LLVMValueRef a = opnd(E, in->a, w), c = opnd(E, in->b, w);
    if (inst(E, in->a)->dtype == DTYPE_I32) return emit_binary_i32(E, i, in->op, a, c, w);
    return emit_binary_f32(E, i, in->op, a, c, w);
  }
  case KI_SELECT: {
    LLVMValueRef a = opnd(E, in->a, w), cond;
    if (inst(E, in->a)->dtype == DTYPE_I32) cond = LLVMBuildICmp(b, LLVMIntNE, a, ci(E, 0, w), "");
    else cond = LLVMBuildFCmp(b, LLVMRealUNE, a, cf(E, 0.0, w), ""); /* NaN != 0 */
    return LLVMBuildSelect(b, cond, opnd(E, in->b, w), opnd(E, in->c, w), "sel");
  }
  case KI_CAST: {
    LLVMValueRef a = opnd(E, in->a, w);
    DType from = inst(E, in->a)->dtype;
    if (from == in->dtype) return a;
    if (in->dtype == DTYPE_I32) return emit_f2i(E, a, w);
    return LLVMBuildSIToFP(b, a, ty(E, DTYPE_F32, w), "cast");
  }
  case KI_IOTA: {
    LLVMValueRef v;
    if (E->rank == 0) v = cl(E, 0, w);
    else if (in->axis == E->rank - 1) v = lanes64(E, E->j, 1, w);
    else v = splat(E, E->idx[in->axis], w);
    v = LLVMBuildTrunc(b, v, ty(E, DTYPE_I32, w), "iota");
    return in->dtype == DTYPE_I32 ? v : LLVMBuildSIToFP(b, v, ty(E, DTYPE_F32, w), "iota");
  }
  case KI_RANDOM: {
    LLVMValueRef p = E->rowbuf[i] ? LLVMBuildGEP2(b, E->f32, E->rowbuf[i], &E->j, 1, "") : NULL;
    if (p) p = LLVMBuildBitCast(b, p, LLVMPointerType(ty(E, DTYPE_F32, w), 0), "");
    if (p && E->rowbuf_full[i]) {
      LLVMValueRef x = LLVMBuildLoad2(b, ty(E, DTYPE_F32, w), p, "uniform");
      LLVMSetAlignment(x, 4);
      return x;
    }
    LLVMValueRef base = LLVMBuildAdd(b, LLVMBuildAdd(b, E->lin0, E->j, ""), E->ex_base, "");
    LLVMValueRef u = emit_philox(E, lanes64(E, base, 1, w), in->key, w);
    if (p) LLVMSetAlignment(LLVMBuildStore(b, u, p), 4);
    return u;
  }
  case KI_REDUCE:
  case KI_STORE:
    break;
  }
  BC_ASSERT(!"reduce and store are emitted by their loops");
  return NULL;
}

/* Closes need[] over operands (operands precede users, so one backward
 * sweep), stopping at fixed values. A reduction that is needed but not fixed
 * is a bug in the phase order. */
static void cone_close(Em *E, bool *need) {
  for (int i = E->n - 1; i >= 0; i--) {
    if (!need[i]) continue;
    if (E->fixed[i]) {
      need[i] = false;
      continue;
    }
    const KInst *in = inst(E, i);
    BC_ASSERT(in->kind != KI_REDUCE && in->kind != KI_STORE);
    for (int s = 0; s < kinst_n_operands(in->kind); s++) need[kinst_operand(in, s)] = true;
  }
}

/* Computes the needed instructions at width w into cur[]. */
static bool emit_body(Em *E, const bool *need, int w) {
  memset(E->cur, 0, (size_t)E->n * sizeof(LLVMValueRef));
  for (int i = 0; i < E->n; i++) {
    if (!need[i]) continue;
    E->cur[i] = emit_inst(E, i, w);
    if (!E->cur[i]) return false;
  }
  return true;
}

/* ---- loops and reductions ---------------------------------------------------- */

typedef struct {
  LLVMBasicBlockRef pre, head, exit;
  LLVMValueRef iv;
  int64_t step;
  LLVMValueRef phi[64];
  int n_phi;
} Loop;

/* for (iv = lo; iv < hi; iv += step): leaves the builder in the body. */
static LLVMValueRef loop_begin(Em *E, Loop *lp, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name) {
  LLVMBuilderRef b = E->B;
  memset(lp, 0, sizeof *lp);
  lp->step = step;
  lp->pre = LLVMGetInsertBlock(b);
  lp->head = LLVMAppendBasicBlockInContext(E->C, E->fn, name);
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(E->C, E->fn, "body");
  lp->exit = LLVMAppendBasicBlockInContext(E->C, E->fn, "exit");
  LLVMBuildBr(b, lp->head);
  LLVMPositionBuilderAtEnd(b, lp->head);
  lp->iv = LLVMBuildPhi(b, E->i64, name);
  LLVMAddIncoming(lp->iv, &lo, &lp->pre, 1);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, lp->iv, hi, ""), body, lp->exit);
  LLVMPositionBuilderAtEnd(b, body);
  return lp->iv;
}

/* A loop-carried value starting at init (its value after the loop too). */
static LLVMValueRef loop_phi(Em *E, Loop *lp, LLVMValueRef init) {
  BC_ASSERT(lp->n_phi < (int)(sizeof lp->phi / sizeof lp->phi[0]));
  LLVMBasicBlockRef at = LLVMGetInsertBlock(E->B);
  LLVMPositionBuilderBefore(E->B, lp->iv);
  LLVMValueRef phi = LLVMBuildPhi(E->B, LLVMTypeOf(init), "acc");
  LLVMAddIncoming(phi, &init, &lp->pre, 1);
  LLVMPositionBuilderAtEnd(E->B, at);
  lp->phi[lp->n_phi++] = phi;
  return phi;
}

/* Closes the loop; next[i] is phi i's value for the next iteration. */
static void loop_end(Em *E, Loop *lp, LLVMValueRef *next) {
  LLVMBuilderRef b = E->B;
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMValueRef iv_next = LLVMBuildAdd(b, lp->iv, LLVMConstInt(E->i64, (unsigned long long)lp->step, 0), "");
  LLVMBuildBr(b, lp->head);
  LLVMAddIncoming(lp->iv, &iv_next, &latch, 1);
  for (int i = 0; i < lp->n_phi; i++) LLVMAddIncoming(lp->phi[i], &next[i], &latch, 1);
  LLVMPositionBuilderAtEnd(b, lp->exit);
}

static LLVMValueRef reduce_init(Em *E, const KInst *in, int w) {
  bool max = in->op == OP_REDUCE_MAX;
  if (in->dtype == DTYPE_I32) return ci(E, max ? INT32_MIN : 0, w);
  return cf(E, max ? -INFINITY : -0.0, w); /* -0 + x == x exactly: folds away */
}

/* acc op v; max keeps a NaN: (isnan(v) || v > acc) ? v : acc. */
static LLVMValueRef reduce_step(Em *E, const KInst *in, LLVMValueRef acc, LLVMValueRef v) {
  LLVMBuilderRef b = E->B;
  bool max = in->op == OP_REDUCE_MAX;
  if (in->dtype == DTYPE_I32) {
    if (!max) return LLVMBuildAdd(b, acc, v, "");
    return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, v, acc, ""), v, acc, "");
  }
  if (!max) return LLVMBuildFAdd(b, acc, v, "");
  LLVMValueRef take = LLVMBuildOr(b, LLVMBuildFCmp(b, LLVMRealUNO, v, v, ""),
                                  LLVMBuildFCmp(b, LLVMRealOGT, v, acc, ""), "");
  return LLVMBuildSelect(b, take, v, acc, "");
}

/* Lanes of v combined by a shuffle tree (halves, then quarters...). */
static LLVMValueRef hreduce(Em *E, const KInst *in, LLVMValueRef v, int w) {
  LLVMBuilderRef b = E->B;
  while (w > 1) {
    int h = w / 2;
    LLVMValueRef lo, hi;
    if (h == 1) {
      lo = LLVMBuildExtractElement(b, v, LLVMConstInt(E->i32, 0, 0), "");
      hi = LLVMBuildExtractElement(b, v, LLVMConstInt(E->i32, 1, 0), "");
    } else {
      LLVMValueRef ml[MAX_W / 2], mh[MAX_W / 2];
      for (int i = 0; i < h; i++) {
        ml[i] = LLVMConstInt(E->i32, (unsigned long long)i, 0);
        mh[i] = LLVMConstInt(E->i32, (unsigned long long)(h + i), 0);
      }
      LLVMValueRef u = LLVMGetUndef(LLVMTypeOf(v));
      lo = LLVMBuildShuffleVector(b, v, u, LLVMConstVector(ml, (unsigned)h), "");
      hi = LLVMBuildShuffleVector(b, v, u, LLVMConstVector(mh, (unsigned)h), "");
    }
    v = reduce_step(E, in, lo, hi);
    w = h;
  }
  return v;
}

/* ---- row kernels ------------------------------------------------------------- */

/* Whether instruction i is computed at row level (once per row). With one
 * column every value is a row value. */
static bool at_row(const Em *E, int i) {
  const KInst *in = inst(E, i);
  return in->kind != KI_REDUCE && in->kind != KI_STORE && (in->row || E->L <= 1);
}

/* The loops over the last axis for one body: W lanes at a time over the
 * largest multiple of W, then one at a time. red[0..n_red) are reductions
 * (fixed afterwards as row scalars); st[0..n_st) are stores emitted in the
 * body. */
static bool emit_row_loops(Em *E, const bool *need, const int *red, int n_red, const int *st, int n_st) {
  const int64_t L = E->L, nvec = E->W > 1 ? L / E->W : 0;
  LLVMValueRef acc[64], next[64];
  BC_ASSERT(n_red <= 64);
  for (int r = 0; r < n_red; r++) acc[r] = reduce_init(E, inst(E, red[r]), 1);
  for (int pass = 0; pass < 2; pass++) {
    int w = pass == 0 ? E->W : 1;
    int64_t lo = pass == 0 ? 0 : nvec * E->W, hi = pass == 0 ? nvec * E->W : L;
    if (lo >= hi) continue;
    Loop lp;
    E->j = loop_begin(E, &lp, cl(E, lo, 1), cl(E, hi, 1), w, w > 1 ? "jv" : "j");
    LLVMValueRef phi[64];
    for (int r = 0; r < n_red; r++)
      phi[r] = loop_phi(E, &lp, w > 1 ? reduce_init(E, inst(E, red[r]), w) : acc[r]);
    if (!emit_body(E, need, w)) return false;
    for (int s = 0; s < n_st; s++) {
      const KInst *in = inst(E, st[s]);
      emit_store(E, in->view, opnd(E, in->a, w), in->dtype, w);
    }
    for (int r = 0; r < n_red; r++) next[r] = reduce_step(E, inst(E, red[r]), phi[r], opnd(E, inst(E, red[r])->a, w));
    loop_end(E, &lp, next);
    for (int r = 0; r < n_red; r++) acc[r] = w > 1 ? hreduce(E, inst(E, red[r]), phi[r], w) : phi[r];
  }
  for (int r = 0; r < n_red; r++) {
    E->fixed[red[r]] = acc[r];
    E->fixed_w[red[r]] = 1;
  }
  for (int i = 0; i < E->n; i++) /* the two passes covered the row */
    if (need[i] && E->rowbuf[i]) E->rowbuf_full[i] = true;
  E->j = cl(E, 0, 1);
  return true;
}

/* Computes row instruction i at row level (once per row) and fixes it. */
static bool emit_row_value(Em *E, int i) {
  memset(E->cur, 0, (size_t)E->n * sizeof(LLVMValueRef));
  LLVMValueRef x = emit_inst(E, i, 1);
  E->fixed[i] = x;
  E->fixed_w[i] = 1;
  return x != NULL;
}

/* One reduction phase starting at reduction i0: it also takes every later
 * unfinished reduction whose cone holds no unfinished reduction, so
 * independent reductions share one pass (layer-norm backward's two sums,
 * cross-entropy's max and picked logit). Row values such a reduction needs
 * that come later in instruction order are computed now: they are pure, and
 * moving a load earlier is safe because a kernel loads an element before
 * it stores it (kernel_eval.h). */
static bool emit_phase(Em *E, int i0, bool *need, bool *tmp) {
  int red[64], n_red = 0;
  memset(need, 0, (size_t)E->n);
  for (int i = i0; i < E->n && n_red < 64; i++) {
    const KInst *in = inst(E, i);
    if (in->kind != KI_REDUCE || E->fixed[i]) continue;
    memset(tmp, 0, (size_t)E->n);
    if (!E->fixed[in->a]) tmp[in->a] = true;
    bool ok = true;
    for (int o = i - 1; o >= 0 && ok; o--) { /* cone_close with a check */
      if (!tmp[o]) continue;
      const KInst *oi = inst(E, o);
      if (oi->kind == KI_REDUCE) ok = false;
      for (int s = 0; s < kinst_n_operands(oi->kind); s++)
        if (!E->fixed[kinst_operand(oi, s)]) tmp[kinst_operand(oi, s)] = true;
    }
    if (!ok) {
      BC_ASSERT(i != i0); /* i0's inputs are ready by instruction order */
      continue;
    }
    for (int o = 0; o < E->n; o++) need[o] |= tmp[o];
    red[n_red++] = i;
  }
  for (int o = 0; o < E->n; o++) /* operands first: instruction order */
    if (need[o] && at_row(E, o)) {
      if (!emit_row_value(E, o)) return false;
      need[o] = false;
    }
  return emit_row_loops(E, need, red, n_red, NULL, 0);
}

static bool emit_row_kernel(Em *E, LLVMValueRef begin, LLVMValueRef end) {
  LLVMBuilderRef b = E->B;
  const Kernel *k = E->k;
  const int r = E->rank, n = E->n;
  bool *need = bc_calloc((size_t)n + 1, 1), *tmp = bc_calloc((size_t)n + 1, 1);
  int *st = bc_calloc((size_t)n + 1, sizeof(int)), n_st = 0;
  bool ok = true;
  Loop rows;
  LLVMValueRef item = loop_begin(E, &rows, begin, end, 1, "row");
  LLVMValueRef rem = item;
  for (int d = r - 2; d >= 0; d--) { /* item < items: the outermost index needs no urem */
    LLVMValueRef dim = cl(E, k->domain.dim[d] > 0 ? k->domain.dim[d] : 1, 1);
    E->idx[d] = d == 0 ? rem : LLVMBuildURem(b, rem, dim, "");
    if (d > 0) rem = LLVMBuildUDiv(b, rem, dim, "");
  }
  for (int v = 0; v < k->views.n; v++) {
    LLVMValueRef o = cl(E, k->views.data[v].offset, 1);
    for (int d = 0; d < r - 1; d++)
      o = LLVMBuildAdd(b, o, LLVMBuildMul(b, E->idx[d], cl(E, k->views.data[v].stride[d], 1), ""), "");
    E->pbase[v] = o;
  }
  E->lin0 = LLVMBuildMul(b, item, cl(E, E->L, 1), "lin");
  E->j = cl(E, 0, 1);
  for (int i = 0; i < n && ok; i++) {
    const KInst *in = inst(E, i);
    if (in->kind == KI_REDUCE) {
      if (!E->fixed[i]) ok = emit_phase(E, i, need, tmp);
    } else if (in->kind == KI_STORE) {
      if (at_row(E, in->a) && (view_last_stride(E, in->view) == 0 || E->L <= 1))
        emit_store(E, in->view, opnd(E, in->a, 1), in->dtype, 1);
      else
        st[n_st++] = i; /* with the full values, in the final loop */
    } else if (at_row(E, i) && !E->fixed[i]) {
      ok = emit_row_value(E, i);
    }
  }
  if (ok && n_st > 0) {
    memset(need, 0, (size_t)n);
    for (int s = 0; s < n_st; s++) need[inst(E, st[s])->a] = true;
    cone_close(E, need);
    ok = emit_row_loops(E, need, NULL, 0, st, n_st);
  }
  if (ok) loop_end(E, &rows, NULL);
  free(need);
  free(tmp);
  free(st);
  return ok;
}

/* ---- column kernels ---------------------------------------------------------- */

typedef struct {
  bool *post, *need_pre, *need_post;
  int *red, n_red;
  LLVMValueRef *base; /* per view, at col index 0 */
  LLVMValueRef linb;
} ColPlan;

/* Output chunks of w lanes over [jlo, jhi): for each, a loop over col_axis
 * accumulates every reduction in registers, then the post-reduction values
 * are computed and stored at col index 0. */
static bool emit_col_chunks(Em *E, ColPlan *cp, int w, int64_t jlo, int64_t jhi) {
  LLVMBuilderRef b = E->B;
  const Kernel *k = E->k;
  const int c = k->col_axis;
  Loop lj, lk;
  E->j = loop_begin(E, &lj, cl(E, jlo, 1), cl(E, jhi, 1), w, w > 1 ? "jv" : "j");
  LLVMValueRef kk = loop_begin(E, &lk, cl(E, 0, 1), cl(E, k->domain.dim[c], 1), 1, "k");
  LLVMValueRef phi[64], next[64];
  for (int r = 0; r < cp->n_red; r++) phi[r] = loop_phi(E, &lk, reduce_init(E, inst(E, cp->red[r]), w));
  E->idx[c] = kk;
  for (int v = 0; v < k->views.n; v++)
    E->pbase[v] = LLVMBuildAdd(b, cp->base[v], LLVMBuildMul(b, kk, cl(E, k->views.data[v].stride[c], 1), ""), "");
  int64_t rm_c = 1;
  for (int d = c + 1; d < E->rank; d++) rm_c *= k->domain.dim[d];
  E->lin0 = LLVMBuildAdd(b, cp->linb, LLVMBuildMul(b, kk, cl(E, rm_c, 1), ""), "");
  if (!emit_body(E, cp->need_pre, w)) return false;
  for (int i = 0; i < E->n; i++) {
    const KInst *in = inst(E, i);
    if (in->kind == KI_STORE && !cp->post[i]) emit_store(E, in->view, opnd(E, in->a, w), in->dtype, w);
  }
  for (int r = 0; r < cp->n_red; r++) next[r] = reduce_step(E, inst(E, cp->red[r]), phi[r], opnd(E, inst(E, cp->red[r])->a, w));
  loop_end(E, &lk, next);
  E->idx[c] = cl(E, 0, 1);
  for (int v = 0; v < k->views.n; v++) E->pbase[v] = cp->base[v];
  E->lin0 = cp->linb;
  for (int r = 0; r < cp->n_red; r++) {
    E->fixed[cp->red[r]] = phi[r];
    E->fixed_w[cp->red[r]] = w;
  }
  if (!emit_body(E, cp->need_post, w)) return false;
  for (int i = 0; i < E->n; i++) {
    const KInst *in = inst(E, i);
    if (in->kind == KI_STORE && cp->post[i]) emit_store(E, in->view, opnd(E, in->a, w), in->dtype, w);
  }
  for (int r = 0; r < cp->n_red; r++) E->fixed[cp->red[r]] = NULL;
  loop_end(E, &lj, NULL);
  return true;
}

static bool emit_col_kernel(Em *E, LLVMValueRef begin, LLVMValueRef end) {
  LLVMBuilderRef b = E->B;
  const Kernel *k = E->k;
  const int r = E->rank, n = E->n, c = k->col_axis;
  ColPlan cp = {0};
  cp.post = bc_calloc((size_t)n + 1, 1);
  cp.need_pre = bc_calloc((size_t)n + 1, 1);
  cp.need_post = bc_calloc((size_t)n + 1, 1);
  cp.red = bc_calloc((size_t)n + 1, sizeof(int));
  cp.base = bc_calloc((size_t)k->views.n + 1, sizeof(LLVMValueRef));
  bool ok = true;
  for (int i = 0; i < n; i++) { /* as kernel_eval.c's mark_post */
    const KInst *in = inst(E, i);
    cp.post[i] = in->kind == KI_REDUCE;
    for (int s = 0; s < kinst_n_operands(in->kind); s++) cp.post[i] |= cp.post[kinst_operand(in, s)];
    if (in->kind == KI_REDUCE) {
      BC_ASSERT(cp.n_red < 64);
      cp.red[cp.n_red++] = i;
      cp.need_pre[in->a] = true;
    } else if (in->kind == KI_STORE) {
      (cp.post[i] ? cp.need_post : cp.need_pre)[in->a] = true;
    }
  }
  cone_close(E, cp.need_pre);
  /* the post cone stops at the reductions (fixed while it is emitted) */
  for (int i = n - 1; i >= 0; i--) {
    if (!cp.need_post[i]) continue;
    const KInst *in = inst(E, i);
    if (in->kind == KI_REDUCE) {
      cp.need_post[i] = false;
      continue;
    }
    for (int s = 0; s < kinst_n_operands(in->kind); s++) cp.need_post[kinst_operand(in, s)] = true;
  }
  Loop items;
  LLVMValueRef item = loop_begin(E, &items, begin, end, 1, "item");
  LLVMValueRef rem = item;
  int64_t rm[BC_MAX_RANK], acc = 1;
  for (int d = r - 1; d >= 0; d--) {
    rm[d] = acc;
    acc *= k->domain.dim[d];
  }
  cp.linb = cl(E, 0, 1);
  int outer = c == 0 ? 1 : 0; /* the outermost axis of the items */
  for (int d = r - 2; d >= 0; d--) {
    if (d == c) continue;
    LLVMValueRef dim = cl(E, k->domain.dim[d] > 0 ? k->domain.dim[d] : 1, 1);
    E->idx[d] = d == outer ? rem : LLVMBuildURem(b, rem, dim, "");
    if (d != outer) rem = LLVMBuildUDiv(b, rem, dim, "");
    cp.linb = LLVMBuildAdd(b, cp.linb, LLVMBuildMul(b, E->idx[d], cl(E, rm[d], 1), ""), "");
  }
  for (int v = 0; v < k->views.n; v++) {
    LLVMValueRef o = cl(E, k->views.data[v].offset, 1);
    for (int d = 0; d < r - 1; d++)
      if (d != c) o = LLVMBuildAdd(b, o, LLVMBuildMul(b, E->idx[d], cl(E, k->views.data[v].stride[d], 1), ""), "");
    cp.base[v] = o;
  }
  /* chunks of 4W lanes (four registers per operand), then W, then 1 */
  const int64_t L = E->L;
  int w4 = E->W * 4 <= MAX_W ? E->W * 4 : E->W;
  int64_t j1 = E->W > 1 ? L / w4 * w4 : 0;
  int64_t j2 = E->W > 1 ? j1 + (L - j1) / E->W * E->W : 0;
  if (ok && j1 > 0) ok = emit_col_chunks(E, &cp, w4, 0, j1);
  if (ok && j2 > j1) ok = emit_col_chunks(E, &cp, E->W, j1, j2);
  if (ok && L > j2) ok = emit_col_chunks(E, &cp, 1, j2, L);
  if (ok) loop_end(E, &items, NULL);
  free(cp.post);
  free(cp.need_pre);
  free(cp.need_post);
  free(cp.red);
  free(cp.base);
  return ok;
}

/* ---- functions and modules ------------------------------------------------------- */

static void em_init(Em *E, LLVMContextRef C, LLVMModuleRef M, const Host *h, int W, Diag *d) {
  memset(E, 0, sizeof *E);
  E->C = C;
  E->M = M;
  E->B = LLVMCreateBuilderInContext(C);
  E->f32 = LLVMFloatTypeInContext(C);
  E->i32 = LLVMInt32TypeInContext(C);
  E->i64 = LLVMInt64TypeInContext(C);
  E->i1 = LLVMInt1TypeInContext(C);
  E->i8p = LLVMPointerType(LLVMInt8TypeInContext(C), 0);
  E->info_ty = LLVMGetTypeByName2(C, "KernelRunInfo");
  if (!E->info_ty) { /* { u64 seed; u32 step; i64 example_offset }, C layout */
    E->info_ty = LLVMStructCreateNamed(C, "KernelRunInfo");
    LLVMTypeRef f[3] = {E->i64, E->i32, E->i64};
    LLVMStructSetBody(E->info_ty, f, 3, 0);
  }
  E->host = h;
  E->W = W;
  E->d = d;
}

static void em_free(Em *E) { LLVMDisposeBuilder(E->B); }

static void add_fn_attr(Em *E, const char *key, const char *val) {
  LLVMAttributeRef a = LLVMCreateStringAttribute(E->C, key, (unsigned)strlen(key), val, (unsigned)strlen(val));
  LLVMAddAttributeAtIndex(E->fn, LLVMAttributeFunctionIndex, a);
}

/* Emits kernel k as function `fname` in E's module. */
static bool emit_kernel(Em *E, const Kernel *k, const char *fname) {
  LLVMBuilderRef b = E->B;
  E->k = k;
  E->rank = k->domain.rank;
  E->n = k->insts.n;
  E->L = E->rank ? k->domain.dim[E->rank - 1] : 1;
  LLVMTypeRef params[4] = {LLVMPointerType(E->i8p, 0), E->i64, E->i64, LLVMPointerType(E->info_ty, 0)};
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(E->C), params, 4, 0);
  E->fn = LLVMAddFunction(E->M, fname, fty);
  static const char *pname[4] = {"bufs", "begin", "end", "info"};
  for (int i = 0; i < 4; i++) LLVMSetValueName2(LLVMGetParam(E->fn, (unsigned)i), pname[i], strlen(pname[i]));
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(E->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(E->C, nounwind, 0));
  add_fn_attr(E, "target-cpu", E->host->cpu);
  add_fn_attr(E, "target-features", E->host->features);
  if (E->W * 32 >= 512 && strstr(E->host->features, "+avx512f")) {
    /* without these, x86 splits 512-bit vectors into two 256-bit halves */
    add_fn_attr(E, "prefer-vector-width", "512");
    add_fn_attr(E, "min-legal-vector-width", "512");
  }
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(E->C, E->fn, "entry"));

  const int nv = k->views.n, n = E->n;
  E->vptr = bc_calloc((size_t)nv + 1, sizeof(LLVMValueRef));
  E->vtype = bc_calloc((size_t)nv + 1, sizeof(DType));
  E->pbase = bc_calloc((size_t)nv + 1, sizeof(LLVMValueRef));
  E->fixed = bc_calloc((size_t)n + 1, sizeof(LLVMValueRef));
  E->fixed_w = bc_calloc((size_t)n + 1, sizeof(int));
  E->cur = bc_calloc((size_t)n + 1, sizeof(LLVMValueRef));
  E->rowbuf = bc_calloc((size_t)n + 1, sizeof(LLVMValueRef));
  E->rowbuf_full = bc_calloc((size_t)n + 1, sizeof(bool));
  bool has_random = false;
  for (int i = 0; i < n; i++) {
    const KInst *in = inst(E, i);
    if (in->kind == KI_LOAD || in->kind == KI_STORE) E->vtype[in->view] = in->dtype;
    if (in->kind == KI_RANDOM) has_random = true;
  }
  LLVMValueRef bufs = LLVMGetParam(E->fn, 0);
  for (int v = 0; v < nv; v++) {
    LLVMValueRef iv = LLVMConstInt(E->i64, (unsigned long long)v, 0);
    LLVMValueRef p = LLVMBuildLoad2(b, E->i8p, LLVMBuildGEP2(b, E->i8p, bufs, &iv, 1, ""), "buf");
    E->vptr[v] = LLVMBuildBitCast(b, p, LLVMPointerType(ty(E, E->vtype[v], 1), 0), "");
  }
  if (has_random) {
    LLVMValueRef info = LLVMGetParam(E->fn, 3);
    LLVMValueRef seed = LLVMBuildLoad2(b, E->i64, LLVMBuildStructGEP2(b, E->info_ty, info, 0, ""), "seed");
    E->round_key[0][0] = LLVMBuildTrunc(b, seed, E->i32, "");
    E->round_key[0][1] = LLVMBuildTrunc(b, LLVMBuildLShr(b, seed, cl(E, 32, 1), ""), E->i32, "");
    for (int r = 1; r < 10; r++) { /* Random123 bumps the key between rounds */
      E->round_key[r][0] = LLVMBuildAdd(b, E->round_key[r - 1][0], LLVMConstInt(E->i32, 0x9E3779B9u, 0), "");
      E->round_key[r][1] = LLVMBuildAdd(b, E->round_key[r - 1][1], LLVMConstInt(E->i32, 0xBB67AE85u, 0), "");
    }
    E->step = LLVMBuildLoad2(b, E->i32, LLVMBuildStructGEP2(b, E->info_ty, info, 1, ""), "step");
    LLVMValueRef ex = LLVMBuildLoad2(b, E->i64, LLVMBuildStructGEP2(b, E->info_ty, info, 2, ""), "example_offset");
    int64_t per = (E->rank && k->domain.dim[0] > 0) ? shape_numel(&k->domain) / k->domain.dim[0] : 0;
    E->ex_base = LLVMBuildMul(b, ex, cl(E, per, 1), "ex_base");
  }
  if (k->col_axis < 0 && E->L > 1 && E->L <= ROWBUF_MAX) /* static allocas: in the entry block */
    for (int i = 0; i < n; i++)
      if (inst(E, i)->kind == KI_RANDOM) {
        E->rowbuf[i] = LLVMBuildAlloca(b, LLVMArrayType(E->f32, (unsigned)E->L), "random_row");
        LLVMSetAlignment(E->rowbuf[i], 64);
        E->rowbuf[i] = LLVMBuildBitCast(b, E->rowbuf[i], LLVMPointerType(E->f32, 0), "");
      }
  LLVMValueRef begin = LLVMGetParam(E->fn, 1), end = LLVMGetParam(E->fn, 2);
  bool ok = k->col_axis >= 0 ? emit_col_kernel(E, begin, end) : emit_row_kernel(E, begin, end);
  if (ok) LLVMBuildRetVoid(b);
  free(E->vptr);
  free(E->vtype);
  free(E->pbase);
  free(E->fixed);
  free(E->fixed_w);
  free(E->cur);
  free(E->rowbuf);
  free(E->rowbuf_full);
  E->vptr = E->pbase = E->fixed = E->cur = E->rowbuf = NULL;
  E->rowbuf_full = NULL;
  E->vtype = NULL;
  E->fixed_w = NULL;
  return ok;
}

static LLVMModuleRef module_new(LLVMContextRef C, const Host *h, const char *name) {
  LLVMModuleRef M = LLVMModuleCreateWithNameInContext(name, C);
  LLVMSetTarget(M, h->triple);
  LLVMSetDataLayout(M, h->layout);
  return M;
}

/* Verifies and optimizes M in place. Loop vectorization is off: the code is
 * vectorized already and the scalar remainders are short; SLP stays on. */
static bool module_optimize(LLVMModuleRef M, const Host *h, Diag *d) {
  char *msg = NULL;
  if (LLVMVerifyModule(M, LLVMReturnStatusAction, &msg)) {
    diag_error(d, SRCLOC_NONE, "llvm_emit.c: LLVMVerifyModule failed (a bug in the emitter): %s", msg);
    LLVMDisposeMessage(msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 0);
  LLVMErrorRef err = LLVMRunPasses(M, "default<O3>", h->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err) {
    llvm_error(d, "LLVMRunPasses(default<O3>)", err);
    return false;
  }
  return true;
}

/* ---- the JIT ------------------------------------------------------------------- */

struct LlvmJit {
  Host host;
  int width;
  LLVMOrcThreadSafeContextRef tsctx;
  LLVMOrcLLJITRef jit;
  VEC(char *) names; /* function names defined in this JIT */
  int n_modules;
  char desc[160];
};

bool llvm_jit_available(void) { return true; }

LlvmJit *llvm_jit_create(Diag *d) {
  LlvmJit *j = bc_calloc(1, sizeof *j);
  if (!host_init(&j->host, d)) {
    free(j);
    return NULL;
  }
  j->width = j->host.width;
  /* A null builder: LLJIT detects the host (CPU and features) itself. */
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&j->jit, NULL);
  if (err) {
    llvm_error(d, "LLVMOrcCreateLLJIT", err);
    host_free(&j->host);
    free(j);
    return NULL;
  }
  /* Process symbols, in case LLVM lowers something to a libc/libm call. */
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (err) {
    llvm_error(d, "LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess", err);
    llvm_jit_free(j);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  j->tsctx = LLVMOrcCreateNewThreadSafeContext();
  llvm_jit_set_vector_width(j, j->width);
  return j;
}

void llvm_jit_free(LlvmJit *j) {
  if (!j) return;
  if (j->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
    if (err) LLVMConsumeError(err);
  }
  if (j->tsctx) LLVMOrcDisposeThreadSafeContext(j->tsctx);
  for (int i = 0; i < j->names.n; i++) free(j->names.data[i]);
  vec_free(&j->names);
  host_free(&j->host);
  free(j);
}

int llvm_jit_vector_width(const LlvmJit *j) { return j->width; }

void llvm_jit_set_vector_width(LlvmJit *j, int w) {
  BC_ASSERT(w >= 2 && w <= MAX_W / 4 * 4 && (w & (w - 1)) == 0);
  j->width = w;
  snprintf(j->desc, sizeof j->desc, "cpu=%s W=%d", j->host.cpu, w);
}

const char *llvm_jit_describe(const LlvmJit *j) { return j->desc; }

static bool name_taken(const LlvmJit *j, char **fresh, int n_fresh, const char *s) {
  for (int i = 0; i < j->names.n; i++)
    if (!strcmp(j->names.data[i], s)) return true;
  for (int i = 0; i < n_fresh; i++)
    if (fresh[i] && !strcmp(fresh[i], s)) return true;
  return false;
}

bool llvm_jit_compile(LlvmJit *j, const Kernel *const *kernels, int n, KernelFn *fns_out, Diag *d) {
  LLVMContextRef C = LLVMOrcThreadSafeContextGetContext(j->tsctx);
  char mname[32];
  snprintf(mname, sizeof mname, "bertc_kernels_%d", j->n_modules++);
  LLVMModuleRef M = module_new(C, &j->host, mname);
  char **names = bc_calloc((size_t)n + 1, sizeof(char *));
  LLVMOrcResourceTrackerRef rt = NULL;
  bool ok = true;
  Em E;
  em_init(&E, C, M, &j->host, j->width, d);
  for (int i = 0; i < n && ok; i++) {
    const Kernel *k = kernels[i];
    fns_out[i] = NULL;
    if (k->kind != KERNEL_LOOP) continue;
    if (!kernel_eval_supported(k, d)) {
      ok = false;
      break;
    }
    const char *base = k->name ? k->name : "kernel";
    names[i] = bc_strdup(base);
    for (int s = 2; name_taken(j, names, i, names[i]); s++) {
      free(names[i]);
      names[i] = bc_asprintf("%s.%d", base, s);
    }
    ok = emit_kernel(&E, k, names[i]);
  }
  em_free(&E);
  if (ok) ok = module_optimize(M, &j->host, d);
  if (!ok) {
    LLVMDisposeModule(M);
    goto done;
  }
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  rt = LLVMOrcJITDylibCreateResourceTracker(jd);
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(M, j->tsctx); /* owns M */
  LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModuleWithRT(j->jit, rt, tsm);           /* owns tsm */
  if (err) {
    llvm_error(d, "LLVMOrcLLJITAddLLVMIRModule", err);
    ok = false;
    goto done;
  }
  for (int i = 0; i < n && ok; i++) {
    if (!names[i]) continue;
    LLVMOrcExecutorAddress addr = 0;
    err = LLVMOrcLLJITLookup(j->jit, &addr, names[i]);
    if (err) {
      llvm_error(d, "LLVMOrcLLJITLookup", err);
      ok = false;
      break;
    }
    fns_out[i] = (KernelFn)(uintptr_t)addr;
  }
done:
  if (rt) {
    if (!ok) {
      LLVMErrorRef e2 = LLVMOrcResourceTrackerRemove(rt);
      if (e2) LLVMConsumeError(e2);
    }
    LLVMOrcReleaseResourceTracker(rt); /* on success the code stays in the JITDylib */
  }
  for (int i = 0; i < n; i++) {
    if (ok && names[i]) vec_push(&j->names, names[i]);
    else free(names[i]);
  }
  free(names);
  return ok;
}

char *llvm_emit_ir_text(const Kernel *k, Diag *d) {
  Host h;
  if (!host_init(&h, d)) return NULL;
  if (k->kind != KERNEL_LOOP || !kernel_eval_supported(k, d)) {
    if (k->kind != KERNEL_LOOP)
      diag_error(d, SRCLOC_NONE, "llvm_emit.c: kernel %s is not a LOOP kernel", k->name ? k->name : "(unnamed)");
    host_free(&h);
    return NULL;
  }
  LLVMContextRef C = LLVMContextCreate();
  LLVMModuleRef M = module_new(C, &h, k->name ? k->name : "kernel");
  Em E;
  em_init(&E, C, M, &h, h.width, d);
  bool ok = emit_kernel(&E, k, k->name ? k->name : "kernel");
  em_free(&E);
  char *out = NULL;
  if (ok && module_optimize(M, &h, d)) {
    char dom[96];
    char *ir = LLVMPrintModuleToString(M);
    out = bc_asprintf("; bertc kernel %s: domain %s, col_axis %d, %d instructions, W=%d (cpu %s)\n%s",
                      k->name ? k->name : "kernel", shape_str(&k->domain, dom), k->col_axis, k->insts.n, h.width,
                      h.cpu, ir);
    LLVMDisposeMessage(ir);
  }
  LLVMDisposeModule(M);
  LLVMContextDispose(C);
  host_free(&h);
  return out;
}
