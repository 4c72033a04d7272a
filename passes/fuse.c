/* fuse.c — groups the nodes of a graph into kernels (DESIGN §4.6).
 *
 * Requires: a verified graph whose node order is the execution order.
 * Produces: a Fusion (fuse.h): per node its group, per group its kind and
 * iteration domain, per value whether it needs a buffer.
 *
 * Rules, applied in node order:
 *  - A node without side effects whose value nothing keeps and no live
 *    node reads is dead (mark_dead): no kernel computes it (the originals
 *    row_blocks.c and chunk.c leave behind).
 *  - Views (broadcast, permute, slice) and generators (constant, iota,
 *    random) whose readers are all loop-kind nodes are folded into their
 *    readers: a view becomes strides on a load, a generator is recomputed;
 *    so is pointwise index math computed only from graph inputs. A chain
 *    of folded nodes is cut every FOLD_DEPTH_MAX links.
 *  - An elementwise node (and select, cast, a joined broadcast of a row
 *    value) joins the latest LOOP group whose domain equals its shape (or
 *    whose rows it is a per-row value of) if every input it reads is
 *    computed in that group or by an earlier group; else it opens a group.
 *    A remat copy (remat.c) looks among the groups of its reader's inputs
 *    instead of its own, so that it runs in its reader's kernel. A joined
 *    broadcast that other groups read too is folded back: they read the
 *    row value, stored at its own size, through it.
 *  - A reduction over the last axis joins the group of its input (a "row
 *    kernel": softmax, layer norm, cross-entropy); over another axis it is
 *    a column reduction of its own.
 *  - matmul, gather, scatter_add, concat, attention, attention_grad: one
 *    library kernel each; a reshape of a buffer, or a slice of its rows
 *    (not folded into its readers), is an alias.
 *  - A GEMM's epilogue: a bias add (a broadcast [N] vector along the rows),
 *    relu, gelu, gelu_tanh, the add of a value of the output's shape
 *    already in memory (a residual), or relu_grad of the product by such a
 *    value (relu's backward mask) joins the GEMM's group when it is the
 *    only reader of the group's last value, up to GEMM_EPILOGUE_MAX of
 *    them: the library applies them to C before storing it (the cpu
 *    backend's oneDNN post-ops), and the values between are never stored.
 *    Only for a matmul without batch dims after folding them into M, and
 *    not with off->epilogue (BC_NO_EPILOGUE, and the cuda backend).
 *  - An assign joins the kernel computing its value when that kernel reads
 *    the target only elementwise before the store and nothing later reads
 *    the target (Adam: one kernel per parameter updates p, m and v in place).
 * Not here: the kernel IR itself (codegen/kernel_ir.c), memory (memplan.c). */
#include "fuse.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const Graph *g;
  Fusion *f;
  int *start;   /* reader lists: CSR over values */
  NodeId *readers;
  bool *folded; /* per node: view/generator folded into readers */
  bool *dead;   /* per node: computed by nothing (mark_dead); also folded */
  bool *required;
  VEC(GroupKind) kinds;
  VEC(Shape) domains;
  VEC(int) cols;
  /* per group: GEMM: the value it stores (the matmul's, then its
   * epilogue's last), else -1; how many epilogue nodes joined, or -1 when
   * the GEMM takes none */
  VEC(ValueId) tails;
  VEC(int) n_epilogue;
} Fuser;

/* Longest chain of folded views and index math (decide_folding). */
enum { FOLD_DEPTH_MAX = 32 };

static bool is_view(Op op) { return op == OP_BROADCAST || op == OP_PERMUTE || op == OP_SLICE; }
static bool is_generator(Op op) { return op == OP_CONSTANT || op == OP_IOTA || op == OP_RANDOM; }
/* Nodes that run inside LOOP kernels and can read folded views. */
static bool is_loop_kind(Op op) {
  return op_is_pointwise(op) || is_view(op) || op == OP_REDUCE_SUM || op == OP_REDUCE_MAX;
}

static const Value *val(const Fuser *F, ValueId v) { return &F->g->values.data[v]; }
static NodeId producer(const Fuser *F, ValueId v) { return F->g->values.data[v].node; }

