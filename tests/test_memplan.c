/* test_memplan.c — the memory planner (passes/memplan.c):
 *  - small hand-built graphs: buffers reused along a chain, in place and
 *    views, fused (unmaterialized) values, disable mode, and the checker
 *    rejecting deliberately broken plans;
 *  - the d2l BERT training steps (pretrain, nli) at batch 64: planned,
 *    verified by memplan_check, arena vs sum printed;
 *  - the real fused plan of the tiny and reference BERT training steps
 *    (kernel_plan_compile, as the cpu and cuda backends make it) verified by
 *    memplan_check;
 *  - end to end at a tiny size: the reference interpreter computes every
 *    value, then a replay writes each node's output into the planned arena in
 *    node order and checks that everything a node reads still holds its value
 *    (before and after the node writes), and that pinned values end the step
 *    right. This proves the plan on the real graphs, fused or not. */
#include "codegen/kernel.h"
#include "passes/memplan.h"
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"

static bool plan(const Graph *g, const bool *mat, bool disable, MemPlan *p) {
  Diag d;
  diag_init(&d);
  bool ok = memplan_run(g, mat, disable, p, &d) && memplan_check(g, p, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* memplan_check on p must fail (a broken plan). */
static bool rejects(const Graph *g, const MemPlan *p) {
  Diag d;
  diag_init(&d);
  bool ok = memplan_check(g, p, &d);
  if (!ok) fprintf(stderr, "  rejected as expected: %s\n", diag_first(&d));
  bool said = d.n_errors > 0;
  diag_free(&d);
  return !ok && said;
}

/* x [32, 32] -> six transposes -> output: each intermediate dies at the next
 * node, so two 4 KiB buffers take turns. */
static void chain(Graph *g, ValueId *t) {
  graph_init(g, "chain");
  ValueId v = graph_add_input(g, "x", DTYPE_F32, shape_of(2, 32, 32), SRCLOC_NONE);
  int perm[2] = {1, 0};
  for (int i = 0; i < 6; i++) t[i] = v = graph_permute(g, v, perm);
  vec_push(&g->outputs, v);
}

TEST(chain_reuses_buffers) {
  Graph g;
  ValueId t[6];
  chain(&g, t);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  memplan_print(&g, &p, stderr);
  CHECK_EQ_INT(p.sum_intermediate_bytes, 5 * 4096);
  CHECK_EQ_INT(p.arena_bytes, 2 * 4096);
  CHECK_EQ_INT(p.pinned_bytes, 2 * 4096); /* x and the output */
  CHECK_EQ_INT(p.slots[t[0]].offset, p.slots[t[2]].offset);
  CHECK(p.slots[t[0]].offset != p.slots[t[1]].offset);
  CHECK_EQ_INT(p.slots[t[5]].kind, MEM_PINNED);
  CHECK_EQ_INT(p.n_inplace + p.n_views, 0); /* permute copies */
  memplan_free(&p);
  graph_free(&g);
}

/* a = exp(x); b = neg(a) [in place of a]; c = tanh(b) [b lives on: fresh];
 * e = add(b, c) [in place of b]; r = reshape(e) [view]; f = mul(r, r) [in
 * place of r]; out = reduce_sum(f). */
typedef struct {
  ValueId x, a, b, c, e, r, f, out;
} Inplace;

static void inplace_graph(Graph *g, Inplace *v) {
  graph_init(g, "inplace");
  v->x = graph_add_input(g, "x", DTYPE_F32, shape_of(1, 64), SRCLOC_NONE);
  v->a = graph_unary(g, OP_EXP, v->x);
  v->b = graph_unary(g, OP_NEG, v->a);
  v->c = graph_unary(g, OP_TANH, v->b);
  v->e = graph_binary(g, OP_ADD, v->b, v->c);
  v->r = graph_reshape(g, v->e, shape_of(2, 8, 8));
  v->f = graph_binary(g, OP_MUL, v->r, v->r);
  v->out = graph_reduce(g, OP_REDUCE_SUM, v->f, 1);
  vec_push(&g->outputs, v->out);
}

TEST(in_place_and_views) {
  Graph g;
  Inplace v;
  inplace_graph(&g, &v);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  memplan_print(&g, &p, stderr);
  const MemSlot *s = p.slots;
  CHECK_EQ_INT(s[v.x].kind, MEM_PINNED);
  CHECK_EQ_INT(s[v.a].alias_of, -1); /* x is pinned: never written over */
  CHECK_EQ_INT(s[v.b].alias_of, v.a);
  CHECK_EQ_INT(s[v.b].offset, s[v.a].offset);
  CHECK_EQ_INT(s[v.c].alias_of, -1);
  CHECK(s[v.c].offset != s[v.b].offset);
  CHECK_EQ_INT(s[v.e].alias_of, v.b);
  CHECK_EQ_INT(s[v.r].alias_of, v.e);
  CHECK_EQ_INT(s[v.f].alias_of, v.r);
  CHECK_EQ_INT(p.n_inplace, 3);
  CHECK_EQ_INT(p.n_views, 1);
  CHECK_EQ_INT(p.arena_bytes, 2 * 256);
  CHECK_EQ_INT(p.sum_intermediate_bytes, 6 * 256);
  memplan_free(&p);

  /* a fused into b's kernel: a has no buffer, so b cannot reuse it, and x
   * (what b's kernel reads) must live until b. */
  bool *mat = calloc((size_t)g.values.n, 1);
  for (int i = 0; i < g.values.n; i++) mat[i] = i != v.a;
  CHECK(plan(&g, mat, false, &p));
  CHECK_EQ_INT(p.slots[v.a].kind, MEM_NONE);
  CHECK_EQ_INT(p.slots[v.b].alias_of, -1);
  CHECK_EQ_INT(p.sum_intermediate_bytes, 5 * 256);
  memplan_free(&p);

  /* c fused into e: b is read (through c) only at e, so e may still reuse b */
  for (int i = 0; i < g.values.n; i++) mat[i] = i != v.c;
  CHECK(plan(&g, mat, false, &p));
  CHECK_EQ_INT(p.slots[v.e].alias_of, v.b);
  CHECK_EQ_INT(p.slots[v.b].last, g.values.data[v.e].node);
  memplan_free(&p);
  free(mat);
  graph_free(&g);
}

/* a = exp(x); r = reshape(a) [a view, though a is read later]; f = neg(r)
 * [not in place: a still lives on r's buffer]; t = tanh(a) [in place of a:
 * r is dead by then]; out = reshape(f) + t. */
TEST(reshape_of_a_live_buffer_is_a_view) {
  Graph g;
  graph_init(&g, "live view");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(1, 64), SRCLOC_NONE);
  ValueId a = graph_unary(&g, OP_EXP, x);
  ValueId r = graph_reshape(&g, a, shape_of(2, 8, 8));
  ValueId f = graph_unary(&g, OP_NEG, r);
  ValueId t = graph_unary(&g, OP_TANH, a);
  ValueId out = graph_binary(&g, OP_ADD, graph_reshape(&g, f, shape_of(1, 64)), t);
  vec_push(&g.outputs, out);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  memplan_print(&g, &p, stderr);
  const MemSlot *s = p.slots;
  CHECK_EQ_INT(s[r].alias_of, a);
  CHECK_EQ_INT(s[r].offset, s[a].offset);
  CHECK_EQ_INT(s[f].alias_of, -1);
  CHECK(s[f].offset != s[a].offset);
  CHECK_EQ_INT(s[t].alias_of, a);
  memplan_free(&p);
  graph_free(&g);
}

/* A slice of rows is a view into its source at that row when the offset
 * keeps the 64-byte alignment (x [8, 16]: rows 2..5 start 128 bytes in),
 * with the source still read after it; a misaligned one ([8, 4]: row 1 is
 * 16 bytes in) gets a buffer of its own. */
TEST(slice_of_rows_is_a_view) {
  for (int aligned = 0; aligned < 2; aligned++) {
    Graph g;
    graph_init(&g, "slice view");
    int cols = aligned ? 16 : 4;
    ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 8, cols), SRCLOC_NONE);
    ValueId a = graph_unary(&g, OP_EXP, x);
    ValueId r = graph_slice(&g, a, 0, aligned ? 2 : 1, 5);
    ValueId f = graph_unary(&g, OP_NEG, r);
    ValueId t = graph_unary(&g, OP_TANH, a);
    vec_push(&g.outputs, f);
    vec_push(&g.outputs, t);
    MemPlan p;
    CHECK(plan(&g, NULL, false, &p));
    if (aligned) {
      CHECK_EQ_INT(p.slots[r].alias_of, a);
      CHECK_EQ_INT(p.slots[r].offset, p.slots[a].offset + 2 * 16 * 4);
    } else {
      CHECK_EQ_INT(p.slots[r].alias_of, -1);
    }
    memplan_free(&p);
    graph_free(&g);
  }
}

