/* compiled.h — what the compiled backends (cpu.c, cuda.c) share: the plan
 * prepared from a graph (fusion, kernel IR, memory plan: codegen/kernel.h),
 * where each value lives in the plan's one block, whole-tensor transfers
 * between that block and the host, the stats, data-parallel hooks with
 * kernels as steps, and the BC_PROFILE table.
 *
 * Not here: allocating the block, running kernels, anything a device needs
 * (each backend's own). A backend's impl begins with its CompiledPlan (the
 * first member), so the shared Backend functions below reach it through
 * e->impl. */
#ifndef BC_COMPILED_H
#define BC_COMPILED_H

#include "backend.h"
#include "../codegen/kernel.h"

typedef struct {
  Graph graph; /* e->graph with its nodes in kernel execution order */
  KernelPlan plan;
  MemPlan mem;
  CompileOptions opts; /* the switches (BC_NO_*), checks and dumps it was made with */
  bool have_plan;
  bool profile;        /* BC_PROFILE=1 */
  double *kernel_ns;   /* per kernel: time summed over kernel_calls runs */
  int64_t *kernel_calls;
  double *kernel_first_ns; /* per kernel: its first call (page faults, the GEMM
                            * library's code generation), left out of the
                            * profile when there are later ones */
  ExecStats stats;
  bool have_sync; /* data-parallel hooks (runtime/dist.c) */
  GradSync sync;
  uintptr_t *shared; /* per value: the owner's buffer (exec_create_sharing), or 0 */
  uintptr_t arena;   /* the arena's address when it is not after the pinned values
                      * of the plan's block (one borrowed from the owner), or 0 */
} CompiledPlan;

/* Runs the plan stages of the pipeline (fuse, lower, memplan) on g into p
 * with compile_options_default's switches (and off.epilogue where backend b
 * takes no GEMM epilogues: Backend.gemm_epilogues), fills the plan's stats. On failure p holds
 * what was made so far: compiled_plan_free it either way. */
bool compiled_plan_init(CompiledPlan *p, const Graph *g, const Backend *b, Diag *d);
void compiled_plan_free(CompiledPlan *p);
/* Records which values live in e->owner's buffers (exec_shared_ptr) and
 * packs the pinned values that remain (the block then holds only those;
 * mem.pinned_bytes shrinks to match). No-op without an owner. */
void compiled_share(CompiledPlan *p, const Exec *e);
/* The address of v's buffer: the owner's when shared, else `block` (the
 * plan's block, host or device) plus the memory plan's offset (pinned
 * values first, then the arena); 0 when v has none (fusion kept it in
 * registers). */
uintptr_t compiled_addr(const CompiledPlan *p, uintptr_t block, ValueId v);

/* Copies bytes between the backend's memory at `addr` and host memory;
 * false with a diagnostic. */
typedef bool (*CompiledCopy)(void *ctx, uintptr_t addr, void *host, size_t bytes, bool to_host, Diag *d);
/* Backend.read (to_host) and write for a plan whose block is at `block`:
 * converts v between the host type host_t and its own type, directly when
 * copy is NULL (host memory), else through a staging buffer and copy. */
bool compiled_transfer(Exec *e, uintptr_t block, CompiledCopy copy, void *ctx, ValueId v, void *host,
                       DType host_t, bool to_host, Diag *d);

/* Backend.stats and Backend.set_grad_sync of a plan's backend: steps are
 * kernels, node i of the execution-order graph running in kernel
 * mem.kernel_of[i]. */
bool compiled_stats(Exec *e, ExecStats *s);
const GradBuckets *compiled_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d);

/* Adds one timed call of kernel i (profile, GEMM times). */
void compiled_kernel_time(CompiledPlan *p, int i, double ns);
/* With BC_PROFILE: prints "<who> profile: N kernels, T ms per run" and the
 * 25 kernels that took longest, to stderr; runs after the first when
 * there are any (the first pays one-time costs). */
void compiled_print_profile(const CompiledPlan *p, const char *who);

/* Whether environment variable `name` is set, non-empty and not "0". */
bool compiled_env_on(const char *name);
/* CLOCK_MONOTONIC in ns. */
double compiled_now_ns(void);

#endif
