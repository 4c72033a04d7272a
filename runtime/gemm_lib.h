/* gemm_lib.h — the SGEMM libraries the cpu backend's matmul can call, one
 * thread per call (runtime/cpu_ops.c cuts GEMMs over the pool):
 *  - openblas: cblas_sgemm, linked; its kernels are what OpenBLAS chose
 *    for this CPU or what OPENBLAS_CORETYPE says;
 *  - blis: bli_sgemm of BLIS (Debian libblis4), dlopen'ed: BLIS picks its
 *    kernels from the CPU alone;
 *  - onednn: dnnl_sgemm of oneDNN (Debian libdnnl2), dlopen'ed: JIT kernels
 *    for the CPU.
 * BC_GEMM=NAME chooses; the default is the first of GEMM_LIB_DEFAULT_ORDER
 * that loads, from the measurements in bench/GEMM.md. A library named in
 * BC_GEMM that does not load is an error at the first GEMM (no silent
 * substitute).
 *
 * Not here: cutting a GEMM over threads, batch dims (cpu_ops.c). */
#ifndef BC_GEMM_LIB_H
#define BC_GEMM_LIB_H

#include <stdbool.h>
#include <stdint.h>

#include "../passes/fuse.h" /* GEMM_EPILOGUE_MAX */

typedef enum { GEMM_LIB_OPENBLAS, GEMM_LIB_BLIS, GEMM_LIB_ONEDNN, GEMM_LIB_COUNT } GemmLib;

/* The library BC_GEMM names, else the default; loads it once (thread-safe).
 * False, with a message in err, when BC_GEMM names an unknown or missing
 * library. */
bool gemm_lib_select(GemmLib *lib, char *err, int err_size);

/* Loads `lib` if it is not yet; false when it is not installed. */
bool gemm_lib_load(GemmLib lib);

const char *gemm_lib_name(GemmLib lib);

/* A line for logs and benchmarks: the library and its kernels ("OpenBLAS
 * kernels: Haswell", "BLIS kernels: zen3"), or "not installed". */
const char *gemm_lib_info(GemmLib lib);

/* Threads of the library's calls made from now on: process-wide for
 * OpenBLAS and BLIS, per calling thread for oneDNN (OpenMP). 1 for calls
 * on the pool's threads. Callers serialize it (cpu_ops.c). */
void gemm_lib_set_threads(GemmLib lib, int n);

/* Applies gemm_lib_set_threads to the calling thread where the setting is
 * per thread (oneDNN's OpenMP): before a call into the library that did
 * not go through gemm_lib_sgemm (gemm_epilogue.c). */
void gemm_lib_thread_enter(GemmLib lib);

/* Makes OpenBLAS use the best kernels this CPU runs. OpenBLAS 0.3.21 does
 * not know recent Xeons (family 6 model 207) and falls back to its SSE3
 * "Prescott" kernels, ~5x slower; an AVX-512 CPU whose OpenBLAS chose AVX2
 * kernels loses ~1.5x. Unless OPENBLAS_CORETYPE is set (the user's choice
 * wins), this selects SkylakeX/Cooperlake (AVX-512, on Intel) or Haswell
 * (AVX2) kernels again through OpenBLAS's exported gotoblas_dynamic_init.
 * Idempotent; loading openblas calls it; call it before any other thread
 * uses BLAS. Returns a line for logs ("OpenBLAS kernels: ..."). */
const char *cpu_blas_init(void);

/* C (m x n, ldc) = op(A) op(B) + beta C, row-major, on the calling thread;
 * beta 0 or 1. A is m x k (k x m when ta), B k x n (n x k when tb). The
 * library must be loaded. */
void gemm_lib_sgemm(GemmLib lib, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* ---- epilogues (passes/fuse.c decides them) ---------------------------
 *
 * Steps applied in order to each element C[i][j] of the product before it
 * is stored: GEMM_EPI_BIAS adds src[j] (N floats); GEMM_EPI_ADD adds
 * src[i * ld + j] (a matrix with C's rows and columns, never C itself);
 * GEMM_EPI_RELU_MASK keeps C[i][j] where src[r * ld + j] > 0 and writes 0
 * elsewhere (relu_grad of ops.def: C is the gradient, src relu's output),
 * r = rows[i] when a row map is given (C's rows compacted, src's not),
 * else i; the others are the activations of graph/ops.def (relu, gelu
 * with erf, gelu_tanh). src points at the element of the call's C[0][0]
 * (at row 0 and the call's first column, with a row map). */
typedef enum {
  GEMM_EPI_BIAS,
  GEMM_EPI_ADD,
  GEMM_EPI_RELU_MASK,
  GEMM_EPI_RELU,
  GEMM_EPI_GELU,
  GEMM_EPI_GELU_TANH
} GemmEpiKind;
typedef struct {
  GemmEpiKind kind;
  const float *src;    /* BIAS, ADD, RELU_MASK */
  int64_t ld;          /* ADD, RELU_MASK: src's row stride */
  const int32_t *rows; /* RELU_MASK: the row map, or NULL */
} GemmEpiStep;
typedef struct {
  int n;
  GemmEpiStep step[GEMM_EPILOGUE_MAX];
} GemmEpilogue;

/* Whether lib applies epilogues to C inside the product (oneDNN's post-ops,
 * when its headers were there at build time and it loads), rather than in
 * a pass over C after it. */
bool gemm_lib_fuses_epilogues(GemmLib lib);

/* gemm_lib_sgemm with beta 0 and then the epilogue e, on the calling
 * thread. oneDNN (when its headers were there at build time): one matmul
 * primitive with post-ops, made once per shape and epilogue and kept for
 * the process, so the steps run on C in registers before it is stored.
 * Other libraries, and a mask no post-op expresses (GEMM_EPI_RELU_MASK):
 * the product by blocks of rows, each followed by the steps over it while
 * it is in cache. relu of NaN is 0 in both, as in graph/ops.def. */
void gemm_lib_sgemm_epilogue(GemmLib lib, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, const GemmEpilogue *e);

/* e for a C whose row i is row rows[i] of e's (C's rows compacted): its
 * masks read through the map. e has no row map yet, and no addend. */
GemmEpilogue gemm_epilogue_compacted(const GemmEpilogue *e, const int32_t *rows);

/* e for the block of C at row i0 and column j0 of e's own: every step's
 * operand moved there (a row map by i0 rows). */
GemmEpilogue gemm_epilogue_at(const GemmEpilogue *e, int64_t i0, int64_t j0);

#endif
