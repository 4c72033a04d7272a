/* simplify.c — constant folding, algebraic identities, common-subexpression
 * elimination and dead-code elimination, in one rebuild of the graph.
 *
 * Requires: a verified graph. Produces: an equivalent graph with no node
 * whose inputs are all constants (for the ops folded here), no two identical
 * nodes (unless CSE is switched off: BC_NO_CSE), and only nodes that reach a root (outputs, the loss, parameter
 * gradients, assigns). Identities that could change NaN/Inf propagation
 * (x * 0 -> 0) are deliberately not applied. The one range fact used is that
 * `random` lies in [0, 1), which removes dropout when its rate is 0. */
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  Graph *g;       /* the graph being built */
  ValueId *table; /* CSE hash table of value ids (open addressing), -1 empty */
  int cap;
  bool no_cse;    /* BC_NO_CSE: every node is built anew */
} Builder;

static bool is_const(const Graph *g, ValueId v, double *out) {
  NodeId n = g->values.data[v].node;
  if (n < 0 || g->nodes.data[n].op != OP_CONSTANT) return false;
  if (out) *out = g->nodes.data[n].a.scalar;
  return true;
}

static bool is_op(const Graph *g, ValueId v, Op op) {
  NodeId n = g->values.data[v].node;
  return n >= 0 && g->nodes.data[n].op == op;
}

static uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

/* Hash of a node's op, inputs and attributes (in canonical form, below). */
/* Attrs with every byte defined: padding and dims past the rank zero, so
 * two nodes with equal attributes hash and compare equal bytewise (struct
 * copies need not copy padding, so a stored Attrs may hold stray bytes). */
static Attrs canon(const Attrs *a) {
  Attrs c;
  memset(&c, 0, sizeof c);
  c.axis = a->axis;
  c.start = a->start;
  c.end = a->end;
  memcpy(c.perm, a->perm, sizeof c.perm);
  c.trans_a = a->trans_a;
  c.trans_b = a->trans_b;
  c.scalar = a->scalar;
  c.key = a->key;
  c.shape.rank = a->shape.rank;
  for (int i = 0; i < a->shape.rank && i < BC_MAX_RANK; i++) c.shape.dim[i] = a->shape.dim[i];
  c.dtype = a->dtype;
  return c;
}

static uint64_t node_hash(Op op, int n_in, const ValueId *in, const Attrs *attrs) {
  uint64_t h = mix(1469598103934665603ull, (uint64_t)op);
  for (int i = 0; i < n_in; i++) h = mix(h, (uint64_t)(uint32_t)in[i]);
  Attrs a = canon(attrs);
  const unsigned char *p = (const unsigned char *)&a;
  for (size_t i = 0; i < sizeof a; i++) h = mix(h, p[i]);
  return h;
}

static bool same_node(const Graph *g, ValueId v, Op op, int n_in, const ValueId *in, const Attrs *a) {
  const Node *n = &g->nodes.data[g->values.data[v].node];
  if (n->op != op || n->n_in != n_in) return false;
  if (n_in > 0 && memcmp(n->in, in, sizeof(ValueId) * (size_t)n_in) != 0) return false;
  Attrs x = canon(&n->a), y = canon(a);
  return memcmp(&x, &y, sizeof x) == 0;
}

static void table_grow(Builder *b) {
  int nc = b->cap ? b->cap * 2 : 1024;
  ValueId *nt = bc_malloc(sizeof(ValueId) * (size_t)nc);
  for (int i = 0; i < nc; i++) nt[i] = -1;
  for (int i = 0; i < b->cap; i++) {
    ValueId v = b->table[i];
    if (v < 0) continue;
    const Node *n = &b->g->nodes.data[b->g->values.data[v].node];
    uint64_t h = node_hash(n->op, n->n_in, n->in, &n->a);
    int j = (int)(h & (uint64_t)(nc - 1));
    while (nt[j] >= 0) j = (j + 1) & (nc - 1);
    nt[j] = v;
  }
  free(b->table);
  b->table = nt;
  b->cap = nc;
}

/* The value computing op(in) in the new graph: an existing identical node,
 * or a new one. Random nodes with equal keys and shapes draw equal numbers,
 * so merging them is exact; assigns are never merged. */
