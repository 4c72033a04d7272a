/* memplan.c — the memory planner: pinned regions, live ranges over the node
 * order, best-fit offsets in one arena, in-place and view reuse, the printer
 * and an independent checker. See memplan.h for the rules.
 *
 * Requires: a verified graph; its node array is the schedule. Produces: a
 * MemPlan (one MemSlot per value); the graph is not changed.
 *
 * Invariants: at every node, the arena buffers of the values live there
 * (inputs being read, the output being written) are disjoint, except that an
 * output reusing an input's buffer (alias_of) shares it with that input only,
 * at the node where the input dies (the attention backward's output, with
 * the q, k and v of the block it is written over). A buffer is owned by the newest value in
 * its chain of aliases and freed when that value dies.
 *
 * Small buffers are planned by an allocator of their own, then placed
 * where the large block has room over their lifetimes (place_small).
 *
 * Not here: device allocation, and any attempt at a better order (the planner
 * takes the schedule as given). Best fit is greedy, not optimal. */
#include "memplan.h"

#include <inttypes.h>
#include <string.h>

#define ALIGN 64
/* Buffers of at most this many bytes come from the small allocator. */
#define SMALL_BYTES (256 * 1024)
static int64_t align_up(int64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

static int64_t value_bytes(const Value *v) {
  return shape_numel(&v->shape) * (int64_t)dtype_size(v->dtype);
}

/* Whether an assign target, an input/param/state, a gradient, an output or
 * the loss: each gets a region of its own for the whole step. */
/* Bytes from its input's start at which the value of node n, a view, begins:
 * 0 for a reshape, the first row for a slice of rows
 * (shape_slice_offset); -1 for other nodes. */
static int64_t view_offset(const Graph *g, const Node *n) {
  if (n->op == OP_RESHAPE) return 0;
  if (n->op != OP_SLICE) return -1;
  const Value *x = &g->values.data[n->in[0]];
  int64_t e = shape_slice_offset(&x->shape, n->a.axis, n->a.start);
  return e < 0 ? -1 : e * (int64_t)dtype_size(x->dtype);
}

/* A reshape of an intermediate (a node's value, not an assign): pinned,
 * it is a view of that value, which pinned_set pins too. */
static bool reshape_of_intermediate(const Graph *g, ValueId v) {
  NodeId n = g->values.data[v].node;
  if (n < 0 || g->nodes.data[n].op != OP_RESHAPE) return false;
  NodeId src = g->values.data[g->nodes.data[n].in[0]].node;
  return src >= 0 && g->nodes.data[src].op != OP_ASSIGN;
}

static bool *pinned_set(const Graph *g) {
  bool *pin = bc_calloc((size_t)g->values.n + 1, sizeof(bool));
  for (int v = 0; v < g->values.n; v++) {
    const Value *x = &g->values.data[v];
    if (x->kind != VALUE_NODE) pin[v] = true;
    if (x->kind == VALUE_PARAM && x->grad >= 0) pin[x->grad] = true;
  }
  for (int i = 0; i < g->outputs.n; i++) pin[g->outputs.data[i]] = true;
  if (g->loss >= 0) pin[g->loss] = true;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op != OP_ASSIGN) continue;
    /* the target holds the result; the new value needs a buffer only if
     * fusion materialized it (an assign fused into the kernel computing its
     * value stores straight into the target) and then lives as long as any
     * other intermediate */
    pin[n->in[0]] = true;
  }
  /* a pinned reshape (an output [B, P, V] of logits computed as [B*P, V])
   * pins its source and views it, so it costs no copy */
  for (int i = g->nodes.n - 1; i >= 0; i--)
    if (pin[g->nodes.data[i].out] && reshape_of_intermediate(g, g->nodes.data[i].out)) pin[g->nodes.data[i].in[0]] = true;
  return pin;
}

/* ---- the arena allocator: best fit over a sorted list of holes ---------- */

typedef struct {
  int64_t offset, bytes;
} Hole;

typedef struct {
  VEC(Hole) holes; /* sorted by offset, never adjacent (merged) */
  int64_t top;     /* high-water mark = arena size so far */
} Allocator;

/* The smallest hole that fits (lowest offset on ties); else the last hole
 * when it ends at the top (it grows); else fresh space at the top. */
static int64_t alloc_bytes(Allocator *a, int64_t bytes) {
  if (bytes == 0) return 0;
  int best = -1;
  for (int i = 0; i < a->holes.n; i++)
    if (a->holes.data[i].bytes >= bytes && (best < 0 || a->holes.data[i].bytes < a->holes.data[best].bytes))
      best = i;
  if (best >= 0) {
    Hole *h = &a->holes.data[best];
    int64_t off = h->offset;
    h->offset += bytes;
    h->bytes -= bytes;
    if (h->bytes == 0) {
      memmove(h, h + 1, (size_t)(a->holes.n - best - 1) * sizeof(Hole));
      a->holes.n--;
    }
    return off;
  }
  int64_t off = a->top;
  if (a->holes.n > 0) {
    Hole *last = &a->holes.data[a->holes.n - 1];
    if (last->offset + last->bytes == a->top) {
      off = last->offset;
      a->holes.n--;
    }
  }
  a->top = off + bytes;
  return off;
}

