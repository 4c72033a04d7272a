/* cpu.c — the `cpu` backend: a training step as fused kernels JIT-compiled
 * by LLVM (codegen/llvm_emit.c), GEMMs on a GEMM library (gemm_lib.h), row
 * copies and attention of our own (cpu_ops.c, cpu_attention.c), all on one
 * thread pool, in one allocation planned by passes/memplan.c. Nothing is
 * allocated inside a step.
 *
 * Prepare: the plan stages of the pipeline (kernel_plan_compile: fuse ->
 * kernel IR -> memory plan, with the BC_NO_* switches of
 * compile_options_default) -> JIT (BC_NO_JIT=1: run the
 * kernel IR through the C evaluator instead) -> one block for the pinned
 * values and the arena. Run: the kernels in order.
 *
 * A GEMM kernel may carry an epilogue (bias, activation, residual add;
 * passes/fuse.c), which the GEMM library applies to C (gemm_lib.h). One
 * without runs over its operand's live rows (cpu_gemm_live_rows, unless
 * BC_NO_ZERO_ROWS), in a scratch block sized at prepare: the rows a row
 * guard's zero fact covers (Kernel.zero_rows_guard) without a scan, and
 * the gradient's live rows the GEMM before compacted taken from the
 * scratch as it left them (Cpu.compacted). A kernel with a row guard
 * (Kernel.guard) computes the guard's live rows only and writes zeros
 * into the others, or nothing where no kernel reads them; a GEMM whose C
 * only such kernels read writes its live rows compacted, and they read
 * them there (Cpu.compact) (unless BC_NO_ROW_GUARDS).
 *
 * Only materialized values can be read back: inputs, parameters, optimizer
 * state, gradients, outputs, the loss, and whatever fusion left in memory.
 * The backend's threads flush denormals to zero during a step (x86 FTZ and
 * DAZ; BC_NO_FLUSH_DENORMALS computes with them).
 * BC_THREADS=N sets the thread count (default: one per core); BC_PROFILE=1
 * prints the time of every kernel when the Exec is destroyed. With
 * data-parallel hooks installed (set_grad_sync, runtime/dist.c) each kernel
 * is a step: gradient buckets are issued after the kernel completing them
 * and waited for before the first kernel reading them. */
#include "compiled.h"
#include "cpu_attention.h"
#include "cpu_ops.h"
#include "threadpool.h"

#include <sys/mman.h>
#include "../codegen/kernel_eval.h"
#include "../codegen/llvm_emit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  const Kernel *k;
  const Kernel *code; /* LOOP: the kernel whose code runs it: k, or an earlier
                       * one with the same code (kernel_same_code) */
  KernelFn fn;      /* NULL: evaluate code's kernel IR (kernel_eval) */
  void **bufs;      /* per view: base address, shifted by k's view offset
                     * minus code's */
  int64_t n_items;
  int64_t grain;
  GemmEpilogue epi; /* GEMM: its epilogue (n = 0: none) */
  ValueId gemm_out; /* GEMM: the value it stores (the epilogue's last) */
  int guard;        /* Kernel.guard, or -1 where not used */
  int zero_guard;   /* Kernel.zero_rows_guard, or -1 where not used */
  bool given_compact; /* guarded GEMM: may compact its rows (scratch sized for it) */
  int n_outs;       /* guarded LOOP: its stored values, zeroed in dead rows */
  char **out_base;
  int64_t *out_row_bytes;
  bool compacts;    /* Kernel.compact_out, and no reader writes over C in place */
  int n_compact;    /* guarded LOOP: its views of values written compacted */
  int *compact_view;
  int64_t *compact_row_bytes;
} CpuKernel;

/* A row guard's rows this step (KernelPlan.guards: row_guard_live), found
 * before the first kernel using it, when the indices it reads are made. */
typedef struct {
  int64_t rows, n_live, n_runs;
  uint8_t *live; /* NULL: no kernel uses it */
  int32_t *idx;  /* the live rows, ascending */
  int32_t *rank; /* per row: the live rows before it */
  int32_t *seg;  /* GEMMs' scratch: pieces of the runs of live rows */
  const int32_t **read_rows;
  int first_kernel;
} CpuGuard;

typedef struct {
  CompiledPlan p; /* first: compiled.c reaches it through e->impl */
  Pool *pool;
  GemmLib gemm; /* BC_GEMM or the default (gemm_lib.h) */
  LlvmJit *jit;
  unsigned char *block; /* pinned block, then the arena */
  CpuKernel *kernels;
  float *attn_scratch; /* per thread: the largest attention kernel's blocks */
  CpuRowsScratch rows;  /* GEMMs over their live rows (cpu_gemm_live_rows,
                         * cpu_gemm_given_rows) */
  bool rows_borrowed;   /* rows is the owner's (a length bucket's step) */
  CpuGuard *guards; /* per KernelPlan.guards */
  /* per value: the guard whose live rows it holds compacted this step
   * (Kernel.compact_out), else -1 */
  int *compact;
  /* What a GEMM left compacted at the start of rows.buf: the live rows
   * (of guard) of src, len floats each, by kernel (-1: nothing) */
  struct {
    int kernel, guard;
    const float *src;
    int64_t len;
  } compacted;
} Cpu;

static void *addr_of(const Cpu *c, ValueId v) { return (void *)compiled_addr(&c->p, (uintptr_t)c->block, v); }

