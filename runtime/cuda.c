/* cuda.c — the `cuda` backend: a training step as fused kernels emitted as
 * CUDA C (codegen/cuda_emit.c), compiled by NVRTC for the device's own
 * architecture (runtime/nvrtc.c, cached on disk), GEMMs on cuBLAS
 * (runtime/cublas.c), row copies (gather, scatter-add, concat) as small
 * kernels of our own below; one device allocation per plan (pinned values,
 * arena, cuBLAS workspace, run info), planned by passes/memplan.c exactly
 * as for the cpu backend. The whole step is captured once as a CUDA graph
 * and replayed; only the run info (seed, step, example offset) changes
 * between steps, and kernels read it from device memory.
 *
 * The driver is loaded at run time: dlopen("libcuda.so.1"), then every
 * entry point through cuGetProcAddress (a plain dlsym can return an old ABI
 * version of a function). Nothing from CUDA is linked, so the binary starts
 * and reports a clear error on machines without a GPU or driver.
 *
 * Environment: BC_NO_GRAPH=1 launches kernel by kernel instead of replaying
 * a graph; BC_PROFILE=1 times every kernel with CUDA events (no graph) and
 * prints the 25 slowest when the Exec is destroyed; BC_TF32=1 lets cuBLAS
 * use TF32 tensor cores; BC_NO_FUSE, BC_NO_MEMPLAN, BC_VERIFY as for cpu.
 *
 * Data parallel (cuda_attach_nccl): gradient buckets are averaged by NCCL
 * on a stream of their own inside the captured step; such a step's end is
 * polled rather than waited for, so a replica that died or hangs fails the
 * run after BC_DIST_TIMEOUT instead of blocking it forever.
 *
 * Not here: which replicas and devices (runtime/dist.c, replicas.c), the
 * plan's preparation and transfers shared with cpu (compiled.c), mixed
 * precision.
 * Invariant: a run leaves the stream idle (it synchronizes), so reads and
 * writes between runs need no further ordering. */
#include "attention.h"
#include "compiled.h"
#include "cuda.h"
#include "cublas.h"
#include "nccl.h"
#include "nvrtc.h"
#include "../codegen/cuda_emit.h"

#include <dlfcn.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef BC_HAVE_CUDA_H
#include <cuda.h>

/* ---- the driver, loaded at run time ---------------------------------------
 * Each pointer is typed from cuda.h's own prototype (__typeof__), so it has
 * the signature of the ABI version cuda.h maps the name to (cuMemAlloc ->
 * cuMemAlloc_v2), and cuGetProcAddress is asked for that same version
 * (CUDA_VERSION). */
#define DRIVER_FUNCS(X) \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) \
  X(cuDeviceGetAttribute) X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain) \
  X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent) X(cuMemAlloc) X(cuMemFree) X(cuMemAllocHost) \
  X(cuMemFreeHost) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) \
  X(cuMemcpyDtoDAsync) X(cuMemsetD8Async) X(cuModuleLoadData) X(cuModuleUnload) \
  X(cuModuleGetFunction) X(cuFuncSetAttribute) X(cuLaunchKernel) X(cuStreamCreate) \
  X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamBeginCapture) X(cuStreamEndCapture) \
  X(cuGraphInstantiateWithFlags) X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy) \
  X(cuEventCreate) X(cuEventRecord) X(cuEventElapsedTime) X(cuEventDestroy) X(cuGetErrorName) \
  X(cuGetErrorString) X(cuStreamWaitEvent) X(cuStreamQuery)

static struct {
  bool tried, ok;
  char why[512];
  void *lib;
  int n_devices;
#define X(f) __typeof__(f) *p_##f;
  DRIVER_FUNCS(X)
#undef X
} D;

static bool load_driver(void) {
  if (D.tried) return D.ok;
  D.tried = true;
  D.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!D.lib) {
    snprintf(D.why, sizeof(D.why), "no NVIDIA driver: %s", dlerror());
    return false;
  }
  typedef CUresult (*GetProc)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
  GetProc get = (GetProc)dlsym(D.lib, "cuGetProcAddress_v2");
  if (!get) {
    snprintf(D.why, sizeof(D.why), "libcuda.so.1 has no cuGetProcAddress_v2 (driver older than CUDA 12)");
    return false;
  }
  CUdriverProcAddressQueryResult found;
  const char *missing = NULL;
