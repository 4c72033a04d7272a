/* llvm_emit.c — the LLVM IR of one KERNEL_LOOP kernel (llvm_emit.h): the
 * function, its loops, and the values its instructions compute, built with
 * the LLVM 14 C API into a module that llvm_jit.c optimizes and compiles.
 *
 * Shape of the code for a row kernel (col_axis < 0):
 *
 *   for item in [begin, end):               one row of the domain
 *     row values, in instruction order      scalars, once per row
 *     for each reduction phase:             reductions whose inputs are ready
 *       for j in steps of W: acc = op(acc, <W x value>)   (vector accumulator)
 *       horizontal reduction (shuffle tree), then a scalar remainder loop
 *     (a row sum of a one-hot product: the product at the label, a scalar)
 *     final loop over j (W lanes, then scalar): full values and their stores
 *                                           (row results: stored once per row)
 *
 * Loops after a row's first prefetch the next row when rows are long. A
 * loop body computes only the full instructions its results depend on, so
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
 * exp, log, tanh and erf are the polynomials of llvm_math.c (max errors in
 * its comments); row sums add in another order (W partial sums), and a
 * pick equals its one-hot sum for finite values (BC_NO_PICK); column
 * sums add in the same order and are bit-identical. LLVM 14's C API cannot
 * set fast-math flags, so nothing is reassociated or contracted behind our
 * back.
 *
 * Not here: the math functions and Philox (llvm_math.c), the host, passes
 * and JIT (llvm_jit.c), non-LOOP kernels, threads, caching. Invariant: no
 * libm calls in emitted code (LLVM 14 scalarizes llvm.exp into them). */
#include "llvm_internal.h"

#include "kernel_eval.h"

#include <math.h>
#include <string.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

#define ROWBUF_MAX 4096 /* longest row whose random values are kept on the stack */
#define REREAD_PREFETCH_MIN 2048 /* shortest row (elements) whose re-reads prefetch the next row */

static const KInst *inst(const Em *E, int i) { return &E->k->insts.data[i]; }

static int64_t view_last_stride(const Em *E, int v) {
  return E->rank ? E->k->views.data[v].stride[E->rank - 1] : 0;
}

static void em_error(Em *E, int i, const char *what) {
  diag_error(E->d, SRCLOC_NONE, "llvm_emit.c: kernel %s, instruction %d: %s",
             E->k->name ? E->k->name : "(unnamed)", i, what);
}

/* <base + stride*0, ..., base + stride*(w-1)> in i64 (base: scalar i64). */
static LLVMValueRef lanes64(Em *E, LLVMValueRef base, int64_t stride, int w) {
  if (w == 1) return base;
  LLVMValueRef el[MAX_W];
  for (int i = 0; i < w; i++) el[i] = LLVMConstInt(E->i64, (unsigned long long)(stride * i), 1);
  return LLVMBuildAdd(E->B, splat(E, base, w), LLVMConstVector(el, (unsigned)w), "lanes");
}

/* ---- elementwise ops ---------------------------------------------------------- */

/* The vocabulary of the `llvm` column of graph/ops.def: f32 values of
 * width w (E, w in scope). The row's expression is the whole lowering; a
 * new function (a polynomial) goes with its siblings in llvm_math.c. */
#define L_ADD(x, y) LLVMBuildFAdd(E->B, (x), (y), "")
#define L_SUB(x, y) LLVMBuildFSub(E->B, (x), (y), "")
#define L_MUL(x, y) LLVMBuildFMul(E->B, (x), (y), "")
#define L_DIV(x, y) LLVMBuildFDiv(E->B, (x), (y), "")
#define L_NEG(x) LLVMBuildFNeg(E->B, (x), "")
#define L_C(c) cf(E, (c), w)
#define L_SEL(pred, x, y, t, f) fsel(E, LLVMReal##pred, (x), (y), (t), (f))
#define L_SQRT(x) intr1(E, "llvm.sqrt", (x))
#define L_ABS(x) intr1(E, "llvm.fabs", (x))
#define L_EXP(x) llvm_emit_exp(E, (x), w)
#define L_LOG(x) llvm_emit_log(E, (x), w)
#define L_TANH(x) llvm_emit_tanh(E, (x), w)
#define L_ERF(x) llvm_emit_erf(E, (x), w)
#define L_POW(x, y) llvm_emit_pow(E, (x), (y), w)

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
    return r ? llvm_emit_f2i(E, r, w) : NULL;
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

/* Elements from a point of view v to the same point of the next row (the
 * view's stride along the domain's second-last axis) when rows lie apart
 * in memory: a row shorter than the stride, the stride at least a page.
 * Else 0. A row of a few KiB is too short for the hardware prefetchers
 * to follow into the next row's page: the MLM logits' column blocks
 * (rows of 848 of 20,256) loaded at a third of the rate of whole rows. */
