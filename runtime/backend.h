/* backend.h — the interface every execution backend implements, and the
 * Exec handle that tasks and tests use: a graph prepared on a backend, owning
 * a buffer for every value it must keep (parameters, optimizer state, inputs,
 * outputs; the interpreter keeps every value).
 *
 * A run computes every node in graph order, then performs the graph's
 * assigns (parameter and moment updates) so the next run sees new values.
 * Random ops draw Philox(seed, step, op key, global element index), where
 * the global index of element i of a value with leading batch axis is
 * i + example_offset * (elements per example), i and the elements per
 * example taken over the op's key shape (graph/ir.h, random_key_map): one
 * process and N replicas draw the same numbers, and so do a graph bucketed
 * to a shorter sequence and the padded one.
 *
 * Data-parallel training (dist.c) hooks into a run through set_grad_sync:
 * the backend reports, step by step, when each bucket of parameter
 * gradients is complete and waits before the optimizer reads it. */
#ifndef BC_BACKEND_H
#define BC_BACKEND_H

#include "../graph/ir.h"
#include "../passes/passes.h"

typedef struct {
  uint64_t seed;
  uint32_t step;
  int64_t example_offset; /* global index of this replica's first example */
} RunContext;

typedef struct Backend Backend;
struct GpuComm;

/* Data-parallel training (runtime/dist.c) hooks into a backend's run with
 * these. During exec_run, on the thread running it and in run order, the
 * backend calls ready(ctx, b, stream) right after the step (kernel or node)
 * that completes gradient bucket b, and wait(ctx, b, stream) before the
 * first step reading one of b's gradients (or at the end of the run when
 * none does), so every bucket is reduced and in place when exec_run returns.
 * `stream` is the backend's queue of work: NULL on interp and cpu, whose
 * steps have finished when ready is called and must not start before wait
 * returns; a GPU backend passes its compute stream, and the hooks enqueue
 * the all-reduce behind it on a stream of their own and make the compute
 * stream wait for it (an event), blocking nobody. `step` is optional:
 * called after every step with its name and host clock span (ns,
 * CLOCK_MONOTONIC) for BC_TRACE; NULL skips the timing. */
typedef struct {
  void (*ready)(void *ctx, int bucket, void *stream);
  void (*wait)(void *ctx, int bucket, void *stream);
  void (*step)(void *ctx, int step, const char *name, double t0_ns, double t1_ns);
  void *ctx;
} GradSyncHooks;

/* What a backend keeps to call the hooks: the buckets in its own run order
 * (passes/schedule.c) and, per step, which buckets become ready after it
 * and which to wait for before it. Backends use the grad_sync_* helpers of
 * exec.c; nothing else touches the fields. */
typedef struct {
  GradBuckets buckets;
  GradSyncHooks hooks;
  int *ready_start, *ready_list; /* CSR over steps (n_steps + 1 entries) */
  int *wait_start, *wait_list;
} GradSync;

typedef struct Exec {
  const Backend *backend;
  const Graph *graph; /* not owned; must outlive the Exec */
  int device;         /* device index for backends with several (cuda:N); else 0 */
  void *impl;         /* the backend's own state */
  struct Exec *owner; /* exec_create_sharing: whose buffers hold the parameters and state */
} Exec;

/* What a compiled backend knows about its plan and its runs (benchmarks,
 * `bertc compile`); zeros where a backend keeps no such record. */
typedef struct {
  int n_kernels;
  int64_t pinned_bytes, arena_bytes, sum_intermediate_bytes;
  int64_t n_runs;
  double total_ns, gemm_ns; /* summed over runs */
} ExecStats;

/* A backend says what it can do; tasks and dist.c ask these fields, never
 * which backend it is. */
