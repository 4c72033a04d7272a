/* schedule.c — the execution order: the node array is rewritten into the
 * order kernels will run in.
 *
 * Requires: a verified graph. Produces: the same nodes, reordered, still
 * topological. The one rule today: cheap index computations that depend
 * only on graph inputs, parameters and generators (attention masks from
 * valid_len, flat gather indices, position slices) move to the front, so
 * that the kernels consuming them can fuse with their other producers
 * instead of waiting for them. Everything else keeps the order autodiff and
 * the optimizer produced (forward, backward, updates), which already keeps
 * activations short-lived. BC_NO_SCHEDULE=1 keeps the original order. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

static bool cheap(Op op) {
  unsigned f = op_info[op].flags;
  return (f & (OPF_ELEMENTWISE | OPF_LAYOUT)) || op == OP_SELECT || op == OP_CAST ||
         op == OP_IOTA || op == OP_CONSTANT || op == OP_RANDOM;
}

bool schedule_run(Graph *g, Diag *d) {
  (void)d;
  int nn = g->nodes.n;
  /* early[i]: cheap and computed from inputs/params/generators only;
   * data[i]: early and reading at least one graph input or parameter
   * (directly or through early nodes): only those move, with the
   * generators they read. A node reading only generators (a dropout mask)
   * is better left where it is used. */
  bool *early = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  bool *data = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  for (int i = 0; i < nn; i++) {
    const Node *n = &g->nodes.data[i];
    if (!cheap(n->op)) continue;
    bool ok = true, reads = false;
    for (int j = 0; j < n->n_in && ok; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p >= 0 && !early[p]) ok = false;
      if ((p < 0 && g->values.data[n->in[j]].kind == VALUE_INPUT) || (p >= 0 && data[p])) reads = true;
    }
    early[i] = ok;
    data[i] = ok && reads;
  }
  bool *move = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  for (int i = nn - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    if (!data[i] && !move[i]) continue;
    move[i] = true;
    for (int j = 0; j < n->n_in; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p >= 0) move[p] = true; /* early by construction */
    }
  }
  /* stable partition: early nodes first, each part in its old order */
  Node *nodes = bc_malloc(sizeof(Node) * (size_t)(nn ? nn : 1));
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < nn; i++)
      if (move[i] == (pass == 0)) nodes[k++] = g->nodes.data[i];
  memcpy(g->nodes.data, nodes, sizeof(Node) * (size_t)nn);
  for (int i = 0; i < nn; i++) g->values.data[g->nodes.data[i].out].node = i;
  free(nodes);
  free(early);
  free(data);
  free(move);
  return true;
}
