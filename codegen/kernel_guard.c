/* kernel_guard.c — each kernel's row guard (kernel.h: Kernel.guard, from
 * passes/row_guard.c's facts about values): a LOOP kernel whose every
 * store is a guarded value written one block per work item, a GEMM whose
 * C rows are its A rows, an attention forward's query rows. Then no
 * kernel that computes rows another one zeroed may make an infinity of
 * them (guards_keep_finite), and a kernel whose outputs' dead rows no
 * kernel reads need not write them (Kernel.dead_unread). A GEMM's
 * operand rows that a guard's zero fact covers need no scan
 * (Kernel.zero_rows_guard). */
#include "kernel.h"

#include <stdlib.h>

/* Whether KI_STORE view v of LOOP kernel k writes row r of the domain's
 * work items to block r of its value, `row_len` elements each (offset 0,
 * row-major strides). */
static bool stores_by_rows(const Kernel *k, const KView *v, bool row_value, int64_t row_len) {
  const Shape *d = &k->domain;
  if (v->offset != 0 || d->rank == 0 || row_len != (row_value ? 1 : d->dim[d->rank - 1])) return false;
  int64_t want = row_value ? 0 : 1, step = 1;
  for (int a = d->rank - 1; a >= 0; a--) {
    if (v->stride[a] != want && d->dim[a] != 1) return false;
    if (a == d->rank - 1) want = row_value ? 1 : d->dim[a], step = want;
    else want = (step *= d->dim[a]);
  }
  return true;
}

/* Whether value v cuts into guard w's rows of `len` elements each. */
static bool row_len_is(const Graph *g, ValueId v, const RowGuards *rg, int w, int64_t len) {
  return shape_numel(&g->values.data[v].shape) == row_guard_rows(g, &rg->list.data[w]) * len;
}

/* k's row guard (Kernel.guard) from the values' (row_guards). */
static int kernel_guard(const Graph *g, const Kernel *k, const RowGuards *rg) {
  if (k->kind == KERNEL_GEMM) {
    const Node *n = &g->nodes.data[k->first_node];
    int w = rg->guard[g->nodes.data[k->nodes.data[k->nodes.n - 1]].out];
    const Shape *a = &g->values.data[n->in[0]].shape, *b = &g->values.data[n->in[1]].shape;
    bool ok = w >= 0 && !n->a.trans_a && b->rank == 2 &&
              shape_numel(a) / a->dim[a->rank - 1] == row_guard_rows(g, &rg->list.data[w]);
    return ok ? w : -1;
  }
  if (k->kind == KERNEL_ATTENTION) { /* the forward: rows of queries */
    const Node *n = &g->nodes.data[k->first_node];
    int w = rg->guard[n->out];
    return n->op == OP_ATTENTION && w >= 0 && row_len_is(g, n->out, rg, w, g->values.data[n->out].shape.dim[2]) ? w : -1;
  }
  if (k->kind != KERNEL_LOOP || k->col_axis >= 0 || k->domain.rank == 0) return -1;
  int w = -1;
  for (int i = 0; i < k->insts.n; i++) {
    const KInst *in = &k->insts.data[i];
    if (in->kind != KI_STORE) continue;
    ValueId v = k->views.data[in->view].value;
    int gv = rg->guard[v];
    if (gv < 0) return -1;
    /* values under a guard and one refining it: the coarser one's dead
     * rows are dead in both */
    if (w < 0 || row_guard_finer(rg, w, gv)) w = gv;
    else if (!row_guard_finer(rg, gv, w)) return -1;
    int64_t rows = row_guard_rows(g, &rg->list.data[w]);
    if (kernel_work_items(k) != rows ||
        !stores_by_rows(k, &k->views.data[in->view], k->insts.data[in->a].row,
                        shape_numel(&g->values.data[v].shape) / rows))
      return -1;
  }
  return w;
}

/* Whether instruction `in` makes an infinity or NaN of a 0 in operand
 * slot s: log, rsqrt, recip, a denominator, pow's base. */
