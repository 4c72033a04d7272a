/* simplify.c — constant folding, algebraic identities, common-subexpression
 * elimination and dead-code elimination, in one rebuild of the graph.
 *
 * Requires: a verified graph. Produces: an equivalent graph with no node
 * whose inputs are all constants (for the ops folded here), no two identical
 * nodes (unless CSE is switched off: BC_NO_CSE), and only nodes that reach a root (outputs, the loss, parameter
 * gradients, assigns). Identities that could change NaN/Inf propagation
 * (x * 0 -> 0) are deliberately not applied. The one range fact used is that
 * `random` lies in [0, 1), which removes dropout when its rate is 0.
 * Names: a value CSE merged from differently named ones is named neutrally
 * (merge_name); names never change what is computed. */
#include "../graph/strbuf.h"
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  Graph *g;       /* the graph being built */
  ValueId *table; /* CSE hash table of value ids (open addressing), -1 empty */
  int cap;
  bool no_cse;    /* BC_NO_CSE: every node is built anew */
  const Graph *old;     /* the graph being simplified */
  const bool *old_root; /* old value ids: outputs, the loss, gradients */
  bool *root;           /* new value ids: named after a root (n_root entries) */
  int n_root;
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
  c.key_shape.rank = a->key_shape.rank;
  for (int i = 0; i < a->key_shape.rank && i < BC_MAX_RANK; i++) c.key_shape.dim[i] = a->key_shape.dim[i];
  c.heads = a->heads;
  c.dropout = a->dropout;
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

static bool is_root(const Builder *b, const Value *oldv) {
  return b->old_root[oldv - b->old->values.data];
}

/* Length of the scope of a value name: all before its last component. */
static size_t scope_len(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot ? (size_t)(dot - name) : 0;
}

/* The block instance of a node merged from nodes in a and b: the innermost
 * holding both; a backward node reusing a forward one's value (forward and
 * backward instances are separate trees) counts as its forward instance. */
static BlockId merged_block(const Graph *g, BlockId a, BlockId b) {
  BlockId c = graph_block_common(g, a, b);
  if (c >= 0 || a < 0 || b < 0) return c;
  BlockId fa = g->blocks.data[a].forward, fb = g->blocks.data[b].forward;
  if ((fa >= 0) == (fb >= 0)) return c;
  return graph_block_common(g, fa >= 0 ? fa : a, fb >= 0 ? fb : b);
}

/* CSE found node `oldv` equal to the built value v. A survivor named after
 * one of its uses would mislead (a constant 8 read by the loss called
 * "encoder.blk.0.attention.sqrt_d"), so when the names differ it is named
 * for what it is: a constant "const.<value>", anything else "%<id>" under
 * the scopes the names share. Outputs, the loss and parameter gradients
 * keep (or give) their names: the runtime finds them by name. The block
 * instance becomes the innermost one holding both. */
