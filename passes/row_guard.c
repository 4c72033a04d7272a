/* row_guard.c — which rows of a value need no computing, by the data. A
 * row guard (passes.h: RowGuard) names an input and how its entries mark
 * rows dead:
 *  - weights (f32, at least two elements): row r is dead where input[r]
 *    is 0: pretraining's MLM slots of weight 0; or where input[row0 + r]
 *    is 0, over a slice of them (row_blocks.c's blocks of those slots);
 *  - lengths (an attention's valid_len, i32 [B]) with a sequence length T:
 *    row (b, t) of B*T is dead where t >= input[b]: padding tokens;
 *  - picked, over the rows of a lengths guard (its parent): every row is
 *    dead but those picked out below. An encoder's last layer, read at
 *    the MLM positions and <cls> only. Each has its parent, and comes
 *    first wherever the first guard that fits is taken.
 * Rows that some reader picks out (the indices of a gather of the value's
 * rows, a slice of positions t) are live whatever the input says, in a
 * picked guard and its parent both: a zero fact under a picked guard is
 * then one under its parent too (row_guard_finer), and facts under both
 * meet in the parent. A value's rows are its flat elements cut into as
 * many equal blocks as the guard has rows.
 *
 * Two facts, each a guard:
 *  - zero (forward, in node order): the dead rows are exactly 0. The
 *    weights themselves; a constant 0; a product with a zero-guarded
 *    factor (or relu_grad with either operand zero-guarded, gelu_grad with
 *    its gradient); neg, relu, tanh and the other activations that keep 0; a sum
 *    or select of zero-guarded values; a quotient with a zero-guarded
 *    numerator; the rows of a GEMM's zero-guarded A; reshapes,
 *    broadcasts, slices, concats and reductions that stay within rows.
 *    And, of an attention's backward, the gradients of masked keys and
 *    values, and of queries whose output gradient is zero-guarded; a
 *    scatter-add's rows no index hits (its indices made live); a select
 *    of one position t, 0 elsewhere (that t made live: a slice's
 *    gradient).
 *  - no-matter (backward, in reverse node order): every reader of the
 *    value's dead rows makes nothing but dead rows of its own output, or
 *    multiplies them by zeros: a product (or relu_grad, or gelu_grad of a
 *    zero-guarded gradient) with a zero-guarded factor, a
 *    GEMM C = A^T B summing them against zero rows of the other operand, a
 *    row-wise op (the zero rules' shapes) whose output is guarded alike
 *    or finer, an attention reading them as masked keys or values, or as
 *    queries (its backward: queries whose output gradient is zero), a
 *    gather or a slice of positions whose rows are made live. Graph
 *    outputs, the loss and parameter gradients never are (the caller
 *    reads them).
 * A value's guard is its zero fact, else its no-matter fact. Writing zeros
 * into the dead rows of every kernel output keeps every value the caller
 * reads exactly as computed densely, given finite values there (0 times a
 * finite number is 0; the reference's no-matter rows may hold anything
 * finite, these hold 0: codegen keeps a kernel that would make an
 * infinity of such a 0 from zeroing them). A masked key weighs exactly 0: its score is -1e6
 * below the others (an example of length 0 or less has no dead rows).
 *
 * Requires: a graph of any stage (the final one: the kernels' values).
 * Produces: nothing in the graph; RowGuards. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

enum { ANY = -2 }; /* zero fact of a constant 0: zero under every guard */

typedef struct {
  const Graph *g;
  RowGuards *r;
  int *zero, *guard;
} Guards;

static int64_t numel_of(const Graph *g, ValueId v) { return shape_numel(&g->values.data[v].shape); }

int64_t row_guard_rows(const Graph *g, const RowGuard *rg) {
  if (rg->seq > 0) return g->values.data[rg->input].shape.dim[0] * rg->seq;
  return rg->n_rows > 0 ? rg->n_rows : numel_of(g, rg->input);
}

/* The (not picked) guard of (input, seq) over rows [row0, row0 + n_rows)
 * of weights, added if new. */
static int guard_id_rows(Guards *G, ValueId input, int64_t seq, int64_t row0, int64_t n_rows) {
  for (int i = 0; i < G->r->list.n; i++) {
    const RowGuard *rg = &G->r->list.data[i];
    if (rg->input == input && rg->seq == seq && rg->parent < 0 && rg->row0 == row0 && rg->n_rows == n_rows) return i;
  }
  vec_push(&G->r->list, ((RowGuard){.input = input, .seq = seq, .parent = -1, .row0 = row0, .n_rows = n_rows}));
  return G->r->list.n - 1;
}
static int guard_id(Guards *G, ValueId input, int64_t seq) { return guard_id_rows(G, input, seq, 0, 0); }