static int64_t next_row_apart(const Em *E, int v) {
  if (E->rank < 2) return 0;
  int64_t sr = E->k->views.data[v].stride[E->rank - 2], n = E->k->domain.dim[E->rank - 1];
  return sr > n && sr * 4 >= 4096 ? sr : 0;
}

/* Elements from a point of view v to the same point of the next row when
 * a loop re-reads a long row (a row kernel's loops after its first: the
 * cross-entropy's exp pass after its max): the first loop over the next
 * row then reads it from cache, not memory, while this loop computes.
 * Else 0. */
static int64_t next_row_reread(const Em *E, int v) {
  if (!E->reread || E->rank < 2 || E->L < REREAD_PREFETCH_MIN) return 0;
  return E->k->views.data[v].stride[E->rank - 2];
}

/* Stride 1: one unaligned vector load (and, for rows apart or re-read, a
 * prefetch of the same point of the next row: one per cache line at W =
 * 16); stride
 * 0: scalar load and splat; otherwise llvm.masked.gather with an all-true
 * mask. */
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
    int64_t next = next_row_apart(E, v);
    if (!next) next = next_row_reread(E, v);
    if (next) {
      LLVMValueRef at = LLVMBuildAdd(b, off, LLVMConstInt(E->i64, (unsigned long long)next, 0), "");
      LLVMValueRef pf = LLVMBuildBitCast(b, LLVMBuildGEP2(b, et, E->vptr[v], &at, 1, ""), E->i8p, "");
      LLVMTypeRef ovl[1] = {E->i8p};
      LLVMValueRef args[4] = {pf, LLVMConstInt(E->i32, 0, 0), LLVMConstInt(E->i32, 3, 0), LLVMConstInt(E->i32, 1, 0)};
      call_intrinsic(E, "llvm.prefetch", ovl, 1, args, 4); /* read, keep in all levels, data */
    }
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

/* f32 -> i32 of a constant, as llvm_emit_f2i does at run time. */
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
    return r ? llvm_emit_f2i(E, r, w) : NULL;
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
    if (in->dtype == DTYPE_I32) return llvm_emit_f2i(E, a, w);
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
    LLVMValueRef u = llvm_emit_uniforms(E, base, in->key, w);
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
  E->reread = true;
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

/* ---- sums of a one-hot product (picks) -------------------------------------- */

/* The row i32 instruction B where full instruction i is zero at every last
 * index but B, for finite operands: eq(iota, B) along the last axis, a
 * cast of it, select(it, x, 0), and products and negations of such a
 * value (cross-entropy's picked logit and its gradient). Else -1. */
static int one_hot_at(const Em *E, int i) {
  const KInst *in = inst(E, i);
  switch (in->kind) {
  case KI_CAST: return one_hot_at(E, in->a);
  case KI_UNARY: return in->op == OP_NEG ? one_hot_at(E, in->a) : -1;
  case KI_SELECT: {
    const KInst *f = inst(E, in->c);
    return f->kind == KI_CONST && f->imm == 0 ? one_hot_at(E, in->a) : -1;
  }
  case KI_BINARY:
    if (in->op == OP_MUL) {
      int at = one_hot_at(E, in->a);
      return at >= 0 ? at : one_hot_at(E, in->b);
    }
    if (in->op != OP_EQ) return -1;
    for (int s = 0; s < 2; s++) {
      const KInst *io = inst(E, s ? in->b : in->a);
      int at = s ? in->a : in->b;
      if (io->kind == KI_IOTA && io->axis == E->rank - 1 && io->dtype == DTYPE_I32 && inst(E, at)->row &&
          inst(E, at)->dtype == DTYPE_I32)
        return at;
    }
    return -1;
  default: return -1;
  }
}

/* For a sum over the last axis of a one-hot product (one_hot_at), whose
 * operands hold no random values: B. Else (or with BC_NO_PICK) -1. need:
 * scratch. */
static int pick_at(Em *E, int i, bool *need) {
  const KInst *in = inst(E, i);
  if (E->no_picks || in->kind != KI_REDUCE || in->op != OP_REDUCE_SUM || in->axis != E->rank - 1 || E->L <= 1)
    return -1;
  int at = one_hot_at(E, in->a);
  if (at < 0) return -1;
  memset(need, 0, (size_t)E->n);
  need[in->a] = true;
  for (int o = in->a; o >= 0; o--) {
    if (!need[o] || E->fixed[o]) continue;
    const KInst *oi = inst(E, o);
    if (oi->kind == KI_RANDOM || oi->kind == KI_REDUCE) return -1;
    for (int s = 0; s < kinst_n_operands(oi->kind); s++) need[kinst_operand(oi, s)] = true;
  }
  return at;
}