struct Backend {
  const char *name;
  /* Runs the compiled plan (fusion, kernel IR, memory plan:
   * codegen/kernel.h), which `bertc compile` can show; false for the
   * interpreter, which runs the graph node by node. */
  bool compiled;
  /* Optional (NULL: never): whether its GEMM kernels take epilogues
   * (passes/fuse.c) on this machine; where not, the plan is made with
   * off.epilogue set and they stay loop kernels. */
  bool (*gemm_epilogues)(void);
  /* Its attention backward reads a unit's rows of q, k and v before it
   * writes the same rows of d q, d k and d v, so the memory plan may put
   * them over q, k and v where those die; where not, the plan is made with
   * off.attention_in_place set. */
  bool attention_grad_over_inputs;
  /* Its buffers are host memory: value_ptr gives addresses the host reads
   * and writes (data-parallel averaging in memory, MPI in place). */
  bool host_memory;
  /* Scatter-add sums with atomics: where several indices name one row, the
   * order of the additions, and so the last bits, vary from run to run. */
  bool atomic_scatter_add;
  /* Optional (NULL: the backend runs on the host, and a list "B:0,1" names
   * replicas sharing its cores). With it, "B:N" names device N and "B:all"
   * every device: the number of devices, false with an error saying why
   * none can be used here. */
  bool (*device_count)(int *n, Diag *d);
  bool (*supports_op)(Op op);
  /* Fills e->impl; false with a diagnostic on failure. */
  bool (*prepare)(Exec *e, Diag *d);
  void (*release)(Exec *e);
  /* Whole-tensor copies between host memory of type host_t (F32, I32 or
   * F64) and the backend, converting. */
  bool (*write)(Exec *e, ValueId v, const void *src, DType host_t, Diag *d);
  bool (*read)(Exec *e, ValueId v, void *dst, DType host_t, Diag *d);
  bool (*run)(Exec *e, const RunContext *ctx, Diag *d);
  /* Optional (NULL): fills *s; false when the backend keeps no stats. */
  bool (*stats)(Exec *e, ExecStats *s);
  /* Optional (NULL: the backend cannot train data-parallel). Groups the
   * parameter gradients into buckets of about bucket_bytes in this
   * backend's run order and installs the hooks for every later run
   * (h == NULL removes them). Returns the buckets (owned by the Exec, valid
   * until the next call or exec_destroy), or NULL with a diagnostic. */
  const GradBuckets *(*set_grad_sync)(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d);
  /* Optional (NULL): the address of v's buffer in the backend's own memory
   * (host memory on interp and cpu, device memory on a GPU) and its element
   * type there (*t: F32 or I32 on cpu, F64 on interp); NULL when v has no
   * buffer of its own. Valid until exec_destroy; contents change with runs
   * and writes. */
  void *(*value_ptr)(Exec *e, ValueId v, DType *t);
  /* Optional (NULL: gradients are averaged through host memory). The
   * backend's queue of work for e (a CUstream), e's device made current on
   * the calling thread: an NCCL communicator joins on the current device. */
  void *(*stream)(Exec *e);
  /* Optional, with stream: data-parallel training through NCCL
   * (runtime/nccl.h): installs gradient-bucket hooks (as set_grad_sync)
   * that average each bucket over comm's ranks on a stream of their own,
   * overlapped with the rest of the backward pass and captured into the
   * backend's replayed step. comm must outlive the hooks (set_grad_sync
   * with NULL removes them). */
  const GradBuckets *(*attach_nccl)(Exec *e, struct GpuComm *comm, int64_t bucket_bytes, Diag *d);
};

extern const Backend backend_interp;
extern const Backend backend_cpu;
extern const Backend backend_cuda;
/* "interp", "cpu", "cuda"; NULL when unknown. */
const Backend *backend_by_name(const char *name);
/* A device spec: "interp", "cpu", "cuda" (= cuda:0) or "cuda:N". Returns
 * the backend and sets *device; NULL with an error listing the choices (and
 * for a list of devices, an error saying that only training takes one). */
