/* narrow.c — computes only the rows a slice reads: where a value is read
 * only through slices of one range along one axis (directly, or through
 * computations that work row by row along that axis), the computations
 * producing it work on that range alone. A classifier reads one token of
 * its encoder's output, x[:, 0, :]: the last encoder layer's output
 * projection, feed-forward network, layer norms and dropout then run on
 * one row per example, and its attention on one query per example (over
 * all keys).
 *
 * Requires: an expanded graph, before autodiff (the backward is then
 * derived from the narrowed forward). Produces: an equivalent graph; every
 * value keeps its elements' values: a random op or an attention narrowed
 * to rows starting at 0 keeps drawing its elements' numbers (its stream is
 * keyed by the shape it had: Attrs.key_shape); one that would start
 * elsewhere is not narrowed.
 *
 * How: demands flow from consumers to producers in reverse order, a
 * value's demand being none, a range along an axis, or all of it (two
 * different ranges make all); then one rebuild emits every node as it was
 * and, for each node whose output is demanded as a range and that computes
 * rows independently along the axis, a narrowed copy reading its inputs'
 * narrowed copies (or slices of them); a slice of exactly a narrowed range
 * becomes that copy. Dead code goes at the end (what no root reaches). */
#include "passes.h"

#include <stdlib.h>

typedef enum { DEMAND_NONE, DEMAND_RANGE, DEMAND_ALL } DemandKind;
typedef struct {
  DemandKind kind;
  int axis;
  int64_t start, end;
} Demand;

static void demand_merge(Demand *to, Demand d) {
  if (d.kind == DEMAND_NONE || to->kind == DEMAND_ALL) return;
  if (to->kind == DEMAND_NONE || d.kind == DEMAND_ALL) {
    *to = d;
    return;
  }
  if (to->axis != d.axis || to->start != d.start || to->end != d.end) to->kind = DEMAND_ALL;
}

static const Demand ALL = {DEMAND_ALL, 0, 0, 0};

/* The axis of input `i` of node n along which it carries output axis
 * `axis` row by row, or -1 when the input is read whole (a weight, the
 * keys of an attention). *ok is false when n does not compute the rows of
 * `axis` independently (then nothing of it is narrowed). */
static int carried_axis(const Graph *g, const Node *n, int i, int axis, int64_t start, bool *ok) {
  const Shape *out = &g->values.data[n->out].shape, *in = &g->values.data[n->in[i]].shape;
  int lead = out->rank - in->rank; /* right-aligned dims (broadcast, matmul batch) */
  *ok = true;
  if (op_info[n->op].flags & OPF_ELEMENTWISE || n->op == OP_SELECT || n->op == OP_CAST) return axis;
  switch (n->op) {
  case OP_BROADCAST:
    return axis - lead >= 0 && in->dim[axis - lead] != 1 ? axis - lead : -1;
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
    *ok = n->a.axis != axis;
    return axis;
  case OP_MATMUL: {
    int r = out->rank;
    if (axis == r - 1 || (axis == r - 2 && n->a.trans_a)) { /* columns of C, or of A */
      *ok = false;
      return -1;
    }
    if (axis == r - 2) return i == 0 ? in->rank - 2 : -1; /* rows of C are rows of A; B read whole */
    return axis - lead >= 0 && in->dim[axis - lead] != 1 ? axis - lead : -1; /* a batch dim */
  }
  case OP_GATHER: /* rows of the indices */
    *ok = axis < g->values.data[n->in[1]].shape.rank;
    return i == 1 ? axis : -1;
  case OP_ATTENTION: /* query rows; keys, values and lengths whole */
    *ok = axis == 1 && (start == 0 || n->a.dropout == 0);
    return i == 0 ? 1 : -1;
  default:
    *ok = false;
    return -1;
  }
}

/* Whether a node with these inputs' demands can be narrowed to d. */
static bool narrowable(const Graph *g, const Node *n, Demand d) {
  if (d.kind != DEMAND_RANGE || n->op == OP_SLICE) return false;
  const Shape *out = &g->values.data[n->out].shape;
  if (d.end - d.start >= out->dim[d.axis]) return false;
  switch (n->op) {
  case OP_RANDOM:
    return d.start == 0;
  case OP_CONSTANT:
    return true;
  case OP_IOTA:
    return n->a.axis != d.axis || d.start == 0;
  default:
    break;
  }
  if (n->n_in == 0) return false;
  for (int i = 0; i < n->n_in; i++) {
    bool ok;
    carried_axis(g, n, i, d.axis, d.start, &ok);
    if (!ok) return false;
  }
  return true;
}

