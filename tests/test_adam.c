/* test_adam.c — the Adam graph of passes/optim.c against a direct C
 * implementation in double (several steps, a changing learning rate, with
 * and without AdamW's decoupled weight decay and global gradient-norm
 * clipping, parameters the loss ignores), on interp and on cpu; the state
 * and input names it promises; weight decay only on parameters of rank 2+;
 * clipping above the norm changes no bit; convergence on a quadratic. */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"

enum { R = 2, C = 3 };

/* loss = sum(a * (w + b - c)^2) with w (2, 3), b (3) broadcast over rows;
 * `idle` (4) and `idle2` (2, 2) do not reach the loss (with_idle; else
 * their ids are -1). */
typedef struct {
  Graph g;
  ValueId w, b, idle, idle2, a, c;
} Model;

/* The graph stages after optim, as pipeline_run runs them, which a
 * compiled backend expects (it plans kernels of a simplified graph). They
 * renumber values: the model's ids are found again by name. */
static void finish_graph(Model *m) {
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&m->g, NULL, &d) && schedule_run(&m->g, &d) && graph_verify(&m->g, &d));
  if (d.n_errors) diag_print(&d, stderr);
  diag_free(&d);
  m->w = graph_find(&m->g, "w");
  m->b = graph_find(&m->g, "b");
  m->idle = graph_find(&m->g, "idle");
  m->idle2 = graph_find(&m->g, "idle2");
  m->a = graph_find(&m->g, "a");
  m->c = graph_find(&m->g, "c");
}

static void model_build(Model *m, bool with_idle) {
  graph_init(&m->g, "adam");
  Init z = {INIT_ZEROS, 0};
  m->w = graph_add_param(&m->g, "w", DTYPE_F32, shape_of(2, R, C), z, SRCLOC_NONE);
  m->b = graph_add_param(&m->g, "b", DTYPE_F32, shape_of(1, C), z, SRCLOC_NONE);
  m->idle = m->idle2 = -1;
  if (with_idle) {
    m->idle = graph_add_param(&m->g, "idle", DTYPE_F32, shape_of(1, 4), z, SRCLOC_NONE);
    m->idle2 = graph_add_param(&m->g, "idle2", DTYPE_F32, shape_of(2, 2, 2), z, SRCLOC_NONE);
  }
  m->a = graph_add_input(&m->g, "a", DTYPE_F32, shape_of(2, R, C), SRCLOC_NONE);
  m->c = graph_add_input(&m->g, "c", DTYPE_F32, shape_of(2, R, C), SRCLOC_NONE);
  Graph *g = &m->g;
  ValueId r = graph_binary(g, OP_SUB, graph_binary(g, OP_ADD, m->w, m->b), m->c); /* (2, 3) */
  ValueId e = graph_binary(g, OP_MUL, m->a, graph_binary(g, OP_MUL, r, r));
  ValueId flat = graph_reshape(g, e, shape_of(1, R * C));
  g->loss = graph_reduce(g, OP_REDUCE_SUM, flat, 0); /* (1) */
}

/* The reference: one Adam step in double on n elements of a parameter
 * (rank >= 2: `decays`) whose gradient `grad` is already clipped (PyTorch's
 * AdamW: p *= 1 - lr wd, then the Adam step). */
static void adam_ref(double *p, double *m, double *v, const double *grad, int n, double t, double lr,
                     const AdamOptions *o, bool decays) {
  for (int i = 0; i < n; i++) {
    double gi = grad[i];
    m[i] = o->beta1 * m[i] + (1 - o->beta1) * gi;
    v[i] = o->beta2 * v[i] + (1 - o->beta2) * gi * gi;
    double mh = m[i] / (1 - pow(o->beta1, t)), vh = v[i] / (1 - pow(o->beta2, t));
    if (decays) p[i] *= 1 - lr * o->weight_decay;
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

/* |got - want| <= atol + rtol |want| per element. */
static void compare(Exec *e, ValueId v, const double *want, int n, const char *what, int step, double atol,
                    double rtol) {
  double got[16];
  get(e, v, got);
  for (int i = 0; i < n; i++)
    CHECK_MSG(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]), "step %d %s[%d]: %.17g vs %.17g", step,
              what, i, got[i], want[i]);
}

