/* optim.c — Adam appended to the graph as ordinary ops (DESIGN §4.3), so the
 * whole training step, update included, is one compiled graph.
 *
 * Requires: autodiff (every parameter has Value.grad).
 * Produces: the f32 scalar input "lr"; states "adam.t" (f32 scalar) and
 * "<param>.adam_m", "<param>.adam_v" (zeros); assigns of t, moments and
 * parameters, which backends apply after the step, all located at
 * "<optimizer adam>" in the block instance "adam". Per element, with
 * t' = t + 1 (PyTorch's Adam and AdamW):
 *   g' = s g, s = min(1, clip / (||g||_2 + 1e-6))   (only when clip > 0)
 *   m' = b1 m + (1 - b1) g'
 *   v' = b2 v + (1 - b2) g'^2
 *   p' = p (1 - lr wd) - (lr / (1 - b1^t')) m' / (sqrt(v' / (1 - b2^t')) + eps)
 * which is the passes.h formula with the scalar factors taken out.
 * ||g||_2 is the norm of all trained gradients together (torch's
 * clip_grad_norm_), read after data-parallel training averaged them, so
 * every replica clips the global batch's gradient alike. The decay term
 * (only when wd > 0) is decoupled (AdamW, Loshchilov & Hutter) and applies
 * to parameters of rank 2 and more: weight matrices and embedding tables
 * decay, biases and layer-norm gains and offsets (rank 1) and scalars do
 * not, as Hugging Face's BERT recipe excludes "bias" and "LayerNorm.weight".
 * b^t' is exp(t' ln b): the op set has no pow. With clip 0 and wd 0 no node
 * of either is built: the step is d2l's Adam, bit for bit.
 *
 * Not here: schedules (the task changes the "lr" input between steps). */
#include "passes.h"

#include <math.h>

static const Value *val(const Graph *g, ValueId v) { return &g->values.data[v]; }

void adam_options_default(AdamOptions *o) {
  *o = (AdamOptions){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .clip = 0.0};
}

static ValueId scalar(Graph *g, double x) { return graph_const(g, x, DTYPE_F32, shape_of(0)); }

static ValueId bin(Graph *g, Op op, ValueId a, ValueId b) { return graph_binary(g, op, a, b); }

static bool trained(const Graph *g, ValueId p) { return val(g, p)->dtype == DTYPE_F32; }

/* sum(x^2) of one gradient, as a () value: the squares and their row sums
 * over the last axis in one row kernel, then one sum of the row sums, so no
 * squared copy of a large gradient is stored. The square reads the gradient
 * value itself, never a reshape of it: simplify would fold a reshape of a
 * gradient that is itself a reshape (a bias's) into a read of the value
 * before it, which data-parallel training has not averaged. */
static ValueId sum_squares(Graph *g, ValueId x) {
  const Shape s = val(g, x)->shape;
  ValueId sq = bin(g, OP_MUL, x, x);
  if (s.rank == 0) return sq;
  int64_t cols = s.dim[s.rank - 1], rows = shape_numel(&s) / cols;
  if (s.rank != 2) sq = graph_reshape(g, sq, shape_of(2, rows, cols));
  ValueId r = graph_reduce(g, OP_REDUCE_SUM, sq, 1); /* (rows, 1) */
  if (rows > 1) r = graph_reduce(g, OP_REDUCE_SUM, graph_reshape(g, r, shape_of(2, 1, rows)), 1);
  return graph_reshape(g, r, shape_of(0));
}

/* min(1, clip / (||g||_2 + 1e-6)) over every trained gradient: () */
static ValueId clip_scale(Graph *g, double clip) {
  ValueId total = -1;
  for (int i = 0; i < g->params.n; i++) {
    ValueId p = g->params.data[i];
    if (!trained(g, p)) continue;
    ValueId ss = sum_squares(g, val(g, p)->grad);
    total = total < 0 ? ss : bin(g, OP_ADD, total, ss);
  }
  if (total < 0) return scalar(g, 1.0);
  ValueId norm = bin(g, OP_ADD, graph_unary(g, OP_SQRT, total), scalar(g, 1e-6));
  graph_set_name(g, norm, "adam.grad_norm");
  return bin(g, OP_MIN, bin(g, OP_DIV, scalar(g, clip), norm), scalar(g, 1.0));
}

/* 1 - b^t for the f32 scalar t. */
static ValueId bias_correction(Graph *g, double b, ValueId t) {
  ValueId pw = graph_unary(g, OP_EXP, bin(g, OP_MUL, t, scalar(g, log(b))));
  return bin(g, OP_SUB, scalar(g, 1.0), pw);
}

/* The "lr" input: found (it must be an f32 scalar input) or added. */
static ValueId lr_input(Graph *g, Diag *d) {
  ValueId lr = graph_find(g, "lr");
  if (lr < 0) return graph_add_input(g, "lr", DTYPE_F32, shape_of(0), g->cur_loc);
  const Value *v = val(g, lr);
  if (v->kind != VALUE_INPUT || v->dtype != DTYPE_F32 || shape_numel(&v->shape) != 1) {
    diag_error(d, v->loc, "'lr' is reserved for Adam's learning rate (an f32 scalar input)");
    return -1;
  }
  return lr;
}