/* a = exp(x); y = a - broadcast(reduce_max(a)): with the max and the
 * broadcast fused into y's kernel, y may not overwrite a (the kernel still
 * reads other elements of a's row); with only the broadcast fused, it may. */
typedef struct {
  ValueId x, a, m, bm, y;
} RowKernel;

static void row_graph(Graph *g, RowKernel *v) {
  graph_init(g, "row");
  v->x = graph_add_input(g, "x", DTYPE_F32, shape_of(2, 4, 8), SRCLOC_NONE);
  v->a = graph_unary(g, OP_EXP, v->x);
  v->m = graph_reduce(g, OP_REDUCE_MAX, v->a, 1);
  v->bm = graph_broadcast(g, v->m, shape_of(2, 4, 8));
  v->y = graph_binary(g, OP_SUB, v->a, v->bm);
  vec_push(&g->outputs, graph_reduce(g, OP_REDUCE_SUM, v->y, 1));
}

TEST(no_in_place_under_a_fused_reduction) {
  Graph g;
  RowKernel v;
  row_graph(&g, &v);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  CHECK_EQ_INT(p.slots[v.y].alias_of, v.a);
  memplan_free(&p);
  bool *mat = calloc((size_t)g.values.n, 1);
  for (int i = 0; i < g.values.n; i++) mat[i] = i != v.bm;
  CHECK(plan(&g, mat, false, &p));
  CHECK_EQ_INT(p.slots[v.y].alias_of, v.a);
  memplan_free(&p);
  mat[v.m] = false;
  CHECK(plan(&g, mat, false, &p));
  CHECK_EQ_INT(p.slots[v.y].alias_of, -1);
  CHECK_EQ_INT(p.slots[v.a].last, g.values.data[v.y].node);
  p.slots[v.y].alias_of = v.a; /* the checker sees the hazard too */
  p.slots[v.y].offset = p.slots[v.a].offset;
  CHECK(rejects(&g, &p));
  memplan_free(&p);
  free(mat);
  graph_free(&g);
}

