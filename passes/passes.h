/* passes.h — the middle end: turning a YAML model into a verified graph,
 * differentiating it, appending the optimizer, simplifying. One ordered
 * table in pipeline.c runs them (DESIGN §4).
 *
 * Every pass takes a Graph it may change in place and returns false with
 * diagnostics on a user error; a pass that breaks an IR invariant is a bug
 * caught by graph_verify (run after each pass in debug builds and with
 * BC_VERIFY=1). */
#ifndef BC_PASSES_H
#define BC_PASSES_H

#include "../graph/ir.h"

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
/* Names of the graphs a model file declares (heap array of interned
 * strings, caller frees the array); -1 with diagnostics on failure. */
int model_graph_names(const char *path, const char ***names, Diag *d);

/* autodiff.c — reverse mode from g->loss (f32, one element): appends the
 * backward nodes and sets Value.grad of every parameter that the loss
 * depends on (parameters it does not depend on get a zero gradient).
 * Requires: a verified graph with a loss. Produces: grads. */
bool autodiff_run(Graph *g, Diag *d);

/* optim.c — Adam with bias correction, appended as graph ops:
 *   t += 1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   [+ wd * p into g]
 * States "adam.t" (f32 scalar), "<param>.adam_m", "<param>.adam_v" (zeros);
 * the learning rate is the f32 scalar input "lr" so it can change between
 * steps without recompiling. Requires: autodiff. */
typedef struct {
  double beta1, beta2, eps, weight_decay;
} AdamOptions;
void adam_options_default(AdamOptions *o); /* d2l: 0.9, 0.999, 1e-8, 0 */
bool optim_adam_run(Graph *g, const AdamOptions *o, Diag *d);

/* simplify.c — constant folding, algebraic identities, CSE, dead-code
 * elimination (assigns, outputs and the loss are roots). */
bool simplify_run(Graph *g, Diag *d);

/* schedule.c — execution order: moves cheap input-only index computations
 * (attention masks, gather indices) to the front so their readers fuse. */
bool schedule_run(Graph *g, Diag *d);

/* pipeline.c */
typedef struct {
  const char *model_path;
  const char *graph_name; /* NULL = the model's first graph */
  const Setting *sets;
  int n_sets;
  bool train;         /* autodiff + optimizer */
  AdamOptions adam;
  const char *dump_after; /* pass name, "all", or NULL */
  FILE *dump;             /* where dumps go (stdout when NULL) */
} CompileOptions;
void compile_options_default(CompileOptions *o);
/* Runs the pass table into *out (caller frees with graph_free). */
bool pipeline_run(Graph *out, const CompileOptions *o, Diag *d);
/* Names of the passes in order, NULL-terminated. */
const char *const *pipeline_pass_names(void);

#endif