/* A buffer of at least `bytes` (free() frees it) on 2 MiB pages where
 * the kernel gives them (transparent huge pages on request: the arena's
 * GEMM operands then cost fewer TLB misses), unless BC_NO_HUGE_PAGES. */
static void *huge_alloc(size_t bytes) {
  size_t huge = (size_t)2 << 20;
  if (compiled_env_on("BC_NO_HUGE_PAGES") || bytes < huge) return aligned_alloc(64, (bytes + 63) / 64 * 64);
  bytes = (bytes + huge - 1) / huge * huge;
  void *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, bytes, MADV_HUGEPAGE); /* advice: no matter if refused */
#endif
  return p;
}

static bool cpu_supports(Op op) {
  (void)op;
  return true;
}

static void release(Exec *e) {
  Cpu *c = e->impl;
  if (!c) return;
  if (c->kernels) compiled_print_profile(&c->p, "cpu");
  if (c->kernels)
    for (int i = 0; i < c->p.plan.kernels.n; i++) {
      free(c->kernels[i].bufs);
      free(c->kernels[i].out_base);
      free(c->kernels[i].out_row_bytes);
      free(c->kernels[i].compact_view);
      free(c->kernels[i].compact_row_bytes);
    }
  for (int i = 0; c->guards && i < c->p.plan.guards.list.n; i++) {
    free(c->guards[i].live);
    free(c->guards[i].idx);
    free(c->guards[i].rank);
    free(c->guards[i].read_rows);
    free(c->guards[i].seg);
  }
  free(c->guards);
  free(c->compact);
  free(c->kernels);
  free(c->block);
  free(c->attn_scratch);
  if (!c->rows_borrowed) {
    free(c->rows.buf);
    free(c->rows.live);
    free(c->rows.seg);
  }
  compiled_plan_free(&c->p);
  if (c->jit) llvm_jit_free(c->jit);
  if (c->pool) pool_destroy(c->pool);
  free(c);
  e->impl = NULL;
}

/* A GEMM kernel's epilogue: its nodes after the matmul (passes/fuse.c),
 * each reading the value before it; a bias is a broadcast the kernel
 * folded, an addend or a relu mask a value in memory. */
static void gemm_epilogue_of(const Cpu *c, CpuKernel *ck) {
  const Graph *g = &c->p.graph;
  const Kernel *k = ck->k;
  ValueId t = g->nodes.data[k->first_node].out;
  const Shape *cs = &g->values.data[t].shape;
  int64_t N = cs->rank ? cs->dim[cs->rank - 1] : 1;
  ck->epi.n = 0;
  for (int i = 1; i < k->nodes.n; i++) {
    const Node *n = &g->nodes.data[k->nodes.data[i]];
    BC_ASSERT(ck->epi.n < GEMM_EPILOGUE_MAX && (n->in[0] == t || (n->n_in > 1 && n->in[1] == t)));
    GemmEpiStep *s = &ck->epi.step[ck->epi.n++];
    switch (n->op) {
    case OP_RELU: s->kind = GEMM_EPI_RELU; break;
    case OP_GELU: s->kind = GEMM_EPI_GELU; break;
    case OP_GELU_TANH: s->kind = GEMM_EPI_GELU_TANH; break;
    case OP_RELU_GRAD: /* the gradient is C, the mask relu's output in memory */
      BC_ASSERT(n->in[0] == t);
      s->kind = GEMM_EPI_RELU_MASK;
      s->src = addr_of(c, n->in[1]);
      s->ld = N;
      break;
    case OP_ADD: {
      ValueId o = n->in[0] == t ? n->in[1] : n->in[0];
      NodeId p = g->values.data[o].node;
      if (!c->p.plan.materialized[o] && p >= 0 && g->nodes.data[p].op == OP_BROADCAST) {
        s->kind = GEMM_EPI_BIAS;
        s->src = addr_of(c, g->nodes.data[p].in[0]);
      } else {
        s->kind = GEMM_EPI_ADD;
        s->src = addr_of(c, o);
        s->ld = N;
      }
      BC_ASSERT(s->src);
      break;
    }
    default: BC_ASSERT(!"not a GEMM epilogue op");
    }
    t = n->out;
  }
  ck->gemm_out = t;
}

/* ---- denormals --------------------------------------------------------------
 * The backend's threads flush denormal floats to zero (x86's MXCSR: FTZ for
 * results, DAZ for operands). Some CPUs run arithmetic on denormal
 * operands many times slower: on a Xeon, real pretraining (d2l's lr, 400
 * steps) ran 12-26% faster flushed, since values below FLT_MIN turn up as
 * training goes on, and a GEMM reading them slows down whole. No value
 * that small changes a step (the interpreter, in double, is the oracle).
 * Workers take the mode when the pool is made (a thread inherits its
 * creator's floating-point environment); the calling thread has it for
 * each step and gets its own back after. BC_NO_FLUSH_DENORMALS computes
 * with them; other architectures keep their mode. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
enum { MXCSR_FTZ = 0x8000, MXCSR_DAZ = 0x0040 };
static unsigned flush_denormals_begin(const Cpu *c) {
  unsigned old = _mm_getcsr();
  if (!c->p.opts.off.flush_denormals) _mm_setcsr(old | MXCSR_FTZ | MXCSR_DAZ);
  return old;
}
static void flush_denormals_end(unsigned old) { _mm_setcsr(old); }
#else
static unsigned flush_denormals_begin(const Cpu *c) {
  (void)c;
  return 0;
}
static void flush_denormals_end(unsigned old) { (void)old; }
#endif

/* Epilogues where the GEMM library (BC_GEMM or the default) applies them
 * to C itself: oneDNN. On the others the steps would be a pass over C
 * after the product, which measured slower than the loop kernels (bench/
 * GEMM.md, "Epilogues"). */