static int new_group(Fuser *F, GroupKind k, Shape dom, int col) {
  vec_push(&F->kinds, k);
  vec_push(&F->domains, dom);
  vec_push(&F->cols, col);
  vec_push(&F->tails, -1);
  vec_push(&F->n_epilogue, -1);
  return F->kinds.n - 1;
}

/* s is a per-row value of domain d: equal but for a last axis of 1. */
static bool is_row_shape(const Shape *s, const Shape *d) {
  if (s->rank != d->rank || d->rank == 0 || d->dim[d->rank - 1] == 1) return false;
  for (int i = 0; i + 1 < d->rank; i++)
    if (s->dim[i] != d->dim[i]) return false;
  return s->dim[d->rank - 1] == 1;
}

static bool fits_domain(const Shape *s, const Shape *d) { return shape_eq(s, d) || is_row_shape(s, d); }

/* Latest group that value v (read through folded views) depends on through
 * memory, or -1 for none. Values read via a view must be complete before. */
static int view_base_group(const Fuser *F, ValueId v) {
  NodeId p = producer(F, v);
  if (p < 0) return -1;
  if (!F->folded[p]) return F->f->group_of[p];
  int best = -1;
  const Node *n = &F->g->nodes.data[p];
  for (int j = 0; j < n->n_in; j++) {
    int gg = view_base_group(F, n->in[j]);
    if (gg > best) best = gg;
  }
  return best;
}

/* Can node n (pointwise, shape s) run in group G? */
static bool can_join(const Fuser *F, const Node *n, int G) {
  if (F->kinds.data[G] != GROUP_LOOP) return false;
  const Shape *s = &val(F, n->out)->shape;
  if (!fits_domain(s, &F->domains.data[G])) return false;
  for (int j = 0; j < n->n_in; j++) {
    ValueId u = n->in[j];
    NodeId p = producer(F, u);
    if (p < 0) continue;
    if (F->folded[p]) {
      if (view_base_group(F, u) >= G) return false;
      continue;
    }
    int gu = F->f->group_of[p];
    if (gu > G) return false;
    if (gu == G && !fits_domain(&val(F, u)->shape, &F->domains.data[G])) return false;
  }
  return true;
}

/* Dead nodes: a node without side effects whose value nothing keeps and
 * no live node reads (the originals row_blocks.c and chunk.c leave behind)
 * is never computed: folded, with no reader to recompute it. */
static void mark_dead(Fuser *F) {
  const Graph *g = F->g;
  int *live_reads = bc_calloc((size_t)g->values.n + 1, sizeof(int));
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    F->dead[i] = !(op_info[n->op].flags & OPF_SIDE_EFFECT) && !F->required[n->out] && live_reads[n->out] == 0;
    if (F->dead[i]) continue;
    for (int j = 0; j < n->n_in; j++) live_reads[n->in[j]]++;
  }
  free(live_reads);
}

/* Reader lists of the live nodes. */
static void build_readers(Fuser *F) {
  const Graph *g = F->g;
  int nv = g->values.n;
  F->start = bc_calloc((size_t)nv + 1, sizeof(int));
  for (int i = 0; i < g->nodes.n; i++)
    for (int j = 0; j < g->nodes.data[i].n_in && !F->dead[i]; j++) F->start[g->nodes.data[i].in[j] + 1]++;
  for (int v = 0; v < nv; v++) F->start[v + 1] += F->start[v];
  F->readers = bc_malloc(sizeof(NodeId) * (size_t)(F->start[nv] ? F->start[nv] : 1));
  int *fill = bc_calloc((size_t)nv, sizeof(int));
  for (int i = 0; i < g->nodes.n; i++)
    for (int j = 0; j < g->nodes.data[i].n_in && !F->dead[i]; j++) {
      ValueId v = g->nodes.data[i].in[j];
      F->readers[F->start[v] + fill[v]++] = i;
    }
  free(fill);
}

/* The node a remat copy (passes/remat.c) was made for: the first reader
 * that is not itself a copy. */
