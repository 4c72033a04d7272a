/* ir.c — building, copying and compacting graphs, plus the builders passes
 * use. Shapes and their rules live in shape.c; this file only appends and
 * renumbers.
 * Invariant kept here: nodes are appended after everything they read, so
 * the node array is always an execution order. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

void graph_init(Graph *g, const char *name) {
  memset(g, 0, sizeof(*g));
  arena_init(&g->arena);
  g->name = bc_intern(name ? name : "graph");
  g->loss = -1;
  g->cur_block = -1;
}

void graph_free(Graph *g) {
  vec_free(&g->values);
  vec_free(&g->nodes);
  vec_free(&g->inputs);
  vec_free(&g->params);
  vec_free(&g->states);
  vec_free(&g->outputs);
  vec_free(&g->hparams);
  vec_free(&g->sources);
  vec_free(&g->blocks);
  arena_free(&g->arena);
  memset(g, 0, sizeof(*g));
  g->loss = -1;
  g->cur_block = -1;
}

#define COPY_VEC(dst, src) \
  do { \
    (dst)->n = (dst)->cap = 0; \
    (dst)->data = NULL; \
    vec_reserve((dst), (src)->n); \
    if ((src)->n) memcpy((dst)->data, (src)->data, (size_t)(src)->n * sizeof(*(src)->data)); \
    (dst)->n = (src)->n; \
  } while (0)

void graph_copy(Graph *dst, const Graph *src) {
  graph_init(dst, src->name);
  COPY_VEC(&dst->values, &src->values);
  COPY_VEC(&dst->nodes, &src->nodes);
  COPY_VEC(&dst->inputs, &src->inputs);
  COPY_VEC(&dst->params, &src->params);
  COPY_VEC(&dst->states, &src->states);
  COPY_VEC(&dst->outputs, &src->outputs);
  COPY_VEC(&dst->hparams, &src->hparams);
  graph_set_sources(dst, src->sources.data, src->sources.n);
  COPY_VEC(&dst->blocks, &src->blocks);
  for (int i = 0; i < dst->nodes.n; i++) {
    Node *n = &dst->nodes.data[i];
    ValueId *in = arena_alloc(&dst->arena, sizeof(ValueId) * (size_t)(n->n_in ? n->n_in : 1));
    memcpy(in, n->in, sizeof(ValueId) * (size_t)n->n_in);
    n->in = in;
  }
  dst->loss = src->loss;
  dst->cur_loc = src->cur_loc;
  dst->cur_scope = src->cur_scope;
  dst->cur_block = src->cur_block;
}

void graph_set_sources(Graph *g, const SourceFile *files, int n) {
  g->sources.n = 0;
  for (int i = 0; i < n; i++)
    vec_push(&g->sources, ((SourceFile){arena_strdup(&g->arena, files[i].path), arena_strdup(&g->arena, files[i].text)}));
}

static ValueId add_value(Graph *g, const char *name, DType t, Shape s, ValueKind k, SrcLoc loc) {
  Value v = {0};
  v.name = bc_intern(name);
  v.dtype = t;
  v.shape = s;
  v.kind = k;
  v.node = -1;
  v.loc = loc;
  v.grad = -1;
  vec_push(&g->values, v);
  return g->values.n - 1;
}

ValueId graph_add_input(Graph *g, const char *name, DType t, Shape s, SrcLoc loc) {
  BC_ASSERT(graph_find(g, name) < 0);
  ValueId v = add_value(g, name, t, s, VALUE_INPUT, loc);
  vec_push(&g->inputs, v);
  return v;
}

ValueId graph_add_param(Graph *g, const char *name, DType t, Shape s, Init init, SrcLoc loc) {
  BC_ASSERT(graph_find(g, name) < 0);
  ValueId v = add_value(g, name, t, s, VALUE_PARAM, loc);
  g->values.data[v].init = init;
  vec_push(&g->params, v);
  return v;
}

ValueId graph_add_state(Graph *g, const char *name, DType t, Shape s, Init init, SrcLoc loc) {
  BC_ASSERT(graph_find(g, name) < 0);
  ValueId v = add_value(g, name, t, s, VALUE_STATE, loc);
  g->values.data[v].init = init;
  vec_push(&g->states, v);
  return v;
}

ValueId graph_find(const Graph *g, const char *name) {
  const char *in = bc_intern(name);
  const VEC(ValueId) *lists[3] = {(void *)&g->inputs, (void *)&g->params, (void *)&g->states};
  for (int l = 0; l < 3; l++)
    for (int i = 0; i < lists[l]->n; i++)
      if (g->values.data[lists[l]->data[i]].name == in) return lists[l]->data[i];
  return -1;
}

double graph_hparam(const Graph *g, const char *name, double fallback) {
  for (int i = 0; i < g->hparams.n; i++)
    if (strcmp(g->hparams.data[i].name, name) == 0) return g->hparams.data[i].value;
  return fallback;
}

ValueId graph_op(Graph *g, Op op, int n_in, const ValueId *in, const Attrs *a, Diag *d) {
  BC_ASSERT(op >= 0 && op < OP_COUNT);
  for (int i = 0; i < n_in; i++) BC_ASSERT(in[i] >= 0 && in[i] < g->values.n);
  Attrs attrs = {0};
  if (a) attrs = *a;
  DType t;
  Shape s;
  if (!d) {
    Diag tmp;
    diag_init(&tmp);
    bool ok = shape_infer(g, op, n_in, in, &attrs, &t, &s, g->cur_loc, &tmp);
    if (!ok) diag_print(&tmp, stderr);
    diag_free(&tmp);
    BC_ASSERT(ok && "a pass built an ill-typed node");
  } else if (!shape_infer(g, op, n_in, in, &attrs, &t, &s, g->cur_loc, d)) {
    return -1;
  }
  Node n = {0};
  n.op = op;
  n.n_in = n_in;
  n.in = arena_alloc(&g->arena, sizeof(ValueId) * (size_t)(n_in ? n_in : 1));
  if (n_in) memcpy(n.in, in, sizeof(ValueId) * (size_t)n_in);
  n.loc = g->cur_loc;
  n.block = g->cur_block;
  n.a = attrs;
  NodeId id = g->nodes.n;
  char nm[64];
  snprintf(nm, sizeof nm, "%%%d", g->values.n);
  const char *name = g->cur_scope && *g->cur_scope ? arena_printf(&g->arena, "%s.%s", g->cur_scope, nm) : nm;
  n.out = add_value(g, name, t, s, VALUE_NODE, g->cur_loc);
  g->values.data[n.out].node = id;
  vec_push(&g->nodes, n);
  return n.out;
}

void graph_set_name(Graph *g, ValueId v, const char *name) { g->values.data[v].name = bc_intern(name); }

BlockId graph_add_block(Graph *g, const char *path, const char *type, SrcLoc loc, BlockId parent) {
  BC_ASSERT(parent >= -1 && parent < g->blocks.n);
  vec_push(&g->blocks, ((BlockInst){bc_intern(path ? path : ""), bc_intern(type ? type : ""), loc, parent, -1, 0}));
  return g->blocks.n - 1;
}

static int block_depth(const Graph *g, BlockId b) {
  int d = 0;
  for (; b >= 0; b = g->blocks.data[b].parent) d++;
  return d;
}

BlockId graph_block_common(const Graph *g, BlockId a, BlockId b) {
  int da = block_depth(g, a), db = block_depth(g, b);
  for (; da > db; da--) a = g->blocks.data[a].parent;
  for (; db > da; db--) b = g->blocks.data[b].parent;
  while (a != b) {
    a = g->blocks.data[a].parent;
    b = g->blocks.data[b].parent;
  }
  return a;
}

ValueId *graph_compact(Graph *g, const bool *keep) {
  int nv = g->values.n, nn = g->nodes.n;
  bool *live = bc_calloc((size_t)nv, sizeof(bool));
  for (int i = 0; i < nv; i++)
    if (g->values.data[i].kind != VALUE_NODE) live[i] = true;
  for (int i = 0; i < nn; i++)
    if (keep[i]) live[g->nodes.data[i].out] = true;
  ValueId *map = bc_malloc(sizeof(ValueId) * (size_t)(nv ? nv : 1));
  int k = 0;
  for (int i = 0; i < nv; i++) {
    map[i] = live[i] ? k : -1;
    if (live[i]) g->values.data[k++] = g->values.data[i];
  }
  g->values.n = k;
  int m = 0;
  for (int i = 0; i < nn; i++) {
    if (!keep[i]) continue;
    Node n = g->nodes.data[i];
    for (int j = 0; j < n.n_in; j++) {
      BC_ASSERT(map[n.in[j]] >= 0 && "kept node reads a removed value");
      n.in[j] = map[n.in[j]];
    }
    n.out = map[n.out];
    g->values.data[n.out].node = m;
    g->nodes.data[m++] = n;
  }
  g->nodes.n = m;
  for (int i = 0; i < g->values.n; i++) {
    Value *v = &g->values.data[i];
    if (v->grad >= 0) v->grad = map[v->grad];
  }
#define REMAP(vec) \
  do { \
    int w_ = 0; \
    for (int i = 0; i < (vec)->n; i++) \
      if (map[(vec)->data[i]] >= 0) (vec)->data[w_++] = map[(vec)->data[i]]; \
    (vec)->n = w_; \
  } while (0)
  REMAP(&g->inputs);
  REMAP(&g->params);
  REMAP(&g->states);
  REMAP(&g->outputs);
#undef REMAP
  if (g->loss >= 0) g->loss = map[g->loss];
  free(live);
  return map;
}

void graph_drop_dead(Graph *g) {
  bool *live = bc_calloc((size_t)(g->values.n ? g->values.n : 1), sizeof(bool));
  bool *keep = bc_calloc((size_t)(g->nodes.n ? g->nodes.n : 1), sizeof(bool));
  for (int i = 0; i < g->outputs.n; i++) live[g->outputs.data[i]] = true;
  if (g->loss >= 0) live[g->loss] = true;
  for (int i = 0; i < g->params.n; i++) {
    ValueId gr = g->values.data[g->params.data[i]].grad;
    if (gr >= 0) live[gr] = true;
  }
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    if (!live[n->out] && !(op_info[n->op].flags & OPF_SIDE_EFFECT)) continue;
    keep[i] = true;
    for (int j = 0; j < n->n_in; j++) live[n->in[j]] = true;
  }
  free(graph_compact(g, keep));
  free(live);
  free(keep);
}

ValueId *graph_rebuild_begin(Graph *ng, const Graph *g) {
  graph_init(ng, g->name);
  for (int i = 0; i < g->blocks.n; i++) vec_push(&ng->blocks, g->blocks.data[i]); /* nodes keep their ids */
  ValueId *map = bc_malloc(sizeof(ValueId) * (size_t)(g->values.n ? g->values.n : 1));
  for (int i = 0; i < g->values.n; i++) map[i] = -1;
  for (int i = 0; i < g->inputs.n; i++) {
    const Value *v = &g->values.data[g->inputs.data[i]];
    map[g->inputs.data[i]] = graph_add_input(ng, v->name, v->dtype, v->shape, v->loc);
  }
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    map[g->params.data[i]] = graph_add_param(ng, v->name, v->dtype, v->shape, v->init, v->loc);
  }
  for (int i = 0; i < g->states.n; i++) {
    const Value *v = &g->values.data[g->states.data[i]];
    map[g->states.data[i]] = graph_add_state(ng, v->name, v->dtype, v->shape, v->init, v->loc);
  }
  return map;
}

