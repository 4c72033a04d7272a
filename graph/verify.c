/* verify.c — the IR verifier, run after every pass in debug builds (and with
 * BC_VERIFY=1). It checks the invariants listed in ir.h and re-infers every
 * node's output type; a failure is a compiler bug, reported with the node's
 * location so the offending YAML line is at hand. */
#include "ir.h"

#include <string.h>

bool graph_verify(const Graph *g, Diag *d) {
  int before = d->n_errors;
  const Value *vals = g->values.data;
  for (int i = 0; i < g->values.n; i++) {
    const Value *v = &vals[i];
    if (v->kind == VALUE_NODE) {
      if (v->node < 0 || v->node >= g->nodes.n || g->nodes.data[v->node].out != i)
        diag_error(d, v->loc, "internal: value %d '%s' has a bad producer", i, v->name);
    } else if (v->node != -1) {
      diag_error(d, v->loc, "internal: %s value %d has a producer", v->name, i);
    }
    if (v->shape.rank < 0 || v->shape.rank > BC_MAX_RANK)
      diag_error(d, v->loc, "internal: value '%s' has rank %d", v->name, v->shape.rank);
    if (v->dtype != DTYPE_F32 && v->dtype != DTYPE_I32)
      diag_error(d, v->loc, "internal: value '%s' has dtype %s", v->name, dtype_name(v->dtype));
    if (v->grad >= g->values.n) diag_error(d, v->loc, "internal: bad gradient id on '%s'", v->name);
  }
  /* ready[v]: defined before the node being checked */
  bool *ready = bc_calloc((size_t)(g->values.n ? g->values.n : 1), sizeof(bool));
  for (int i = 0; i < g->values.n; i++)
    if (vals[i].kind != VALUE_NODE) ready[i] = true;
  for (int i = 0; i < g->nodes.n && d->n_errors == before; i++) {
    const Node *n = &g->nodes.data[i];
    for (int j = 0; j < n->n_in; j++) {
      if (n->in[j] < 0 || n->in[j] >= g->values.n) {
        diag_error(d, n->loc, "internal: node %d (%s) reads value id %d", i, op_info[n->op].name, n->in[j]);
      } else if (!ready[n->in[j]]) {
        diag_error(d, n->loc, "internal: node %d (%s) reads '%s' before it is computed", i,
                   op_info[n->op].name, vals[n->in[j]].name);
      }
    }
    if (n->block < -1 || n->block >= g->blocks.n)
      diag_error(d, n->loc, "internal: node %d (%s) names block instance %d of %d", i, op_info[n->op].name,
                 n->block, g->blocks.n);
    if (d->n_errors != before) break;
    Attrs a = n->a;
    DType t;
    Shape s;
    if (!shape_infer(g, n->op, n->n_in, n->in, &a, &t, &s, n->loc, d)) {
      diag_error(d, n->loc, "internal: node %d (%s) no longer type-checks", i, op_info[n->op].name);
      break;
    }
    const Value *o = &vals[n->out];
    if (t != o->dtype || !shape_eq(&s, &o->shape)) {
      char b0[96], b1[96];
      diag_error(d, n->loc, "internal: node %d (%s) computes %s %s but its value says %s %s", i,
                 op_info[n->op].name, dtype_name(t), shape_str(&s, b0), dtype_name(o->dtype),
                 shape_str(&o->shape, b1));
    }
    ready[n->out] = true;
  }
  free(ready);
  /* unique names for inputs, params, states */
  const VEC(ValueId) *lists[3] = {(void *)&g->inputs, (void *)&g->params, (void *)&g->states};
  for (int l = 0; l < 3; l++)
    for (int i = 0; i < lists[l]->n; i++) {
      ValueId v = lists[l]->data[i];
      if (v < 0 || v >= g->values.n) {
        diag_error(d, SRCLOC_NONE, "internal: list entry %d out of range", v);
        continue;
      }
      if (graph_find(g, vals[v].name) != v)
        diag_error(d, vals[v].loc, "internal: name '%s' is not unique", vals[v].name);
    }
  if (g->loss >= 0 && (g->loss >= g->values.n || shape_numel(&vals[g->loss].shape) != 1))
    diag_error(d, SRCLOC_NONE, "internal: the loss is not a one-element value");
  return d->n_errors == before;
}