static const Node *remat_reader(const Fuser *F, NodeId i) {
  const Graph *g = F->g;
  while (g->nodes.data[i].remat) {
    ValueId v = g->nodes.data[i].out;
    BC_ASSERT(F->start[v] < F->start[v + 1]);
    i = F->readers[F->start[v]];
  }
  return &g->nodes.data[i];
}

/* A slice taking a run of its input's rows: an alias of the input's
 * buffer where that is materialized. */
static bool slice_is_alias(const Graph *g, const Node *n) {
  return shape_slice_offset(&g->values.data[n->in[0]].shape, n->a.axis, n->a.start) >= 0;
}

/* Pass 1: which views and generators fold into their readers. */
static void decide_folding(Fuser *F, bool no_view_fold) {
  const Graph *g = F->g;
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    if (!is_view(n->op) && !is_generator(n->op)) continue;
    if (F->required[n->out] || (no_view_fold && is_view(n->op))) continue;
    int lo = F->start[n->out], hi = F->start[n->out + 1];
    if (lo == hi) continue;
    bool ok = true;
    for (int r = lo; r < hi && ok; r++) {
      const Node *rn = &g->nodes.data[F->readers[r]];
      if (!is_loop_kind(rn->op)) ok = false;
      /* iota and random are recomputed per element of the reader's domain:
       * only readers iterating exactly their shape can do that */
      if ((n->op == OP_IOTA || n->op == OP_RANDOM) &&
          (is_view(rn->op) ||
           !shape_eq(&g->values.data[op_is_pointwise(rn->op) ? rn->out : rn->in[0]].shape,
                     &g->values.data[n->out].shape)))
        ok = false;
      /* a view read by a view that is not itself folded becomes a copy
       * kernel reading through the composed view: fine (a slice of it
       * then is such a copy, not an alias: below) */
    }
    F->folded[i] = ok;
  }
  /* Index math from graph inputs (one-hot labels, attention masks): a
   * pointwise node of inputs and folded nodes only, read only by pointwise
   * nodes and reductions, is recomputed by each kernel that needs it
   * instead of being stored (a [B*P, vocab] one-hot would be 100 MB). */
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (!op_is_pointwise(n->op) || F->required[n->out]) continue;
    int lo = F->start[n->out], hi = F->start[n->out + 1];
    bool ok = lo < hi;
    for (int j = 0; j < n->n_in && ok; j++) {
      ValueId u = n->in[j];
      NodeId p = g->values.data[u].node;
      if (p < 0 ? g->values.data[u].kind != VALUE_INPUT : !F->folded[p]) ok = false;
    }
    for (int r = lo; r < hi && ok; r++) {
      Op rop = g->nodes.data[F->readers[r]].op;
      if (!op_is_pointwise(rop) && rop != OP_REDUCE_SUM && rop != OP_REDUCE_MAX) ok = false;
    }
    F->folded[i] = ok;
  }
  /* Folded chains (a view of a view of ..., index math of index math) are
   * cut every FOLD_DEPTH_MAX links: each reader recomputes the whole chain,
   * and lowering it recurses once per link. A view cut off becomes a copy
   * kernel; index math whose input was cut off is computed once. */
  int *depth = bc_calloc((size_t)(g->nodes.n ? g->nodes.n : 1), sizeof(int));
  for (int i = 0; i < g->nodes.n; i++) {
    if (!F->folded[i]) continue;
    const Node *n = &g->nodes.data[i];
    bool inputs_folded = true;
    for (int j = 0; j < n->n_in; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p < 0) continue;
      if (!F->folded[p]) inputs_folded = false;
      else if (depth[p] > depth[i]) depth[i] = depth[p];
    }
    depth[i]++;
    if (depth[i] > FOLD_DEPTH_MAX || (op_is_pointwise(n->op) && !inputs_folded)) F->folded[i] = false;
  }
  free(depth);
}

/* The latest group that runs folded node n (through its readers). */
static int folded_last_group(const Fuser *F, NodeId n) {
  int best = -1;
  ValueId v = F->g->nodes.data[n].out;
  for (int r = F->start[v]; r < F->start[v + 1]; r++) {
    NodeId rn = F->readers[r];
    int gg = F->folded[rn] ? folded_last_group(F, rn) : F->f->group_of[rn];
    if (gg > best) best = gg;
  }
  return best;
}