static bool cpu_gemm_epilogues(void) {
  GemmLib lib;
  char err[160];
  return gemm_lib_select(&lib, err, sizeof err) && gemm_lib_fuses_epilogues(lib);
}

/* Copies of the live rows a GEMM without an epilogue may make
 * (cpu_gemm_live_rows), at most this many floats for all of them. */
#define LIVE_ROWS_MAX_FLOATS ((int64_t)4 << 20)

/* Grows s to what GEMM kernel k needs: its rows, and the copies of its
 * operands' rows (capped at LIVE_ROWS_MAX_FLOATS). */
static void live_rows_need(const Graph *g, const Kernel *k, CpuRowsScratch *s) {
  const Node *n = &g->nodes.data[k->first_node];
  MatmulLayout l;
  shape_matmul_layout(&g->values.data[n->in[0]].shape, n->a.trans_a, &g->values.data[n->in[1]].shape,
                      n->a.trans_b, &g->values.data[n->out].shape, &l);
  if (l.n_batch_dims > 0 || (n->a.trans_a && n->a.trans_b)) return;
  int64_t rows = n->a.trans_a ? l.K : l.M, floats = rows * ((n->a.trans_a ? l.M : l.K) + l.N);
  if (floats > LIVE_ROWS_MAX_FLOATS) floats = LIVE_ROWS_MAX_FLOATS;
  if (rows > s->rows) s->rows = rows;
  if (floats > s->floats) s->floats = floats;
}

/* Guard w's live rows, found before kernel i (the first to use it). */
static void guard_use(Cpu *c, int w, int i) {
  CpuGuard *gd = &c->guards[w];
  if (gd->live) return;
  const RowGuard *rg = &c->p.plan.guards.list.data[w];
  int64_t rows = row_guard_rows(&c->p.graph, rg);
  gd->rows = rows;
  gd->live = bc_malloc((size_t)rows);
  gd->idx = bc_malloc(sizeof(int32_t) * (size_t)rows);
  gd->rank = bc_malloc(sizeof(int32_t) * (size_t)rows);
  gd->seg = bc_malloc(sizeof(int32_t) * (size_t)(2 * rows + 2));
  gd->read_rows = bc_calloc((size_t)rg->read_rows.n + 1, sizeof(int32_t *));
  for (int r = 0; r < rg->read_rows.n; r++) gd->read_rows[r] = addr_of(c, rg->read_rows.data[r]);
  gd->first_kernel = i;
}

/* Kernel k's row guards as ck->guard and ck->zero_guard (kernel index
 * i); a guarded LOOP kernel also gets its stored values' rows. */
static void guard_setup(Cpu *c, CpuKernel *ck, int i) {
  const Kernel *k = ck->k;
  const Graph *g = &c->p.graph;
  ck->guard = ck->zero_guard = -1;
  if (c->p.opts.off.row_guards) return;
  if (k->zero_rows_guard >= 0) {
    ck->zero_guard = k->zero_rows_guard;
    guard_use(c, k->zero_rows_guard, i);
  }
  if (k->guard < 0) return;
  const RowGuard *rg = &c->p.plan.guards.list.data[k->guard];
  int64_t rows = row_guard_rows(g, rg);
  if (k->kind == KERNEL_GEMM) {
    for (int s = 0; s < ck->epi.n; s++)
      if (ck->epi.step[s].kind == GEMM_EPI_ADD) return; /* an addend, or C accumulating */
    const Node *n = &g->nodes.data[k->first_node];
    const Shape *b = &g->values.data[n->in[1]].shape;
    const Shape *a = &g->values.data[n->in[0]].shape;
    int64_t K = a->dim[a->rank - 1], N = n->a.trans_b ? b->dim[0] : b->dim[1];
    int64_t need = cpu_gemm_given_rows_scratch(rows, N, K, pool_n_threads(c->pool));
    ck->given_compact = need <= LIVE_ROWS_MAX_FLOATS; /* else by runs always */
    if (ck->given_compact && need > c->rows.floats) c->rows.floats = need;
  } else {
    for (int i = 0; i < k->insts.n; i++) {
      const KInst *in = &k->insts.data[i];
      if (in->kind != KI_STORE) continue;
      ValueId v = k->views.data[in->view].value;
      ck->out_base = bc_realloc(ck->out_base, sizeof(char *) * (size_t)(ck->n_outs + 1));
      ck->out_row_bytes = bc_realloc(ck->out_row_bytes, sizeof(int64_t) * (size_t)(ck->n_outs + 1));
      ck->out_base[ck->n_outs] = addr_of(c, v);
      ck->out_row_bytes[ck->n_outs++] =
          shape_numel(&g->values.data[v].shape) / rows * (int64_t)dtype_size(g->values.data[v].dtype);
    }
  }
  ck->guard = k->guard;
  guard_use(c, k->guard, i);
}