static void free_bytes(Allocator *a, int64_t off, int64_t bytes) {
  if (bytes == 0) return;
  int i = 0;
  while (i < a->holes.n && a->holes.data[i].offset < off) i++;
  Hole *prev = i > 0 ? &a->holes.data[i - 1] : NULL;
  Hole *next = i < a->holes.n ? &a->holes.data[i] : NULL;
  BC_ASSERT(!prev || prev->offset + prev->bytes <= off);     /* double free is a bug */
  BC_ASSERT(!next || off + bytes <= next->offset);
  if (prev && prev->offset + prev->bytes == off) {
    prev->bytes += bytes;
    if (next && prev->offset + prev->bytes == next->offset) {
      prev->bytes += next->bytes;
      memmove(next, next + 1, (size_t)(a->holes.n - i - 1) * sizeof(Hole));
      a->holes.n--;
    }
  } else if (next && off + bytes == next->offset) {
    next->offset = off;
    next->bytes += bytes;
  } else {
    vec_reserve(&a->holes, a->holes.n + 1);
    memmove(&a->holes.data[i + 1], &a->holes.data[i], (size_t)(a->holes.n - i) * sizeof(Hole));
    a->holes.data[i] = (Hole){off, bytes};
    a->holes.n++;
  }
}

/* ---- live ranges --------------------------------------------------------- */

/* last[v] = the last node that reads v, where a read by a node whose output
 * has no buffer (fused) counts at the last read of that output, since the
 * kernel consuming it recomputes it from v there. Values nobody reads die at
 * their producer. -1 for values no node produces. Caller frees. */
static NodeId *last_uses(const Graph *g, const bool *has_buffer) {
  NodeId *last = bc_malloc(((size_t)g->values.n + 1) * sizeof(NodeId));
  for (int v = 0; v < g->values.n; v++) last[v] = g->values.data[v].node;
  for (int i = g->nodes.n - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    NodeId t = i;
    /* a dead node (fuse.c: unread, no buffer) is never computed: no reads */
    if (!has_buffer[n->out] && last[n->out] == i) continue;
    if (!has_buffer[n->out] && last[n->out] > t) t = last[n->out];
    for (int k = 0; k < n->n_in; k++)
      if (last[n->in[k]] < t) last[n->in[k]] = t;
  }
  return last;
}

/* Ops whose output may take an input's buffer: element j of the output
 * depends on element j of the inputs only (reshape keeps the element order). */
static bool inplace_op(Op op) {
  return (op_info[op].flags & OPF_ELEMENTWISE) || op == OP_SELECT || op == OP_CAST || op == OP_RESHAPE;
}

/* A node that, fused into a kernel, reads its inputs at the index it writes. */
static bool pointwise(const Graph *g, const Node *n) {
  if (!inplace_op(n->op)) return false;
  int64_t m = shape_numel(&g->values.data[n->out].shape);
  for (int k = 0; k < n->n_in; k++)
    if (shape_numel(&g->values.data[n->in[k]].shape) != m) return false;
  return true;
}

/* Whether node i's kernel may overwrite input x element by element: the
 * fused values it recomputes (inputs without a buffer, and theirs) must reach
 * x through pointwise nodes only; a fused reduction or broadcast of x would
 * read elements the kernel has already overwritten (a layer norm's mean).
 * reach(): 0 = z does not depend on x through fused values, 1 = only
 * pointwise, 2 = through some other node (or z is computed from a matmul
 * in the kernel, a GEMM epilogue: never in place). memo/stamp: per value scratch. */
typedef struct {
  const Graph *g;
  const bool *has_buf;
  uint8_t *memo;
  int *stamp;
  int query;
} Cone;

static int reach(Cone *c, ValueId z, ValueId x) {
  if (c->stamp[z] == c->query) return c->memo[z];
  const Node *m = &c->g->nodes.data[c->g->values.data[z].node];
  int pw = pointwise(c->g, m) ? 1 : 2, r = 0;
  /* a GEMM's epilogue: the library may keep partial sums in C before it
   * reads the epilogue's inputs, so none of them may share C's buffer
   * (but see gemm_accumulates_into) */
  if (m->op == OP_MATMUL) r = 2;
  for (int k = 0; k < m->n_in; k++) {
    ValueId w = m->in[k];
    int s = w == x ? 1 : (!c->has_buf[w] && c->g->values.data[w].node >= 0) ? reach(c, w, x) : 0;
    if (s == 2 || (s == 1 && pw == 2)) r = 2;
    else if (s == 1 && r == 0) r = 1;
  }
  c->stamp[z] = c->query;
  c->memo[z] = (uint8_t)r;
  return r;
}

/* A GEMM whose whole epilogue is adding x (a residual, a gradient sum):
 * n = add(matmul output kept in registers, x), x not read by the matmul.
 * The GEMM may accumulate into x's buffer (C = A B + C), so x may be
 * written in place. */
static bool gemm_accumulates_into(const Cone *c, const Node *n, ValueId x) {
  if (n->op != OP_ADD || n->n_in != 2 || n->in[0] == n->in[1]) return false;
  ValueId m = n->in[0] == x ? n->in[1] : n->in[0];
  NodeId p = c->g->values.data[m].node;
  if (m == x || c->has_buf[m] || p < 0 || c->g->nodes.data[p].op != OP_MATMUL) return false;
  const Node *mm = &c->g->nodes.data[p];
  return mm->in[0] != x && mm->in[1] != x;
}

