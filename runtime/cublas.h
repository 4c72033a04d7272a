/* cublas.h — cuBLAS loaded at run time (dlopen of libcublas.so.13, lazily:
 * loading it costs ~0.3 s) for the cuda backend's GEMMs: the MATMUL op of
 * graph/ops.def on row-major device buffers, batched with strided-batched
 * calls (attention), batch dims folded into M where the weight is shared.
 *
 * Not here: allocation (the plan's one device allocation holds the
 * workspace), streams or contexts (the caller's). No CUDA header is needed
 * to include this one: streams and device pointers travel as void* and
 * uint64_t. */
#ifndef BC_CUBLAS_H
#define BC_CUBLAS_H

#include "../graph/ir.h"

/* One MATMUL, planned once (shapes are static), issued every step:
 * C (.., M, N) = op(A) op(B) exactly as cpu_gemm (runtime/cpu_ops.h). */
typedef struct {
  bool ta, tb;                /* row-major transposes of A and B */
  int64_t M, N, K;            /* after folding batch dims into M */
  int64_t lda, ldb;           /* row-major leading dims */
  int64_t n_batch;            /* strided-batched count (innermost batch dims) */
  int64_t sa, sb, sc;         /* element strides between batch matrices */
  int n_outer;                /* outer batch dims looped on the host (rare) */
  int64_t outer_dim[BC_MAX_RANK], outer_sa[BC_MAX_RANK], outer_sb[BC_MAX_RANK],
      outer_sc[BC_MAX_RANK];
} GemmPlan;

/* Plans C = op(A) op(B) for the given shapes (those graph/shape.c inferred). */
void cublas_plan_gemm(const Shape *a, bool trans_a, const Shape *b, bool trans_b, const Shape *c,
                      GemmPlan *p);

typedef struct CublasHandle CublasHandle;

/* Loads cuBLAS (once per process) and creates a handle bound to `stream`
 * (a CUstream) using `workspace` (device memory of workspace_bytes; set so
 * that graph capture never allocates). tf32: allow TF32 tensor cores
 * (CUBLAS_TF32_TENSOR_OP_MATH) instead of full f32. The current CUDA
 * context must be the one the stream belongs to. NULL with an error naming
 * the call and cuBLAS's message. */
CublasHandle *cublas_create(void *stream, uint64_t workspace, size_t workspace_bytes, bool tf32,
                            Diag *d);
void cublas_destroy(CublasHandle *h);

/* Issues the planned GEMM on the handle's stream (asynchronous; capturable
 * into a CUDA graph). a, b, c: device addresses. */
bool cublas_run_gemm(CublasHandle *h, const GemmPlan *p, uint64_t a, uint64_t b, uint64_t c,
                     Diag *d);

/* "cuBLAS 13.0.x", or "" before cublas_create succeeded. */
const char *cublas_version_string(void);

#endif