/* Drops the guards whose read rows are made by a kernel at or after the
 * first one using the guard (their rows would not be known in time). */
static void guards_check_order(Cpu *c) {
  const Graph *g = &c->p.graph;
  const KernelPlan *kp = &c->p.plan;
  int *made_by = bc_malloc(sizeof(int) * (size_t)(g->values.n ? g->values.n : 1));
  for (int v = 0; v < g->values.n; v++) made_by[v] = -1;
  for (int i = 0; i < kp->kernels.n; i++)
    for (int j = 0; j < kp->kernels.data[i].nodes.n; j++) made_by[g->nodes.data[kp->kernels.data[i].nodes.data[j]].out] = i;
  for (int w = 0; w < kp->guards.list.n; w++) {
    if (!c->guards[w].live) continue;
    const RowGuard *rg = &kp->guards.list.data[w];
    bool in_time = made_by[rg->input] < 0; /* an input */
    for (int r = 0; r < rg->read_rows.n; r++) in_time = in_time && made_by[rg->read_rows.data[r]] < c->guards[w].first_kernel;
    if (in_time) continue;
    for (int i = 0; i < kp->kernels.n; i++) {
      if (c->kernels[i].guard == w) c->kernels[i].guard = -1;
      if (c->kernels[i].zero_guard == w) c->kernels[i].zero_guard = -1;
    }
  }
  free(made_by);
}

/* The views each guarded LOOP kernel has of values a GEMM under the same
 * guard may write compacted (Kernel.compact_out); Cpu.compact, all -1. */
static void compact_setup(Cpu *c) {
  const Graph *g = &c->p.graph;
  const KernelPlan *kp = &c->p.plan;
  c->compact = bc_malloc(sizeof(int) * (size_t)(g->values.n ? g->values.n : 1));
  for (int v = 0; v < g->values.n; v++) c->compact[v] = -1;
  int *by = bc_malloc(sizeof(int) * (size_t)(g->values.n ? g->values.n : 1)); /* value: its compacting kernel's guard */
  for (int v = 0; v < g->values.n; v++) by[v] = -1;
  for (int i = 0; i < kp->kernels.n; i++)
    if (kp->kernels.data[i].compact_out && c->kernels[i].guard >= 0) by[c->kernels[i].gemm_out] = c->kernels[i].guard;
  /* a reader writing its rows over the value's buffer (in place) would
   * overwrite compacted rows not yet read */
  for (int w = 0; w < g->values.n; w++)
    if (c->p.mem.slots[w].alias_of >= 0) by[c->p.mem.slots[w].alias_of] = -1;
  for (int i = 0; i < kp->kernels.n; i++)
    c->kernels[i].compacts = kp->kernels.data[i].compact_out && by[c->kernels[i].gemm_out] >= 0;
  for (int i = 0; i < kp->kernels.n; i++) {
    CpuKernel *ck = &c->kernels[i];
    if (ck->k->kind != KERNEL_LOOP || ck->guard < 0) continue;
    for (int j = 0; j < ck->k->views.n; j++) {
      ValueId v = ck->k->views.data[j].value;
      if (by[v] != ck->guard) continue;
      ck->compact_view = bc_realloc(ck->compact_view, sizeof(int) * (size_t)(ck->n_compact + 1));
      ck->compact_row_bytes = bc_realloc(ck->compact_row_bytes, sizeof(int64_t) * (size_t)(ck->n_compact + 1));
      ck->compact_view[ck->n_compact] = j;
      ck->compact_row_bytes[ck->n_compact++] = shape_numel(&g->values.data[v].shape) / c->guards[ck->guard].rows *
                                               (int64_t)dtype_size(g->values.data[v].dtype);
    }
  }
  free(by);
}

