/* row_guard.c — which rows of a value need no computing, by the data: a
 * row guard of value v is a graph input w (f32, at least two elements)
 * whose zero entries mark rows of v that a kernel may write as zeros
 * instead of computing. v's rows are its flat elements cut into numel(w)
 * equal blocks: row r is elements [r C, (r + 1) C), C = numel(v) / numel(w).
 *
 * A training step's MLM loss weighs each slot's cross-entropy by its
 * weight, 0 for the padding slots (pred_weights): the slot's logits, its
 * softmax statistics, the hidden rows of its head, and every gradient of
 * them are then guarded by pred_weights, so the head's GEMMs and loss
 * kernels run on the real slots alone.
 *
 * Two facts, each a guard:
 *  - zero (forward, in node order): the rows are exactly 0 where w is.
 *    w itself; a product with a zero-guarded factor; neg, relu, tanh and
 *    the other activations that keep 0; a sum or select of two
 *    zero-guarded values; a quotient with a zero-guarded numerator; the
 *    rows of a GEMM's zero-guarded A; reshapes, broadcasts, slices,
 *    concats and reductions that stay within rows.
 *  - no-matter (backward, in reverse node order): every reader of the
 *    value's rows where w is 0 makes nothing but guarded rows of its own
 *    output, or multiplies them by zeros: a product with a zero-guarded
 *    factor, a GEMM C = A^T B summing them against zero rows of the other
 *    operand, or a row-wise op (the zero rules' shapes) whose output is
 *    guarded. Graph outputs, the loss and parameter gradients never are
 *    (the caller reads them).
 * A value's guard is its zero fact, else its no-matter fact. Writing
 * zeros into the guarded rows of every kernel output keeps every value
 * the caller reads exactly as computed densely, given finite values
 * there (0 times a finite number is 0; the reference's rows guarded by
 * no-matter may hold anything finite, these hold 0).
 *
 * Requires: a graph of any stage (the final one: the kernels' values).
 * Produces: nothing in the graph; guard[v] per value (-1: none), and
 * the zero facts alone where asked. */
#include "passes.h"

#include <stdlib.h>

typedef struct {
  const Graph *g;
  ValueId *zero, *guard;
} Guards;

static int64_t numel_of(const Graph *g, ValueId v) { return shape_numel(&g->values.data[v].shape); }

/* Elements per row of v under guard w, or 0 when v does not cut into
 * numel(w) rows. */
static int64_t row_len(const Graph *g, ValueId v, ValueId w) {
  if (w < 0) return 0;
  int64_t n = numel_of(g, v), r = numel_of(g, w);
  return r > 0 && n % r == 0 ? n / r : 0;
}

/* Whether axis `axis` of s, with the axes after it, lies inside a row of
 * c elements (an op along it then keeps rows apart). */
static bool within_rows(const Shape *s, int axis, int64_t c) {
  int64_t inner = 1;
  for (int i = axis; i < s->rank; i++) inner *= s->dim[i];
  return c > 0 && inner > 0 && c % inner == 0;
}

/* Whether node n keeps the rows of its input `i` apart under guard w:
 * each row of n's output depends only on the same row of that input
 * (the shapes of the zero rules). */
static bool rowwise(const Graph *g, const Node *n, int i, ValueId w) {
  ValueId x = n->in[i];
  int64_t cx = row_len(g, x, w), co = row_len(g, n->out, w);
  if (!cx || !co) return false;
  const Shape *xs = &g->values.data[x].shape, *os = &g->values.data[n->out].shape;
  if (op_info[n->op].flags & OPF_ELEMENTWISE || n->op == OP_SELECT || n->op == OP_CAST || n->op == OP_RESHAPE)
    return true;
  switch (n->op) {
  case OP_BROADCAST: {
    int lead = os->rank - xs->rank;
    for (int a = 0; a < os->rank; a++)
      if ((a < lead || xs->dim[a - lead] != os->dim[a]) && !within_rows(os, a, co)) return false;
    return true;
  }
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
  case OP_SLICE:
  case OP_CONCAT: return within_rows(xs, n->a.axis, cx);
  case OP_MATMUL: /* the rows of C = A B (or A B^T) are rows of A */
    return i == 0 && !n->a.trans_a && xs->rank == 2 && g->values.data[n->in[1]].shape.rank == 2 &&
           cx % xs->dim[1] == 0;
  case OP_GATHER: return i == 1; /* a row of indices gathers a row */
  default: return false;
  }
}

/* The activations f with f(0) = 0. */
static bool keeps_zero(Op op) {
  switch (op) {
  case OP_NEG:
  case OP_TANH:
  case OP_RELU:
  case OP_SQRT:
  case OP_ERF:
  case OP_GELU:
  case OP_GELU_TANH:
  case OP_ABS: return true;
  default: return false;
  }
}

/* The zero fact of node n's output, from its inputs': the guard w and
 * the inputs whose zero rows under w make the output's (each must keep
 * its rows apart), or -1. */