static bool cone_pointwise(Cone *c, const Node *n, ValueId x) {
  if (gemm_accumulates_into(c, n, x)) return true;
  c->query++;
  for (int k = 0; k < n->n_in; k++) {
    ValueId z = n->in[k];
    if (z != x && !c->has_buf[z] && c->g->values.data[z].node >= 0 && reach(c, z, x) == 2) return false;
  }
  return true;
}

static void cone_init(Cone *c, const Graph *g, const bool *has_buf) {
  c->g = g;
  c->has_buf = has_buf;
  c->memo = bc_calloc((size_t)g->values.n + 1, 1);
  c->stamp = bc_calloc((size_t)g->values.n + 1, sizeof(int));
  c->query = 0;
}

static void cone_free(Cone *c) {
  free(c->memo);
  free(c->stamp);
}

/* ---- the attention backward over its inputs -------------------------------- */

/* Per value, the attention backward (node) that will write d q, d k and
 * d v over it, else -1: the value is that node's q, k or v, all three are
 * buffers of their own that die there, and the output's rows (d q, then
 * d k, then d v: graph/shape.c) take as many bytes as they do in that
 * order. The planner then places q | k | v as one block when the first of
 * them is made, and the output over it (runtime/cpu_attention.c reads a
 * unit's q, k and v rows before it writes the same rows of the output).
 * A member made by a view (a reshape, a slice) would have to become a
 * copy: no block then. Caller frees. */
static NodeId *attention_blocks(const Graph *g, const bool *pin, const bool *has_buf, const NodeId *last) {
  NodeId *of = bc_malloc(((size_t)g->values.n + 1) * sizeof(NodeId));
  for (int v = 0; v < g->values.n; v++) of[v] = -1;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op != OP_ATTENTION_GRAD || pin[n->out] || !has_buf[n->out]) continue;
    int64_t total = 0;
    bool ok = true;
    for (int k = 0; k < 3 && ok; k++) {
      ValueId x = n->in[k];
      const Value *xv = &g->values.data[x];
      const Node *p = xv->node >= 0 ? &g->nodes.data[xv->node] : NULL;
      ok = p && p->op != OP_ASSIGN && view_offset(g, p) < 0 && !pin[x] && has_buf[x] && last[x] == i &&
           of[x] < 0 && (k == 2 || value_bytes(xv) % ALIGN == 0);
      for (int j = 0; j < k; j++) ok = ok && n->in[j] != x;
      total += value_bytes(xv);
    }
    if (ok && total == value_bytes(&g->values.data[n->out]))
      for (int k = 0; k < 3; k++) of[n->in[k]] = i;
  }
  return of;
}

/* Bytes from the start of attention node a's block to its input x. */
static int64_t block_lead(const Graph *g, const Node *a, ValueId x) {
  int64_t lead = 0;
  for (int k = 0; k < 3 && a->in[k] != x; k++) lead += value_bytes(&g->values.data[a->in[k]]);
  return lead;
}

/* ---- the small buffers' places ------------------------------------------- */

/* Kernel of node i (the node itself without a kernel map). */
static int kernel_at(const int *kernel_of, NodeId i) { return kernel_of && i >= 0 ? kernel_of[i] : i; }

/* A buffer of the arena (a root and the values on it): its kernels
 * [first, last] and bytes [off, end). */
typedef struct {
  ValueId root;
  int first, last;
  int64_t off, end;
} Placed;

static int by_off(const void *x, const void *y) {
  const Placed *a = x, *b = y;
  return (a->off > b->off) - (a->off < b->off);
}

/* Larger first, then earlier. */
static int by_size(const void *x, const void *y) {
  const Placed *a = x, *b = y;
  int64_t sa = a->end - a->off, sb = b->end - b->off;
  if (sa != sb) return (sa < sb) - (sa > sb);
  return (a->first > b->first) - (a->first < b->first);
}

/* The lowest offset where `bytes` fit beside the placed buffers live at
 * some kernel of [first, last]; tmp: scratch for n. */
static int64_t lowest_free(const Placed *placed, int n, int first, int last, int64_t bytes, Placed *tmp) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (placed[i].first <= last && first <= placed[i].last) tmp[k++] = placed[i];
  qsort(tmp, (size_t)k, sizeof *tmp, by_off);
  int64_t at = 0;
  for (int i = 0; i < k && tmp[i].off < at + bytes; i++)
    if (tmp[i].end > at) at = tmp[i].end;
  return at;
}

/* The small buffers were planned in a block of their own (small_top
 * bytes) after the large ones' (large_top): each buffer whose lifetime
 * leaves room in the large block, or above it beside the other small
 * ones, goes there instead: the lowest offset free over its lifetime,
 * largest first. Kept only when the arena comes out smaller. Returns the
 * arena's size; the values on each small buffer move with it. A buffer
 * takes span[r] bytes from lead[r] before its root r's offset. */
