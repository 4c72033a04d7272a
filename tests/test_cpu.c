/* test_cpu.c — the `cpu` backend against the reference interpreter (the
 * machinery is tests/backend_check.h, shared with test_gpu.c):
 *  - every op's output on its own (the tiny BERT graphs with BC_NO_FUSE: a
 *    kernel per node);
 *  - the tiny and the reference-size BERT training steps (`pretrain`, `nli`)
 *    at learning rate 0.01: every value the cpu backend keeps in memory
 *    (every kernel's output: so every fused kernel), the loss, every
 *    gradient and the Adam moments agree with interp, and every updated
 *    parameter agrees within what its gradient's rounding allows (below);
 *  - fusion on/off and memory planning on/off give the same numbers
 *    (bit-identical with and without the memory plan: same kernels);
 *  - denormals flushed to zero in every thread of a step, the caller's
 *    own floating-point mode left as it was (x86). */
#include "runtime/gemm_lib.h"
#include "tests/backend_check.h"

/* Tolerance of every value: f32 against double through ~100 ops of a
 * training step, with sums over up to vocab (20256) terms: relative norm
 * error 5e-3. Measured: ~1e-4 for fused kernels; up to 1.4e-3 for the
 * unfused gradient of the log-softmax's max, which cancels to ~0 in exact
 * arithmetic. A wrong kernel gives O(1). */
#define TOL 5e-3
#define LR 0.01

/* The first Adam step (passes/optim.c; m = v = 0 before it) moves each
 * parameter element by -lr f(g), f(g) = g / (|g| + eps), eps 1e-8: m and v
 * are bias-corrected back to g and g^2. So its update is compared per
 * element, not by rel_err over the tensor: with g_c, g_i the gradients of
 * cpu and interp and m = min(|g_c|, |g_i|),
 *   |f(g_c) - f(g_i)| <= |g_c - g_i| / (m + eps)
 * (same signs: |g_c - g_i| eps / ((|g_c| + eps)(|g_i| + eps)); opposite:
 * |g_c| / (|g_c| + eps) + |g_i| / (|g_i| + eps)). That bound is what the
 * gradients' own difference allows: ~1e-4 lr where |g| >> eps, up to ~lr
 * where the gradient is zero in exact arithmetic (the key bias: softmax
 * ignores a per-query constant, f32 leaves ~1e-9 of noise, which Adam
 * scales up to a step of ~0.1 lr). On top: 2e-4 lr for the f32 evaluation
 * of the update (1 - b2^t from exp in f32 keeps ~4 digits, 6e-5 relative,
 * see check_adam_update) and 2^-23 |p| for the rounding of p - step. A
 * dropped or mis-scaled update is off by O(lr) where |g| >> eps. */
typedef struct {
  int n_params;
  double **p0, **grad; /* before the step; the gradient the step computed */
} Snap;

static void snap_read(Snap *s, Exec *e, const Graph *g, bool after, Diag *d) {
  s->n_params = g->params.n;
  double **dst = after ? s->grad : s->p0;
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    int64_t n = shape_numel(&v->shape);
    dst[i] = malloc(sizeof(double) * (size_t)n);
    ValueId id = after ? v->grad : g->params.data[i];
    if (id >= 0) CHECK(exec_read(e, id, dst[i], DTYPE_F64, d));
    else memset(dst[i], 0, sizeof(double) * (size_t)n);
  }
}

/* Every parameter's update on dev against ref's (both stepped from s*.p0),
 * as above; then the parameters are set back to p0 on both, so that
 * check_values compares them as the inputs of the step. */
