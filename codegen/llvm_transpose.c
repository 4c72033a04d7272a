/* llvm_transpose.c — LOOP kernels that only transpose: one load stored as
 * it is, over a domain [R, C] whose load steps one element per row and S
 * per column and whose store steps one per column, D per row:
 * out[os + r D + c] = in[oa + r + c S]. The MLM head's column blocks make
 * W^T's block so (passes/chunk.c).
 *
 * The generic body loads a row of the output with a gather (its elements
 * S apart), one cache line per element. Here a tile of W x W elements is
 * W vector loads, each W consecutive elements of the input (W rows of the
 * output at one column), transposed in registers (log2 W stages of two-
 * vector shuffles) and stored as W vector stores, one per output row: the
 * input is read a whole cache line at a time.
 *
 * Work items are the domain's rows, as for every row kernel: rows
 * [begin, end) in tiles of W rows, the rows left over and the columns past
 * the last whole tile element by element.
 *
 * Not here: any other kernel (llvm_emit.c); CUDA (cuda_emit.c keeps the
 * generic body). */
#include "llvm_internal.h"

/* The load and store views of k when it is such a transpose at width W,
 * else false. */
static bool transpose_views(const Kernel *k, int W, const KView **in, const KView **out) {
  if (k->kind != KERNEL_LOOP || k->col_axis >= 0 || k->domain.rank != 2 || k->insts.n != 2 || W < 2 ||
      (W & (W - 1)) != 0)
    return false;
  const KInst *ld = &k->insts.data[0], *st = &k->insts.data[1];
  if (ld->kind != KI_LOAD || st->kind != KI_STORE || st->a != 0 || ld->dtype != st->dtype ||
      (ld->dtype != DTYPE_F32 && ld->dtype != DTYPE_I32))
    return false;
  *in = &k->views.data[ld->view];
  *out = &k->views.data[st->view];
  int64_t C = k->domain.dim[1];
  return (*in)->stride[0] == 1 && (*in)->stride[1] >= W && (*out)->stride[1] == 1 &&
         (*out)->stride[0] >= C && C >= W;
}

typedef struct {
  LLVMBasicBlockRef head, exit;
  LLVMValueRef i;
} TLoop;

/* for (i = lo; i < hi; i += step): the body follows; tloop_end closes it. */
static LLVMValueRef tloop_begin(Em *E, TLoop *l, LLVMValueRef lo, LLVMValueRef hi, const char *name) {
  LLVMBuilderRef b = E->B;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  l->head = LLVMAppendBasicBlockInContext(E->C, E->fn, name);
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(E->C, E->fn, name);
  l->exit = LLVMAppendBasicBlockInContext(E->C, E->fn, name);
  LLVMBuildBr(b, l->head);
  LLVMPositionBuilderAtEnd(b, l->head);
  l->i = LLVMBuildPhi(b, E->i64, name);
  LLVMAddIncoming(l->i, &lo, &pre, 1);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, l->i, hi, ""), body, l->exit);
  LLVMPositionBuilderAtEnd(b, body);
  return l->i;
}

