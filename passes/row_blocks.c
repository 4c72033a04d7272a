/* row_blocks.c — row blocks: a large GEMM output and what is computed from
 * it row by row are made one block of rows at a time, each block consumed
 * before the next is made, so that only one block is ever in memory.
 *
 * The case it is for: pretraining's MLM logits, [B*P, vocab] (98 MB at
 * batch 64). Their cross-entropy is row-wise, and so is its gradient (the
 * loss's own gradient is a constant, so the gradient of the logits needs
 * no value of the backward): logits, softmax statistics, loss terms,
 * gradient and the vocabulary projection's input gradient are made per
 * block of rows, right where the logits were. Whole, the logits were
 * stored beside every activation the encoder's backward keeps; by blocks,
 * one block is.
 *
 * Requires: a scheduled graph (node order = execution order), after remat.
 * Produces: for a candidate GEMM L = X W ([M, K] x [K, N], X not
 * transposed, L not kept, more than one block), its region: L and the
 * nodes after it that read a region value and keep rows apart (pointwise,
 * select, cast; broadcasts, reshapes and reductions along a row; a GEMM of
 * a region value's rows by a matrix without them), whose output is
 * [M, N], [M, 1] or [M] (a GEMM's may be narrow, at most N /
 * ROWS_NARROW_RATIO columns: it ends the region there). For each block of
 * rows [r0, r1) it makes copies of the region's nodes on the block. An
 * input with M rows from outside the region is read as a slice of its
 * rows, or copied too where it is [M, N] and made by a generator
 * (constant, iota along a row, broadcast, pointwise of those: the one-hot
 * labels) or made row by row after L (the loss's row gradients). The
 * region's readers outside it get:
 *  - a reduce_sum over the rows, or a GEMM summing over them (d W = X^T
 *    dL): the sum of the blocks' (a chain of adds, which the GEMM epilogue
 *    turns into accumulation); the reader becomes a reshape of it;
 *  - any other reader: the value read, narrow, as the blocks concatenated
 *    (its producer becomes a reshape of that).
 * The blocks run where L was made, one after the other; what the rewrite
 * leaves unread stays, and fuse computes none of it (dead nodes). Gives up
 * (the graph unchanged) when a region node reads a value made after L
 * that is none of those, a region value of [M, N] would have to be
 * concatenated, or a region node draws random numbers (their keys are
 * element indices).
 *
 * Blocks of about block_bytes of L, as even as a multiple of ROWS_ALIGN
 * rows makes them (where that many fit); by default two halves of an L
 * of at least ROW_BLOCKS_MIN_BYTES. Each block's logits gradient is still
 * made by column blocks (chunk.c), which keeps the vocabulary
 * projection's gradient GEMMs on a slice of W that stays in cache; every
 * further row block reads all of W again, three times (pretrain b64 in 7
 * blocks: 25-60% slower; b256 in 8: 3% slower than in 2).
 *
 * A block's row guard (row_guard.c) is a slice of the loss weights'
 * rows: the blocks keep the MLM slots of weight 0 dead.
 *
 * Switched off by BC_NO_ROW_BLOCKS (options.h). Block size
 * CompileOptions.row_block_bytes (BC_ROW_BLOCK_BYTES; 0: the default). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

enum { ROWS_MIN_BLOCKS = 2, ROWS_MAX_BLOCKS = 64, ROWS_ALIGN = 8, ROWS_GEN_MAX = 16, ROWS_NARROW_RATIO = 8 };

typedef enum { SINK_SUM, SINK_CONCAT } SinkKind;

/* A node outside the region that reads it. */
typedef struct {
  NodeId node; /* SINK_SUM: the reader; SINK_CONCAT: the producer of `value` */
  SinkKind kind;
  ValueId value; /* SINK_CONCAT: the region value read */
  ValueId acc;   /* the sum so far */
  VEC(ValueId) parts;
} Sink;
typedef VEC(Sink) Sinks;

typedef struct {
  Graph *g;
  int64_t M, N;
  NodeId at;       /* the GEMM's position: where the blocks run */
  bool *region;    /* per value */
  bool *kept;      /* per value: outputs, the loss, gradients */
  ValueId *copy;   /* per value: its copy for the current block, or -1 */
  VEC(ValueId) touched;
  bool failed;
} Rows;

static bool has_rows(const Rows *R, ValueId v) {
  const Shape *s = &R->g->values.data[v].shape;
  return s->rank >= 1 && s->dim[0] == R->M;
}