static void merge_name(Builder *b, ValueId v, const Node *old, const Value *oldv) {
  Graph *g = b->g;
  Node *n = &g->nodes.data[g->values.data[v].node];
  n->block = merged_block(g, n->block, old->block);
  const char *a = g->values.data[v].name, *o = oldv->name;
  if (a == o || (v < b->n_root && b->root[v])) return;
  if (is_root(b, oldv)) {
    g->values.data[v].name = o;
    if (v < b->n_root) b->root[v] = true;
    return;
  }
  if (n->op == OP_CONSTANT) {
    g->values.data[v].name = bc_intern(arena_printf(&g->arena, "const.%.9g", n->a.scalar));
    return;
  }
  /* names of as many components: the differing ones become "*"
   * ("encoder.blk.*.attention.weights.key_pos"), a differing "%id" the
   * survivor's id */
  int ca = 1, co = 1;
  for (const char *p = a; *p; p++) ca += *p == '.';
  for (const char *p = o; *p; p++) co += *p == '.';
  if (ca == co) {
    StrBuf nb = {0};
    const char *p = a, *q = o;
    for (int k = 0; k < ca; k++) {
      size_t lp = strcspn(p, "."), lq = strcspn(q, ".");
      if (k) strbuf_putc(&nb, '.');
      if (lp == lq && strncmp(p, q, lp) == 0) strbuf_add(&nb, p, lp);
      else if (k == ca - 1 && (p[0] == '%' || q[0] == '%')) strbuf_printf(&nb, "%%%d", v);
      else strbuf_putc(&nb, '*');
      p += lp + (p[lp] == '.');
      q += lq + (q[lq] == '.');
    }
    g->values.data[v].name = bc_intern(nb.data);
    strbuf_free(&nb);
    return;
  }
  /* else "%id" under the scopes they share */
  size_t la = scope_len(a), lo = scope_len(o), common = 0;
  for (size_t k = 0; k <= la && k <= lo; k++) {
    bool end_a = k == la || a[k] == '.', end_o = k == lo || o[k] == '.';
    if (k > 0 && end_a && end_o) common = k; /* both at the end of a component */
    if (k == la || k == lo || a[k] != o[k]) break;
  }
  g->values.data[v].name =
      bc_intern(common ? arena_printf(&g->arena, "%.*s.%%%d", (int)common, a, v) : arena_printf(&g->arena, "%%%d", v));
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
      if (same_node(g, b->table[j], old->op, old->n_in, in, &old->a)) {
        merge_name(b, b->table[j], old, oldv);
        return b->table[j];
      }
  }
  g->cur_loc = old->loc;
  g->cur_block = old->block;
  ValueId v = graph_op(g, old->op, old->n_in, in, &old->a, NULL);
  g->values.data[v].name = oldv->name;
  g->values.data[v].loc = oldv->loc;
  if (v >= b->n_root) {
    int nc = b->n_root ? b->n_root * 2 : 1024;
    while (nc <= v) nc *= 2;
    b->root = bc_realloc(b->root, sizeof(bool) * (size_t)nc);
    memset(b->root + b->n_root, 0, sizeof(bool) * (size_t)(nc - b->n_root));
    b->n_root = nc;
  }
  b->root[v] = is_root(b, oldv);
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

static ValueId make_const(Builder *b, double v, const Value *like, const Node *from) {
  Node n = {0};
  n.op = OP_CONSTANT;
  n.loc = from->loc;
  n.block = from->block;
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
    if (f & OPF_UNARY) return make_const(b, fold_unary(n->op, c0), oldv, n);
    if (f & OPF_BINARY) {
      is_const(g, in[1], &c1);
      return make_const(b, fold_binary(n->op, c0, c1), oldv, n);
    }
    switch (n->op) {
    case OP_BROADCAST:
    case OP_RESHAPE:
    case OP_PERMUTE:
    case OP_SLICE:
    case OP_REDUCE_MAX: return make_const(b, c0, oldv, n);
    case OP_CAST: return make_const(b, n->a.dtype == DTYPE_I32 ? trunc(c0) : c0, oldv, n);
    case OP_REDUCE_SUM: {
      const Shape *s = &g->values.data[in[0]].shape;
      return make_const(b, c0 * (double)s->dim[n->a.axis], oldv, n);
    }
    case OP_SELECT:
      is_const(g, in[1], &c1);
      is_const(g, in[2], &c2);
      return make_const(b, c0 != 0 ? c1 : c2, oldv, n);
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
      return make_const(b, 0, oldv, n);
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
      if (shape_eq(&g->values.data[inner].shape, &oldv->shape)) return inner; /* back to x's shape */
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
  ValueId *map = graph_rebuild_begin(&ng, g);
  bool *old_root = bc_calloc((size_t)g->values.n + 1, sizeof(bool));
  for (int i = 0; i < g->outputs.n; i++) old_root[g->outputs.data[i]] = true;
  if (g->loss >= 0) old_root[g->loss] = true;
  for (int i = 0; i < g->params.n; i++) {
    ValueId gr = g->values.data[g->params.data[i]].grad;
    if (gr >= 0) old_root[gr] = true;
  }
  Builder b = {&ng, NULL, 0, off && off->cse, g, old_root, NULL, 0};
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
  graph_rebuild_end(&ng, g, map);
  free(map);
  free(b.table);
  free(b.root);
  free(old_root);
  graph_drop_dead(&ng); /* dead code: keep what the roots need */
  graph_free(g);
  *g = ng;
  return true;
}