#define X(f) \
  if (!missing && (get(#f, (void **)&D.p_##f, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &found) != CUDA_SUCCESS || \
                   !D.p_##f)) \
    missing = #f;
  DRIVER_FUNCS(X)
#undef X
  if (missing) {
    snprintf(D.why, sizeof(D.why), "the driver has no %s for CUDA %d.%d (too old for this bertc?)", missing,
             CUDA_VERSION / 1000, CUDA_VERSION % 1000 / 10);
    return false;
  }
  CUresult r = D.p_cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    D.p_cuGetErrorName(r, &name);
    snprintf(D.why, sizeof(D.why), "cuInit failed: %s (%d)%s", name, (int)r,
             r == CUDA_ERROR_NO_DEVICE ? ": no CUDA device" : r == 34 ? ": the driver stub, not a driver" : "");
    return false;
  }
  if (D.p_cuDeviceGetCount(&D.n_devices) != CUDA_SUCCESS || D.n_devices < 1) {
    snprintf(D.why, sizeof(D.why), "the driver reports no CUDA device");
    return false;
  }
  D.ok = true;
  return true;
}

bool cuda_device_count(int *n, Diag *d) {
  *n = 0;
  if (!load_driver()) {
    diag_error(d, SRCLOC_NONE, "cuda: %s", D.why);
    return false;
  }
  *n = D.n_devices;
  return true;
}

/* A driver call; on failure an error naming the call, our line, and the
 * driver's message. */
#define CU(call) cu_check((call), #call, __LINE__, d)
static bool cu_check(CUresult r, const char *call, int line, Diag *d) {
  if (r == CUDA_SUCCESS) return true;
  const char *name = "?", *msg = "?";
  D.p_cuGetErrorName(r, &name);
  D.p_cuGetErrorString(r, &msg);
  /* "D.p_cuMemAlloc(...)" -> "cuMemAlloc" */
  const char *f = strstr(call, "p_");
  int len = 0;
  if (f) {
    f += 2;
    while (f[len] && f[len] != '(') len++;
  } else {
    f = call;
    len = (int)strlen(call);
  }
  diag_error(d, SRCLOC_NONE, "cuda: %.*s failed (runtime/cuda.c:%d): %s: %s", len, f, line, name, msg);
  return false;
}

/* ---- attention --------------------------------------------------------------
 * One block of ATT_BLOCK threads per (example, head, query row): the row's
 * scores in shared memory (Tk floats), the arithmetic of runtime/attention.h
 * in f32. The backward's block also recomputes its row; d k and d v sum
 * over the query rows with atomics into zeroed buffers (so, like
 * scatter-add, not bit-reproducible from run to run). */
#define ATT_BLOCK 128
#define ATTENTION_KERNELS \
    "struct BcAttn { long long B, Tq, Tk, F, H, d; float sqrt_d, keep_scale, p; unsigned key, threshold;\n" \
    "                long long s0, s1, s2, s3, per_example; };\n" \
    "__device__ float bc_block_sum(float x, float *red) {\n" \
    "  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);\n" \
    "  __syncthreads();\n" \
    "  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;\n" \
    "  __syncthreads();\n" \
    "  float t = 0.0f;\n" \
    "  for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += red[w];\n" \
    "  return t;\n" \
    "}\n" \
    "__device__ float bc_block_max(float x, float *red) {\n" \
    "  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));\n" \
    "  __syncthreads();\n" \
    "  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;\n" \
    "  __syncthreads();\n" \
    "  float t = -__int_as_float(0x7f800000); /* -inf */\n" \
    "  for (int w = 0; w < (int)(blockDim.x >> 5); w++) t = fmaxf(t, red[w]);\n" \
    "  return t;\n" \
    "}\n" \
    "/* w[j] = the weights of row (b, h, i); returns nothing, w in shared memory */\n" \
    "__device__ void bc_attn_row(const BcAttn &a, const float *q, const float *k, const int *vl, long long b,\n" \
    "                            long long h, long long i, float *w, float *red) {\n" \
    "  const float *qi = q + (b * a.Tq + i) * a.F + h * a.d;\n" \
    "  int len = vl[b];\n" \
    "  float m = -__int_as_float(0x7f800000);\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) {\n" \
    "    const float *kj = k + (b * a.Tk + j) * a.F + h * a.d;\n" \
    "    float s = 0.0f;\n" \
    "    for (long long c = 0; c < a.d; c++) s += qi[c] * kj[c];\n" \
    "    s = j < len ? s / a.sqrt_d : -1e6f;\n" \
    "    w[j] = s;\n" \
    "    m = fmaxf(m, s);\n" \
    "  }\n" \
    "  m = bc_block_max(m, red);\n" \
    "  float sum = 0.0f;\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) { w[j] = expf(w[j] - m); sum += w[j]; }\n" \
    "  sum = bc_block_sum(sum, red);\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) w[j] = w[j] / sum;\n" \
    "  __syncthreads();\n" \
    "}\n" \
    "__device__ float bc_attn_keep(const BcAttn &a, const BcRunInfo *info, long long b, long long h, long long i,\n" \
    "                              long long j) {\n" \
    "  if (a.p <= 0.0f) return 1.0f;\n" \
    "  unsigned long long ix = (unsigned long long)(b * a.s0 + h * a.s1 + i * a.s2 + j * a.s3 +\n" \
    "                                               info->example_offset * a.per_example);\n" \
    "  unsigned int w[4];\n" \
    "  bc_philox4(info->seed, info->step, a.key, ix >> 2, w);\n" \
    "  return (w[ix & 3] >> 8) < a.threshold ? 0.0f : a.keep_scale;\n" \
    "}\n" \
    "extern \"C\" __global__ void bc_attention(BcAttn a, const float *q, const float *k, const float *v,\n" \
    "                                         const int *vl, float *out, const BcRunInfo *info) {\n" \
    "  extern __shared__ float w[];\n" \
    "  __shared__ float red[32];\n" \
    "  long long r = blockIdx.x, i = r % a.Tq, h = (r / a.Tq) % a.H, b = r / (a.Tq * a.H);\n" \
    "  bc_attn_row(a, q, k, vl, b, h, i, w, red);\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) w[j] *= bc_attn_keep(a, info, b, h, i, j);\n" \
    "  __syncthreads();\n" \
    "  for (long long c = threadIdx.x; c < a.d; c += blockDim.x) {\n" \
    "    float o = 0.0f;\n" \
    "    for (long long j = 0; j < a.Tk; j++) o += w[j] * v[(b * a.Tk + j) * a.F + h * a.d + c];\n" \
    "    out[(b * a.Tq + i) * a.F + h * a.d + c] = o;\n" \
    "  }\n" \
    "}\n" \
    "/* grad [B*Tq + 2*B*Tk, F] = the rows of d q, d k, d v; zeroed before */\n" \
    "extern \"C\" __global__ void bc_attention_grad(BcAttn a, const float *q, const float *k, const float *v,\n" \
    "                                              const int *vl, const float *dout, float *grad,\n" \
    "                                              const BcRunInfo *info) {\n" \
    "  extern __shared__ float sm[];\n" \
    "  float *w = sm, *ds = sm + a.Tk;\n" \
    "  __shared__ float red[32];\n" \
    "  long long r = blockIdx.x, i = r % a.Tq, h = (r / a.Tq) % a.H, b = r / (a.Tq * a.H);\n" \
    "  bc_attn_row(a, q, k, vl, b, h, i, w, red);\n" \
    "  const float *doi = dout + (b * a.Tq + i) * a.F + h * a.d;\n" \
    "  float *dq = grad + b * a.Tq * a.F + h * a.d;\n" \
    "  float *dk = grad + (a.B * a.Tq + b * a.Tk) * a.F + h * a.d, *dv = dk + a.B * a.Tk * a.F;\n" \
    "  float dot = 0.0f;\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) {\n" \
    "    const float *vj = v + (b * a.Tk + j) * a.F + h * a.d;\n" \
    "    float keep = bc_attn_keep(a, info, b, h, i, j), da = 0.0f;\n" \
    "    for (long long c = 0; c < a.d; c++) {\n" \
    "      da += doi[c] * vj[c];\n" \
    "      atomicAdd(&dv[j * a.F + c], w[j] * keep * doi[c]);\n" \
    "    }\n" \
    "    ds[j] = da * keep;\n" \
    "    dot += w[j] * ds[j];\n" \
    "  }\n" \
    "  dot = bc_block_sum(dot, red);\n" \
    "  int len = vl[b];\n" \
    "  for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x)\n" \
    "    ds[j] = j < len ? w[j] * (ds[j] - dot) / a.sqrt_d : 0.0f;\n" \
    "  __syncthreads();\n" \
    "  const float *qi = q + (b * a.Tq + i) * a.F + h * a.d;\n" \
    "  for (long long c = threadIdx.x; c < a.d; c += blockDim.x) {\n" \
    "    float g = 0.0f;\n" \
    "    for (long long j = 0; j < a.Tk; j++) g += ds[j] * k[(b * a.Tk + j) * a.F + h * a.d + c];\n" \
    "    dq[i * a.F + c] = g;\n" \
    "  }\n" \
    "  for (long long x = threadIdx.x; x < a.Tk * a.d; x += blockDim.x) {\n" \
    "    long long j = x / a.d, c = x - j * a.d;\n" \
    "    atomicAdd(&dk[j * a.F + c], ds[j] * qi[c]);\n" \
    "  }\n" \
    "}\n"

/* The kernels' BcAttn argument (mirrors the CUDA struct above). */
typedef struct {
  long long B, Tq, Tk, F, H, d;
  float sqrt_d, keep_scale, p;
  unsigned key, threshold;
  long long s0, s1, s2, s3, per_example;
} BcAttn;

/* ---- our own row-copy kernels ---------------------------------------------
 * Gather, scatter-add and concat copy whole rows of 4-byte elements; a bad
 * index sets info->error to the kernel's code (first one wins) and is
 * reported by the host after the step, naming the node. Scatter-add adds
 * with atomics: where several indices name one row (token embeddings'
 * gradients), the order of additions into it varies from run to run, so
 * (unlike on cpu) those sums are not bit-reproducible; with distinct
 * indices (the MLM positions of one batch) and everywhere else, runs are. */
static const char lib_kernels[] =
    "/* out (n_idx, row) = table (n_rows, row)[idx] */\n"
    "extern \"C\" __global__ void bc_gather(const float *table, const int *idx, float *out, long long n_idx,\n"
    "                                      long long row, long long n_rows, BcRunInfo *info, unsigned code) {\n"
    "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i >= n_idx * row) return;\n"
    "  long long r = i / row, c = i - r * row;\n"
    "  int x = idx[r];\n"
    "  if (x < 0 || x >= n_rows) { atomicCAS(&info->error, 0u, code); out[i] = 0.0f; return; }\n"
    "  out[i] = table[(long long)x * row + c];\n"
    "}\n"
    "/* out (n_rows, row) += upd (n_idx, row) at rows idx; out zeroed before */\n"
    "extern \"C\" __global__ void bc_scatter_add(const int *idx, const float *upd, float *out, long long n_idx,\n"
    "                                           long long row, long long n_rows, BcRunInfo *info, unsigned code) {\n"
    "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i >= n_idx * row) return;\n"
    "  long long r = i / row, c = i - r * row;\n"
    "  int x = idx[r];\n"
    "  if (x < 0 || x >= n_rows) { atomicCAS(&info->error, 0u, code); return; }\n"
    "  atomicAdd(&out[(long long)x * row + c], upd[i]);\n"
    "}\n"
    "/* one input of a concat: out[o, off + i] = in[o, i] for part = len*inner, total = out len*inner */\n"
    "extern \"C\" __global__ void bc_concat_part(const unsigned *in, unsigned *out, long long n, long long part,\n"
    "                                           long long total, long long off) {\n"
    "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i >= n) return;\n"
    "  long long o = i / part;\n"
    "  out[o * total + off + (i - o * part)] = in[i];\n"
    "}\n"
    ATTENTION_KERNELS;

/* The module of our own kernels: the emitter's prelude (run info, Philox),
 * then the kernels above. */
const char *cuda_lib_source(void) {
  static char *src;
  if (!src) {
    const char *pre = cuda_emit_prelude();
    src = bc_malloc(strlen(pre) + sizeof lib_kernels);
    strcpy(src, pre);
    strcat(src, lib_kernels);
  }
  return src;
}

/* ---- the backend ---------------------------------------------------------- */

enum { LIB_GATHER, LIB_SCATTER, LIB_CONCAT, LIB_ATTENTION, LIB_ATTENTION_GRAD, LIB_N };
static const char *const lib_names[LIB_N] = {"bc_gather", "bc_scatter_add", "bc_concat_part", "bc_attention",
                                             "bc_attention_grad"};

typedef struct {
  const Kernel *k;
  CUfunction fn;       /* LOOP kernels */
  CudaLaunch launch;   /* LOOP kernels */
  CUdeviceptr *ptrs;   /* LOOP: per view, then the run info; params point here */
  void **params;
  GemmPlan gemm;       /* GEMM */
} CudaKernel;

typedef struct {
  CompiledPlan p; /* first: compiled.c reaches it through e->impl */
  CUdevice dev;
  CUcontext ctx;
  bool have_ctx;
  int arch; /* 90 for sm_90 */
  char name[128];
  CUstream stream;
  CUmodule module, lib_module;
  CUfunction lib[LIB_N];
  CublasHandle *blas;
  CUdeviceptr block; /* pinned values, arena, cuBLAS workspace, run info */
  int64_t block_bytes;
  CUdeviceptr info_dev;
  BcRunInfo *info_host; /* page-locked */
  CudaKernel *kernels;
  bool use_graph;
  CUgraphExec graph_exec;
  CUevent *events; /* BC_PROFILE: two per kernel */
  double compile_ms;
  bool from_cache;
  /* NCCL all-reduce of gradient buckets (cuda_attach_nccl): a stream of its
   * own, and per bucket an event "computed" and an event "reduced". */
  GpuComm *comm; /* not owned */
  CUstream comm_stream;
  CUevent *ev_ready, *ev_done;
  int n_ev;
  bool comm_failed;
  char comm_error[512];
  double comm_timeout_s; /* BC_DIST_TIMEOUT */
} Cuda;

static CUdeviceptr addr_of(const Cuda *c, ValueId v) { return (CUdeviceptr)compiled_addr(&c->p, (uintptr_t)c->block, v); }

static bool cuda_supports(Op op) {
  (void)op;
  return true;
}

static void release(Exec *e) {
  Cuda *c = e->impl;
  if (!c) return;
  if (c->have_ctx) D.p_cuCtxSetCurrent(c->ctx);
  if (c->stream) D.p_cuStreamSynchronize(c->stream);
  if (c->kernels) {
    char who[160];
    snprintf(who, sizeof who, "cuda (%s)", c->name);
    compiled_print_profile(&c->p, who);
  }
  if (c->graph_exec) D.p_cuGraphExecDestroy(c->graph_exec);
  for (int i = 0; i < c->n_ev; i++) {
    if (c->ev_ready[i]) D.p_cuEventDestroy(c->ev_ready[i]);
    if (c->ev_done[i]) D.p_cuEventDestroy(c->ev_done[i]);
  }
  free(c->ev_ready);
  free(c->ev_done);
  if (c->comm_stream) D.p_cuStreamDestroy(c->comm_stream);
  if (c->events) {
    for (int i = 0; i < 2 * c->p.plan.kernels.n; i++)
      if (c->events[i]) D.p_cuEventDestroy(c->events[i]);
    free(c->events);
  }
  if (c->kernels) {
    for (int i = 0; i < c->p.plan.kernels.n; i++) {
      free(c->kernels[i].ptrs);
      free(c->kernels[i].params);
    }
    free(c->kernels);
  }
  cublas_destroy(c->blas);
  if (c->module) D.p_cuModuleUnload(c->module);
  if (c->lib_module) D.p_cuModuleUnload(c->lib_module);
  if (c->block) D.p_cuMemFree(c->block);
  if (c->info_host) D.p_cuMemFreeHost(c->info_host);
  if (c->stream) D.p_cuStreamDestroy(c->stream);
  if (c->have_ctx) D.p_cuDevicePrimaryCtxRelease(c->dev);
  compiled_plan_free(&c->p);
  free(c);
  e->impl = NULL;
}

/* Compiles src with NVRTC and loads it. */
static bool load_module(Cuda *c, const char *src, const char *name, CUmodule *m, Diag *d) {
  void *cubin = NULL;
  size_t n = 0;
  bool cached = false;
  double t0 = compiled_now_ns();
  if (!rtc_compile(src, name, c->arch, &cubin, &n, &cached, d)) return false;
  c->compile_ms += (compiled_now_ns() - t0) / 1e6;
  c->from_cache = cached;
  bool ok = CU(D.p_cuModuleLoadData(m, cubin));
  free(cubin);
  return ok;
}

#define WORKSPACE_BYTES ((int64_t)32 << 20) /* cuBLAS's recommendation for Hopper */

static bool prepare(Exec *e, Diag *d) {
  const Graph *g = e->graph;
  int n_dev;
  if (!cuda_device_count(&n_dev, d)) return false;
  if (e->device < 0 || e->device >= n_dev) {
    diag_error(d, SRCLOC_NONE, "cuda: device cuda:%d does not exist (this machine has %d: cuda:0..cuda:%d)",
               e->device, n_dev, n_dev - 1);
    return false;
  }
  if (!rtc_available(d)) return false;
  Cuda *c = bc_calloc(1, sizeof(*c));
  e->impl = c;
  int major = 0, minor = 0;
  if (!CU(D.p_cuDeviceGet(&c->dev, e->device)) ||
      !CU(D.p_cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, c->dev)) ||
      !CU(D.p_cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, c->dev)) ||
      !CU(D.p_cuDeviceGetName(c->name, (int)sizeof(c->name), c->dev)) ||
      !CU(D.p_cuDevicePrimaryCtxRetain(&c->ctx, c->dev)))
    goto fail;
  c->have_ctx = true;
  c->arch = major * 10 + minor;
  if (!CU(D.p_cuCtxSetCurrent(c->ctx)) || !CU(D.p_cuStreamCreate(&c->stream, CU_STREAM_NON_BLOCKING)))
    goto fail;

  if (!compiled_plan_init(&c->p, g, &backend_cuda, d)) goto fail;
  compiled_share(&c->p, e);
  c->use_graph = !compiled_env_on("BC_NO_GRAPH") && !c->p.profile;

  /* One allocation: pinned | arena | cuBLAS workspace | run info; a
   * bucket's step (exec_create_sharing) borrows its owner's arena when that
   * is large enough: the two never run at once. */
  const Cuda *owner = e->owner ? e->owner->impl : NULL;
  if (owner && owner->p.mem.arena_bytes >= c->p.mem.arena_bytes)
    c->p.arena = (uintptr_t)(owner->block + (CUdeviceptr)owner->p.mem.pinned_bytes);
  int64_t data = c->p.mem.pinned_bytes + (c->p.arena ? 0 : c->p.mem.arena_bytes);
  int64_t ws_off = (data + 255) / 256 * 256, info_off = ws_off + WORKSPACE_BYTES;
  c->block_bytes = info_off + 256;
  if (!CU(D.p_cuMemAlloc(&c->block, (size_t)c->block_bytes))) {
    diag_note(d, SRCLOC_NONE, "the plan needs %.1f MiB of device memory", (double)c->block_bytes / 1048576.0);
    goto fail;
  }
  c->info_dev = c->block + (CUdeviceptr)info_off;
  if (!CU(D.p_cuMemsetD8Async(c->block, 0, (size_t)c->block_bytes, c->stream)) ||
      !CU(D.p_cuMemAllocHost((void **)&c->info_host, sizeof(BcRunInfo))))
    goto fail;
  memset(c->info_host, 0, sizeof(BcRunInfo));

  int nk = c->p.plan.kernels.n;
  c->kernels = bc_calloc((size_t)(nk ? nk : 1), sizeof(CudaKernel));
  CudaLaunch *launches = bc_calloc((size_t)(nk ? nk : 1), sizeof(CudaLaunch));
  bool any_loop = false, any_lib = false, any_gemm = false;
  for (int i = 0; i < nk; i++) {
    KernelKind kind = c->p.plan.kernels.data[i].kind;
    any_loop |= kind == KERNEL_LOOP;
    any_gemm |= kind == KERNEL_GEMM;
    any_lib |= kind == KERNEL_GATHER || kind == KERNEL_SCATTER_ADD || kind == KERNEL_CONCAT ||
               kind == KERNEL_ATTENTION;
  }
  if (any_loop) {
    char *src = cuda_emit_plan(&c->p.graph, &c->p.plan, launches, d);
    const char *gname = g->name ? g->name : "plan";
    char mname[160];
    snprintf(mname, sizeof(mname), "bertc_%s", gname);
    bool ok = src && load_module(c, src, mname, &c->module, d);
    free(src);
    if (!ok) {
      free(launches);
      goto fail;
    }
  }
  if (any_lib) {
    if (!load_module(c, cuda_lib_source(), "bertc_lib", &c->lib_module, d)) {
      free(launches);
      goto fail;
    }
    for (int i = 0; i < LIB_N; i++)
      if (!CU(D.p_cuModuleGetFunction(&c->lib[i], c->lib_module, lib_names[i]))) {
        free(launches);
        goto fail;
      }
  }
  for (int i = 0; i < nk; i++) {
    const Kernel *k = &c->p.plan.kernels.data[i];
    CudaKernel *ck = &c->kernels[i];
    ck->k = k;
    if (k->kind == KERNEL_GEMM) {
      const Graph *eg = &c->p.graph;
      const Node *n = &eg->nodes.data[k->first_node];
      cublas_plan_gemm(&eg->values.data[n->in[0]].shape, n->a.trans_a, &eg->values.data[n->in[1]].shape,
                       n->a.trans_b, &eg->values.data[n->out].shape, &ck->gemm);
      continue;
    }
    if (k->kind != KERNEL_LOOP) continue;
    ck->launch = launches[i];
    /* a kernel with the same code as an earlier one runs through its entry */
    if (!CU(D.p_cuModuleGetFunction(&ck->fn, c->module, ck->launch.name))) {
      diag_note(d, SRCLOC_NONE, "kernel %s", k->name);
      free(launches);
      goto fail;
    }
    if (ck->launch.smem_bytes > 48 * 1024 &&
        !CU(D.p_cuFuncSetAttribute(ck->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, ck->launch.smem_bytes))) {
      free(launches);
      goto fail;
    }
    int nv = k->views.n;
    ck->ptrs = bc_calloc((size_t)nv + 1, sizeof(CUdeviceptr));
    ck->params = bc_calloc((size_t)nv + 1, sizeof(void *));
    for (int j = 0; j < nv; j++) {
      ck->ptrs[j] = addr_of(c, k->views.data[j].value);
      BC_ASSERT(ck->ptrs[j] && "a kernel reads a value without a buffer");
      ck->params[j] = &ck->ptrs[j];
    }
    ck->ptrs[nv] = c->info_dev;
    ck->params[nv] = &ck->ptrs[nv];
  }
  free(launches);
  if (any_gemm) {
    c->blas = cublas_create(c->stream, c->block + (CUdeviceptr)ws_off, (size_t)WORKSPACE_BYTES,
                            compiled_env_on("BC_TF32"), d);
    if (!c->blas) goto fail;
  }
  if (c->p.profile) {
    c->events = bc_calloc((size_t)(2 * nk + 1), sizeof(CUevent));
    for (int i = 0; i < 2 * nk; i++)
      if (!CU(D.p_cuEventCreate(&c->events[i], CU_EVENT_DEFAULT))) goto fail;
  }
  if (!CU(D.p_cuStreamSynchronize(c->stream))) goto fail;
  return true;