/* A matmul that can take an epilogue: f32, no batch dims once A's are
 * folded into M, so that C is one [M, N] matrix. */
static bool gemm_takes_epilogue(const Fuser *F, const Node *n) {
  const Value *a = val(F, n->in[0]), *b = val(F, n->in[1]), *c = val(F, n->out);
  if (c->dtype != DTYPE_F32 || c->shape.rank < 1) return false;
  MatmulLayout l;
  shape_matmul_layout(&a->shape, n->a.trans_a, &b->shape, n->a.trans_b, &c->shape, &l);
  return l.n_batch_dims == 0;
}

/* A value in memory before group G runs: a graph input, parameter or
 * state, or computed (not folded) by an earlier group. */
static bool in_memory_before(const Fuser *F, ValueId v, int G) {
  NodeId p = producer(F, v);
  return p < 0 || (!F->folded[p] && F->f->group_of[p] >= 0 && F->f->group_of[p] < G);
}

/* Whether pointwise node n can join GEMM group G, whose last value is n's
 * input `at`, as an epilogue step. */
static bool epilogue_fits(const Fuser *F, const Node *n, int G, int at) {
  const Graph *g = F->g;
  if (F->n_epilogue.data[G] >= GEMM_EPILOGUE_MAX) return false;
  ValueId t = n->in[at];
  if (F->required[t] || F->start[t + 1] - F->start[t] != 1) return false; /* stored anyway */
  const Shape *cs = &val(F, t)->shape;
  if (!shape_eq(&val(F, n->out)->shape, cs) || val(F, n->out)->dtype != DTYPE_F32) return false;
  switch (n->op) {
  case OP_RELU:
  case OP_GELU:
  case OP_GELU_TANH: return true;
  case OP_RELU_GRAD: /* the product is the gradient; the mask, relu's output, in memory */
    return at == 0 && n->in[1] != t && shape_eq(&val(F, n->in[1])->shape, cs) && in_memory_before(F, n->in[1], G);
  case OP_ADD: {
    ValueId o = n->in[1 - at];
    if (o == t) return false;
    NodeId po = producer(F, o);
    if (po >= 0 && F->folded[po] && g->nodes.data[po].op == OP_BROADCAST) { /* a bias? */
      ValueId b = g->nodes.data[po].in[0];
      const Shape *bs = &val(F, b)->shape;
      int64_t N = cs->dim[cs->rank - 1];
      return bs->rank >= 1 && bs->dim[bs->rank - 1] == N && shape_numel(bs) == N && in_memory_before(F, b, G);
    }
    return shape_eq(&val(F, o)->shape, cs) && in_memory_before(F, o, G); /* a residual */
  }
  default: return false;
  }
}

/* The GEMM group whose epilogue pointwise node i joins (the rule in the
 * header), or -1. Of an add of two GEMMs' values (a sum of products, as
 * chunk.c makes), the later GEMM takes it: the other's value is in memory
 * by then. */
static int epilogue_group(const Fuser *F, NodeId i) {
  const Graph *g = F->g;
  const Node *n = &g->nodes.data[i];
  if (n->remat || n->stop_gradient) return -1;
  for (int j = 0; j < n->n_in; j++) {
    NodeId p = producer(F, n->in[j]);
    if (p < 0 || F->folded[p]) continue;
    int gp = F->f->group_of[p];
    if (F->kinds.data[gp] == GROUP_GEMM && F->n_epilogue.data[gp] >= 0 && F->tails.data[gp] == n->in[j] &&
        epilogue_fits(F, n, gp, j))
      return gp;
  }
  return -1;
}

