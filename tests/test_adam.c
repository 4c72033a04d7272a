/* test_adam.c — the Adam graph of passes/optim.c against a direct C
 * implementation in double (several steps, a changing learning rate, with
 * and without L2 weight decay, a parameter the loss ignores), the state
 * and input names it promises, and convergence on a quadratic. */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"

enum { R = 2, C = 3 };

/* loss = sum(a * (w + b - c)^2) with w (2, 3), b (3) broadcast over rows;
 * `idle` (4) does not reach the loss. */
typedef struct {
  Graph g;
  ValueId w, b, idle, a, c;
} Model;

static void model_build(Model *m) {
  graph_init(&m->g, "adam");
  Init z = {INIT_ZEROS, 0};
  m->w = graph_add_param(&m->g, "w", DTYPE_F32, shape_of(2, R, C), z, SRCLOC_NONE);
  m->b = graph_add_param(&m->g, "b", DTYPE_F32, shape_of(1, C), z, SRCLOC_NONE);
  m->idle = graph_add_param(&m->g, "idle", DTYPE_F32, shape_of(1, 4), z, SRCLOC_NONE);
  m->a = graph_add_input(&m->g, "a", DTYPE_F32, shape_of(2, R, C), SRCLOC_NONE);
  m->c = graph_add_input(&m->g, "c", DTYPE_F32, shape_of(2, R, C), SRCLOC_NONE);
  Graph *g = &m->g;
  ValueId r = graph_binary(g, OP_SUB, graph_binary(g, OP_ADD, m->w, m->b), m->c); /* (2, 3) */
  ValueId e = graph_binary(g, OP_MUL, m->a, graph_binary(g, OP_MUL, r, r));
  ValueId flat = graph_reshape(g, e, shape_of(1, R * C));
  g->loss = graph_reduce(g, OP_REDUCE_SUM, flat, 0); /* (1) */
}

/* The reference: one Adam step in double on n elements. */
static void adam_ref(double *p, double *m, double *v, const double *grad, int n, double t,
                     double lr, const AdamOptions *o) {
  for (int i = 0; i < n; i++) {
    double gi = grad[i] + o->weight_decay * p[i];
    m[i] = o->beta1 * m[i] + (1 - o->beta1) * gi;
    v[i] = o->beta2 * v[i] + (1 - o->beta2) * gi * gi;
    double mh = m[i] / (1 - pow(o->beta1, t)), vh = v[i] / (1 - pow(o->beta2, t));
    p[i] -= lr * mh / (sqrt(vh) + o->eps);
  }
}

static void put(Exec *e, ValueId v, const double *x) {
  Diag d;
  diag_init(&d);
  CHECK(exec_write(e, v, x, DTYPE_F64, &d));
  diag_free(&d);
}

static void get(Exec *e, ValueId v, double *x) {
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, v, x, DTYPE_F64, &d));
  diag_free(&d);
}

static void compare(Exec *e, ValueId v, const double *want, int n, const char *what, int step) {
  double got[16];
  get(e, v, got);
  /* The interpreter runs in double and the graph's formula differs from
   * adam_ref only in where the scalar factors are applied (and b^t as
   * exp(t ln b)): a few ulps per step. */
  for (int i = 0; i < n; i++)
    CHECK_MSG(fabs(got[i] - want[i]) <= 1e-12 + 1e-10 * fabs(want[i]), "step %d %s[%d]: %.17g vs %.17g",
              step, what, i, got[i], want[i]);
}

