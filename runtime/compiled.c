/* compiled.c — the half of the cpu and cuda backends that does not depend
 * on where the plan's block lives (compiled.h): preparing the plan,
 * locating values in the block, transfers, stats, gradient hooks by kernel
 * and the profile table.
 *
 * Invariant: both backends lay out the block alike, pinned values at their
 * memory-plan offsets, then the arena; a device backend may put more after
 * it (cuda: its cuBLAS workspace and run info). */
#include "compiled.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool compiled_env_on(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

double compiled_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

bool compiled_plan_init(CompiledPlan *p, const Graph *g, const Backend *b, Diag *d) {
  memset(p, 0, sizeof(*p));
  p->profile = compiled_env_on("BC_PROFILE");
  compile_options_default(&p->opts);
  if (!b->gemm_epilogues || !b->gemm_epilogues()) p->opts.off.epilogue = true;
  if (!b->attention_grad_over_inputs) p->opts.off.attention_in_place = true;
  /* the plan stages run their checks themselves (BC_VERIFY) */
  if (!kernel_plan_compile(g, &p->opts, &p->graph, &p->plan, &p->mem, d)) return false;
  p->have_plan = true;
  int nk = p->plan.kernels.n;
  p->kernel_ns = bc_calloc((size_t)(nk ? nk : 1), sizeof(double));
  p->kernel_calls = bc_calloc((size_t)(nk ? nk : 1), sizeof(int64_t));
  p->kernel_first_ns = bc_calloc((size_t)(nk ? nk : 1), sizeof(double));
  p->stats.n_kernels = nk;
  p->stats.pinned_bytes = p->mem.pinned_bytes;
  p->stats.arena_bytes = p->mem.arena_bytes;
  p->stats.sum_intermediate_bytes = p->mem.sum_intermediate_bytes;
  return true;
}

void compiled_plan_free(CompiledPlan *p) {
  if (p->have_sync) grad_sync_free(&p->sync);
  if (p->have_plan) {
    memplan_free(&p->mem);
    kernel_plan_free(&p->plan);
    graph_free(&p->graph);
  }
  free(p->kernel_ns);
  free(p->kernel_calls);
  free(p->kernel_first_ns);
  free(p->shared);
  memset(p, 0, sizeof(*p));
}

void compiled_share(CompiledPlan *p, const Exec *e) {
  if (!e->owner) return;
  int n = p->graph.values.n;
  MemSlot *s = p->mem.slots;
  p->shared = bc_calloc((size_t)(n ? n : 1), sizeof(uintptr_t));
  /* pinned aliases (assign outputs, views) start where their root does */
  for (int v = 0; v < n; v++)
    if (s[v].kind == MEM_PINNED && s[v].alias_of < 0) p->shared[v] = (uintptr_t)exec_shared_ptr(e, &p->graph, v);
  int64_t at = 0;
  for (int v = 0; v < n; v++)
    if (s[v].kind == MEM_PINNED && s[v].alias_of < 0 && !p->shared[v]) {
      s[v].offset = at;
      at += (s[v].bytes + 63) / 64 * 64;
    }
  for (int v = 0; v < n; v++) /* a chain of views may run to higher ids: each from its root */
    if (s[v].kind == MEM_PINNED && s[v].alias_of >= 0) {
      ValueId root = s[v].alias_of;
      while (s[root].alias_of >= 0) root = s[root].alias_of;
      p->shared[v] = p->shared[root];
      s[v].offset = s[root].offset;
    }
  p->mem.pinned_bytes = p->stats.pinned_bytes = at;
}

uintptr_t compiled_addr(const CompiledPlan *p, uintptr_t block, ValueId v) {
  if (p->shared && p->shared[v]) return p->shared[v];
  const MemSlot *s = &p->mem.slots[v];
  if (s->kind == MEM_NONE) return 0;
  if (s->kind == MEM_PINNED) return block + (uintptr_t)s->offset;
  return (p->arena ? p->arena : block + (uintptr_t)p->mem.pinned_bytes) + (uintptr_t)s->offset;
}