static void check_update(Exec *dev, Exec *ref, const Graph *g, Snap *sd, Snap *sr, const char *label) {
  Diag d;
  diag_init(&d);
  int64_t n_checked = 0, n_bad = 0, n_big = 0, n_moved = 0;
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < g->params.n; i++) {
    ValueId pid = g->params.data[i];
    const Value *v = &g->values.data[pid];
    int64_t n = shape_numel(&v->shape);
    double *pd = malloc(sizeof(double) * (size_t)n), *pr = malloc(sizeof(double) * (size_t)n);
    CHECK(exec_read(dev, pid, pd, DTYPE_F64, &d) && exec_read(ref, pid, pr, DTYPE_F64, &d));
    int bad_here = 0;
    for (int64_t j = 0; j < n && v->dtype == DTYPE_F32; j++) {
      double gc = sd->grad[i][j], gi = sr->grad[i][j];
      double step_c = sd->p0[i][j] - pd[j], step_i = sr->p0[i][j] - pr[j];
      double m = fmin(fabs(gc), fabs(gi));
      double tol = LR * (fabs(gc - gi) / (m + 1e-8) + 2e-4) + 0x1p-23 * fabs(pr[j]);
      double err = fabs(step_c - step_i);
      if (fabs(gi) > 1e-6) n_big++, n_moved += fabs(step_i) > 0.99 * LR;
      if (err / tol > worst) worst = err / tol, worst_name = v->name;
      if (!(err <= tol)) {
        if (bad_here++ < 3)
          fprintf(stderr, "  %s: update of %s[%lld]: step %.7g on cpu, %.7g on interp (|diff| %.3g > %.3g); "
                          "gradient %.7g on cpu, %.7g on interp\n",
                  label, v->name, (long long)j, step_c, step_i, err, tol, gc, gi);
        n_bad++;
      }
      n_checked++;
    }
    CHECK(exec_write(dev, pid, sd->p0[i], DTYPE_F64, &d) && exec_write(ref, pid, sr->p0[i], DTYPE_F64, &d));
    free(pd);
    free(pr);
  }
  CHECK_MSG(n_bad == 0, "%s: %lld of %lld parameter updates differ from interp's", label, (long long)n_bad,
            (long long)n_checked);
  /* the step is real: where |g| > 1e-6 = 100 eps, Adam's first step is
   * lr g / (|g| + eps), at least 0.99 lr */
  CHECK_MSG(n_big > 0 && n_moved == n_big, "%s: %lld of %lld parameter elements with |gradient| > 1e-6 moved by "
            "0.99 lr on interp", label, (long long)n_moved, (long long)n_big);
  fprintf(stderr, "  %s: %lld parameter updates within their bound (worst at %.2f of it: %s)\n", label,
          (long long)n_checked, worst, worst_name);
  diag_print(&d, stderr);
  diag_free(&d);
}

static void snap_free(Snap *s) {
  for (int i = 0; i < s->n_params; i++) free(s->p0[i]), free(s->grad[i]);
  free(s->p0);
  free(s->grad);
}

/* One step at lr LR on interp and cpu (prepared with BC_NO_MEMPLAN, so
 * every kernel output keeps its own buffer): the updates (check_update),
 * then every value cpu keeps (check_values: gradients, Adam's moments,
 * every kernel output; parameters as they were before the step) and the
 * loss. The graph keeps the outputs named (NULL: all). n_values_checked
 * may be NULL. */
static void compare_step_outputs(const char *graph, const Setting *sets, int n_sets, const char *const *outputs,
                                 int *n_values_checked) {
  Graph g;
  AdamOptions adam;
  adam_options_default(&adam);
  if (!check_compile_outputs(&g, graph, sets, n_sets, &adam, outputs)) {
    CHECK(0);
    return;
  }
  bool had = check_setenv("BC_NO_MEMPLAN", true);
  Exec *ref = check_make("interp", &g, 5), *dev = check_make("cpu", &g, 5);
  if (!had) unsetenv("BC_NO_MEMPLAN");
  Snap sr = {0}, sd = {0};
  sr.p0 = calloc((size_t)g.params.n, sizeof(double *)), sr.grad = calloc((size_t)g.params.n, sizeof(double *));
  sd.p0 = calloc((size_t)g.params.n, sizeof(double *)), sd.grad = calloc((size_t)g.params.n, sizeof(double *));
  Diag d;
  diag_init(&d);
  if (ref && dev) {
    snap_read(&sr, ref, &g, false, &d);
    snap_read(&sd, dev, &g, false, &d);
    bert_batch_fill(&ref, 1, &g, 17, LR);
    bert_batch_fill(&dev, 1, &g, 17, LR);
    bool ran = exec_run(ref, &check_step_ctx, &d) && exec_run(dev, &check_step_ctx, &d);
    CHECK(ran);
    if (ran) {
      snap_read(&sr, ref, &g, true, &d);
      snap_read(&sd, dev, &g, true, &d);
      check_update(dev, ref, &g, &sd, &sr, graph);
      StepResult r = {0};
      r.worst_name = "";
      check_values(dev, ref, &g, graph, CMP_KEPT, TOL, &r);
      fprintf(stderr, "  %s: %d values compared, worst relative error %.3g (%s)\n", graph, r.n_checked, r.worst,
              r.worst_name);
      double ld = NAN, lr_ = NAN;
      CHECK(exec_read(ref, g.loss, &lr_, DTYPE_F64, &d) && exec_read(dev, g.loss, &ld, DTYPE_F64, &d));
      CHECK_NEAR(ld, lr_, 1e-5, 1e-4);
      if (n_values_checked) *n_values_checked = r.n_checked;
    }
  }
  diag_print(&d, stderr);
  diag_free(&d);
  snap_free(&sr);
  snap_free(&sd);
  exec_destroy(dev);
  exec_destroy(ref);
  graph_free(&g);
}

