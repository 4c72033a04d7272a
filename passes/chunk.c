/* chunk.c — column blocks: a large pointwise value that only GEMMs and
 * column sums read is computed one block of columns at a time, each block
 * consumed by its readers before the next is made, so that only one block
 * is ever in memory.
 *
 * The case it is for: the gradient of the MLM logits, [B*P, vocab] (98 MB
 * at batch 64), made by the cross-entropy's backward from the logits and
 * per-row statistics, and read by the vocabulary projection's three
 * gradients: d h = X W^T, d W = h^T X, d b = sum over rows of X.
 *
 * Requires: a scheduled graph (node order = execution order), after remat.
 * Produces: the same graph where each value X qualifying below is no longer
 * read; for each block of columns [c0, c1) it has
 *  - a copy of the pointwise nodes computing X, of shape [M, c1 - c0]: a
 *    node of X's shape [M, N] is copied (pointwise ops on the copies of its
 *    inputs; a broadcast of the block of its input, sliced along the last
 *    axis where that is N long; an iota along the columns as a block of
 *    one stored [1, N] row of indices, so that the blocks' kernels differ
 *    only in where they read (codegen: kernel_same_code); a constant); a
 *    kept value (the logits, an output), and any other value of X's
 *    shape, is read as a slice;
 *  - each reader on the block: where X's columns are the GEMM's contracted
 *    axis (d h = X W^T), the product with the matching slice of the other
 *    operand, summed over the blocks (a chain of adds, which the GEMM
 *    epilogue turns into accumulation; gemm_layout.c then makes the
 *    slice of W in d h = X W^T transposed); where they are the output's
 *    columns or rows (d W = h^T X; d b = sum(X, 0)), the block of the
 *    output, the blocks concatenated.
 * The reader node itself becomes a reshape of the sum or concatenation,
 * so every value id keeps its meaning. Where a concatenated reader's
 * output is only added to another reader's blocks concatenated alike (d W
 * of row_blocks.c's blocks, summed over them), each block is added to its
 * namesake instead (its GEMM accumulating into it), and the add becomes a
 * reshape: one concatenation, no pass adding the wholes. X and the copies' originals are
 * left unread: fuse does not compute them (dead nodes).
 *
 * X qualifies when it is f32 [M, N], not kept (an output, the loss, a
 * gradient), computed by a pointwise node, at least CHUNK_MIN_BLOCKS
 * blocks large, and read only by matmuls without batch dims and column
 * sums (reduce_sum over axis 0), each reading it once, whose other inputs
 * are computed before its first reader. A block is block_bytes of X
 * (CompileOptions.chunk_bytes, BC_CHUNK_BYTES; default CHUNK_BYTES), a
 * multiple of 16 columns, and at most CHUNK_MAX_BLOCKS of them.
 *
 * Switched off by BC_NO_CHUNK (options.h). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

enum { CHUNK_MIN_BLOCKS = 8, CHUNK_MAX_BLOCKS = 32, CHUNK_ALIGN = 16, CHUNK_DAG_MAX = 64 };

/* How a reader consumes X. */
typedef enum {
  READ_SUM,     /* X's columns are contracted: sum of the blocks' products */
  READ_CONCAT0, /* X's columns are the output's rows: concat along axis 0 */
  READ_CONCAT1, /* X's columns are the output's columns: concat along axis 1 */
} ReadKind;

typedef struct {
  NodeId node;
  ReadKind kind;
  int x_slot;      /* which input is X */
  int slice_slot;  /* READ_SUM: the other input, sliced; else -1 */
  int slice_axis;  /* its axis along X's columns */
  ValueId acc;     /* READ_SUM: the sum so far */
  VEC(ValueId) parts; /* READ_CONCAT*: the blocks */
  /* READ_CONCAT*: the add that sums the output with an earlier reader's
   * blocks concatenated alike (row_blocks.c's sum over row blocks), and
   * those blocks; each block is then added to its namesake (-1: none) */
  NodeId fold;
  const ValueId *fold_parts;
} Reader;