static int64_t place_small(MemSlot *s, int nv, const ValueId *root, const bool *small, const int64_t *lead,
                           const int64_t *span, const int *kernel_of, int64_t large_top, int64_t small_top) {
  int64_t base = align_up(large_top);
  for (int v = 0; v < nv; v++)
    if (s[v].kind == MEM_ARENA && small[root[v]]) s[v].offset += base;
  if (small_top == 0) return large_top;
  Placed *all = bc_malloc(sizeof(Placed) * (size_t)(nv + 1)), *tmp = bc_malloc(sizeof(Placed) * (size_t)(nv + 1));
  int *at = bc_malloc(sizeof(int) * (size_t)(nv + 1)); /* per root: its index in all */
  int n = 0;
  for (int v = 0; v < nv; v++)
    if (s[v].kind == MEM_ARENA && root[v] == v) {
      at[v] = n;
      all[n++] = (Placed){v, kernel_at(kernel_of, s[v].first), kernel_at(kernel_of, s[v].last),
                          s[v].offset - lead[v], s[v].offset - lead[v] + span[v]};
    }
  for (int v = 0; v < nv; v++) /* a buffer lives until the last value on it dies */
    if (s[v].kind == MEM_ARENA && root[v] != v && kernel_at(kernel_of, s[v].last) > all[at[root[v]]].last)
      all[at[root[v]]].last = kernel_at(kernel_of, s[v].last);
  /* the large ones stay; the small ones placed one by one after them */
  int n_large = 0;
  for (int i = 0; i < n; i++)
    if (!small[all[i].root]) {
      Placed t = all[n_large];
      all[n_large++] = all[i];
      all[i] = t;
    }
  qsort(all + n_large, (size_t)(n - n_large), sizeof *all, by_size);
  int64_t top = large_top;
  for (int i = n_large; i < n; i++) {
    int64_t bytes = all[i].end - all[i].off;
    all[i].off = lowest_free(all, i, all[i].first, all[i].last, bytes, tmp);
    all[i].end = all[i].off + bytes;
    if (all[i].end > top) top = all[i].end;
  }
  if (top < base + small_top)
    for (int i = n_large; i < n; i++) {
      ValueId r = all[i].root;
      int64_t old = s[r].offset - lead[r];
      for (int v = 0; v < nv; v++)
        if (s[v].kind == MEM_ARENA && root[v] == r) s[v].offset += all[i].off - old;
    }
  free(all);
  free(tmp);
  free(at);
  return top < base + small_top ? top : base + small_top;
}

/* ---- planning ------------------------------------------------------------ */

bool memplan_run(const Graph *g, const bool *materialized, bool disable, MemPlan *out, Diag *d) {
  OptSwitches off = {0};
  off.memplan = disable;
  return memplan_run_kernels(g, materialized, NULL, &off, out, d);
}


