/* backend.h — the interface every execution backend implements, and the
 * Exec handle that tasks and tests use: a graph prepared on a backend, owning
 * a buffer for every value it must keep (parameters, optimizer state, inputs,
 * outputs; the interpreter keeps every value).
 *
 * A run computes every node in graph order, then performs the graph's
 * assigns (parameter and moment updates) so the next run sees new values.
 * Random ops draw Philox(seed, step, op key, global element index), where
 * the global index of element i of a value with leading batch axis is
 * i + example_offset * (elements per example): one process and N replicas
 * draw the same numbers. */
#ifndef BC_BACKEND_H
#define BC_BACKEND_H

#include "../graph/ir.h"

typedef struct {
  uint64_t seed;
  uint32_t step;
  int64_t example_offset; /* global index of this replica's first example */
} RunContext;

typedef struct Backend Backend;

typedef struct Exec {
  const Backend *backend;
  const Graph *graph; /* not owned; must outlive the Exec */
  int device;         /* device index for backends with several (cuda:N); else 0 */
  void *impl;         /* the backend's own state */
} Exec;

/* What a compiled backend knows about its plan and its runs (benchmarks,
 * `bertc compile`); zeros where a backend keeps no such record. */
typedef struct {
  int n_kernels;
  int64_t pinned_bytes, arena_bytes, sum_intermediate_bytes;
  int64_t n_runs;
  double total_ns, gemm_ns; /* summed over runs */
} ExecStats;

struct Backend {
  const char *name;
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
};

extern const Backend backend_interp;
extern const Backend backend_cpu;
extern const Backend backend_cuda;
/* "interp", "cpu", "cuda"; NULL when unknown. */
const Backend *backend_by_name(const char *name);
/* A device spec: "interp", "cpu", "cuda" (= cuda:0) or "cuda:N". Returns
 * the backend and sets *device; NULL with an error listing the choices. */
const Backend *backend_parse(const char *spec, int *device, Diag *d);

/* Number of CUDA devices the driver reports. False with an error saying
 * why CUDA cannot be used here (no libcuda.so.1, cuInit failed, no device);
 * tests that need a GPU skip (exit 77) on false. Loads the driver once. */
bool cuda_device_count(int *n, Diag *d);
/* The CUDA C of the cuda backend's own row-copy kernels (gather,
 * scatter-add, concat), which it compiles with NVRTC next to the emitted
 * ones; tests compile it too. */
const char *cuda_lib_source(void);

/* NULL with a diagnostic on failure; the caller frees with exec_destroy. */
Exec *exec_create(const Backend *b, const Graph *g, Diag *d);
/* exec_create on device `device` of b (cuda:N; 0 elsewhere). */
Exec *exec_create_on(const Backend *b, int device, const Graph *g, Diag *d);
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

#endif