void graph_rebuild_end(Graph *ng, const Graph *g, const ValueId *map) {
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    if (v->grad >= 0) ng->values.data[map[g->params.data[i]]].grad = map[v->grad];
  }
  for (int i = 0; i < g->outputs.n; i++) vec_push(&ng->outputs, map[g->outputs.data[i]]);
  ng->loss = g->loss >= 0 ? map[g->loss] : -1;
  for (int i = 0; i < g->hparams.n; i++) vec_push(&ng->hparams, g->hparams.data[i]);
  graph_set_sources(ng, g->sources.data, g->sources.n);
  ng->cur_block = -1;
}

void graph_reorder(Graph *g, const NodeId *order) {
  int nn = g->nodes.n;
  Node *nodes = bc_malloc(sizeof(Node) * (size_t)(nn ? nn : 1));
  bool *done = bc_calloc((size_t)(g->values.n ? g->values.n : 1), sizeof(bool));
  for (int v = 0; v < g->values.n; v++) done[v] = g->values.data[v].kind != VALUE_NODE;
  for (int k = 0; k < nn; k++) {
    nodes[k] = g->nodes.data[order[k]];
    for (int j = 0; j < nodes[k].n_in; j++) BC_ASSERT(done[nodes[k].in[j]] && "order is not topological");
    done[nodes[k].out] = true;
  }
  memcpy(g->nodes.data, nodes, sizeof(Node) * (size_t)nn);
  for (int k = 0; k < nn; k++) g->values.data[g->nodes.data[k].out].node = k;
  free(nodes);
  free(done);
}

