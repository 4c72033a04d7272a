/* grad_rules.c — the VJP of every differentiable primitive.
 *
 * Elementwise rows of graph/ops.def carry their VJPs as expressions over
 * g (output gradient), a, b (inputs) and y (output) written with the
 * macros below. The macros build a small expression tree that is then
 * emitted in a fixed post-order, left operand first, so the node order of a
 * gradient does not depend on the C compiler's argument evaluation order
 * (golden dumps stay stable across gcc and clang).
 *
 * Not here: which nodes need gradients and how contributions accumulate
 * (autodiff.c). Invariant: every contribution returned has exactly the
 * shape and dtype of the input it belongs to (broadcast operands are summed
 * back with graph_sum_to). */
#include "grad_rules.h"

#include <stdlib.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

/* ---- expression trees for the ops.def VJPs ------------------------------ */

typedef enum { GX_LEAF, GX_CONST, GX_UN, GX_BIN, GX_SELECT, GX_GT0, GX_GE } GxKind;

typedef struct Gx {
  GxKind kind;
  Op op;        /* GX_UN, GX_BIN */
  ValueId leaf; /* GX_LEAF */
  double c;     /* GX_CONST */
  const struct Gx *x, *y, *z;
} Gx;

typedef struct {
  Gx pool[128]; /* the longest VJP in ops.def (gelu_tanh) uses about 60 */
  int n;
} GxPool;

static Gx *gx_new(GxPool *p, GxKind k) {
  BC_ASSERT(p->n < (int)(sizeof(p->pool) / sizeof(p->pool[0])));
  Gx *e = &p->pool[p->n++];
  *e = (Gx){.kind = k, .leaf = -1};
  return e;
}
static const Gx *gx_leaf(GxPool *p, ValueId v) {
  Gx *e = gx_new(p, GX_LEAF);
  e->leaf = v;
  return e;
}
static const Gx *gx_const(GxPool *p, double c) {
  Gx *e = gx_new(p, GX_CONST);
  e->c = c;
  return e;
}
static const Gx *gx_op(GxPool *p, GxKind k, Op op, const Gx *x, const Gx *y, const Gx *z) {
  Gx *e = gx_new(p, k);
  e->op = op;
  e->x = x;
  e->y = y;
  e->z = z;
  return e;
}

/* The builder vocabulary of ops.def (see its header). U and BIN apply any
 * elementwise row, so a derivative written with other ops needs no new
 * kind here. */
#define U(ID, x) gx_op(px, GX_UN, OP_##ID, (x), NULL, NULL)
#define BIN(ID, x, y) gx_op(px, GX_BIN, OP_##ID, (x), (y), NULL)
#define ADD(x, y) BIN(ADD, x, y)
#define SUB(x, y) BIN(SUB, x, y)
#define MUL(x, y) BIN(MUL, x, y)
#define DIV(x, y) BIN(DIV, x, y)
#define NEG(x) U(NEG, x)
#define SELECT(c, x, y) gx_op(px, GX_SELECT, OP_SELECT, (c), (x), (y))
#define GT0(x) gx_op(px, GX_GT0, OP_LT, (x), NULL, NULL)   /* 1 where x > 0 */
#define GE(x, y) gx_op(px, GX_GE, OP_LT, (x), (y), NULL) /* 1 where x >= y */
#define LIKE(c) gx_const(px, (c))
#define NONDIFF NULL

/* The VJP tree of input k of an elementwise op, or NULL (NONDIFF). */
static const Gx *elementwise_vjp(GxPool *px, Op op, int k, const Gx *g, const Gx *a, const Gx *b,
                                 const Gx *y) {
  (void)g, (void)a, (void)b, (void)y;
  switch (op) {
#define UNARY(ID, nm, ref, cuda, llvm, vjp, ...) \
  case OP_##ID: \
    return k == 0 ? (vjp) : NULL;
#define BINARY(ID, nm, ref, cuda, llvm, vjp_a, vjp_b, ...) \
  case OP_##ID: \
    return k == 0 ? (vjp_a) : k == 1 ? (vjp_b) : NULL;
#include "../graph/ops.def"
  default:
    break;
  }
  BC_ASSERT(!"not an elementwise op");
  return NULL;
}