static bool prepare(Exec *e, Diag *d) {
  const Graph *g = e->graph;
  Cpu *c = bc_calloc(1, sizeof(*c));
  e->impl = c;
  int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (getenv("BC_THREADS")) threads = atoi(getenv("BC_THREADS"));
  if (threads < 1) threads = 1;
  if (!compiled_plan_init(&c->p, g, &backend_cpu, d)) goto fail;
  compiled_share(&c->p, e);
  bool ok;
  /* a bucket's step runs between its owner's steps, never with them: it
   * borrows the owner's arena when that is large enough */
  const Cpu *owner = e->owner ? e->owner->impl : NULL;
  if (owner && owner->p.mem.arena_bytes >= c->p.mem.arena_bytes)
    c->p.arena = (uintptr_t)owner->block + (uintptr_t)owner->p.mem.pinned_bytes;
  int64_t total = c->p.mem.pinned_bytes + (c->p.arena ? 0 : c->p.mem.arena_bytes);
  c->block = huge_alloc((size_t)total + 64);
  if (!c->block) {
    diag_error(d, SRCLOC_NONE, "cpu: cannot allocate %lld bytes for the plan", (long long)total);
    goto fail;
  }
  memset(c->block, 0, (size_t)total);
  unsigned fp_mode = flush_denormals_begin(c);
  c->pool = pool_create(threads, d);
  flush_denormals_end(fp_mode);
  if (!c->pool) goto fail;
  char err[160];
  if (!gemm_lib_select(&c->gemm, err, sizeof err)) {
    diag_error(d, SRCLOC_NONE, "cpu: %s", err);
    goto fail;
  }

  int nk = c->p.plan.kernels.n;
  c->kernels = bc_calloc((size_t)(nk ? nk : 1), sizeof(CpuKernel));
  c->guards = bc_calloc((size_t)c->p.plan.guards.list.n + 1, sizeof(CpuGuard));
  const Kernel **loops = bc_malloc(sizeof(Kernel *) * (size_t)(nk ? nk : 1));
  int *loop_at = bc_malloc(sizeof(int) * (size_t)(nk ? nk : 1));
  int n_loops = 0;
  int64_t attn_floats = 0;
  for (int i = 0; i < nk; i++) {
    const Kernel *k = &c->p.plan.kernels.data[i];
    CpuKernel *ck = &c->kernels[i];
    ck->k = k;
    if (k->kind == KERNEL_ATTENTION) {
      AttnDims a;
      const Graph *pg = &c->p.graph;
      attn_dims(&a, pg, &pg->nodes.data[k->first_node], &(RunContext){0, 0, 0});
      int64_t f = cpu_attention_scratch(&a);
      attn_floats = f > attn_floats ? f : attn_floats;
    }
    if (k->kind == KERNEL_GEMM) {
      gemm_epilogue_of(c, ck);
      if (!c->p.opts.off.zero_rows) live_rows_need(&c->p.graph, k, &c->rows);
    }
    guard_setup(c, ck, i);
    if (k->kind != KERNEL_LOOP) continue;
    int twin = -1;
    for (int t = 0; t < n_loops && twin < 0 && !c->p.opts.off.dedup; t++)
      if (kernel_same_code(loops[t], k)) twin = loop_at[t];
    ck->code = twin >= 0 ? c->kernels[twin].k : k;
    ck->bufs = bc_malloc(sizeof(void *) * (size_t)(k->views.n ? k->views.n : 1));
    for (int j = 0; j < k->views.n; j++) {
      ValueId v = k->views.data[j].value;
      void *base = addr_of(c, v);
      BC_ASSERT(base && "a kernel reads a value without a buffer");
      int64_t shift = (k->views.data[j].offset - ck->code->views.data[j].offset) *
                      (int64_t)dtype_size(c->p.graph.values.data[v].dtype);
      /* integer arithmetic: the shifted base may lie outside the buffer;
       * the code adds code's offset back before any access */
      ck->bufs[j] = (void *)((uintptr_t)base + (uintptr_t)shift);
    }
    ck->n_items = kernel_work_items(k);
    int64_t per_item = shape_numel(&k->domain) / (ck->n_items ? ck->n_items : 1);
    /* aim for >= ~16K elements per chunk so dispatch stays negligible */
    ck->grain = per_item >= 16384 ? 1 : 16384 / (per_item ? per_item : 1);
    if (twin >= 0) continue;
    loops[n_loops] = k;
    loop_at[n_loops++] = i;
  }
  if (!c->p.opts.off.jit && n_loops > 0 && llvm_jit_available()) {
    c->jit = llvm_jit_create(d);
    if (!c->jit) {
      free(loops);
      free(loop_at);
      goto fail;
    }
    KernelFn *fns = bc_calloc((size_t)n_loops, sizeof(KernelFn));
    llvm_jit_set_picks(c->jit, !c->p.opts.off.pick);
    ok = llvm_jit_compile(c->jit, loops, n_loops, fns, d);
    for (int i = 0; ok && i < n_loops; i++) c->kernels[loop_at[i]].fn = fns[i];
    for (int i = 0; ok && i < nk; i++) /* twins run their code's function */
      if (c->kernels[i].code && c->kernels[i].code != c->kernels[i].k)
        c->kernels[i].fn = c->kernels[c->kernels[i].code - c->p.plan.kernels.data].fn;
    free(fns);
    if (!ok) {
      free(loops);
      free(loop_at);
      goto fail;
    }
  }
  free(loops);
  free(loop_at);
  guards_check_order(c);
  compact_setup(c);
  if ((c->rows.rows > 0 || c->rows.floats > 0) && owner && owner->rows.rows >= c->rows.rows &&
      owner->rows.floats >= c->rows.floats) {
    c->rows = owner->rows; /* like the arena: the owner's steps never run at once with this one */
    c->rows_borrowed = true;
  } else if (c->rows.rows > 0 || c->rows.floats > 0) {
    c->rows.buf = huge_alloc(sizeof(float) * (size_t)(c->rows.floats > 0 ? c->rows.floats : 1));
    if (!c->rows.buf) {
      diag_error(d, SRCLOC_NONE, "cpu: cannot allocate the GEMMs' row scratch");
      goto fail;
    }
    c->rows.live = bc_malloc((size_t)(c->rows.rows > 0 ? c->rows.rows : 1));
    c->rows.seg = bc_malloc(sizeof(int32_t) * (size_t)(2 * c->rows.rows + 2));
  }
  if (attn_floats > 0) c->attn_scratch = bc_malloc(sizeof(float) * (size_t)(attn_floats * pool_n_threads(c->pool)));
  return true;
fail:
  release(e);
  return false;
}

/* ---- transfers ---- */

