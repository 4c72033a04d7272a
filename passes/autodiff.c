/* autodiff.c — reverse-mode differentiation of a whole graph (DESIGN §4.2).
 *
 * Requires: a verified graph whose loss is an f32 value of one element.
 * Produces: backward nodes appended after the forward ones, and Value.grad
 * for every parameter (a zero constant for those the loss does not depend
 * on).
 *
 * How: one forward sweep marks the values that depend on a differentiable
 * (f32) parameter through differentiable inputs; one backward sweep from
 * the loss, seeded with a constant 1, asks grad_rules.c for each node's
 * VJP and sums contributions with add in the order the sweep meets them
 * (deterministic). Gradients flow only along f32 values: integer tensors,
 * conditions, indices, random numbers and constants get none.
 *
 * Not here: the VJP formulas (grad_rules.c), simplification of the result
 * (simplify.c), gradient checkpointing. Backward nodes inherit the forward
 * node's location and live under the scope "<forward value>.grad", in
 * the backward instance of the forward node's block instance (ir.h). */
#include "grad_rules.h"
#include "passes.h"

#include <stdlib.h>
#include <string.h>

static const Value *val(const Graph *g, ValueId v) { return &g->values.data[v]; }

/* Sums contribution c into acc[v] (creating it on first use). */
static void accumulate(Graph *g, ValueId *acc, ValueId v, ValueId c) {
  BC_ASSERT(shape_eq(&val(g, c)->shape, &val(g, v)->shape));
  acc[v] = acc[v] < 0 ? c : graph_binary(g, OP_ADD, acc[v], c);
}

/* The scope of the gradient nodes of value v: "<name>.grad", where an
 * unnamed node value ("enc.0.%12") contributes its scope only, so gradient
 * values read "enc.0.grad.%345". */
static const char *grad_scope(Graph *g, ValueId v) {
  const char *name = val(g, v)->name ? val(g, v)->name : "";
  const char *dot = strrchr(name, '.');
  int len = (int)strlen(name);
  if (name[0] == '%') len = 0;
  else if (dot && dot[1] == '%') len = (int)(dot - name);
  return len ? arena_printf(&g->arena, "%.*s.grad", len, name) : "grad";
}

/* The backward instance of forward block instance b (made on first use,
 * its parent the backward instance of b's parent); -1 stays -1. */
static BlockId backward_block(Graph *g, BlockId *memo, BlockId b) {
  if (b < 0) return -1;
  if (memo[b] < 0) {
    BlockId parent = backward_block(g, memo, g->blocks.data[b].parent);
    BlockInst f = g->blocks.data[b];
    memo[b] = graph_add_block(g, f.path, f.type, f.loc, parent);
    g->blocks.data[memo[b]].forward = b;
    g->blocks.data[memo[b]].repeat = f.repeat;
  }
  return memo[b];
}

bool autodiff_run(Graph *g, Diag *d) {
  if (g->loss < 0) {
    diag_error(d, g->cur_loc, "graph '%s' has no loss to differentiate",
               g->name ? g->name : "?");
    return false;
  }
  {
    const Value *L = val(g, g->loss);
    char buf[96];
    if (L->dtype != DTYPE_F32 || shape_numel(&L->shape) != 1) {
      diag_error(d, L->loc, "the loss '%s' must be one f32 element, not %s %s",
                 L->name ? L->name : "?", dtype_name(L->dtype), shape_str(&L->shape, buf));
      return false;
    }
  }
  const int n_fwd_nodes = g->nodes.n, n_fwd_values = g->values.n;
  SrcLoc saved_loc = g->cur_loc;
  const char *saved_scope = g->cur_scope;
  const BlockId saved_block = g->cur_block;
  const int n_fwd_blocks = g->blocks.n;
  BlockId *bwd = bc_malloc(sizeof(BlockId) * (size_t)(n_fwd_blocks + 1));
  for (int i = 0; i < n_fwd_blocks; i++) bwd[i] = -1;

  /* needs[v]: v depends on an f32 parameter along differentiable edges. */
  bool *needs = bc_calloc((size_t)n_fwd_values, sizeof(bool));
  for (int i = 0; i < g->params.n; i++)
    needs[g->params.data[i]] = val(g, g->params.data[i])->dtype == DTYPE_F32;
  for (int i = 0; i < n_fwd_nodes; i++) {
    const Node *n = &g->nodes.data[i];
    if (val(g, n->out)->dtype != DTYPE_F32 || n->stop_gradient) continue;
    for (int k = 0; k < n->n_in && !needs[n->out]; k++)
      needs[n->out] = needs[n->in[k]] && grad_rule_input_diff(n->op, k, n->n_in);
  }

  ValueId *acc = bc_malloc((size_t)n_fwd_values * sizeof(ValueId));
  for (int v = 0; v < n_fwd_values; v++) acc[v] = -1;
  if (needs[g->loss]) {
    g->cur_loc = val(g, g->loss)->loc;
    g->cur_scope = grad_scope(g, g->loss);
    NodeId ln = val(g, g->loss)->node;
    g->cur_block = ln >= 0 ? backward_block(g, bwd, g->nodes.data[ln].block) : -1;
    acc[g->loss] = graph_const_like(g, 1.0, g->loss);
  }

  VEC(bool) want = {0};
  VEC(ValueId) gin = {0};
  for (int i = n_fwd_nodes - 1; i >= 0; i--) {
    const Node n = g->nodes.data[i]; /* a copy: building appends nodes */
    ValueId gy = acc[n.out];
    if (gy < 0) continue;
    want.n = gin.n = 0;
    vec_reserve(&want, n.n_in);
    vec_reserve(&gin, n.n_in);
    bool any = false;
    for (int k = 0; k < n.n_in; k++) {
      ValueId x = n.in[k];
      want.data[k] = needs[x] && val(g, x)->dtype == DTYPE_F32 && grad_rule_input_diff(n.op, k, n.n_in);
      any |= want.data[k];
    }
    if (!any) continue;
    g->cur_loc = n.loc;
    g->cur_scope = grad_scope(g, n.out);
    g->cur_block = backward_block(g, bwd, n.block);
    grad_rule_apply(g, &n, gy, want.data, gin.data);
    for (int k = 0; k < n.n_in; k++)
      if (want.data[k] && gin.data[k] >= 0) accumulate(g, acc, n.in[k], gin.data[k]);
  }
  vec_free(&want);
  vec_free(&gin);

  /* Every parameter gets a gradient; the ones named here are those the
   * backward pass made, so dumps read "W.grad" (a value shared by several
   * parameters keeps the first name). */
  /* zero gradients below add at most one value per parameter */
  bool *named = bc_calloc((size_t)(g->values.n + g->params.n), sizeof(bool));
  g->cur_block = -1;
  for (int i = 0; i < g->params.n; i++) {
    ValueId p = g->params.data[i];
    ValueId gp = acc[p];
    g->cur_loc = val(g, p)->loc;
    g->cur_scope = grad_scope(g, p);
    if (gp < 0) gp = graph_const(g, 0.0, val(g, p)->dtype, val(g, p)->shape);
    if (gp >= n_fwd_values && !named[gp]) {
      graph_set_name(g, gp, arena_printf(&g->arena, "%s.grad", val(g, p)->name));
      named[gp] = true;
    }
    g->values.data[p].grad = gp;
  }
  free(named);
  free(bwd);
  free(acc);
  free(needs);
  g->cur_loc = saved_loc;
  g->cur_scope = saved_scope;
  g->cur_block = saved_block;
  return true;
}