#undef U
#undef BIN
#undef ADD
#undef SUB
#undef MUL
#undef DIV
#undef NEG
#undef SELECT
#undef GT0
#undef GE
#undef LIKE
#undef NONDIFF

static bool is_elementwise(Op op) {
  switch (op) {
#define UNARY(ID, ...) case OP_##ID:
#define BINARY(ID, ...) case OP_##ID:
#include "../graph/ops.def"
    return true;
  default:
    return false;
  }
}

/* Emits e in post-order, operands left to right. Constants take the shape
 * and dtype of `like` (the op's output). */
static ValueId gx_emit(Graph *g, const Gx *e, ValueId like) {
  switch (e->kind) {
  case GX_LEAF:
    return e->leaf;
  case GX_CONST:
    return graph_const_like(g, e->c, like);
  case GX_UN:
    return graph_unary(g, e->op, gx_emit(g, e->x, like));
  case GX_BIN: {
    ValueId x = gx_emit(g, e->x, like);
    ValueId y = gx_emit(g, e->y, like);
    return graph_binary(g, e->op, x, y);
  }
  case GX_SELECT: {
    ValueId c = gx_emit(g, e->x, like);
    ValueId x = gx_emit(g, e->y, like);
    ValueId y = gx_emit(g, e->z, like);
    return graph_select(g, c, x, y);
  }
  case GX_GT0: { /* x > 0  ==  0 < x */
    ValueId x = gx_emit(g, e->x, like);
    return graph_binary(g, OP_LT, graph_const_like(g, 0.0, x), x);
  }
  case GX_GE: { /* x >= y  ==  1 - (x < y) */
    ValueId x = gx_emit(g, e->x, like);
    ValueId y = gx_emit(g, e->y, like);
    ValueId lt = graph_binary(g, OP_LT, x, y);
    return graph_binary(g, OP_SUB, graph_const_like(g, 1.0, lt), lt);
  }
  }
  BC_ASSERT(!"bad Gx kind");
  return -1;
}

/* ---- helpers ----------------------------------------------------------- */

static const Value *val(const Graph *g, ValueId v) { return &g->values.data[v]; }

/* c summed down to the shape of `to` when broadcasting made it bigger. */
static ValueId fit(Graph *g, ValueId c, ValueId to) {
  Shape s = val(g, to)->shape;
  if (shape_eq(&val(g, c)->shape, &s)) return c;
  return graph_sum_to(g, c, s);
}

static ValueId zeros(Graph *g, ValueId like_dtype, Shape s) {
  return graph_const(g, 0.0, val(g, like_dtype)->dtype, s);
}

/* ---- rules ------------------------------------------------------------- */

bool grad_rule_input_diff(Op op, int k, int n_in) {
  if (k < 0 || k >= n_in) return false;
  if (is_elementwise(op)) {
    GxPool px = {.n = 0};
    const Gx *leaf = gx_leaf(&px, -1);
    return elementwise_vjp(&px, op, k, leaf, leaf, leaf, leaf) != NULL;
  }
  switch (op) {
#define UNARY(ID, ...) case OP_##ID:
#define BINARY(ID, ...) case OP_##ID:
#include "../graph/ops.def"
    return false; /* handled above */
  case OP_SELECT:
    return k >= 1; /* the condition has none */
  case OP_BROADCAST:
  case OP_RESHAPE:
  case OP_PERMUTE:
  case OP_SLICE:
  case OP_CONCAT:
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
  case OP_MATMUL:
    return true;
  case OP_GATHER:
    return k == 0; /* the table, not the indices */
  case OP_SCATTER_ADD:
    return k == 1; /* the updates, not the indices */
  case OP_ATTENTION:
    return k < 3; /* q, k, v; not valid_len */
  case OP_ATTENTION_GRAD: /* made by the backward pass itself */
  case OP_CAST:     /* f32 <-> i32: piecewise constant or integer */
  case OP_IOTA:
  case OP_RANDOM:
  case OP_CONSTANT:
  case OP_ASSIGN: /* a side effect after the step, not part of the loss */
    return false;
  case OP_COUNT:
    break;
  }
  BC_ASSERT(!"bad op");
  return false;
}

