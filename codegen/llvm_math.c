/* llvm_math.c — the vector math of the LLVM CPU code generator: exp, log,
 * tanh, erf and pow as inline polynomials, the f32 -> i32 conversion, and
 * Philox4x32-10 inline, each built at width w into the emitter's module.
 * Not here: which values a kernel computes (llvm_emit.c), the JIT
 * (llvm_jit.c). Invariant: no libm calls in emitted code (LLVM 14
 * scalarizes llvm.exp into them); results are checked against double libm
 * and runtime/philox.c by tests/test_llvm_emit.c. */
#include "llvm_internal.h"

#include <math.h>

/* ---- polynomials ---------------------------------------------------------- */

/* a * b + c, fused when the target has FMA (llvm.fmuladd), for polynomials. */
static LLVMValueRef fmuladd(Em *E, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[3] = {a, b, c};
  return call_intrinsic(E, "llvm.fmuladd", &t, 1, args, 3);
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

/* Lanes [at, at + n) of a, or (n = 0) the concatenation of a and b. */
static LLVMValueRef lanes(Em *E, LLVMValueRef a, LLVMValueRef b, int at, int n) {
  int total = n ? n : 2 * (int)LLVMGetVectorSize(LLVMTypeOf(a));
  LLVMValueRef el[MAX_W];
  for (int i = 0; i < total; i++) el[i] = LLVMConstInt(E->i32, (unsigned long long)(at + i), 0);
  return LLVMBuildShuffleVector(E->B, a, b ? b : LLVMGetUndef(LLVMTypeOf(a)), LLVMConstVector(el, (unsigned)total), "");
}

/* y 2^floor(n) for f32 vectors of w lanes, w a multiple of 16, by AVX-512's
 * vscalefps on each 16 lanes: rounded once, to a denormal or 0 below the
 * normal range and to +inf above it. */
static LLVMValueRef scalef16(Em *E, LLVMValueRef y, LLVMValueRef n, int w) {
  LLVMValueRef part[MAX_W / 16];
  for (int p = 0; p < w / 16; p++) {
    LLVMValueRef args[5] = {w == 16 ? y : lanes(E, y, NULL, 16 * p, 16), w == 16 ? n : lanes(E, n, NULL, 16 * p, 16),
                            LLVMGetUndef(ty(E, DTYPE_F32, 16)), /* where the mask is 0: none is */
                            LLVMConstInt(LLVMInt16TypeInContext(E->C), 0xffff, 0),
                            LLVMConstInt(E->i32, 4, 0) /* _MM_FROUND_CUR_DIRECTION */};
    part[p] = call_intrinsic(E, "llvm.x86.avx512.mask.scalef.ps.512", NULL, 0, args, 5);
  }
  for (int len = 16; len < w; len *= 2)
    for (int p = 0; p < w / (2 * len); p++) part[p] = lanes(E, part[2 * p], part[2 * p + 1], 0, 0);
  return part[0];
}

/* ---- math: exp, log, tanh, erf as inline polynomials ----------------------
 *
 * Cephes' single-precision algorithms (S. Moshier), evaluated with fmuladd.
 * Measured against double libm by tests/test_llvm_math.c (math_* cases) on
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
 * +inf (on AVX-512, vectors of 16 lanes and more apply it by vscalefps,
 * which rounds once too, in one instruction where the two powers take
 * nine). x is clamped to [-104, 89] first (exp(-104) rounds to 0, exp(89)
 * overflows), which also keeps n's exponent arithmetic in range. NaN gives
 * NaN (the clamps map NaN to -104 so n stays defined; the last select puts
 * the NaN back). */
LLVMValueRef llvm_emit_exp(Em *E, LLVMValueRef x, int w) {
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
  if (w % 16 == 0 && strstr(E->host->features, "+avx512f"))
    return fsel(E, LLVMRealUNO, x, x, x, scalef16(E, y, fn, w));
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
LLVMValueRef llvm_emit_log(Em *E, LLVMValueRef x, int w) {
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
LLVMValueRef llvm_emit_tanh(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef a = intr1(E, "llvm.fabs", x);
  LLVMValueRef s = llvm_emit_exp(E, LLVMBuildFAdd(b, a, a, ""), w);
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
LLVMValueRef llvm_emit_erf(Em *E, LLVMValueRef x, int w) {
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
LLVMValueRef llvm_emit_pow(Em *E, LLVMValueRef a, LLVMValueRef y, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef r = llvm_emit_exp(E, LLVMBuildFMul(b, y, llvm_emit_log(E, intr1(E, "llvm.fabs", a), w), ""), w);
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
LLVMValueRef llvm_emit_f2i(Em *E, LLVMValueRef x, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef ok = LLVMBuildFCmp(b, LLVMRealOLT, intr1(E, "llvm.fabs", x), cf(E, 9223372036854775808.0, w), "");
  LLVMValueRef x0 = LLVMBuildSelect(b, ok, x, cf(E, 0.0, w), "");
  LLVMTypeRef i64t = w == 1 ? E->i64 : LLVMVectorType(E->i64, (unsigned)w);
  return LLVMBuildTrunc(b, LLVMBuildFPToSI(b, x0, i64t, ""), ty(E, DTYPE_I32, w), "");
}

/* ---- Philox4x32-10, inline (runtime/philox.h's layout) --------------------
 *
 * Stream index i is word i % 4 of counter i / 4, so W lanes take W / 4
 * counters (llvm_emit_uniforms), where one counter per lane took four
 * times the work (nli at batch 64: the loop kernels took 10.6 ms a step
 * that way, 8.4 with four uniforms per counter).
 *
 * The four 32-bit words of the state live in the low halves of i64 lanes
 * (<n x i64>: one 256-bit register per word for W = 16); the high halves hold
 * garbage that nothing reads. Each 32x32->64-bit multiply is then
 * `mul (and x, 0xffffffff), M`, which x86 selects as one vpmuludq (it reads
 * only the low halves, so the `and` folds into it), and a product's low word
 * is the product itself. Per register, a round is two vpmuludq, two 32-bit
 * lane shuffles that bring the high words down (vpshufd runs on the shuffle
 * port; vpsrlq would queue behind the multiplies on port 0, ~6% slower) and
 * two three-way xors (vpternlog). The first version kept the words in i32
 * lanes with a zext to i64 around each multiply, and LLVM packed and
 * unpacked every round: 2.4 ns per element against 1.2 at W = 16
 * (tests/test_llvm_math.c, bench).
 *
 * Loop-invariant parts: round 1's product of the op key is folded here; the
 * key schedule and the splats of the step and key words depend only on the
 * function's arguments, and LLVM hoists them out of the loops. Round 10
 * writes the four words into i32 lanes. */

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

/* The four output words (i32, or <nc x i32> lanes) of Philox for the nc
 * counters c0 + k, k in [0, nc) (c0: i64 scalar): counter (c lo, c hi,
 * key, step), key (seed lo, seed hi). Bit-identical with runtime/philox.c:
 * in each round
 *   n0 = hi(M1 c2) ^ c1 ^ k0, n1 = lo(M1 c2), n2 = hi(M0 c0) ^ c3 ^ k1, n3 = lo(M0 c0). */
static void philox_words4(Em *E, LLVMValueRef c0_base, uint32_t key, int nc, LLVMValueRef out[4]) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef(*rk)[2] = E->round_key;
  LLVMValueRef gi = c0_base;
  if (nc > 1) {
    LLVMValueRef el[MAX_W];
    for (int k = 0; k < nc; k++) el[k] = LLVMConstInt(E->i64, (unsigned long long)k, 0);
    gi = LLVMBuildAdd(b, splat(E, c0_base, nc), LLVMConstVector(el, (unsigned)nc), "ctr");
  }
  /* round 1: c0 = gi's low half as it is, c1 = gi >> 32, c2 = key (so M1 c2
   * is a constant), c3 = step */
  uint64_t pk = (uint64_t)PHILOX_M1 * key;
  LLVMValueRef p0 = philox_mul(E, gi, PHILOX_M0, nc);
  LLVMValueRef c0 = LLVMBuildXor(
      b, LLVMBuildLShr(b, gi, cl(E, 32, nc), ""),
      philox_wide(E, LLVMBuildXor(b, rk[0][0], LLVMConstInt(E->i32, pk >> 32, 0), ""), nc), "");
  LLVMValueRef c1 = cl(E, (int64_t)(uint32_t)pk, nc);
  LLVMValueRef c2 =
      LLVMBuildXor(b, philox_hi(E, p0, nc), philox_wide(E, LLVMBuildXor(b, E->step, rk[0][1], ""), nc), "");
  LLVMValueRef c3 = p0;
  for (int r = 1; r < 9; r++) {
    LLVMValueRef p1 = philox_mul(E, c2, PHILOX_M1, nc);
    p0 = philox_mul(E, c0, PHILOX_M0, nc);
    c0 = LLVMBuildXor(b, LLVMBuildXor(b, philox_hi(E, p1, nc), c1, ""), philox_wide(E, rk[r][0], nc), "");
    c2 = LLVMBuildXor(b, LLVMBuildXor(b, philox_hi(E, p0, nc), c3, ""), philox_wide(E, rk[r][1], nc), "");
    c1 = p1;
    c3 = p0;
  }
  /* round 10, into i32 lanes */
  LLVMValueRef p1 = philox_mul(E, c2, PHILOX_M1, nc);
  p0 = philox_mul(E, c0, PHILOX_M0, nc);
  out[0] = LLVMBuildXor(b, LLVMBuildXor(b, philox_words(E, p1, nc, true), philox_words(E, c1, nc, false), ""),
                        splat(E, rk[9][0], nc), "");
  out[1] = philox_words(E, p1, nc, false);
  out[2] = LLVMBuildXor(b, LLVMBuildXor(b, philox_words(E, p0, nc, true), philox_words(E, c3, nc, false), ""),
                        splat(E, rk[9][1], nc), "");
  out[3] = philox_words(E, p0, nc, false);
}

/* The w lanes l of the words of philox_words4 (nc counters from base / 4)
 * for stream indices base + l, off = base % 4 (an i32 constant or value):
 * lane l is word (off + l) % 4 of counter (off + l) / 4. */
static LLVMValueRef pick_words(Em *E, LLVMValueRef words[4], int nc, int w, LLVMValueRef off) {
  LLVMBuilderRef b = E->B;
  if (nc == 1 && w == 1) {
    LLVMValueRef v = LLVMGetUndef(LLVMVectorType(E->i32, 4));
    for (int x = 0; x < 4; x++) v = LLVMBuildInsertElement(b, v, words[x], LLVMConstInt(E->i32, (unsigned)x, 0), "");
    return LLVMBuildExtractElement(b, v, off, "word");
  }
  LLVMValueRef cat;
  if (nc == 1) { /* w = 4, aligned: the words in order */
    cat = LLVMGetUndef(LLVMVectorType(E->i32, 4));
    for (int x = 0; x < 4; x++)
      cat = LLVMBuildInsertElement(b, cat, words[x], LLVMConstInt(E->i32, (unsigned)x, 0), "");
  } else { /* [word 0 | word 1 | word 2 | word 3], nc lanes each */
    LLVMValueRef m[4 * MAX_W];
    for (int i = 0; i < 4 * nc; i++) m[i] = LLVMConstInt(E->i32, (unsigned)i, 0);
    LLVMValueRef lo = LLVMBuildShuffleVector(b, words[0], words[1], LLVMConstVector(m, (unsigned)(2 * nc)), "");
    LLVMValueRef hi = LLVMBuildShuffleVector(b, words[2], words[3], LLVMConstVector(m, (unsigned)(2 * nc)), "");
    cat = LLVMBuildShuffleVector(b, lo, hi, LLVMConstVector(m, (unsigned)(4 * nc)), "words");
  }
  LLVMValueRef res = NULL;
  for (int o = 3; o >= 0; o--) {
    if (LLVMIsConstant(off) && (int)LLVMConstIntGetZExtValue(off) != o) continue;
    LLVMValueRef m[MAX_W];
    for (int l = 0; l < w; l++) {
      int at = o + l;
      m[l] = LLVMConstInt(E->i32, (unsigned)((at & 3) * nc + (at >> 2)), 0);
    }
    LLVMValueRef v = LLVMBuildShuffleVector(b, cat, LLVMGetUndef(LLVMTypeOf(cat)), LLVMConstVector(m, (unsigned)w),
                                            "");
    res = !res || LLVMIsConstant(off)
              ? v
              : LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, off, LLVMConstInt(E->i32, (unsigned)o, 0), ""), v,
                                res, "");
  }
  return res;
}

/* The smallest power of two >= n. */
static int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

/* Uniforms in [0, 1) for the stream indices base + l, l in [0, w) (base:
 * i64 scalar): word i % 4 of Philox for counter i / 4, its top 24 bits
 * times 2^-24 (runtime/philox.h). The w lanes need the counters from
 * base / 4 on: w / 4 of them when base is a multiple of 4 (the common
 * case: rows of a multiple of 4 elements), else up to w / 4 + 1, so a
 * vector of w >= 4 lanes branches on base % 4 == 0. At W = 16 the aligned
 * path computes 4 counters (one 256-bit register per word) where one
 * counter per lane took four. */
LLVMValueRef llvm_emit_uniforms(Em *E, LLVMValueRef base, uint32_t key, int w) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef c0 = LLVMBuildLShr(b, base, LLVMConstInt(E->i64, 2, 0), "");
  LLVMValueRef off = LLVMBuildTrunc(b, LLVMBuildAnd(b, base, LLVMConstInt(E->i64, 3, 0), ""), E->i32, "off");
  LLVMValueRef words[4], bits;
  if (w < 4) {
    int nc = pow2_at_least((w + 2) / 4 + 1);
    philox_words4(E, c0, key, nc, words);
    bits = pick_words(E, words, nc, w, off);
  } else {
    LLVMBasicBlockRef aligned = LLVMAppendBasicBlockInContext(E->C, E->fn, "philox_aligned");
    LLVMBasicBlockRef ragged = LLVMAppendBasicBlockInContext(E->C, E->fn, "philox_ragged");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(E->C, E->fn, "philox_done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, off, LLVMConstInt(E->i32, 0, 0), ""), aligned, ragged);
    LLVMPositionBuilderAtEnd(b, aligned);
    philox_words4(E, c0, key, w / 4, words);
    LLVMValueRef in[2] = {pick_words(E, words, w / 4, w, LLVMConstInt(E->i32, 0, 0)), NULL};
    LLVMBasicBlockRef from[2] = {LLVMGetInsertBlock(b), NULL};
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, ragged);
    int nc = pow2_at_least(w / 4 + 1);
    philox_words4(E, c0, key, nc, words);
    in[1] = pick_words(E, words, nc, w, off);
    from[1] = LLVMGetInsertBlock(b);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
    bits = LLVMBuildPhi(b, LLVMTypeOf(in[0]), "bits");
    LLVMAddIncoming(bits, in, from, 2);
  }
  LLVMValueRef top = LLVMBuildLShr(b, bits, ci(E, 8, w), "");
  return LLVMBuildFMul(b, LLVMBuildSIToFP(b, top, ty(E, DTYPE_F32, w), ""), cf(E, 1.0 / 16777216.0, w), "uniform");
}
