/* llvm_internal.h — what the pieces of the LLVM CPU code generator share:
 * the host (llvm_jit.c), the emitter's state, the small builders of types,
 * constants and intrinsic calls, and the entry points of the vector math
 * (llvm_math.c) and of the kernel emitter (llvm_emit.c).
 * Private to codegen/llvm_*.c: not part of llvm_emit.h's API, and left out
 * with them of a -DBC_LLVM=OFF build (llvm_none.c stands in).
 * Invariant: an Em builds into one module of one LLVMContext, used by one
 * thread at a time. */
#ifndef BC_LLVM_INTERNAL_H
#define BC_LLVM_INTERNAL_H

#include "llvm_emit.h"

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include <string.h>

#define MAX_W 64 /* widest vector we build (column chunks of 4 x 16) */

/* ---- the host (llvm_jit.c) ------------------------------------------------ */

typedef struct {
  char *triple, *cpu, *features, *layout; /* LLVM messages */
  LLVMTargetMachineRef tm;
  int width; /* default f32 lanes */
} Host;

/* ---- the emitter's state -------------------------------------------------- */

typedef struct {
  LLVMContextRef C;
  LLVMModuleRef M;
  LLVMBuilderRef B;
  LLVMTypeRef f32, i32, i64, i1, i8p, info_ty;
  const Host *host;
  int W;
  bool no_picks; /* row sums of one-hot products as passes (llvm_jit_set_picks) */
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
  LLVMValueRef lin0, j; /* lin0: the Philox index at last index 0 (before ex_base) */
  bool reread;          /* row kernels: a loop over the row after its first (llvm_emit.c) */
  int64_t key_stride[BC_MAX_RANK]; /* random_key_map of the domain */
  bool key_plain;                  /* ... is its row-major index */
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

/* ---- types, constants, intrinsics ----------------------------------------- */

static inline LLVMTypeRef ty(const Em *E, DType t, int w) {
  LLVMTypeRef s = t == DTYPE_I32 ? E->i32 : E->f32;
  return w == 1 ? s : LLVMVectorType(s, (unsigned)w);
}

static inline LLVMValueRef splat(Em *E, LLVMValueRef s, int w) {
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

static inline LLVMValueRef cf(Em *E, double x, int w) { return splat(E, LLVMConstReal(E->f32, x), w); }
static inline LLVMValueRef ci(Em *E, int64_t x, int w) {
  return splat(E, LLVMConstInt(E->i32, (unsigned long long)x, 1), w);
}
static inline LLVMValueRef cl(Em *E, int64_t x, int w) {
  return splat(E, LLVMConstInt(E->i64, (unsigned long long)x, 1), w);
}

static inline LLVMValueRef call_intrinsic(Em *E, const char *name, LLVMTypeRef *ovl, int n_ovl,
                                          LLVMValueRef *args, int n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  BC_ASSERT(id != 0);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(E->M, id, ovl, (size_t)n_ovl);
  LLVMTypeRef ft = LLVMIntrinsicGetType(E->C, id, ovl, (size_t)n_ovl);
  return LLVMBuildCall2(E->B, ft, f, args, (unsigned)n_args, "");
}

/* A one-argument intrinsic overloaded on its argument's type (llvm.floor...). */
static inline LLVMValueRef intr1(Em *E, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return call_intrinsic(E, name, &t, 1, &x, 1);
}

static inline LLVMValueRef intr2(Em *E, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef args[2] = {x, y};
  return call_intrinsic(E, name, &t, 1, args, 2);
}

static inline LLVMValueRef fsel(Em *E, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b,
                                LLVMValueRef t, LLVMValueRef f) {
  return LLVMBuildSelect(E->B, LLVMBuildFCmp(E->B, p, a, b, ""), t, f, "");
}

/* ---- llvm_math.c: vector math at width w (see its comments for errors) ---- */

LLVMValueRef llvm_emit_exp(Em *E, LLVMValueRef x, int w);
LLVMValueRef llvm_emit_log(Em *E, LLVMValueRef x, int w);
LLVMValueRef llvm_emit_tanh(Em *E, LLVMValueRef x, int w);
LLVMValueRef llvm_emit_erf(Em *E, LLVMValueRef x, int w);
/* pow(a, y) with C's sign and zero rules. */
LLVMValueRef llvm_emit_pow(Em *E, LLVMValueRef a, LLVMValueRef y, int w);
/* f32 -> i32 like kernel_eval.c: truncate, wrap; NaN, inf, |x| >= 2^63 -> 0. */
LLVMValueRef llvm_emit_f2i(Em *E, LLVMValueRef x, int w);
/* Philox uniforms in [0, 1) for the stream indices base + l, l in [0, w)
 * (base: i64 scalar) of stream key; needs E->round_key and E->step (set by
 * llvm_emit_kernel). Vectors of 4 lanes or more end in a new block. */
LLVMValueRef llvm_emit_uniforms(Em *E, LLVMValueRef base, uint32_t key, int w);

/* ---- llvm_emit.c: kernels into a module ------------------------------------ */

/* E emits into module M of context C for host h at width W; errors go to d. */
void llvm_em_init(Em *E, LLVMContextRef C, LLVMModuleRef M, const Host *h, int W, Diag *d);
void llvm_em_free(Em *E);
/* Emits LOOP kernel k (kernel_eval_supported) as function `fname` in E's
 * module; false with an error naming the kernel and instruction. */
bool llvm_emit_kernel(Em *E, const Kernel *k, const char *fname);

/* ---- llvm_transpose.c: LOOP kernels that only transpose -------------------- */

/* Emits the body of E's kernel (llvm_emit_kernel's, from its entry block
 * on) when it is a transpose (see the file), over rows [begin, end); false,
 * with nothing emitted, when it is not. */
bool llvm_emit_transpose(Em *E, LLVMValueRef begin, LLVMValueRef end);

/* ---- llvm_gemm.c: the GEMM micro-kernel (llvm_jit_gemm_panel) --------------- */

/* Emits the panel kernel for depth K as function `fname` in M. */
bool llvm_emit_gemm_panel(LLVMContextRef C, LLVMModuleRef M, const Host *h, int64_t K, const char *fname);

#endif