fail:
  release(e);
  return false;
}

/* ---- transfers ---- */

/* compiled_transfer's copy: the device's context current, then a copy
 * that returns when done. */
static bool copy_block(void *ctx, uintptr_t addr, void *host, size_t bytes, bool to_host, Diag *d) {
  Cuda *c = ctx;
  CUdeviceptr buf = (CUdeviceptr)addr;
  return CU(D.p_cuCtxSetCurrent(c->ctx)) &&
         (to_host ? CU(D.p_cuMemcpyDtoH(host, buf, bytes)) : CU(D.p_cuMemcpyHtoD(buf, host, bytes)));
}

static bool cuda_write(Exec *e, ValueId v, const void *src, DType t, Diag *d) {
  return compiled_transfer(e, (uintptr_t)((Cuda *)e->impl)->block, copy_block, e->impl, v, (void *)src, t, false, d);
}
static bool cuda_read(Exec *e, ValueId v, void *dst, DType t, Diag *d) {
  return compiled_transfer(e, (uintptr_t)((Cuda *)e->impl)->block, copy_block, e->impl, v, dst, t, true, d);
}

/* ---- run ---- */

static unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* Issues kernel i on the stream (also while capturing). */
static bool launch(Cuda *c, int i, Diag *d) {
  CudaKernel *ck = &c->kernels[i];
  const Kernel *k = ck->k;
  const Graph *g = &c->p.graph;
  const Node *n = &g->nodes.data[k->first_node];
  const Value *o = &g->values.data[n->out];
  unsigned code = (unsigned)i + 1;
  switch (k->kind) {
  case KERNEL_LOOP:
    if (ck->launch.grid == 0) return true;
    return CU(D.p_cuLaunchKernel(ck->fn, (unsigned)ck->launch.grid, 1, 1, (unsigned)ck->launch.block, 1, 1,
                                 (unsigned)ck->launch.smem_bytes, c->stream, ck->params, NULL));
  case KERNEL_GEMM:
    BC_ASSERT(k->nodes.n == 1 && "cuda takes no GEMM epilogues (backend_cuda.gemm_epilogues is NULL)");
    return cublas_run_gemm(c->blas, &ck->gemm, addr_of(c, n->in[0]), addr_of(c, n->in[1]),
                           addr_of(c, n->out), d);
  case KERNEL_GATHER: {
    const Value *t = &g->values.data[n->in[0]], *ix = &g->values.data[n->in[1]];
    CUdeviceptr table = addr_of(c, n->in[0]), idx = addr_of(c, n->in[1]), out = addr_of(c, n->out);
    long long n_idx = shape_numel(&ix->shape), rows = t->shape.dim[0];
    long long row = rows ? shape_numel(&t->shape) / rows : 0;
    if (n_idx * row == 0) return true;
    void *args[] = {&table, &idx, &out, &n_idx, &row, &rows, &c->info_dev, &code};
    return CU(D.p_cuLaunchKernel(c->lib[LIB_GATHER], blocks_for(n_idx * row, 256), 1, 1, 256, 1, 1, 0, c->stream,
                                 args, NULL));
  }
  case KERNEL_SCATTER_ADD: {
    const Value *ix = &g->values.data[n->in[0]];
    CUdeviceptr idx = addr_of(c, n->in[0]), upd = addr_of(c, n->in[1]), out = addr_of(c, n->out);
    long long n_idx = shape_numel(&ix->shape), rows = o->shape.dim[0];
    long long row = rows ? shape_numel(&o->shape) / rows : 0;
    if (!CU(D.p_cuMemsetD8Async(out, 0, (size_t)shape_numel(&o->shape) * 4, c->stream))) return false;
    if (n_idx * row == 0) return true;
    void *args[] = {&idx, &upd, &out, &n_idx, &row, &rows, &c->info_dev, &code};
    return CU(D.p_cuLaunchKernel(c->lib[LIB_SCATTER], blocks_for(n_idx * row, 256), 1, 1, 256, 1, 1, 0,
                                 c->stream, args, NULL));
  }
  case KERNEL_CONCAT: {
    int axis = n->a.axis;
    long long outer = 1, inner = 1;
    for (int j = 0; j < axis; j++) outer *= o->shape.dim[j];
    for (int j = axis + 1; j < o->shape.rank; j++) inner *= o->shape.dim[j];
    long long total = o->shape.dim[axis] * inner, off = 0;
    CUdeviceptr out = addr_of(c, n->out);
    for (int j = 0; j < n->n_in; j++) {
      CUdeviceptr in = addr_of(c, n->in[j]);
      long long part = g->values.data[n->in[j]].shape.dim[axis] * inner, cnt = outer * part;
      if (cnt > 0) {
        void *args[] = {&in, &out, &cnt, &part, &total, &off};
        if (!CU(D.p_cuLaunchKernel(c->lib[LIB_CONCAT], blocks_for(cnt, 256), 1, 1, 256, 1, 1, 0, c->stream, args,
                                   NULL)))
          return false;
      }
      off += part;
    }
    return true;
  }
  case KERNEL_ATTENTION: {
    AttnDims ad;
    RunContext ctx = {0, 0, 0}; /* the stream's seed, step and offset come from the run info on the device */
    attn_dims(&ad, g, n, &ctx);
    BcAttn a = {ad.B,         ad.Tq,        ad.Tk,        ad.F,         ad.H,           ad.d,
                sqrtf((float)ad.d), (float)ad.keep_scale, (float)ad.p, ad.key, attn_threshold(&ad),
                ad.stride[0], ad.stride[1], ad.stride[2], ad.stride[3], ad.per_example};
    unsigned rows = (unsigned)(ad.B * ad.H * ad.Tq);
    if (rows == 0) return true;
    CUdeviceptr q = addr_of(c, n->in[0]), k = addr_of(c, n->in[1]), v = addr_of(c, n->in[2]);
    CUdeviceptr vl = addr_of(c, n->in[3]), out = addr_of(c, n->out);
    if (n->op == OP_ATTENTION) {
      void *args[] = {&a, &q, &k, &v, &vl, &out, &c->info_dev};
      return CU(D.p_cuLaunchKernel(c->lib[LIB_ATTENTION], rows, 1, 1, ATT_BLOCK, 1, 1,
                                   (unsigned)(sizeof(float) * (size_t)ad.Tk), c->stream, args, NULL));
    }
    CUdeviceptr dout = addr_of(c, n->in[4]);
    if (!CU(D.p_cuMemsetD8Async(out, 0, (size_t)shape_numel(&o->shape) * 4, c->stream))) return false;
    void *args[] = {&a, &q, &k, &v, &vl, &dout, &out, &c->info_dev};
    return CU(D.p_cuLaunchKernel(c->lib[LIB_ATTENTION_GRAD], rows, 1, 1, ATT_BLOCK, 1, 1,
                                 (unsigned)(2 * sizeof(float) * (size_t)ad.Tk), c->stream, args, NULL));
  }
  case KERNEL_ALIAS: { /* a reshape, or a slice of rows starting that many elements in */
    int64_t from = n->op == OP_SLICE ? shape_slice_offset(&g->values.data[n->in[0]].shape, n->a.axis, n->a.start) : 0;
    CUdeviceptr src = addr_of(c, n->in[0]) + (CUdeviceptr)(from * (int64_t)dtype_size(o->dtype)), dst = addr_of(c, n->out);
    if (src == dst) return true;
    return CU(D.p_cuMemcpyDtoDAsync(dst, src, (size_t)shape_numel(&o->shape) * dtype_size(o->dtype), c->stream));
  }
  }
  return false;
}