void graph_move_to(Graph *g, NodeId first_new, NodeId at) {
  NodeId *order = bc_malloc(sizeof(NodeId) * (size_t)(g->nodes.n ? g->nodes.n : 1));
  int k = 0;
  for (NodeId i = 0; i < at; i++) order[k++] = i;
  for (NodeId i = first_new; i < g->nodes.n; i++) order[k++] = i;
  for (NodeId i = at; i < first_new; i++) order[k++] = i;
  graph_reorder(g, order);
  free(order);
}

void graph_at_node(Graph *g, const Node *n) {
  g->cur_loc = n->loc;
  g->cur_block = n->block;
  g->cur_scope = NULL;
}

ValueId graph_copy_node(Graph *g, const Node *n, const ValueId *in, Shape s) {
  switch (n->op) {
  case OP_CONSTANT: return graph_const(g, n->a.scalar, n->a.dtype, s);
  case OP_IOTA: return graph_iota(g, s, n->a.axis, n->a.dtype);
  case OP_BROADCAST: return graph_broadcast(g, in[0], s);
  case OP_RESHAPE: return graph_reshape(g, in[0], s);
  default: {
    bool remat = n->remat; /* n may live in g->nodes, which graph_op grows */
    ValueId r = graph_op(g, n->op, n->n_in, in, &n->a, NULL);
    g->nodes.data[g->values.data[r].node].remat = remat;
    return r;
  }
  }
}

