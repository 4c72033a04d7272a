/* test_vjp.c — every differentiable primitive's gradient against central
 * finite differences, in double on the reference interpreter.
 *
 * Each case builds a tiny graph out = op(params...) with random shapes
 * (broadcasting and size-1 dims included), takes loss = sum(out * W) with
 * random weights W, runs autodiff, and compares every element of every
 * parameter's gradient with (loss(x + eps) - loss(x - eps)) / (2 eps).
 * Elementwise rows are all tested by walking the op table; every other op
 * flagged OPF_DIFF must have an entry in op_cases[], so a new op without a
 * gradient test fails here. Inputs stay away from kinks and ties (relu at
 * 0, max/min with a == b, repeated maxima) where the derivative jumps. */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "runtime/philox.h"
#include "tests/test.h"

/* Tolerance: with eps = 1e-6 in double, truncation error is ~eps^2 |f'''|
 * < 1e-9 on these domains and rounding ~1e-16 |loss| / eps < 1e-8 for
 * losses below 100; a wrong rule is off by O(|gradient|). */
#define FD_EPS 1e-6
#define FD_ATOL 1e-6
#define FD_RTOL 1e-6

/* ---- random numbers (xorshift64*, fixed seed: failures reproduce) ------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }          /* [0, 1) */

/* ---- the harness --------------------------------------------------------- */

typedef enum {
  DOM_ANY,      /* |x| in [0.2, 1.5], either sign: away from 0 */
  DOM_POS,      /* [0.5, 2]: log, sqrt, rsqrt, divisors */
  DOM_GRID_A,   /* 0.2 k + 0.05 */
  DOM_GRID_B,   /* 0.2 k - 0.05: differs from any GRID_A value by >= 0.1 */
  DOM_DISTINCT, /* pairwise >= 0.1 apart: no ties for reduce_max */
} Domain;

typedef struct {
  ValueId id;
  double *val;
  int64_t n;
  bool wrt; /* a parameter whose gradient is checked */
} Slot;

typedef struct {
  Graph g;
  Slot slots[16];
  int n_slots;
  char what[256]; /* case description for failure messages */
} Ctx;

static void ctx_init(Ctx *c, const char *what) {
  memset(c, 0, sizeof(*c));
  graph_init(&c->g, "vjp");
  snprintf(c->what, sizeof c->what, "%s", what);
}

static void ctx_free(Ctx *c) {
  for (int i = 0; i < c->n_slots; i++) free(c->slots[i].val);
  graph_free(&c->g);
}

static void fill(double *x, int64_t n, Domain dom) {
  for (int64_t i = 0; i < n; i++) {
    switch (dom) {
    case DOM_ANY:
      x[i] = (0.2 + 1.3 * rnd_unit()) * (rnd() & 1 ? 1 : -1);
      break;
    case DOM_POS:
      x[i] = 0.5 + 1.5 * rnd_unit();
      break;
    case DOM_GRID_A:
    case DOM_GRID_B:
      x[i] = 0.2 * rnd_int(-7, 7) + (dom == DOM_GRID_A ? 0.05 : -0.05);
      break;
    case DOM_DISTINCT:
      x[i] = 0.1 * (double)i - 0.05 * (double)n + 0.01 * rnd_unit();
      break;
    }
  }
  if (dom == DOM_DISTINCT) /* shuffle so the maxima sit anywhere */
    for (int64_t i = n - 1; i > 0; i--) {
      int64_t j = (int64_t)(rnd() % (uint64_t)(i + 1));
      double t = x[i];
      x[i] = x[j];
      x[j] = t;
    }
}

static Slot *add_slot(Ctx *c, ValueId id, bool wrt) {
  BC_ASSERT(c->n_slots < 16);
  Slot *s = &c->slots[c->n_slots++];
  s->id = id;
  s->n = shape_numel(&c->g.values.data[id].shape);
  s->val = calloc((size_t)s->n, sizeof(double));
  s->wrt = wrt;
  return s;
}

/* A differentiated f32 parameter of shape s with values from `dom`. */
static ValueId param(Ctx *c, Shape s, Domain dom) {
  char name[16];
  snprintf(name, sizeof name, "p%d", c->n_slots);
  Init z = {INIT_ZEROS, 0};
  ValueId v = graph_add_param(&c->g, name, DTYPE_F32, s, z, SRCLOC_NONE);
  fill(add_slot(c, v, true)->val, shape_numel(&s), dom);
  return v;
}