/* Enqueues the whole step. With data-parallel hooks, each kernel is a step
 * of the gradient schedule: the hooks enqueue a bucket's all-reduce behind
 * the kernel completing it (on a stream of their own) and make the compute
 * stream wait for it before the first kernel reading it; inside a capture
 * they become part of the CUDA graph. */
static bool launch_all(Cuda *c, Diag *d) {
  const GradSync *sync = c->p.have_sync ? &c->p.sync : NULL;
  for (int i = 0; i < c->p.plan.kernels.n; i++) {
    if (sync) grad_sync_before(sync, i, c->stream);
    if (c->p.profile && !CU(D.p_cuEventRecord(c->events[2 * i], c->stream))) return false;
    if (!launch(c, i, d)) {
      diag_note(d, SRCLOC_NONE, "while launching kernel %s", c->kernels[i].k->name);
      return false;
    }
    if (c->p.profile && !CU(D.p_cuEventRecord(c->events[2 * i + 1], c->stream))) return false;
    if (sync) grad_sync_after(sync, i, c->kernels[i].k->name, 0, 0, c->stream);
  }
  if (sync) grad_sync_end(sync, c->p.plan.kernels.n, c->stream);
  return true;
}

/* The end of a step whose gradients go through NCCL. A replica that died
 * or hangs would leave the all-reduce, and so cuStreamSynchronize, waiting
 * forever: poll the stream instead, and give up after BC_DIST_TIMEOUT
 * seconds, or at once when NCCL reports an error or another replica of
 * this process gave up (gpucomm_check, every ~1 ms). */
