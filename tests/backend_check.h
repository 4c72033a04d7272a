/* backend_check.h — a backend under test (named by a device spec: "cpu",
 * "cuda", "cuda:1") against the reference interpreter, as static functions
 * shared by tests/test_cpu.c and tests/test_gpu.c:
 *  - check_step*: one training step of a BERT graph on interp and on the
 *    backend, then every value the backend keeps (or only the pinned ones:
 *    loss, outputs, gradients, parameters, optimizer state) compared with
 *    rel_err against a documented tolerance;
 *  - check_adam_update: the backend's parameter update is Adam applied to its
 *    own gradient (which check_step compares with interp);
 *  - check_determinism: two Execs, same seed and batches, same bits;
 *  - check_train_curve: losses of a short training run on two backends;
 *  - check_single_ops: every op of graph/ops.def alone in a graph of its own
 *    (BC_NO_FUSE), on odd shapes, with a tolerance per op;
 *  - check_long_chains: a graph of long folded chains (views, index math).
 * Failures name the value, the op that made it and its YAML line, print the
 * error, and go on (CHECK), so one run shows every failure.
 *
 * Not here: which cases run (the test files), gradients against finite
 * differences (test_bert_tiny.c, test_vjp.c). Include after tests/test.h. */
#ifndef BC_TEST_BACKEND_CHECK_H
#define BC_TEST_BACKEND_CHECK_H

#include <time.h>

#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#define CHECK_MODEL BC_SOURCE_DIR "/models/bert.yaml"
/* Each test file uses some of these; unused ones are not a warning. */
#define CHECK_FN static __attribute__((unused))

CHECK_FN double check_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The graph compiled for training with `adam` (NULL: inference), keeping
 * the outputs named (NULL: all; CompileOptions.outputs). */
CHECK_FN bool check_compile_outputs(Graph *g, const char *graph, const Setting *sets, int n_sets,
                                    const AdamOptions *adam, const char *const *outputs) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = CHECK_MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = n_sets;
  o.train = adam != NULL;
  if (adam) o.adam = *adam;
  o.outputs = outputs;
  Diag d;
  diag_init(&d);
  bool ok = pipeline_run(g, &o, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* The graph compiled for training with `adam` (NULL: inference). */
CHECK_FN bool check_compile_adam(Graph *g, const char *graph, const Setting *sets, int n_sets,
                                 const AdamOptions *adam) {
  return check_compile_outputs(g, graph, sets, n_sets, adam, NULL);
}

/* The graph compiled with Adam's defaults (train) or for inference. */
CHECK_FN bool check_compile(Graph *g, const char *graph, const Setting *sets, int n_sets, bool train) {
  AdamOptions a;
  adam_options_default(&a);
  return check_compile_adam(g, graph, sets, n_sets, train ? &a : NULL);
}

/* ||a - b|| / (||b|| + 1e-5 sqrt(n)) over a tensor. The floor covers
 * gradients that are exactly zero in exact arithmetic (the key bias:
 * softmax ignores a per-query constant), where f32 leaves ~1e-9 of rounding
 * noise per element and double ~1e-17. NaN anywhere gives NaN. */
CHECK_FN double rel_err(const double *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num) / (sqrt(den) + 1e-5 * sqrt((double)n));
}

/* An Exec for `spec` with parameters drawn from `seed`; NULL (and a failed
 * CHECK naming the spec and the reason) when it cannot be made. */
CHECK_FN Exec *check_make(const char *spec, const Graph *g, uint64_t seed) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create_spec(spec, g, &d);
  if (!e) {
    fprintf(stderr, "  cannot prepare graph '%s' on %s:\n", g->name, spec);
    diag_print(&d, stderr);
  }
  CHECK(e != NULL);
  if (e) CHECK(exec_init_params(e, seed, &d));
  diag_free(&d);
  return e;
}

/* Sets (value "1") or clears an environment switch; returns the old state. */
CHECK_FN bool check_setenv(const char *name, bool on) {
  bool had = getenv(name) != NULL;
  if (on) setenv(name, "1", 1);
  else unsetenv(name);
  return had;
}

/* ---- comparing the values of two Execs of one graph ---- */

typedef enum {
  CMP_KEPT,   /* every value the backend can read (with BC_NO_MEMPLAN: every kernel output) */
  CMP_PINNED, /* values with a region of their own for the whole step (passes/memplan.h):
               * inputs, params, states, gradients, outputs, the loss; with the memory
               * plan on, other readable values may have been overwritten by later ones */
} CompareSet;

typedef struct {
  int n_checked, n_failed;
  double worst;
  const char *worst_name;
  double loss_dev, loss_ref;
} StepResult;

CHECK_FN bool check_is_pinned(const Graph *g, ValueId v) {
  const Value *x = &g->values.data[v];
  if (x->kind != VALUE_NODE || v == g->loss) return true;
  for (int i = 0; i < g->params.n; i++)
    if (g->values.data[g->params.data[i]].grad == v) return true;
  for (int i = 0; i < g->outputs.n; i++)
    if (g->outputs.data[i] == v) return true;
  return false;
}

/* "op add at models/lib/x.yaml:12" for a node's value; "param" etc. else. */
CHECK_FN void check_describe(const Graph *g, ValueId v, char *buf, size_t n) {
  const Value *x = &g->values.data[v];
  static const char *const kinds[] = {"node", "input", "param", "state"};
  if (x->node < 0) {
    snprintf(buf, n, "%s", kinds[x->kind]);
    return;
  }
  const Node *nd = &g->nodes.data[x->node];
  if (x->loc.file) snprintf(buf, n, "op %s at %s:%d", op_info[nd->op].name, x->loc.file, x->loc.line);
  else snprintf(buf, n, "op %s", op_info[nd->op].name);
}

/* Values that are zero in exact arithmetic (interp's RMS below 1e-12, which
 * is double rounding noise), such as the unfused gradient of log-softmax's
 * max over a 20256-word row, carry only f32 rounding noise on a compiled
 * backend, and rel_err's floor (1e-5 sqrt(n)) cannot tell how large that
 * noise may be: it is ~eps times the sum of the terms' magnitudes. Where
 * check_zero_rms > 0, such a value passes when its RMS is at most
 * check_zero_rms. Off (0) by default; test_cpu.c keeps it off, test_gpu.c
 * sets 1e-5 (measured noise RMS: ~1e-7 with the C kernel evaluator's
 * sequential sums, rel_err 7.6e-3; a wrong kernel gives >= 1e-3). */
static double check_zero_rms;

/* How many differing values are printed per comparison (BC_TEST_VERBOSE=1:
 * all). A wrong kernel makes every later value differ; the first ones in
 * graph order point at it. */