static bool cpu_write(Exec *e, ValueId v, const void *src, DType t, Diag *d) {
  return compiled_transfer(e, (uintptr_t)((Cpu *)e->impl)->block, NULL, NULL, v, (void *)src, t, false, d);
}
static bool cpu_read(Exec *e, ValueId v, void *dst, DType t, Diag *d) {
  Cpu *c = e->impl;
  if (c->compact && c->compact[v] >= 0) { /* its live rows compacted: read back in their places, 0 elsewhere */
    const CpuGuard *gd = &c->guards[c->compact[v]];
    int64_t n = shape_numel(&e->graph->values.data[v].shape), len = n / gd->rows;
    float *x = bc_calloc((size_t)(n ? n : 1), sizeof(float));
    const float *src = addr_of(c, v);
    for (int64_t i = 0; i < gd->n_live; i++)
      memcpy(x + (int64_t)gd->idx[i] * len, src + i * len, sizeof(float) * (size_t)len);
    exec_convert(x, DTYPE_F32, dst, t, n);
    free(x);
    return true;
  }
  return compiled_transfer(e, (uintptr_t)c->block, NULL, NULL, v, dst, t, true, d);
}

/* ---- run ---- */

typedef struct {
  const CpuKernel *ck;
  const KernelRunInfo *info;
} LoopCall;

static void loop_call(void *ctx, int64_t begin, int64_t end) {
  const LoopCall *lc = ctx;
  if (lc->ck->fn) lc->ck->fn((void *const *)lc->ck->bufs, begin, end, lc->info);
  else kernel_eval(lc->ck->code, (void *const *)lc->ck->bufs, begin, end, lc->info);
}

/* A guarded LOOP kernel's items: runs of live rows computed, runs of dead
 * ones zeroed in every stored value (but where no kernel reads them). */
typedef struct {
  LoopCall lc;
  const CpuGuard *gd;
  const int *compact; /* Cpu.compact */
} GuardedCall;

/* Live rows [r, e) of a guarded LOOP kernel that reads values written
 * compacted: their bases led so that row r reads compacted row rank[r]. */
static void led_call(const GuardedCall *gc, const int *compact, int64_t r, int64_t e) {
  const CpuKernel *ck = gc->lc.ck;
  enum { MAX_VIEWS = 128 };
  void *bufs[MAX_VIEWS];
  BC_ASSERT(ck->k->views.n <= MAX_VIEWS);
  memcpy(bufs, ck->bufs, sizeof(void *) * (size_t)ck->k->views.n);
  for (int q = 0; q < ck->n_compact; q++) {
    int j = ck->compact_view[q];
    if (compact[ck->k->views.data[j].value] < 0) continue;
    int64_t shift = ((int64_t)gc->gd->rank[r] - r) * ck->compact_row_bytes[q];
    bufs[j] = (void *)((uintptr_t)bufs[j] + (uintptr_t)shift); /* integer arithmetic, as prepare's */
  }
  if (ck->fn) ck->fn((void *const *)bufs, r, e, gc->lc.info);
  else kernel_eval(ck->code, (void *const *)bufs, r, e, gc->lc.info);
}

static void guarded_call(void *ctx, int64_t begin, int64_t end) {
  const GuardedCall *gc = ctx;
  const CpuKernel *ck = gc->lc.ck;
  for (int64_t r = begin; r < end;) {
    bool live = gc->gd->live[r];
    int64_t e = r + 1;
    while (e < end && gc->gd->live[e] == live) e++;
    if (live && ck->n_compact > 0) led_call(gc, gc->compact, r, e);
    else if (live) loop_call((void *)&gc->lc, r, e);
    else if (!ck->k->dead_unread)
      for (int o = 0; o < ck->n_outs; o++)
        memset(ck->out_base[o] + r * ck->out_row_bytes[o], 0, (size_t)((e - r) * ck->out_row_bytes[o]));
    r = e;
  }
}

/* Whether a guarded kernel should leave out its dead rows: a tenth of the
 * rows at least (else the gathers and copies would not pay). */
static const CpuGuard *guard_worth(const Cpu *c, const CpuKernel *ck) {
  if (ck->guard < 0) return NULL;
  const CpuGuard *gd = &c->guards[ck->guard];
  return gd->n_live * 10 <= gd->rows * 9 ? gd : NULL;
}