/* A fixed input (indices, conditions) with the given values. */
static ValueId fixed(Ctx *c, DType t, Shape s, const double *vals) {
  char name[16];
  snprintf(name, sizeof name, "in%d", c->n_slots);
  ValueId v = graph_add_input(&c->g, name, t, s, SRCLOC_NONE);
  Slot *sl = add_slot(c, v, false);
  memcpy(sl->val, vals, (size_t)sl->n * sizeof(double));
  return v;
}

static double run_loss(Exec *e, Diag *d) {
  RunContext ctx = {1, 0, 0};
  double L = NAN;
  if (!exec_run(e, &ctx, d) || !exec_read(e, e->graph->loss, &L, DTYPE_F64, d)) return NAN;
  return L;
}

static char *shape_text(const Ctx *c, ValueId v, char *buf) { return shape_str(&c->g.values.data[v].shape, buf); }

/* loss = sum(out * W); autodiff; every parameter gradient vs central
 * differences. Returns the number of mismatches. */
static int check_grads(Ctx *c, ValueId out) {
  Graph *g = &c->g;
  Shape os = g->values.data[out].shape;
  int64_t n_out = shape_numel(&os);
  double *w = malloc((size_t)n_out * sizeof(double));
  for (int64_t i = 0; i < n_out; i++) w[i] = 2 * rnd_unit() - 1;
  ValueId W = fixed(c, DTYPE_F32, os, w);
  free(w);
  ValueId prod = graph_binary(g, OP_MUL, out, W);
  ValueId flat = graph_reshape(g, prod, shape_of(1, (int)n_out));
  g->loss = graph_reduce(g, OP_REDUCE_SUM, flat, 0); /* (1) */

  int bad = 0;
  Diag d;
  diag_init(&d);
  bool ok = autodiff_run(g, &d) && graph_verify(g, &d);
  Exec *e = ok ? exec_create(&backend_interp, g, &d) : NULL;
  if (!e) {
    diag_print(&d, stderr);
    diag_free(&d);
    CHECK_MSG(false, "%s: autodiff or exec failed", c->what);
    return 1;
  }
  for (int i = 0; i < c->n_slots; i++) CHECK(exec_write(e, c->slots[i].id, c->slots[i].val, DTYPE_F64, &d));
  double L0 = run_loss(e, &d);
  CHECK_MSG(isfinite(L0), "%s: loss %g", c->what, L0);
  for (int k = 0; k < c->n_slots; k++) {
    Slot *s = &c->slots[k];
    if (!s->wrt) continue;
    ValueId gid = g->values.data[s->id].grad;
    CHECK_MSG(gid >= 0, "%s: parameter %d has no gradient", c->what, k);
    if (gid < 0) continue;
    double *ad = malloc((size_t)s->n * sizeof(double));
    run_loss(e, &d); /* values read below belong to the unperturbed point */
    CHECK(exec_read(e, gid, ad, DTYPE_F64, &d));
    for (int64_t i = 0; i < s->n; i++) {
      double x0 = s->val[i];
      s->val[i] = x0 + FD_EPS;
      exec_write(e, s->id, s->val, DTYPE_F64, &d);
      double lp = run_loss(e, &d);
      s->val[i] = x0 - FD_EPS;
      exec_write(e, s->id, s->val, DTYPE_F64, &d);
      double lm = run_loss(e, &d);
      s->val[i] = x0;
      exec_write(e, s->id, s->val, DTYPE_F64, &d);
      double fd = (lp - lm) / (2 * FD_EPS);
      if (!(fabs(ad[i] - fd) <= FD_ATOL + FD_RTOL * fabs(fd))) {
        char b[96];
        if (bad < 5)
          fprintf(stderr, "  %s: d loss / d p%d%s [%lld]: autodiff %.12g, finite differences %.12g\n",
                  c->what, k, shape_text(c, s->id, b), (long long)i, ad[i], fd);
        bad++;
      }
    }
    free(ad);
  }
  if (d.n_errors) diag_print(&d, stderr);
  CHECK(d.n_errors == 0);
  CHECK_MSG(bad == 0, "%s: %d gradient elements differ", c->what, bad);
  diag_free(&d);
  exec_destroy(e);
  return bad;
}

/* ---- random shapes -------------------------------------------------------- */

/* rank in [lo, hi], dims in [1, 4] (1 often enough to matter). */
static Shape rnd_shape(int lo, int hi) {
  Shape s = {0};
  s.rank = rnd_int(lo, hi);
  for (int i = 0; i < s.rank; i++) s.dim[i] = rnd_int(1, 4);
  return s;
}