bool row_guard_finer(const RowGuards *r, int a, int b) {
  return a >= 0 && b >= 0 && (a == b || r->list.data[a].parent == b);
}

/* Rows made live in guard w: a gather's indices, positions [t0, t1); in
 * its parent too, which keeps a picked guard's live rows among the
 * parent's. */
static void add_read_rows(Guards *G, int w, ValueId idx) {
  for (; w >= 0; w = G->r->list.data[w].parent) {
    RowGuard *rg = &G->r->list.data[w];
    bool have = false;
    for (int k = 0; k < rg->read_rows.n && !have; k++) have = rg->read_rows.data[k] == idx;
    if (!have) vec_push(&rg->read_rows, idx);
  }
}
static void add_t_live(Guards *G, int w, int64_t t0, int64_t t1) {
  for (; w >= 0; w = G->r->list.data[w].parent) {
    vec_push(&G->r->list.data[w].t_live, t0);
    vec_push(&G->r->list.data[w].t_live, t1);
  }
}

/* Whether v's dead rows under w are exactly 0: its zero fact is w or a
 * guard finer than w. */
static bool zero_under(const Guards *G, ValueId v, int w) { return row_guard_finer(G->r, G->zero[v], w); }

/* Elements per row of v under guard w, or 0 when v does not cut into its
 * rows. */
static int64_t row_len(const Guards *G, ValueId v, int w) {
  if (w < 0) return 0;
  int64_t n = numel_of(G->g, v), r = row_guard_rows(G->g, &G->r->list.data[w]);
  return r > 0 && n % r == 0 ? n / r : 0;
}

/* Whether axis `axis` of s, with the axes after it, lies inside a row of
 * c elements (an op along it then keeps rows apart). */
static bool within_rows(const Shape *s, int axis, int64_t c) {
  int64_t inner = 1;
  for (int i = axis; i < s->rank; i++) inner *= s->dim[i];
  return c > 0 && inner > 0 && c % inner == 0;
}

/* Whether axis `axis` of v is the position t of lengths guard w: v is
 * [B, T, ..] as w's rows are. */
static bool is_position_axis(const Guards *G, ValueId v, int axis, int w) {
  const RowGuard *rg = &G->r->list.data[w];
  const Shape *s = &G->g->values.data[v].shape;
  return rg->seq > 0 && axis == 1 && s->rank >= 2 && s->dim[1] == rg->seq &&
         s->dim[0] == G->g->values.data[rg->input].shape.dim[0];
}

/* Whether node n keeps the rows of its input `i` apart under guard w:
 * each row of n's output depends only on the same row of that input
 * (the shapes of the zero rules). */