static bool infinite_at_zero(const KInst *in, int s) {
  if (in->kind == KI_UNARY) return in->op == OP_LOG || in->op == OP_RSQRT || in->op == OP_RECIP;
  return in->kind == KI_BINARY && ((in->op == OP_DIV && s == 1) || (in->op == OP_POW && s == 0));
}

/* The values whose dead rows a guarded kernel writes as zeros: guard per
 * value, -1 for the others. */
static void zeroed_values(const Graph *g, const KernelPlan *p, int *zeroed) {
  for (int v = 0; v < g->values.n; v++) zeroed[v] = -1;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    if (k->guard < 0) continue;
    if (k->kind != KERNEL_LOOP) zeroed[g->nodes.data[k->nodes.data[k->nodes.n - 1]].out] = k->guard;
    for (int j = 0; j < k->insts.n; j++)
      if (k->insts.data[j].kind == KI_STORE) zeroed[k->views.data[k->insts.data[j].view].value] = k->guard;
  }
}

/* A LOOP kernel that computes rows another kernel zeroed (it is not
 * guarded alike) and feeds them, through any arithmetic, into an op that
 * makes an infinity of a 0 would put an infinity where the dense
 * computation has none: the producers of such values are un-guarded (they
 * then compute those rows), until no kernel does. */
static void guards_keep_finite(const Graph *g, KernelPlan *p) {
  int *zeroed = bc_malloc(sizeof(int) * (size_t)(g->values.n ? g->values.n : 1));
  bool changed = true;
  while (changed) {
    changed = false;
    zeroed_values(g, p, zeroed);
    for (int i = 0; i < p->kernels.n; i++) {
      const Kernel *k = &p->kernels.data[i];
      if (k->kind != KERNEL_LOOP) continue;
      bool *taint = bc_calloc((size_t)k->insts.n + 1, sizeof(bool)), bad = false;
      for (int j = 0; j < k->insts.n && !bad; j++) {
        const KInst *in = &k->insts.data[j];
        if (in->kind == KI_LOAD) {
          int z = zeroed[k->views.data[in->view].value];
          taint[j] = z >= 0 && !row_guard_finer(&p->guards, k->guard, z); /* rows it computes, zeroed */
        }
        for (int s = 0; s < kinst_n_operands(in->kind); s++) {
          int a = kinst_operand(in, s);
          if (a < 0 || !taint[a]) continue;
          taint[j] = true;
          bad |= infinite_at_zero(in, s);
        }
      }
      free(taint);
      if (!bad) continue;
      for (int j = 0; j < k->insts.n; j++) /* un-guard the producers of what it loads */
        if (k->insts.data[j].kind == KI_LOAD) {
          int z = zeroed[k->views.data[k->insts.data[j].view].value];
          if (z < 0 || row_guard_finer(&p->guards, k->guard, z)) continue;
          for (int q = 0; q < p->kernels.n; q++) {
            Kernel *w = &p->kernels.data[q];
            if (w->guard != z) continue;
            bool stores = false;
            if (w->kind != KERNEL_LOOP)
              stores = g->nodes.data[w->nodes.data[w->nodes.n - 1]].out == k->views.data[k->insts.data[j].view].value;
            for (int t = 0; t < w->insts.n && !stores; t++)
              stores = w->insts.data[t].kind == KI_STORE &&
                       w->views.data[w->insts.data[t].view].value == k->views.data[k->insts.data[j].view].value;
            if (stores) {
              w->guard = -1;
              changed = true;
            }
          }
        }
    }
  }
  free(zeroed);
}

/* Whether LOOP kernel k's view v reads row r of its value (rows of
 * `row_len` elements) at work item r only, within that row. */
static bool loads_by_rows(const Kernel *k, const KView *v, int64_t row_len) {
  const Shape *d = &k->domain;
  if (d->rank == 0 || k->col_axis >= 0) return false;
  int64_t last = d->dim[d->rank - 1], s = v->stride[d->rank - 1];
  if (v->offset < 0 || s < 0 || v->offset + s * (last - 1) >= row_len) return false;
  int64_t want = row_len; /* the stride item r's axes must have */
  for (int a = d->rank - 2; a >= 0; a--) {
    if (v->stride[a] != want && d->dim[a] != 1) return false;
    want *= d->dim[a];
  }
  return true;
}