static void compare_step(const char *graph, const Setting *sets, int n_sets, int *n_values_checked) {
  compare_step_outputs(graph, sets, n_sets, NULL, n_values_checked);
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

/* The MLM logits' gradient by column blocks (passes/chunk.c), forced on
 * the tiny model with 128-byte blocks: three blocks of its [8, 40], the
 * last narrower; their kernels run one compiled function (twins whose
 * views' bases are shifted, cpu.c). The blocks themselves:
 * test_chunk. */
TEST(column_blocks_match_interp) {
  setenv("BC_CHUNK_BYTES", "128", 1);
  compare_step("pretrain", tiny, N_TINY, NULL);
  unsetenv("BC_CHUNK_BYTES");
}

/* The MLM logits, their cross-entropy and its gradient by row blocks
 * (passes/row_blocks.c), forced on the tiny model with a vocabulary of
 * 128, 3 slots and 2048-byte blocks: three blocks of 4 of its 12 rows,
 * each guarded by its slice of the loss weights (row_guard.c), each
 * block's gradient by 8 column blocks (192 bytes: 16 columns), whose d W
 * blocks the next row block's add to (chunk.c's fold). As the trainer
 * compiles it: no output kept (the logits would be stored whole). The
 * blocks themselves: test_row_blocks. */
TEST(row_blocks_match_interp) {
  Setting sets[N_TINY];
  memcpy(sets, tiny, sizeof sets);
  sets[0].value = "128"; /* vocab: the dense gradient (8 wide) narrow beside it, 8 blocks of 16 */
  CHECK(strcmp(sets[7].key, "n_pred") == 0);
  sets[7].value = "3";
  static const char *const none[] = {NULL};
  setenv("BC_ROW_BLOCK_BYTES", "2048", 1);
  setenv("BC_CHUNK_BYTES", "192", 1);
  compare_step_outputs("pretrain", sets, N_TINY, none, NULL);
  unsetenv("BC_CHUNK_BYTES");
  unsetenv("BC_ROW_BLOCK_BYTES");
}

/* The reference configuration at batch 2 (interp's double loops are slow). */
static const Setting reference[] = {{"batch", "2"}};
TEST(reference_nli_step_matches_interp) { compare_step("nli", reference, 1, NULL); }
TEST(reference_pretrain_step_matches_interp) { compare_step("pretrain", reference, 1, NULL); }

/* Every op alone on odd shapes (backend_check.h's table), the library
 * kernels (attention and its backward among them) included. */
TEST(single_ops_match_interp) {
  int n_failed = 0, n = check_single_ops("cpu", &n_failed);
  CHECK(n >= 38);
  CHECK_EQ_INT(n_failed, 0);
}

TEST(memplan_and_fusion_switches_agree) {
  Graph g;
  if (!check_compile(&g, "pretrain", tiny, N_TINY, true)) {
    CHECK(0);
    return;
  }
  enum { N = 4000 };
  static double planned[N], unplanned[N], unfused[N];
  check_run_steps("cpu", &g, 5, planned, N);
  setenv("BC_NO_MEMPLAN", "1", 1);
  check_run_steps("cpu", &g, 5, unplanned, N);
  unsetenv("BC_NO_MEMPLAN");
  setenv("BC_NO_FUSE", "1", 1);
  check_run_steps("cpu", &g, 5, unfused, N);
  unsetenv("BC_NO_FUSE");
  /* same kernels, other addresses: bit-identical */
  CHECK(memcmp(planned, unplanned, sizeof planned) == 0);
  /* other kernels: elementwise math is the same f32 code, but fused row
   * reductions may sum in another order, and GEMMs over the rows a row
   * guard leaves live cut them otherwise; 5 Adam steps amplify ulps a
   * little. Not compared: the key biases, whose gradient is 0 in exact
   * arithmetic (softmax ignores a per-query constant), so Adam moves them
   * by lr times the sign of rounding noise, whichever order sums it */
  bool *key_bias = calloc(N, sizeof(bool));
  for (int i = 0, k = 5; i < g.params.n && k < N; i++) { /* check_run_steps: 5 losses, then the parameters */
    int64_t n = shape_numel(&g.values.data[g.params.data[i]].shape);
    bool kb = strstr(g.values.data[g.params.data[i]].name, "W_k.b") != NULL;
    for (int64_t j = 0; j < n && k < N; j++) key_bias[k++] = kb;
  }
  for (int i = 0; i < N; i++)
    if (!key_bias[i]) CHECK_NEAR(unfused[i], planned[i], 1e-5, 1e-3);
  free(key_bias);
  graph_free(&g);
}

/* The same random inputs (check_op_input's 'x' domain, from seed) into
 * both Execs of g, then one run of each. */
static void run_both(Exec *ref, Exec *dev, const Graph *g, uint32_t seed) {
  Diag d;
  diag_init(&d);
  for (int k = 0; k < g->inputs.n; k++) {
    int64_t m = shape_numel(&g->values.data[g->inputs.data[k]].shape);
    double *buf = malloc(sizeof(double) * (size_t)m);
    for (int64_t j = 0; j < m; j++) buf[j] = check_op_input('x', 0, &seed);
    CHECK(exec_write(ref, g->inputs.data[k], buf, DTYPE_F64, &d));
    CHECK(exec_write(dev, g->inputs.data[k], buf, DTYPE_F64, &d));
    free(buf);
  }
  RunContext ctx = {9, 2, 0};
  CHECK(exec_run(ref, &ctx, &d));
  CHECK(exec_run(dev, &ctx, &d));
  diag_print(&d, stderr);
  diag_free(&d);
}

/* g on interp and cpu, the same inputs from seed (run_both): the values
 * `which` names agree within tol, and at least min_checked were read. */
static void matches_interp(const Graph *g, uint32_t seed, const char *label, CompareSet which, double tol,
                           int min_checked) {
  Exec *ref = check_make("interp", g, 13), *dev = check_make("cpu", g, 13);
  if (ref && dev) {
    run_both(ref, dev, g, seed);
    StepResult r = {0, 0, 0, "", NAN, NAN};
    check_values(dev, ref, g, label, which, tol, &r);
    CHECK_MSG(r.n_checked >= min_checked, "%s: %d values read", label, r.n_checked);
  }
  exec_destroy(ref);
  exec_destroy(dev);
}

/* Folded chains cut into pieces (passes/fuse.c) compute what interp does. */
TEST(long_folded_chains_match_interp) {
  Graph g;
  check_long_chains(&g, 101);
  /* f32 exp against double: a few ulps per link, contracting */
  matches_interp(&g, 77, "folded chains", CMP_KEPT, 1e-6, 2);
  graph_free(&g);
}

/* A run of rows of a view that fusion folds (a transpose: W^T's rows
 * 2..4, W's columns) read by a GEMM: no alias of the view's input, which
 * holds W, not W^T (passes/fuse.c: a slice is a view of a materialized
 * input only), but a copy of those rows made through the view. */
TEST(a_row_slice_of_a_folded_view_feeds_a_gemm) {
  Graph g;
  graph_init(&g, "slice_of_view");
  ValueId w = graph_add_input(&g, "w", DTYPE_F32, shape_of(2, 8, 6), SRCLOC_NONE);
  ValueId a = graph_add_input(&g, "a", DTYPE_F32, shape_of(2, 5, 3), SRCLOC_NONE);
  static const int swap[2] = {1, 0};
  ValueId rows = graph_slice(&g, graph_permute(&g, w, swap), 0, 2, 5); /* [3, 8] */
  vec_push(&g.outputs, graph_matmul(&g, a, rows, false, false));
  /* f32 sums of 3 products against double */
  matches_interp(&g, 41, "slice of a view", CMP_PINNED, 1e-6, 1);
  graph_free(&g);
}

/* GEMM epilogues (passes/fuse.c) on each GEMM library: with oneDNN the
 * plan has them (post-ops, and the GEMM accumulating into its addend's
 * buffer), with OpenBLAS it keeps them as loop kernels (cpu.c:
 * cpu_gemm_epilogues). Against interp, every output. The steps on each
 * library alone: test_cpu_ops gemm_epilogue_steps_on_each_library. */
TEST(gemm_epilogues_match_interp) {
  static const char *const libs[] = {"onednn", "openblas"};
  Graph g;
  check_epilogue_graph(&g);
  for (int l = 0; l < 2; l++) {
    GemmLib lib = l == 0 ? GEMM_LIB_ONEDNN : GEMM_LIB_OPENBLAS;
    if (!gemm_lib_load(lib)) {
      fprintf(stderr, "  %s is not installed: not checked\n", libs[l]);
      continue;
    }
    setenv("BC_GEMM", libs[l], 1);
    Exec *ref = check_make("interp", &g, 13), *dev = check_make("cpu", &g, 13);
    unsetenv("BC_GEMM");
    if (ref && dev) {
      run_both(ref, dev, &g, 99);
      StepResult r = {0, 0, 0, "", NAN, NAN};
      /* f32 sums of 24 to 50 products against double; the outputs (the
       * arena's values share buffers by the end of the step) */
      check_values(dev, ref, &g, libs[l], CMP_PINNED, 1e-5, &r);
      CHECK(r.n_checked >= g.outputs.n);
      fprintf(stderr, "  %s: %d values, worst relative error %.3g (%s)\n", libs[l], r.n_checked, r.worst,
              r.worst_name);
    }
    exec_destroy(ref);
    exec_destroy(dev);
  }
  graph_free(&g);
}

#if defined(__x86_64__)
/* MXCSR, read and written where the calls are: the compiler does not
 * order floating-point arithmetic or _mm_getcsr against calls, so these
 * are barriers (and the test does no float arithmetic of its own). */
static unsigned mxcsr(void) {
  unsigned m;
  __asm__ volatile("stmxcsr %0" : "=m"(m) : : "memory");
  return m;
}
static void set_mxcsr(unsigned m) { __asm__ volatile("ldmxcsr %0" : : "m"(m) : "memory"); }

/* Denormal floats are flushed to zero during a step (runtime/cpu.c: FTZ
 * and DAZ in every thread of the backend): x + x of x = 1e-40 is 0 in
 * every row, whichever thread ran it; BC_NO_FLUSH_DENORMALS=1 keeps
 * 2e-40; the caller's own mode is as it was before the step. */
TEST(denormals_flush_to_zero_in_a_step) {
  enum { ROWS = 4096, COLS = 64, N = ROWS * COLS };
  Graph g;
  graph_init(&g, "denormals");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, ROWS, COLS), SRCLOC_NONE);
  vec_push(&g.outputs, graph_binary(&g, OP_ADD, x, x));
  float *in = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
  for (int i = 0; i < N; i++) in[i] = 1e-40f;
  unsigned own = mxcsr();
  set_mxcsr(own & ~0x8040u); /* this thread computes with denormals (no FTZ, no DAZ) */
  /* x + x of a denormal x: its bits doubled (integer arithmetic, no mode) */
  uint32_t bits;
  memcpy(&bits, &in[0], sizeof bits);
  bits *= 2;
  float twice, zero = 0;
  memcpy(&twice, &bits, sizeof twice);
  for (int flush = 1; flush >= 0; flush--) {
    unsigned mode = mxcsr(); /* the caller's, through prepare and a step */
    if (!flush) setenv("BC_NO_FLUSH_DENORMALS", "1", 1);
    Exec *e = check_make("cpu", &g, 3);
    unsetenv("BC_NO_FLUSH_DENORMALS");
    if (!e) {
      CHECK(0);
      continue;
    }
    Diag d;
    diag_init(&d);
    CHECK(exec_write(e, x, in, DTYPE_F32, &d) && exec_run(e, &(RunContext){.seed = 1, .step = 1}, &d));
    CHECK_EQ_INT(mxcsr(), mode);
    CHECK(exec_read(e, g.outputs.data[0], out, DTYPE_F32, &d));
    int as_flushed = 0, as_computed = 0; /* by bits: comparing floats is arithmetic too */
    for (int i = 0; i < N; i++) as_flushed += !memcmp(&out[i], &zero, 4), as_computed += !memcmp(&out[i], &twice, 4);
    fprintf(stderr, "  %s: %d of %d elements 0, %d x + x\n", flush ? "flushed" : "BC_NO_FLUSH_DENORMALS", as_flushed, N,
            as_computed);
    CHECK_EQ_INT(flush ? as_flushed : as_computed, N);
    diag_free(&d);
    exec_destroy(e);
  }
  set_mxcsr(own);
  free(in);
  free(out);
  graph_free(&g);
}
#endif

TEST_MAIN()