/* A dead node (no buffer, nothing reads it: what passes/chunk.c leaves
 * for fuse not to compute) reads nothing: a = exp(x) dies at its last
 * live reader b, not at the dead c after it. */
TEST(dead_nodes_read_nothing) {
  Graph g;
  graph_init(&g, "dead");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(1, 1024), SRCLOC_NONE);
  ValueId a = graph_unary(&g, OP_EXP, x);
  ValueId b = graph_unary(&g, OP_NEG, a);
  ValueId c = graph_unary(&g, OP_LOG, a);
  ValueId y = graph_unary(&g, OP_SQRT, b);
  vec_push(&g.outputs, y);
  bool *mat = calloc((size_t)g.values.n, 1);
  mat[x] = mat[a] = mat[b] = mat[y] = true; /* c: none */
  MemPlan p;
  CHECK(plan(&g, mat, false, &p));
  CHECK_EQ_INT(p.slots[a].last, g.values.data[b].node);
  CHECK(g.values.data[c].node > g.values.data[b].node);
  memplan_free(&p);
  free(mat);
  graph_free(&g);
}

/* A small buffer does not take a piece of a large hole: a (1 MiB) dies,
 * then s (4 KiB) and b (1 MiB) are made while c (1 MiB) lives. With one
 * allocator s would sit at a's old place and b go above c (3 MiB); with
 * small buffers apart b takes a's place (2 MiB and the 4 KiB). */
TEST(small_buffers_keep_out_of_large_holes) {
  Graph g;
  graph_init(&g, "holes");
  int perm[2] = {1, 0};
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 512, 512), SRCLOC_NONE);
  ValueId a = graph_permute(&g, x, perm);
  ValueId c = graph_permute(&g, a, perm);
  ValueId s_ = graph_reduce(&g, OP_REDUCE_SUM, c, 1);
  ValueId b = graph_permute(&g, c, perm);
  ValueId y = graph_binary(&g, OP_ADD, b, graph_broadcast(&g, s_, shape_of(2, 512, 512)));
  vec_push(&g.outputs, y);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  CHECK_MSG(p.arena_bytes <= 2 * 1048576 + 65536, "arena %lld bytes", (long long)p.arena_bytes);
  CHECK_EQ_INT(p.slots[b].offset, p.slots[a].offset);
  memplan_free(&p);
  graph_free(&g);
}