/* Whether the dead rows of value v, an output of guarded kernel k, are
 * read by no kernel: it is no output, loss or gradient, not zero-guarded
 * (those hold their zeros, as the reference), and every kernel reading it
 * is a LOOP kernel under the same guard (so guarded in the same steps)
 * reading each row at its own work item. */
static bool dead_rows_unread(const Graph *g, const KernelPlan *p, int ki, ValueId v) {
  const Kernel *k = &p->kernels.data[ki];
  if (g->values.data[v].kind != VALUE_NODE || v == g->loss || p->guards.zero[v] >= 0) return false;
  for (int i = 0; i < g->outputs.n; i++)
    if (g->outputs.data[i] == v) return false;
  for (int i = 0; i < g->params.n; i++)
    if (g->values.data[g->params.data[i]].grad == v) return false;
  int64_t rows = row_guard_rows(g, &p->guards.list.data[k->guard]);
  int64_t row_len = shape_numel(&g->values.data[v].shape) / rows;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *r = &p->kernels.data[i];
    bool reads = false;
    for (int j = 0; j < r->nodes.n && !reads; j++) {
      const Node *n = &g->nodes.data[r->nodes.data[j]];
      for (int s = 0; s < n->n_in; s++) reads |= n->in[s] == v;
    }
    if (!reads || i == ki) continue;
    if (r->kind != KERNEL_LOOP || r->guard != k->guard || kernel_work_items(r) != rows) return false;
    for (int j = 0; j < r->views.n; j++)
      if (r->views.data[j].value == v && !loads_by_rows(r, &r->views.data[j], row_len)) return false;
  }
  return true;
}

/* Kernel.dead_unread and compact_out of each guarded kernel. */
static void kernels_dead_unread(const Graph *g, KernelPlan *p) {
  for (int i = 0; i < p->kernels.n; i++) {
    Kernel *k = &p->kernels.data[i];
    k->dead_unread = k->compact_out = false;
    if (k->guard < 0 || (k->kind != KERNEL_LOOP && k->kind != KERNEL_GEMM)) continue;
    bool unread = true;
    if (k->kind == KERNEL_GEMM)
      unread = dead_rows_unread(g, p, i, g->nodes.data[k->nodes.data[k->nodes.n - 1]].out);
    for (int j = 0; j < k->insts.n && unread; j++)
      if (k->insts.data[j].kind == KI_STORE) unread = dead_rows_unread(g, p, i, k->views.data[k->insts.data[j].view].value);
    k->dead_unread = unread;
    /* its readers read row r at work item r: they can be pointed at C's rows compacted */
    k->compact_out = unread && k->kind == KERNEL_GEMM;
  }
}

/* GEMM k's Kernel.zero_rows_guard: the zero fact of A (C = A B, rows M)
 * or of A or B (C = A^T B, rows K), over as many rows. */
static int zero_rows_guard(const Graph *g, const Kernel *k, const RowGuards *rg) {
  if (k->kind != KERNEL_GEMM) return -1;
  const Node *n = &g->nodes.data[k->first_node];
  const Shape *a = &g->values.data[n->in[0]].shape, *b = &g->values.data[n->in[1]].shape;
  if (a->rank != 2 || b->rank != 2 || (n->a.trans_a && n->a.trans_b)) return -1;
  for (int s = 0; s < (n->a.trans_a ? 2 : 1); s++) {
    int w = rg->zero[n->in[s]];
    if (w >= 0 && a->dim[0] == row_guard_rows(g, &rg->list.data[w])) return w;
  }
  return -1;
}

void kernel_plan_guards(const Graph *g, KernelPlan *p) {
  row_guards(g, &p->guards);
  for (int i = 0; i < p->kernels.n; i++) {
    Kernel *k = &p->kernels.data[i];
    k->guard = kernel_guard(g, k, &p->guards);
    k->zero_rows_guard = zero_rows_guard(g, k, &p->guards);
  }
  guards_keep_finite(g, p);
  kernels_dead_unread(g, p);
}