/* A shape that broadcasts to s: some dims set to 1, maybe leading dims dropped. */
static Shape shrink(Shape s) {
  Shape r = s;
  int drop = rnd_int(0, s.rank);
  if (rnd() % 3 != 0) drop = 0; /* mostly same rank */
  r.rank = s.rank - drop;
  for (int i = 0; i < r.rank; i++) {
    r.dim[i] = s.dim[i + drop];
    if (rnd() % 3 == 0) r.dim[i] = 1;
  }
  return r;
}

static const char *desc(char *buf, size_t n, const char *op, const Shape *a, const Shape *b) {
  char s0[96], s1[96] = "";
  snprintf(buf, n, "%s %s%s%s", op, shape_str(a, s0), b ? " " : "", b ? shape_str(b, s1) : "");
  return buf;
}

/* ---- elementwise rows of ops.def ------------------------------------------ */

/* Input k's domain from the row's `dom` letter (graph/ops.def): positive
 * and away-from-zero inputs are positive here (divisors, log); small
 * integers become two grids that never tie, so no difference straddles a
 * kink of max, min or a comparison. */
static Domain ew_domain(Op op, int k) {
  switch (op_info[op].dom[k]) {
  case 'p':
  case 'z': return DOM_POS;
  case 'k': return k == 0 ? DOM_GRID_A : DOM_GRID_B;
  default: return DOM_ANY;
  }
}

TEST(elementwise_rows) {
  for (int op = 0; op < OP_COUNT; op++) {
    unsigned f = op_info[op].flags;
    if (!(f & OPF_ELEMENTWISE)) continue;
    const char *nm = op_info[op].name;
    for (int trial = 0; trial < 10; trial++) {
      Ctx c;
      char buf[160];
      Shape s = rnd_shape(0, 3);
      if (f & OPF_UNARY) {
        ctx_init(&c, desc(buf, sizeof buf, nm, &s, NULL));
        ValueId a = param(&c, s, ew_domain((Op)op, 0));
        check_grads(&c, graph_unary(&c.g, (Op)op, a));
      } else {
        /* operands of different shapes: graph_binary inserts broadcasts,
         * so their VJP (sum back) is exercised too */
        Shape sa = trial == 0 ? s : shrink(s), sb = trial == 1 ? s : shrink(s);
        ctx_init(&c, desc(buf, sizeof buf, nm, &sa, &sb));
        ValueId a = param(&c, sa, ew_domain((Op)op, 0));
        ValueId b = param(&c, sb, ew_domain((Op)op, 1));
        check_grads(&c, graph_binary(&c.g, (Op)op, a, b));
      }
      ctx_free(&c);
    }
  }
}

/* The same value used twice, and a chain: contributions must add up. */
TEST(reuse_and_chain) {
  Ctx c;
  ctx_init(&c, "x*x + exp(x), tanh(x W + b)");
  ValueId x = param(&c, shape_of(2, 3, 4), DOM_ANY);
  ValueId W = param(&c, shape_of(2, 4, 2), DOM_ANY);
  ValueId b = param(&c, shape_of(1, 2), DOM_ANY);
  ValueId sq = graph_binary(&c.g, OP_ADD, graph_binary(&c.g, OP_MUL, x, x), graph_unary(&c.g, OP_EXP, x));
  ValueId h = graph_unary(&c.g, OP_TANH, graph_binary(&c.g, OP_ADD, graph_matmul(&c.g, sq, W, false, false), b));
  check_grads(&c, h);
  ctx_free(&c);
}

/* ---- the other differentiable ops ----------------------------------------- */

static void case_select(Ctx *c) {
  Shape s = rnd_shape(1, 3);
  int64_t n = shape_numel(&s);
  double cond[64];
  for (int64_t i = 0; i < n; i++) cond[i] = (double)rnd_int(-1, 1) * 0.5; /* -0.5, 0, 0.5 */
  ValueId k = fixed(c, DTYPE_F32, s, cond);
  ValueId a = param(c, s, DOM_ANY), b = param(c, shrink(s), DOM_ANY);
  check_grads(c, graph_select(&c->g, k, a, b));
}

static void case_broadcast(Ctx *c) {
  Shape s = rnd_shape(1, 4);
  ValueId x = param(c, shrink(s), DOM_ANY);
  check_grads(c, graph_broadcast(&c->g, x, s));
}