bool optim_adam_run(Graph *g, const AdamOptions *o, Diag *d) {
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps >= 0) ||
      !(o->weight_decay >= 0) || !(o->clip >= 0)) {
    diag_error(d, g->cur_loc,
               "Adam needs 0 <= beta1, beta2 < 1 and eps, weight_decay, clip >= 0 (got %g, %g, %g, %g, %g)",
               o->beta1, o->beta2, o->eps, o->weight_decay, o->clip);
    return false;
  }
  for (int i = 0; i < g->params.n; i++) {
    const Value *p = val(g, g->params.data[i]);
    if (p->grad < 0) {
      diag_error(d, p->loc, "Adam: parameter '%s' has no gradient (autodiff must run first)",
                 p->name);
      return false;
    }
  }
  if (graph_find(g, "adam.t") >= 0) {
    diag_error(d, val(g, graph_find(g, "adam.t"))->loc, "Adam was already appended to graph '%s'",
               g->name ? g->name : "?");
    return false;
  }
  if (g->loss < 0) {
    diag_error(d, g->cur_loc, "Adam: graph '%s' has no loss", g->name ? g->name : "?");
    return false;
  }
  SrcLoc saved_loc = g->cur_loc;
  const char *saved_scope = g->cur_scope;
  const BlockId saved_block = g->cur_block;
  /* Every node, state and input made here is the optimizer's, and says so:
   * no YAML line asked for them. */
  const SrcLoc adam_loc = {bc_intern("<optimizer adam>"), 0, 0};
  g->cur_loc = adam_loc;
  ValueId lr = lr_input(g, d);
  if (lr < 0) {
    g->cur_loc = saved_loc;
    return false;
  }
  g->cur_block = graph_add_block(g, "adam", "adam", adam_loc, -1);

  /* Step counter and the per-step scalars shared by every parameter. */
  g->cur_scope = "adam";
  Init zeros = {INIT_ZEROS, 0.0};
  ValueId t = graph_add_state(g, "adam.t", DTYPE_F32, shape_of(0), zeros, g->cur_loc);
  ValueId t1 = bin(g, OP_ADD, t, scalar(g, 1.0));
  graph_assign(g, t, t1);
  ValueId alpha = bin(g, OP_DIV, lr, bias_correction(g, o->beta1, t1)); /* () */
  ValueId c2 = bias_correction(g, o->beta2, t1);                        /* () */
  ValueId scale = -1, keep = -1;
  if (o->clip > 0) {
    g->cur_scope = "adam.clip";
    scale = clip_scale(g, o->clip); /* () */
    g->cur_scope = "adam";
  }
  if (o->weight_decay > 0) /* 1 - lr wd: () */
    keep = bin(g, OP_SUB, scalar(g, 1.0), bin(g, OP_MUL, lr, scalar(g, o->weight_decay)));

  const int n_params = g->params.n; /* states are added below, params are not */
  for (int i = 0; i < n_params; i++) {
    ValueId p = g->params.data[i];
    if (!trained(g, p)) continue; /* integer params are not trained */
    const char *name = val(g, p)->name;
    Shape s = val(g, p)->shape;
    g->cur_scope = arena_printf(&g->arena, "%s.adam", name);
    ValueId m = graph_add_state(g, arena_printf(&g->arena, "%s.adam_m", name), DTYPE_F32, s, zeros,
                                g->cur_loc);
    ValueId v = graph_add_state(g, arena_printf(&g->arena, "%s.adam_v", name), DTYPE_F32, s, zeros,
                                g->cur_loc);
    ValueId gr = val(g, p)->grad;
    if (scale >= 0) gr = bin(g, OP_MUL, gr, scale);
    /* One builder call per statement: C leaves the order of argument
     * evaluation open, and node order must not depend on the compiler. */
    ValueId m_old = bin(g, OP_MUL, graph_const_like(g, o->beta1, m), m);
    ValueId m_new = bin(g, OP_MUL, graph_const_like(g, 1.0 - o->beta1, gr), gr);
    ValueId m1 = bin(g, OP_ADD, m_old, m_new);
    ValueId v_old = bin(g, OP_MUL, graph_const_like(g, o->beta2, v), v);
    ValueId g2 = bin(g, OP_MUL, gr, gr);
    ValueId v_new = bin(g, OP_MUL, graph_const_like(g, 1.0 - o->beta2, gr), g2);
    ValueId v1 = bin(g, OP_ADD, v_old, v_new);
    ValueId root = graph_unary(g, OP_SQRT, bin(g, OP_DIV, v1, c2));
    ValueId den = bin(g, OP_ADD, root, graph_const_like(g, o->eps, v1));
    ValueId pd = keep >= 0 && s.rank >= 2 ? bin(g, OP_MUL, p, keep) : p;
    ValueId p1 = bin(g, OP_SUB, pd, bin(g, OP_MUL, alpha, bin(g, OP_DIV, m1, den)));
    graph_assign(g, m, m1);
    graph_assign(g, v, v1);
    graph_assign(g, p, p1);
  }
  g->cur_loc = saved_loc;
  g->cur_scope = saved_scope;
  g->cur_block = saved_block;
  return true;
}