static bool sync_comm(Cuda *c, Diag *d) {
  double t0 = compiled_now_ns(), last_check = t0;
  for (int polls = 0;; polls++) {
    CUresult r = D.p_cuStreamQuery(c->stream);
    if (r == CUDA_SUCCESS) return true;
    if (r != CUDA_ERROR_NOT_READY) return cu_check(r, "cuStreamQuery", __LINE__, d);
    double t = compiled_now_ns();
    if (t - last_check > 1e6) {
      last_check = t;
      if (!gpucomm_check(c->comm, d)) return false;
    }
    if ((t - t0) / 1e9 > c->comm_timeout_s) {
      diag_error(d, SRCLOC_NONE,
                 "cuda: the step's gradient all-reduce did not finish within %g s (BC_DIST_TIMEOUT): another "
                 "replica died or hangs",
                 c->comm_timeout_s);
      return false;
    }
    if (polls < 64) sched_yield();
    else {
      struct timespec ts = {0, 20000};
      nanosleep(&ts, NULL);
    }
  }
}

/* Captures the whole step into a CUDA graph (once). */
static bool capture(Cuda *c, Diag *d) {
  CUgraph graph = NULL;
  if (!CU(D.p_cuStreamBeginCapture(c->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))) return false;
  bool ok = launch_all(c, d);
  CUresult r = D.p_cuStreamEndCapture(c->stream, &graph);
  ok = ok && CU(r);
  if (ok) ok = CU(D.p_cuGraphInstantiateWithFlags(&c->graph_exec, graph, 0));
  if (graph) D.p_cuGraphDestroy(graph);
  return ok;
}