typedef struct {
  Graph *g;
  int *n_readers; /* per value */
  bool *kept;     /* per value: graph_kept_values */
  ValueId x;
  int64_t M, N;
  ValueId *copy; /* per value: its copy for the current block, or -1 */
  ValueId *index_row; /* per iota along the columns: its [1, N] row, or -1 */
  VEC(ValueId) touched;
} Chunker;

static bool is_block_shape(const Chunker *C, const Shape *s) {
  return s->rank == 2 && s->dim[0] == C->M && s->dim[1] == C->N;
}

/* Whether value u of X's shape can be computed per block: the nodes to
 * copy are pointwise, broadcasts, iotas and constants (at most *budget of
 * them); anything else of X's shape is read as a slice. */
static bool can_copy(const Chunker *C, ValueId u, int *budget) {
  const Graph *g = C->g;
  const Value *x = &g->values.data[u];
  if (!is_block_shape(C, &x->shape)) return false;
  if (x->node < 0 || C->kept[u]) return true; /* sliced */
  const Node *p = &g->nodes.data[x->node];
  if (--*budget < 0) return false;
  if (p->op == OP_CONSTANT || p->op == OP_IOTA) return true;
  if (p->op == OP_BROADCAST) {
    const Shape *s = &g->values.data[p->in[0]].shape;
    if (s->rank > 2) return false;
    int64_t last = s->rank ? s->dim[s->rank - 1] : 1;
    return last == 1 || last == C->N;
  }
  if (!op_is_pointwise(p->op)) return true; /* sliced */
  for (int k = 0; k < p->n_in; k++)
    if (!can_copy(C, p->in[k], budget)) return false;
  return true;
}

static ValueId named(Graph *g, ValueId v, const char *base, int block) {
  graph_set_name(g, v, arena_printf(&g->arena, "%s.block%d", base, block));
  return v;
}

/* u's columns [c0, c1) as a value of the current block (copies memoized
 * in C->copy until the block ends). */
static ValueId block_of(Chunker *C, ValueId u, int64_t c0, int64_t c1, int block) {
  if (C->copy[u] >= 0) return C->copy[u];
  Graph *g = C->g;
  const Value *x = &g->values.data[u];
  const char *name = x->name;
  NodeId pn = x->node;
  ValueId r;
  Shape bs = shape_of(2, C->M, c1 - c0);
  if (pn < 0 || C->kept[u] || !(op_is_pointwise(g->nodes.data[pn].op) || g->nodes.data[pn].op == OP_BROADCAST ||
                  g->nodes.data[pn].op == OP_IOTA || g->nodes.data[pn].op == OP_CONSTANT)) {
    if (pn >= 0) graph_at_node(g, &g->nodes.data[pn]);
    r = named(g, graph_slice(g, u, 1, c0, c1), name, block);
  } else {
    Node p = g->nodes.data[pn]; /* a copy: graph_op appends */
    graph_at_node(g, &p);
    switch (p.op) {
    case OP_CONSTANT: r = graph_copy_node(g, &p, NULL, bs); break;
    case OP_IOTA:
      if (p.a.axis == 0) {
        r = graph_copy_node(g, &p, NULL, bs);
        break;
      }
      /* column indices: a block of one stored row of them, so that the
       * blocks' kernels differ only in where they read (kernel_same_code) */
      if (C->index_row[u] < 0) {
        C->index_row[u] = graph_iota(g, shape_of(2, (int64_t)1, C->N), 1, p.a.dtype);
        graph_set_name(g, C->index_row[u], arena_printf(&g->arena, "%s.row", name));
      }
      r = graph_broadcast(
          g, named(g, graph_slice(g, C->index_row[u], 1, c0, c1), g->values.data[C->index_row[u]].name, block), bs);
      break;
    case OP_BROADCAST: {
      ValueId in = p.in[0];
      const Shape *s = &g->values.data[in].shape;
      if (s->rank > 0 && s->dim[s->rank - 1] == C->N && C->N > 1)
        in = named(g, graph_slice(g, in, s->rank - 1, c0, c1), g->values.data[in].name, block);
      r = graph_broadcast(g, in, bs);
      break;
    }
    default: {
      ValueId in[4];
      BC_ASSERT(p.n_in <= 4);
      for (int k = 0; k < p.n_in; k++) in[k] = block_of(C, p.in[k], c0, c1, block);
      graph_at_node(g, &p);
      r = graph_copy_node(g, &p, in, bs);
      break;
    }
    }
    named(g, r, name, block);
  }
  C->copy[u] = r;
  vec_push(&C->touched, u);
  return r;
}