/* d/dA and d/dB of C = op(A) op(B), op = optional transpose of the last two
 * dims, from gc = dC (.., M, N). Batch dims broadcast, so each result is
 * summed back to its operand's shape. */
static void matmul_vjp(Graph *g, const Node *n, ValueId gc, const bool *want, ValueId *gin) {
  ValueId A = n->in[0], B = n->in[1];
  bool ta = n->a.trans_a, tb = n->a.trans_b;
  if (want[0]) {
    /* dop(A) = dC op(B)^T (M, K); A stored (K, M) when ta: dA = op(B) dC^T */
    ValueId ga = ta ? graph_matmul(g, B, gc, tb, true) : graph_matmul(g, gc, B, false, !tb);
    gin[0] = fit(g, ga, A);
  }
  const Shape *as = &val(g, A)->shape, *bs = &val(g, B)->shape;
  bool folded = false;
  if (want[1] && bs->rank == 2 && as->rank > 2 && !ta) {
    /* x (.., M, K) W (K, N): a weight shared by every batch entry. Folding
     * the batch dims into M gives one (P*M, K)^T (P*M, N) product instead of
     * P outer products summed afterwards (which would hold a (P, K, N)
     * intermediate: 663 MB for BERT's MLM decoder at batch 64). */
    int64_t rows = shape_numel(as) / as->dim[as->rank - 1];
    Shape a2 = shape_of(2, 1, 1), c2 = a2;
    a2.dim[0] = rows;
    a2.dim[1] = as->dim[as->rank - 1];
    c2.dim[0] = rows;
    c2.dim[1] = val(g, gc)->shape.dim[val(g, gc)->shape.rank - 1];
    ValueId A2 = graph_reshape(g, A, a2), G2 = graph_reshape(g, gc, c2);
    gin[1] = tb ? graph_matmul(g, G2, A2, true, false) : graph_matmul(g, A2, G2, true, false);
    folded = true;
  }
  if (want[1] && !folded) {
    /* dop(B) = op(A)^T dC (K, N); B stored (N, K) when tb: dB = dC^T op(A) */
    ValueId gb = tb ? graph_matmul(g, gc, A, true, ta) : graph_matmul(g, A, gc, !ta, false);
    gin[1] = fit(g, gb, B);
  }
}