const Backend *backend_parse(const char *spec, int *device, Diag *d);
/* The replicas of data-parallel training in one process (runtime/dist.h):
 * a spec as above (one device), or a list: "cuda:I,J,..." (one replica per
 * GPU named), "cuda:all" (every GPU the driver reports; an error when it
 * reports none) or "cpu:0,1,..." / "interp:0,1,..." (that many replicas
 * sharing the host: no faster, a check of data-parallel numerics without
 * MPI). Fills devices[0..*n); NULL with an error naming the bad part. */
#define BC_MAX_REPLICAS 64
const Backend *backend_parse_list(const char *spec, int devices[BC_MAX_REPLICAS], int *n, Diag *d);

/* NULL with a diagnostic on failure; the caller frees with exec_destroy. */
Exec *exec_create(const Backend *b, const Graph *g, Diag *d);
/* For backends: n elements converted between F32, I32 and F64 arrays (a
 * backend buffer and a caller's host array); and the error for a value that
 * has no buffer of its own (fusion kept it in registers). */
void exec_convert(const void *src, DType src_t, void *dst, DType dst_t, int64_t n);
void exec_error_fused_away(Diag *d, const Exec *e, ValueId v);
/* exec_create on device `device` of b (cuda:N; 0 elsewhere). */
Exec *exec_create_on(const Backend *b, int device, const Graph *g, Diag *d);
/* exec_create_on whose parameters and state (Adam's moments and step) are
 * those of `owner`, an Exec of the same backend and device holding values
 * of the same names, shapes and dtypes: a graph compiled per sequence
 * length bucket trains one set of weights. Every other value is its own.
 * `owner` must outlive it. */
Exec *exec_create_sharing(Exec *owner, const Graph *g, Diag *d);
/* For backends' prepare: the owner's buffer of v when v is shared, else NULL. */
void *exec_shared_ptr(const Exec *e, const Graph *g, ValueId v);
/* exec_create_on for a device spec (backend_parse). */
Exec *exec_create_spec(const char *spec, const Graph *g, Diag *d);
void exec_destroy(Exec *e);
bool exec_write(Exec *e, ValueId v, const void *src, DType host_t, Diag *d);
bool exec_read(Exec *e, ValueId v, void *dst, DType host_t, Diag *d);
bool exec_run(Exec *e, const RunContext *ctx, Diag *d);
/* Writes every parameter and state its initial value (Value.init), drawn
 * with Philox keyed by `seed` and a hash of the value's name, so a parameter
 * of the same name starts equal in every graph that has it. */
bool exec_init_params(Exec *e, uint64_t seed, Diag *d);
/* Plan and timing numbers of a compiled backend; false when it keeps none. */
bool exec_stats(Exec *e, ExecStats *s);
/* Backend.set_grad_sync, with an error naming the backend when it has none. */
const GradBuckets *exec_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d);
/* Backend.value_ptr, or NULL when the backend has none. */
void *exec_value_ptr(Exec *e, ValueId v, DType *t);

/* For backends: builds s (buckets over run_graph, whose node i runs in step
 * step_of[i], NULL = step i) with the hooks h; false with a diagnostic
 * (grad_buckets_build). Free with grad_sync_free. */
bool grad_sync_init(GradSync *s, const Graph *run_graph, const int *step_of, int64_t bucket_bytes,
                    const GradSyncHooks *h, Diag *d);
void grad_sync_free(GradSync *s);
/* Call before step k: waits for the buckets step k reads. */
void grad_sync_before(const GradSync *s, int k, void *stream);
/* Call after step k (t0, t1: its span, when s->hooks.step is set): traces
 * it and issues the buckets it completed. */
void grad_sync_after(const GradSync *s, int k, const char *name, double t0_ns, double t1_ns, void *stream);
/* Call at the end of a run of n_run steps: waits for the buckets that no
 * step before n_run reads. */
void grad_sync_end(const GradSync *s, int n_run, void *stream);

#endif