/* How node r reads X, or false when it cannot read it by blocks. */
static bool classify(const Chunker *C, NodeId r, Reader *out) {
  const Graph *g = C->g;
  const Node *n = &g->nodes.data[r];
  memset(out, 0, sizeof(*out));
  out->node = r;
  out->slice_slot = -1;
  out->acc = -1;
  int uses = 0;
  for (int k = 0; k < n->n_in; k++)
    if (n->in[k] == C->x) uses++, out->x_slot = k;
  if (uses != 1) return false;
  if (n->op == OP_REDUCE_SUM) {
    out->kind = READ_CONCAT1;
    return n->a.axis == 0;
  }
  if (n->op != OP_MATMUL) return false;
  if (g->values.data[n->in[0]].shape.rank != 2 || g->values.data[n->in[1]].shape.rank != 2) return false;
  bool trans = out->x_slot == 0 ? n->a.trans_a : n->a.trans_b;
  bool contracted = out->x_slot == 0 ? !trans : trans;
  if (contracted) {
    out->kind = READ_SUM;
    out->slice_slot = 1 - out->x_slot;
    /* the other operand's contracted axis */
    out->slice_axis = out->slice_slot == 0 ? (n->a.trans_a ? 0 : 1) : (n->a.trans_b ? 1 : 0);
  } else {
    out->kind = out->x_slot == 0 ? READ_CONCAT0 : READ_CONCAT1;
  }
  return true;
}

/* The node computing value v runs before position `at` (or v is not a node's). */
static bool ready_before(const Graph *g, ValueId v, NodeId at) { return g->values.data[v].node < at; }

/* The value v through reshapes of its own shape. */
static ValueId through_reshapes(const Graph *g, ValueId v) {
  const Shape *s = &g->values.data[v].shape;
  for (;;) {
    NodeId p = g->values.data[v].node;
    if (p < 0 || g->nodes.data[p].op != OP_RESHAPE) return v;
    ValueId in = g->nodes.data[p].in[0];
    if (!shape_eq(&g->values.data[in].shape, s)) return v;
    v = in;
  }
}

/* For a READ_CONCAT reader whose output one add alone reads, with an
 * earlier reader's blocks concatenated alike (n_blocks of them, along the
 * same axis) as its other operand: that add, and R->fold_parts those
 * blocks. -1: none. */
static NodeId find_fold(const Chunker *C, Reader *R, int n_blocks, int64_t cols) {
  const Graph *g = C->g;
  ValueId out = g->nodes.data[R->node].out;
  if (C->n_readers[out] != 1 || C->kept[out]) return -1;
  for (NodeId i = R->node + 1; i < g->nodes.n; i++) {
    const Node *a = &g->nodes.data[i];
    int slot = a->n_in == 2 && a->in[0] == out ? 0 : a->n_in == 2 && a->in[1] == out ? 1 : -1;
    if (slot < 0) continue;
    if (a->op != OP_ADD || a->in[0] == a->in[1] || !shape_eq(&g->values.data[a->in[1 - slot]].shape,
                                                               &g->values.data[out].shape))
      return -1;
    NodeId cn = g->values.data[through_reshapes(g, a->in[1 - slot])].node;
    const Node *c = cn >= 0 ? &g->nodes.data[cn] : NULL;
    int axis = R->kind == READ_CONCAT0 ? 0 : 1;
    if (!c || c->op != OP_CONCAT || c->n_in != n_blocks || c->a.axis != axis) return -1;
    for (int b = 0; b < n_blocks; b++) { /* the blocks alike: the same columns of X each */
      Shape want = g->values.data[out].shape;
      want.dim[axis] = b * cols + cols < C->N ? cols : C->N - b * cols;
      if (!shape_eq(&g->values.data[c->in[b]].shape, &want)) return -1;
    }
    R->fold_parts = c->in;
    return i;
  }
  return -1;
}