static void run_against_reference(const AdamOptions *o) {
  Model md;
  model_build(&md);
  Graph *g = &md.g;
  Diag d;
  diag_init(&d);
  CHECK(autodiff_run(g, &d));
  CHECK(optim_adam_run(g, o, &d));
  CHECK(graph_verify(g, &d));
  ValueId lr = graph_find(g, "lr"), t = graph_find(g, "adam.t");
  ValueId wm = graph_find(g, "w.adam_m"), wv = graph_find(g, "w.adam_v");
  ValueId bm = graph_find(g, "b.adam_m"), bv = graph_find(g, "b.adam_v");
  CHECK(lr >= 0 && g->values.data[lr].kind == VALUE_INPUT && g->values.data[lr].shape.rank == 0);
  CHECK(t >= 0 && g->values.data[t].kind == VALUE_STATE && g->values.data[t].shape.rank == 0);
  CHECK(wm >= 0 && wv >= 0 && bm >= 0 && bv >= 0);
  CHECK(g->values.data[wm].kind == VALUE_STATE && shape_eq(&g->values.data[wm].shape, &g->values.data[md.w].shape));
  Exec *e = exec_create(&backend_interp, g, &d);
  CHECK(e != NULL);
  if (!e) {
    diag_print(&d, stderr);
    diag_free(&d);
    graph_free(g);
    return;
  }
  CHECK(exec_init_params(e, 3, &d)); /* zeros, then the values below */
  double w[R * C] = {0.5, -1.0, 0.25, 2.0, -0.75, 0.0}, b[C] = {0.1, -0.2, 0.3};
  double idle[4] = {1, -2, 3, -4};
  double a[R * C] = {1.0, 0.5, 2.0, 1.5, 0.25, 1.0}, c[R * C] = {0.0, 1.0, -1.0, 0.5, 0.5, 2.0};
  double mw[R * C] = {0}, vw[R * C] = {0}, mb[C] = {0}, vb[C] = {0}, mi[4] = {0}, vi[4] = {0};
  put(e, md.w, w);
  put(e, md.b, b);
  put(e, md.idle, idle);
  put(e, md.a, a);
  put(e, md.c, c);
  for (int step = 1; step <= 6; step++) {
    double rate = step <= 3 ? 0.1 : 0.03; /* the task may change lr between steps */
    put(e, lr, &rate);
    RunContext ctx = {1, (uint32_t)step, 0};
    CHECK(exec_run(e, &ctx, &d));
    /* gradients of the loss at the old parameters, by hand */
    double gw[R * C], gb[C] = {0}, gi[4] = {0};
    for (int i = 0; i < R; i++)
      for (int j = 0; j < C; j++) {
        int k = i * C + j;
        gw[k] = 2 * a[k] * (w[k] + b[j] - c[k]);
        gb[j] += gw[k];
      }
    adam_ref(w, mw, vw, gw, R * C, step, rate, o);
    adam_ref(b, mb, vb, gb, C, step, rate, o);
    adam_ref(idle, mi, vi, gi, 4, step, rate, o);
    compare(e, md.w, w, R * C, "w", step);
    compare(e, md.b, b, C, "b", step);
    compare(e, md.idle, idle, 4, "idle", step);
    compare(e, wm, mw, R * C, "w.adam_m", step);
    compare(e, wv, vw, R * C, "w.adam_v", step);
    compare(e, bm, mb, C, "b.adam_m", step);
    compare(e, bv, vb, C, "b.adam_v", step);
    double tt = step;
    compare(e, t, &tt, 1, "adam.t", step);
  }
  if (d.n_errors) diag_print(&d, stderr);
  CHECK(d.n_errors == 0);
  diag_free(&d);
  exec_destroy(e);
  graph_free(g);
}

TEST(matches_reference) {
  AdamOptions o;
  adam_options_default(&o);
  CHECK(o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.weight_decay == 0);
  run_against_reference(&o);
}

TEST(matches_reference_weight_decay) {
  AdamOptions o = {0.8, 0.99, 1e-6, 0.05};
  run_against_reference(&o);
}

/* sum((w - c)^2): Adam walks w to c; a falling learning rate damps the
 * oscillation of amplitude ~lr that constant-rate Adam keeps near a minimum. */
TEST(quadratic_converges) {
  Graph g;
  graph_init(&g, "quad");
  Init z = {INIT_ZEROS, 0};
  ValueId w = graph_add_param(&g, "w", DTYPE_F32, shape_of(1, 5), z, SRCLOC_NONE);
  ValueId cv = graph_add_input(&g, "c", DTYPE_F32, shape_of(1, 5), SRCLOC_NONE);
  ValueId r = graph_binary(&g, OP_SUB, w, cv);
  g.loss = graph_reduce(&g, OP_REDUCE_SUM, graph_binary(&g, OP_MUL, r, r), 0);
  Diag d;
  diag_init(&d);
  AdamOptions o;
  adam_options_default(&o);
  CHECK(autodiff_run(&g, &d) && optim_adam_run(&g, &o, &d));
  Exec *e = exec_create(&backend_interp, &g, &d);
  CHECK(e && exec_init_params(e, 1, &d));
  double target[5] = {1.5, -2.0, 0.3, 0.0, 3.0};
  put(e, cv, target);
  ValueId lr = graph_find(&g, "lr");
  double first = 0, loss = 0;
  for (int step = 1; step <= 1500; step++) {
    double rate = step <= 500 ? 0.05 : step <= 1000 ? 0.005 : 0.0005;
    put(e, lr, &rate);
    RunContext ctx = {1, (uint32_t)step, 0};
    CHECK(exec_run(e, &ctx, &d));
    get(e, g.loss, &loss);
    if (step == 1) first = loss;
  }
  double wv[5];
  get(e, w, wv);
  CHECK(first > 10);
  CHECK(loss < 1e-4);
  for (int i = 0; i < 5; i++) CHECK_NEAR(wv[i], target[i], 5e-3, 0);
  diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(e);
  graph_free(&g);
}

TEST(requires_autodiff) {
  Model md;
  model_build(&md);
  AdamOptions o;
  adam_options_default(&o);
  Diag d;
  diag_init(&d);
  CHECK(!optim_adam_run(&md.g, &o, &d));
  CHECK(strstr(diag_first(&d), "has no gradient") != NULL);
  diag_free(&d);
  diag_init(&d);
  o.beta1 = 1.0;
  CHECK(autodiff_run(&md.g, &d));
  CHECK(!optim_adam_run(&md.g, &o, &d));
  CHECK(strstr(diag_first(&d), "beta1") != NULL);
  diag_free(&d);
  graph_free(&md.g);
}

TEST_MAIN()