bool memplan_run_kernels(const Graph *g, const bool *materialized, const int *kernel_of, const OptSwitches *off,
                         MemPlan *out, Diag *d) {
  memset(out, 0, sizeof(*out));
  const bool disable = off && off->memplan;
  /* reshape views stay: a reshape is an alias, not a write */
  const bool no_inplace = off && off->inplace;
  int nv = g->values.n;
  for (int v = 0; v < nv; v++)
    if (g->values.data[v].dtype == DTYPE_F64) {
      diag_error(d, g->values.data[v].loc, "internal: memplan: value '%s' has dtype f64, a host-only type",
                 g->values.data[v].name ? g->values.data[v].name : "?");
      return false;
    }
  MemSlot *s = bc_calloc((size_t)nv + 1, sizeof(MemSlot));
  bool *pin = pinned_set(g);
  bool *has_buf = bc_malloc((size_t)nv + 1);
  for (int v = 0; v < nv; v++) {
    const Value *x = &g->values.data[v];
    bool assign_out = x->node >= 0 && g->nodes.data[x->node].op == OP_ASSIGN;
    has_buf[v] = pin[v] || assign_out || !materialized || materialized[v];
    s[v] = (MemSlot){-1, value_bytes(x), -1, MEM_NONE, -1, -1};
  }

  /* Pinned block: one region each, in value order (deterministic), but a
   * reshape of an intermediate shares its source's (in node order: chains) */
  int64_t pinned = 0;
  for (int v = 0; v < nv; v++) {
    if (!pin[v] || reshape_of_intermediate(g, v)) continue;
    s[v].kind = MEM_PINNED;
    s[v].offset = pinned;
    pinned += align_up(s[v].bytes);
  }
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (!pin[n->out] || !reshape_of_intermediate(g, n->out)) continue;
    s[n->out] = (MemSlot){s[n->in[0]].offset, s[n->out].bytes, n->in[0], MEM_PINNED, -1, -1};
    out->n_views++;
  }
  for (int i = 0; i < g->nodes.n; i++) { /* assign outputs: the target itself */
    const Node *n = &g->nodes.data[i];
    if (n->op != OP_ASSIGN || pin[n->out]) continue;
    s[n->out] = (MemSlot){s[n->in[0]].offset, s[n->out].bytes, n->in[0], MEM_PINNED, -1, -1};
  }

  /* Arena: walk the schedule; at node i first place the output (its inputs
   * are still live, so it cannot land on them unless it reuses one that dies
   * here), then free the buffers whose last live value dies at i. */
  NodeId *last = last_uses(g, has_buf);
  int *n_dying = bc_calloc((size_t)g->nodes.n + 1, sizeof(int)); /* bucket starts, then cursors */
  ValueId *dying = bc_malloc(((size_t)nv + 1) * sizeof(ValueId));
  for (int v = 0; v < nv; v++)
    if (last[v] >= 0) n_dying[last[v] + 1]++;
  for (int i = 0; i < g->nodes.n; i++) n_dying[i + 1] += n_dying[i];
  int *cursor = bc_malloc(((size_t)g->nodes.n + 1) * sizeof(int));
  memcpy(cursor, n_dying, ((size_t)g->nodes.n + 1) * sizeof(int));
  for (int v = 0; v < nv; v++)
    if (last[v] >= 0) dying[cursor[last[v]]++] = v;
  free(cursor);

  int *live = bc_calloc((size_t)nv + 1, sizeof(int));            /* by root value: live values on it */
  ValueId *root = bc_malloc(((size_t)nv + 1) * sizeof(ValueId)); /* the value that allocated it */
  Allocator a = {{0}, 0}, sa = {{0}, 0};
  bool *small = bc_calloc((size_t)nv + 1, sizeof(bool)); /* by root value: in sa */
  /* by root value: its buffer's bytes, from lead bytes before its offset
   * (an attention block's k or v allocates the block when made first) */
  int64_t *span = bc_calloc((size_t)nv + 1, sizeof(int64_t)), *lead = bc_calloc((size_t)nv + 1, sizeof(int64_t));
  NodeId *block_of = disable || no_inplace || (off && off->attention_in_place) ? NULL
                                                                                : attention_blocks(g, pin, has_buf, last);
  Cone cone;
  cone_init(&cone, g, has_buf);
  int64_t sum = 0;
  VEC(ValueId) pending = {0};
  /* viewed_in[x]: a kernel reading x through a view node (permute, slice,
   * broadcast): other elements than the one being written, so no in place */
  int *viewed_in = bc_malloc(sizeof(int) * ((size_t)nv + 1));
  for (int v = 0; v < nv; v++) viewed_in[v] = -1;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op == OP_PERMUTE || n->op == OP_SLICE || n->op == OP_BROADCAST)
      viewed_in[n->in[0]] = kernel_at(kernel_of, i);
  }
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    ValueId y = n->out;
    if (!disable && n->op == OP_RESHAPE && has_buf[y] && s[y].kind == MEM_NONE &&
        s[n->in[0]].kind == MEM_PINNED && s[n->in[0]].alias_of < 0 &&
        g->values.data[n->in[0]].kind != VALUE_PARAM && g->values.data[n->in[0]].kind != VALUE_STATE) {
      /* a reshape of a pinned value (an output, an input) is a view of it:
       * pinned buffers are never reused or written in place, and only
       * parameters and state (not viewed here) change during a step */
      s[y] = (MemSlot){s[n->in[0]].offset, s[y].bytes, n->in[0], MEM_PINNED, -1, -1};
      out->n_views++;
    } else if (has_buf[y] && s[y].kind == MEM_NONE) { /* not pinned, not an assign */
      MemSlot *sy = &s[y];
      sy->kind = MEM_ARENA;
      sy->first = i;
      sy->last = last[y];
      sum += align_up(sy->bytes);
      ValueId src = -1;
      bool may_alias = inplace_op(n->op) && (n->op == OP_RESHAPE || !no_inplace);
      for (int k = 0; !disable && src < 0 && may_alias && k < n->n_in; k++) {
        ValueId x = n->in[k];
        if (s[x].kind == MEM_ARENA && last[x] == i && s[x].bytes == sy->bytes && live[root[x]] == 1 &&
            cone_pointwise(&cone, n, x) && viewed_in[x] != kernel_at(kernel_of, i))
          src = x;
      }
      /* a reshape (or a slice of rows at an aligned offset) of a buffer
       * that is read later too is a view of it all the same: neither is
       * written again while both live (in place needs a buffer with one
       * live value), and the buffer is freed when the last value on it
       * dies */
      int64_t voff = view_offset(g, n);
      if (!disable && src < 0 && voff >= 0 && voff % ALIGN == 0 && s[n->in[0]].kind == MEM_ARENA &&
          (n->op == OP_SLICE || s[n->in[0]].bytes == sy->bytes))
        src = n->in[0];
      NodeId blk = block_of ? block_of[y] : -1;
      ValueId q = n->op == OP_ATTENTION_GRAD ? n->in[0] : -1;
      if (blk >= 0) { /* q, k or v: its place in their block */
        const Node *an = &g->nodes.data[blk];
        ValueId r = -1;
        for (int k = 0; k < 3; k++)
          if (an->in[k] != y && s[an->in[k]].kind == MEM_ARENA) r = root[an->in[k]];
        if (r < 0) {
          r = y;
          lead[y] = block_lead(g, an, y);
          span[y] = align_up(value_bytes(&g->values.data[an->out]));
          small[y] = span[y] <= SMALL_BYTES;
          sy->offset = alloc_bytes(small[y] ? &sa : &a, span[y]) + lead[y];
        } else {
          sy->offset = s[r].offset - lead[r] + block_lead(g, an, y);
        }
        root[y] = r;
      } else if (src < 0 && q >= 0 && block_of && block_of[q] == i && live[root[q]] == 3) {
        /* the attention backward over its q | k | v block, which holds
         * nothing else (no view of one of them lives on) */
        sy->offset = s[q].offset;
        sy->alias_of = q;
        root[y] = root[q];
        out->n_inplace++;
      } else if (src >= 0) {
        sy->offset = s[src].offset + (voff > 0 ? voff : 0);
        sy->alias_of = src;
        root[y] = root[src];
        if (voff >= 0) out->n_views++;
        else out->n_inplace++;
      } else {
        /* small buffers (row statistics, bias gradients) have an
         * allocator of their own, after the large ones: in a large hole
         * they would keep it from taking a large buffer later */
        small[y] = !disable && sy->bytes <= SMALL_BYTES;
        span[y] = align_up(sy->bytes);
        sy->offset = alloc_bytes(small[y] ? &sa : &a, span[y]);
        root[y] = y;
      }
      live[root[y]]++;
    }
    /* buffers whose last reader is in this kernel free when it ends */
    for (int k = n_dying[i]; !disable && k < n_dying[i + 1]; k++) vec_push(&pending, dying[k]);
    if (i + 1 == g->nodes.n || kernel_at(kernel_of, i + 1) != kernel_at(kernel_of, i)) {
      for (int k = 0; k < pending.n; k++) {
        ValueId x = pending.data[k];
        ValueId r = s[x].kind == MEM_ARENA ? root[x] : -1;
        if (r >= 0 && --live[r] == 0) free_bytes(small[r] ? &sa : &a, s[r].offset - lead[r], span[r]);
      }
      pending.n = 0;
    }
  }
  vec_free(&pending);
  free(viewed_in);
  if (kernel_of) {
    out->kernel_of = bc_malloc(sizeof(int) * (size_t)(g->nodes.n ? g->nodes.n : 1));
    memcpy(out->kernel_of, kernel_of, sizeof(int) * (size_t)g->nodes.n);
  }
  out->slots = s;
  out->n_values = nv;
  out->pinned_bytes = pinned;
  out->arena_bytes = place_small(s, nv, root, small, lead, span, kernel_of, a.top, sa.top);
  out->sum_intermediate_bytes = sum;
  out->disabled = disable;
  vec_free(&a.holes);
  vec_free(&sa.holes);
  free(small);
  free(span);
  free(lead);
  free(block_of);
  cone_free(&cone);
  free(live);
  free(root);
  free(dying);
  free(n_dying);
  free(last);
  free(has_buf);
  free(pin);
  return true;
}

