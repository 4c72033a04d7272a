/* passes.h — the middle end: turning a YAML model into a verified graph,
 * differentiating it, appending the optimizer, simplifying, scheduling,
 * fusing, lowering to kernels and planning memory. One ordered table of
 * stages in pipeline.c runs them all over one Plan (DESIGN §4).
 *
 * Every stage changes the Plan and returns false with diagnostics on a user
 * error; a stage that breaks an invariant is a bug caught by the check run
 * after it (graph_verify, fusion_check, the kernel check, memplan_check) in
 * debug builds and with BC_VERIFY=1. */
#ifndef BC_PASSES_H
#define BC_PASSES_H

#include "../graph/ir.h"
#include "fuse.h"
#include "memplan.h"
#include "options.h"

/* A `--set name=value` override. `loc` is where it was given (file
 * "<command line>", line 0) for diagnostics. */
typedef struct {
  const char *key;
  const char *value;
} Setting;

/* expand.c — loads `path` (and its imports), resolves hparams (with
 * `sets` applied; an unknown key is an error), expands blocks and repeats
 * of graph `graph_name`, inserts broadcasts, infers shapes and dtypes.
 * On success *out is an initialized graph the caller frees; on failure
 * *out is left freed and `d` names the YAML file, line and column. */
bool model_expand(Graph *out, const char *path, const char *graph_name, const Setting *sets,
                  int n_sets, Diag *d);
/* model_expand from files held in memory (a checkpoint's Graph.sources):
 * files[0] is the main file, imports are looked up by the path the loader
 * joins for them, and nothing is read from the disk. */
bool model_expand_sources(Graph *out, const SourceFile *files, int n_files, const char *graph_name,
                          const Setting *sets, int n_sets, Diag *d);
/* Names of the graphs a model file declares (heap array of interned
 * strings, caller frees the array); -1 with diagnostics on failure. */
int model_graph_names(const char *path, const char ***names, Diag *d);

/* narrow.c — computations whose value is read only through slices of one
 * range along one axis (directly or row by row) compute that range only:
 * a classifier's last encoder layer on its <cls> rows. Every value keeps
 * its elements' values (random streams keyed by the unsliced shape).
 * Requires: an expanded graph, before autodiff. */
bool narrow_run(Graph *g, Diag *d);

/* row_guard.c — rows of values that need no computing, by the data. A
 * guard names a graph input whose entries mark rows dead: weights (f32,
 * two elements or more: row r dead where 0) or lengths (an attention's
 * valid_len, i32 [B], with seq = T: row (b, t) of B*T dead where t >=
 * valid_len[b]), and the rows live whatever it says (rows a gather reads:
 * the i32 values read_rows; positions t a slice reads: t_live's [start,
 * end) pairs). A kernel may write zeros into the dead rows of a guarded
 * value (its elements cut into row_guard_rows equal blocks) instead of
 * computing them, and every output, the loss and every gradient stays as
 * computed densely (given finite values there): MLM slots of weight 0,
 * padding tokens, the rows of a last encoder layer that no gather or
 * slice reads, and their gradients. */
typedef struct {
  ValueId input;
  int64_t seq; /* 0: weights; else lengths over seq positions */
  /* weights: over the input's elements [row0, row0 + n_rows) (n_rows 0:
   * all of them); a slice of the rows of a value guarded by all of them
   * (row_blocks.c's blocks) */
  int64_t row0, n_rows;
  /* picked: over the same rows as the lengths guard `parent` (input's
   * data unused), live only where read (read_rows, t_live): an encoder's
   * last layer, whose output is read at the MLM positions and <cls>. Every
   * row read live here is live in the parent too, so a zero fact under a
   * picked guard is one under its parent. -1: not picked. */
  int parent;
  VEC(ValueId) read_rows;
  VEC(int64_t) t_live;
} RowGuard;
typedef struct {
  VEC(RowGuard) list;
  int *guard; /* per value: index in list, or -1 */
  int *zero;  /* per value: the guard under which its dead rows are exactly 0
               * in the reference too (gradients), or -1; the others'
               * dead rows are merely unread */
} RowGuards;
/* An analysis: g is unchanged. Free with row_guards_free. */
void row_guards(const Graph *g, RowGuards *out);
void row_guards_free(RowGuards *r);
int64_t row_guard_rows(const Graph *g, const RowGuard *rg);
/* Whether guard a's dead rows include all of guard b's (a is b, or a
 * picked guard whose parent is b): a value guarded by a may be zeroed
 * where b says. */
bool row_guard_finer(const RowGuards *r, int a, int b);
/* live[r] for each of rg's rows, from the input's data and the data of
 * its read_rows (read_rows[k]: rg->read_rows.data[k]'s); returns how many
 * are live. An example of length <= 0 is live whole. */
int64_t row_guard_live(const Graph *g, const RowGuard *rg, const void *input, const int32_t *const *read_rows,
                       uint8_t *live);