static void case_reshape(Ctx *c) {
  Shape s = rnd_shape(1, 4), t = {0};
  int64_t n = shape_numel(&s);
  /* t: n split into two factors, or flat */
  int64_t f = 1;
  for (int64_t q = 2; q <= n; q++)
    if (n % q == 0 && rnd() % 2) f = q;
  t = f > 1 ? shape_of(3, (int)(n / f), 1, (int)f) : shape_of(1, (int)n);
  ValueId x = param(c, s, DOM_ANY);
  check_grads(c, graph_reshape(&c->g, x, t));
}

static void case_permute(Ctx *c) {
  Shape s = rnd_shape(2, 4);
  for (int i = 0; i < s.rank; i++) s.dim[i] = rnd_int(2, 3); /* distinct strides */
  int perm[BC_MAX_RANK];
  for (int i = 0; i < s.rank; i++) perm[i] = i;
  for (int i = s.rank - 1; i > 0; i--) {
    int j = rnd_int(0, i), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  ValueId x = param(c, s, DOM_ANY);
  check_grads(c, graph_permute(&c->g, x, perm));
}

static void case_slice(Ctx *c) {
  Shape s = rnd_shape(1, 3);
  int ax = rnd_int(0, s.rank - 1);
  s.dim[ax] = rnd_int(1, 5);
  int64_t st = rnd_int(0, (int)s.dim[ax] - 1), en = rnd_int((int)st + 1, (int)s.dim[ax]);
  ValueId x = param(c, s, DOM_ANY);
  check_grads(c, graph_slice(&c->g, x, ax, st, en));
}

static void case_concat(Ctx *c) {
  Shape s = rnd_shape(1, 3);
  int ax = rnd_int(0, s.rank - 1), n = rnd_int(1, 3);
  ValueId parts[3];
  for (int i = 0; i < n; i++) {
    Shape p = s;
    p.dim[ax] = rnd_int(1, 3);
    parts[i] = param(c, p, DOM_ANY);
  }
  if (n == 3) parts[2] = parts[0]; /* a part used twice */
  check_grads(c, graph_concat(&c->g, n, parts, ax));
}

static void case_reduce_sum(Ctx *c) {
  Shape s = rnd_shape(1, 4);
  ValueId x = param(c, s, DOM_ANY);
  check_grads(c, graph_reduce(&c->g, OP_REDUCE_SUM, x, rnd_int(0, s.rank - 1)));
}

static void case_reduce_max(Ctx *c) {
  Shape s = rnd_shape(1, 4);
  ValueId x = param(c, s, DOM_DISTINCT);
  check_grads(c, graph_reduce(&c->g, OP_REDUCE_MAX, x, rnd_int(0, s.rank - 1)));
}

/* All four transpose combinations, each with a batch layout drawn from
 * broadcasting pairs (none, one side only, 1 against n, rank mismatch). */
static void case_matmul(Ctx *c) {
  static const int batch[][2][3] = {/* {rank, d0, d1} of a and b */
                                    {{0}, {0}},           {{1, 2}, {0}},       {{0}, {1, 3}},
                                    {{1, 2}, {1, 2}},     {{1, 1}, {1, 3}},    {{2, 2, 1}, {1, 3}},
                                    {{2, 2, 3}, {2, 1, 3}}};
  int which = rnd_int(0, (int)(sizeof batch / sizeof batch[0]) - 1);
  int M = rnd_int(1, 3), K = rnd_int(1, 4), N = rnd_int(1, 3);
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    Shape sa = {0}, sb = {0};
    sa.rank = batch[which][0][0];
    sb.rank = batch[which][1][0];
    for (int i = 0; i < sa.rank; i++) sa.dim[i] = batch[which][0][1 + i];
    for (int i = 0; i < sb.rank; i++) sb.dim[i] = batch[which][1][1 + i];
    sa.dim[sa.rank++] = ta ? K : M;
    sa.dim[sa.rank++] = ta ? M : K;
    sb.dim[sb.rank++] = tb ? N : K;
    sb.dim[sb.rank++] = tb ? K : N;
    Ctx cc;
    char s0[96], s1[96], buf[256];
    snprintf(buf, sizeof buf, "%.60s: matmul %s%s x %s%s", c->what, shape_str(&sa, s0),
             ta ? "^T" : "", shape_str(&sb, s1), tb ? "^T" : "");
    ctx_init(&cc, buf);
    ValueId a = param(&cc, sa, DOM_ANY), b = param(&cc, sb, DOM_ANY);
    check_grads(&cc, graph_matmul(&cc.g, a, b, ta, tb));
    ctx_free(&cc);
  }
}

