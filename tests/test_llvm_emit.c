/* test_llvm_emit.c — the LLVM CPU code generator against the reference
 * evaluator (codegen/kernel_eval.c), on hand-built kernels (tests/
 * llvm_kernels.h): every elementwise op of ops.def over f32 and the integer
 * ones over i32, broadcast / permuted / strided / offset views, softmax,
 * layer norm (two reduction phases) and its backward (two independent sums
 * sharing a pass), a cross-entropy row kernel with iota/eq/select, column
 * reductions, random (bit-identical with runtime/philox.c at every width,
 * also when several loops of a row kernel need it and in column kernels),
 * casts, an in-place update; domain last-axis sizes 1, 3, 16, 17, 128
 * (remainders; random adds 33 and 131), work split over several
 * [begin, end) ranges, at the host's vector width and at W = 8 and 4.
 * Also: the evaluator's Philox against runtime/philox.c, the evaluator
 * against double references, error paths, and the emitted IR text (named
 * after the kernel, no libm calls, rows apart prefetched). And the GEMM
 * micro-kernel (codegen/llvm_gemm.c) against double. The math
 * polynomials and the dropout kernels' IR and timing: test_llvm_math.c. */
#include "test.h"
#include "tests/llvm_kernels.h"

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

/* Loops over the last axis in row kernel k's IR: the induction variables
 * llvm_emit.c's loop_begin names j and jv (after LLVM's passes too, with a
 * number appended). -1 when the IR cannot be made. */
static int loops_over_row(const Kernel *k) {
  char *ir = ir_of(k);
  if (!ir) return -1;
  int n = 0;
  for (const char *p = strstr(ir, " = phi i64 "); p; p = strstr(p + 1, " = phi i64 ")) {
    const char *name = p;
    while (name > ir && name[-1] != '%' && name[-1] != '\n') name--;
    bool j = name > ir && name[-1] == '%' && name[0] == 'j';
    n += j && (name[1] == 'v' || name[1] == ' ' || (name[1] >= '0' && name[1] <= '9'));
  }
  free(ir);
  return n;
}

/* A row kernel whose only stores are of finished reductions (the forward
 * cross-entropy's max, log-sum and picked logit) stores them once per row:
 * its code has one loop over each row (rows long enough that LLVM does
 * not unroll it), no loop of stores after it. */
TEST(row_results_stored_once) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  enum { R = 5, L = 20000 };
  Case c = {0};
  snprintf(c.name, sizeof c.name, "row_results");
  kinit(&c.k, c.name, shape_of(2, R, L), -1);
  addbuf(&c, R * L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
  addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_EXACT, 0, 0);
  /* 20,000 terms of [-3, 3) added in W partial sums, not the evaluator's
   * order: partial sums up to ~500 (ulp 3e-5), rounded 20,000 times */
  addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 5e-3, 1e-6);
  int x = kload(&c.k, kview(&c.k, 0, 0, ST(L, 1)), DTYPE_F32);
  kstore(&c.k, kview(&c.k, 1, 0, ST(1, 0)), kreduce(&c.k, OP_REDUCE_MAX, x));
  kstore(&c.k, kview(&c.k, 2, 0, ST(1, 0)), kreduce(&c.k, OP_REDUCE_SUM, x));
  int loops = loops_over_row(&c.k);
  CHECK_MSG(loops == 1, "%d loops over the row", loops);
  check_case(&c);
}

/* Sums over the row of a one-hot product (cross-entropy's picked logit,
 * its gradient's sum, select(hot, x, 0)) are the product at the label,
 * read once per row: equal to the evaluator's sums, labels outside the row
 * giving 0; and a kernel of such sums has no loop over the row. Labels in
 * [-50, 50] against rows of 40 and of 20,000 (long enough that LLVM would
 * keep a pass over it as a loop). */