static void tloop_end(Em *E, TLoop *l, int64_t step) {
  LLVMBuilderRef b = E->B;
  LLVMValueRef next = LLVMBuildAdd(b, l->i, cl(E, step, 1), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMBuildBr(b, l->head);
  LLVMAddIncoming(l->i, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(b, l->exit);
}

/* Element pointer of base p at offset off (i64). */
static LLVMValueRef at(Em *E, LLVMTypeRef et, LLVMValueRef p, LLVMValueRef off) {
  return LLVMBuildGEP2(E->B, et, p, &off, 1, "");
}

static LLVMValueRef mul_add(Em *E, LLVMValueRef x, int64_t m, int64_t a) {
  return LLVMBuildAdd(E->B, LLVMBuildMul(E->B, x, cl(E, m, 1), ""), cl(E, a, 1), "");
}

/* The transpose one element at a time: rows [r0, r1) of the domain,
 * columns [c0, C). */
static void copy_elements(Em *E, LLVMTypeRef et, const KView *in, const KView *out, LLVMValueRef r0,
                          LLVMValueRef r1, int64_t c0, int64_t C, int vi, int vo) {
  LLVMBuilderRef b = E->B;
  TLoop rl, cl_;
  LLVMValueRef r = tloop_begin(E, &rl, r0, r1, "t_row");
  LLVMValueRef src = LLVMBuildAdd(b, r, cl(E, in->offset, 1), ""), dst = mul_add(E, r, out->stride[0], out->offset);
  LLVMValueRef c = tloop_begin(E, &cl_, cl(E, c0, 1), cl(E, C, 1), "t_col");
  LLVMValueRef from = LLVMBuildAdd(b, src, LLVMBuildMul(b, c, cl(E, in->stride[1], 1), ""), "");
  LLVMValueRef x = LLVMBuildLoad2(b, et, at(E, et, E->vptr[vi], from), "");
  LLVMSetAlignment(x, 4);
  LLVMSetAlignment(LLVMBuildStore(b, x, at(E, et, E->vptr[vo], LLVMBuildAdd(b, dst, c, ""))), 4);
  tloop_end(E, &cl_, 1);
  tloop_end(E, &rl, 1);
}

/* v[0..W) rows of a W x W tile -> its columns, in place: for s = W/2 ..
 * 1, rows i and i + s (bit s of i clear) swap their off-diagonal s x s
 * blocks. */
static void transpose_tile(Em *E, LLVMValueRef *v, int W) {
  LLVMValueRef mi[MAX_W], mj[MAX_W];
  for (int s = W / 2; s >= 1; s /= 2) {
    for (int m = 0; m < W; m++) {
      mi[m] = LLVMConstInt(E->i32, (unsigned long long)((m & s) ? W + m - s : m), 0);
      mj[m] = LLVMConstInt(E->i32, (unsigned long long)((m & s) ? W + m : m + s), 0);
    }
    LLVMValueRef maski = LLVMConstVector(mi, (unsigned)W), maskj = LLVMConstVector(mj, (unsigned)W);
    for (int i = 0; i < W; i++) {
      if (i & s) continue;
      LLVMValueRef a = v[i], c = v[i + s];
      v[i] = LLVMBuildShuffleVector(E->B, a, c, maski, "");
      v[i + s] = LLVMBuildShuffleVector(E->B, a, c, maskj, "");
    }
  }
}

bool llvm_emit_transpose(Em *E, LLVMValueRef begin, LLVMValueRef end) {
  const Kernel *k = E->k;
  const KView *in, *out;
  const int W = E->W;
  if (!transpose_views(k, W, &in, &out)) return false;
  LLVMBuilderRef b = E->B;
  int vi = k->insts.data[0].view, vo = k->insts.data[1].view;
  DType t = k->insts.data[0].dtype;
  LLVMTypeRef et = ty(E, t, 1), vt = ty(E, t, W), vpt = LLVMPointerType(vt, 0);
  int64_t C = k->domain.dim[1], Cw = C / W * W;
  /* rows [begin, tiles_end) in tiles of W, the rest one by one */
  LLVMValueRef n = LLVMBuildSub(b, end, begin, "");
  LLVMValueRef whole = LLVMBuildMul(b, LLVMBuildSDiv(b, n, cl(E, W, 1), ""), cl(E, W, 1), "");
  LLVMValueRef tiles_end = LLVMBuildAdd(b, begin, whole, "");
  /* columns outside, rows inside: each input column (W of them per tile)
   * is then read as a run of consecutive elements, the whole range's */
  TLoop rl, cl_;
  LLVMValueRef c0 = tloop_begin(E, &cl_, cl(E, 0, 1), cl(E, Cw, 1), "tile_col");
  LLVMValueRef r0 = tloop_begin(E, &rl, begin, tiles_end, "tile_row");
  LLVMValueRef s0 = LLVMBuildAdd(b, LLVMBuildAdd(b, r0, cl(E, in->offset, 1), ""),
                                 LLVMBuildMul(b, c0, cl(E, in->stride[1], 1), ""), "");
  LLVMValueRef v[MAX_W];
  for (int i = 0; i < W; i++) { /* input column c0 + i: output rows r0 .. r0 + W at column c0 + i */
    LLVMValueRef p = at(E, et, E->vptr[vi], LLVMBuildAdd(b, s0, cl(E, i * in->stride[1], 1), ""));
    v[i] = LLVMBuildLoad2(b, vt, LLVMBuildBitCast(b, p, vpt, ""), "");
    LLVMSetAlignment(v[i], 4);
  }
  transpose_tile(E, v, W);
  LLVMValueRef d0 = LLVMBuildAdd(b, mul_add(E, r0, out->stride[0], out->offset), c0, "");
  for (int m = 0; m < W; m++) {
    LLVMValueRef p = at(E, et, E->vptr[vo], LLVMBuildAdd(b, d0, cl(E, m * out->stride[0], 1), ""));
    LLVMSetAlignment(LLVMBuildStore(b, v[m], LLVMBuildBitCast(b, p, vpt, "")), 4);
  }
  tloop_end(E, &rl, W);
  tloop_end(E, &cl_, W);
  if (Cw < C) copy_elements(E, et, in, out, begin, tiles_end, Cw, C, vi, vo);
  copy_elements(E, et, in, out, tiles_end, end, 0, C, vi, vo);
  return true;
}