/* Indices with repeats, so the adjoint must accumulate. */
static void rnd_indices(double *ix, int64_t n, int rows) {
  for (int64_t i = 0; i < n; i++) ix[i] = rnd_int(0, rows - 1);
  if (n >= 2) ix[n - 1] = ix[0];
}

static void case_gather(Ctx *c) {
  int rows = rnd_int(1, 5);
  Shape t = rnd_shape(0, 2), is = rnd_shape(1, 2);
  for (int i = t.rank; i > 0; i--) t.dim[i] = t.dim[i - 1];
  t.dim[0] = rows;
  t.rank++;
  double ix[64];
  rnd_indices(ix, shape_numel(&is), rows);
  ValueId tab = param(c, t, DOM_ANY);
  ValueId idx = fixed(c, DTYPE_I32, is, ix);
  check_grads(c, graph_gather(&c->g, tab, idx));
}

static void case_scatter_add(Ctx *c) {
  int rows = rnd_int(1, 5);
  Shape row = rnd_shape(0, 2), is = rnd_shape(1, 2), out = {0}, us = is;
  out.rank = 1 + row.rank;
  out.dim[0] = rows;
  for (int i = 0; i < row.rank; i++) out.dim[1 + i] = us.dim[us.rank++] = row.dim[i];
  double ix[64];
  rnd_indices(ix, shape_numel(&is), rows);
  ValueId idx = fixed(c, DTYPE_I32, is, ix);
  ValueId upd = param(c, us, DOM_ANY);
  check_grads(c, graph_scatter_add(&c->g, idx, upd, out));
}

/* Self- and cross-attention with 1 or 2 heads, some keys masked, with and
 * without dropout (its mask is fixed for a seed and step, so the loss
 * stays smooth in q, k, v). */
static void case_attention(Ctx *c) {
  int B = rnd_int(1, 2), Tq = rnd_int(1, 4), Tk = rnd_int(1, 4), H = rnd_int(1, 2), F = H * rnd_int(1, 3);
  ValueId q = param(c, shape_of(3, B, Tq, F), DOM_ANY), k = param(c, shape_of(3, B, Tk, F), DOM_ANY);
  ValueId v = param(c, shape_of(3, B, Tk, F), DOM_ANY);
  double vl[2] = {rnd_int(0, Tk + 1), rnd_int(1, Tk)};
  ValueId len = fixed(c, DTYPE_I32, shape_of(1, B), vl);
  Attrs a = {0};
  a.heads = H;
  a.dropout = rnd_int(0, 1) ? 0.3 : 0.0;
  a.key = (uint32_t)rnd();
  ValueId in[4] = {q, k, v, len};
  check_grads(c, graph_op(&c->g, OP_ATTENTION, 4, in, &a, NULL));
}

static const struct {
  Op op;
  void (*fn)(Ctx *c);
  bool own_ctx; /* builds its own graphs (several per trial) */
} op_cases[] = {
    {OP_SELECT, case_select, false},         {OP_BROADCAST, case_broadcast, false},
    {OP_RESHAPE, case_reshape, false},       {OP_PERMUTE, case_permute, false},
    {OP_SLICE, case_slice, false},           {OP_CONCAT, case_concat, false},
    {OP_REDUCE_SUM, case_reduce_sum, false}, {OP_REDUCE_MAX, case_reduce_max, false},
    {OP_MATMUL, case_matmul, true},          {OP_GATHER, case_gather, false},
    {OP_SCATTER_ADD, case_scatter_add, false}, {OP_ATTENTION, case_attention, false},
};
#define N_OP_CASES (int)(sizeof op_cases / sizeof op_cases[0])

TEST(every_diff_op_has_a_case) {
  for (int op = 0; op < OP_COUNT; op++) {
    if (!(op_info[op].flags & OPF_DIFF) || (op_info[op].flags & OPF_ELEMENTWISE)) continue;
    bool found = false;
    for (int i = 0; i < N_OP_CASES; i++) found |= (int)op_cases[i].op == op;
    CHECK_MSG(found, "differentiable op '%s' has no gradient case in test_vjp.c", op_info[op].name);
  }
}

TEST(other_ops) {
  for (int i = 0; i < N_OP_CASES; i++) {
    for (int trial = 0; trial < 16; trial++) {
      Ctx c;
      char buf[64];
      snprintf(buf, sizeof buf, "%s trial %d", op_info[op_cases[i].op].name, trial);
      ctx_init(&c, buf);
      op_cases[i].fn(&c);
      ctx_free(&c);
    }
  }
}

/* Parameters the loss does not reach get a zero gradient; integer and
 * random paths carry none. */