static bool cuda_run(Exec *e, const RunContext *ctx, Diag *d) {
  Cuda *c = e->impl;
  double t0 = compiled_now_ns();
  if (!CU(D.p_cuCtxSetCurrent(c->ctx))) return false;
  c->info_host->seed = ctx->seed;
  c->info_host->step = ctx->step;
  c->info_host->error = 0;
  c->info_host->example_offset = ctx->example_offset;
  if (!CU(D.p_cuMemcpyHtoDAsync(c->info_dev, c->info_host, sizeof(BcRunInfo), c->stream))) return false;
  if (c->use_graph) {
    if (!c->graph_exec && !capture(c, d)) return false;
    if (!CU(D.p_cuGraphLaunch(c->graph_exec, c->stream))) return false;
  } else if (!launch_all(c, d)) {
    return false;
  }
  if (!CU(D.p_cuMemcpyDtoHAsync(c->info_host, c->info_dev, sizeof(BcRunInfo), c->stream)) ||
      !(c->comm ? sync_comm(c, d) : CU(D.p_cuStreamSynchronize(c->stream))))
    return false;
  if (c->comm_failed) {
    diag_error(d, SRCLOC_NONE, "cuda: gradient all-reduce: %s", c->comm_error);
    return false;
  }
  if (c->info_host->error) {
    unsigned code = c->info_host->error;
    const Kernel *k = code <= (unsigned)c->p.plan.kernels.n ? c->kernels[code - 1].k : NULL;
    const Node *n = k ? &c->p.graph.nodes.data[k->first_node] : NULL;
    diag_error(d, n ? n->loc : SRCLOC_NONE, "cuda: %s: an index is out of range (kernel %s)",
               n ? op_info[n->op].name : "row copy", k ? k->name : "?");
    return false;
  }
  /* The first run loads every kernel's code (lazy module loading) and
   * cuBLAS's: keep it out of the profile. */
  if (c->p.profile && c->p.stats.n_runs > 0) {
    for (int i = 0; i < c->p.plan.kernels.n; i++) {
      float ms = 0;
      if (!CU(D.p_cuEventElapsedTime(&ms, c->events[2 * i], c->events[2 * i + 1]))) return false;
      compiled_kernel_time(&c->p, i, ms * 1e6);
      if (c->kernels[i].k->kind == KERNEL_GEMM) c->p.stats.gemm_ns += ms * 1e6;
    }
  }
  c->p.stats.total_ns += compiled_now_ns() - t0;
  c->p.stats.n_runs++;
  return true;
}

