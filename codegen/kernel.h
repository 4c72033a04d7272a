/* kernel.h — the kernel IR: what the fusion pass produces and what the
 * emitters (llvm_emit.c for CPUs, cuda_emit.c for GPUs) and the runtimes
 * consume. A KernelPlan is an ordered list of kernels that together compute
 * a graph's nodes in schedule order.
 *
 * Kinds:
 *  - KERNEL_LOOP: generated code over an iteration domain (a shape). Its body
 *    is a list of scalar instructions in SSA form (KInst), evaluated at every
 *    point of the domain. Values are either *full* (vary over the whole
 *    domain) or *row* values (constant along the last domain axis: loads of
 *    [.., 1]-shaped tensors, row reductions, and arithmetic on those).
 *    KI_REDUCE with axis == rank-1 reduces a full value over the last axis
 *    into a row value ("row kernel": softmax, layer norm, cross-entropy).
 *    When `col_axis` >= 0 the kernel is a column reduction instead: its one
 *    KI_REDUCE sums or maxes over domain axis col_axis (< rank-1) and it
 *    stores only that result (bias and layer-norm parameter gradients).
 *  - KERNEL_GEMM: one matmul node as a library call (cblas_sgemm / cuBLAS),
 *    batched over the batch dims.
 *  - KERNEL_GATHER, KERNEL_SCATTER_ADD, KERNEL_CONCAT: one node each, run by
 *    the runtime's own loops (row copies).
 *  - KERNEL_ALIAS: a reshape of a materialized value, or a slice of its
 *    rows: no work; the output shares the input's buffer (the memory plan
 *    places it so; where it could not, the runtime copies).
 *  - KERNEL_ATTENTION: one attention or attention_grad node, run by the
 *    runtime (runtime/attention.h): per (example, head) the [Tq, Tk]
 *    weights live in a scratch block of their own, never in the arena.
 *
 * Memory access: every tensor a LOOP kernel reads or writes is a KView: an
 * element offset plus one stride per domain axis (0 = broadcast along that
 * axis). Broadcasts, permutes and slices of materialized values are folded
 * into views, so they cost no kernel of their own.
 *
 * Invariants: instruction operands precede their users; a LOOP kernel's
 * KI_STORE of a full value writes a view with the domain's shape, of a row
 * value a view whose last stride is 0; every graph value read by a later
 * kernel or by the caller is materialized (has a buffer). */
#ifndef BC_KERNEL_H
#define BC_KERNEL_H

#include "../passes/passes.h"

typedef enum {
  KERNEL_LOOP,
  KERNEL_GEMM,
  KERNEL_GATHER,
  KERNEL_SCATTER_ADD,
  KERNEL_CONCAT,
  KERNEL_ALIAS,
  KERNEL_ATTENTION,
} KernelKind;

typedef struct {
  ValueId value;                /* the graph value whose buffer this views */
  int64_t offset;               /* in elements */
  int64_t stride[BC_MAX_RANK];  /* elements per step along each domain axis */
} KView;

typedef enum {
  KI_LOAD,   /* view -> value */
  KI_CONST,  /* imm */
  KI_UNARY,  /* op(a) */
  KI_BINARY, /* op(a, b) */
  KI_SELECT, /* a != 0 ? b : c */
  KI_CAST,   /* a converted to dtype */
  KI_IOTA,   /* index along domain axis `axis` */
  KI_RANDOM, /* Philox uniform: key, linear index in the domain (+ example offset) */
  KI_REDUCE, /* op = OP_REDUCE_SUM or OP_REDUCE_MAX of a over domain axis `axis` */
  KI_STORE,  /* a -> view */
} KInstKind;

typedef struct {
  KInstKind kind;
  Op op;        /* KI_UNARY, KI_BINARY, KI_REDUCE */
  int a, b, c;  /* operand instruction indices (-1 unused) */
  int view;     /* KI_LOAD, KI_STORE: index into Kernel.views */
  double imm;   /* KI_CONST */
  int axis;     /* KI_IOTA, KI_REDUCE */
  uint32_t key; /* KI_RANDOM */
  DType dtype;  /* of the result (of the stored value for KI_STORE) */
  bool row;     /* constant along the last domain axis */
  NodeId node;  /* the graph node this implements, or -1 */
} KInst;

/* How many of a, b, c instruction kind `kind` reads, and operand `slot`. */
static inline int kinst_n_operands(KInstKind kind) {
  switch (kind) {
  case KI_UNARY:
  case KI_CAST:
  case KI_REDUCE:
  case KI_STORE: return 1;
  case KI_BINARY: return 2;
  case KI_SELECT: return 3;
  default: return 0;
  }
}
static inline int kinst_operand(const KInst *in, int slot) {
  return slot == 0 ? in->a : slot == 1 ? in->b : in->c;
}