TEST(unreached_and_nondiff) {
  Ctx c;
  ctx_init(&c, "unreached");
  ValueId x = param(&c, shape_of(1, 3), DOM_ANY);
  ValueId unused = param(&c, shape_of(2, 2, 2), DOM_ANY);
  ValueId r = graph_random(&c.g, shape_of(1, 3), 5);
  ValueId keep = graph_binary(&c.g, OP_LT, r, graph_const(&c.g, 0.5, DTYPE_F32, shape_of(1, 3)));
  ValueId cast = graph_cast(&c.g, graph_cast(&c.g, x, DTYPE_I32), DTYPE_F32); /* flat: no grad */
  ValueId y = graph_binary(&c.g, OP_ADD, graph_binary(&c.g, OP_MUL, x, keep), cast);
  check_grads(&c, y);
  ValueId gu = c.g.values.data[unused].grad;
  CHECK(gu >= 0 && c.g.nodes.data[c.g.values.data[gu].node].op == OP_CONSTANT);
  ctx_free(&c);
}

static int count_op(const Graph *g, Op op) {
  int n = 0;
  for (int i = 0; i < g->nodes.n; i++) n += g->nodes.data[i].op == op;
  return n;
}

/* stop_gradient: autodiff treats the node's output as a constant. The
 * shifted log-sum-exp, lse = m + log(sum(exp(x - m))), does not depend on
 * m, so with m cut off its gradient still matches finite differences and
 * the backward has no reduce_max VJP (its tie mask, an eq). Where the
 * result does depend on the cut value, that path's gradient is gone:
 * d/dx of x * stop_gradient(max(x)) is max(x), not max(x) + x at the max. */
