/* remat.c — rematerialization: forward values the backward reads are
 * recomputed there, where that is free in memory, instead of stored.
 *
 * Requires: a scheduled training graph (node order = execution order, the
 * loss node between forward and backward). Produces: the same graph with,
 * for each rematerialized value, a copy of the nodes computing it placed
 * just before each backward reader, which then reads the copy.
 *
 * A forward value v qualifies when
 *  - its node is pointwise (elementwise, select, cast) and v is not kept
 *    (an output, the loss, a gradient);
 *  - every backward reader is a loop-kind node (pointwise or a reduction):
 *    the copy then fuses into the reader's kernel and is never stored;
 *  - each input of the copy is free to read there: a graph input,
 *    parameter or state, a kept value (or the source of a kept reshape),
 *    a value read at or after that reader
 *    anyway, a value at most 1/8 of v's size (a row statistic, a bias:
 *    keeping it alive costs little), or a reshape of such a value; failing
 *    that, a pointwise node, view, constant or iota computing it is copied
 *    too, up to REMAT_DEPTH nodes deep.
 * Then v's last reader is in the forward: it is not stored at all when it
 * fuses with its forward readers, and its buffer (the memory plan's
 * largest kind: softmax numerators over the vocabulary) is free before the
 * backward starts. The backward reads v's inputs, already live, instead of
 * v: no more memory traffic, one more evaluation of cheap arithmetic.
 *
 * Switched off by BC_NO_REMAT (options.h). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

enum { REMAT_DEPTH = 4 };

typedef struct {
  Graph *g;
  NodeId *last_use; /* per value: index of its last reader, -1 none */
  bool *kept;       /* per value: lives to the end (output, loss, gradient) */
  NodeId *before;   /* per node: the original node a copy runs before, -1 for originals */
  int n_orig;
} Remat;

static bool is_view(Op op) { return op == OP_BROADCAST || op == OP_PERMUTE || op == OP_SLICE; }
static bool is_loop_kind(Op op) { return op_is_pointwise(op) || op == OP_REDUCE_SUM || op == OP_REDUCE_MAX; }

/* Computed from graph inputs, constants and iotas only (one-hot labels,
 * masks): fuse already recomputes such values in each reader. */
static bool index_math(const Graph *g, ValueId u, int depth) {
  const Value *x = &g->values.data[u];
  if (depth > REMAT_DEPTH) return false;
  if (x->node < 0) return x->kind == VALUE_INPUT;
  const Node *p = &g->nodes.data[x->node];
  if (p->op == OP_CONSTANT || p->op == OP_IOTA) return true;
  if (!op_is_pointwise(p->op) && !is_view(p->op) && p->op != OP_RESHAPE) return false;
  for (int k = 0; k < p->n_in; k++)
    if (!index_math(g, p->in[k], depth + 1)) return false;
  return true;
}

/* u can be read as is by a node at index r, without v (of `numel`
 * elements) being stored. */
static bool free_to_read(const Remat *R, ValueId u, NodeId r, int64_t numel) {
  const Value *x = &R->g->values.data[u];
  if (x->node < 0 || R->kept[u] || R->last_use[u] >= r) return true;
  if (shape_numel(&x->shape) * 8 <= numel) return true;
  const Node *p = &R->g->nodes.data[x->node];
  return p->op == OP_RESHAPE && free_to_read(R, p->in[0], r, numel);
}

/* u can be read at r through copies of the nodes computing it. */
static bool can_copy(const Remat *R, ValueId u, NodeId r, int64_t numel, int depth) {
  if (depth > 0 && free_to_read(R, u, r, numel)) return true;
  const Node *p = &R->g->nodes.data[R->g->values.data[u].node];
  bool copyable = op_is_pointwise(p->op) || is_view(p->op) || p->op == OP_CONSTANT || p->op == OP_IOTA;
  if (!copyable || depth >= REMAT_DEPTH) return false;
  for (int k = 0; k < p->n_in; k++)
    if (!can_copy(R, p->in[k], r, numel, depth + 1)) return false;
  return true;
}

/* The value to read at r in place of u: u itself where free to read (not
 * at depth 0: that is the value being rematerialized), else a copy of its
 * node, appended to the graph to run before r. */