/* Assign node a (target t, value v): can it store from v's group? */
static bool assign_in_place(const Fuser *F, NodeId a) {
  const Graph *g = F->g;
  const Node *n = &g->nodes.data[a];
  ValueId t = n->in[0], v = n->in[1];
  NodeId p = producer(F, v);
  if (p < 0 || F->folded[p]) return false;
  int G = F->f->group_of[p];
  if (F->kinds.data[G] != GROUP_LOOP || !shape_eq(&F->domains.data[G], &val(F, t)->shape)) return false;
  for (int r = F->start[t]; r < F->start[t + 1]; r++) {
    NodeId rn = F->readers[r];
    if (rn == a) continue;
    if (rn > a) return false;           /* read after the update in node order */
    if (F->folded[rn]) { /* read through a view: only by earlier kernels */
      int last = folded_last_group(F, rn);
      if (is_view(g->nodes.data[rn].op) ? last >= G : last > G) return false;
      continue;
    }
    if (F->f->group_of[rn] > G) return false;
    if (F->f->group_of[rn] == G && !shape_eq(&val(F, g->nodes.data[rn].out)->shape, &val(F, t)->shape))
      return false;
  }
  return true;
}

bool fuse_run(const Graph *g, const OptSwitches *off, Fusion *out, Diag *d) {
  (void)d;
  const bool no_fuse = off && off->fuse, no_epilogue = off && off->epilogue;
  memset(out, 0, sizeof(*out));
  int nn = g->nodes.n, nv = g->values.n;
  out->n_nodes = nn;
  out->n_values = nv;
  out->group_of = bc_malloc(sizeof(int) * (size_t)(nn ? nn : 1));
  out->materialized = bc_calloc((size_t)(nv ? nv : 1), sizeof(bool));
  for (int i = 0; i < nn; i++) out->group_of[i] = -1;
  Fuser F = {0};
  F.g = g;
  F.f = out;
  F.folded = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  F.required = bc_calloc((size_t)(nv ? nv : 1), sizeof(bool));
  for (int i = 0; i < g->outputs.n; i++) F.required[g->outputs.data[i]] = true;
  if (g->loss >= 0) F.required[g->loss] = true;
  for (int i = 0; i < g->params.n; i++) {
    ValueId gr = g->values.data[g->params.data[i]].grad;
    if (gr >= 0) F.required[gr] = true;
  }
  F.dead = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  mark_dead(&F);
  build_readers(&F);
  decide_folding(&F, off && off->view_fold);
  for (int i = 0; i < nn; i++) F.folded[i] |= F.dead[i];
  bool *joined = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool)); /* broadcasts that joined a row group */

  for (int i = 0; i < nn; i++) {
    const Node *n = &g->nodes.data[i];
    const Shape *os = &g->values.data[n->out].shape;
    if (F.dead[i]) continue;
    if (F.folded[i]) {
      /* a broadcast of a per-row value computed in a LOOP group joins that
       * group: row values are already broadcast along their rows */
      if (n->op == OP_BROADCAST && !no_fuse && !n->remat) {
        NodeId p = producer(&F, n->in[0]);
        if (p >= 0 && !F.folded[p]) {
          int G = out->group_of[p];
          if (F.kinds.data[G] == GROUP_LOOP && shape_eq(os, &F.domains.data[G]) &&
              is_row_shape(&g->values.data[n->in[0]].shape, os)) {
            F.folded[i] = false;
            out->group_of[i] = G;
            joined[i] = true;
          }
        }
      }
      continue;
    }
    int G = -1;
    switch (n->op) {
    case OP_MATMUL:
      G = new_group(&F, GROUP_GEMM, *os, -1);
      F.tails.data[G] = n->out;
      if (!no_fuse && !no_epilogue && gemm_takes_epilogue(&F, n)) F.n_epilogue.data[G] = 0;
      break;
    case OP_GATHER: G = new_group(&F, GROUP_GATHER, *os, -1); break;
    case OP_SCATTER_ADD: G = new_group(&F, GROUP_SCATTER_ADD, *os, -1); break;
    case OP_ATTENTION:
    case OP_ATTENTION_GRAD: G = new_group(&F, GROUP_ATTENTION, *os, -1); break;
    case OP_CONCAT: G = new_group(&F, GROUP_CONCAT, *os, -1); break;
    case OP_RESHAPE: G = new_group(&F, GROUP_ALIAS, *os, -1); break;
    case OP_SLICE: /* a run of rows of its input (attention_grad's d q, d k, d v): a view */
      if (!no_fuse && slice_is_alias(g, n) && (producer(&F, n->in[0]) < 0 || !F.folded[producer(&F, n->in[0])]))
        G = new_group(&F, GROUP_ALIAS, *os, -1);
      else /* a copy: of columns, or of rows of a folded view, through the view */
        G = new_group(&F, GROUP_LOOP, *os, -1);
      break;
    case OP_ASSIGN:
      if (!no_fuse && assign_in_place(&F, i)) G = out->group_of[producer(&F, n->in[1])];
      else G = new_group(&F, GROUP_ASSIGN, *os, -1);
      break;
    case OP_REDUCE_SUM:
    case OP_REDUCE_MAX: {
      const Shape *is = &g->values.data[n->in[0]].shape;
      int last = is->rank - 1;
      if (n->a.axis != last && is->dim[n->a.axis] > 1) {
        G = new_group(&F, GROUP_COLREDUCE, *is, n->a.axis);
        break;
      }
      NodeId p = producer(&F, n->in[0]);
      if (!no_fuse && p >= 0 && !F.folded[p]) {
        int Gp = out->group_of[p];
        if (F.kinds.data[Gp] == GROUP_LOOP && shape_eq(&F.domains.data[Gp], is)) G = Gp;
      }
      if (G < 0) G = new_group(&F, GROUP_LOOP, *is, -1);
      break;
    }
    default:
      if (!no_fuse && !no_epilogue && (G = epilogue_group(&F, i)) >= 0) {
        F.tails.data[G] = n->out;
        F.n_epilogue.data[G]++;
        break;
      }
      if (!no_fuse && op_is_pointwise(n->op)) {
        /* the latest group among the inputs' groups that can take it; a
         * rematerialized copy, whose inputs are in memory anyway, among
         * the groups of the inputs of the node it is made for */
        int best = -1;
        const Node *at = n->remat ? remat_reader(&F, i) : n;
        for (int j = 0; j < at->n_in; j++) {
          NodeId p = producer(&F, at->in[j]);
          if (p < 0 || F.folded[p] || g->nodes.data[p].remat) continue;
          int gu = out->group_of[p];
          if (gu > best && can_join(&F, n, gu)) best = gu;
        }
        /* inputs all folded (a dropout mask from random < p): try the
         * newest group, where the value's readers most likely are */
        if (best < 0 && F.kinds.n > 0 && can_join(&F, n, F.kinds.n - 1)) best = F.kinds.n - 1;
        G = best;
      }
      if (G < 0) G = new_group(&F, GROUP_LOOP, *os, -1);
      break;
    }
    out->group_of[i] = G;
  }

  /* A per-row broadcast that joined its row group but is read by another
   * group too (a layer norm's 1/std, by the backward) would be stored at
   * full size: it is folded back instead, so that every reader reads the
   * row value, stored at its own size, through the broadcast (its own
   * group through the row value it already has: kernel_ir.c). */
  for (int i = 0; i < nn; i++) {
    const Node *n = &g->nodes.data[i];
    int G = out->group_of[i];
    if (!joined[i] || F.required[n->out]) continue;
    bool outside = false;
    for (int r = F.start[n->out]; r < F.start[n->out + 1] && !outside; r++) {
      NodeId rn = F.readers[r];
      outside = F.folded[rn] || out->group_of[rn] != G;
    }
    if (outside) {
      F.folded[i] = true;
      out->group_of[i] = -1;
    }
  }

  /* Materialized values: not computed by a node, required, produced by a
   * library kernel, or read from memory by another group or a view. */
  for (int v = 0; v < nv; v++) {
    NodeId p = g->values.data[v].node;
    bool m = p < 0 || F.required[v];
    if (!m && F.folded[p]) continue; /* recomputed or viewed by its readers */
    if (!m) {
      int G = out->group_of[p];
      if (F.kinds.data[G] != GROUP_LOOP && F.kinds.data[G] != GROUP_COLREDUCE && F.kinds.data[G] != GROUP_GEMM)
        m = true;
      if (F.kinds.data[G] == GROUP_GEMM && F.tails.data[G] == v) m = true; /* what the GEMM stores */
      if (F.kinds.data[G] == GROUP_COLREDUCE) m = true;
      if (g->nodes.data[p].op == OP_ASSIGN) m = false; /* the target is the buffer */
      for (int r = F.start[v]; r < F.start[v + 1] && !m; r++) {
        NodeId rn = F.readers[r];
        if (F.folded[rn] || out->group_of[rn] != G) m = true;
      }
    }
    out->materialized[v] = m;
  }
  out->n_groups = F.kinds.n;
  out->kind = F.kinds.data;
  out->domain = F.domains.data;
  out->col_axis = F.cols.data;
  vec_free(&F.tails);
  vec_free(&F.n_epilogue);
  free(joined);
  free(F.start);
  free(F.readers);
  free(F.folded);
  free(F.dead);
  free(F.required);
  return true;
}