typedef struct {
  KernelKind kind;
  const char *name; /* "k7_sub_exp_reduce_sum_div": index and ops; interned */
  NodeId first_node; /* the node that opened it (GEMM etc.: the node) */
  Shape domain;      /* LOOP */
  int col_axis;      /* LOOP: -1, or the axis of a column reduction */
  Shape key_shape;   /* LOOP: the key shape of its random ops (random_key_map;
                      * rank 0: the domain's own) */
  VEC(KView) views;
  VEC(KInst) insts;
  VEC(NodeId) nodes; /* every graph node computed here, in order */
  /* LOOP (rows of the domain: work items) and GEMM (rows of C = A B): the
   * row guard (KernelPlan.guards; passes/row_guard.c) whose dead rows the
   * runtime may write as zeros in every output instead of computing, or
   * -1. Set only where each output cuts into one contiguous block per
   * row. */
  int guard;
  /* Guarded, and no kernel reads its outputs' dead rows (each reader is
   * a LOOP kernel under the same guard that reads row r at work item r
   * only; no output is zero-guarded): the runtime may leave them
   * unwritten, not zeroed. */
  bool dead_unread;
  /* GEMM with dead_unread: the runtime may write C compacted (the
   * guard's live rows in order, at C's start), which its readers (LOOP
   * kernels under the same guard) then read so. */
  bool compact_out;
  /* GEMM: a guard whose dead rows are zero in the operand rows a GEMM
   * over live rows would scan (A's of C = A B; the K rows of C = A^T B,
   * in A or B): the guard's live rows stand for the scan. -1: none. */
  int zero_rows_guard;
} Kernel;

typedef struct {
  VEC(Kernel) kernels;
  bool *materialized; /* per graph value: has a buffer (else lives in registers) */
  int n_values;
  OptSwitches off;    /* what the emitters must not do (off.float4, off.dedup: cuda_emit.c) */
  RowGuards guards;   /* of the graph's values (Kernel.guard) */
} KernelPlan;

/* ---- CPU ABI of a compiled LOOP kernel (llvm_emit.c builds it, cpu.c calls it)
 *
 *   void kernel(void *const *bufs, int64_t begin, int64_t end, const KernelRunInfo *info);
 *
 * bufs[i] is the base address of the buffer of views[i].value (float* for
 * f32, int32_t* for i32); the kernel adds views[i].offset itself. Work items
 * [begin, end) are:
 *   - col_axis < 0: rows of the domain, numel(domain) / domain[rank-1]; row r
 *     is the multi-index of the leading rank-1 axes in row-major order.
 *   - col_axis >= 0: blocks of output columns: each row of the output
 *     (numel(domain) / (domain[col_axis] * domain[rank-1]) of them) is cut
 *     into blocks of kernel_col_block(k) columns along the last axis (one
 *     block, the whole row, unless there are few rows); item = row *
 *     blocks per row + block, and it reduces over col_axis for its columns.
 *     A column's sum is the same, in the same order, whatever the cut.
 * Items are independent, so the runtime splits them over threads. */
typedef struct {
  uint64_t seed;
  uint32_t step;
  int64_t example_offset;
} KernelRunInfo;
typedef void (*KernelFn)(void *const *bufs, int64_t begin, int64_t end, const KernelRunInfo *info);
/* Number of work items of a LOOP kernel, as above. */
int64_t kernel_work_items(const Kernel *k);
/* Columns per work item of a column kernel (the last axis, or blocks of a
 * multiple of 64 columns when there are fewer than 16 output rows). */
int64_t kernel_col_block(const Kernel *k);

/* kernel_ir.c: lowers the fusion groups of g (passes/fuse.h) into kernels,
 * one per group, in group order, with their row guards
 * (kernel_plan_guards). The plan refers to g's ids; free with
 * kernel_plan_free. */
bool kernel_plan_build(const Graph *g, const Fusion *f, KernelPlan *out, Diag *d);
void kernel_plan_free(KernelPlan *p);
/* kernel_guard.c: p->guards (passes/row_guard.c) and each kernel's guard. */
void kernel_plan_guards(const Graph *g, KernelPlan *p);

/* The `lower` stage of the pipeline (passes/pipeline.c), handed to it in
 * Plan.lowering: run = kernel_plan_build of p->graph and p->fusion into a
 * heap KernelPlan in p->kernels; check = kernel_plan_check; print =
 * kernel_plan_print and, when the graph has parameter gradients, the
 * gradient buckets in kernel order (what cpu and cuda all-reduce). */
extern const PlanLowering kernel_lowering;

/* The plan stages every compiled backend runs (pipeline_run_plan with
 * kernel_lowering): copies g into *exec (an initialized graph the caller
 * frees; same value ids as g, nodes in kernel execution order), fuses,
 * lowers the kernels and plans memory, with o's switches, checks and dumps
 * (o NULL: compile_options_default, i.e. the environment). False with
 * diagnostics on failure, with nothing left to free. */
bool kernel_plan_compile(const Graph *g, const CompileOptions *o, Graph *exec, KernelPlan *plan, MemPlan *mem,
                         Diag *d);
/* Checks the invariants above: operands precede their users, views and
 * stores name buffers (materialized values) of the graph, one kernel per
 * fusion group. False with one internal error per violation. */
bool kernel_plan_check(const Graph *g, const KernelPlan *p, Diag *d);
/* Readable listing: each kernel, its domain, ops and the YAML lines. */
void kernel_plan_print(const Graph *g, const KernelPlan *p, FILE *f);
/* Whether LOOP kernels a and b have the same code up to their views'
 * offsets (the layers of an encoder, the column blocks of passes/chunk.c):
 * one compiled function then runs both, b's views given base addresses
 * shifted by b's offset minus a's, since the code adds a's. */
bool kernel_same_code(const Kernel *a, const Kernel *b);
/* Number of kernels of a kind (KERNEL_LOOP etc.), for tests. */
int kernel_plan_count(const KernelPlan *p, KernelKind kind);

#endif