/* Steps are kernels, as on cpu. A captured graph is dropped: the next run
 * captures the step again with (or without) the hooks' work in it. */
static const GradBuckets *cuda_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d) {
  Cuda *c = e->impl;
  if (c->graph_exec) {
    D.p_cuGraphExecDestroy(c->graph_exec);
    c->graph_exec = NULL;
  }
  c->comm = NULL; /* cuda_attach_nccl sets it again after this */
  return compiled_set_grad_sync(e, bucket_bytes, h, d);
}

/* Device addresses: the hooks hand them to NCCL. */
static void *cuda_value_ptr(Exec *e, ValueId v, DType *t) {
  Cuda *c = e->impl;
  *t = e->graph->values.data[v].dtype;
  return (void *)(uintptr_t)addr_of(c, v);
}

/* The compute stream (a CUstream) and the device's context are current on
 * return, for the data-parallel hooks' own streams and events. */
void *cuda_exec_stream(Exec *e) {
  Cuda *c = e->impl;
  D.p_cuCtxSetCurrent(c->ctx);
  return c->stream;
}

/* ---- NCCL gradient all-reduce ----------------------------------------------
 * ready(b): the comm stream waits for the compute stream to reach the end of
 * the kernel completing bucket b, then averages b's gradients in place with
 * NCCL (one group call); wait(b): the compute stream waits for that. Both
 * only enqueue: inside a capture they become graph nodes, so the CUDA graph
 * replays the overlap. A failing call is remembered and reported by the
 * next run (the hooks cannot return errors). */