/* Six steps of the Adam graph with options o on backend `be` against
 * adam_ref. atol, rtol: the backend's tolerance (see the callers). Returns
 * the smallest clipping factor the reference applied (1: none). */
static double run_against_reference(const AdamOptions *o, const Backend *be, double atol, double rtol) {
  Model md;
  model_build(&md, true);
  Graph *g = &md.g;
  Diag d;
  diag_init(&d);
  CHECK(autodiff_run(g, &d));
  CHECK(optim_adam_run(g, o, &d));
  CHECK(graph_verify(g, &d));
  if (be != &backend_interp) finish_graph(&md);
  ValueId lr = graph_find(g, "lr"), t = graph_find(g, "adam.t");
  ValueId wm = graph_find(g, "w.adam_m"), wv = graph_find(g, "w.adam_v");
  ValueId bm = graph_find(g, "b.adam_m"), bv = graph_find(g, "b.adam_v");
  CHECK(lr >= 0 && g->values.data[lr].kind == VALUE_INPUT && g->values.data[lr].shape.rank == 0);
  CHECK(t >= 0 && g->values.data[t].kind == VALUE_STATE && g->values.data[t].shape.rank == 0);
  CHECK(wm >= 0 && wv >= 0 && bm >= 0 && bv >= 0);
  CHECK(g->values.data[wm].kind == VALUE_STATE && shape_eq(&g->values.data[wm].shape, &g->values.data[md.w].shape));
  Exec *e = exec_create(be, g, &d);
  CHECK(e != NULL);
  if (!e) {
    diag_print(&d, stderr);
    diag_free(&d);
    graph_free(g);
    return 1;
  }
  CHECK(exec_init_params(e, 3, &d)); /* zeros, then the values below */
  double w[R * C] = {0.5, -1.0, 0.25, 2.0, -0.75, 0.0}, b[C] = {0.1, -0.2, 0.3};
  double idle[4] = {1, -2, 3, -4}, idle2[4] = {0.5, -1.5, 2.5, -0.25};
  double a[R * C] = {1.0, 0.5, 2.0, 1.5, 0.25, 1.0}, c[R * C] = {0.0, 1.0, -1.0, 0.5, 0.5, 2.0};
  double mw[R * C] = {0}, vw[R * C] = {0}, mb[C] = {0}, vb[C] = {0}, mi[4] = {0}, vi[4] = {0};
  double mi2[4] = {0}, vi2[4] = {0};
  put(e, md.w, w);
  put(e, md.b, b);
  put(e, md.idle, idle);
  put(e, md.idle2, idle2);
  put(e, md.a, a);
  put(e, md.c, c);
  double min_scale = 1;
  for (int step = 1; step <= 6; step++) {
    double rate = step <= 3 ? 0.1 : 0.03; /* the task may change lr between steps */
    put(e, lr, &rate);
    RunContext ctx = {1, (uint32_t)step, 0};
    CHECK(exec_run(e, &ctx, &d));
    /* gradients of the loss at the old parameters, by hand */
    double gw[R * C], gb[C] = {0}, gi[4] = {0}, ss = 0;
    for (int i = 0; i < R; i++)
      for (int j = 0; j < C; j++) {
        int k = i * C + j;
        gw[k] = 2 * a[k] * (w[k] + b[j] - c[k]);
        gb[j] += gw[k];
      }
    /* torch.nn.utils.clip_grad_norm_ over every gradient (idle's are 0) */
    for (int k = 0; k < R * C; k++) ss += gw[k] * gw[k];
    for (int j = 0; j < C; j++) ss += gb[j] * gb[j];
    double scale = o->clip > 0 ? fmin(1.0, o->clip / (sqrt(ss) + 1e-6)) : 1.0;
    min_scale = fmin(min_scale, scale);
    for (int k = 0; k < R * C; k++) gw[k] *= scale;
    for (int j = 0; j < C; j++) gb[j] *= scale;
    adam_ref(w, mw, vw, gw, R * C, step, rate, o, true);
    adam_ref(b, mb, vb, gb, C, step, rate, o, false);
    adam_ref(idle, mi, vi, gi, 4, step, rate, o, false);
    adam_ref(idle2, mi2, vi2, gi, 4, step, rate, o, true);
    compare(e, md.w, w, R * C, "w", step, atol, rtol);
    compare(e, md.b, b, C, "b", step, atol, rtol);
    compare(e, md.idle, idle, 4, "idle", step, atol, rtol);
    compare(e, md.idle2, idle2, 4, "idle2", step, atol, rtol);
    compare(e, wm, mw, R * C, "w.adam_m", step, atol, rtol);
    compare(e, wv, vw, R * C, "w.adam_v", step, atol, rtol);
    compare(e, bm, mb, C, "b.adam_m", step, atol, rtol);
    compare(e, bv, vb, C, "b.adam_v", step, atol, rtol);
    double tt = step;
    compare(e, t, &tt, 1, "adam.t", step, 0, 0);
  }
  if (d.n_errors) diag_print(&d, stderr);
  CHECK(d.n_errors == 0);
  diag_free(&d);
  exec_destroy(e);
  graph_free(g);
  return min_scale;
}