void graph_node_to_reshape(Graph *g, NodeId n, ValueId src) {
  Node *nd = &g->nodes.data[n];
  BC_ASSERT(nd->n_in >= 1 && shape_numel(&g->values.data[src].shape) == shape_numel(&g->values.data[nd->out].shape));
  nd->op = OP_RESHAPE;
  nd->n_in = 1;
  nd->in[0] = src;
  nd->remat = false;
  memset(&nd->a, 0, sizeof(nd->a));
  nd->a.shape = g->values.data[nd->out].shape;
}

void graph_kept_values(const Graph *g, bool *kept) {
  for (int i = 0; i < g->outputs.n; i++) kept[g->outputs.data[i]] = true;
  if (g->loss >= 0) kept[g->loss] = true;
  for (int i = 0; i < g->params.n; i++) {
    ValueId gr = g->values.data[g->params.data[i]].grad;
    if (gr >= 0) kept[gr] = true;
  }
  for (int i = g->nodes.n - 1; i >= 0; i--)
    if (g->nodes.data[i].op == OP_RESHAPE && kept[g->nodes.data[i].out]) kept[g->nodes.data[i].in[0]] = true;
}

/* ---- builders for passes ---- */

ValueId graph_unary(Graph *g, Op op, ValueId a) {
  BC_ASSERT(op_info[op].flags & OPF_UNARY);
  return graph_op(g, op, 1, &a, NULL, NULL);
}

ValueId graph_binary(Graph *g, Op op, ValueId a, ValueId b) {
  BC_ASSERT(op_info[op].flags & OPF_BINARY);
  Shape s;
  BC_ASSERT(shape_broadcast(&g->values.data[a].shape, &g->values.data[b].shape, &s));
  if (!shape_eq(&g->values.data[a].shape, &s)) a = graph_broadcast(g, a, s);
  if (!shape_eq(&g->values.data[b].shape, &s)) b = graph_broadcast(g, b, s);
  ValueId in[2] = {a, b};
  return graph_op(g, op, 2, in, NULL, NULL);
}

ValueId graph_select(Graph *g, ValueId c, ValueId a, ValueId b) {
  Shape s;
  BC_ASSERT(shape_broadcast(&g->values.data[a].shape, &g->values.data[b].shape, &s));
  BC_ASSERT(shape_broadcast(&s, &g->values.data[c].shape, &s));
  ValueId in[3] = {c, a, b};
  for (int i = 0; i < 3; i++)
    if (!shape_eq(&g->values.data[in[i]].shape, &s)) in[i] = graph_broadcast(g, in[i], s);
  return graph_op(g, OP_SELECT, 3, in, NULL, NULL);
}

ValueId graph_const(Graph *g, double v, DType t, Shape s) {
  Attrs a = {0};
  a.scalar = v;
  a.dtype = t;
  a.shape = s;
  return graph_op(g, OP_CONSTANT, 0, NULL, &a, NULL);
}

ValueId graph_const_like(Graph *g, double v, ValueId like) {
  return graph_const(g, v, g->values.data[like].dtype, g->values.data[like].shape);
}

ValueId graph_broadcast(Graph *g, ValueId x, Shape s) {
  if (shape_eq(&g->values.data[x].shape, &s)) return x;
  Attrs a = {0};
  a.shape = s;
  return graph_op(g, OP_BROADCAST, 1, &x, &a, NULL);
}

