/* cuda_emit.h — CUDA C for the LOOP kernels of a kernel plan (kernel.h),
 * compiled at run time by NVRTC (runtime/nvrtc.c) and launched by the cuda
 * backend (runtime/cuda.c) through the driver API.
 *
 * Device ABI of an emitted kernel (the runtime relies on exactly this):
 *
 *   extern "C" __global__ void <Kernel.name>(T0 *v0, T1 *v1, ..., const BcRunInfo *info)
 *
 * one pointer parameter per view of the kernel, in views order (float* for an
 * f32 value, int* for an i32 value: the base of the view's value buffer; the
 * kernel adds the view's offset itself), then a pointer to the run info in
 * device memory (struct BcRunInfo below, written by the runtime before each
 * step, so a captured CUDA graph replays with new seeds and steps). The
 * launch shape is fixed at emit time (shapes are static) and returned in
 * CudaLaunch: 1-D grid and block, dynamic shared memory bytes. Blocks have
 * 256 or 512 threads; kernels use only static shared memory (<= 48 KB), so
 * smem_bytes is 0. A domain without elements gives grid 0: launch nothing.
 * float4/int4 accesses need every value buffer 16-byte aligned (the memory
 * plan aligns to 64). Compile with runtime/nvrtc.c's options (no fast math,
 * --fmad=false): then + - * /, sqrt, recip, comparisons, select, casts,
 * iota and random are bit-identical with kernel_eval; rsqrt (1 / sqrtf) is
 * within 1 ulp, exp, log, tanh are CUDA's expf, logf, tanhf (within 2 ulp);
 * sums and maxes reduce in an order fixed by the launch shape.
 *
 * Semantics are those of codegen/kernel_eval.h (the oracle), in f32/i32 on
 * the device: same Philox stream, same reductions (a fixed order per launch
 * shape, so results are deterministic), NaN sticks in max, f32 -> i32 casts
 * truncate and wrap, i32 division by zero gives 0.
 *
 * Not here: GEMM, gather, scatter-add, concat and alias kernels (the
 * runtime's own), loading or launching. */
#ifndef BC_CUDA_EMIT_H
#define BC_CUDA_EMIT_H

#include "kernel.h"

/* The run info every kernel reads (mirrored in the emitted prelude). */
typedef struct {
  uint64_t seed;
  uint32_t step;
  uint32_t error; /* set nonzero by a library kernel that met a bad index */
  int64_t example_offset;
} BcRunInfo;

typedef struct {
  const char *name; /* entry point = Kernel.name; interned */
  int64_t grid;     /* blocks along x */
  int block;        /* threads per block */
  int smem_bytes;   /* dynamic shared memory */
} CudaLaunch;

/* The CUDA C of every LOOP kernel of p (g is the graph the plan refers to,
 * for the comments naming ops and YAML lines), after one shared prelude
 * (BcRunInfo, Philox, reductions). launches[i] is filled for each kernel i
 * of kind KERNEL_LOOP (others untouched); the caller passes
 * p->kernels.n entries. Returns a malloc'd NUL-terminated source the caller
 * frees, or NULL with an error naming the kernel it cannot emit. */
char *cuda_emit_plan(const Graph *g, const KernelPlan *p, CudaLaunch *launches, Diag *d);

/* The prelude every emitted source starts with (the run info, Philox's
 * bc_uniform, integer helpers); runtime/cuda.c's own kernels use it too. */
const char *cuda_emit_prelude(void);

/* Same for one kernel alone (prelude included): tests and `bertc -o`. */
char *cuda_emit_kernel(const Graph *g, const Kernel *k, CudaLaunch *launch, Diag *d);

#endif
