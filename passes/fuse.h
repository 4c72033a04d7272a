/* fuse.h — the fusion decision: which graph nodes run together as one
 * kernel, and which values need a buffer. passes/ decides; codegen/
 * (kernel_ir.c) lowers each group into the kernel IR.
 *
 * Groups are numbered in execution order; running the groups in order, each
 * group's nodes in node order, computes the graph. A value is materialized
 * (gets a buffer) when it is read outside its group, is a graph output, the
 * loss, a parameter gradient, or is not computed by a node. */
#ifndef BC_FUSE_H
#define BC_FUSE_H

#include "../graph/ir.h"
#include "options.h"

typedef enum {
  GROUP_LOOP,        /* elementwise chains, row reductions, folded views */
  GROUP_COLREDUCE,   /* a reduction over a non-last axis (+ elementwise prologue) */
  GROUP_GEMM,        /* one matmul, and its epilogue (bias, activation, residual) */
  GROUP_GATHER,      /* one gather */
  GROUP_SCATTER_ADD, /* one scatter_add */
  GROUP_CONCAT,      /* one concat */
  GROUP_ALIAS,       /* one reshape of a materialized value: a view, no work */
  GROUP_ASSIGN,      /* an assign whose value could not be stored in place */
  GROUP_ATTENTION,   /* one attention or attention_grad */
} GroupKind;

/* Most nodes a GEMM's epilogue takes (fuse.c). */
enum { GEMM_EPILOGUE_MAX = 4 };

typedef struct {
  int n_groups;
  int *group_of;       /* per node: its group, or -1 for a view or generator
                          (broadcast, permute, slice, constant, iota, random)
                          folded into the kernels that read it */
  GroupKind *kind;     /* per group */
  Shape *domain;       /* per group: iteration domain of LOOP and COLREDUCE groups */
  int *col_axis;       /* per group: COLREDUCE: the reduced axis; else -1 */
  bool *materialized;  /* per value */
  int n_nodes, n_values;
} Fusion;

/* Groups g's nodes. With off->fuse (BC_NO_FUSE=1) every node is a group of
 * its own, except views (broadcast/permute/slice of a materialized value),
 * which are still folded into their readers; with off->view_fold
 * (BC_NO_VIEW_FOLD=1) views are never folded into the loads of their
 * readers: each runs in a LOOP group as a strided copy. off NULL = all on. */
bool fuse_run(const Graph *g, const OptSwitches *off, Fusion *out, Diag *d);
void fusion_free(Fusion *f);

/* The order the kernels run the nodes in: groups in order, each group's
 * nodes in node order, and every folded node just before the group that
 * first reads it. order gets g->nodes.n node ids. Fusion may move a node
 * into an earlier group, so this differs from the node order; the memory
 * planner needs the real one (see fusion_apply_order). */
void fusion_execution_order(const Graph *g, const Fusion *f, NodeId *order);
/* Reorders g's nodes into `order` and f's per-node data with them, so that
 * afterwards node order = execution order. */
void fusion_apply_order(Graph *g, Fusion *f, const NodeId *order);
/* After fusion_apply_order: kernel_of[i] (g->nodes.n entries) is the group
 * (= kernel) that runs node i; a folded node belongs to the group after it.
 * Non-decreasing, as memplan_run_kernels and the gradient buckets need. */
void fusion_kernel_of(const Graph *g, const Fusion *f, int *kernel_of);
/* Checks what the lowering and the memory planner rely on, after
 * fusion_apply_order: group ids in range and non-decreasing over the node
 * order, every node either in a group or a foldable kind, a value read by
 * another group (or by a library kernel) materialized, graph outputs, the
 * loss and parameter gradients materialized. False with one internal error
 * per violation. */
bool fusion_check(const Graph *g, const Fusion *f, Diag *d);
/* Readable listing: each group, its kind, domain and nodes (with their YAML
 * lines), then "groups: N (loop L, ...)". */
void fusion_print(const Graph *g, const Fusion *f, FILE *out);

#endif
