/* gemm_layout.c — GEMM operands in the layout the GEMM library runs
 * fastest: a product that reads its second operand transposed, C = A B^T
 * (a layer's d X = dY W^T, the MLM head's per column block), reads a copy
 * of B made transposed instead, C = A (B^T), where B is small next to A
 * (the copy costs a fraction of the product). oneDNN's NN kernel ran these
 * shapes 6% (the encoder's [4096,128] x [128,128]) to 11% (the MLM head's
 * [192,1712] x [1712,128]) faster than its NT one (bench/GEMM.md).
 *
 * The copy is a permute node just before the product; fuse makes it a
 * kernel of its own (a view read by a GEMM), which the CPU code generator
 * emits as register tiles (codegen/llvm_transpose.c). A slice of B (the
 * MLM head's column blocks, passes/chunk.c) folds into that copy: a
 * block's W^T is one copy, as its slice was.
 *
 * Requires: a scheduled graph, after chunk. Produces: the same nodes, the
 * products rewritten in place (every value keeps its id), each with its
 * copy placed just before it. Switched off by BC_NO_GEMM_LAYOUT. */
#include "passes.h"

#include <stdlib.h>

/* B at most this fraction of A's elements: the copy then costs at most a
 * quarter of a pass over A, against a product of 2 K flops per element of
 * C. */
enum { LAYOUT_MIN_RATIO = 4 };

/* Whether matmul node n reads B transposed and B is worth a copy. */
static bool wants_copy(const Graph *g, const Node *n) {
  if (n->op != OP_MATMUL || !n->a.trans_b || n->a.trans_a) return false;
  const Value *a = &g->values.data[n->in[0]], *b = &g->values.data[n->in[1]];
  return b->dtype == DTYPE_F32 && b->shape.rank == 2 &&
         shape_numel(&b->shape) * LAYOUT_MIN_RATIO <= shape_numel(&a->shape);
}

bool gemm_layout_run(Graph *g, Diag *d) {
  (void)d;
  int nn = g->nodes.n, n_new = 0;
  /* copy[i]: the permute node made for product i, or -1 */
  NodeId *copy = bc_malloc(sizeof(NodeId) * (size_t)(nn ? nn : 1));
  for (NodeId i = 0; i < nn; i++) {
    copy[i] = -1;
    if (!wants_copy(g, &g->nodes.data[i])) continue;
    graph_at_node(g, &g->nodes.data[i]);
    static const int swap[2] = {1, 0};
    ValueId b = g->nodes.data[i].in[1];
    ValueId bt = graph_permute(g, b, swap);
    graph_set_name(g, bt, arena_printf(&g->arena, "%s.T", g->values.data[b].name));
    Node *n = &g->nodes.data[i]; /* graph_permute may have moved the nodes */
    n->in[1] = bt;
    n->a.trans_b = false;
    copy[i] = g->values.data[bt].node;
    n_new++;
  }
  if (n_new > 0) { /* each copy just before its product */
    NodeId *order = bc_malloc(sizeof(NodeId) * (size_t)g->nodes.n);
    int k = 0;
    for (NodeId i = 0; i < nn; i++) {
      if (copy[i] >= 0) order[k++] = copy[i];
      order[k++] = i;
    }
    BC_ASSERT(k == g->nodes.n);
    graph_reorder(g, order);
    free(order);
  }
  free(copy);
  return true;
}