/* Where a reader runs in each block: 0 the column sums (d b), while the
 * block is fresh in cache; 1 the products over X's columns (d X); 2 the
 * other GEMMs (d W). */
static int reader_rank(const Graph *g, const Reader *R) {
  if (g->nodes.data[R->node].op != OP_MATMUL) return 0;
  return R->kind == READ_SUM ? 1 : 2;
}

/* Rewrites X (computed by node xi) by blocks when it qualifies. */
static bool chunk_value(Chunker *C, NodeId xi, int64_t block_bytes) {
  Graph *g = C->g;
  const Node *xn = &g->nodes.data[xi];
  ValueId x = xn->out;
  const Value *xv = &g->values.data[x];
  if (!op_is_pointwise(xn->op) || xv->dtype != DTYPE_F32 || xv->shape.rank != 2 || C->kept[x]) return false;
  C->x = x;
  C->M = xv->shape.dim[0];
  C->N = xv->shape.dim[1];
  int64_t bytes = C->M * C->N * 4;
  if (bytes < CHUNK_MIN_BLOCKS * block_bytes || C->n_readers[x] == 0) return false;
  int64_t cols = block_bytes / (C->M * 4) / CHUNK_ALIGN * CHUNK_ALIGN;
  if (cols < CHUNK_ALIGN) cols = CHUNK_ALIGN;
  if ((C->N + cols - 1) / cols > CHUNK_MAX_BLOCKS)
    cols = ((C->N + CHUNK_MAX_BLOCKS - 1) / CHUNK_MAX_BLOCKS + CHUNK_ALIGN - 1) / CHUNK_ALIGN * CHUNK_ALIGN;
  int n_blocks = (int)((C->N + cols - 1) / cols);
  if (n_blocks < 2) return false;
  int budget = CHUNK_DAG_MAX;
  if (!can_copy(C, x, &budget)) return false;

  VEC(Reader) rd = {0};
  NodeId first = g->nodes.n;
  bool ok = true;
  for (NodeId r = xi + 1; r < g->nodes.n && ok; r++) {
    const Node *n = &g->nodes.data[r];
    bool reads = false;
    for (int k = 0; k < n->n_in; k++) reads |= n->in[k] == x;
    if (!reads) continue;
    Reader R;
    ok = classify(C, r, &R);
    if (ok) vec_push(&rd, R);
    if (r < first) first = r;
  }
  for (int i = 0; ok && i < rd.n; i++) {
    const Node *n = &g->nodes.data[rd.data[i].node];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] != x && !ready_before(g, n->in[k], first)) ok = false;
  }
  if (!ok || rd.n == 0) {
    vec_free(&rd);
    return false;
  }

  /* Each block's readers in the order of reader_rank, each kind in graph
   * order: the GEMM right after d X then takes the rows d X left
   * compacted (runtime/cpu.c: compacted). The readers read none of each
   * other's outputs. */
  for (int i = 1; i < rd.n; i++)
    for (int j = i; j > 0 && reader_rank(g, &rd.data[j]) < reader_rank(g, &rd.data[j - 1]); j--) {
      Reader t = rd.data[j];
      rd.data[j] = rd.data[j - 1];
      rd.data[j - 1] = t;
    }
  for (int i = 0; i < rd.n; i++)
    rd.data[i].fold = rd.data[i].kind == READ_SUM ? -1 : find_fold(C, &rd.data[i], n_blocks, cols);
  int n_orig = g->nodes.n;
  for (int b = 0; b < n_blocks; b++) {
    int64_t c0 = b * cols, c1 = c0 + cols < C->N ? c0 + cols : C->N;
    ValueId xb = block_of(C, x, c0, c1, b);
    for (int i = 0; i < rd.n; i++) {
      Reader *R = &rd.data[i];
      Node n = g->nodes.data[R->node];
      const char *name = g->values.data[n.out].name;
      graph_at_node(g, &n);
      ValueId in[2] = {n.in[0], n.in[1]};
      in[R->x_slot] = xb;
      if (R->slice_slot >= 0)
        in[R->slice_slot] =
            named(g, graph_slice(g, n.in[R->slice_slot], R->slice_axis, c0, c1), g->values.data[in[R->slice_slot]].name, b);
      ValueId part = named(g, graph_op(g, n.op, n.n_in, in, &n.a, NULL), name, b);
      if (R->fold >= 0) { /* added to the earlier reader's block: the GEMM accumulates into it */
        part = graph_binary(g, OP_ADD, R->fold_parts[b], part);
        graph_set_name(g, part, arena_printf(&g->arena, "%s.sum.block%d", name, b));
      }
      if (R->kind != READ_SUM) {
        vec_push(&R->parts, part);
      } else if (R->acc < 0) {
        R->acc = part;
      } else {
        R->acc = graph_binary(g, OP_ADD, R->acc, part);
        graph_set_name(g, R->acc, arena_printf(&g->arena, "%s.sum%d", name, b));
      }
    }
    for (int i = 0; i < C->touched.n; i++) C->copy[C->touched.data[i]] = -1;
    C->touched.n = 0;
  }
  for (int i = 0; i < rd.n; i++) {
    Reader *R = &rd.data[i];
    graph_at_node(g, &g->nodes.data[R->node]);
    ValueId total = R->acc, out = g->nodes.data[R->node].out;
    if (R->kind != READ_SUM) {
      total = graph_concat(g, R->parts.n, R->parts.data, R->kind == READ_CONCAT0 ? 0 : 1);
      graph_set_name(g, total, arena_printf(&g->arena, "%s.blocks", g->values.data[out].name));
    }
    vec_free(&R->parts);
    graph_node_to_reshape(g, R->node, total);
    if (R->fold >= 0) /* the add: the sum is in the blocks now */
      graph_node_to_reshape(g, R->fold, out);
  }
  vec_free(&rd);
  graph_move_to(g, n_orig, first); /* the blocks' nodes run where the first reader did */
  return true;
}