static bool run_library(Cpu *c, const Graph *g, const CpuKernel *ck, const KernelRunInfo *info, Diag *d) {
  const Kernel *k = ck->k;
  const Node *n = &g->nodes.data[k->first_node];
  const Value *o = &g->values.data[n->out];
  switch (k->kind) {
  case KERNEL_GEMM: {
    const Value *a = &g->values.data[n->in[0]], *b = &g->values.data[n->in[1]];
    float *out = addr_of(c, ck->gemm_out);
    const float *A = addr_of(c, n->in[0]), *B = addr_of(c, n->in[1]);
    const CpuRowsScratch *rows = c->rows.rows > 0 ? &c->rows : NULL;
    const CpuGuard *gd = guard_worth(c, ck);
    int ki = (int)(ck - c->kernels);
    /* the gradient operand whose live rows a GEMM over them compacts
     * first (B of A^T B, else A), and whether the kernel before left them
     * at the start of the scratch */
    bool k_rows = n->a.trans_a;
    const float *grad = k_rows ? B : A;
    int64_t grad_len = k_rows ? o->shape.dim[o->shape.rank - 1] : a->shape.dim[a->shape.rank - 1];
    const uint8_t *given = ck->zero_guard >= 0 ? c->guards[ck->zero_guard].live : NULL;
    bool ready = given && c->compacted.kernel == ki - 1 && c->compacted.guard == ck->zero_guard &&
                 c->compacted.src == grad && c->compacted.len == grad_len;
    CpuRowsWay way = CPU_ROWS_DENSE;
    c->compacted.kernel = -1;
    c->compact[ck->gemm_out] = -1;
    if (gd && ck->compacts && ck->given_compact) { /* its readers follow Cpu.compact */
      if (cpu_gemm_rows_into(c->pool, c->gemm, A, gd->rows, a->shape.dim[a->shape.rank - 1], B, n->a.trans_b,
                             o->shape.dim[o->shape.rank - 1], out, &ck->epi, gd->idx, gd->n_live, c->rows.buf))
        c->compacted.kernel = ki, c->compacted.guard = ck->guard, c->compacted.src = A,
        c->compacted.len = a->shape.dim[a->shape.rank - 1];
      c->compact[ck->gemm_out] = ck->guard;
      return true;
    }
    if (gd) {
      if (cpu_gemm_given_rows(c->pool, c->gemm, A, gd->rows, a->shape.dim[a->shape.rank - 1], B, n->a.trans_b,
                              o->shape.dim[o->shape.rank - 1], out, &ck->epi, gd->live, gd->idx, gd->n_live,
                              gd->n_runs, gd->seg, ck->given_compact ? c->rows.buf : NULL, !k->dead_unread))
        c->compacted.kernel = ki, c->compacted.guard = ck->guard, c->compacted.src = A,
        c->compacted.len = a->shape.dim[a->shape.rank - 1];
      return true;
    }
    if (ck->epi.n == 1 && ck->epi.step[0].kind == GEMM_EPI_ADD && ck->epi.step[0].src == out)
      /* the addend's buffer is C (passes/memplan.c: gemm_accumulates_into) */
      way = cpu_gemm_live_rows(c->pool, c->gemm, A, &a->shape, n->a.trans_a, B, &b->shape, n->a.trans_b, 1.0f, out,
                               &o->shape, rows, given, ready);
    else if (ck->epi.n > 0)
      cpu_gemm_epilogue(c->pool, c->gemm, A, &a->shape, n->a.trans_a, B, &b->shape, n->a.trans_b, out, &o->shape,
                        &ck->epi);
    else
      way = cpu_gemm_live_rows(c->pool, c->gemm, A, &a->shape, n->a.trans_a, B, &b->shape, n->a.trans_b, 0.0f,
                               addr_of(c, n->out), &o->shape, rows, given, ready);
    if (way == CPU_ROWS_COMPACTED && given)
      c->compacted.kernel = ki, c->compacted.guard = ck->zero_guard, c->compacted.src = grad,
      c->compacted.len = grad_len;
    return true;
  }
  case KERNEL_GATHER: {
    const Value *t = &g->values.data[n->in[0]], *ix = &g->values.data[n->in[1]];
    int64_t row = shape_numel(&t->shape) / t->shape.dim[0], bad = -1;
    if (!cpu_gather(c->pool, addr_of(c, n->in[0]), t->shape.dim[0], row, addr_of(c, n->in[1]),
                    shape_numel(&ix->shape), addr_of(c, n->out), &bad)) {
      diag_error(d, n->loc, "gather: index %d at position %lld of '%s' is out of range [0, %lld)",
                 ((int32_t *)addr_of(c, n->in[1]))[bad], (long long)bad, ix->name,
                 (long long)t->shape.dim[0]);
      return false;
    }
    return true;
  }
  case KERNEL_SCATTER_ADD: {
    const Value *ix = &g->values.data[n->in[0]];
    int64_t row = shape_numel(&o->shape) / o->shape.dim[0], bad = -1;
    if (!cpu_scatter_add(c->pool, addr_of(c, n->in[0]), shape_numel(&ix->shape), addr_of(c, n->in[1]),
                         o->shape.dim[0], row, addr_of(c, n->out), &bad)) {
      diag_error(d, n->loc, "scatter_add: index %d at position %lld of '%s' is out of range [0, %lld)",
                 ((int32_t *)addr_of(c, n->in[0]))[bad], (long long)bad, ix->name,
                 (long long)o->shape.dim[0]);
      return false;
    }
    return true;
  }
  case KERNEL_CONCAT: {
    const void *ins[64];
    int64_t lens[64];
    BC_ASSERT(n->n_in <= 64);
    for (int i = 0; i < n->n_in; i++) {
      ins[i] = addr_of(c, n->in[i]);
      lens[i] = g->values.data[n->in[i]].shape.dim[n->a.axis];
    }
    cpu_concat(c->pool, n->n_in, ins, lens, &o->shape, n->a.axis, addr_of(c, n->out));
    return true;
  }
  case KERNEL_ALIAS: { /* a reshape, or a slice of rows starting that many elements in */
    int64_t from = n->op == OP_SLICE ? shape_slice_offset(&g->values.data[n->in[0]].shape, n->a.axis, n->a.start) : 0;
    void *src = (char *)addr_of(c, n->in[0]) + from * (int64_t)dtype_size(o->dtype), *dst = addr_of(c, n->out);
    if (src != dst) { /* a reshape the memory plan made no view: a copy over the pool */
      BC_ASSERT(dtype_size(o->dtype) == 4);
      int64_t len = shape_numel(&o->shape);
      Shape flat = shape_of(1, len);
      const void *in = src;
      cpu_concat(c->pool, 1, &in, &len, &flat, 0, dst);
    }
    return true;
  }
  case KERNEL_ATTENTION: {
    const CpuGuard *gd = guard_worth(c, ck);
    AttnDims a;
    RunContext ctx = {info->seed, info->step, info->example_offset};
    attn_dims(&a, g, n, &ctx);
    bool grad = n->op == OP_ATTENTION_GRAD;
    cpu_attention(c->pool, c->gemm, &a, addr_of(c, n->in[0]), addr_of(c, n->in[1]), addr_of(c, n->in[2]),
                  addr_of(c, n->in[3]), grad ? addr_of(c, n->in[4]) : NULL, addr_of(c, n->out), c->attn_scratch,
                  c->p.opts.off.zero_rows, gd ? gd->live : NULL);
    return true;
  }
  case KERNEL_LOOP: break;
  }
  BC_ASSERT(!"not a library kernel");
  return false;
}

