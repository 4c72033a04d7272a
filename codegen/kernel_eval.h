/* kernel_eval.h — the plain-C reference evaluator of one KERNEL_LOOP kernel,
 * with exactly the CPU ABI of kernel.h. It is the oracle the LLVM emitter is
 * tested against and the fallback the CPU runtime uses for a kernel the JIT
 * cannot compile.
 *
 * Numerics: f32 values are floats and every elementwise op is the `ref`
 * expression of graph/ops.def evaluated in double on float operands and
 * rounded once to float (correctly rounded for add, sub, mul, div, sqrt,
 * recip; within an ulp for rsqrt, exp, log, tanh). i32 values are int32_t
 * with wrapping add/sub/mul/neg, C division (x / 0 = 0, INT_MIN / -1 =
 * INT_MIN, like the interpreter's wrap). Transcendental ops on i32 convert
 * to float, compute in f32 and convert back like KI_CAST. Reductions add in
 * float in index order; max lets a NaN stick (as the interpreter does).
 * KI_CAST f32 -> i32 truncates toward zero and wraps modulo 2^32; NaN and
 * ±inf give 0 (the interpreter's to_i32).
 *
 * Aliasing: a kernel may store to a buffer it also loads (in place) only at
 * the same domain point and after the load that reads it, so any order of
 * evaluating the domain points gives the same result.
 *
 * Not here: non-LOOP kernels, threads, vectorization. */
#ifndef BC_KERNEL_EVAL_H
#define BC_KERNEL_EVAL_H

#include "kernel.h"

/* True when kernel_eval (and llvm_emit) can run `k`: a LOOP kernel whose
 * instructions satisfy the invariants of kernel.h (operands before users,
 * reductions over the last axis, or over col_axis alone when col_axis >= 0,
 * row values computed from row values). Otherwise adds an error naming the
 * kernel and the instruction and returns false. */
bool kernel_eval_supported(const Kernel *k, Diag *d);

/* Runs work items [begin, end) of `k` (see the CPU ABI in kernel.h): bufs[i]
 * is the base of views[i]'s buffer; info may be NULL when k has no
 * KI_RANDOM. Requires kernel_eval_supported(k) (BC_ASSERT otherwise). */
void kernel_eval(const Kernel *k, void *const *bufs, int64_t begin, int64_t end,
                 const KernelRunInfo *info);

/* Philox4x32-10 uniform, reimplemented here because codegen/ may not include
 * runtime/: bit-identical with runtime/philox.c's philox_uniform (tested). */
float kernel_eval_philox_uniform(uint64_t seed, uint32_t step, uint32_t op_key, uint64_t index);

#endif