enum { CHECK_MAX_REPORTS = 25 };

/* The live rows of row guard rg after ref's step (row_guard_live on ref's
 * values), malloc'ed. */
CHECK_FN uint8_t *check_guard_live(Exec *ref, const Graph *g, const RowGuard *rg) {
  Diag d;
  diag_init(&d);
  const Value *in = &g->values.data[rg->input];
  void *input = malloc((size_t)shape_numel(&in->shape) * 4);
  CHECK(exec_read(ref, rg->input, input, in->dtype, &d));
  int32_t **rows = calloc((size_t)rg->read_rows.n + 1, sizeof(int32_t *));
  for (int k = 0; k < rg->read_rows.n; k++) {
    rows[k] = malloc((size_t)shape_numel(&g->values.data[rg->read_rows.data[k]].shape) * 4);
    CHECK(exec_read(ref, rg->read_rows.data[k], rows[k], DTYPE_I32, &d));
  }
  uint8_t *live = malloc((size_t)row_guard_rows(g, rg));
  row_guard_live(g, rg, input, (const int32_t *const *)rows, live);
  for (int k = 0; k < rg->read_rows.n; k++) free(rows[k]);
  free(rows);
  free(input);
  diag_print(&d, stderr);
  diag_free(&d);
  return live;
}

/* Compares the values of dev with those of ref (which must keep every value:
 * the interpreter, or a backend without the memory plan) after the same
 * step: rel_err <= tol for each. `label` prefixes every message. Adds to r. */
CHECK_FN void check_values(Exec *dev, Exec *ref, const Graph *g, const char *label, CompareSet which,
                         double tol, StepResult *r) {
  Diag d;
  diag_init(&d);
  bool verbose = getenv("BC_TEST_VERBOSE") != NULL;
  int n_reported = 0, n_failed = 0, n_masked = 0;
  /* rows a loss weight of 0 leaves unread (passes/row_guard.c) may hold
   * anything on dev: compared only where the weight is nonzero. Rows that
   * are exactly 0 (gradients) are compared whole. */
  RowGuards rg;
  row_guards(g, &rg);
  uint8_t **live = calloc((size_t)rg.list.n + 1, sizeof(uint8_t *));
  for (int v = 0; v < g->values.n; v++) {
    const Value *val = &g->values.data[v];
    /* an assign's output is its target, which compiled backends update in
     * place and interp at the end of the step: compared as the target */
    bool is_assign = val->node >= 0 && g->nodes.data[val->node].op == OP_ASSIGN;
    /* Adam's intermediates (m / (sqrt(v) + eps)) turn a gradient that is
     * zero in exact arithmetic into +-1 of rounding noise; the moments
     * themselves, check_adam_update and test_adam.c cover the update */
    bool adam_internal = val->kind == VALUE_NODE && val->name &&
                         (strncmp(val->name, "adam.", 5) == 0 || strstr(val->name, ".adam.") != NULL);
    if (is_assign || adam_internal) continue;
    if (which == CMP_PINNED && !check_is_pinned(g, v)) continue;
    int64_t n = shape_numel(&val->shape);
    double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
    Diag q;
    diag_init(&q);
    bool kept = exec_read(dev, v, a, DTYPE_F64, &q);
    if (!kept && which == CMP_PINNED) { /* a pinned value must be readable */
      fprintf(stderr, "  %s: pinned value %s %%%d cannot be read:\n", label, val->name, v);
      diag_print(&q, stderr);
      CHECK(kept);
    }
    diag_free(&q);
    if (kept) {
      CHECK(exec_read(ref, v, b, DTYPE_F64, &d));
      int w = rg.guard[v];
      if (w >= 0 && rg.zero[v] < 0) {
        if (!live[w]) live[w] = check_guard_live(ref, g, &rg.list.data[w]);
        int64_t rows = row_guard_rows(g, &rg.list.data[w]), len = n / rows;
        for (int64_t r = 0; r < rows; r++)
          if (!live[w][r])
            for (int64_t j = r * len; j < (r + 1) * len; j++) a[j] = b[j];
        n_masked++;
      }
      double e = rel_err(a, b, n);
      if (check_zero_rms > 0) {
        double ra = 0, rb = 0;
        for (int64_t j = 0; j < n; j++) ra += a[j] * a[j], rb += b[j] * b[j];
        ra = sqrt(ra / (double)n), rb = sqrt(rb / (double)n);
        if (rb <= 1e-12 && ra <= check_zero_rms) {
          if (verbose) fprintf(stderr, "  %s: %s %%%d is zero in exact arithmetic: RMS %.3g (rel_err %.3g)\n",
                               label, val->name, v, ra, e);
          e = 0;
        }
      }
      if (e > r->worst || (isnan(e) && !isnan(r->worst))) {
        r->worst = e;
        r->worst_name = val->name;
      }
      if (!(e <= tol)) {
        n_failed++;
        if (verbose || n_reported < CHECK_MAX_REPORTS) {
          n_reported++;
          char what[256];
          check_describe(g, v, what, sizeof what);
          int64_t jw = 0; /* the element farthest off */
          for (int64_t j = 1; j < n; j++)
            if (!(fabs(a[j] - b[j]) <= fabs(a[jw] - b[jw]))) jw = j;
          fprintf(stderr,
                  "  %s: %s %%%d (%s) differs: relative error %.3g > %g; worst element [%lld] "
                  "%.7g vs %.7g; first elements %s/interp:",
                  label, val->name, v, what, e, tol, (long long)jw, a[jw], b[jw],
                  dev->backend->name);
          for (int64_t j = 0; j < n && j < 3; j++) fprintf(stderr, " %.6g/%.6g", a[j], b[j]);
          fputc('\n', stderr);
        }
      }
      if (!(e <= tol)) test_failed_++; /* the line above says which and why */
      r->n_checked++;
    }
    free(a);
    free(b);
  }
  if (n_failed > n_reported)
    fprintf(stderr, "  %s: ... and %d more differing values (BC_TEST_VERBOSE=1 lists all)\n", label,
            n_failed - n_reported);
  if (n_masked > 0 && verbose)
    fprintf(stderr, "  %s: %d values compared on the rows their loss weight reads\n", label, n_masked);
  for (int i = 0; i < rg.list.n; i++) free(live[i]);
  free(live);
  row_guards_free(&rg);
  r->n_failed += n_failed;
  diag_print(&d, stderr);
  diag_free(&d);
}

/* ---- one training step against interp ---- */

/* A graph and its interpreter run: one step on the batch of bert_batch_fill
 * seed 17 with lr 0 (parameters keep their values, so they are compared as
 * inputs; with lr > 0 an exactly-zero gradient, the key bias, makes Adam
 * step by lr * sign(rounding noise); check_adam_update covers the update). */