static ValueId zero_of(const Guards *G, const Node *n) {
  const Graph *g = G->g;
  const ValueId *z = G->zero;
  if (g->values.data[n->out].dtype != DTYPE_F32) return -1;
  int from = 0, to = 1; /* the inputs [from, to) that must be zero-guarded by w */
  switch (n->op) {
  case OP_MUL: from = z[n->in[0]] >= 0 ? 0 : 1, to = from + 1; break; /* one zero factor does */
  case OP_ADD:
  case OP_SUB:
  case OP_MAX:
  case OP_MIN: to = 2; break;
  case OP_SELECT: from = 1, to = 3; break;
  case OP_CONCAT: to = n->n_in; break;
  case OP_DIV: /* a zero numerator */
  case OP_CAST:
  case OP_RESHAPE:
  case OP_BROADCAST:
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
  case OP_SLICE:
  case OP_MATMUL: break;
  default:
    if (!keeps_zero(n->op)) return -1;
  }
  ValueId w = z[n->in[from]];
  for (int i = from; i < to && w >= 0; i++)
    if (z[n->in[i]] != w || !rowwise(g, n, i, w)) w = -1;
  return w;
}

/* Whether reading v as input i of node n leaves n's output as it would be
 * whatever v's rows under w hold (finite). */
static bool reader_ok(const Guards *G, const Node *n, int i, ValueId w) {
  const Graph *g = G->g;
  const ValueId *z = G->zero;
  if (n->op == OP_MUL && z[n->in[1 - i]] == w && row_len(g, n->in[1 - i], w) == row_len(g, n->in[i], w))
    return true; /* times zero rows */
  if (n->op == OP_MATMUL && n->a.trans_a && !n->a.trans_b && i < 2) { /* C = A^T B sums over the rows */
    const Shape *a = &g->values.data[n->in[0]].shape, *b = &g->values.data[n->in[1]].shape;
    return a->rank == 2 && b->rank == 2 && a->dim[0] == numel_of(g, w) && z[n->in[1 - i]] == w;
  }
  return G->guard[n->out] == w && rowwise(g, n, i, w);
}

void row_guards(const Graph *g, ValueId *guard, ValueId *zero) {
  int nv = g->values.n;
  Guards G = {g, zero ? zero : bc_malloc(sizeof(ValueId) * (size_t)(nv ? nv : 1)), guard};
  for (int v = 0; v < nv; v++) G.zero[v] = guard[v] = -1;
  for (int i = 0; i < g->inputs.n; i++) {
    ValueId w = g->inputs.data[i];
    if (g->values.data[w].dtype == DTYPE_F32 && numel_of(g, w) >= 2) G.zero[w] = w;
  }
  for (int i = 0; i < g->nodes.n; i++) G.zero[g->nodes.data[i].out] = zero_of(&G, &g->nodes.data[i]);

  /* no-matter facts, readers first; a value any root reads has none */
  bool *root = bc_calloc((size_t)(nv ? nv : 1), sizeof(bool));
  for (int i = 0; i < g->outputs.n; i++) root[g->outputs.data[i]] = true;
  for (int i = 0; i < g->params.n; i++) /* gradients: data-parallel steps all-reduce them */
    if (g->values.data[g->params.data[i]].grad >= 0) root[g->values.data[g->params.data[i]].grad] = true;
  if (g->loss >= 0) root[g->loss] = true;
  /* per value: its readers (node, input slot) as a linked list */
  int n_uses = 0;
  for (int i = 0; i < g->nodes.n; i++) n_uses += g->nodes.data[i].n_in;
  int *head = bc_malloc(sizeof(int) * (size_t)(nv ? nv : 1)), *next = bc_malloc(sizeof(int) * (size_t)(n_uses + 1));
  int *use_node = bc_malloc(sizeof(int) * (size_t)(n_uses + 1)), *use_slot = bc_malloc(sizeof(int) * (size_t)(n_uses + 1));
  for (int v = 0; v < nv; v++) head[v] = -1;
  for (int i = 0, u = 0; i < g->nodes.n; i++)
    for (int s = 0; s < g->nodes.data[i].n_in; s++, u++) {
      ValueId v = g->nodes.data[i].in[s];
      use_node[u] = i, use_slot[u] = s, next[u] = head[v], head[v] = u;
    }
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    ValueId v = n->out;
    if (G.zero[v] >= 0) {
      guard[v] = G.zero[v];
      continue;
    }
    if (root[v] || head[v] < 0 || op_info[n->op].flags & OPF_SIDE_EFFECT) continue;
    /* the guard a reader offers: the first reader's zero factor or output guard */
    const Node *r0 = &g->nodes.data[use_node[head[v]]];
    int s0 = use_slot[head[v]];
    ValueId w = r0->op == OP_MUL && G.zero[r0->in[1 - s0]] >= 0 ? G.zero[r0->in[1 - s0]]
                : r0->op == OP_MATMUL && r0->a.trans_a && s0 < 2 ? G.zero[r0->in[1 - s0]]
                                                                 : guard[r0->out];
    bool ok = w >= 0 && row_len(g, v, w) > 0;
    for (int u = head[v]; ok && u >= 0; u = next[u]) ok = reader_ok(&G, &g->nodes.data[use_node[u]], use_slot[u], w);
    if (ok) guard[v] = w;
  }
  free(root);
  free(head);
  free(next);
  free(use_node);
  free(use_slot);
  if (!zero) free(G.zero);
}