static bool rowwise(const Guards *G, const Node *n, int i, int w) {
  const Graph *g = G->g;
  ValueId x = n->in[i];
  int64_t cx = row_len(G, x, w), co = row_len(G, n->out, w);
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
  case OP_MATMUL: /* the rows of C = A B (or A B^T) are rows of A, batch dims folded */
    return i == 0 && !n->a.trans_a && g->values.data[n->in[1]].shape.rank == 2 && cx % xs->dim[xs->rank - 1] == 0;
  case OP_GATHER: return i == 1; /* a row of indices gathers a row */
  case OP_ATTENTION: return i == 0 && cx == co; /* a query row makes an output row */
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

/* Both zero facts, as one: ANY yields to the other, a finer guard to the
 * one it refines; -1 when they differ otherwise. */
static int meet(const Guards *G, int a, int b) {
  if (a == ANY || b == ANY) return a == ANY ? b : a;
  return row_guard_finer(G->r, a, b) ? b : row_guard_finer(G->r, b, a) ? a : -1;
}

/* The lengths guard of an attention or attention_grad node over T
 * positions, or -1 when its valid_len is not an i32 vector of B. */
static int attention_guard(Guards *G, const Node *n, int64_t T) {
  const Value *vl = &G->g->values.data[n->in[3]], *q = &G->g->values.data[n->in[0]];
  if (vl->dtype != DTYPE_I32 || vl->shape.rank != 1 || vl->shape.dim[0] != q->shape.dim[0]) return -1;
  return guard_id(G, n->in[3], T);
}

/* Whether w is over the rows of node n's (an attention's or its
 * backward's) queries: their lengths guard or one refining it. */
static bool query_guard(Guards *G, const Node *n, int w) {
  int q = attention_guard(G, n, G->g->values.data[n->in[0]].shape.dim[1]);
  return q >= 0 && (w == q || G->r->list.data[w].parent == q);
}

/* Zero facts that need an op's meaning: of an attention backward's parts,
 * a scatter-add, a select of one position. -1: none of these. */
static int zero_special(Guards *G, const Node *n) {
  const Graph *g = G->g;
  int wz = n->op == OP_SLICE && n->a.axis == 0 ? G->zero[n->in[0]] : -1;
  if (wz >= 0 && G->r->list.data[wz].seq == 0 && G->r->list.data[wz].read_rows.n == 0 &&
      g->values.data[n->in[0]].shape.dim[0] == row_guard_rows(g, &G->r->list.data[wz])) {
    /* rows [start, end) of a value zero under weights: zero under those weights */
    const RowGuard *rg = &G->r->list.data[wz];
    return guard_id_rows(G, rg->input, 0, rg->row0 + n->a.start, n->a.end - n->a.start);
  }
  if (n->op == OP_SLICE && n->a.axis == 0 && g->values.data[n->in[0]].node >= 0) {
    const Node *p = &g->nodes.data[g->values.data[n->in[0]].node];
    if (p->op != OP_ATTENTION_GRAD) return -1;
    const Shape *q = &g->values.data[p->in[0]].shape, *k = &g->values.data[p->in[1]].shape;
    int64_t dq = q->dim[0] * q->dim[1], dk = k->dim[0] * k->dim[1];
    if (n->a.start == 0 && n->a.end == dq) { /* d q: zero where d out is */
      int w = G->zero[p->in[4]];
      return w >= 0 && query_guard(G, p, w) ? w : -1;
    }
    if ((n->a.start == dq || n->a.start == dq + dk) && n->a.end - n->a.start == dk) /* d k, d v */
      return attention_guard(G, p, k->dim[1]);
    return -1;
  }
  if (n->op == OP_SCATTER_ADD) { /* rows no index hits are 0: a guard over as many rows, the indices live */
    int64_t rows = n->a.shape.dim[0];
    for (int w = 0; w < G->r->list.n; w++) { /* a picked guard comes before its parent */
      if (row_guard_rows(g, &G->r->list.data[w]) != rows) continue;
      add_read_rows(G, w, n->in[0]);
      return w;
    }
    return -1;
  }
  if (n->op == OP_SELECT && G->zero[n->in[2]] == ANY && g->values.data[n->in[0]].node >= 0) {
    /* select(iota along t == s, x, 0): 0 but at position s, made live */
    const Node *eq = &g->nodes.data[g->values.data[n->in[0]].node];
    if (eq->op != OP_EQ) return -1;
    const Value *a = &g->values.data[eq->in[0]], *b = &g->values.data[eq->in[1]];
    if (a->node < 0 || b->node < 0) return -1;
    const Node *io = &g->nodes.data[a->node], *c = &g->nodes.data[b->node];
    if (io->op == OP_CONSTANT) {
      const Node *t = io;
      io = c, c = t;
    }
    if (io->op != OP_IOTA || c->op != OP_CONSTANT) return -1;
    for (int w = 0; w < G->r->list.n; w++) {
      if (!row_len(G, n->out, w) || !is_position_axis(G, n->out, io->a.axis, w)) continue;
      int64_t t = (int64_t)c->a.scalar;
      add_t_live(G, w, t, t + 1);
      return w;
    }
  }
  return -1;
}

/* The zero fact of node n's output, from its inputs': the guard w (or
 * ANY) and the inputs whose zero rows under w make the output's (each
 * must keep its rows apart), or -1. */
static int zero_of(Guards *G, const Node *n) {
  const Graph *g = G->g;
  const int *z = G->zero;
  if (g->values.data[n->out].dtype != DTYPE_F32) return -1;
  if (n->op == OP_CONSTANT) return n->a.scalar == 0.0 ? ANY : -1;
  int special = zero_special(G, n);
  if (special >= 0) return special;
  int from = 0, to = 1; /* the inputs [from, to) that must be zero-guarded by w */
  switch (n->op) {
  case OP_MUL: /* one zero factor does */
  case OP_RELU_GRAD: from = z[n->in[0]] != -1 ? 0 : 1, to = from + 1; break; /* 0 where g is 0 or y is not > 0 */
  case OP_ADD:
  case OP_SUB:
  case OP_MAX:
  case OP_MIN: to = 2; break;
  case OP_SELECT: from = 1, to = 3; break;
  case OP_CONCAT: to = n->n_in; break;
  case OP_DIV: /* a zero numerator */
  case OP_GELU_GRAD: /* a zero gradient (gelu'(0) is not 0) */
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
  int w = ANY;
  for (int i = from; i < to && w != -1; i++) w = meet(G, w, z[n->in[i]]);
  if (w == ANY || w < 0) return w;
  for (int i = from; i < to; i++)
    if (z[n->in[i]] != ANY && !rowwise(G, n, i, w)) return -1;
  return w;
}

/* A reader that accepts any guard over the value's rows, by making live
 * what it reads: a gather of the value's rows (its indices), a slice of
 * positions t. False when it does not, or cannot under w. */
static bool reads_live_rows(Guards *G, const Node *n, int i, int w, bool commit) {
  RowGuard *rg = &G->r->list.data[w];
  if (n->op == OP_GATHER && i == 0 && row_guard_rows(G->g, rg) == G->g->values.data[n->in[0]].shape.dim[0]) {
    if (commit) add_read_rows(G, w, n->in[1]);
    return true;
  }
  if (n->op == OP_SLICE && is_position_axis(G, n->in[0], n->a.axis, w) && row_len(G, n->in[0], w)) {
    if (commit) add_t_live(G, w, n->a.start, n->a.end);
    return true;
  }
  return false;
}

/* The guard reader n offers value v read as input i, or -1. */
static int offered(Guards *G, const Node *n, int i) {
  const Graph *g = G->g;
  int z = n->n_in > 1 && i < 2 ? G->zero[n->in[1 - i]] : -1;
  if ((n->op == OP_MUL || n->op == OP_RELU_GRAD || (n->op == OP_GELU_GRAD && i == 1)) && z >= 0) return z;
  if (n->op == OP_MATMUL && n->a.trans_a && z >= 0) return z;
  if ((n->op == OP_ATTENTION || n->op == OP_ATTENTION_GRAD) && i < 3)
    return attention_guard(G, n, g->values.data[n->in[i]].shape.dim[1]);
  return n->op == OP_GATHER && i == 0 ? -1 : G->guard[n->out]; /* a gather's table rows are not its output's */
}

/* Whether reading v as input i of node n leaves n's output as it would be
 * whatever v's rows dead under w hold, as long as they are 0 or finite. */
static bool reader_ok(Guards *G, const Node *n, int i, int w) {
  const Graph *g = G->g;
  if ((n->op == OP_MUL || n->op == OP_RELU_GRAD || (n->op == OP_GELU_GRAD && i == 1)) &&
      zero_under(G, n->in[1 - i], w) && row_len(G, n->in[1 - i], w) == row_len(G, n->in[i], w))
    return true; /* times zero rows, or masked by them (gelu_grad: a zero gradient times gelu') */
  if (n->op == OP_MATMUL && n->a.trans_a && !n->a.trans_b && i < 2) { /* C = A^T B sums over the rows */
    const Shape *a = &g->values.data[n->in[0]].shape, *b = &g->values.data[n->in[1]].shape;
    return a->rank == 2 && b->rank == 2 && a->dim[0] == row_guard_rows(g, &G->r->list.data[w]) &&
           zero_under(G, n->in[1 - i], w);
  }
  if ((n->op == OP_ATTENTION || n->op == OP_ATTENTION_GRAD) && (i == 1 || i == 2)) /* masked keys, values */
    return attention_guard(G, n, g->values.data[n->in[i]].shape.dim[1]) == w;
  if (n->op == OP_ATTENTION_GRAD && i == 0) /* queries whose output gradient is zero */
    return query_guard(G, n, w) && zero_under(G, n->in[4], w);
  if (reads_live_rows(G, n, i, w, false)) return true;
  /* a row-wise reader dead where w is: its output's guard is w or finer */
  return row_guard_finer(G->r, G->guard[n->out], w) && rowwise(G, n, i, w);
}

/* Whether every reader of v (the list from head[v]) accepts guard w. */
static bool accepted_by_all(Guards *G, ValueId v, int w, const int *head, const int *next, const int *use_node,
                            const int *use_slot) {
  if (row_len(G, v, w) <= 0) return false;
  for (int u = head[v]; u >= 0; u = next[u])
    if (!reader_ok(G, &G->g->nodes.data[use_node[u]], use_slot[u], w)) return false;
  return true;
}

void row_guards(const Graph *g, RowGuards *r) {
  int nv = g->values.n;
  memset(r, 0, sizeof *r);
  r->guard = bc_malloc(sizeof(int) * (size_t)(nv ? nv : 1));
  r->zero = bc_malloc(sizeof(int) * (size_t)(nv ? nv : 1));
  Guards G = {g, r, r->zero, r->guard};
  for (int v = 0; v < nv; v++) G.zero[v] = G.guard[v] = -1;
  for (int i = 0; i < g->inputs.n; i++) {
    ValueId w = g->inputs.data[i];
    if (g->values.data[w].dtype == DTYPE_F32 && numel_of(g, w) >= 2) G.zero[w] = guard_id(&G, w, 0);
  }
  /* lengths guards first, each after the picked guard refining it:
   * scatter-adds and the candidates below take the first that fits */
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op != OP_ATTENTION) continue;
    int64_t T = g->values.data[n->in[1]].shape.dim[1];
    int have = G.r->list.n;
    if (attention_guard(&G, n, T) != have) continue; /* none, or not new */
    vec_push(&G.r->list, G.r->list.data[have]);
    G.r->list.data[have] = (RowGuard){.input = n->in[3], .seq = T, .parent = have + 1};
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
      G.guard[v] = G.zero[v];
      continue;
    }
    if (root[v] || head[v] < 0 || op_info[n->op].flags & OPF_SIDE_EFFECT) continue;
    /* the guards the readers offer (a picked guard refining one before
     * it), then every guard: the first that every reader accepts */
    int w = -1;
    for (int u = head[v]; u >= 0 && w < 0; u = next[u]) {
      int c = offered(&G, &g->nodes.data[use_node[u]], use_slot[u]);
      for (int p = 0; c >= 0 && p < G.r->list.n && w < 0; p++)
        if (G.r->list.data[p].parent == c && accepted_by_all(&G, v, p, head, next, use_node, use_slot)) w = p;
      if (w < 0 && c >= 0 && accepted_by_all(&G, v, c, head, next, use_node, use_slot)) w = c;
    }
    for (int c = 0; c < G.r->list.n && w < 0; c++)
      if (accepted_by_all(&G, v, c, head, next, use_node, use_slot)) w = c;
    if (w < 0) continue;
    for (int u = head[v]; u >= 0; u = next[u]) reads_live_rows(&G, &g->nodes.data[use_node[u]], use_slot[u], w, true);
    G.guard[v] = w;
  }
  for (int v = 0; v < nv; v++)
    if (G.zero[v] == ANY) G.zero[v] = -1;
  free(root);
  free(head);
  free(next);
  free(use_node);
  free(use_slot);
}