typedef struct {
  Graph g;
  Exec *ref;
  bool ok;
} RefStep;

static const RunContext check_step_ctx = {9, 2, 0};

CHECK_FN bool ref_step_init(RefStep *s, const char *graph, const Setting *sets, int n_sets) {
  memset(s, 0, sizeof *s);
  if (!check_compile(&s->g, graph, sets, n_sets, true)) {
    CHECK(0);
    return false;
  }
  s->ref = check_make("interp", &s->g, 5);
  if (!s->ref) {
    graph_free(&s->g);
    return false;
  }
  bert_batch_fill(&s->ref, 1, &s->g, 17, 0.0);
  Diag d;
  diag_init(&d);
  CHECK(exec_run(s->ref, &check_step_ctx, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  s->ok = true;
  return true;
}

CHECK_FN void ref_step_free(RefStep *s) {
  if (!s->ok) return;
  exec_destroy(s->ref);
  graph_free(&s->g);
  s->ok = false;
}

/* Runs s's step on `spec` (prepared under the current environment:
 * BC_NO_FUSE, BC_NO_MEMPLAN) and compares `which` values with interp at
 * relative tolerance tol, and the loss at 1e-5 + 1e-4 relative. Prints one
 * summary line; fills *r (zeroed first). */
CHECK_FN void check_step_against(RefStep *s, const char *spec, const char *label, CompareSet which,
                               double tol, StepResult *r) {
  memset(r, 0, sizeof *r);
  r->worst_name = "";
  r->loss_dev = r->loss_ref = NAN;
  if (!s->ok) return;
  Exec *dev = check_make(spec, &s->g, 5);
  if (!dev) {
    r->n_failed++;
    return;
  }
  bert_batch_fill(&dev, 1, &s->g, 17, 0.0);
  Diag d;
  diag_init(&d);
  bool ran = exec_run(dev, &check_step_ctx, &d);
  CHECK(ran);
  diag_print(&d, stderr);
  diag_free(&d);
  diag_init(&d);
  if (ran) {
    check_values(dev, s->ref, &s->g, label, which, tol, r);
    fprintf(stderr, "  %s: %d values compared, worst relative error %.3g (%s)\n", label, r->n_checked,
            r->worst, r->worst_name);
    CHECK(exec_read(s->ref, s->g.loss, &r->loss_ref, DTYPE_F64, &d));
    CHECK(exec_read(dev, s->g.loss, &r->loss_dev, DTYPE_F64, &d));
    CHECK_NEAR(r->loss_dev, r->loss_ref, 1e-5, 1e-4);
    if (!(fabs(r->loss_dev - r->loss_ref) <= 1e-5 + 1e-4 * fabs(r->loss_ref))) r->n_failed++;
  } else {
    r->n_failed++;
  }
  diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(dev);
}

/* One step of `graph` on interp and on `spec` (prepared with BC_NO_MEMPLAN,
 * so every kernel output keeps its own buffer and can be read after the
 * step), every value `spec` keeps compared at tol. Returns the number of
 * values compared in *n_values_checked (may be NULL). */
CHECK_FN void check_step(const char *spec, const char *graph, const Setting *sets, int n_sets, double tol,
                       int *n_values_checked) {
  RefStep s;
  if (!ref_step_init(&s, graph, sets, n_sets)) return;
  bool had = check_setenv("BC_NO_MEMPLAN", true);
  StepResult r;
  check_step_against(&s, spec, graph, CMP_KEPT, tol, &r);
  if (!had) unsetenv("BC_NO_MEMPLAN");
  if (n_values_checked) *n_values_checked = r.n_checked;
  ref_step_free(&s);
}

/* ---- losses and parameters of a few training steps ---- */

/* Losses of `steps` steps of g on `spec` (batches bert_batch_fill(100 + s),
 * lr 0.01, seed 3) into out[0..steps), then every parameter after the
 * updates, up to n_out numbers in all. */
CHECK_FN void check_run_steps(const char *spec, const Graph *g, int steps, double *out, int n_out) {
  Exec *e = check_make(spec, g, 3);
  if (!e) return;
  Diag d;
  diag_init(&d);
  int k = 0;
  for (int s = 0; s < steps; s++) {
    bert_batch_fill(&e, 1, g, 100 + (uint32_t)s, 0.01);
    RunContext ctx = {3, (uint32_t)s, 0};
    CHECK(exec_run(e, &ctx, &d));
    double l;
    CHECK(exec_read(e, g->loss, &l, DTYPE_F64, &d));
    if (k < n_out) out[k++] = l;
  }
  for (int i = 0; i < g->params.n && k < n_out; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    int64_t n = shape_numel(&v->shape);
    double *buf = malloc(sizeof(double) * (size_t)n);
    CHECK(exec_read(e, g->params.data[i], buf, DTYPE_F64, &d));
    for (int64_t j = 0; j < n && k < n_out; j++) out[k++] = buf[j];
    free(buf);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(e);
}

/* ---- the parameter update ---- */

/* One step with lr > 0 on `spec` under the current environment, then every
 * parameter p', moment m', v' checked against Adam (passes/optim.c, with
 * the graph's options `o`: NULL = the defaults) applied in double to the
 * backend's own p, m, v before the step and its gradient g:
 *   g' = s g, s = min(1, clip / (||g|| + 1e-6)) over all gradients (clip > 0),
 *   m' = b1 m + (1-b1) g',  v' = b2 v + (1-b2) g'^2,
 *   p' = p (1 - lr wd [rank >= 2]) - lr/(1-b1^t) m' / (sqrt(v'/(1-b2^t)) + eps)
 * at t = 1 and again at t = 2 (the second step sees nonzero moments).
 * Tolerance per element, from f32 rounding (6e-8 per operation) with a
 * margin of ~5: m' and v' within 1e-6 of the sum of their terms' magnitudes
 * (b1 m and (1-b1) g cancel, so relative to m' itself the error can be
 * large); the step within 1e-4 of itself (1 - b2^t is computed in f32 from
 * exp: 1 - 0.999 keeps only ~4 significant digits, ~6e-5 relative, halved
 * by the sqrt) plus what m' may be off by; p' within 2e-6 of |p'|. With
 * clipping, s comes from an f32 sum of squares over every gradient element
 * (row sums, then sums of those: ~1e-6 relative for the ~3M elements of the
 * reference model), so the g' terms of m' and v' get 1e-5 and 2e-5 of
 * themselves more. Whether g is right is check_step's business. Returns the
 * number of elements checked, -1 when some were wrong. */
CHECK_FN int64_t check_adam_update(const char *spec, const Graph *g, const char *label, const AdamOptions *o) {
  AdamOptions ao;
  adam_options_default(&ao);
  if (o) ao = *o;
  const double b1 = ao.beta1, b2 = ao.beta2, eps = ao.eps, lr = 0.01, wd = ao.weight_decay;
  Exec *e = check_make(spec, g, 5);
  if (!e) return 0;
  Diag d;
  diag_init(&d);
  int np = g->params.n;
  double **p = calloc((size_t)np, sizeof(double *)), **m = calloc((size_t)np, sizeof(double *)),
         **v = calloc((size_t)np, sizeof(double *));
  ValueId *mid = calloc((size_t)np, sizeof(ValueId)), *vid = calloc((size_t)np, sizeof(ValueId));
  int64_t n_checked = 0, n_bad = 0;
  for (int i = 0; i < np; i++) {
    const Value *pv = &g->values.data[g->params.data[i]];
    int64_t n = shape_numel(&pv->shape);
    char name[512];
    snprintf(name, sizeof name, "%s.adam_m", pv->name);
    mid[i] = graph_find(g, name);
    snprintf(name, sizeof name, "%s.adam_v", pv->name);
    vid[i] = graph_find(g, name);
    CHECK_MSG(mid[i] >= 0 && vid[i] >= 0, "no Adam state for %s", pv->name);
    p[i] = malloc(sizeof(double) * (size_t)n);
    m[i] = malloc(sizeof(double) * (size_t)n);
    v[i] = malloc(sizeof(double) * (size_t)n);
  }
  for (int t = 1; t <= 2; t++) {
    for (int i = 0; i < np; i++) {
      if (mid[i] < 0 || vid[i] < 0) continue;
      CHECK(exec_read(e, g->params.data[i], p[i], DTYPE_F64, &d));
      CHECK(exec_read(e, mid[i], m[i], DTYPE_F64, &d));
      CHECK(exec_read(e, vid[i], v[i], DTYPE_F64, &d));
    }
    bert_batch_fill(&e, 1, g, 40 + (uint32_t)t, lr);
    RunContext ctx = {9, (uint32_t)t, 0};
    if (!exec_run(e, &ctx, &d)) {
      CHECK(0);
      break;
    }
    double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t), sq = 0, scale = 1, sc_err = 0;
    if (ao.clip > 0) { /* the global norm of the backend's own gradients */
      for (int i = 0; i < np; i++) {
        const Value *pv = &g->values.data[g->params.data[i]];
        if (pv->dtype != DTYPE_F32) continue;
        int64_t n = shape_numel(&pv->shape);
        double *gr = malloc(sizeof(double) * (size_t)n);
        CHECK(exec_read(e, pv->grad, gr, DTYPE_F64, &d));
        for (int64_t j = 0; j < n; j++) sq += gr[j] * gr[j];
        free(gr);
      }
      scale = fmin(1.0, ao.clip / (sqrt(sq) + 1e-6));
      sc_err = scale < 1 ? 1e-5 : 0;
    }
    for (int i = 0; i < np; i++) {
      if (mid[i] < 0 || vid[i] < 0) continue;
      const Value *pv = &g->values.data[g->params.data[i]];
      int64_t n = shape_numel(&pv->shape);
      double keep = pv->shape.rank >= 2 ? 1 - lr * wd : 1;
      double *gr = malloc(sizeof(double) * (size_t)n), *p2 = malloc(sizeof(double) * (size_t)n),
             *m2 = malloc(sizeof(double) * (size_t)n), *v2 = malloc(sizeof(double) * (size_t)n);
      CHECK(exec_read(e, pv->grad, gr, DTYPE_F64, &d));
      for (int64_t j = 0; j < n; j++) gr[j] *= scale;
      CHECK(exec_read(e, g->params.data[i], p2, DTYPE_F64, &d));
      CHECK(exec_read(e, mid[i], m2, DTYPE_F64, &d));
      CHECK(exec_read(e, vid[i], v2, DTYPE_F64, &d));
      int bad_here = 0;
      for (int64_t j = 0; j < n; j++) {
        double me = b1 * m[i][j] + (1 - b1) * gr[j], ve = b2 * v[i][j] + (1 - b2) * gr[j] * gr[j];
        double em = 1e-6 * (b1 * fabs(m[i][j]) + (1 - b1) * fabs(gr[j])) + sc_err * (1 - b1) * fabs(gr[j]) + 1e-30;
        double ev = 1e-6 * ve + 2 * sc_err * (1 - b2) * gr[j] * gr[j] + 1e-30, den = sqrt(ve / c2) + eps;
        double step = lr / c1 * me / den, pe = p[i][j] * keep - step;
        double ep = 2e-6 * fabs(pe) + 1e-4 * fabs(step) + lr / c1 * em / den + 1e-7 * lr;
        bool ok = fabs(m2[j] - me) <= em && fabs(v2[j] - ve) <= ev && fabs(p2[j] - pe) <= ep;
        if (!ok) {
          if (bad_here++ < 3)
            fprintf(stderr,
                    "  %s: Adam step %d of %s[%lld]: g %.7g; p %.9g -> %.9g (want %.9g), m -> %.7g (want "
                    "%.7g), v -> %.7g (want %.7g)\n",
                    label, t, pv->name, (long long)j, gr[j], p[i][j], p2[j], pe, m2[j], me, v2[j], ve);
          n_bad++;
        }
        n_checked++;
      }
      free(gr);
      free(p2);
      free(m2);
      free(v2);
    }
  }
  CHECK_MSG(n_bad == 0, "%s: %lld of %lld Adam updates wrong", label, (long long)n_bad, (long long)n_checked);
  CHECK_MSG(n_checked > 0, "%s: no parameter checked", label);
  fprintf(stderr, "  %s: %lld parameter elements x 2 steps follow Adam on the backend's own gradient%s\n",
          label, (long long)n_checked / 2, n_bad ? " (NOT all)" : "");
  diag_print(&d, stderr);
  diag_free(&d);
  for (int i = 0; i < np; i++) free(p[i]), free(m[i]), free(v[i]);
  free(p), free(m), free(v), free(mid), free(vid);
  exec_destroy(e);
  return n_bad ? -1 : n_checked;
}

/* ---- determinism ---- */

/* Values whose bits may legitimately differ between two runs of one step on
 * this backend: everything computed from an op the backend documents as
 * non-reproducible (cuda: scatter-add adds with atomics, runtime/cuda.c),
 * through assigns to their targets. NULL-free bool array the caller frees. */
CHECK_FN bool *check_nondeterministic(const Graph *g, const Backend *b) {
  bool *taint = calloc((size_t)g->values.n + 1, sizeof(bool));
  if (strcmp(b->name, "cuda") != 0) return taint;
  for (int i = 0; i < g->nodes.n; i++) { /* nodes are in topological order */
    const Node *n = &g->nodes.data[i];
    bool t = n->op == OP_SCATTER_ADD;
    for (int k = 0; k < n->n_in && !t; k++) t = taint[n->in[k]];
    if (t) taint[n->out] = true;
    if (t && n->op == OP_ASSIGN) taint[n->in[0]] = true; /* the target after the step */
  }
  return taint;
}

/* Two Execs of g on `spec`, same seed, same batches, 3 steps: step 0's
 * pinned values bit-identical (documented non-reproducible ones within
 * rel_err 1e-4: the order of f32 additions changes the last bits, and the
 * backward pass and Adam carry that a little further), and the losses of all
 * 3 steps bit-identical when nothing is non-reproducible, else within 1e-5
 * relative. Returns the number of values compared. */
CHECK_FN int check_determinism(const char *spec, const Graph *g, const char *label) {
  Exec *e[2] = {check_make(spec, g, 21), check_make(spec, g, 21)};
  int n_cmp = 0, n_exact = 0, n_near = 0, n_bad = 0;
  if (!e[0] || !e[1]) {
    exec_destroy(e[0]);
    exec_destroy(e[1]);
    return 0;
  }
  bool *nondet = check_nondeterministic(g, e[0]->backend);
  bool any_nondet = false;
  for (int v = 0; v < g->values.n; v++) any_nondet |= nondet[v];
  Diag d;
  diag_init(&d);
  for (int s = 0; s < 3; s++) {
    for (int k = 0; k < 2; k++) {
      bert_batch_fill(&e[k], 1, g, 60 + (uint32_t)s, 0.01);
      RunContext ctx = {21, (uint32_t)s, 0};
      CHECK(exec_run(e[k], &ctx, &d));
    }
    double l[2] = {NAN, NAN};
    for (int k = 0; k < 2; k++) CHECK(exec_read(e[k], g->loss, &l[k], DTYPE_F64, &d));
    bool same = memcmp(&l[0], &l[1], sizeof(double)) == 0;
    bool near = fabs(l[0] - l[1]) <= 1e-5 * fabs(l[1]);
    if (!(same || (any_nondet && s > 0 && near))) {
      fprintf(stderr, "  %s: step %d losses differ: %.9g vs %.9g\n", label, s, l[0], l[1]);
      test_failed_++;
    }
    if (s > 0) continue;
    for (int v = 0; v < g->values.n; v++) {
      const Value *val = &g->values.data[v];
      if (!check_is_pinned(g, v)) continue;
      int64_t n = shape_numel(&val->shape);
      double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
      if (exec_read(e[0], v, a, DTYPE_F64, &d) && exec_read(e[1], v, b, DTYPE_F64, &d)) {
        n_cmp++;
        if (memcmp(a, b, sizeof(double) * (size_t)n) == 0) {
          n_exact++;
        } else if (nondet[v] && rel_err(a, b, n) <= 1e-4) {
          n_near++;
        } else if (n_bad++ < CHECK_MAX_REPORTS || getenv("BC_TEST_VERBOSE")) {
          int64_t j = 0;
          while (j < n && a[j] == b[j]) j++;
          fprintf(stderr, "  %s: %s %%%d differs between two identical runs%s: relative error %.3g, first at [%lld] %.9g vs %.9g\n",
                  label, val->name, v, nondet[v] ? " (beyond atomics noise)" : "", rel_err(a, b, n),
                  (long long)j, j < n ? a[j] : 0.0, j < n ? b[j] : 0.0);
        }
      }
      free(a);
      free(b);
    }
  }
  CHECK_MSG(n_bad == 0, "%s: %d values not reproducible", label, n_bad);
  CHECK(n_cmp > 0);
  fprintf(stderr, "  %s: %d values after one step: %d bit-identical, %d documented non-reproducible (within 1e-4), %d wrong\n",
          label, n_cmp, n_exact, n_near, n_bad);
  diag_print(&d, stderr);
  diag_free(&d);
  free(nondet);
  exec_destroy(e[0]);
  exec_destroy(e[1]);
  return n_cmp;
}

/* ---- a short training run on two backends ---- */

/* Losses of `steps` training steps of g on `spec` (n_batches batches
 * cycled, lr 0.01, seed 13, dropout as the graph says: Philox gives every
 * backend the same masks) into loss[0..steps). False when the Exec cannot
 * be made. */
CHECK_FN bool check_train_losses(const char *spec, const Graph *g, int steps, int n_batches, double *loss) {
  Exec *e = check_make(spec, g, 13);
  if (!e) return false;
  Diag d;
  diag_init(&d);
  bool ok = true;
  for (int s = 0; s < steps && ok; s++) {
    bert_batch_fill(&e, 1, g, 200 + (uint32_t)(s % n_batches), 0.01);
    RunContext ctx = {13, (uint32_t)s, 0};
    ok = exec_run(e, &ctx, &d) && exec_read(e, g->loss, &loss[s], DTYPE_F64, &d);
    CHECK(ok);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(e);
  return ok;
}

/* ---- folded chains ---- */

/* Graph `chains`: a chain of n pointwise ops on input x (index math, folded
 * into its readers) and one of n permutes of input p (views, folded
 * likewise); outputs the sum of the first and the last permute doubled. */
CHECK_FN void check_long_chains(Graph *g, int n) {
  graph_init(g, "chains");
  ValueId x = graph_add_input(g, "x", DTYPE_F32, shape_of(2, 3, 5), SRCLOC_NONE);
  ValueId v = x;
  for (int i = 0; i < n; i++) v = graph_unary(g, i % 2 ? OP_EXP : OP_NEG, v);
  vec_push(&g->outputs, graph_reduce(g, OP_REDUCE_SUM, v, 1));
  ValueId p = graph_add_input(g, "p", DTYPE_F32, shape_of(2, 4, 4), SRCLOC_NONE);
  static const int swap[2] = {1, 0};
  for (int i = 0; i < n; i++) p = graph_permute(g, p, swap);
  vec_push(&g->outputs, graph_binary(g, OP_ADD, p, p));
}

/* GEMMs with every kind of epilogue (passes/fuse.c), on M = 111 rows (tiles
 * of 16 and a remainder) and their expected kernels: outputs
 *   relu(x W + b), gelu(x W + b) + r, gelu_tanh(x W), -(x V^T + x W) (x W a
 *   GEMM of its own, whose buffer the second accumulates into),
 *   relu(p^T W + b), -(s U + s) (s = neg(x): the addend is the GEMM's
 *   own A, never C's buffer), and relu's backward of a product by r:
 *   relu_grad(x W, r). The sums negated stay out of the outputs' pinned
 *   buffers, where nothing is written in place.
 * x [3, 37, 24], W [24, 40], b [40], r [3, 37, 40], V [40, 24], p [24, 50],
 * U [24, 24]; all inputs. */
enum { CHECK_EPILOGUE_GEMMS = 8 };
CHECK_FN void check_epilogue_graph(Graph *g) {
  graph_init(g, "epilogues");
  ValueId x = graph_add_input(g, "x", DTYPE_F32, shape_of(3, 3, 37, 24), SRCLOC_NONE);
  ValueId w = graph_add_input(g, "w", DTYPE_F32, shape_of(2, 24, 40), SRCLOC_NONE);
  ValueId b = graph_add_input(g, "b", DTYPE_F32, shape_of(1, 40), SRCLOC_NONE);
  ValueId r = graph_add_input(g, "r", DTYPE_F32, shape_of(3, 3, 37, 40), SRCLOC_NONE);
  ValueId v = graph_add_input(g, "v", DTYPE_F32, shape_of(2, 40, 24), SRCLOC_NONE);
  ValueId p = graph_add_input(g, "p", DTYPE_F32, shape_of(2, 24, 50), SRCLOC_NONE);
  ValueId u = graph_add_input(g, "u", DTYPE_F32, shape_of(2, 24, 24), SRCLOC_NONE);
  ValueId xw = graph_matmul(g, x, w, false, false);
  vec_push(&g->outputs, graph_unary(g, OP_RELU, graph_binary(g, OP_ADD, xw, b)));
  ValueId xw2 = graph_matmul(g, x, w, false, false);
  vec_push(&g->outputs, graph_binary(g, OP_ADD, graph_unary(g, OP_GELU, graph_binary(g, OP_ADD, xw2, b)), r));
  vec_push(&g->outputs, graph_unary(g, OP_GELU_TANH, graph_matmul(g, x, w, false, false)));
  ValueId xw3 = graph_matmul(g, x, w, false, false); /* in memory, read once: by the add below */
  ValueId acc = graph_binary(g, OP_ADD, graph_matmul(g, x, v, false, true), xw3);
  vec_push(&g->outputs, graph_unary(g, OP_NEG, acc)); /* acc itself in the arena, not pinned as an output */
  vec_push(&g->outputs, graph_unary(g, OP_RELU, graph_binary(g, OP_ADD, graph_matmul(g, p, w, true, false), b)));
  ValueId s = graph_unary(g, OP_NEG, x);
  vec_push(&g->outputs, graph_unary(g, OP_NEG, graph_binary(g, OP_ADD, graph_matmul(g, s, u, false, false), s)));
  vec_push(&g->outputs, graph_binary(g, OP_RELU_GRAD, graph_matmul(g, x, w, false, false), r));
}

/* ---- every op alone ---- */

/* Input domains, chosen by the first letter of an input's name, so that each
 * op sees inputs where it is defined and interesting: every value is an f32
 * number (rounded in double first), so exact ops give exact results. */
CHECK_FN double check_op_input(char kind, int64_t n_rows, uint32_t *s) {
  double u = (double)bert_batch_rnd(s, 1u << 20) / (double)(1u << 20); /* [0, 1) */
  double x;
  switch (kind) {
  case 'p': x = 0.05 + 4 * u; break;                             /* positive: log, sqrt, rsqrt */
  case 'z': x = (u < 0.5 ? -1 : 1) * (0.5 + 3 * u); break;       /* away from 0: div, recip */
  case 'k': x = (double)((int)(5 * u) - 2); break;               /* small integers: ties in max/min/eq/lt */
  case 'c': x = u < 0.5 ? 0 : 1; break;                          /* select's condition */
  case 't': x = 100 * u - 50; break;                             /* cast to i32: truncation of +-50.x */
  case 'i': x = (double)(int)(u * (double)n_rows); break;        /* row indices in [0, n_rows) */
  case 'w': x = (double)((int)(2001 * u) - 1000); break;         /* i32 in [-1000, 1000] */
  default: x = 6 * u - 3; break;                                 /* x: [-3, 3) */
  }
  return (double)(float)x;
}

typedef struct {
  const char *name;
  double tol;    /* rel_err of every output; 0 = bit-exact */
  Graph g;
  int64_t idx_rows; /* range of 'i' inputs */
} OpCase;

CHECK_FN ValueId op_input(OpCase *c, const char *name, DType t, Shape s) {
  return graph_add_input(&c->g, name, t, s, SRCLOC_NONE);
}

CHECK_FN void op_output(OpCase *c, ValueId v) {
  graph_set_name(&c->g, v, "y");
  vec_push(&c->g.outputs, v);
}

/* The elementwise ops of graph/ops.def in table order: the first n of
 * them when i < n (*op set), else i - n. */
CHECK_FN int op_case_elementwise(int i, Op *op) {
  for (int o = 0; o < OP_COUNT; o++)
    if ((op_info[o].flags & OPF_ELEMENTWISE) && i-- == 0) {
      *op = (Op)o;
      return -1;
    }
  return i;
}

/* Builds the case `i` of the table below into c (graph initialized); false
 * past the end. First every elementwise row of graph/ops.def, on inputs of
 * its `dom` letters (check_op_input) at its `tol`; then the other ops.
 * Shapes are odd on purpose (7 x 129: not a multiple of a warp or a vector;
 * 3 x 20256: a vocabulary-long row). Tolerances are rel_err: exact ops 0;
 * sums 1e-5 (f32 accumulation of up to 20256 terms in any order; a tree
 * sum is ~1e-7); matmul 1e-5 (f32 dot products of length <= 65; TF32
 * tensor cores, off unless BC_TF32=1, would give ~1e-3 and fail). */
CHECK_FN bool op_case_build(int i, OpCase *c) {
  memset(c, 0, sizeof *c);
  graph_init(&c->g, "single_op");
  Graph *g = &c->g;
  Shape rc = shape_of(2, 7, 129);
  c->idx_rows = 50;
  Op ew;
  i = op_case_elementwise(i, &ew);
  if (i < 0) {
    const OpInfo *info = &op_info[ew];
    c->name = info->name;
    c->tol = info->tol;
    ValueId in[2];
    for (int k = 0; k < info->n_in; k++) {
      /* input names start with the domain letter: "x", "x2" */
      char nm[3] = {info->dom[k], k > 0 && info->dom[k] == info->dom[0] ? '2' : 0, 0};
      in[k] = op_input(c, nm, DTYPE_F32, rc);
    }
    op_output(c, info->n_in == 1 ? graph_unary(g, ew, in[0]) : graph_binary(g, ew, in[0], in[1]));
    return true;
  }
  ValueId x, y;
  switch (i) {
  case 0:
    c->name = "add (64 x 1000: many blocks)";
    c->tol = 1e-6;
    x = op_input(c, "x", DTYPE_F32, shape_of(2, 64, 1000));
    op_output(c, graph_binary(g, OP_ADD, x, op_input(c, "x2", DTYPE_F32, shape_of(2, 64, 1000))));
    return true;
  case 1:
    c->name = "select";
    op_output(c, graph_select(g, op_input(c, "c", DTYPE_F32, rc), op_input(c, "x", DTYPE_F32, rc),
                              op_input(c, "x2", DTYPE_F32, rc)));
    return true;
  case 2:
    c->name = "cast f32 -> i32";
    op_output(c, graph_cast(g, op_input(c, "t", DTYPE_F32, rc), DTYPE_I32));
    return true;
  case 3:
    c->name = "cast i32 -> f32";
    op_output(c, graph_cast(g, op_input(c, "w", DTYPE_I32, rc), DTYPE_F32));
    return true;
  case 4:
    c->name = "broadcast [1, 129] -> [7, 129]";
    op_output(c, graph_broadcast(g, op_input(c, "x", DTYPE_F32, shape_of(2, 1, 129)), rc));
    return true;
  case 5:
    c->name = "broadcast [7, 1] -> [7, 129]";
    op_output(c, graph_broadcast(g, op_input(c, "x", DTYPE_F32, shape_of(2, 7, 1)), rc));
    return true;
  case 6:
    c->name = "broadcast [129] -> [5, 7, 129]";
    op_output(c, graph_broadcast(g, op_input(c, "x", DTYPE_F32, shape_of(1, 129)), shape_of(3, 5, 7, 129)));
    return true;
  case 7:
    c->name = "reshape [7, 129] -> [129, 7]";
    op_output(c, graph_reshape(g, op_input(c, "x", DTYPE_F32, rc), shape_of(2, 129, 7)));
    return true;
  case 8: {
    c->name = "permute [5, 7, 9] (0 2 1)";
    int perm[] = {0, 2, 1};
    op_output(c, graph_permute(g, op_input(c, "x", DTYPE_F32, shape_of(3, 5, 7, 9)), perm));
    return true;
  }
  case 9: {
    c->name = "permute [5, 7, 9] (2 0 1)";
    int perm[] = {2, 0, 1};
    op_output(c, graph_permute(g, op_input(c, "x", DTYPE_F32, shape_of(3, 5, 7, 9)), perm));
    return true;
  }
  case 10: {
    c->name = "permute [2, 3, 5, 7] (0 2 1 3)";
    int perm[] = {0, 2, 1, 3};
    op_output(c, graph_permute(g, op_input(c, "x", DTYPE_F32, shape_of(4, 2, 3, 5, 7)), perm));
    return true;
  }
  case 11:
    c->name = "slice axis 1 [10, 100)";
    op_output(c, graph_slice(g, op_input(c, "x", DTYPE_F32, rc), 1, 10, 100));
    return true;
  case 12:
    c->name = "slice axis 0 [2, 5)";
    op_output(c, graph_slice(g, op_input(c, "x", DTYPE_F32, rc), 0, 2, 5));
    return true;
  case 13: {
    c->name = "concat axis 0";
    ValueId parts[] = {op_input(c, "x", DTYPE_F32, shape_of(2, 3, 129)), op_input(c, "x2", DTYPE_F32, shape_of(2, 4, 129))};
    op_output(c, graph_concat(g, 2, parts, 0));
    return true;
  }
  case 14: {
    c->name = "concat axis 1";
    ValueId parts[] = {op_input(c, "x", DTYPE_F32, shape_of(2, 7, 5)), op_input(c, "x2", DTYPE_F32, shape_of(2, 7, 123)),
                       op_input(c, "x3", DTYPE_F32, shape_of(2, 7, 1))};
    op_output(c, graph_concat(g, 3, parts, 1));
    return true;
  }
  case 15: case 16: case 17: case 18: case 19: case 20: case 21: case 22: {
    static const char *const names[] = {"reduce_sum [7, 129] axis 1", "reduce_sum [7, 129] axis 0",
                                        "reduce_sum [3, 20256] axis 1", "reduce_sum [5, 7, 9] axis 1",
                                        "reduce_max [7, 129] axis 1", "reduce_max [7, 129] axis 0",
                                        "reduce_max [3, 20256] axis 1", "reduce_max [5, 7, 9] axis 1"};
    int k = i - 15;
    c->name = names[k];
    c->tol = k < 4 ? 1e-5 : 0;
    Shape s = (k & 3) == 2 ? shape_of(2, 3, 20256) : (k & 3) == 3 ? shape_of(3, 5, 7, 9) : rc;
    op_output(c, graph_reduce(g, k < 4 ? OP_REDUCE_SUM : OP_REDUCE_MAX, op_input(c, "x", DTYPE_F32, s),
                              (k & 3) == 1 ? 0 : 1));
    return true;
  }
  case 23: case 24: case 25: case 26: {
    static const char *const names[] = {"matmul [37, 65] x [65, 29]", "matmul trans_a", "matmul trans_b",
                                        "matmul trans_a trans_b"};
    int k = i - 23;
    bool ta = k & 1, tb = k & 2;
    c->name = names[k];
    c->tol = 1e-5;
    x = op_input(c, "x", DTYPE_F32, ta ? shape_of(2, 65, 37) : shape_of(2, 37, 65));
    y = op_input(c, "x2", DTYPE_F32, tb ? shape_of(2, 29, 65) : shape_of(2, 65, 29));
    op_output(c, graph_matmul(g, x, y, ta, tb));
    return true;
  }
  case 27:
    c->name = "matmul batched [3, 17, 33] x [3, 33, 19]";
    c->tol = 1e-5;
    x = op_input(c, "x", DTYPE_F32, shape_of(3, 3, 17, 33));
    op_output(c, graph_matmul(g, x, op_input(c, "x2", DTYPE_F32, shape_of(3, 3, 33, 19)), false, false));
    return true;
  case 28:
    c->name = "matmul batch-broadcast [2, 3, 17, 33] x [33, 19] trans_b";
    c->tol = 1e-5;
    x = op_input(c, "x", DTYPE_F32, shape_of(4, 2, 3, 17, 33));
    op_output(c, graph_matmul(g, x, op_input(c, "x2", DTYPE_F32, shape_of(2, 19, 33)), false, true));
    return true;
  case 29:
    c->name = "gather [50, 33] at [7, 5]";
    op_output(c, graph_gather(g, op_input(c, "x", DTYPE_F32, shape_of(2, 50, 33)),
                              op_input(c, "i", DTYPE_I32, shape_of(2, 7, 5))));
    return true;
  case 30:
    c->name = "scatter_add [40, 33] into [50, 33] (repeated rows)";
    c->tol = 1e-6; /* f32 sums of a few terms, in any order */
    op_output(c, graph_scatter_add(g, op_input(c, "i", DTYPE_I32, shape_of(1, 40)),
                                   op_input(c, "x", DTYPE_F32, shape_of(2, 40, 33)), shape_of(2, 50, 33)));
    c->idx_rows = 12; /* 40 updates into 12 of the 50 rows: repeats, and untouched rows */
    return true;
  case 31:
    c->name = "iota i32 axis 1";
    op_output(c, graph_iota(g, rc, 1, DTYPE_I32));
    return true;
  case 32:
    c->name = "iota f32 axis 0";
    op_output(c, graph_iota(g, shape_of(3, 5, 7, 9), 0, DTYPE_F32));
    return true;
  case 33:
    c->name = "random [7, 129]";
    c->tol = 1e-6; /* a 32-bit Philox word as an f32 in [0, 1): rounding only */
    op_output(c, graph_random(g, rc, 7));
    return true;
  case 34:
    c->name = "constant";
    op_output(c, graph_const(g, 2.5, DTYPE_F32, rc));
    return true;
  case 35: {
    c->name = "assign (param := input)";
    Init z = {INIT_NORMAL, 1.0};
    ValueId p = graph_add_param(g, "p", DTYPE_F32, rc, z, SRCLOC_NONE);
    graph_assign(g, p, op_input(c, "x", DTYPE_F32, rc));
    return true;
  }
  case 36:
  case 37: {
    /* 2 heads of 17 features, 37 queries over 133 keys (rows of the
     * dropout stream start anywhere in a Philox counter, and span whole
     * 64-weight blocks and partial ones), valid lengths in [0, 140) (some
     * rows all masked, some none), dropout 0.3 */
    c->name = i == 36 ? "attention [3, 37, 34] over [3, 133, 34], 2 heads" : "attention_grad (the same)";
    c->tol = i == 36 ? 1e-5 : 2e-5; /* f32 dot products of <= 133 terms, the exp polynomial */
    c->idx_rows = 140;
    Attrs a = {0};
    a.heads = 2;
    a.dropout = 0.3;
    a.key = 77;
    ValueId in[5] = {op_input(c, "x", DTYPE_F32, shape_of(3, 3, 37, 34)), op_input(c, "x2", DTYPE_F32, shape_of(3, 3, 133, 34)),
                     op_input(c, "x3", DTYPE_F32, shape_of(3, 3, 133, 34)), op_input(c, "i", DTYPE_I32, shape_of(1, 3)),
                     op_input(c, "x4", DTYPE_F32, shape_of(3, 3, 37, 34))};
    op_output(c, graph_op(g, i == 36 ? OP_ATTENTION : OP_ATTENTION_GRAD, i == 36 ? 4 : 5, in, &a, NULL));
    return true;
  }
  case 38: {
    /* scores in the thousands (q and k in [-50, 50)): exp overflows unless
     * each row's true maximum is subtracted first */
    c->name = "attention, scores far beyond exp's range";
    c->tol = 1e-5; /* near one-hot weights: as above */
    c->idx_rows = 140;
    Attrs a = {0};
    a.heads = 2;
    a.key = 78;
    ValueId in[4] = {op_input(c, "t", DTYPE_F32, shape_of(3, 2, 21, 34)), op_input(c, "t2", DTYPE_F32, shape_of(3, 2, 45, 34)),
                     op_input(c, "x", DTYPE_F32, shape_of(3, 2, 45, 34)), op_input(c, "i", DTYPE_I32, shape_of(1, 2))};
    op_output(c, graph_op(g, OP_ATTENTION, 4, in, &a, NULL));
    return true;
  }
  default:
    graph_free(g);
    return false;
  }
}

/* Every op of graph/ops.def alone (op_case_build's table), with BC_NO_FUSE=1,
 * on interp and `spec`: every value the backend keeps compared at the case's
 * tolerance (0: bit-exact). Prints one line per failing case and returns
 * the number of cases run; *n_failed counts the failing ones. */
CHECK_FN int check_single_ops(const char *spec, int *n_failed) {
  bool had = check_setenv("BC_NO_FUSE", true);
  int n = 0;
  *n_failed = 0;
  bool covered[OP_COUNT] = {false};
  OpCase c;
  for (int i = 0; op_case_build(i, &c); i++, n++) {
    for (int k = 0; k < c.g.nodes.n; k++) covered[c.g.nodes.data[k].op] = true;
    Exec *ref = check_make("interp", &c.g, 13), *dev = check_make(spec, &c.g, 13);
    int before = test_failed_;
    if (ref && dev) {
      Diag d;
      diag_init(&d);
      uint32_t s = 1000 + (uint32_t)i;
      for (int k = 0; k < c.g.inputs.n; k++) {
        const Value *v = &c.g.values.data[c.g.inputs.data[k]];
        int64_t m = shape_numel(&v->shape);
        double *buf = malloc(sizeof(double) * (size_t)m);
        for (int64_t j = 0; j < m; j++) buf[j] = check_op_input(v->name[0], c.idx_rows, &s);
        CHECK(exec_write(ref, c.g.inputs.data[k], buf, DTYPE_F64, &d));
        CHECK(exec_write(dev, c.g.inputs.data[k], buf, DTYPE_F64, &d));
        free(buf);
      }
      RunContext ctx = {9, 2, 0};
      CHECK(exec_run(ref, &ctx, &d));
      bool ran = exec_run(dev, &ctx, &d);
      CHECK(ran);
      diag_print(&d, stderr);
      diag_free(&d);
      if (ran) {
        char label[160];
        snprintf(label, sizeof label, "single op %s", c.name);
        StepResult r = {0, 0, 0, "", NAN, NAN};
        check_values(dev, ref, &c.g, label, CMP_KEPT, c.tol, &r);
        CHECK_MSG(r.n_checked > c.g.inputs.n - (c.g.params.n ? 1 : 0), "%s: only %d values readable", label,
                  r.n_checked);
        if (getenv("BC_TEST_VERBOSE"))
          fprintf(stderr, "  %s: %d values, worst %.3g (tolerance %g)\n", label, r.n_checked, r.worst, c.tol);
      }
    }
    if (test_failed_ != before) {
      (*n_failed)++;
      fprintf(stderr, "  single op %s: FAILED\n", c.name);
    }
    exec_destroy(ref);
    exec_destroy(dev);
    graph_free(&c.g);
  }
  for (int op = 0; op < OP_COUNT; op++)
    CHECK_MSG(covered[op], "op %s has no single-op case in tests/backend_check.h", op_info[op].name);
  if (!had) unsetenv("BC_NO_FUSE");
  return n;
}

#endif