/* A small buffer goes where the large block has room for its whole
 * lifetime: a (1 MiB) dies as b (2 MiB, two copies of a) is made above
 * it, s (4 KiB, b's row sums) takes a's place, and s broadcast (2 MiB)
 * goes above b: the arena is the large buffers' 5 MiB, not 5 MiB and a
 * block of small buffers after it. */
TEST(small_buffers_fill_holes_the_large_leave) {
  Graph g;
  graph_init(&g, "hole");
  int perm[2] = {1, 0};
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 512, 512), SRCLOC_NONE);
  ValueId a = graph_permute(&g, x, perm);
  ValueId parts[2] = {a, a};
  ValueId b = graph_concat(&g, 2, parts, 0);
  ValueId s_ = graph_reduce(&g, OP_REDUCE_SUM, b, 1);
  ValueId y = graph_binary(&g, OP_ADD, b, graph_broadcast(&g, s_, shape_of(2, 1024, 512)));
  vec_push(&g.outputs, y);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  memplan_print(&g, &p, stderr);
  CHECK_EQ_INT(p.arena_bytes, 5 * 1048576);
  CHECK(p.slots[s_].offset + p.slots[s_].bytes <= p.slots[b].offset);
  memplan_free(&p);
  graph_free(&g);
}

TEST(disable_gives_every_value_its_own_region) {
  Graph g;
  Inplace v;
  inplace_graph(&g, &v);
  MemPlan p;
  CHECK(plan(&g, NULL, true, &p));
  CHECK_EQ_INT(p.arena_bytes, p.sum_intermediate_bytes);
  CHECK_EQ_INT(p.arena_bytes, 6 * 256);
  CHECK_EQ_INT(p.n_inplace + p.n_views, 0);
  memplan_print_summary(&p, stderr);
  memplan_free(&p);
  graph_free(&g);
}

TEST(checker_rejects_broken_plans) {
  Graph g;
  ValueId t[6];
  chain(&g, t);
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  MemSlot keep = p.slots[t[1]];
  p.slots[t[1]].offset = p.slots[t[0]].offset; /* written while t0 is read */
  CHECK(rejects(&g, &p));
  p.slots[t[1]].offset = p.arena_bytes; /* out of bounds */
  CHECK(rejects(&g, &p));
  p.slots[t[1]].offset = 32; /* unaligned */
  CHECK(rejects(&g, &p));
  p.slots[t[1]] = keep;
  p.slots[t[1]].alias_of = t[0]; /* a permute cannot work in place */
  p.slots[t[1]].offset = p.slots[t[0]].offset;
  CHECK(rejects(&g, &p));
  p.slots[t[1]] = keep;
  p.slots[t[5]].offset = p.slots[g.inputs.data[0]].offset; /* pinned on pinned */
  CHECK(rejects(&g, &p));
  p.slots[t[5]].offset = 0;
  p.slots[t[5]].kind = MEM_ARENA; /* an output must be pinned */
  CHECK(rejects(&g, &p));
  memplan_free(&p);
  graph_free(&g);

  Inplace v;
  inplace_graph(&g, &v);
  CHECK(plan(&g, NULL, false, &p));
  p.slots[v.c].alias_of = v.b; /* b is read again by e: c may not overwrite it */
  p.slots[v.c].offset = p.slots[v.b].offset;
  CHECK(rejects(&g, &p));
  memplan_free(&p);
  graph_free(&g);
}

/* ---- the BERT training steps -------------------------------------------- */

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"}, {"dropout", "0.2"},
};
static const Setting batch64[] = {{"batch", "64"}};