/* Reduction i, a sum of a value that is zero but at last index B
 * (pick_at): that value at B, computed once per row instead of a pass over
 * the row; where B is outside the row, the value at index 0, which is then
 * zero too. It is the sum for finite values (the sum adds zeros to it);
 * where another index holds an infinity or a NaN, the sum is NaN and this
 * is not. B and the row values before i are fixed (emit_row_kernel
 * computes them in order). */
static bool emit_pick(Em *E, int i, int at, bool *need) {
  LLVMBuilderRef b = E->B;
  const KInst *in = inst(E, i);
  BC_ASSERT(E->fixed[at] && E->fixed_w[at] == 1);
  LLVMValueRef ix = LLVMBuildSExt(b, E->fixed[at], E->i64, "");
  LLVMValueRef inside = LLVMBuildICmp(b, LLVMIntULT, ix, cl(E, E->L, 1), "inside");
  E->j = LLVMBuildSelect(b, inside, ix, cl(E, 0, 1), "pick_at");
  memset(need, 0, (size_t)E->n);
  need[in->a] = true;
  cone_close(E, need);
  bool ok = emit_body(E, need, 1);
  if (ok) {
    E->fixed[i] = opnd(E, in->a, 1);
    E->fixed_w[i] = 1;
  }
  E->j = cl(E, 0, 1);
  return ok;
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
    if (in->kind != KI_REDUCE || E->fixed[i] || pick_at(E, i, tmp) >= 0) continue; /* a pick: its own turn */
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
  E->reread = false;
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
  if (E->key_plain) {
    E->lin0 = LLVMBuildMul(b, item, cl(E, E->L, 1), "lin");
  } else {
    E->lin0 = cl(E, 0, 1);
    for (int d = 0; d < r - 1; d++)
      E->lin0 = LLVMBuildAdd(b, E->lin0, LLVMBuildMul(b, E->idx[d], cl(E, E->key_stride[d], 1), ""), "");
  }
  E->j = cl(E, 0, 1);
  for (int i = 0; i < n && ok; i++) {
    const KInst *in = inst(E, i);
    if (in->kind == KI_REDUCE) {
      int at = E->fixed[i] ? -1 : pick_at(E, i, tmp);
      if (at >= 0) ok = emit_pick(E, i, at, need);
      else if (!E->fixed[i]) ok = emit_phase(E, i, need, tmp);
    } else if (in->kind == KI_STORE) {
      /* a row value, or a finished reduction: stored once per row */
      bool row = at_row(E, in->a) || inst(E, in->a)->kind == KI_REDUCE;
      if (row && (view_last_stride(E, in->view) == 0 || E->L <= 1))
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
static bool emit_col_chunks(Em *E, ColPlan *cp, int w, LLVMValueRef jlo, LLVMValueRef jhi) {
  LLVMBuilderRef b = E->B;
  const Kernel *k = E->k;
  const int c = k->col_axis;
  Loop lj, lk;
  E->j = loop_begin(E, &lj, jlo, jhi, w, w > 1 ? "jv" : "j");
  LLVMValueRef kk = loop_begin(E, &lk, cl(E, 0, 1), cl(E, k->domain.dim[c], 1), 1, "k");
  LLVMValueRef phi[64], next[64];
  for (int r = 0; r < cp->n_red; r++) phi[r] = loop_phi(E, &lk, reduce_init(E, inst(E, cp->red[r]), w));
  E->idx[c] = kk;
  for (int v = 0; v < k->views.n; v++)
    E->pbase[v] = LLVMBuildAdd(b, cp->base[v], LLVMBuildMul(b, kk, cl(E, k->views.data[v].stride[c], 1), ""), "");
  E->lin0 = LLVMBuildAdd(b, cp->linb, LLVMBuildMul(b, kk, cl(E, E->key_stride[c], 1), ""), "");
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
  /* the item's output row and block of columns (kernel.h) */
  const int64_t L = E->L, blk = kernel_col_block(k), nb = blk > 0 ? (L + blk - 1) / blk : 1;
  LLVMValueRef rem = nb > 1 ? LLVMBuildUDiv(b, item, cl(E, nb, 1), "row") : item;
  LLVMValueRef jlo = nb > 1 ? LLVMBuildMul(b, LLVMBuildURem(b, item, cl(E, nb, 1), ""), cl(E, blk, 1), "jlo") : cl(E, 0, 1);
  LLVMValueRef jend = nb > 1 ? LLVMBuildAdd(b, jlo, cl(E, blk, 1), "") : cl(E, L, 1);
  LLVMValueRef jhi = nb > 1 ? LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, jend, cl(E, L, 1), ""), jend, cl(E, L, 1), "jhi")
                            : cl(E, L, 1);
  cp.linb = cl(E, 0, 1);
  int outer = c == 0 ? 1 : 0; /* the outermost axis of the items */
  for (int d = r - 2; d >= 0; d--) {
    if (d == c) continue;
    LLVMValueRef dim = cl(E, k->domain.dim[d] > 0 ? k->domain.dim[d] : 1, 1);
    E->idx[d] = d == outer ? rem : LLVMBuildURem(b, rem, dim, "");
    if (d != outer) rem = LLVMBuildUDiv(b, rem, dim, "");
    cp.linb = LLVMBuildAdd(b, cp.linb, LLVMBuildMul(b, E->idx[d], cl(E, E->key_stride[d], 1), ""), "");
  }
  for (int v = 0; v < k->views.n; v++) {
    LLVMValueRef o = cl(E, k->views.data[v].offset, 1);
    for (int d = 0; d < r - 1; d++)
      if (d != c) o = LLVMBuildAdd(b, o, LLVMBuildMul(b, E->idx[d], cl(E, k->views.data[v].stride[d], 1), ""), "");
    cp.base[v] = o;
  }
  /* chunks of 4W lanes (four registers per operand), then W, then 1, over
   * [jlo, jhi): j1 and j2 where the wide chunks end */
  int w4 = E->W * 4 <= MAX_W ? E->W * 4 : E->W;
  LLVMValueRef j1 = jlo, j2 = jlo;
  if (E->W > 1) {
    LLVMValueRef n = LLVMBuildSub(b, jhi, jlo, "");
    j1 = LLVMBuildAdd(b, jlo, LLVMBuildMul(b, LLVMBuildUDiv(b, n, cl(E, w4, 1), ""), cl(E, w4, 1), ""), "j1");
    LLVMValueRef n2 = LLVMBuildSub(b, jhi, j1, "");
    j2 = LLVMBuildAdd(b, j1, LLVMBuildMul(b, LLVMBuildUDiv(b, n2, cl(E, E->W, 1), ""), cl(E, E->W, 1), ""), "j2");
    ok = emit_col_chunks(E, &cp, w4, jlo, j1);
    if (ok) ok = emit_col_chunks(E, &cp, E->W, j1, j2);
  }
  if (ok) ok = emit_col_chunks(E, &cp, 1, j2, jhi);
  if (ok) loop_end(E, &items, NULL);
  free(cp.post);
  free(cp.need_pre);
  free(cp.need_post);
  free(cp.red);
  free(cp.base);
  return ok;
}

/* ---- the function of a kernel ------------------------------------------------------ */

void llvm_em_init(Em *E, LLVMContextRef C, LLVMModuleRef M, const Host *h, int W, Diag *d) {
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

void llvm_em_free(Em *E) { LLVMDisposeBuilder(E->B); }

static void add_fn_attr(Em *E, const char *key, const char *val) {
  LLVMAttributeRef a = LLVMCreateStringAttribute(E->C, key, (unsigned)strlen(key), val, (unsigned)strlen(val));
  LLVMAddAttributeAtIndex(E->fn, LLVMAttributeFunctionIndex, a);
}

/* Emits kernel k as function `fname` in E's module. */
bool llvm_emit_kernel(Em *E, const Kernel *k, const char *fname) {
  LLVMBuilderRef b = E->B;
  E->k = k;
  E->rank = k->domain.rank;
  E->n = k->insts.n;
  E->L = E->rank ? k->domain.dim[E->rank - 1] : 1;
  E->reread = false; /* not a row kernel's (emit_row_kernel sets it) */
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
  int64_t per_example;
  E->key_plain = random_key_map(&k->domain, &k->key_shape, E->key_stride, &per_example);
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
    E->ex_base = LLVMBuildMul(b, ex, cl(E, per_example, 1), "ex_base");
  }
  if (k->col_axis < 0 && E->L > 1 && E->L <= ROWBUF_MAX) /* static allocas: in the entry block */
    for (int i = 0; i < n; i++)
      if (inst(E, i)->kind == KI_RANDOM) {
        E->rowbuf[i] = LLVMBuildAlloca(b, LLVMArrayType(E->f32, (unsigned)E->L), "random_row");
        LLVMSetAlignment(E->rowbuf[i], 64);
        E->rowbuf[i] = LLVMBuildBitCast(b, E->rowbuf[i], LLVMPointerType(E->f32, 0), "");
      }
  LLVMValueRef begin = LLVMGetParam(E->fn, 1), end = LLVMGetParam(E->fn, 2);
  bool ok = llvm_emit_transpose(E, begin, end) ||
            (k->col_axis >= 0 ? emit_col_kernel(E, begin, end) : emit_row_kernel(E, begin, end));
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