void memplan_free(MemPlan *p) {
  free(p->slots);
  free(p->kernel_of);
  memset(p, 0, sizeof(*p));
}

/* ---- printing ------------------------------------------------------------ */

static const char *vname(const Graph *g, ValueId v) {
  const char *n = g->values.data[v].name;
  return n ? n : "?";
}

/* "12.3 MiB" style into buf (>= 32 bytes). */
static const char *human(int64_t b, char *buf) {
  if (b >= (1 << 20)) snprintf(buf, 32, "%.1f MiB", (double)b / (1 << 20));
  else if (b >= (1 << 10)) snprintf(buf, 32, "%.1f KiB", (double)b / (1 << 10));
  else snprintf(buf, 32, "%" PRId64 " B", b);
  return buf;
}

void memplan_print_summary(const MemPlan *p, FILE *f) {
  char h1[32], h2[32], h3[32];
  int64_t x = p->sum_intermediate_bytes, y = p->arena_bytes;
  fprintf(f,
          "memplan: memory reduced from %" PRId64 " to %" PRId64 " bytes (%s -> %s: the arena is %.1f%% of "
          "the %s one buffer per intermediate value would take)%s",
          x, y, human(x, h1), human(y, h2), x > 0 ? 100.0 * (double)y / (double)x : 100.0, h1,
          p->disabled ? " [planning disabled]" : "");
  fprintf(f, "; pinned %" PRId64 " bytes (%s) besides; %d in place, %d views\n", p->pinned_bytes,
          human(p->pinned_bytes, h3), p->n_inplace, p->n_views);
}

static const MemSlot *sort_slots; /* qsort has no context argument in C11 */
static int by_offset(const void *pa, const void *pb) {
  const MemSlot *a = &sort_slots[*(const ValueId *)pa], *b = &sort_slots[*(const ValueId *)pb];
  if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  return *(const ValueId *)pa - *(const ValueId *)pb;
}

/* Value ids of the given kind with a buffer of their own or an alias, sorted
 * by (offset, first, id); caller frees. */
static ValueId *sorted_of_kind(const MemPlan *p, int kind, int *n_out) {
  ValueId *ids = bc_malloc(((size_t)p->n_values + 1) * sizeof(ValueId));
  int n = 0;
  for (int v = 0; v < p->n_values; v++)
    if (p->slots[v].kind == kind) ids[n++] = v;
  sort_slots = p->slots;
  qsort(ids, (size_t)n, sizeof(ValueId), by_offset);
  *n_out = n;
  return ids;
}

void memplan_print(const Graph *g, const MemPlan *p, FILE *f) {
  int n;
  ValueId *ids = sorted_of_kind(p, MEM_ARENA, &n);
  char h1[32], h2[32];
  fprintf(f,
          "# The arena: one block of %" PRId64 " bytes (%s) that the intermediate values of a step share.\n"
          "# offset and bytes: where a value's buffer starts in the arena and its size, in bytes\n"
          "# (offsets 64-byte aligned). live [a, b]: the steps that use the buffer, as positions in\n"
          "# the execution order of the %d nodes (0 to %d): a, the node that writes it; b, the last\n"
          "# node that reads it (inclusive); two values may share bytes only when these ranges do not\n"
          "# overlap. \"in place of\" x: written over x's buffer as x dies; \"view of\" x: a reshape\n"
          "# sharing x's buffer.\n"
          "# Not listed: pinned values, %" PRId64 " bytes (%s) in a block of their own, each in its own\n"
          "# region for the whole run: inputs, parameters, optimizer states, parameter gradients,\n"
          "# outputs, the loss and the targets of assigns (they are read or kept outside the step).\n"
          "# Nor values fused into a kernel, which need no buffer.\n"
          "#   offset      bytes  live         value\n",
          p->arena_bytes, human(p->arena_bytes, h1), g->nodes.n, g->nodes.n - 1, p->pinned_bytes,
          human(p->pinned_bytes, h2));
  for (int k = 0; k < n; k++) {
    const MemSlot *s = &p->slots[ids[k]];
    char live[48];
    snprintf(live, sizeof live, "[%d, %d]", (int)s->first, (int)s->last);
    fprintf(f, "%10" PRId64 " %10" PRId64 "  %-12s %s", s->offset, s->bytes, live, vname(g, ids[k]));
    if (s->alias_of >= 0) {
      NodeId nd = g->values.data[ids[k]].node;
      bool view = nd >= 0 && view_offset(g, &g->nodes.data[nd]) >= 0;
      fprintf(f, "  (%s %s)", view ? "view of" : "in place of", vname(g, s->alias_of));
    }
    fputc('\n', f);
  }
  free(ids);
  memplan_print_summary(p, f);
}