/* The interpreter runs in double and the graph's formula differs from
 * adam_ref only in where the scalar factors are applied (and b^t as
 * exp(t ln b)): a few ulps per step. */
#define INTERP_TOL 1e-12, 1e-10
/* cpu in f32 against the double reference over six steps: 1 - b2^t comes
 * from exp in f32 (~6e-5 relative for b2 = 0.999, halved by the sqrt) and
 * enters every step, whose size is ~lr = 0.1, so a parameter that the step
 * brings near 0 (b[0] after step 1: 2e-10) is off by ~7e-7 absolute; m and
 * v carry ~1e-7 relative rounding per step, and the gradients follow the
 * (slightly different) parameters. Measured: at most 2e-6 absolute, 1e-6
 * relative on values of size ~1. 1e-5 leaves a margin of 5 and still fails
 * when a term is dropped or misplaced (a decay of lr wd p is ~2e-3 here,
 * clipping scales the gradient by ~0.2). */
#define CPU_TOL 1e-5, 1e-5

static const AdamOptions adamw = {0.8, 0.99, 1e-6, 0.05, 0};
static const AdamOptions clipped = {0.8, 0.99, 1e-6, 0, 1.0};
static const AdamOptions both = {0.9, 0.999, 1e-8, 0.05, 1.0};

TEST(matches_reference) {
  AdamOptions o;
  adam_options_default(&o);
  CHECK(o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.weight_decay == 0 && o.clip == 0);
  run_against_reference(&o, &backend_interp, INTERP_TOL);
}

TEST(matches_reference_weight_decay) { run_against_reference(&adamw, &backend_interp, INTERP_TOL); }

/* clip 1 is below the gradient's norm (~6 at the first step): the test
 * checks that clipping happened, so it cannot pass by never clipping */
TEST(matches_reference_clip) {
  double s = run_against_reference(&clipped, &backend_interp, INTERP_TOL);
  CHECK_MSG(s < 0.5, "the reference never clipped (smallest factor %g)", s);
}

TEST(matches_reference_weight_decay_and_clip) {
  double s = run_against_reference(&both, &backend_interp, INTERP_TOL);
  CHECK(s < 0.5);
}

TEST(cpu_matches_reference) {
  AdamOptions o;
  adam_options_default(&o);
  run_against_reference(&o, &backend_cpu, CPU_TOL);
  run_against_reference(&adamw, &backend_cpu, CPU_TOL);
  CHECK(run_against_reference(&clipped, &backend_cpu, CPU_TOL) < 0.5);
  CHECK(run_against_reference(&both, &backend_cpu, CPU_TOL) < 0.5);
}

/* Weight decay reaches only parameters of rank >= 2: with a gradient of
 * zero, the rank-1 `idle` keeps its bits and the rank-2 `idle2` shrinks by
 * exactly (1 - lr wd) per step (its Adam step is 0 / (0 + eps) = 0). */