bool compiled_transfer(Exec *e, uintptr_t block, CompiledCopy copy, void *ctx, ValueId v, void *host,
                       DType host_t, bool to_host, Diag *d) {
  const CompiledPlan *p = e->impl;
  const Value *val = &e->graph->values.data[v];
  uintptr_t at = compiled_addr(p, block, v);
  if (!at) {
    exec_error_fused_away(d, e, v);
    return false;
  }
  int64_t n = shape_numel(&val->shape);
  if (!copy) {
    if (to_host) exec_convert((void *)at, val->dtype, host, host_t, n);
    else exec_convert(host, host_t, (void *)at, val->dtype, n);
    return true;
  }
  if (n == 0) return true;
  size_t bytes = (size_t)n * dtype_size(val->dtype);
  void *tmp = bc_malloc(bytes);
  bool ok;
  if (to_host) {
    ok = copy(ctx, at, tmp, bytes, true, d);
    if (ok) exec_convert(tmp, val->dtype, host, host_t, n);
  } else {
    exec_convert(host, host_t, tmp, val->dtype, n);
    ok = copy(ctx, at, tmp, bytes, false, d);
  }
  free(tmp);
  return ok;
}

bool compiled_stats(Exec *e, ExecStats *s) {
  *s = ((const CompiledPlan *)e->impl)->stats;
  return true;
}

const GradBuckets *compiled_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d) {
  CompiledPlan *p = e->impl;
  if (p->have_sync) grad_sync_free(&p->sync);
  p->have_sync = false;
  if (!h) return NULL;
  if (!grad_sync_init(&p->sync, &p->graph, p->mem.kernel_of, bucket_bytes, h, d)) return NULL;
  p->have_sync = true;
  return &p->sync.buckets;
}

void compiled_kernel_time(CompiledPlan *p, int i, double ns) {
  if (p->kernel_calls[i] == 0) p->kernel_first_ns[i] = ns;
  p->kernel_ns[i] += ns;
  p->kernel_calls[i]++;
}

/* Kernel i's time per call, without its first call when it had others. */
static double profile_ns(const CompiledPlan *p, int i) {
  int64_t n = p->kernel_calls[i];
  if (n == 0) return 0;
  return n == 1 ? p->kernel_ns[i] : (p->kernel_ns[i] - p->kernel_first_ns[i]) / (double)(n - 1);
}

void compiled_print_profile(const CompiledPlan *p, const char *who) {
  int n = p->plan.kernels.n;
  if (!p->profile || !p->kernel_ns || n == 0) return;
  int *idx = bc_malloc(sizeof(int) * (size_t)n);
  double *t = bc_malloc(sizeof(double) * (size_t)n);
  double total = 0;
  for (int i = 0; i < n; i++) {
    idx[i] = i;
    t[i] = profile_ns(p, i);
    total += t[i];
  }
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (t[idx[j]] > t[idx[i]]) {
        int x = idx[i];
        idx[i] = idx[j];
        idx[j] = x;
      }
  int64_t runs = p->kernel_calls[0]; /* every kernel runs once a run */
  fprintf(stderr, "%s profile: %d kernels, %.3f ms per run (%s)\n", who, n, total / 1e6,
          runs > 1 ? "runs after the first" : "one run");
  /* where the time goes, by kind of kernel */
  static const char *const kind_names[] = {[KERNEL_LOOP] = "loop",          [KERNEL_GEMM] = "gemm",
                                           [KERNEL_GATHER] = "gather",      [KERNEL_SCATTER_ADD] = "scatter_add",
                                           [KERNEL_CONCAT] = "concat",      [KERNEL_ALIAS] = "alias",
                                           [KERNEL_ATTENTION] = "attention"};
  enum { N_KINDS = sizeof kind_names / sizeof kind_names[0] };
  double by_kind[N_KINDS] = {0};
  int count[N_KINDS] = {0};
  for (int i = 0; i < n; i++) {
    KernelKind kk = p->plan.kernels.data[i].kind;
    if ((int)kk >= 0 && (int)kk < N_KINDS) {
      by_kind[kk] += t[i];
      count[kk]++;
    }
  }
  fprintf(stderr, " ");
  for (int i = 0; i < N_KINDS; i++)
    if (count[i] && kind_names[i])
      fprintf(stderr, " %s %d: %.3f ms (%.1f%%)", kind_names[i], count[i], by_kind[i] / 1e6,
              total > 0 ? 100 * by_kind[i] / total : 0.0);
  fprintf(stderr, "\n");
  for (int i = 0; i < n && i < 25; i++) {
    int k = idx[i];
    fprintf(stderr, "  %6.2f%% %9.4f ms  %s\n", total > 0 ? 100 * t[k] / total : 0.0, t[k] / 1e6,
            p->plan.kernels.data[k].name);
  }
  free(t);
  free(idx);
}