/* autodiff.c — reverse mode from g->loss (f32, one element): appends the
 * backward nodes and sets Value.grad of every parameter that the loss
 * depends on (parameters it does not depend on get a zero gradient).
 * Requires: a verified graph with a loss. Produces: grads. */
bool autodiff_run(Graph *g, Diag *d);

/* optim.c — Adam with bias correction, appended as graph ops:
 *   [g *= min(1, clip / (||g||_2 + 1e-6)), the norm over all gradients]
 *   t += 1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   [p *= 1 - lr wd first]
 * States "adam.t" (f32 scalar), "<param>.adam_m", "<param>.adam_v" (zeros);
 * the learning rate is the f32 scalar input "lr" so it can change between
 * steps without recompiling. Weight decay is AdamW's (decoupled, not L2 in
 * the gradient) and only on parameters of rank >= 2 (not on biases and
 * layer-norm parameters). Requires: autodiff. */
typedef struct {
  double beta1, beta2, eps;
  double weight_decay; /* decoupled decay per unit of lr (0: none) */
  double clip;         /* > 0: the global gradient norm is clipped to it (0: none) */
} AdamOptions;
void adam_options_default(AdamOptions *o); /* d2l: 0.9, 0.999, 1e-8, no decay, no clipping */
bool optim_adam_run(Graph *g, const AdamOptions *o, Diag *d);

/* simplify.c — constant folding, algebraic identities, CSE (unless
 * off->cse), dead-code elimination (assigns, outputs and the loss are
 * roots). off NULL = all on. */
bool simplify_run(Graph *g, const OptSwitches *off, Diag *d);

/* schedule.c — execution order: moves cheap input-only index computations
 * (attention masks, gather indices) to the front so their readers fuse. */
bool schedule_run(Graph *g, Diag *d);

/* remat.c — rematerialization (plan stage, before fuse): pointwise forward
 * values whose backward readers are pointwise or reductions and whose
 * inputs are live there anyway are recomputed by copies of their nodes
 * placed before those readers, instead of being stored. */
bool remat_run(Graph *g, Diag *d);

/* row_blocks.c — row blocks (plan stage, after remat): a large GEMM output
 * and what is computed from it row by row (the MLM logits, their
 * cross-entropy and its gradient) are made one block of rows at a time,
 * where the GEMM ran; the readers that sum over the rows get the blocks'
 * sum, the others the blocks concatenated. block_bytes <= 0: two halves
 * of an output of at least ROW_BLOCKS_MIN_BYTES. */
enum { ROW_BLOCKS_MIN_BYTES = 48 << 20 };
bool row_blocks_run(Graph *g, int64_t block_bytes, Diag *d);

/* chunk.c — column blocks (plan stage, after remat): a large pointwise
 * value read only by GEMMs and column sums (the MLM logits' gradient) is
 * made and consumed one block of columns at a time; the originals are left
 * unread (fuse does not compute them). block_bytes <= 0: CHUNK_BYTES. */
enum { CHUNK_BYTES = 4 << 20 };
bool chunk_run(Graph *g, int64_t block_bytes, Diag *d);

/* gemm_layout.c — (plan stage, after chunk): a product reading its second
 * operand transposed, C = A B^T, where B is small next to A (a layer's
 * d X = dY W^T), reads a copy of B made transposed instead (a permute
 * node just before it), C = A (B^T): the GEMM library's NN kernel is
 * the faster one. */
bool gemm_layout_run(Graph *g, Diag *d);

/* schedule.c — gradient buckets for data-parallel training (runtime/dist.c).
 * The parameter gradients (Value.grad of every parameter, each value once)
 * are grouped greedily in the order a run produces them into buckets of at
 * most `bucket_bytes` (one larger gradient makes a bucket of its own, and a
 * bucket that reaches the size closes); a bucket also closes before the first step that
 * reads one of its gradients, so a reader never sees a gradient whose
 * all-reduce has not been issued. A "step" is what a backend runs at once:
 * a kernel (cpu, cuda) or a node (interp). Bucket b's gradients are
 * values[start[b] .. start[b+1]), all computed by step ready_after[b]; the
 * first step reading any of them is wait_before[b] (n_steps when none does).
 * ready_after is nondecreasing in b, so every rank issues the same
 * all-reduces in the same order. */
typedef struct {
  int n_buckets, n_steps;
  int *start;        /* n_buckets + 1 */
  ValueId *values;   /* start[n_buckets] gradients, in production order */
  int64_t *bytes;    /* per bucket */
  int *ready_after;  /* per bucket */
  int *wait_before;  /* per bucket */
  int64_t total_bytes;
} GradBuckets;
/* step_of[i]: the step computing node i of g (nondecreasing over the node
 * order); NULL = node i is step i. bucket_bytes <= 0 means the default. False
 * (with an error naming the value and step) when a step both produces a
 * gradient and reads it, as a kernel fusing a gradient with its optimizer
 * update would; *out is then empty. A graph without gradients gets zero
 * buckets. Free with grad_buckets_free. */