static ValueId emit(Builder *b, const Node *old, const ValueId *in, const Value *oldv) {
  Graph *g = b->g;
  bool cse = old->op != OP_ASSIGN && !b->no_cse;
  uint64_t h = node_hash(old->op, old->n_in, in, &old->a);
  if (cse && b->cap) {
    int j = (int)(h & (uint64_t)(b->cap - 1));
    for (; b->table[j] >= 0; j = (j + 1) & (b->cap - 1))
      if (same_node(g, b->table[j], old->op, old->n_in, in, &old->a)) return b->table[j];
  }
  g->cur_loc = old->loc;
  ValueId v = graph_op(g, old->op, old->n_in, in, &old->a, NULL);
  g->values.data[v].name = oldv->name;
  g->values.data[v].loc = oldv->loc;
  if (cse) {
    if ((g->nodes.n + 1) * 2 > b->cap) table_grow(b);
    int j = (int)(h & (uint64_t)(b->cap - 1));
    while (b->table[j] >= 0) j = (j + 1) & (b->cap - 1);
    b->table[j] = v;
  }
  return v;
}

static double fold_unary(Op op, double a) {
  switch (op) {
#define UNARY(ID, name, ref, ...) \
  case OP_##ID: return (ref);
#include "../graph/ops.def"
  default: BC_ASSERT(!"not unary");
  }
  return 0;
}

static double fold_binary(Op op, double a, double b) {
  switch (op) {
#define BINARY(ID, name, ref, ...) \
  case OP_##ID: return (ref);
#include "../graph/ops.def"
  default: BC_ASSERT(!"not binary");
  }
  return 0;
}

static ValueId make_const(Builder *b, double v, const Value *like, SrcLoc loc) {
  Node n = {0};
  n.op = OP_CONSTANT;
  n.loc = loc;
  if (like->dtype == DTYPE_I32) v = (double)(int32_t)v;
  n.a.scalar = v;
  n.a.dtype = like->dtype;
  n.a.shape = like->shape;
  return emit(b, &n, NULL, like);
}

/* A simpler value equal to node `n` (inputs already mapped to `in`), or -1. */
static ValueId rewrite(Builder *b, const Node *n, const ValueId *in, const Value *oldv) {
  Graph *g = b->g;
  double c0 = 0, c1 = 0, c2 = 0;
  unsigned f = op_info[n->op].flags;
  if (n->op == OP_ASSIGN) return -1;
  bool all_const = n->n_in > 0;
  for (int i = 0; i < n->n_in; i++)
    if (!is_const(g, in[i], NULL)) all_const = false;
  if (all_const) {
    is_const(g, in[0], &c0);
    if (f & OPF_UNARY) return make_const(b, fold_unary(n->op, c0), oldv, n->loc);
    if (f & OPF_BINARY) {
      is_const(g, in[1], &c1);
      return make_const(b, fold_binary(n->op, c0, c1), oldv, n->loc);
    }
    switch (n->op) {
    case OP_BROADCAST:
    case OP_RESHAPE:
    case OP_PERMUTE:
    case OP_SLICE:
    case OP_REDUCE_MAX: return make_const(b, c0, oldv, n->loc);
    case OP_CAST: return make_const(b, n->a.dtype == DTYPE_I32 ? trunc(c0) : c0, oldv, n->loc);
    case OP_REDUCE_SUM: {
      const Shape *s = &g->values.data[in[0]].shape;
      return make_const(b, c0 * (double)s->dim[n->a.axis], oldv, n->loc);
    }
    case OP_SELECT:
      is_const(g, in[1], &c1);
      is_const(g, in[2], &c2);
      return make_const(b, c0 != 0 ? c1 : c2, oldv, n->loc);
    default: break;
    }
  }
  switch (n->op) {
  case OP_ADD:
    if (is_const(g, in[1], &c1) && c1 == 0) return in[0];
    if (is_const(g, in[0], &c0) && c0 == 0) return in[1];
    break;
  case OP_SUB:
    if (is_const(g, in[1], &c1) && c1 == 0) return in[0];
    break;
  case OP_MUL:
    if (is_const(g, in[1], &c1) && c1 == 1) return in[0];
    if (is_const(g, in[0], &c0) && c0 == 1) return in[1];
    break;
  case OP_DIV:
    if (is_const(g, in[1], &c1) && c1 == 1) return in[0];
    break;
  case OP_LT: /* random < c with c <= 0 is never true */
    if (is_op(g, in[0], OP_RANDOM) && is_const(g, in[1], &c1) && c1 <= 0)
      return make_const(b, 0, oldv, n->loc);
    break;
  case OP_SELECT:
    if (is_const(g, in[0], &c0)) return c0 != 0 ? in[1] : in[2];
    if (in[1] == in[2]) return in[1];
    break;
  case OP_BROADCAST:
  case OP_RESHAPE:
    if (shape_eq(&g->values.data[in[0]].shape, &oldv->shape)) return in[0];
    /* reshape(reshape(x)) = reshape(x); broadcast(broadcast(x)) = broadcast(x) */
    if (is_op(g, in[0], n->op)) {
      ValueId inner = g->nodes.data[g->values.data[in[0]].node].in[0];
      Node m = *n;
      return emit(b, &m, &inner, oldv);
    }
    break;
  case OP_CAST:
    if (g->values.data[in[0]].dtype == n->a.dtype) return in[0];
    break;
  default: break;
  }
  return -1;
}