/* ---- the checker: recomputes everything from the graph and the kinds ----- */

/* The checker's own live ranges, computed forward (the planner propagates
 * backward): a node whose output has a buffer is a kernel; it reads its
 * buffered inputs, and for each fused input whatever that one is computed
 * from, transitively. last[v] = the last kernel reading v, else its
 * producer. `seen` stamps values per kernel. */
static void mark_reads(const Graph *g, const bool *has_buf, ValueId v, NodeId at, int *seen, NodeId *last) {
  if (seen[v] == at + 1) return;
  seen[v] = at + 1;
  NodeId n = g->values.data[v].node;
  if (has_buf[v] || n < 0) {
    if (last[v] < at) last[v] = at;
    return;
  }
  const Node *nd = &g->nodes.data[n];
  for (int k = 0; k < nd->n_in; k++) mark_reads(g, has_buf, nd->in[k], at, seen, last);
}

static NodeId *kernel_reads(const Graph *g, const bool *has_buf) {
  NodeId *last = bc_malloc(((size_t)g->values.n + 1) * sizeof(NodeId));
  int *seen = bc_calloc((size_t)g->values.n + 1, sizeof(int));
  for (int v = 0; v < g->values.n; v++) last[v] = g->values.data[v].node;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (!has_buf[n->out]) continue;
    for (int k = 0; k < n->n_in; k++) mark_reads(g, has_buf, n->in[k], i, seen, last);
  }
  free(seen);
  return last;
}

typedef struct {
  const Graph *g;
  Diag *d;
  bool ok;
} Check;

#define FAIL(c, v, ...) \
  do { \
    (c)->ok = false; \
    diag_error((c)->d, (c)->g->values.data[v].loc, "internal: memory plan: " __VA_ARGS__); \
  } while (0)

/* Whether node n is an attention backward whose output lies over its
 * inputs x = q, k, v: they are one after another in the arena from the
 * output's offset and as many bytes in all (x < 0: any of them). */
static bool writes_over(const MemPlan *p, const Node *n, ValueId x) {
  if (!n || n->op != OP_ATTENTION_GRAD || p->slots[n->out].kind != MEM_ARENA) return false;
  int64_t at = p->slots[n->out].offset;
  bool input = x < 0;
  for (int k = 0; k < 3; k++) {
    const MemSlot *sk = &p->slots[n->in[k]];
    if (sk->kind != MEM_ARENA || sk->offset != at) return false;
    at += sk->bytes;
    input |= n->in[k] == x;
  }
  return input && at == p->slots[n->out].offset + p->slots[n->out].bytes;
}

static const Node *node_of(const Graph *g, ValueId v) {
  NodeId n = g->values.data[v].node;
  return n >= 0 ? &g->nodes.data[n] : NULL;
}

/* Bounds, alignment, size and alias rules of one slot. */
static void check_slot(Check *c, Cone *cone, const MemPlan *p, ValueId v, bool must_pin) {
  const Graph *g = c->g;
  const MemSlot *s = &p->slots[v];
  const Value *x = &g->values.data[v];
  const char *nm = vname(g, v);
  bool pinned_view = must_pin && reshape_of_intermediate(g, v);
  if (must_pin && (s->kind != MEM_PINNED || (s->alias_of >= 0) != pinned_view))
    FAIL(c, v, "'%s' must be pinned with a region of its own%s", nm, pinned_view ? ", its source's" : "");
  if (x->kind != VALUE_NODE && s->kind != MEM_PINNED)
    FAIL(c, v, "'%s' is not produced by a node yet not pinned", nm);
  if (s->kind == MEM_NONE) return;
  if (s->kind != MEM_PINNED && s->kind != MEM_ARENA) {
    FAIL(c, v, "'%s' has unknown kind %d", nm, s->kind);
    return;
  }
  int64_t size = s->kind == MEM_PINNED ? p->pinned_bytes : p->arena_bytes;
  int64_t need = shape_numel(&x->shape) * (int64_t)dtype_size(x->dtype);
  if (s->bytes != need) FAIL(c, v, "'%s' has %" PRId64 " bytes, needs %" PRId64, nm, s->bytes, need);
  if (s->offset < 0 || s->offset % ALIGN != 0 || s->offset + need > size)
    FAIL(c, v, "'%s' at %" PRId64 " (+%" PRId64 ") is unaligned or outside its %" PRId64 "-byte block", nm,
         s->offset, need, size);
  if (s->alias_of < 0) return;
  ValueId src = s->alias_of;
  const Node *n = x->node >= 0 ? &g->nodes.data[x->node] : NULL;
  bool is_input = false;
  for (int k = 0; n && k < n->n_in; k++) is_input |= n->in[k] == src;
  if (src >= p->n_values || !is_input) {
    FAIL(c, v, "'%s' aliases a value its node does not read", nm);
    return;
  }
  const MemSlot *t = &p->slots[src];
  int64_t voff = n->op == OP_SLICE ? view_offset(g, n) : 0; /* a slice of rows starts inside its source */
  bool over_qkv = src == n->in[0] && writes_over(p, n, -1); /* over q, then k and v */
  if (t->kind != s->kind || voff < 0 || t->offset + voff != s->offset || (voff + s->bytes > t->bytes && !over_qkv))
    FAIL(c, v, "'%s' aliases '%s' but not its buffer", nm, vname(g, src));
  const Value *sv = &g->values.data[src];
  bool ok_op = n->op == OP_ASSIGN ? src == n->in[0] && s->kind == MEM_PINNED
               : s->kind == MEM_PINNED
                   ? n->op == OP_RESHAPE && sv->kind != VALUE_PARAM && sv->kind != VALUE_STATE && (!must_pin || pinned_view)
                   : (inplace_op(n->op) && cone_pointwise(cone, n, src)) || (n->op == OP_SLICE && voff >= 0) || over_qkv;
  if (!ok_op)
    FAIL(c, v, "'%s': op '%s' may not reuse the buffer of '%s'", nm, op_info[n->op].name, vname(g, src));
}