static int64_t cols_of(const Rows *R, ValueId v) {
  const Shape *s = &R->g->values.data[v].shape;
  return shape_numel(s) / (s->dim[0] ? s->dim[0] : 1);
}

/* Whether input k of node n is read row by row: it has M rows, and is not
 * a GEMM's right operand nor a broadcast's input of lower rank (aligned to
 * the right, its first axis is not the rows). */
static bool per_row(const Rows *R, const Node *n, int k) {
  const Graph *g = R->g;
  if (!has_rows(R, n->in[k])) return false;
  if (n->op == OP_MATMUL) return k == 0 || n->a.trans_a;
  if (n->op == OP_BROADCAST) return g->values.data[n->in[k]].shape.rank == g->values.data[n->out].shape.rank;
  return true;
}

/* At most N / ROWS_NARROW_RATIO columns: a value cheap to concatenate. */
static bool narrow(const Rows *R, ValueId v) { return cols_of(R, v) * ROWS_NARROW_RATIO <= R->N; }

/* [M, N], [M, 1] or [M]: a value the region grows through. */
static bool region_shape(const Rows *R, ValueId v) {
  const Shape *s = &R->g->values.data[v].shape;
  return (s->rank == 2 && s->dim[0] == R->M && (s->dim[1] == R->N || s->dim[1] == 1)) ||
         (s->rank == 1 && s->dim[0] == R->M);
}

/* Whether each row of node n's output (M rows) is made from the same row
 * of its inputs read per_row, and from inputs without rows. */
static bool row_local(const Rows *R, const Node *n) {
  const Graph *g = R->g;
  if (!has_rows(R, n->out) || n->op == OP_RANDOM) return false;
  if (op_is_pointwise(n->op) || n->op == OP_BROADCAST || n->op == OP_CONSTANT) return true;
  switch (n->op) {
  case OP_IOTA: return n->a.axis != 0;
  case OP_RESHAPE: return has_rows(R, n->in[0]);
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX: return n->a.axis >= 1;
  case OP_MATMUL:
    return !n->a.trans_a && g->values.data[n->in[0]].shape.rank == 2 && g->values.data[n->in[1]].shape.rank == 2;
  default: return false;
  }
}

/* Whether node n, which reads a region value, is one of the region's. */
static bool joins_region(const Rows *R, const Node *n) {
  if (!row_local(R, n)) return false;
  if (n->op == OP_MATMUL)
    return !R->region[n->in[1]] && (region_shape(R, n->out) || narrow(R, n->out));
  return region_shape(R, n->out);
}

/* Whether reader n sums a region value over its rows: a reduce_sum along
 * them, or a rank-2 GEMM contracting them with another value's rows. */
static bool sums_rows(const Rows *R, const Node *n) {
  const Graph *g = R->g;
  if (n->op == OP_REDUCE_SUM) return n->a.axis == 0 && g->values.data[n->in[0]].shape.rank <= 2;
  if (n->op != OP_MATMUL || g->values.data[n->in[0]].shape.rank != 2 || g->values.data[n->in[1]].shape.rank != 2)
    return false;
  return n->a.trans_a && !n->a.trans_b && has_rows(R, n->in[0]) && has_rows(R, n->in[1]);
}

static ValueId named(Graph *g, ValueId v, const char *base, int block) {
  graph_set_name(g, v, arena_printf(&g->arena, "%s.rows%d", base, block));
  return v;
}

static Shape block_shape(const Shape *s, int64_t rows) {
  Shape b = *s;
  b.dim[0] = rows;
  return b;
}

/* Whether the [M, N] value u outside the region is cheap to make per
 * block: generators and pointwise nodes of them, at most *budget nodes. */
static bool is_generator(const Rows *R, ValueId u, int *budget) {
  const Graph *g = R->g;
  NodeId pn = g->values.data[u].node;
  if (pn < 0 || R->kept[u] || --*budget < 0) return false;
  const Node *p = &g->nodes.data[pn];
  if (p->op == OP_CONSTANT) return true;
  if (p->op == OP_IOTA) return p->a.axis != 0;
  if (p->op == OP_BROADCAST) return !per_row(R, p, 0) || cols_of(R, p->in[0]) <= 1;
  if (!op_is_pointwise(p->op)) return false;
  for (int k = 0; k < p->n_in; k++)
    if (per_row(R, p, k) && !is_generator(R, p->in[k], budget)) return false;
  return true;
}

/* u's rows [r0, r1) in the current block: a copy of its node when u is in
 * the region, a generator, or made row by row after the blocks run; a
 * slice of its rows when it has M rows, else u itself. Memoized in
 * R->copy until the block ends. */