void grad_rule_apply(Graph *g, const Node *n, ValueId gy, const bool *want, ValueId *gin) {
  for (int k = 0; k < n->n_in; k++) gin[k] = -1;
  ValueId x = n->n_in > 0 ? n->in[0] : -1;
  switch (n->op) {
#define UNARY(ID, ...) case OP_##ID:
#define BINARY(ID, ...) case OP_##ID:
#include "../graph/ops.def"
  {
    for (int k = 0; k < n->n_in; k++) {
      if (!want[k]) continue;
      GxPool px = {.n = 0};
      const Gx *lg = gx_leaf(&px, gy), *la = gx_leaf(&px, n->in[0]);
      const Gx *lb = gx_leaf(&px, n->n_in > 1 ? n->in[1] : -1), *ly = gx_leaf(&px, n->out);
      const Gx *e = elementwise_vjp(&px, n->op, k, lg, la, lb, ly);
      if (e) gin[k] = fit(g, gx_emit(g, e, n->out), n->in[k]);
    }
    return;
  }
  case OP_SELECT: { /* (cond, a, b) */
    if (want[1]) gin[1] = fit(g, graph_select(g, n->in[0], gy, graph_const_like(g, 0.0, gy)), n->in[1]);
    if (want[2]) gin[2] = fit(g, graph_select(g, n->in[0], graph_const_like(g, 0.0, gy), gy), n->in[2]);
    return;
  }
  case OP_BROADCAST:
    if (want[0]) gin[0] = graph_sum_to(g, gy, val(g, x)->shape);
    return;
  case OP_RESHAPE:
    if (want[0]) gin[0] = graph_reshape(g, gy, val(g, x)->shape);
    return;
  case OP_PERMUTE: {
    if (!want[0]) return;
    int inv[BC_MAX_RANK];
    for (int i = 0; i < val(g, x)->shape.rank; i++) inv[n->a.perm[i]] = i;
    gin[0] = graph_permute(g, gy, inv);
    return;
  }
  case OP_SLICE: { /* pad gy with zeros back to the input's extent on the axis */
    if (!want[0]) return;
    Shape s = val(g, x)->shape;
    int ax = n->a.axis;
    int64_t len = s.dim[ax];
    if (n->a.end - n->a.start == 1 && len > 1) {
      /* one index (BERT's [CLS] token): gy where the index is `start`, else
       * 0, all index math and a broadcast, which fuse folds into the
       * kernel reading the gradient: no [.., len, ..] buffer of zeros */
      ValueId at = graph_binary(g, OP_EQ, graph_iota(g, s, ax, DTYPE_I32),
                                graph_const(g, (double)n->a.start, DTYPE_I32, s));
      gin[0] = graph_select(g, at, graph_broadcast(g, gy, s), zeros(g, gy, s));
      return;
    }
    ValueId parts[3];
    int np = 0;
    if (n->a.start > 0) {
      Shape z = s;
      z.dim[ax] = n->a.start;
      parts[np++] = zeros(g, gy, z);
    }
    parts[np++] = gy;
    if (n->a.end < len) {
      Shape z = s;
      z.dim[ax] = len - n->a.end;
      parts[np++] = zeros(g, gy, z);
    }
    gin[0] = np == 1 ? gy : graph_concat(g, np, parts, ax);
    return;
  }
  case OP_CONCAT: {
    int64_t at = 0;
    for (int k = 0; k < n->n_in; k++) {
      int64_t len = val(g, n->in[k])->shape.dim[n->a.axis];
      if (want[k]) gin[k] = graph_slice(g, gy, n->a.axis, at, at + len);
      at += len;
    }
    return;
  }
  case OP_REDUCE_SUM: /* gy keeps the axis as size 1: broadcast it back */
    if (want[0]) gin[0] = graph_broadcast(g, gy, val(g, x)->shape);
    return;
  case OP_REDUCE_MAX: {
    /* The gradient goes to the maxima, split evenly among ties (what
     * PyTorch's amax does), so it sums to gy whatever the ties. */
    if (!want[0]) return;
    ValueId mask = graph_binary(g, OP_EQ, x, n->out);       /* x's shape */
    ValueId count = graph_reduce(g, OP_REDUCE_SUM, mask, n->a.axis); /* out's shape, >= 1 */
    ValueId share = graph_binary(g, OP_DIV, gy, count);
    gin[0] = graph_binary(g, OP_MUL, mask, share);
    return;
  }
  case OP_MATMUL:
    matmul_vjp(g, n, gy, want, gin);
    return;
  case OP_GATHER: /* (table, idx): rows go back where they came from */
    if (want[0]) gin[0] = graph_scatter_add(g, n->in[1], gy, val(g, x)->shape);
    return;
  case OP_SCATTER_ADD: /* (idx, upd): each update row sees its target row's gradient */
    if (want[1]) gin[1] = graph_gather(g, gy, n->in[0]);
    return;
  case OP_ATTENTION: {
    /* one node computes d q, d k and d v (recomputing the weights), their
     * rows one after the other; each is a slice of rows, reshaped */
    ValueId in[5] = {n->in[0], n->in[1], n->in[2], n->in[3], gy};
    ValueId all = graph_op(g, OP_ATTENTION_GRAD, 5, in, &n->a, NULL);
    const Shape *qs = &val(g, n->in[0])->shape, *ks = &val(g, n->in[1])->shape;
    int64_t rq = qs->dim[0] * qs->dim[1], rk = ks->dim[0] * ks->dim[1];
    int64_t at[4] = {0, rq, rq + rk, rq + 2 * rk};
    for (int k = 0; k < 3; k++)
      if (want[k]) gin[k] = graph_reshape(g, graph_slice(g, all, 0, at[k], at[k + 1]), k ? *ks : *qs);
    return;
  }
  case OP_ATTENTION_GRAD:
  case OP_CAST:
  case OP_IOTA:
  case OP_RANDOM:
  case OP_CONSTANT:
  case OP_ASSIGN:
  case OP_COUNT:
    break;
  }
  BC_ASSERT(!"grad_rule_apply: op has no gradient");
}