void row_guards_free(RowGuards *r) {
  for (int i = 0; i < r->list.n; i++) {
    vec_free(&r->list.data[i].read_rows);
    vec_free(&r->list.data[i].t_live);
  }
  vec_free(&r->list);
  free(r->guard);
  free(r->zero);
  memset(r, 0, sizeof *r);
}

int64_t row_guard_live(const Graph *g, const RowGuard *rg, const void *input, const int32_t *const *read_rows,
                       uint8_t *live) {
  int64_t rows = row_guard_rows(g, rg);
  if (rg->seq > 0) {
    const int32_t *len = input;
    for (int64_t b = 0; b < rows / rg->seq; b++) {
      int64_t n = rg->parent >= 0 ? 0 : len[b] <= 0 || len[b] > rg->seq ? rg->seq : len[b];
      memset(live + b * rg->seq, 1, (size_t)n);
      memset(live + b * rg->seq + n, 0, (size_t)(rg->seq - n));
    }
    for (int k = 0; k + 1 < rg->t_live.n; k += 2)
      for (int64_t b = 0; b < rows / rg->seq; b++)
        for (int64_t t = rg->t_live.data[k]; t < rg->t_live.data[k + 1] && t < rg->seq; t++)
          if (t >= 0) live[b * rg->seq + t] = 1;
  } else {
    const float *w = (const float *)input + rg->row0;
    for (int64_t r = 0; r < rows; r++) live[r] = w[r] != 0.0f;
  }
  for (int k = 0; k < rg->read_rows.n; k++) {
    int64_t n = numel_of(g, rg->read_rows.data[k]);
    for (int64_t i = 0; i < n; i++)
      if (read_rows[k][i] >= 0 && read_rows[k][i] < rows) live[read_rows[k][i]] = 1;
  }
  int64_t n_live = 0;
  for (int64_t r = 0; r < rows; r++) n_live += live[r];
  return n_live;
}