ValueId graph_reshape(Graph *g, ValueId x, Shape s) {
  if (shape_eq(&g->values.data[x].shape, &s)) return x;
  Attrs a = {0};
  a.shape = s;
  return graph_op(g, OP_RESHAPE, 1, &x, &a, NULL);
}

ValueId graph_permute(Graph *g, ValueId x, const int *perm) {
  Attrs a = {0};
  int r = g->values.data[x].shape.rank;
  bool ident = true;
  for (int i = 0; i < r; i++) {
    a.perm[i] = perm[i];
    if (perm[i] != i) ident = false;
  }
  if (ident) return x;
  return graph_op(g, OP_PERMUTE, 1, &x, &a, NULL);
}

ValueId graph_slice(Graph *g, ValueId x, int axis, int64_t start, int64_t end) {
  Attrs a = {0};
  a.axis = axis;
  a.start = start;
  a.end = end;
  return graph_op(g, OP_SLICE, 1, &x, &a, NULL);
}

ValueId graph_concat(Graph *g, int n, const ValueId *parts, int axis) {
  if (n == 1) return parts[0];
  Attrs a = {0};
  a.axis = axis;
  return graph_op(g, OP_CONCAT, n, parts, &a, NULL);
}

ValueId graph_reduce(Graph *g, Op op, ValueId x, int axis) {
  BC_ASSERT(op == OP_REDUCE_SUM || op == OP_REDUCE_MAX);
  Attrs a = {0};
  a.axis = axis;
  return graph_op(g, op, 1, &x, &a, NULL);
}

ValueId graph_sum_to(Graph *g, ValueId x, Shape s) {
  Shape xs = g->values.data[x].shape;
  if (shape_eq(&xs, &s)) return x;
  BC_ASSERT(xs.rank >= s.rank);
  int lead = xs.rank - s.rank;
  /* innermost axes first: a bias's gradient [B, T, F] -> [F] sums each
   * example's contiguous [T, F] block, then the B rows of the result */
  for (int i = xs.rank - 1; i >= 0; i--) {
    int si = i - lead;
    int64_t want = si >= 0 ? s.dim[si] : 1;
    if (xs.dim[i] != want) {
      BC_ASSERT(want == 1);
      x = graph_reduce(g, OP_REDUCE_SUM, x, i);
    } else if (si < 0 && xs.dim[i] != 1) {
      x = graph_reduce(g, OP_REDUCE_SUM, x, i);
    }
  }
  return graph_reshape(g, x, s);
}

ValueId graph_matmul(Graph *g, ValueId x, ValueId y, bool ta, bool tb) {
  Attrs a = {0};
  a.trans_a = ta;
  a.trans_b = tb;
  ValueId in[2] = {x, y};
  return graph_op(g, OP_MATMUL, 2, in, &a, NULL);
}

ValueId graph_gather(Graph *g, ValueId table, ValueId idx) {
  ValueId in[2] = {table, idx};
  return graph_op(g, OP_GATHER, 2, in, NULL, NULL);
}

ValueId graph_scatter_add(Graph *g, ValueId idx, ValueId upd, Shape s) {
  Attrs a = {0};
  a.shape = s;
  ValueId in[2] = {idx, upd};
  return graph_op(g, OP_SCATTER_ADD, 2, in, &a, NULL);
}

ValueId graph_cast(Graph *g, ValueId x, DType t) {
  if (g->values.data[x].dtype == t) return x;
  Attrs a = {0};
  a.dtype = t;
  return graph_op(g, OP_CAST, 1, &x, &a, NULL);
}

ValueId graph_iota(Graph *g, Shape s, int axis, DType t) {
  Attrs a = {0};
  a.shape = s;
  a.axis = axis;
  a.dtype = t;
  return graph_op(g, OP_IOTA, 0, NULL, &a, NULL);
}

ValueId graph_random(Graph *g, Shape s, uint32_t key) {
  Attrs a = {0};
  a.shape = s;
  a.key = key;
  return graph_op(g, OP_RANDOM, 0, NULL, &a, NULL);
}

ValueId graph_assign(Graph *g, ValueId target, ValueId value) {
  ValueId in[2] = {target, value};
  return graph_op(g, OP_ASSIGN, 2, in, NULL, NULL);
}

int64_t graph_param_elements(const Graph *g) {
  int64_t n = 0;
  for (int i = 0; i < g->params.n; i++) n += shape_numel(&g->values.data[g->params.data[i]].shape);
  return n;
}