TEST(one_hot_sums_picked) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  enum { R = 64 };
  for (int64_t L = 40; L <= 20000; L += 20000 - 40) {
    Case c = {0};
    snprintf(c.name, sizeof c.name, "one_hot_L%lld", (long long)L);
    kinit(&c.k, c.name, shape_of(2, R, (int)L), -1);
    addbuf(&c, R * L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0); /* 0: x */
    addbuf(&c, R, DTYPE_I32, FILL_INT, CMP_NONE, 0, 0);        /* 1: labels */
    addbuf(&c, R, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);     /* 2: a row's gradient */
    for (int o = 0; o < 3; o++) addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 0, 0); /* equal (+-0 alike) */
    Kernel *k = &c.k;
    int x = kload(k, kview(k, 0, 0, ST(L, 1)), DTYPE_F32);
    int lab = kload(k, kview(k, 1, 0, ST(1, 0)), DTYPE_I32);
    int g = kload(k, kview(k, 2, 0, ST(1, 0)), DTYPE_F32);
    int io = kiota(k, 1, DTYPE_I32);
    int hot = kcast(k, kbin(k, OP_EQ, io, lab), DTYPE_F32);
    int x21 = kbin(k, OP_ADD, kbin(k, OP_MUL, x, kconst(k, 2, DTYPE_F32)), kconst(k, 1, DTYPE_F32));
    kstore(k, kview(k, 3, 0, ST(1, 0)), kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, x21, hot)));
    int hot2 = kcast(k, kbin(k, OP_EQ, lab, io), DTYPE_F32);
    kstore(k, kview(k, 4, 0, ST(1, 0)), kreduce(k, OP_REDUCE_SUM, kun(k, OP_NEG, kbin(k, OP_MUL, g, hot2))));
    int sel = ksel(k, kbin(k, OP_EQ, io, lab), x, kconst(k, 0, DTYPE_F32));
    kstore(k, kview(k, 5, 0, ST(1, 0)), kreduce(k, OP_REDUCE_SUM, sel));
    if (L > 40) {
      int loops = loops_over_row(k);
      CHECK_MSG(loops == 0, "%d loops over the row", loops);
    }
    check_case(&c);
  }
}

/* Where another column holds an infinity, the one-hot sum is NaN (0 x inf,
 * as the evaluator computes it) and the pick is the value at the label;
 * llvm_jit_set_picks(false) (BC_NO_PICK) gives the sum's NaN. */
TEST(one_hot_pick_switch) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  enum { L = 64 };
  Kernel k;
  kinit(&k, "k_pick_switch", shape_of(2, 1, L), -1);
  int x = kload(&k, kview(&k, 0, 0, ST(L, 1)), DTYPE_F32);
  int lab = kload(&k, kview(&k, 1, 0, ST(1, 0)), DTYPE_I32);
  int hot = kcast(&k, kbin(&k, OP_EQ, kiota(&k, 1, DTYPE_I32), lab), DTYPE_F32);
  kstore(&k, kview(&k, 2, 0, ST(1, 0)), kreduce(&k, OP_REDUCE_SUM, kbin(&k, OP_MUL, x, hot)));
  float xs[L], out = 0;
  for (int i = 0; i < L; i++) xs[i] = (float)i;
  xs[7] = INFINITY;
  int32_t label = 5;
  void *bufs[3] = {xs, &label, &out};
  for (int picks = 1; picks >= 0; picks--) {
    llvm_jit_set_picks(jits[0], picks);
    Diag d;
    diag_init(&d);
    KernelFn fn = NULL;
    const Kernel *kp = &k;
    CHECK_MSG(llvm_jit_compile(jits[0], &kp, 1, &fn, &d), "%s", diag_first(&d));
    out = -1;
    if (fn) fn(bufs, 0, 1, NULL);
    if (picks) CHECK_MSG(out == 5.0f, "pick: %g", out);
    else CHECK_MSG(isnan(out), "BC_NO_PICK: %g", out);
    diag_free(&d);
  }
  llvm_jit_set_picks(jits[0], true);
  kfree(&k);
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

/* Whether kernel k's IR prefetches (1) or not (0); -1 when the IR cannot
 * be made. */
static int ir_prefetches(const Kernel *k) {
  char *ir = ir_of(k);
  int has = ir ? strstr(ir, "@llvm.prefetch") != NULL : -1;
  free(ir);
  return has;
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
    CHECK_MSG(ir_prefetches(&c.k) == (apart == 1), "%s", c.name);
    check_case(&c);
  }
}

