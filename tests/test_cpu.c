/* test_cpu.c — the `cpu` backend against the reference interpreter:
 *  - every op on its own (BC_NO_FUSE graphs of one op each);
 *  - the tiny and the reference-size BERT training steps (`pretrain`, `nli`):
 *    every value the cpu backend keeps in memory (every kernel's output: so
 *    every fused kernel), the loss, every gradient and every updated
 *    parameter agree with interp;
 *  - fusion on/off and memory planning on/off give the same numbers
 *    (bit-identical with and without the memory plan: same kernels). */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"

static bool compile(Graph *g, const char *graph, const Setting *sets, int n_sets, bool train) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = n_sets;
  o.train = train;
  Diag d;
  diag_init(&d);
  bool ok = pipeline_run(g, &o, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* ||a - b|| / (||b|| + 1e-5 sqrt(n)) over a tensor. The floor covers
 * gradients that are exactly zero in exact arithmetic (the key bias:
 * softmax ignores a per-query constant), where f32 leaves ~1e-9 of rounding
 * noise per element and double ~1e-17. */
static double rel_err(const double *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num) / (sqrt(den) + 1e-5 * sqrt((double)n));
}

static Exec *make(const char *backend, const Graph *g, uint64_t seed) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(backend_by_name(backend), g, &d);
  if (!e) diag_print(&d, stderr);
  CHECK(e != NULL);
  if (e) CHECK(exec_init_params(e, seed, &d));
  diag_free(&d);
  return e;
}

/* Runs one step on interp and cpu and compares every value cpu keeps.
 * Tolerance: f32 against double through ~100 ops of a training step, with
 * sums over up to vocab (20256) terms: relative norm error 5e-3. Measured:
 * ~1e-4 for fused kernels; up to 1.4e-3 for the unfused gradient of the
 * log-softmax's max, which cancels to ~0 in exact arithmetic. A wrong kernel
 * gives O(1). */
static void compare_step(const char *graph, const Setting *sets, int n_sets, int *n_values_checked) {
  Graph g;
  if (!compile(&g, graph, sets, n_sets, true)) {
    CHECK(0);
    return;
  }
  /* without the memory plan every kernel output keeps its own buffer, so
   * each can be read after the step (memplan_and_fusion_switches_agree
   * shows the plan changes nothing) */
  const char *had = getenv("BC_NO_MEMPLAN");
  setenv("BC_NO_MEMPLAN", "1", 1);
  Exec *ref = make("interp", &g, 5), *cpu = make("cpu", &g, 5);
  if (!had) unsetenv("BC_NO_MEMPLAN");
  if (!ref || !cpu) {
    exec_destroy(ref);
    exec_destroy(cpu);
    graph_free(&g);
    return;
  }
  Exec *both[2] = {ref, cpu};
  /* lr 0: parameters keep their values, so they are compared as inputs;
   * with lr > 0 an exactly-zero gradient (the key bias: softmax ignores a
   * per-query constant) makes Adam step by lr * sign(rounding noise) */
  bert_batch_fill(both, 2, &g, 17, 0.0);
  Diag d;
  diag_init(&d);
  RunContext ctx = {9, 2, 0};
  CHECK(exec_run(ref, &ctx, &d));
  CHECK(exec_run(cpu, &ctx, &d));
  diag_print(&d, stderr);
  int checked = 0;
  double worst = 0;
  const char *worst_name = "";
  for (int v = 0; v < g.values.n; v++) {
    const Value *val = &g.values.data[v];
    int64_t n = shape_numel(&val->shape);
    double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
    Diag q;
    diag_init(&q);
    /* an assign's output is its target, which cpu updates in place and
     * interp at the end of the step: compared as the target */
    bool is_assign = val->node >= 0 && g.nodes.data[val->node].op == OP_ASSIGN;
    /* Adam's intermediates (m / (sqrt(v) + eps)) turn a gradient that is
     * zero in exact arithmetic into +-1 of rounding noise; the moments
     * themselves and test_adam.c cover the update */
    bool adam_internal = val->kind == VALUE_NODE && val->name &&
                         (strncmp(val->name, "adam.", 5) == 0 || strstr(val->name, ".adam.") != NULL);
    bool kept = !is_assign && !adam_internal && exec_read(cpu, v, a, DTYPE_F64, &q);
    diag_free(&q);
    if (kept) {
      CHECK(exec_read(ref, v, b, DTYPE_F64, &d));
      double e = rel_err(a, b, n);
      if (e > worst) {
        worst = e;
        worst_name = val->name;
      }
      if (e > 5e-3) {
        fprintf(stderr, "  %s: %s %%%d differs: relative error %.3g; first elements cpu/interp:", graph,
                val->name, v, e);
        for (int64_t j = 0; j < n && j < 3; j++) fprintf(stderr, " %.6g/%.6g", a[j], b[j]);
        fputc('\n', stderr);
      }
      CHECK(e <= 5e-3);
      checked++;
    }
    free(a);
    free(b);
  }
  fprintf(stderr, "  %s: %d values compared, worst relative error %.3g (%s)\n", graph, checked, worst, worst_name);
  double lr_ = 0, lc = 0;
  CHECK(exec_read(ref, g.loss, &lr_, DTYPE_F64, &d));
  CHECK(exec_read(cpu, g.loss, &lc, DTYPE_F64, &d));
  CHECK_NEAR(lc, lr_, 1e-5, 1e-4);
  if (n_values_checked) *n_values_checked = checked;
  diag_free(&d);
  exec_destroy(ref);
  exec_destroy(cpu);
  graph_free(&g);
}

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };

TEST(tiny_pretrain_step_matches_interp) { compare_step("pretrain", tiny, N_TINY, NULL); }
TEST(tiny_nli_step_matches_interp) { compare_step("nli", tiny, N_TINY, NULL); }

/* Every op on its own: with fusion off, every node's output has a buffer. */
TEST(every_op_unfused_matches_interp) {
  setenv("BC_NO_FUSE", "1", 1);
  int n = 0;
  compare_step("pretrain", tiny, N_TINY, &n);
  CHECK(n > 300);
  compare_step("nli", tiny, N_TINY, NULL);
  unsetenv("BC_NO_FUSE");
}

/* The reference configuration at batch 2 (interp's double loops are slow). */
static const Setting reference[] = {{"batch", "2"}};
TEST(reference_nli_step_matches_interp) { compare_step("nli", reference, 1, NULL); }
TEST(reference_pretrain_step_matches_interp) { compare_step("pretrain", reference, 1, NULL); }

/* Loss and gradients of `steps` cpu training steps under the current env. */
static void cpu_run_steps(const Graph *g, int steps, double *out, int n_out) {
  Exec *e = make("cpu", g, 3);
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
  /* then every parameter after the updates */
  for (int i = 0; i < g->params.n && k < n_out; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    int64_t n = shape_numel(&v->shape);
    double *buf = malloc(sizeof(double) * (size_t)n);
    CHECK(exec_read(e, g->params.data[i], buf, DTYPE_F64, &d));
    for (int64_t j = 0; j < n && k < n_out; j++) out[k++] = buf[j];
    free(buf);
  }
  diag_free(&d);
  exec_destroy(e);
}

TEST(memplan_and_fusion_switches_agree) {
  Graph g;
  if (!compile(&g, "pretrain", tiny, N_TINY, true)) {
    CHECK(0);
    return;
  }
  enum { N = 4000 };
  static double planned[N], unplanned[N], unfused[N];
  cpu_run_steps(&g, 5, planned, N);
  setenv("BC_NO_MEMPLAN", "1", 1);
  cpu_run_steps(&g, 5, unplanned, N);
  unsetenv("BC_NO_MEMPLAN");
  setenv("BC_NO_FUSE", "1", 1);
  cpu_run_steps(&g, 5, unfused, N);
  unsetenv("BC_NO_FUSE");
  /* same kernels, other addresses: bit-identical */
  CHECK(memcmp(planned, unplanned, sizeof planned) == 0);
  /* other kernels: elementwise math is the same f32 code, but fused row
   * reductions may sum in another order; 5 Adam steps amplify ulps a little */
  for (int i = 0; i < N; i++) CHECK_NEAR(unfused[i], planned[i], 1e-5, 1e-3);
  graph_free(&g);
}

TEST_MAIN()