TEST(stop_gradient) {
  for (int cut = 0; cut < 2; cut++) {
    Ctx c;
    ctx_init(&c, cut ? "log-sum-exp, max cut off" : "log-sum-exp");
    Graph *g = &c.g;
    ValueId x = param(&c, shape_of(2, 3, 5), DOM_DISTINCT);
    ValueId m = graph_reduce(g, OP_REDUCE_MAX, x, 1);
    g->nodes.data[g->values.data[m].node].stop_gradient = cut;
    ValueId e = graph_unary(g, OP_EXP, graph_binary(g, OP_SUB, x, m));
    ValueId lse = graph_binary(g, OP_ADD, m, graph_unary(g, OP_LOG, graph_reduce(g, OP_REDUCE_SUM, e, 1)));
    int n_fwd = g->nodes.n;
    check_grads(&c, lse);
    int eqs = 0;
    for (int i = n_fwd; i < g->nodes.n; i++) eqs += g->nodes.data[i].op == OP_EQ;
    if (cut) CHECK_EQ_INT(eqs, 0);
    else CHECK(eqs > 0);
    ctx_free(&c);
  }
  Ctx c;
  ctx_init(&c, "x * stop_gradient(max(x))");
  Graph *g = &c.g;
  double xv[4] = {0.5, -1.0, 2.0, 0.25};
  ValueId x = param(&c, shape_of(2, 1, 4), DOM_ANY);
  memcpy(c.slots[c.n_slots - 1].val, xv, sizeof xv);
  ValueId m = graph_reduce(g, OP_REDUCE_MAX, x, 1);
  g->nodes.data[g->values.data[m].node].stop_gradient = true;
  ValueId y = graph_reduce(g, OP_REDUCE_SUM, graph_binary(g, OP_MUL, x, m), 1);
  g->loss = y;
  Diag d;
  diag_init(&d);
  CHECK(autodiff_run(g, &d));
  CHECK_EQ_INT(count_op(g, OP_EQ), 0);
  Exec *ex = exec_create(&backend_interp, g, &d);
  CHECK(ex != NULL);
  if (ex) {
    double gx[4];
    CHECK(exec_write(ex, x, xv, DTYPE_F64, &d));
    run_loss(ex, &d);
    CHECK(exec_read(ex, g->values.data[x].grad, gx, DTYPE_F64, &d));
    for (int i = 0; i < 4; i++) CHECK_MSG(gx[i] == 2.0, "d/dx[%d] = %g, want max(x) = 2", i, gx[i]);
    exec_destroy(ex);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  ctx_free(&c);
}

/* models/lib/nn.yaml's attention as it was written before the fused op:
 * heads split by reshape and permute, scores scaled, masked by select,
 * softmax, dropout as a product with keep_scaled (keep / (1 - p)). */
static ValueId composed_attention(Graph *g, ValueId q, ValueId k, ValueId v, ValueId len, int H,
                                  ValueId keep_scaled) {
  const Shape *qs = &g->values.data[q].shape, *ks = &g->values.data[k].shape;
  int B = (int)qs->dim[0], Tq = (int)qs->dim[1], Tk = (int)ks->dim[1], F = (int)qs->dim[2], d = F / H;
  int perm[4] = {0, 2, 1, 3};
  ValueId qh = graph_permute(g, graph_reshape(g, q, shape_of(4, B, Tq, H, d)), perm);
  ValueId kh = graph_permute(g, graph_reshape(g, k, shape_of(4, B, Tk, H, d)), perm);
  ValueId vh = graph_permute(g, graph_reshape(g, v, shape_of(4, B, Tk, H, d)), perm);
  Shape ws = shape_of(4, B, H, Tq, Tk);
  ValueId scores = graph_binary(g, OP_DIV, graph_matmul(g, qh, kh, false, true),
                                graph_unary(g, OP_SQRT, graph_const(g, d, DTYPE_F32, shape_of(1, 1))));
  ValueId keep = graph_cast(g, graph_binary(g, OP_LT, graph_iota(g, shape_of(1, Tk), 0, DTYPE_I32),
                                            graph_reshape(g, len, shape_of(4, B, 1, 1, 1))),
                            DTYPE_F32);
  ValueId masked = graph_select(g, graph_broadcast(g, keep, ws), scores, graph_const(g, -1e6, DTYPE_F32, ws));
  ValueId m = graph_reduce(g, OP_REDUCE_MAX, masked, 3);
  g->nodes.data[g->values.data[m].node].stop_gradient = true;
  ValueId e = graph_unary(g, OP_EXP, graph_binary(g, OP_SUB, masked, m));
  ValueId w = graph_binary(g, OP_DIV, e, graph_reduce(g, OP_REDUCE_SUM, e, 3));
  ValueId wd = graph_binary(g, OP_MUL, w, keep_scaled);
  ValueId o = graph_permute(g, graph_matmul(g, wd, vh, false, false), perm);
  return graph_reshape(g, o, shape_of(3, B, Tq, F));
}

/* The fused attention op against the composed ops it replaces, in double
 * on the interpreter: the output and d loss / d q, k, v agree to rounding.
 * The composed graph's dropout mask is drawn here from the stream's
 * definition (runtime/attention.h: word ix % 4 of Philox(ix / 4)). */
TEST(attention_matches_composed_ops) {
  enum { B = 2, Tq = 5, Tk = 4, H = 2, F = 6, NW = B * H * Tq * Tk };
  const double p = 0.25;
  double *vals[3], lens[B] = {3, 0}, w[B * Tq * F], got[2][4][B * (Tq + Tk) * F], keep[NW];
  int n_dropped = 0;
  for (int ix = 0; ix < NW; ix++) {
    uint32_t ctr[4] = {(uint32_t)(ix / 4), 0, 99, 3}, key[2] = {5, 0}, word[4];
    philox4x32_10(ctr, key, word);
    double u = (double)(word[ix % 4] >> 8) / 16777216.0;
    keep[ix] = u < p ? 0 : 1 / (1 - p);
    n_dropped += u < p;
  }
  CHECK(n_dropped > 0 && n_dropped < NW);
  Shape shapes[3] = {shape_of(3, B, Tq, F), shape_of(3, B, Tk, F), shape_of(3, B, Tk, F)};
  for (int i = 0; i < 3; i++) {
    int64_t n = shape_numel(&shapes[i]);
    vals[i] = malloc(sizeof(double) * (size_t)n);
    fill(vals[i], n, DOM_ANY);
  }
  for (int i = 0; i < B * Tq * F; i++) w[i] = 2 * rnd_unit() - 1;
  for (int fused = 0; fused < 2; fused++) {
    Graph g;
    graph_init(&g, "attention");
    ValueId in[4];
    for (int i = 0; i < 3; i++) {
      char nm[8];
      snprintf(nm, sizeof nm, "p%d", i);
      in[i] = graph_add_param(&g, nm, DTYPE_F32, shapes[i], (Init){INIT_ZEROS, 0}, SRCLOC_NONE);
    }
    in[3] = graph_add_input(&g, "len", DTYPE_I32, shape_of(1, B), SRCLOC_NONE);
    ValueId W = graph_add_input(&g, "w", DTYPE_F32, shapes[0], SRCLOC_NONE);
    ValueId K = graph_add_input(&g, "keep", DTYPE_F32, shape_of(4, B, H, Tq, Tk), SRCLOC_NONE);
    ValueId out;
    if (fused) {
      Attrs a = {0};
      a.heads = H;
      a.dropout = p;
      a.key = 99;
      out = graph_op(&g, OP_ATTENTION, 4, in, &a, NULL);
    } else {
      out = composed_attention(&g, in[0], in[1], in[2], in[3], H, K);
    }
    vec_push(&g.outputs, out);
    g.loss = graph_reduce(&g, OP_REDUCE_SUM, graph_reshape(&g, graph_binary(&g, OP_MUL, out, W), shape_of(1, B * Tq * F)), 0);
    Diag d;
    diag_init(&d);
    CHECK(autodiff_run(&g, &d));
    Exec *e = exec_create(&backend_interp, &g, &d);
    CHECK(e != NULL);
    if (e) {
      for (int i = 0; i < 3; i++) CHECK(exec_write(e, in[i], vals[i], DTYPE_F64, &d));
      CHECK(exec_write(e, in[3], lens, DTYPE_F64, &d));
      CHECK(exec_write(e, W, w, DTYPE_F64, &d));
      CHECK(exec_write(e, K, keep, DTYPE_F64, &d));
      CHECK(exec_run(e, &(RunContext){.seed = 5, .step = 3}, &d));
      CHECK(exec_read(e, out, got[fused][0], DTYPE_F64, &d));
      for (int i = 0; i < 3; i++) CHECK(exec_read(e, g.values.data[in[i]].grad, got[fused][1 + i], DTYPE_F64, &d));
      exec_destroy(e);
    }
    diag_print(&d, stderr);
    diag_free(&d);
    graph_free(&g);
  }
  static const char *const what[4] = {"output", "d q", "d k", "d v"};
  int bad = 0;
  for (int t = 0; t < 4; t++) {
    int64_t n = t == 0 || t == 1 ? B * Tq * F : B * Tk * F;
    for (int64_t i = 0; i < n; i++) {
      if (fabs(got[0][t][i] - got[1][t][i]) > 1e-9 * (1 + fabs(got[0][t][i])) && bad++ < 5)
        fprintf(stderr, "  %s[%lld]: composed %.15g, fused %.15g\n", what[t], (long long)i, got[0][t][i], got[1][t][i]);
    }
  }
  CHECK_EQ_INT(bad, 0);
  for (int i = 0; i < 3; i++) free(vals[i]);
}

/* Ties in reduce_max are not differentiable; the rule splits the gradient
 * evenly among the maxima (like PyTorch's amax), so it still sums to g. */
TEST(reduce_max_ties) {
  Graph g;
  graph_init(&g, "ties");
  Init z = {INIT_ZEROS, 0};
  ValueId x = graph_add_param(&g, "x", DTYPE_F32, shape_of(2, 2, 3), z, SRCLOC_NONE);
  ValueId m = graph_reduce(&g, OP_REDUCE_MAX, x, 1); /* (2, 1) */
  g.loss = graph_reduce(&g, OP_REDUCE_SUM, graph_reshape(&g, m, shape_of(1, 2)), 0);
  Diag d;
  diag_init(&d);
  CHECK(autodiff_run(&g, &d));
  Exec *e = exec_create(&backend_interp, &g, &d);
  CHECK(e != NULL);
  double xv[6] = {1, 3, 3, 2, 2, 2}, gx[6], want[6] = {0, 0.5, 0.5, 1 / 3.0, 1 / 3.0, 1 / 3.0};
  RunContext ctx = {1, 0, 0};
  CHECK(exec_write(e, x, xv, DTYPE_F64, &d) && exec_run(e, &ctx, &d));
  CHECK(exec_read(e, g.values.data[x].grad, gx, DTYPE_F64, &d));
  for (int i = 0; i < 6; i++) CHECK_NEAR(gx[i], want[i], 1e-15, 0);
  exec_destroy(e);
  diag_free(&d);
  graph_free(&g);
}

TEST(loss_errors) {
  Graph g;
  graph_init(&g, "noloss");
  Diag d;
  diag_init(&d);
  CHECK(!autodiff_run(&g, &d));
  CHECK(strstr(diag_first(&d), "has no loss") != NULL);
  diag_free(&d);
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(1, 2), SRCLOC_NONE);
  g.loss = x;
  diag_init(&d);
  CHECK(!autodiff_run(&g, &d));
  CHECK(strstr(diag_first(&d), "must be one f32 element") != NULL);
  diag_free(&d);
  graph_free(&g);
}

TEST_MAIN()