static bool compile(Graph *g, const char *graph, const Setting *sets, int n_sets) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = n_sets;
  o.train = true;
  Diag d;
  diag_init(&d);
  bool ok = pipeline_run(g, &o, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* The intermediate pinned value v is a reshape of (a node's value, not an
 * assign's), or -1: memplan.h makes v a view of it. */
static ValueId pinned_view_source(const Graph *g, ValueId v) {
  NodeId n = g->values.data[v].node;
  if (n < 0 || g->nodes.data[n].op != OP_RESHAPE) return -1;
  ValueId src = g->nodes.data[n].in[0];
  NodeId p = g->values.data[src].node;
  return p >= 0 && g->nodes.data[p].op != OP_ASSIGN ? src : -1;
}

/* Which values must be pinned (as memplan.h lists them). */
static bool *must_pin(const Graph *g) {
  bool *pin = calloc((size_t)g->values.n, 1);
  for (int v = 0; v < g->values.n; v++) {
    const Value *x = &g->values.data[v];
    if (x->kind != VALUE_NODE) pin[v] = true;
    if (x->kind == VALUE_PARAM) pin[x->grad] = true;
  }
  for (int i = 0; i < g->outputs.n; i++) pin[g->outputs.data[i]] = true;
  pin[g->loss] = true;
  for (int i = 0; i < g->nodes.n; i++)
    if (g->nodes.data[i].op == OP_ASSIGN) pin[g->nodes.data[i].in[0]] = true; /* the target */
  /* the intermediate a pinned reshape views (last node first: chains) */
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    if (pin[n->out] && pinned_view_source(g, n->out) >= 0) pin[n->in[0]] = true;
  }
  return pin;
}

/* A stand-in for fusion: outside pinned values, constants, broadcasts, every
 * other reduction (row kernels) and two of three elementwise outputs live in
 * registers. */
static bool *fused_mask(const Graph *g) {
  bool *pin = must_pin(g), *mat = calloc((size_t)g->values.n, 1);
  /* Like passes/fuse.c, never leave in registers a value computed (through
   * other fused values) from the target of an assign: its reader may run
   * after the assign has overwritten the target. */
  bool *target = calloc((size_t)g->values.n, 1), *reads_target = calloc((size_t)g->values.n, 1);
  for (int i = 0; i < g->nodes.n; i++)
    if (g->nodes.data[i].op == OP_ASSIGN) target[g->nodes.data[i].in[0]] = true;
  int k = 0, r = 0;
  for (int v = 0; v < g->values.n; v++) {
    NodeId n = g->values.data[v].node;
    mat[v] = true;
    if (pin[v] || n < 0) continue;
    const Node *nd = &g->nodes.data[n];
    for (int j = 0; j < nd->n_in; j++)
      if (target[nd->in[j]] || (!mat[nd->in[j]] && reads_target[nd->in[j]])) reads_target[v] = true;
    Op op = nd->op;
    if (op == OP_CONSTANT || op == OP_BROADCAST) mat[v] = false;
    else if (op_info[op].flags & OPF_REDUCE) mat[v] = r++ % 2 == 1;
    else if (op_info[op].flags & OPF_ELEMENTWISE) mat[v] = k++ % 3 == 2;
    if (reads_target[v]) mat[v] = true;
  }
  free(target);
  free(reads_target);
  free(pin);
  return mat;
}

TEST(pinned_values_never_overlap) {
  Graph g;
  if (!compile(&g, "pretrain", tiny, (int)(sizeof tiny / sizeof tiny[0]))) {
    CHECK(0);
    return;
  }
  MemPlan p;
  CHECK(plan(&g, NULL, false, &p));
  bool *pin = must_pin(&g);
  int n_pinned = 0;
  for (int u = 0; u < g.values.n; u++) {
    if (!pin[u]) continue;
    n_pinned++;
    const MemSlot *a = &p.slots[u];
    ValueId src = pinned_view_source(&g, u);
    CHECK_MSG(a->kind == MEM_PINNED && a->alias_of == src, "'%s' not pinned", g.values.data[u].name);
    if (src >= 0) { /* a view of its source's region */
      CHECK_EQ_INT(a->offset, p.slots[src].offset);
      continue;
    }
    for (int v = u + 1; v < g.values.n; v++) {
      const MemSlot *b = &p.slots[v];
      if (b->kind != MEM_PINNED || b->alias_of >= 0) continue;
      CHECK_MSG(a->offset + a->bytes <= b->offset || b->offset + b->bytes <= a->offset, "'%s' overlaps '%s'",
                g.values.data[u].name, g.values.data[v].name);
    }
  }
  /* Nothing but must-pin values, assign outputs (aliases of their
   * targets) and reshapes of pinned values (views) is pinned. */
  for (int v = 0; v < g.values.n; v++) {
    if (p.slots[v].kind != MEM_PINNED || pin[v]) continue;
    const Node *n = &g.nodes.data[g.values.data[v].node];
    CHECK((n->op == OP_ASSIGN || n->op == OP_RESHAPE) && p.slots[v].alias_of == n->in[0]);
  }
  fprintf(stderr, "  %d pinned values, %lld bytes\n", n_pinned, (long long)p.pinned_bytes);
  CHECK(n_pinned > 3 * g.params.n);
  free(pin);
  memplan_free(&p);
  graph_free(&g);
}

static void bert_batch64(const char *name) {
  Graph g;
  if (!compile(&g, name, batch64, 1)) {
    CHECK(0);
    return;
  }
  MemPlan p, off, fused;
  bool *mat = fused_mask(&g);
  CHECK(plan(&g, NULL, false, &p));
  CHECK(plan(&g, NULL, true, &off));
  CHECK(plan(&g, mat, false, &fused));
  fprintf(stderr, "  %s, batch 64 (%d nodes, %d values):\n  ", name, g.nodes.n, g.values.n);
  memplan_print_summary(&p, stderr);
  fprintf(stderr, "  disabled: ");
  memplan_print_summary(&off, stderr);
  fprintf(stderr, "  with fusion stand-in: ");
  memplan_print_summary(&fused, stderr);
  CHECK(p.arena_bytes < p.sum_intermediate_bytes / 2);
  CHECK_EQ_INT(off.arena_bytes, off.sum_intermediate_bytes);
  /* planning may turn reshapes of pinned values into views (no arena) */
  CHECK(off.sum_intermediate_bytes >= p.sum_intermediate_bytes);
  CHECK_EQ_INT(off.pinned_bytes, p.pinned_bytes);
  CHECK(fused.sum_intermediate_bytes < p.sum_intermediate_bytes);
  free(mat);
  memplan_free(&p);
  memplan_free(&off);
  memplan_free(&fused);
  graph_free(&g);
}

TEST(bert_pretrain_batch64) { bert_batch64("pretrain"); }
TEST(bert_nli_batch64) { bert_batch64("nli"); }

/* The plan the compiled backends run (kernel_plan_compile: real fusion,
 * lifetimes counted in kernels), checked by memplan_check as BC_VERIFY=1
 * does in runtime/cpu.c: a planner that reuses a buffer inside the kernel
 * that last reads it (a kernel reads and writes all its buffers at once, on
 * several threads) is caught here, not only by the golden kernel listing. */
static void real_plan(const char *name, const Setting *sets, int n_sets) {
  Graph g, eg;
  if (!compile(&g, name, sets, n_sets)) {
    CHECK(0);
    return;
  }
  KernelPlan kp;
  MemPlan mem;
  Diag d;
  diag_init(&d);
  CompileOptions o; /* every optimization on, whatever BC_NO_* says */
  compile_options_default(&o);
  memset(&o.off, 0, sizeof o.off);
  o.verify = false; /* memplan_check is called below, where a failure is this test's */
  o.dump_after = NULL;
  bool ok = kernel_plan_compile(&g, &o, &eg, &kp, &mem, &d);
  CHECK(ok);
  if (ok) {
    CHECK(mem.kernel_of != NULL); /* lifetimes in kernels, as the backends plan */
    CHECK(kp.kernels.n < eg.nodes.n / 2); /* fused: the plan checked is not one kernel per node */
    CHECK(memplan_check(&eg, &mem, &d));
    fprintf(stderr, "  %s: %d nodes in %d kernels, plan checked: ", name, eg.nodes.n, kp.kernels.n);
    memplan_print_summary(&mem, stderr);
    kernel_plan_free(&kp);
    memplan_free(&mem);
    graph_free(&eg);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  graph_free(&g);
}

/* The attention backward writes d q, d k and d v over q | k | v where
 * they die (on nli at batch 64 the last layer's d k and d v, over all
 * rows, set the arena's peak): in the plan the cpu backend runs, every
 * attention_grad's output starts at its q, with k and v right after;
 * memplan_check takes it and rejects k and v swapped; with the switch
 * off none is, and the arena is larger. */
TEST(attention_backward_over_its_inputs) {
  Graph g;
  if (!compile(&g, "nli", batch64, 1)) {
    CHECK(0);
    return;
  }
  int64_t arena[2] = {0, 0};
  for (int mode = 0; mode < 2; mode++) {
    Graph eg;
    KernelPlan kp;
    MemPlan mem;
    Diag d;
    diag_init(&d);
    CompileOptions o;
    compile_options_default(&o);
    memset(&o.off, 0, sizeof o.off);
    o.off.attention_in_place = mode == 1;
    o.verify = false;
    o.dump_after = NULL;
    if (!kernel_plan_compile(&g, &o, &eg, &kp, &mem, &d)) {
      diag_print(&d, stderr);
      CHECK(0);
      diag_free(&d);
      continue;
    }
    CHECK(memplan_check(&eg, &mem, &d));
    int n_grad = 0, n_over = 0;
    for (int i = 0; i < eg.nodes.n; i++) {
      const Node *n = &eg.nodes.data[i];
      if (n->op != OP_ATTENTION_GRAD) continue;
      n_grad++;
      const MemSlot *dqkv = &mem.slots[n->out], *q = &mem.slots[n->in[0]], *k = &mem.slots[n->in[1]],
                    *v = &mem.slots[n->in[2]];
      if (dqkv->alias_of != n->in[0]) continue;
      n_over++;
      CHECK(dqkv->offset == q->offset && k->offset == q->offset + q->bytes && v->offset == k->offset + k->bytes);
      CHECK_EQ_INT(dqkv->bytes, q->bytes + k->bytes + v->bytes);
      if (n_over == 1) { /* k and v swapped: d k would land on v */
        MemPlan bad = mem;
        bad.slots = malloc(sizeof(MemSlot) * (size_t)mem.n_values);
        memcpy(bad.slots, mem.slots, sizeof(MemSlot) * (size_t)mem.n_values);
        bad.slots[n->in[2]].offset = k->offset;
        bad.slots[n->in[1]].offset = k->offset + v->bytes;
        CHECK(rejects(&eg, &bad));
        free(bad.slots);
      }
    }
    CHECK_EQ_INT(n_grad, 2);
    CHECK_EQ_INT(n_over, mode == 0 ? 2 : 0);
    arena[mode] = mem.arena_bytes;
    fprintf(stderr, "  nli b64, %s: ", mode == 0 ? "over q | k | v" : "BC_NO_ATTENTION_IN_PLACE");
    memplan_print_summary(&mem, stderr);
    kernel_plan_free(&kp);
    memplan_free(&mem);
    graph_free(&eg);
    diag_free(&d);
  }
  CHECK(arena[0] < arena[1]);
  graph_free(&g);
}

TEST(real_plan_tiny_pretrain) { real_plan("pretrain", tiny, sizeof tiny / sizeof tiny[0]); }
TEST(real_plan_tiny_nli) { real_plan("nli", tiny, sizeof tiny / sizeof tiny[0]); }
TEST(real_plan_reference_pretrain) { real_plan("pretrain", NULL, 0); }
TEST(real_plan_reference_nli) { real_plan("nli", NULL, 0); }

/* ---- the replay ---------------------------------------------------------- */

typedef struct {
  const Graph *g;
  const MemPlan *p;
  double **ref;    /* every value during the step (params/states: before it) */
  double *pinned;  /* pinned_bytes / 4 elements: one double per 4-byte element */
  double *arena;   /* arena_bytes / 4 */
  long n_checked, n_bad;
} Replay;

static int64_t numel(const Graph *g, ValueId v) { return shape_numel(&g->values.data[v].shape); }

static double *region(Replay *r, ValueId v) {
  const MemSlot *s = &r->p->slots[v];
  BC_ASSERT(s->kind != MEM_NONE && dtype_size(r->g->values.data[v].dtype) == 4);
  return (s->kind == MEM_PINNED ? r->pinned : r->arena) + s->offset / 4;
}

/* Checks that what node `at` reads through v holds v's value: v's own buffer,
 * or for a fused v, what v is computed from. `skip` (the buffer the node's
 * output reuses) is not checked. */
static void holds(Replay *r, ValueId v, ValueId skip, int at, const char *when) {
  if (v == skip) return;
  if (r->p->slots[v].kind == MEM_NONE) {
    const Node *n = &r->g->nodes.data[r->g->values.data[v].node];
    for (int k = 0; k < n->n_in; k++) holds(r, n->in[k], skip, at, when);
    return;
  }
  r->n_checked++;
  if (memcmp(region(r, v), r->ref[v], (size_t)numel(r->g, v) * sizeof(double)) == 0) return;
  if (r->n_bad++ < 5)
    CHECK_MSG(0, "node %d (%s) reads '%s' %s, but its buffer was overwritten", at,
              op_info[r->g->nodes.data[at].op].name, r->g->values.data[v].name, when);
}

/* Runs one training step of g on the interpreter, then replays it on plan p. */
static void replay(const Graph *g, const MemPlan *p) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(&backend_interp, g, &d);
  if (!e) {
    diag_print(&d, stderr);
    CHECK(0);
    diag_free(&d);
    return;
  }
  CHECK(exec_init_params(e, 7, &d));
  bert_batch_fill(&e, 1, g, 12345, 0.01);
  int nv = g->values.n;
  double **ref = calloc((size_t)nv, sizeof(double *)), **after = calloc((size_t)nv, sizeof(double *));
  for (int v = 0; v < nv; v++) {
    ref[v] = malloc((size_t)numel(g, v) * sizeof(double) + 1);
    if (g->values.data[v].kind != VALUE_NODE) CHECK(exec_read(e, v, ref[v], DTYPE_F64, &d));
  }
  CHECK(exec_run(e, &(RunContext){.seed = 1, .step = 1}, &d));
  for (int v = 0; v < nv; v++) {
    bool outside = g->values.data[v].kind != VALUE_NODE;
    after[v] = outside ? malloc((size_t)numel(g, v) * sizeof(double) + 1) : ref[v];
    CHECK(exec_read(e, v, after[v], DTYPE_F64, &d));
  }
  Replay r = {g, p, ref, NULL, NULL, 0, 0};
  r.pinned = malloc((size_t)p->pinned_bytes / 4 * sizeof(double) + 1);
  r.arena = malloc((size_t)p->arena_bytes / 4 * sizeof(double) + 1);
  for (int64_t i = 0; i < p->pinned_bytes / 4; i++) r.pinned[i] = NAN;
  for (int64_t i = 0; i < p->arena_bytes / 4; i++) r.arena[i] = NAN;
  for (int v = 0; v < nv; v++)
    if (g->values.data[v].kind != VALUE_NODE)
      memcpy(region(&r, v), ref[v], (size_t)numel(g, v) * sizeof(double));
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    const MemSlot *s = &p->slots[n->out];
    for (int k = 0; k < n->n_in; k++) holds(&r, n->in[k], -1, i, "before it writes");
    if (n->op == OP_ASSIGN) {
      /* the compiled backends update the target where the assign runs
       * (nothing reads it afterwards); its new value is the reference's */
      memcpy(region(&r, n->in[0]), ref[n->in[1]], (size_t)numel(g, n->in[0]) * sizeof(double));
      continue;
    }
    if (s->kind == MEM_NONE) continue;
    memcpy(region(&r, n->out), ref[n->out], (size_t)numel(g, n->out) * sizeof(double));
    /* a kernel reads while it writes: the output may cover only the input
     * it reuses (the attention backward's, q and the k and v after it:
     * runtime/cpu_attention.c reads a unit's rows of them before it writes
     * those rows) */
    bool over_qkv = n->op == OP_ATTENTION_GRAD && s->alias_of == n->in[0];
    for (int k = over_qkv ? 3 : 0; k < n->n_in; k++) holds(&r, n->in[k], s->alias_of, i, "after it writes");
  }
  r.ref = after;
  bool *pin = must_pin(g);
  for (int v = 0; v < nv; v++)
    if (pin[v]) holds(&r, v, -1, g->nodes.n - 1, "at the end of the step");
  fprintf(stderr, "  replay: %ld buffer reads checked, %ld wrong\n", r.n_checked, r.n_bad);
  CHECK(r.n_checked > g->nodes.n);
  CHECK_EQ_INT(r.n_bad, 0);
  free(pin);
  for (int v = 0; v < nv; v++) {
    if (after[v] != ref[v]) free(after[v]);
    free(ref[v]);
  }
  free(ref);
  free(after);
  free(r.pinned);
  free(r.arena);
  exec_destroy(e);
  diag_free(&d);
}

static void replay_bert(const char *name) {
  Graph g;
  if (!compile(&g, name, tiny, (int)(sizeof tiny / sizeof tiny[0]))) {
    CHECK(0);
    return;
  }
  bool *mat = fused_mask(&g);
  for (int mode = 0; mode < 3; mode++) {
    MemPlan p;
    CHECK(plan(&g, mode == 1 ? mat : NULL, mode == 2, &p));
    fprintf(stderr, "  %s, %s: ", name, mode == 0 ? "all materialized" : mode == 1 ? "fused" : "disabled");
    memplan_print_summary(&p, stderr);
    if (mode == 0) CHECK(p.n_inplace > 0 && p.n_views > 0);
    replay(&g, &p);
    memplan_free(&p);
  }
  free(mat);
  graph_free(&g);
}

TEST(replay_tiny_bert_pretrain) { replay_bert("pretrain"); }
TEST(replay_tiny_bert_nli) { replay_bert("nli"); }

TEST_MAIN()