static ValueId block_of(Rows *R, ValueId u, int64_t r0, int64_t r1, int block) {
  if (R->copy[u] >= 0) return R->copy[u];
  if (!has_rows(R, u)) return u;
  Graph *g = R->g;
  const Value *x = &g->values.data[u];
  const char *name = x->name;
  NodeId pn = x->node;
  int budget = ROWS_GEN_MAX;
  bool copy = R->region[u] || (pn >= R->at && row_local(R, &g->nodes.data[pn])) ||
              (cols_of(R, u) == R->N && is_generator(R, u, &budget));
  ValueId r;
  if (!copy) {
    if (pn >= R->at) R->failed = true; /* made after the blocks run */
    if (pn >= 0) graph_at_node(g, &g->nodes.data[pn]);
    r = named(g, graph_slice(g, u, 0, r0, r1), name, block);
  } else {
    Node p = g->nodes.data[pn]; /* a copy: graph_op appends */
    Shape bs = block_shape(&x->shape, r1 - r0);
    ValueId in[4];
    BC_ASSERT(p.n_in <= 4);
    for (int k = 0; k < p.n_in; k++) in[k] = per_row(R, &p, k) ? block_of(R, p.in[k], r0, r1, block) : p.in[k];
    graph_at_node(g, &p);
    r = named(g, graph_copy_node(g, &p, in, bs), name, block);
  }
  R->copy[u] = r;
  vec_push(&R->touched, u);
  return r;
}

/* The region of GEMM node pi and the sinks reading it; false when the
 * GEMM does not qualify. */
static bool find_region(Rows *R, NodeId pi, Sinks *sinks) {
  Graph *g = R->g;
  int nv = g->values.n;
  memset(R->region, 0, (size_t)nv);
  R->region[g->nodes.data[pi].out] = true;
  bool *exported = bc_calloc((size_t)nv, 1);
  bool ok = true;
  for (NodeId i = pi + 1; i < g->nodes.n && ok; i++) {
    const Node *n = &g->nodes.data[i];
    bool reads = false;
    for (int k = 0; k < n->n_in; k++) reads |= R->region[n->in[k]];
    if (!reads) continue;
    if (n->op == OP_RANDOM || op_info[n->op].flags & OPF_SIDE_EFFECT) {
      ok = false;
    } else if (joins_region(R, n)) {
      R->region[n->out] = true;
    } else if (sums_rows(R, n)) {
      vec_push(sinks, ((Sink){.node = i, .kind = SINK_SUM, .value = -1, .acc = -1}));
    } else {
      for (int k = 0; k < n->n_in; k++) exported[n->in[k]] |= R->region[n->in[k]];
    }
  }
  for (ValueId v = 0; v < nv && ok; v++) {
    if (!R->region[v] || !(exported[v] || R->kept[v])) continue;
    if (!narrow(R, v)) ok = false; /* the blocks would be stored whole */
    else vec_push(sinks, ((Sink){.node = g->values.data[v].node, .kind = SINK_CONCAT, .value = v, .acc = -1}));
  }
  free(exported);
  return ok && sinks->n > 0;
}

static void free_sinks(Sinks *sinks) {
  for (int i = 0; i < sinks->n; i++) vec_free(&sinks->data[i].parts);
  vec_free(sinks);
}