static bool run_kernels(Exec *e, const RunContext *ctx, Diag *d) {
  Cpu *c = e->impl;
  const Graph *g = &c->p.graph;
  KernelRunInfo info = {ctx->seed, ctx->step, ctx->example_offset};
  double t0 = compiled_now_ns(), gemm = 0;
  const GradSync *sync = c->p.have_sync ? &c->p.sync : NULL;
  bool timed = c->p.profile || (sync && sync->hooks.step);
  c->compacted.kernel = -1;
  for (int i = 0; i < c->p.plan.kernels.n; i++) {
    CpuKernel *ck = &c->kernels[i];
    const Kernel *k = ck->k;
    for (int w = 0; w < c->p.plan.guards.list.n; w++) { /* the live rows of the guards used from here on */
      CpuGuard *gd = &c->guards[w];
      if (!gd->live || gd->first_kernel != i) continue;
      const RowGuard *rg = &c->p.plan.guards.list.data[w];
      row_guard_live(g, rg, addr_of(c, rg->input), gd->read_rows, gd->live);
      gd->n_live = gd->n_runs = 0;
      for (int64_t r = 0; r < gd->rows; r++) {
        gd->rank[r] = (int32_t)gd->n_live;
        if (gd->live[r]) {
          gd->n_runs += r == 0 || !gd->live[r - 1];
          gd->idx[gd->n_live++] = (int32_t)r;
        }
      }
      /* the rows a GEMM rounds its compacted rows up by read a live row
       * (an epilogue's mask reads the row idx says) */
      for (int64_t r = gd->n_live; r < gd->rows; r++) gd->idx[r] = gd->n_live ? gd->idx[gd->n_live - 1] : 0;
    }
    if (sync) grad_sync_before(sync, i, NULL);
    double ts = (timed || k->kind == KERNEL_GEMM) ? compiled_now_ns() : 0;
    const CpuGuard *gd = k->kind == KERNEL_LOOP ? guard_worth(c, ck) : NULL;
    if (gd) {
      GuardedCall gc = {{ck, &info}, gd, c->compact};
      pool_parallel_for(c->pool, ck->n_items, ck->grain, guarded_call, &gc);
    } else if (k->kind == KERNEL_LOOP) {
      LoopCall lc = {ck, &info};
      if (ck->n_items <= ck->grain) loop_call(&lc, 0, ck->n_items);
      else pool_parallel_for(c->pool, ck->n_items, ck->grain, loop_call, &lc);
    } else if (!run_library(c, g, ck, &info, d)) {
      return false;
    }
    if (timed || k->kind == KERNEL_GEMM) {
      double te = compiled_now_ns(), dt = te - ts;
      if (k->kind == KERNEL_GEMM) gemm += dt;
      if (c->p.profile || k->kind == KERNEL_GEMM) compiled_kernel_time(&c->p, i, dt);
      if (sync) grad_sync_after(sync, i, k->name, ts, te, NULL);
    } else if (sync) {
      grad_sync_after(sync, i, k->name, 0, 0, NULL);
    }
  }
  if (sync) grad_sync_end(sync, c->p.plan.kernels.n, NULL);
  c->p.stats.total_ns += compiled_now_ns() - t0;
  c->p.stats.gemm_ns += gemm;
  c->p.stats.n_runs++;
  return true;
}

static bool cpu_run(Exec *e, const RunContext *ctx, Diag *d) {
  unsigned fp_mode = flush_denormals_begin(e->impl);
  bool ok = run_kernels(e, ctx, d);
  flush_denormals_end(fp_mode);
  return ok;
}

static void *cpu_value_ptr(Exec *e, ValueId v, DType *t) {
  Cpu *c = e->impl;
  *t = e->graph->values.data[v].dtype;
  return addr_of(c, v);
}

const Backend backend_cpu = {
    .name = "cpu",
    .compiled = true,
    .gemm_epilogues = cpu_gemm_epilogues,
    .attention_grad_over_inputs = true,
    .host_memory = true,
    .supports_op = cpu_supports,
    .prepare = prepare,
    .release = release,
    .write = cpu_write,
    .read = cpu_read,
    .run = cpu_run,
    .stats = compiled_stats,
    .set_grad_sync = compiled_set_grad_sync,
    .value_ptr = cpu_value_ptr,
};