static void check_pinned_disjoint(Check *c, const MemPlan *p) {
  int n;
  ValueId *ids = sorted_of_kind(p, MEM_PINNED, &n);
  int64_t end = 0;
  ValueId prev = -1;
  for (int k = 0; k < n; k++) {
    const MemSlot *s = &p->slots[ids[k]];
    if (s->alias_of >= 0 || s->bytes == 0) continue;
    if (prev >= 0 && s->offset < end)
      FAIL(c, ids[k], "pinned '%s' overlaps pinned '%s'", vname(c->g, ids[k]), vname(c->g, prev));
    if (s->offset + s->bytes > end) {
      end = s->offset + s->bytes;
      prev = ids[k];
    }
  }
  free(ids);
}

/* The value v is a view of (a reshape, a slice of rows), through any chain
 * of them (v if none). */
static ValueId view_base(const Graph *g, const MemPlan *p, ValueId v) {
  for (;;) {
    const MemSlot *sv = &p->slots[v];
    NodeId n = g->values.data[v].node;
    int64_t voff = n >= 0 ? view_offset(g, &g->nodes.data[n]) : -1;
    if (sv->alias_of < 0 || voff < 0 || sv->offset != p->slots[sv->alias_of].offset + voff) return v;
    v = sv->alias_of;
  }
}

bool memplan_check(const Graph *g, const MemPlan *p, Diag *d) {
  Check c = {g, d, true};
  if (p->n_values != g->values.n || !p->slots) {
    diag_error(d, SRCLOC_NONE, "internal: memory plan has %d slots for %d values", p->n_values, g->values.n);
    return false;
  }
  int nv = g->values.n;
  bool *must_pin = pinned_set(g);
  bool *has_buf = bc_malloc((size_t)nv + 1);
  for (int v = 0; v < nv; v++) has_buf[v] = p->slots[v].kind != MEM_NONE;
  Cone cone;
  cone_init(&cone, g, has_buf);
  for (int v = 0; v < nv; v++) {
    bool assign_out = g->values.data[v].node >= 0 && g->nodes.data[g->values.data[v].node].op == OP_ASSIGN;
    check_slot(&c, &cone, p, v, must_pin[v] && !assign_out);
  }
  check_pinned_disjoint(&c, p);

  NodeId *last = kernel_reads(g, has_buf);
  int n;
  ValueId *ids = sorted_of_kind(p, MEM_ARENA, &n);
  for (int a = 0; a < n; a++) {
    ValueId u = ids[a];
    const MemSlot *su = &p->slots[u];
    NodeId fu = kernel_at(p->kernel_of, g->values.data[u].node), lu = kernel_at(p->kernel_of, last[u]);
    for (int b = a + 1; b < n && p->slots[ids[b]].offset < su->offset + su->bytes; b++) {
      ValueId v = ids[b];
      const MemSlot *sv = &p->slots[v];
      NodeId fv = kernel_at(p->kernel_of, g->values.data[v].node), lv = kernel_at(p->kernel_of, last[v]);
      if (sv->bytes == 0 || su->bytes == 0 || fu > lv || fv > lu) continue; /* disjoint in time */
      if ((sv->alias_of == u && lu == fv) || (su->alias_of == v && lv == fu)) continue;
      /* the attention backward's output over its q, k and v as they die */
      if ((writes_over(p, node_of(g, v), u) && lu == fv) || (writes_over(p, node_of(g, u), v) && lv == fu))
        continue;
      if (view_base(g, p, u) == view_base(g, p, v)) continue; /* reshape views: read only */
      FAIL(&c, v, "'%s' (live [%d, %d]) overlaps '%s' (live [%d, %d]) in the arena", vname(g, v), (int)fv,
           (int)lv, vname(g, u), (int)fu, (int)lu);
    }
  }
  free(ids);
  free(last);
  cone_free(&cone);
  free(has_buf);
  free(must_pin);
  return c.ok;
}