/* Rewrites the region of GEMM node pi by blocks of rows when it qualifies. */
static bool block_rows(Rows *R, NodeId pi, int64_t block_bytes) {
  Graph *g = R->g;
  const Node *pn = &g->nodes.data[pi];
  ValueId x = pn->out;
  const Value *xv = &g->values.data[x];
  const Shape *as = &g->values.data[pn->in[0]].shape, *bs = &g->values.data[pn->in[1]].shape;
  if (pn->op != OP_MATMUL || pn->a.trans_a || as->rank != 2 || bs->rank != 2 || xv->dtype != DTYPE_F32 || R->kept[x])
    return false;
  R->M = xv->shape.dim[0];
  R->N = xv->shape.dim[1];
  int64_t bytes = R->M * R->N * 4;
  if (block_bytes <= 0) block_bytes = bytes >= ROW_BLOCKS_MIN_BYTES ? (bytes + 1) / 2 : bytes; /* halves */
  if (bytes <= block_bytes || R->N < ROWS_NARROW_RATIO || R->M == R->N) return false;
  /* as many blocks as block_bytes makes, at most ROWS_MAX_BLOCKS, even */
  int64_t rows = block_bytes / (R->N * 4);
  rows = rows > 0 ? rows : 1;
  int64_t n = (R->M + rows - 1) / rows;
  n = n < ROWS_MAX_BLOCKS ? n : ROWS_MAX_BLOCKS;
  rows = (R->M + n - 1) / n;
  if (rows >= ROWS_ALIGN) rows = (rows + ROWS_ALIGN - 1) / ROWS_ALIGN * ROWS_ALIGN;
  int n_blocks = (int)((R->M + rows - 1) / rows);
  if (n_blocks < ROWS_MIN_BLOCKS) return false;

  Sinks sinks = {0};
  if (!find_region(R, pi, &sinks)) {
    free_sinks(&sinks);
    return false;
  }
  R->at = pi;
  R->failed = false;
  int n_orig = g->nodes.n, nv_orig = g->values.n;
  for (int b = 0; b < n_blocks && !R->failed; b++) {
    int64_t r0 = b * rows, r1 = r0 + rows < R->M ? r0 + rows : R->M;
    for (int i = 0; i < sinks.n; i++) {
      Sink *S = &sinks.data[i];
      if (S->kind == SINK_CONCAT) {
        vec_push(&S->parts, block_of(R, S->value, r0, r1, b));
        continue;
      }
      Node n = g->nodes.data[S->node];
      const char *name = g->values.data[n.out].name;
      ValueId in[2];
      for (int k = 0; k < n.n_in; k++) in[k] = per_row(R, &n, k) ? block_of(R, n.in[k], r0, r1, b) : n.in[k];
      graph_at_node(g, &n);
      ValueId part = named(g, graph_op(g, n.op, n.n_in, in, &n.a, NULL), name, b);
      if (S->acc < 0) {
        S->acc = part;
      } else {
        S->acc = graph_binary(g, OP_ADD, S->acc, part);
        graph_set_name(g, S->acc, arena_printf(&g->arena, "%s.sum%d", name, b));
      }
    }
    for (int i = 0; i < R->touched.n; i++) R->copy[R->touched.data[i]] = -1;
    R->touched.n = 0;
  }
  if (R->failed) { /* undo: drop what the blocks added */
    bool *keep = bc_malloc((size_t)g->nodes.n);
    for (int i = 0; i < g->nodes.n; i++) keep[i] = i < n_orig;
    free(graph_compact(g, keep));
    free(keep);
    BC_ASSERT(g->values.n == nv_orig);
    free_sinks(&sinks);
    return false;
  }
  for (int i = 0; i < sinks.n; i++) {
    Sink *S = &sinks.data[i];
    graph_at_node(g, &g->nodes.data[S->node]);
    ValueId total = S->acc;
    if (S->kind == SINK_CONCAT) {
      total = graph_concat(g, S->parts.n, S->parts.data, 0);
      graph_set_name(g, total, arena_printf(&g->arena, "%s.blocks", g->values.data[S->value].name));
    }
    graph_node_to_reshape(g, S->node, total);
  }
  free_sinks(&sinks);
  graph_move_to(g, n_orig, pi); /* the blocks run where the GEMM did */
  return true;
}

bool row_blocks_run(Graph *g, int64_t block_bytes, Diag *d) {
  (void)d;
  Rows R = {.g = g};
  SrcLoc saved_loc = g->cur_loc;
  const char *saved_scope = g->cur_scope;
  BlockId saved_block = g->cur_block;
  /* candidates are found again after each rewrite: it moves the nodes */
  for (NodeId i = 0; i < g->nodes.n; i++) {
    if (g->nodes.data[i].op != OP_MATMUL) continue;
    R.region = bc_realloc(R.region, (size_t)g->values.n);
    R.kept = bc_realloc(R.kept, (size_t)g->values.n);
    memset(R.kept, 0, (size_t)g->values.n);
    graph_kept_values(g, R.kept);
    R.copy = bc_realloc(R.copy, sizeof(ValueId) * (size_t)g->values.n);
    for (int u = 0; u < g->values.n; u++) R.copy[u] = -1;
    int n_before = g->nodes.n;
    if (!block_rows(&R, i, block_bytes)) continue;
    /* The blocks now run before node i, which moved past them; they
     * qualify no more (under ROWS_MIN_BLOCKS blocks each). The originals
     * are left unread, and fuse computes no dead node: dropping them
     * would renumber the values, whose ids the backends' Exec graph
     * shares. */
    i += g->nodes.n - n_before;
  }
  g->cur_loc = saved_loc;
  g->cur_scope = saved_scope;
  g->cur_block = saved_block;
  free(R.region);
  free(R.kept);
  free(R.copy);
  vec_free(&R.touched);
  return true;
}