bool grad_buckets_build(const Graph *g, const int *step_of, int64_t bucket_bytes, GradBuckets *out, Diag *d);
void grad_buckets_free(GradBuckets *b);
/* Readable listing: per bucket its bytes, the step after which it is ready,
 * the first step reading it, and its gradients with dtype and shape.
 * step_names[s] names step s (kernels); NULL names steps by their node. */
void grad_buckets_print(const Graph *g, const GradBuckets *b, const char *const *step_names, FILE *f);
/* The bucket size data-parallel training uses: BC_DIST_BUCKET_BYTES, else
 * 256 KiB (262144): the small BERT's ~1 MB of gradients besides the
 * embedding tables then make 5-6 buckets spread over its backward pass. */
int64_t grad_bucket_bytes_default(void);

/* pipeline.c — the stages, in order; each a row of one table:
 *   graph stages (every backend): expand, narrow, autodiff and optim
 *   (with `train`), simplify, schedule;
 *   plan stages (compiled backends): fuse, lower, memplan.
 * pipeline_run runs the graph stages into a Graph, which an Exec keeps;
 * a compiled backend then runs the plan stages over a copy of it
 * (pipeline_run_plan, through codegen's kernel_plan_compile). */
typedef struct {
  const char *model_path;
  /* n_model_sources > 0: the model's files themselves (a checkpoint's);
   * model_path is then only their main file's name */
  const SourceFile *model_sources;
  int n_model_sources;
  const char *graph_name; /* NULL = the model's first graph */
  const Setting *sets;
  int n_sets;
  /* n_key_sets > 0: random ops key their streams by their shapes in the
   * graph expanded with `sets` then these (a bucketed graph: the padded
   * one's hparams, e.g. seq = max_len), so both draw the same numbers at
   * the same (example, position, feature); see random_key_map. */
  const Setting *key_sets;
  int n_key_sets;
  /* NULL: every output the graph declares. Else the outputs the caller
   * reads (NULL-terminated names, possibly none): expand drops the others,
   * so nothing computes what no one reads (the loss is kept either way). */
  const char *const *outputs;
  bool train;         /* autodiff + optimizer */
  AdamOptions adam;
  OptSwitches off;        /* optimizations switched off (BC_NO_<NAME>=1) */
  int64_t row_block_bytes; /* row_blocks.c's block size (BC_ROW_BLOCK_BYTES; 0 = two halves) */
  int64_t chunk_bytes;    /* chunk.c's block size (BC_CHUNK_BYTES; 0 = CHUNK_BYTES) */
  bool verify;            /* check after every stage (BC_VERIFY=1; debug builds: unless BC_VERIFY=0) */
  const char *dump_after; /* stage name, "all", or NULL (BC_DUMP) */
  FILE *dump;             /* where dumps go (stdout when NULL) */
} CompileOptions;
/* Defaults, with `off`, `verify` and `dump_after` read from the
 * environment: the one place that reads BC_NO_*, BC_VERIFY and BC_DUMP. */
void compile_options_default(CompileOptions *o);

typedef struct Plan Plan;
/* A stage provided by a later layer: kernel lowering lives in codegen/,
 * which passes/ may not include, so codegen hands its functions to the
 * pipeline in the Plan (codegen/kernel.h: kernel_lowering). run fills
 * p->kernels from p->graph and p->fusion; check verifies them (NULL: none);
 * print dumps them; free releases them. */
typedef struct {
  bool (*run)(Plan *p, const CompileOptions *o, Diag *d);
  bool (*check)(const Plan *p, Diag *d);
  void (*print)(const Plan *p, FILE *f);
  void (*free)(Plan *p);
} PlanLowering;

/* The one structure every stage works on. Zero it, set `lowering` for the
 * plan stages, and free it with plan_free. */
struct Plan {
  Graph graph;      /* from expand (or the copy pipeline_run_plan makes); after
                     * fuse its nodes are in kernel execution order (same value ids) */
  bool have_graph;
  Fusion fusion;    /* fuse */
  bool have_fusion;
  int *kernel_of;   /* fuse: per node, the kernel that runs it (fusion_kernel_of) */
  const PlanLowering *lowering;
  void *kernels;    /* lower: the lowering's result (codegen: a KernelPlan) */
  MemPlan mem;      /* memplan */
  bool have_mem;
};
void plan_free(Plan *p);

/* Runs the graph stages into *out (caller frees with graph_free); on
 * failure *out is left freed. An unknown o->dump_after is an error listing
 * every stage. */
bool pipeline_run(Graph *out, const CompileOptions *o, Diag *d);
/* Copies g into p->graph and runs the plan stages (p->lowering must be
 * set). On failure p holds what the stages made; plan_free it either way. */
bool pipeline_run_plan(Plan *p, const Graph *g, const CompileOptions *o, Diag *d);
/* Names of the stages in order, NULL-terminated. */
const char *const *pipeline_pass_names(void);
/* Whether stage `name` is a graph stage (runs for every backend); false
 * for plan stages and unknown names. */
bool pipeline_is_graph_stage(const char *name);

#endif