bool narrow_run(Graph *g, Diag *d) {
  (void)d;
  int nv = g->values.n;
  Demand *dem = bc_calloc((size_t)(nv ? nv : 1), sizeof(Demand));
  for (int i = 0; i < g->outputs.n; i++) dem[g->outputs.data[i]] = ALL;
  if (g->loss >= 0) dem[g->loss] = ALL;
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    Demand o = dem[n->out];
    if (op_info[n->op].flags & OPF_SIDE_EFFECT) o = ALL;
    if (n->op == OP_SLICE) {
      demand_merge(&dem[n->in[0]], (Demand){DEMAND_RANGE, n->a.axis, n->a.start, n->a.end});
      continue;
    }
    bool narrow = narrowable(g, n, o);
    for (int j = 0; j < n->n_in; j++) {
      if (o.kind == DEMAND_NONE) continue;
      bool ok;
      int ax = narrow ? carried_axis(g, n, j, o.axis, o.start, &ok) : -1;
      demand_merge(&dem[n->in[j]], ax >= 0 ? (Demand){DEMAND_RANGE, ax, o.start, o.end} : ALL);
    }
  }

  /* the rebuild: full copies of every node, narrowed copies beside them */
  Graph ng;
  ValueId *full = graph_rebuild_begin(&ng, g);
  ValueId *part = bc_malloc(sizeof(ValueId) * (size_t)(nv ? nv : 1)); /* the narrowed copy, or -1 */
  for (int i = 0; i < nv; i++) part[i] = -1;
  int narrowed = 0;
  ValueId in[64];
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    const Value *ov = &g->values.data[n->out];
    BC_ASSERT(n->n_in <= 64);
    ng.cur_loc = n->loc;
    ng.cur_block = n->block;
    for (int j = 0; j < n->n_in; j++) in[j] = full[n->in[j]];
    full[n->out] = graph_op(&ng, n->op, n->n_in, in, &n->a, NULL);
    ng.values.data[full[n->out]].name = ov->name;
    ng.values.data[full[n->out]].loc = ov->loc;
    Demand o = dem[n->out];
    if (n->op == OP_SLICE) { /* of exactly a narrowed range: that copy */
      ValueId src = n->in[0];
      Demand s = dem[src];
      if (part[src] >= 0 && s.axis == n->a.axis && s.start == n->a.start && s.end == n->a.end)
        full[n->out] = part[src];
      continue;
    }
    if (!narrowable(g, n, o)) continue;
    for (int j = 0; j < n->n_in; j++) {
      bool ok;
      int ax = carried_axis(g, n, j, o.axis, o.start, &ok);
      if (ax < 0) continue;
      Demand s = dem[n->in[j]];
      in[j] = part[n->in[j]] >= 0 && s.axis == ax && s.start == o.start && s.end == o.end
                  ? part[n->in[j]]
                  : graph_slice(&ng, full[n->in[j]], ax, o.start, o.end);
    }
    Attrs a = n->a;
    if (n->op == OP_RANDOM || n->op == OP_ATTENTION) { /* keep drawing the elements' numbers */
      if (a.key_shape.rank == 0) a.key_shape = n->op == OP_RANDOM ? ov->shape : n->a.shape;
    }
    if (n->op == OP_BROADCAST || n->op == OP_RANDOM || n->op == OP_CONSTANT || n->op == OP_IOTA)
      a.shape.dim[o.axis] = o.end - o.start;
    part[n->out] = graph_op(&ng, n->op, n->n_in, in, &a, NULL);
    ng.values.data[part[n->out]].name = ov->name;
    ng.values.data[part[n->out]].loc = ov->loc;
    narrowed++;
  }
  graph_rebuild_end(&ng, g, full);
  free(full);
  free(part);
  free(dem);
  if (narrowed == 0) { /* nothing to gain: keep the graph as it was */
    graph_free(&ng);
    return true;
  }

  graph_drop_dead(&ng); /* the full copies whose readers all read narrowed ones */
  graph_free(g);
  *g = ng;
  return true;
}