static ValueId copy_for(Remat *R, ValueId u, NodeId r, int64_t numel, int depth) {
  if (depth > 0 && free_to_read(R, u, r, numel)) return u;
  Graph *g = R->g;
  Node p = g->nodes.data[g->values.data[u].node]; /* a copy: graph_op appends */
  enum { MAX_IN = 4 };
  ValueId in[MAX_IN];
  BC_ASSERT(p.n_in <= MAX_IN);
  for (int k = 0; k < p.n_in; k++) in[k] = copy_for(R, p.in[k], r, numel, depth + 1);
  g->cur_loc = p.loc;
  g->cur_block = g->nodes.data[r].block;
  g->cur_scope = NULL;
  ValueId c = graph_op(g, p.op, p.n_in, in, &p.a, NULL);
  graph_set_name(g, c, arena_printf(&g->arena, "%s.remat", g->values.data[u].name));
  NodeId cn = g->values.data[c].node;
  g->nodes.data[cn].remat = true;
  R->before = bc_realloc(R->before, sizeof(NodeId) * (size_t)(cn + 1));
  R->before[cn] = r;
  return c;
}

/* last_use from the readers, a copy counting at the reader it runs before. */
static void count_uses(Remat *R) {
  const Graph *g = R->g;
  for (int v = 0; v < g->values.n; v++) R->last_use[v] = -1;
  for (int i = 0; i < g->nodes.n; i++) {
    NodeId at = i < R->n_orig ? i : R->before[i];
    for (int k = 0; k < g->nodes.data[i].n_in; k++) {
      ValueId u = g->nodes.data[i].in[k];
      if (R->last_use[u] < at) R->last_use[u] = at;
    }
  }
}

static NodeId loss_node(const Graph *g) { return g->loss >= 0 ? g->values.data[g->loss].node : -1; }

bool remat_run(Graph *g, Diag *d) {
  (void)d;
  NodeId L = loss_node(g);
  if (L < 0) return true;
  Remat R = {.g = g, .n_orig = g->nodes.n};
  int nv = g->values.n;
  /* copies add values: room for them, which no original reads */
  R.last_use = bc_malloc(sizeof(NodeId) * (size_t)(nv ? nv : 1));
  R.before = bc_malloc(sizeof(NodeId) * (size_t)(g->nodes.n ? g->nodes.n : 1));
  for (int i = 0; i < g->nodes.n; i++) R.before[i] = -1;
  count_uses(&R);
  R.kept = bc_calloc((size_t)(nv ? nv : 1), sizeof(bool));
  graph_kept_values(g, R.kept); /* a kept reshape's source too: the MLM logits computed as rows */

  SrcLoc saved_loc = g->cur_loc;
  const char *saved_scope = g->cur_scope;
  BlockId saved_block = g->cur_block;
  bool changed = false;
  for (NodeId i = 0; i < L; i++) {
    const Node *n = &g->nodes.data[i];
    ValueId v = n->out;
    if (!op_is_pointwise(n->op) || R.kept[v] || R.last_use[v] <= L || index_math(g, v, 0)) continue;
    int64_t numel = shape_numel(&g->values.data[v].shape);
    bool ok = true;
    for (NodeId r = L + 1; r < R.n_orig && ok; r++) {
      const Node *rn = &g->nodes.data[r];
      for (int k = 0; k < rn->n_in && ok; k++)
        if (rn->in[k] == v) ok = is_loop_kind(rn->op) && can_copy(&R, v, r, numel, 0);
    }
    if (!ok) continue;
    for (NodeId r = L + 1; r < R.n_orig; r++) {
      bool reads = false;
      for (int k = 0; k < g->nodes.data[r].n_in; k++) reads |= g->nodes.data[r].in[k] == v;
      if (!reads) continue;
      ValueId c = copy_for(&R, v, r, numel, 0);
      Node *rn = &g->nodes.data[r];
      for (int k = 0; k < rn->n_in; k++)
        if (rn->in[k] == v) rn->in[k] = c;
      changed = true;
    }
    /* copies are new values: the per-value arrays grow with the graph */
    R.last_use = bc_realloc(R.last_use, sizeof(NodeId) * (size_t)g->values.n);
    R.kept = bc_realloc(R.kept, sizeof(bool) * (size_t)g->values.n);
    for (int u = nv; u < g->values.n; u++) R.kept[u] = false;
    nv = g->values.n;
    count_uses(&R);
  }
  g->cur_loc = saved_loc;
  g->cur_scope = saved_scope;
  g->cur_block = saved_block;

  if (changed) {
    /* each copy runs right before the reader it was made for */
    NodeId *order = bc_malloc(sizeof(NodeId) * (size_t)g->nodes.n);
    int k = 0;
    for (NodeId i = 0; i < R.n_orig; i++) {
      for (NodeId c = R.n_orig; c < g->nodes.n; c++)
        if (R.before[c] == i) order[k++] = c;
      order[k++] = i;
    }
    BC_ASSERT(k == g->nodes.n);
    graph_reorder(g, order);
    free(order);
  }
  free(R.last_use);
  free(R.kept);
  free(R.before);
  return true;
}