TEST(weight_decay_spares_rank_1) {
  Model md;
  model_build(&md, true);
  Graph *g = &md.g;
  Diag d;
  diag_init(&d);
  AdamOptions o = {0.9, 0.999, 1e-8, 0.25, 0};
  CHECK(autodiff_run(g, &d) && optim_adam_run(g, &o, &d));
  Exec *e = exec_create(&backend_interp, g, &d);
  CHECK(e && exec_init_params(e, 3, &d));
  double idle[4] = {1, -2, 3, -4}, idle2[4] = {0.5, -1.5, 2.5, -0.25}, zeros[R * C] = {0}, rate = 0.5;
  put(e, md.idle, idle);
  put(e, md.idle2, idle2);
  put(e, md.a, zeros);
  put(e, md.c, zeros);
  put(e, graph_find(g, "lr"), &rate);
  for (int step = 1; step <= 2; step++) {
    RunContext ctx = {1, (uint32_t)step, 0};
    CHECK(exec_run(e, &ctx, &d));
  }
  double got[4], got2[4];
  get(e, md.idle, got);
  get(e, md.idle2, got2);
  for (int i = 0; i < 4; i++) {
    CHECK_MSG(got[i] == idle[i], "rank-1 idle[%d] decayed: %g -> %g", i, idle[i], got[i]);
    CHECK_NEAR(got2[i], idle2[i] * (1 - 0.5 * 0.25) * (1 - 0.5 * 0.25), 1e-15, 1e-12);
  }
  diag_free(&d);
  exec_destroy(e);
  graph_free(g);
}

/* The parameters after six steps on backend `be`, as f32 bits. */
static void six_steps(const Backend *be, const AdamOptions *o, float *out) {
  Model md;
  model_build(&md, false);
  Graph *g = &md.g;
  Diag d;
  diag_init(&d);
  CHECK(autodiff_run(g, &d) && optim_adam_run(g, o, &d));
  finish_graph(&md);
  Exec *e = exec_create(be, g, &d);
  CHECK(e && exec_init_params(e, 3, &d));
  double w[R * C] = {0.5, -1.0, 0.25, 2.0, -0.75, 0.0}, b[C] = {0.1, -0.2, 0.3};
  double a[R * C] = {1.0, 0.5, 2.0, 1.5, 0.25, 1.0}, c[R * C] = {0.0, 1.0, -1.0, 0.5, 0.5, 2.0}, rate = 0.1;
  put(e, md.w, w);
  put(e, md.b, b);
  put(e, md.a, a);
  put(e, md.c, c);
  put(e, graph_find(g, "lr"), &rate);
  for (int step = 1; step <= 6; step++) {
    RunContext ctx = {1, (uint32_t)step, 0};
    CHECK(exec_run(e, &ctx, &d));
  }
  CHECK(exec_read(e, md.w, out, DTYPE_F32, &d) && exec_read(e, md.b, out + R * C, DTYPE_F32, &d));
  if (d.n_errors) diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(e);
  graph_free(g);
}

/* Clipping at a bound above the norm scales by exactly 1: the same bits as
 * no clipping, on interp and on cpu (a bound below the norm does differ). */
TEST(clip_above_norm_changes_nothing) {
  const Backend *bes[] = {&backend_interp, &backend_cpu};
  for (int k = 0; k < 2; k++) {
    AdamOptions o;
    adam_options_default(&o);
    float plain[R * C + C], high[R * C + C], low[R * C + C];
    six_steps(bes[k], &o, plain);
    o.clip = 1e6;
    six_steps(bes[k], &o, high);
    o.clip = 1.0;
    six_steps(bes[k], &o, low);
    CHECK_MSG(memcmp(plain, high, sizeof plain) == 0, "%s: clip 1e6 changed the parameters", bes[k]->name);
    CHECK_MSG(memcmp(plain, low, sizeof plain) != 0, "%s: clip 1 changed nothing", bes[k]->name);
  }
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
  model_build(&md, true);
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
  diag_init(&d);
  adam_options_default(&o);
  o.clip = -1;
  CHECK(!optim_adam_run(&md.g, &o, &d));
  CHECK(strstr(diag_first(&d), "clip") != NULL);
  diag_free(&d);
  graph_free(&md.g);
}

TEST_MAIN()
