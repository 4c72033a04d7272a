/* llvm_gemm.c — the GEMM micro-kernel of the LLVM CPU code generator
 * (llvm_emit.h: llvm_jit_gemm_panel), specialized to the depth K:
 *
 *   for i0 in steps of MR while a whole block fits:   MR rows of C
 *     acc[r][h] = 0                                   2 x MR <16 x float>
 *     for k < K:                                      K a constant
 *       b0, b1 = Bp[k][0..16), Bp[k][16..32)          one row of the panel
 *       for r < MR: a = A[(i0 + r) rs_a + k cs_a]     broadcast
 *                   acc[r][h] = fma(a, b_h, acc[r][h])
 *     store acc to C's rows
 *   the rows left: the same with one row at a time
 *
 * With MR = 12 the 24 accumulators, the two B vectors and the broadcast
 * fill 27 of AVX-512's 32 registers; A is read through two strides, so
 * A^T needs no copy. Packing B into panels is the caller's (the panel is
 * K x 32 floats: 16 KB at K = 128, in L1).
 * Not here: the JIT (llvm_jit.c), packing, threads. */
#include "llvm_internal.h"

enum { LANES = LLVM_GEMM_NR / 2 };

typedef struct {
  LLVMContextRef C;
  LLVMModuleRef M;
  LLVMBuilderRef B;
  LLVMValueRef fn;
  LLVMTypeRef f32, i64, vt, fp;
  LLVMValueRef A, rs, cs, Bp, Cm, ldc;
  int64_t K;
} Gm;

static LLVMValueRef i64c(const Gm *g, int64_t x) { return LLVMConstInt(g->i64, (unsigned long long)x, 1); }

static LLVMValueRef fmuladd(Gm *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  unsigned id = LLVMLookupIntrinsicID("llvm.fmuladd", 12);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(g->M, id, &g->vt, 1);
  LLVMTypeRef ft = LLVMIntrinsicGetType(g->C, id, &g->vt, 1);
  LLVMValueRef args[3] = {a, b, c};
  return LLVMBuildCall2(g->B, ft, f, args, 3, "");
}

static LLVMValueRef vload(Gm *g, LLVMValueRef base, LLVMValueRef off) {
  LLVMValueRef p = LLVMBuildGEP2(g->B, g->f32, base, &off, 1, "");
  LLVMValueRef v = LLVMBuildLoad2(g->B, g->vt, LLVMBuildBitCast(g->B, p, LLVMPointerType(g->vt, 0), ""), "");
  LLVMSetAlignment(v, 4);
  return v;
}

static void vstore(Gm *g, LLVMValueRef v, LLVMValueRef base, LLVMValueRef off) {
  LLVMValueRef p = LLVMBuildGEP2(g->B, g->f32, base, &off, 1, "");
  LLVMSetAlignment(LLVMBuildStore(g->B, v, LLVMBuildBitCast(g->B, p, LLVMPointerType(g->vt, 0), "")), 4);
}

/* A loop [lo, hi) by step, the builder left in its body; *iv its index. */
typedef struct {
  LLVMBasicBlockRef pre, head, body, exit;
  LLVMValueRef iv;
} GLoop;