static void comm_fail(Cuda *c, Diag *d) {
  if (!c->comm_failed) snprintf(c->comm_error, sizeof c->comm_error, "%s", diag_first(d) ? diag_first(d) : "?");
  c->comm_failed = true;
}

static void nccl_ready(void *ctx, int b, void *stream) {
  Cuda *c = ctx;
  Diag dg, *d = &dg;
  diag_init(d);
  const GradBuckets *gb = &c->p.sync.buckets;
  bool ok = CU(D.p_cuEventRecord(c->ev_ready[b], (CUstream)stream)) &&
            CU(D.p_cuStreamWaitEvent(c->comm_stream, c->ev_ready[b], 0)) && gpucomm_group_begin(d);
  for (int i = gb->start[b]; ok && i < gb->start[b + 1]; i++) {
    ValueId v = gb->values[i];
    ok = gpucomm_allreduce_avg_f32(c->comm, addr_of(c, v), (size_t)shape_numel(&c->p.graph.values.data[v].shape),
                                   c->comm_stream, d);
  }
  ok = ok && gpucomm_group_end(d) && CU(D.p_cuEventRecord(c->ev_done[b], c->comm_stream));
  if (!ok) comm_fail(c, d);
  diag_free(d);
}

static void nccl_wait(void *ctx, int b, void *stream) {
  Cuda *c = ctx;
  Diag dg, *d = &dg;
  diag_init(d);
  if (!CU(D.p_cuStreamWaitEvent((CUstream)stream, c->ev_done[b], 0))) comm_fail(c, d);
  diag_free(d);
}

const GradBuckets *cuda_attach_nccl(Exec *e, GpuComm *comm, int64_t bucket_bytes, Diag *d) {
  Cuda *c = e->impl;
  if (!CU(D.p_cuCtxSetCurrent(c->ctx))) return NULL;
  GradSyncHooks h = {nccl_ready, nccl_wait, NULL, c};
  const GradBuckets *gb = cuda_set_grad_sync(e, bucket_bytes, &h, d);
  if (!gb) return NULL;
  c->comm = comm;
  const char *t = getenv("BC_DIST_TIMEOUT");
  c->comm_timeout_s = t && *t && atof(t) > 0 ? atof(t) : 120;
  if (!c->comm_stream && !CU(D.p_cuStreamCreate(&c->comm_stream, CU_STREAM_NON_BLOCKING))) return NULL;
  for (int i = 0; i < c->n_ev; i++) {
    D.p_cuEventDestroy(c->ev_ready[i]);
    D.p_cuEventDestroy(c->ev_done[i]);
  }
  c->n_ev = 0;
  c->ev_ready = bc_realloc(c->ev_ready, sizeof(CUevent) * (size_t)(gb->n_buckets + 1));
  c->ev_done = bc_realloc(c->ev_done, sizeof(CUevent) * (size_t)(gb->n_buckets + 1));
  for (int b = 0; b < gb->n_buckets; b++) {
    if (!CU(D.p_cuEventCreate(&c->ev_ready[b], CU_EVENT_DISABLE_TIMING))) return NULL;
    if (!CU(D.p_cuEventCreate(&c->ev_done[b], CU_EVENT_DISABLE_TIMING))) {
      D.p_cuEventDestroy(c->ev_ready[b]);
      return NULL;
    }
    c->n_ev = b + 1;
  }
  return gb;
}

#else /* built without CUDA headers */

const char *cuda_lib_source(void) { return ""; }

bool cuda_device_count(int *n, Diag *d) {
  *n = 0;
  diag_error(d, SRCLOC_NONE, "cuda: this bertc was built without the CUDA headers (cudaTypedefs.h not found)");
  return false;
}
static bool cuda_supports(Op op) {
  (void)op;
  return true;
}
static bool prepare(Exec *e, Diag *d) {
  int n;
  (void)e;
  return cuda_device_count(&n, d);
}
static void release(Exec *e) { (void)e; }
static bool cuda_write(Exec *e, ValueId v, const void *src, DType t, Diag *d) {
  (void)e, (void)v, (void)src, (void)t, (void)d;
  return false;
}
static bool cuda_read(Exec *e, ValueId v, void *dst, DType t, Diag *d) {
  (void)e, (void)v, (void)dst, (void)t, (void)d;
  return false;
}
static bool cuda_run(Exec *e, const RunContext *ctx, Diag *d) {
  (void)e, (void)ctx, (void)d;
  return false;
}
static const GradBuckets *cuda_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d) {
  (void)e, (void)bucket_bytes, (void)h;
  diag_error(d, SRCLOC_NONE, "cuda: this bertc was built without the CUDA headers");
  return NULL;
}
static void *cuda_value_ptr(Exec *e, ValueId v, DType *t) {
  (void)e, (void)v, (void)t;
  return NULL;
}
void *cuda_exec_stream(Exec *e) {
  (void)e;
  return NULL;
}
const GradBuckets *cuda_attach_nccl(Exec *e, GpuComm *comm, int64_t bucket_bytes, Diag *d) {
  (void)e, (void)comm, (void)bucket_bytes;
  diag_error(d, SRCLOC_NONE, "cuda: this bertc was built without the CUDA headers");
  return NULL;
}
#endif

const Backend backend_cuda = {
    .name = "cuda",
    .compiled = true,
    .atomic_scatter_add = true,
    .device_count = cuda_device_count,
    .supports_op = cuda_supports,
    .prepare = prepare,
    .release = release,
    .write = cuda_write,
    .read = cuda_read,
    .run = cuda_run,
    .stats = compiled_stats,
    .set_grad_sync = cuda_set_grad_sync,
    .value_ptr = cuda_value_ptr,
    .stream = cuda_exec_stream,
    .attach_nccl = cuda_attach_nccl,
};
