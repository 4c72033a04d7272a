/* kernel_guard.c — each kernel's row guard (kernel.h: Kernel.guard, from
 * passes/row_guard.c's facts about values): a LOOP kernel whose every
 * store is a guarded value written one block per work item, a GEMM whose
 * C rows are its A rows, an attention forward's query rows. Then no
 * kernel that computes rows another one zeroed may make an infinity of
 * them (guards_keep_finite). */
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

void kernel_plan_guards(const Graph *g, KernelPlan *p) {
  row_guards(g, &p->guards);
  for (int i = 0; i < p->kernels.n; i++) p->kernels.data[i].guard = kernel_guard(g, &p->kernels.data[i], &p->guards);
  guards_keep_finite(g, p);
}