/* A row kernel that reads its rows twice (a max, then the sum of exp(x -
 * max)) prefetches, in the second loop, the next row for the first: when
 * rows are long (4,096 elements here; rows of 1,024 do not). The values
 * match the evaluator either way. */
TEST(reread_rows_prefetch_next_row) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  enum { R = 6 };
  for (int64_t L = 1024; L <= 4096; L *= 4) {
    Case c = {0};
    snprintf(c.name, sizeof c.name, "reread_L%lld", (long long)L);
    kinit(&c.k, c.name, shape_of(2, R, (int)L), -1);
    addbuf(&c, R * L, DTYPE_F32, FILL_SIGNED, CMP_NONE, 0, 0);
    addbuf(&c, R, DTYPE_F32, FILL_OUT, CMP_NEAR, 1e-5, 1e-5);
    int x = kload(&c.k, kview(&c.k, 0, 0, ST(L, 1)), DTYPE_F32);
    int m = kreduce(&c.k, OP_REDUCE_MAX, x);
    int se = kreduce(&c.k, OP_REDUCE_SUM, kun(&c.k, OP_EXP, kbin(&c.k, OP_SUB, x, m)));
    kstore(&c.k, kview(&c.k, 1, 0, ST(1, 0)), kbin(&c.k, OP_ADD, kun(&c.k, OP_LOG, se), m));
    CHECK_MSG(ir_prefetches(&c.k) == (L == 4096), "%s", c.name);
    check_case(&c);
  }
}

/* The GEMM micro-kernel (llvm_jit_gemm_panel) against double: whole
 * blocks of 12 rows and single rows after them, A read as rows or as
 * columns (A^T), C's rows apart wider than the panel, an odd depth. Every
 * element; the columns next to the panel's must stay as they were. */
TEST(gemm_panel_matches_double) {
  if (!have_jits()) return;
  enum { NR = LLVM_GEMM_NR };
  const int64_t Ks[] = {1, 37, 128}, ms[] = {1, 12, 29};
  Diag d;
  diag_init(&d);
  int fails = 0;
  for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
    int64_t K = Ks[ki];
    LlvmGemmPanelFn fn = NULL;
    CHECK_MSG(llvm_jit_gemm_panel(jits[0], K, &fn, &d), "%s", diag_first(&d));
    if (!fn) break;
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
      for (int ta = 0; ta < 2; ta++) {
        int64_t m = ms[mi], ldc = NR + 5;
        float *A = bc_malloc(sizeof(float) * (size_t)(m * K)), *Bp = bc_malloc(sizeof(float) * (size_t)(K * NR));
        float *C = bc_malloc(sizeof(float) * (size_t)(m * ldc));
        for (int64_t i = 0; i < m * K; i++) A[i] = (float)((i * 37 + 11) % 23) / 7.0f - 1.5f;
        for (int64_t i = 0; i < K * NR; i++) Bp[i] = (float)((i * 53 + 5) % 19) / 5.0f - 1.75f;
        for (int64_t i = 0; i < m * ldc; i++) C[i] = -7.0f;
        /* A as [m, K] rows, or stored [K, m] and read transposed */
        fn(A, ta ? 1 : K, ta ? m : 1, Bp, C, ldc, m);
        for (int64_t i = 0; i < m; i++)
          for (int64_t j = 0; j < ldc; j++) {
            double want = -7.0, mag = 0;
            if (j < NR) {
              want = 0;
              for (int64_t k = 0; k < K; k++) {
                double x = (double)A[ta ? k * m + i : i * K + k] * Bp[k * NR + j];
                want += x, mag += fabs(x);
              }
            }
            if (fabs(C[i * ldc + j] - want) > 1e-6 * (mag + 1) && fails++ < 5)
              fprintf(stderr, "  K %lld m %lld ta %d: C[%lld][%lld] = %.8g, want %.8g\n", (long long)K, (long long)m, ta,
                      (long long)i, (long long)j, C[i * ldc + j], want);
          }
        free(A), free(Bp), free(C);
      }
  }
  CHECK_EQ_INT(fails, 0);
  diag_free(&d);
}

int main_tests(int argc, char **argv);
#define main main_tests
TEST_MAIN()
#undef main
LLVM_TEST_MAIN(free_jits)