static void gloop_begin(Gm *g, GLoop *l, LLVMValueRef lo, LLVMValueRef hi, const char *name) {
  l->pre = LLVMGetInsertBlock(g->B);
  l->head = LLVMAppendBasicBlockInContext(g->C, g->fn, name);
  l->body = LLVMAppendBasicBlockInContext(g->C, g->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(g->C, g->fn, "exit");
  LLVMBuildBr(g->B, l->head);
  LLVMPositionBuilderAtEnd(g->B, l->head);
  l->iv = LLVMBuildPhi(g->B, g->i64, name);
  LLVMAddIncoming(l->iv, &lo, &l->pre, 1);
  LLVMBuildCondBr(g->B, LLVMBuildICmp(g->B, LLVMIntSLT, l->iv, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(g->B, l->body);
}

static void gloop_end(Gm *g, GLoop *l, int64_t step) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->B);
  LLVMValueRef next = LLVMBuildAdd(g->B, l->iv, i64c(g, step), "");
  LLVMBuildBr(g->B, l->head);
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(g->B, l->exit);
}

/* mr rows of C from row i: their accumulators over k < K, then stored. */
static void emit_rows(Gm *g, LLVMValueRef i, int mr) {
  LLVMValueRef zero = LLVMConstNull(g->vt), acc[2 * LLVM_GEMM_MR], next[2 * LLVM_GEMM_MR], arow[LLVM_GEMM_MR];
  for (int r = 0; r < mr; r++) /* A's row pointers */
    arow[r] = LLVMBuildGEP2(g->B, g->f32, g->A,
                            (LLVMValueRef[]){LLVMBuildMul(g->B, LLVMBuildAdd(g->B, i, i64c(g, r), ""), g->rs, "")}, 1,
                            "arow");
  GLoop kl;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->B);
  gloop_begin(g, &kl, i64c(g, 0), i64c(g, g->K), "k");
  /* the accumulators: phis at the loop's head */
  LLVMPositionBuilderBefore(g->B, kl.iv);
  for (int q = 0; q < 2 * mr; q++) {
    acc[q] = LLVMBuildPhi(g->B, g->vt, "acc");
    LLVMAddIncoming(acc[q], &zero, &pre, 1);
  }
  LLVMPositionBuilderAtEnd(g->B, kl.body);
  LLVMValueRef boff = LLVMBuildMul(g->B, kl.iv, i64c(g, LLVM_GEMM_NR), "");
  LLVMValueRef b0 = vload(g, g->Bp, boff), b1 = vload(g, g->Bp, LLVMBuildAdd(g->B, boff, i64c(g, LANES), ""));
  LLVMValueRef aoff = LLVMBuildMul(g->B, kl.iv, g->cs, "");
  for (int r = 0; r < mr; r++) {
    LLVMValueRef ap = LLVMBuildGEP2(g->B, g->f32, arow[r], &aoff, 1, "");
    LLVMValueRef a = LLVMBuildLoad2(g->B, g->f32, ap, "a");
    LLVMValueRef av = LLVMBuildInsertElement(g->B, LLVMGetUndef(g->vt), a, i64c(g, 0), "");
    av = LLVMBuildShuffleVector(g->B, av, LLVMGetUndef(g->vt),
                                LLVMConstNull(LLVMVectorType(LLVMInt32TypeInContext(g->C), LANES)), "splat");
    next[2 * r] = fmuladd(g, av, b0, acc[2 * r]);
    next[2 * r + 1] = fmuladd(g, av, b1, acc[2 * r + 1]);
  }
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->B);
  for (int q = 0; q < 2 * mr; q++) LLVMAddIncoming(acc[q], &next[q], &latch, 1);
  gloop_end(g, &kl, 1);
  for (int r = 0; r < mr; r++) {
    LLVMValueRef c0 = LLVMBuildMul(g->B, LLVMBuildAdd(g->B, i, i64c(g, r), ""), g->ldc, "");
    vstore(g, acc[2 * r], g->Cm, c0);
    vstore(g, acc[2 * r + 1], g->Cm, LLVMBuildAdd(g->B, c0, i64c(g, LANES), ""));
  }
}

static void add_attr(Gm *g, const char *key, const char *val) {
  LLVMAttributeRef a = LLVMCreateStringAttribute(g->C, key, (unsigned)strlen(key), val, (unsigned)strlen(val));
  LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, a);
}

bool llvm_emit_gemm_panel(LLVMContextRef C, LLVMModuleRef M, const Host *h, int64_t K, const char *fname) {
  Gm g = {.C = C, .M = M, .K = K};
  g.B = LLVMCreateBuilderInContext(C);
  g.f32 = LLVMFloatTypeInContext(C);
  g.i64 = LLVMInt64TypeInContext(C);
  g.vt = LLVMVectorType(g.f32, LANES);
  g.fp = LLVMPointerType(g.f32, 0);
  LLVMTypeRef params[7] = {g.fp, g.i64, g.i64, g.fp, g.fp, g.i64, g.i64};
  g.fn = LLVMAddFunction(M, fname, LLVMFunctionType(LLVMVoidTypeInContext(C), params, 7, 0));
  add_attr(&g, "target-cpu", h->cpu);
  add_attr(&g, "target-features", h->features);
  if (strstr(h->features, "+avx512f")) { /* else x86 splits 512-bit vectors into halves */
    add_attr(&g, "prefer-vector-width", "512");
    add_attr(&g, "min-legal-vector-width", "512");
  }
  LLVMValueRef *p[7] = {&g.A, &g.rs, &g.cs, &g.Bp, &g.Cm, &g.ldc, NULL};
  for (int i = 0; i < 6; i++) *p[i] = LLVMGetParam(g.fn, (unsigned)i);
  LLVMValueRef m = LLVMGetParam(g.fn, 6);
  LLVMPositionBuilderAtEnd(g.B, LLVMAppendBasicBlockInContext(C, g.fn, "entry"));
  LLVMValueRef whole = LLVMBuildMul(g.B, LLVMBuildSDiv(g.B, m, i64c(&g, LLVM_GEMM_MR), ""), i64c(&g, LLVM_GEMM_MR), "");
  GLoop bl, rl;
  gloop_begin(&g, &bl, i64c(&g, 0), whole, "i0");
  emit_rows(&g, bl.iv, LLVM_GEMM_MR);
  gloop_end(&g, &bl, LLVM_GEMM_MR);
  gloop_begin(&g, &rl, whole, m, "i");
  emit_rows(&g, rl.iv, 1);
  gloop_end(&g, &rl, 1);
  LLVMBuildRetVoid(g.B);
  LLVMDisposeBuilder(g.B);
  return true;
}