bool simplify_run(Graph *g, const OptSwitches *off, Diag *d) {
  (void)d;
  Graph ng;
  graph_init(&ng, g->name);
  Builder b = {&ng, NULL, 0, off && off->cse};
  ValueId *map = bc_malloc(sizeof(ValueId) * (size_t)(g->values.n ? g->values.n : 1));
  for (int i = 0; i < g->values.n; i++) map[i] = -1;
  for (int i = 0; i < g->inputs.n; i++) {
    const Value *v = &g->values.data[g->inputs.data[i]];
    map[g->inputs.data[i]] = graph_add_input(&ng, v->name, v->dtype, v->shape, v->loc);
  }
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    map[g->params.data[i]] = graph_add_param(&ng, v->name, v->dtype, v->shape, v->init, v->loc);
  }
  for (int i = 0; i < g->states.n; i++) {
    const Value *v = &g->values.data[g->states.data[i]];
    map[g->states.data[i]] = graph_add_state(&ng, v->name, v->dtype, v->shape, v->init, v->loc);
  }
  ValueId in[64];
  ValueId *big = NULL;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    ValueId *ins = in;
    if (n->n_in > 64) ins = big = bc_realloc(big, sizeof(ValueId) * (size_t)n->n_in);
    for (int j = 0; j < n->n_in; j++) {
      ins[j] = map[n->in[j]];
      BC_ASSERT(ins[j] >= 0);
    }
    const Value *oldv = &g->values.data[n->out];
    ValueId r = rewrite(&b, n, ins, oldv);
    map[n->out] = r >= 0 ? r : emit(&b, n, ins, oldv);
  }
  free(big);
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    if (v->grad >= 0) ng.values.data[map[g->params.data[i]]].grad = map[v->grad];
  }
  for (int i = 0; i < g->outputs.n; i++) vec_push(&ng.outputs, map[g->outputs.data[i]]);
  ng.loss = g->loss >= 0 ? map[g->loss] : -1;
  for (int i = 0; i < g->hparams.n; i++) vec_push(&ng.hparams, g->hparams.data[i]);
  graph_set_sources(&ng, g->sources.data, g->sources.n);
  free(map);
  free(b.table);

  /* dead code: keep what the roots need */
  bool *live = bc_calloc((size_t)(ng.values.n ? ng.values.n : 1), sizeof(bool));
  bool *keep = bc_calloc((size_t)(ng.nodes.n ? ng.nodes.n : 1), sizeof(bool));
  for (int i = 0; i < ng.outputs.n; i++) live[ng.outputs.data[i]] = true;
  if (ng.loss >= 0) live[ng.loss] = true;
  for (int i = 0; i < ng.params.n; i++) {
    ValueId gr = ng.values.data[ng.params.data[i]].grad;
    if (gr >= 0) live[gr] = true;
  }
  for (int i = ng.nodes.n - 1; i >= 0; i--) {
    const Node *n = &ng.nodes.data[i];
    if (!live[n->out] && !(op_info[n->op].flags & OPF_SIDE_EFFECT)) continue;
    keep[i] = true;
    for (int j = 0; j < n->n_in; j++) live[n->in[j]] = true;
  }
  free(graph_compact(&ng, keep));
  free(live);
  free(keep);
  graph_free(g);
  *g = ng;
  return true;
}
