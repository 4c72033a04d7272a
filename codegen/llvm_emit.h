/* llvm_emit.h — the CPU code generator: LLVM IR for KERNEL_LOOP kernels,
 * built with the LLVM 14 C API, optimized with `default<O3>` for the host
 * TargetMachine and JIT-compiled with ORC LLJIT.
 *
 * Each kernel becomes one function with the CPU ABI of kernel.h, named after
 * the kernel (k->name; a suffix ".N" only when the name is already taken in
 * the same JIT). The inner loop over the last domain axis is vectorized by
 * hand, W lanes at a time (W = 16 with AVX-512, else 8), with a scalar
 * remainder; exp, log and tanh are inline polynomials (no libm calls); the
 * results match kernel_eval.h within a few ulps (see llvm_emit.c).
 *
 * Not here: the plan's GEMM/gather/scatter/concat kernels (the runtime runs
 * those; llvm_jit_gemm_panel below is a GEMM micro-kernel the benchmarks
 * measure against the libraries),
 * threads (the caller splits work items), caching compiled code on disk.
 * An LlvmJit is used by one thread at a time; the functions it returns may
 * be called from any thread concurrently until llvm_jit_free. */
#ifndef BC_LLVM_EMIT_H
#define BC_LLVM_EMIT_H

#include "kernel.h"

typedef struct LlvmJit LlvmJit;

/* False in a build without LLVM (-DBC_LLVM=OFF, codegen/llvm_none.c): every
 * function below then fails with an error saying so, and the cpu backend
 * runs its kernels through the C evaluator (kernel_eval.c). */
bool llvm_jit_available(void);

/* A JIT for the host CPU. NULL, with an error naming the failing LLVM call
 * and LLVM's message, when LLVM cannot target the host. */
LlvmJit *llvm_jit_create(Diag *d);
/* Frees the JIT and all code it compiled (its KernelFns become invalid). */
void llvm_jit_free(LlvmJit *j);

/* Vector width in f32 lanes used for kernels compiled from now on: 16 when
 * the host has AVX-512F, else 8. Tests may set 4, 8 or 16 (any power of two
 * in [2, 64]); LLVM legalizes widths the host lacks. */
int llvm_jit_vector_width(const LlvmJit *j);
void llvm_jit_set_vector_width(LlvmJit *j, int w);
/* Whether kernels compiled from now on compute a row sum of a one-hot
 * product as the product at the label (default true; BC_NO_PICK: false,
 * a pass over the row as the evaluator does; llvm_emit.c). */
void llvm_jit_set_picks(LlvmJit *j, bool on);
/* "cpu=icelake-client W=16": what the code is compiled for (owned by j). */
const char *llvm_jit_describe(const LlvmJit *j);

/* Compiles kernels[0..n) into one module (one optimization and one codegen
 * for all: faster than one by one) and sets fns_out[i] to kernel i's entry
 * point; non-LOOP kernels get NULL. On failure (a kernel kernel_eval_supported
 * rejects, an op without an LLVM lowering, an LLVM error) returns false with
 * errors naming the kernel or the LLVM call; fns_out is then unspecified
 * and nothing of this call stays in the JIT. */
bool llvm_jit_compile(LlvmJit *j, const Kernel *const *kernels, int n, KernelFn *fns_out, Diag *d);

/* A GEMM micro-kernel specialized to the depth K (codegen/llvm_gemm.c):
 * C[i][0..LLVM_GEMM_NR) = sum over k < K of A[i rs_a + k cs_a] Bp[k][..]
 * for the rows i < m, Bp one packed panel of B (K rows of LLVM_GEMM_NR
 * floats, contiguous), C's rows ldc apart, overwritten. Rows in blocks of
 * LLVM_GEMM_MR, each block's 2 x MR vector accumulators in registers over
 * the whole K; then single rows. Built to measure against the GEMM
 * libraries (bench/gemm_libs.c, bench/GEMM.md); the runtime does not call
 * it. */
enum { LLVM_GEMM_NR = 32, LLVM_GEMM_MR = 12 };
typedef void (*LlvmGemmPanelFn)(const float *A, int64_t rs_a, int64_t cs_a, const float *Bp, float *C, int64_t ldc,
                                int64_t m);
bool llvm_jit_gemm_panel(LlvmJit *j, int64_t K, LlvmGemmPanelFn *out, Diag *d);

/* The optimized LLVM IR of one LOOP kernel as text (what llvm_jit_compile
 * would run, for the host's default width, with picks), for `bertc
 * compile -o DIR`.
 * Heap string the caller frees; NULL with an error on failure. */
char *llvm_emit_ir_text(const Kernel *k, Diag *d);

#endif