void fusion_free(Fusion *f) {
  free(f->group_of);
  free(f->kind);
  free(f->domain);
  free(f->col_axis);
  free(f->materialized);
  memset(f, 0, sizeof(*f));
}

/* Group at which node i (folded or not) is first needed, in `key`. */
static int need_group(const Graph *g, const Fusion *f, const int *start, const NodeId *readers, int *key,
                      NodeId i) {
  if (key[i] != -2) return key[i];
  if (f->group_of[i] >= 0) return key[i] = f->group_of[i];
  int best = f->n_groups; /* unread: at the end */
  ValueId v = g->nodes.data[i].out;
  for (int r = start[v]; r < start[v + 1]; r++) {
    int k = need_group(g, f, start, readers, key, readers[r]);
    if (k < best) best = k;
  }
  return key[i] = best;
}

static const int *sort_key;
static int by_key(const void *a, const void *b) {
  NodeId x = *(const NodeId *)a, y = *(const NodeId *)b;
  if (sort_key[x] != sort_key[y]) return sort_key[x] < sort_key[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

void fusion_execution_order(const Graph *g, const Fusion *f, NodeId *order) {
  int nn = g->nodes.n, nv = g->values.n;
  int *start = bc_calloc((size_t)nv + 1, sizeof(int));
  for (int i = 0; i < nn; i++)
    for (int j = 0; j < g->nodes.data[i].n_in; j++) start[g->nodes.data[i].in[j] + 1]++;
  for (int v = 0; v < nv; v++) start[v + 1] += start[v];
  NodeId *readers = bc_malloc(sizeof(NodeId) * (size_t)(start[nv] ? start[nv] : 1));
  int *fill = bc_calloc((size_t)nv + 1, sizeof(int));
  for (int i = 0; i < nn; i++)
    for (int j = 0; j < g->nodes.data[i].n_in; j++) {
      ValueId v = g->nodes.data[i].in[j];
      readers[start[v] + fill[v]++] = i;
    }
  int *key = bc_malloc(sizeof(int) * (size_t)(nn ? nn : 1));
  for (int i = 0; i < nn; i++) key[i] = -2;
  for (int i = nn - 1; i >= 0; i--) need_group(g, f, start, readers, key, i);
  /* folded nodes sort with the group that needs them; within a key, node
   * order (inputs precede readers there, and a folded node precedes the
   * group's nodes that read it because it is older than they are) */
  for (int i = 0; i < nn; i++) order[i] = i;
  sort_key = key;
  qsort(order, (size_t)nn, sizeof(NodeId), by_key);
  sort_key = NULL;
  free(key);
  free(start);
  free(readers);
  free(fill);
}

void fusion_apply_order(Graph *g, Fusion *f, const NodeId *order) {
  int nn = g->nodes.n;
  graph_reorder(g, order);
  int *grp = bc_malloc(sizeof(int) * (size_t)(nn ? nn : 1));
  for (int k = 0; k < nn; k++) grp[k] = f->group_of[order[k]];
  memcpy(f->group_of, grp, sizeof(int) * (size_t)nn);
  free(grp);
}

void fusion_kernel_of(const Graph *g, const Fusion *f, int *kernel_of) {
  for (int i = g->nodes.n - 1, next = f->n_groups; i >= 0; i--) {
    if (f->group_of[i] >= 0) next = f->group_of[i];
    kernel_of[i] = next;
  }
}

bool fusion_check(const Graph *g, const Fusion *f, Diag *d) {
  int before = d->n_errors;
  if (f->n_nodes != g->nodes.n || f->n_values != g->values.n) {
    diag_error(d, SRCLOC_NONE, "internal: fusion of %d nodes, %d values for a graph of %d, %d", f->n_nodes,
               f->n_values, g->nodes.n, g->values.n);
    return false;
  }
  int last = -1;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    int G = f->group_of[i];
    if (G < -1 || G >= f->n_groups) {
      diag_error(d, n->loc, "internal: node %d (%s) in group %d of %d", i, op_info[n->op].name, G, f->n_groups);
      continue;
    }
    if (G < 0) {
      if (!is_view(n->op) && !is_generator(n->op) && !op_is_pointwise(n->op))
        diag_error(d, n->loc, "internal: node %d (%s) is folded but cannot be recomputed by its readers", i,
                   op_info[n->op].name);
      continue;
    }
    if (G < last)
      diag_error(d, n->loc, "internal: node %d (%s) runs in group %d after group %d", i, op_info[n->op].name, G,
                 last);
    last = G > last ? G : last;
    /* every value this node reads from another group must be in memory */
    for (int j = 0; j < n->n_in; j++) {
      ValueId u = n->in[j];
      NodeId p = g->values.data[u].node;
      if (p >= 0 && f->group_of[p] >= 0 && f->group_of[p] != G && !f->materialized[u])
        diag_error(d, n->loc, "internal: value %%%d '%s' is read by group %d but kept in registers of group %d",
                   u, g->values.data[u].name, G, f->group_of[p]);
    }
  }
  for (int i = 0; i < g->outputs.n; i++)
    if (!f->materialized[g->outputs.data[i]])
      diag_error(d, SRCLOC_NONE, "internal: output '%s' has no buffer", g->values.data[g->outputs.data[i]].name);
  if (g->loss >= 0 && !f->materialized[g->loss]) diag_error(d, SRCLOC_NONE, "internal: the loss has no buffer");
  for (int i = 0; i < g->params.n; i++) {
    ValueId gr = g->values.data[g->params.data[i]].grad;
    if (gr >= 0 && !f->materialized[gr])
      diag_error(d, SRCLOC_NONE, "internal: gradient '%s' has no buffer", g->values.data[gr].name);
  }
  return d->n_errors == before;
}

static const char *const group_kind_names[] = {"loop",   "column-reduce", "gemm",   "gather",   "scatter_add",
                                               "concat", "alias",         "assign", "attention"};

void fusion_print(const Graph *g, const Fusion *f, FILE *out) {
  int counts[sizeof group_kind_names / sizeof group_kind_names[0]] = {0};
  char b[96];
  for (int G = 0; G < f->n_groups; G++) {
    counts[f->kind[G]]++;
    fprintf(out, "group %d [%s]", G, group_kind_names[f->kind[G]]);
    if (f->kind[G] == GROUP_LOOP || f->kind[G] == GROUP_COLREDUCE)
      fprintf(out, " domain %s", shape_str(&f->domain[G], b));
    if (f->kind[G] == GROUP_COLREDUCE) fprintf(out, " axis %d", f->col_axis[G]);
    fputc('\n', out);
    /* the group's nodes, and before each the folded nodes it recomputes */
    for (int i = 0; i < g->nodes.n; i++) {
      if (f->group_of[i] != G) continue;
      const Node *n = &g->nodes.data[i];
      fprintf(out, "    %%%d %s = %s%s", n->out, g->values.data[n->out].name, op_info[n->op].name,
              f->materialized[n->out] ? "" : " (in registers)");
      if (n->loc.file && n->loc.line > 0) fprintf(out, "  @ %s:%d", n->loc.file, n->loc.line);
      else if (n->loc.file) fprintf(out, "  @ %s", n->loc.file);
      fputc('\n', out);
    }
  }
  int folded = 0;
  for (int i = 0; i < g->nodes.n; i++) folded += f->group_of[i] < 0;
  fprintf(out, "groups: %d (loop %d, column-reduce %d, gemm %d, gather %d, scatter_add %d, concat %d, alias %d, "
               "assign %d, attention %d); %d nodes folded into their readers\n",
          f->n_groups, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7], counts[8],
          folded);
}