static void count_readers(Chunker *C) {
  Graph *g = C->g;
  C->kept = bc_realloc(C->kept, (size_t)(g->values.n ? g->values.n : 1));
  memset(C->kept, 0, (size_t)g->values.n);
  graph_kept_values(g, C->kept);
  C->n_readers = bc_realloc(C->n_readers, sizeof(int) * (size_t)(g->values.n ? g->values.n : 1));
  memset(C->n_readers, 0, sizeof(int) * (size_t)g->values.n);
  for (int i = 0; i < g->nodes.n; i++)
    for (int k = 0; k < g->nodes.data[i].n_in; k++) C->n_readers[g->nodes.data[i].in[k]]++;
}

bool chunk_run(Graph *g, int64_t block_bytes, Diag *d) {
  (void)d;
  if (block_bytes <= 0) block_bytes = CHUNK_BYTES;
  Chunker C = {.g = g};
  SrcLoc saved_loc = g->cur_loc;
  const char *saved_scope = g->cur_scope;
  BlockId saved_block = g->cur_block;
  count_readers(&C);
  /* candidates are the nodes there now; a rewrite moves them, so they are
   * found again by value */
  int nv = g->values.n;
  for (ValueId v = 0; v < nv; v++) {
    NodeId xi = g->values.data[v].node;
    if (xi < 0 || C.n_readers[v] == 0) continue;
    /* per value of the graph as it is now: the copies are of those */
    C.copy = bc_realloc(C.copy, sizeof(ValueId) * (size_t)g->values.n);
    C.index_row = bc_realloc(C.index_row, sizeof(ValueId) * (size_t)g->values.n);
    for (int u = 0; u < g->values.n; u++) C.copy[u] = C.index_row[u] = -1;
    if (chunk_value(&C, xi, block_bytes)) count_readers(&C);
  }
  g->cur_loc = saved_loc;
  g->cur_scope = saved_scope;
  g->cur_block = saved_block;
  free(C.copy);
  free(C.index_row);
  free(C.n_readers);
  free(C.kept);
  vec_free(&C.touched);
  return true;
}
