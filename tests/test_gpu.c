/* test_gpu.c — the `cuda` backend against the reference interpreter (label
 * gpu: `ctest -L gpu`). The device is $BC_TEST_DEVICE (default "cuda";
 * "cuda:N" picks a GPU; "cpu" runs the same checks on the cpu backend, which
 * is how the test itself is checked on machines without a GPU). Without a
 * usable GPU every case skips and the program exits 77, printing why.
 *
 *  - every op alone (a graph of one node, BC_NO_FUSE) on odd shapes;
 *  - the tiny and the reference-size BERT training steps (`pretrain`,
 *    `nli`) at a small batch: fused with the memory plan (the loss, every
 *    gradient, parameter, moment and output), fused with BC_NO_MEMPLAN (every
 *    kernel's output: every fused kernel), BC_NO_FUSE (every op's output),
 *    and unfused with the memory plan (tiny only); pretrain with the MLM
 *    logits' gradient made by column blocks (passes/chunk.c);
 *  - Adam: every updated parameter and moment is Adam applied to the
 *    device's own gradient (which the step checks compare with interp);
 *  - determinism: two runs of the same steps give the same bits, except the
 *    values cuda.c documents as non-reproducible (scatter-add by atomics);
 *  - a tiny BERT trained 40 steps on the device and on the cpu backend
 *    (interp when the device is cpu): the loss curves agree;
 *  - data parallel through NCCL with one rank (cuda only): the same code
 *    path as several GPUs (buckets all-reduced on a stream of their own,
 *    captured in the CUDA graph) gives bit-identical training (the average
 *    over one rank is exact);
 *  - replicas in one process (runtime/dist.c, as `--device cuda:all`): one
 *    per GPU (every GPU the driver reports, through NCCL even when there is
 *    one: BC_DIST_NCCL=1), each on a thread of its own, all fed the same
 *    batch, train as one device does, and stay bit-identical to each other;
 *    on cpu, two host replicas (cpu:0,1) averaged in memory.
 * Every failure is printed (value, op, YAML line, error) and the run goes
 * on, so one GPU run shows all of them; each case ends with a summary line,
 * and a table of all cases comes last. */
#include <stdarg.h>

#include "tests/backend_check.h"
#include "runtime/cuda.h"
#include "runtime/dist.h"
#include "runtime/nccl.h"

/* Per-value tolerance of a step against interp: the same as test_cpu.c's
 * (f32 against double through ~100 ops, sums over up to 20256 terms;
 * measured ~1e-4 for fused kernels on cpu, 1.4e-3 for an unfused gradient
 * that cancels to ~0; a wrong kernel gives O(1)). Values that are exactly
 * zero in exact arithmetic are judged by their RMS instead (check_zero_rms
 * in tests/backend_check.h): summation orders other than the cpu JIT's
 * (the C kernel evaluator's sequential sums gave rel_err 7.6e-3 on one such
 * value, of RMS 1e-7) make rel_err of rounding noise meaningless there. */
#define TOL 5e-3
__attribute__((constructor)) static void set_zero_rms(void) { check_zero_rms = 1e-5; }

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };
/* The reference configuration at batch 2 (interp's double loops are slow). */
static const Setting reference[] = {{"batch", "2"}};
/* ... and at batch 16 where no interp run is needed. */
static const Setting reference16[] = {{"batch", "16"}};

/* ---- the device, and a summary line per case ---- */

static char device_why[512];

/* The spec under test, or NULL when it cannot run here (device_why says
 * why). A spec that does not parse is a failure, not a skip. */
static const char *device_spec(void) {
  const char *spec = getenv("BC_TEST_DEVICE");
  if (!spec || !*spec) spec = "cuda";
  Diag d;
  diag_init(&d);
  int dev = 0, n = 0;
  const Backend *b = backend_parse(spec, &dev, &d);
  if (!b) {
    CHECK_MSG(0, "BC_TEST_DEVICE=%s: %s", spec, diag_first(&d));
    snprintf(device_why, sizeof device_why, "bad BC_TEST_DEVICE '%s'", spec);
    spec = NULL;
  } else if (b->device_count && !b->device_count(&n, &d)) {
    const char *why = diag_first(&d);
    if (!strncmp(why, "error: ", 7)) why += 7;
    snprintf(device_why, sizeof device_why, "no usable GPU for %s: %s", spec, why);
    spec = NULL;
  } else if (b->device_count && dev >= n) {
    snprintf(device_why, sizeof device_why, "%s: the driver reports %d device(s)", spec, n);
    spec = NULL;
  }
  diag_free(&d);
  return spec;
}

#define NEED_DEVICE(spec) \
  const char *spec = device_spec(); \
  if (!spec) { \
    if (test_failed_) return; \
    TEST_SKIP(device_why); \
  } \
  unsetenv("BC_NO_FUSE"); \
  unsetenv("BC_NO_MEMPLAN")

static char summary[64][256];
static int n_summary;
static double case_t0;

static void case_begin(void) { case_t0 = check_now_s(); }

/* One line per case: printed now and again in the table at exit. */
static void case_end(const char *name, const char *fmt, ...) BC_PRINTF(2, 3);
static void case_end(const char *name, const char *fmt, ...) {
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  char *line = summary[n_summary < 64 ? n_summary++ : 63];
  snprintf(line, sizeof summary[0], "%-4s %-34s %6.1f s  %s", test_failed_ ? "FAIL" : "ok", name,
           check_now_s() - case_t0, what);
  fprintf(stderr, "  => %s\n", line);
}

static void print_summary(void) {
  if (!n_summary) return;
  const char *spec = getenv("BC_TEST_DEVICE");
  fprintf(stderr, "\ntest_gpu summary (device %s):\n", spec && *spec ? spec : "cuda");
  for (int i = 0; i < n_summary; i++) fprintf(stderr, "  %s\n", summary[i]);
}

__attribute__((constructor)) static void register_summary(void) { atexit(print_summary); }

/* ---- every op alone ---- */

TEST(single_ops_match_interp) {
  NEED_DEVICE(spec);
  case_begin();
  int n_failed = 0, n = check_single_ops(spec, &n_failed);
  CHECK(n >= 30);
  case_end("single ops", "%d single-op graphs, %d failed", n, n_failed);
}

/* ---- training steps against interp ---- */

typedef struct {
  const char *name;
  bool no_fuse, no_memplan;
  CompareSet which;
} Mode;

static const Mode modes[] = {
    {"fused", false, false, CMP_PINNED},
    {"fused, BC_NO_MEMPLAN", false, true, CMP_KEPT},
    {"BC_NO_FUSE BC_NO_MEMPLAN", true, true, CMP_KEPT},
    {"BC_NO_FUSE", true, false, CMP_PINNED},
};

/* One interp step, then the device's step in each of the first n_modes
 * modes compared with it. min_kept: the least number of values the
 * every-op mode must compare (so a backend that hides values cannot pass). */
static void steps_case(const char *spec, const char *size, const char *graph, const Setting *sets,
                       int n_sets, int n_modes, int min_kept) {
  case_begin();
  RefStep s;
  if (!ref_step_init(&s, graph, sets, n_sets)) {
    case_end(graph, "compile or interp failed");
    return;
  }
  char parts[160] = "";
  int n_total = 0, n_bad = 0;
  double worst = 0;
  for (int m = 0; m < n_modes; m++) {
    check_setenv("BC_NO_FUSE", modes[m].no_fuse);
    check_setenv("BC_NO_MEMPLAN", modes[m].no_memplan);
    char label[128];
    snprintf(label, sizeof label, "%s %s [%s]", size, graph, modes[m].name);
    StepResult r;
    check_step_against(&s, spec, label, modes[m].which, TOL, &r);
    /* at least every parameter, its gradient and the loss */
    CHECK_MSG(r.n_checked >= 2 * s.g.params.n + 1, "%s: only %d values compared (%d parameters)", label,
              r.n_checked, s.g.params.n);
    if (modes[m].no_fuse && modes[m].no_memplan)
      CHECK_MSG(r.n_checked >= min_kept, "%s: only %d values readable (want >= %d)", label, r.n_checked, min_kept);
    n_total += r.n_checked;
    n_bad += r.n_failed;
    if (!(r.worst <= worst)) worst = r.worst;
    size_t len = strlen(parts);
    snprintf(parts + len, sizeof parts - len, "%s%d", m ? "/" : "", r.n_checked);
  }
  unsetenv("BC_NO_FUSE");
  unsetenv("BC_NO_MEMPLAN");
  char name[64];
  snprintf(name, sizeof name, "%s %s step", size, graph);
  case_end(name, "%s values (modes), worst rel err %.2g, %d differ", parts, worst, n_bad);
  ref_step_free(&s);
}

/* Least values compared with fusion off: test_cpu.c's bound for the tiny
 * pretrain graph (668 values on cpu), and a count below the real one
 * elsewhere (tiny nli 550, reference ~500 on cpu). */
TEST(tiny_pretrain_step_matches_interp) {
  NEED_DEVICE(spec);
  steps_case(spec, "tiny", "pretrain", tiny, N_TINY, 4, 300);
}
TEST(tiny_nli_step_matches_interp) {
  NEED_DEVICE(spec);
  steps_case(spec, "tiny", "nli", tiny, N_TINY, 4, 300);
}
TEST(reference_nli_step_matches_interp) {
  NEED_DEVICE(spec);
  steps_case(spec, "reference", "nli", reference, 1, 3, 300);
}
TEST(reference_pretrain_step_matches_interp) {
  NEED_DEVICE(spec);
  steps_case(spec, "reference", "pretrain", reference, 1, 3, 300);
}

/* The MLM logits' gradient by column blocks (passes/chunk.c), forced by
 * small blocks: three of the tiny [8, 40]; 32 of the reference [38,
 * 20256], the most there are. */
TEST(column_blocks_pretrain_step_matches_interp) {
  NEED_DEVICE(spec);
  setenv("BC_CHUNK_BYTES", "128", 1);
  steps_case(spec, "tiny, column blocks", "pretrain", tiny, N_TINY, 2, 300);
  setenv("BC_CHUNK_BYTES", "65536", 1);
  steps_case(spec, "reference, column blocks", "pretrain", reference, 1, 2, 300);
  unsetenv("BC_CHUNK_BYTES");
}

/* ---- the update ---- */

/* Adam's defaults, and AdamW with clipping (far below the norm: every
 * step clips) on the tiny nli graph. */
TEST(adam_update_follows_device_gradient) {
  NEED_DEVICE(spec);
  case_begin();
  int64_t n = 0, k;
  const char *bad = "";
  AdamOptions plain, adamw;
  adam_options_default(&plain);
  adamw = plain;
  adamw.weight_decay = 0.1;
  adamw.clip = 0.05;
  struct {
    const char *label, *graph;
    const Setting *sets;
    int n_sets;
    const AdamOptions *adam;
  } cs[] = {{"tiny pretrain", "pretrain", tiny, N_TINY, &plain},
            {"tiny nli", "nli", tiny, N_TINY, &plain},
            {"tiny nli, weight decay and clipping", "nli", tiny, N_TINY, &adamw},
            {"reference pretrain b16", "pretrain", reference16, 1, &plain}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    Graph g;
    if (!check_compile_adam(&g, cs[i].graph, cs[i].sets, cs[i].n_sets, cs[i].adam)) {
      CHECK(0);
      continue;
    }
    k = check_adam_update(spec, &g, cs[i].label, cs[i].adam);
    if (k <= 0) bad = " (some wrong)";
    else n += k;
    graph_free(&g);
  }
  case_end("adam update", "%lld element updates checked%s", (long long)n, bad);
}

/* ---- determinism ---- */

TEST(steps_are_deterministic) {
  NEED_DEVICE(spec);
  case_begin();
  int n = 0;
  struct {
    const char *label, *graph;
    const Setting *sets;
    int n_sets;
  } cs[] = {{"tiny pretrain", "pretrain", tiny, N_TINY},
            {"reference nli b16", "nli", reference16, 1},
            {"reference pretrain b16", "pretrain", reference16, 1}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    Graph g;
    if (!check_compile(&g, cs[i].graph, cs[i].sets, cs[i].n_sets, true)) {
      CHECK(0);
      continue;
    }
    n += check_determinism(spec, &g, cs[i].label);
    graph_free(&g);
  }
  case_end("determinism", "%d values compared over 3 graphs", n);
}

/* ---- a short training run ---- */

/* The device against the cpu backend: f32 against f32 with other summation
 * orders (and other exp/tanh implementations), so the curves start within
 * f32 rounding of each other and drift apart as Adam amplifies the
 * differences (near-zero gradient elements step by +-lr whichever their
 * sign). Measured with this tiny model (dropout 0.2, batch 8, 2 batches
 * cycled, lr 0.01, 40 steps), cpu against interp (f32 against double;
 * two f32 backends differ by about as much, each being rounding noise away
 * from the exact curve): worst relative difference of a
 * step's loss 1e-6 over steps 0-9 and 1.5e-5 (nli) / 5e-6 (pretrain) over
 * steps 10-39, with LLVM kernels or with the C kernel evaluator alike.
 * Tolerance: 1e-4 relative over the first 10 steps and 1e-3 after, ~100x
 * and ~60x that; a wrong kernel or dropout mask moves the loss by > 1e-2
 * within a step or two. The curves depend on the seed: over seeds 7-16,
 * nli's loss ended at 0.22-0.92 of its start, and in 3 of the 10 cpu and
 * interp drifted past 1e-3 after step 9 (an Adam step of a near-zero
 * gradient taking the other sign, then the difference growing; with the
 * earlier dropout stream 1 of 7 seeds did). Seed 13 learns and stays
 * within 1e-5 (check_train_losses). */
static double curve_tol(int step) { return step < 10 ? 1e-4 : 1e-3; }

static void curve_case(const char *spec, const char *graph) {
  case_begin();
  enum { STEPS = 40, NB = 2 }; /* 2 batches of 8 cycled: the loss falls ~2x in 40 steps */
  Setting sets[N_TINY + 2];
  memcpy(sets, tiny, sizeof tiny);
  sets[N_TINY] = (Setting){"dropout", "0.2"};
  sets[N_TINY + 1] = (Setting){"batch", "8"}; /* last wins over tiny's batch 4 */
  Graph g;
  if (!check_compile(&g, graph, sets, N_TINY + 2, true)) {
    CHECK(0);
    case_end(graph, "compile failed");
    return;
  }
  /* the reference: cpu, unless cpu is what is under test */
  const char *ref = strcmp(spec, "cpu") == 0 ? "interp" : "cpu";
  double a[STEPS], b[STEPS], worst_early = 0, worst_late = 0;
  for (int s = 0; s < STEPS; s++) a[s] = b[s] = NAN;
  int n_bad = 0;
  if (check_train_losses(spec, &g, STEPS, NB, a) && check_train_losses(ref, &g, STEPS, NB, b)) {
    for (int s = 0; s < STEPS; s++) {
      double rel = fabs(a[s] - b[s]) / fabs(b[s]);
      if (s < 10 && !(rel <= worst_early)) worst_early = rel;
      if (s >= 10 && !(rel <= worst_late)) worst_late = rel;
      if (!(rel <= curve_tol(s))) {
        if (n_bad++ < 10)
          fprintf(stderr, "  %s curve: step %d loss %s %.9g vs %s %.9g (relative %.3g > %g)\n", graph, s, spec,
                  a[s], ref, b[s], rel, curve_tol(s));
      }
    }
    if (getenv("BC_TEST_VERBOSE"))
      for (int s = 0; s < STEPS; s++)
        fprintf(stderr, "  %s step %2d: %.9f %.9f %.2g\n", graph, s, a[s], b[s], fabs(a[s] - b[s]) / fabs(b[s]));
    CHECK_MSG(n_bad == 0, "%s: %d of %d steps' losses differ from %s", graph, n_bad, STEPS, ref);
    /* not vacuous: the model learns (measured on cpu: the mean of the last 4
     * steps is ~0.5x (nli) and ~0.6x (pretrain) that of the first 4) */
    double first = (a[0] + a[1] + a[2] + a[3]) / 4, last = 0;
    for (int s = STEPS - 4; s < STEPS; s++) last += a[s] / 4;
    CHECK_MSG(last < 0.8 * first, "%s: loss did not fall (mean of 4 steps %g -> %g)", graph, first, last);
  }
  char name[64];
  snprintf(name, sizeof name, "tiny %s 40 steps vs %s", graph, ref);
  case_end(name, "loss %.4f -> %.4f; worst rel diff %.2g (steps 0-9), %.2g (10-39)", a[0], a[STEPS - 1],
           worst_early, worst_late);
  graph_free(&g);
}

TEST(tiny_nli_training_curve_matches) {
  NEED_DEVICE(spec);
  curve_case(spec, "nli");
}
TEST(tiny_pretrain_training_curve_matches) {
  NEED_DEVICE(spec);
  curve_case(spec, "pretrain");
}

/* ---- data parallel through NCCL, one rank ---- */

/* How many parameters of b differ from a's, bit for bit (each printed,
 * `who` naming the case), but for the embedding tables on cuda (updated
 * from scatter-add sums, whose atomics add in a varying order); *n_params
 * counts those compared. */
static int params_differ(Exec *a, Exec *b, const Graph *g, const char *who, int *n_params) {
  Diag d;
  diag_init(&d);
  int n_diff = 0;
  *n_params = 0;
  for (int i = 0; i < g->values.n; i++) {
    const Value *v = &g->values.data[i];
    if (v->kind != VALUE_PARAM) continue;
    int64_t n = shape_numel(&v->shape);
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    CHECK(exec_read(a, i, x, DTYPE_F32, &d) && exec_read(b, i, y, DTYPE_F32, &d));
    ++*n_params;
    bool table = a->backend->atomic_scatter_add && strstr(v->name, "embedding.table") != NULL;
    if (memcmp(x, y, sizeof(float) * (size_t)n) != 0 && !table) {
      n_diff++;
      fprintf(stderr, "  %s: parameter %s differs from plain training after one step\n", who, v->name);
    }
    free(x);
    free(y);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  return n_diff;
}

TEST(nccl_one_rank_matches_plain_training) {
  NEED_DEVICE(spec);
  if (strncmp(spec, "cuda", 4) != 0) TEST_SKIP("NCCL is for cuda devices");
  Diag d;
  diag_init(&d);
  if (!gpucomm_available(&d)) {
    diag_print(&d, stderr);
    diag_free(&d);
    TEST_SKIP("libnccl.so.2 cannot be loaded");
  }
  case_begin();
  enum { STEPS = 6 };
  Graph g;
  CHECK(check_compile(&g, "pretrain", tiny, N_TINY, true));
  Exec *plain = check_make(spec, &g, 7), *dp = check_make(spec, &g, 7);
  GpuComm *comm = NULL;
  const GradBuckets *gb = NULL;
  if (plain && dp) {
    unsigned char id[GPUCOMM_ID_BYTES];
    cuda_exec_stream(dp); /* its device's context current for NCCL */
    if (gpucomm_unique_id(id, &d)) comm = gpucomm_create(id, 1, 0, &d);
    /* small buckets, so that several all-reduces overlap the backward pass */
    if (comm) gb = cuda_attach_nccl(dp, comm, 1024, &d);
  }
  diag_print(&d, stderr);
  CHECK(comm && gb && gb->n_buckets >= 2);
  /* After one step every parameter but the embedding tables (updated from
   * scatter-add sums, whose atomics add in a varying order) must be
   * bit-identical; later steps start from those tables, so from step 2 on
   * only the losses are compared: within 1e-3 relative, the drift of two
   * cuda runs (rounding noise amplified by Adam), as curve_tol allows for
   * cuda against cpu. Steps 2-6 replay the captured graph with the hooks. */
  int n_params = 0, n_diff = 0, n_bad_loss = 0;
  double loss_a = NAN, loss_b = NAN;
  for (int s = 0; gb && s < STEPS; s++) {
    Exec *es[2] = {plain, dp};
    bert_batch_fill(es, 2, &g, 300 + (uint32_t)s, 0.01);
    RunContext ctx = {7, (uint32_t)s, 0};
    CHECK(exec_run(plain, &ctx, &d) && exec_run(dp, &ctx, &d));
    CHECK(exec_read(plain, g.loss, &loss_a, DTYPE_F64, &d) && exec_read(dp, g.loss, &loss_b, DTYPE_F64, &d));
    if (!(fabs(loss_a - loss_b) <= 1e-3 * fabs(loss_a))) {
      n_bad_loss++;
      fprintf(stderr, "  nccl: step %d loss %.9g, plain %.9g\n", s, loss_b, loss_a);
    }
    if (s == 0) n_diff = params_differ(plain, dp, &g, "nccl", &n_params);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK_MSG(n_params > 0 && n_diff == 0, "%d of %d parameters differ after one step", n_diff, n_params);
  CHECK_MSG(n_bad_loss == 0, "%d of %d steps' losses differ", n_bad_loss, STEPS);
  case_end("nccl one rank vs plain", "%s, %d buckets: %d parameters bit-identical after a step; loss %.6f vs %.6f "
           "after %d", gpucomm_version_string(), gb ? gb->n_buckets : 0, n_params - n_diff, loss_b, loss_a, STEPS);
  exec_destroy(plain);
  exec_destroy(dp);
  gpucomm_destroy(comm);
  graph_free(&g);
}

/* ---- replicas in one process ---- */

typedef struct {
  Exec **es;
  RunContext ctx;
  int64_t batch;
} ReplicaStep;

static bool replica_step(void *p, int k, Diag *d) {
  ReplicaStep *r = p;
  RunContext c = r->ctx;
  c.example_offset = k * r->batch;
  return exec_run(r->es[k], &c, d);
}

TEST(replicas_in_one_process_match_plain_training) {
  NEED_DEVICE(spec);
  Diag d;
  diag_init(&d);
  int dev = 0, n = 2, devices[BC_MAX_REPLICAS] = {0, 1};
  const Backend *b = backend_parse(spec, &dev, &d);
  bool gpu = b->device_count != NULL;
  if (gpu) {
    CHECK(cuda_device_count(&n, &d));
    for (int k = 0; k < n; k++) devices[k] = k;
    if (!gpucomm_available(&d)) {
      diag_print(&d, stderr);
      diag_free(&d);
      TEST_SKIP("libnccl.so.2 cannot be loaded");
    }
  }
  if (n > BC_MAX_REPLICAS) n = BC_MAX_REPLICAS;
  case_begin();
  enum { STEPS = 6 };
  Graph g;
  CHECK(check_compile(&g, "pretrain", tiny, N_TINY, true));
  Exec *plain = check_make(spec, &g, 7), *es[BC_MAX_REPLICAS] = {0};
  bool made = plain != NULL;
  for (int k = 0; made && k < n; k++) {
    es[k] = exec_create_on(b, devices[k], &g, &d);
    made = es[k] && exec_init_params(es[k], 7, &d);
  }
  bool forced = check_setenv("BC_DIST_NCCL", true);
  Dist *D = made ? dist_start(&d) : NULL;
  bool attached = D && dist_broadcast_exec(D, es, n, &d) && dist_attach(D, es, n, &d);
  check_setenv("BC_DIST_NCCL", forced);
  diag_print(&d, stderr);
  CHECK(attached);
  /* Every replica gets the same batch. With one replica (one GPU) it has
   * plain training's dropout draws, and the average over one rank is exact:
   * it must train as plain does, up to the embedding tables' scatter-add
   * atomics (as above). Several replicas take the dropout draws of
   * consecutive slices of a global batch (example_offset k x batch), so
   * their gradients differ and only averaging keeps them identical, which
   * dist_check_replicas checks after every step; replica 0's first loss is
   * still plain's. */
  int n_params = 0, n_diff = 0, n_bad_loss = 0;
  double loss_a = NAN, loss_b = NAN, worst = 0;
  for (int s = 0; attached && s < STEPS; s++) {
    Exec *all[BC_MAX_REPLICAS + 1] = {plain};
    for (int k = 0; k < n; k++) all[k + 1] = es[k];
    bert_batch_fill(all, n + 1, &g, 300 + (uint32_t)s, 0.01);
    ReplicaStep rs = {es, {7, (uint32_t)s, 0}, (int64_t)graph_hparam(&g, "batch", 4)};
    CHECK(exec_run(plain, &rs.ctx, &d) && dist_run(D, n, replica_step, &rs, &d));
    if (n > 1 && s > 0) {
      CHECK(dist_check_replicas(D, es, n, s + 1, &d));
      continue;
    }
    CHECK(exec_read(plain, g.loss, &loss_a, DTYPE_F64, &d) && exec_read(es[0], g.loss, &loss_b, DTYPE_F64, &d));
    double rel = fabs(loss_a - loss_b) / fabs(loss_a);
    worst = rel > worst ? rel : worst;
    if (!(gpu ? rel <= 1e-3 : loss_a == loss_b)) {
      n_bad_loss++;
      fprintf(stderr, "  replicas: step %d loss %.9g, plain %.9g\n", s, loss_b, loss_a);
    }
    CHECK(dist_check_replicas(D, es, n, s + 1, &d));
    if (s == 0 && n == 1) n_diff = params_differ(plain, es[0], &g, "replicas", &n_params);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK_MSG(n > 1 || (n_params > 0 && n_diff == 0), "%d of %d parameters differ after one step", n_diff, n_params);
  CHECK_MSG(n_bad_loss == 0, "%d of %d steps' losses differ", n_bad_loss, STEPS);
  if (n == 1)
    case_end("replicas in one process vs plain", "1 replica through %s: %d parameters equal after a step; worst "
             "loss rel diff %.2g over %d steps", gpucomm_version_string(), n_params - n_diff, worst, STEPS);
  else
    case_end("replicas in one process vs plain", "%d replicas %s%s: identical after each of %d steps; first loss "
             "= plain's", n, gpu ? "through " : "on the host", gpu ? gpucomm_version_string() : "", STEPS);
  dist_stop(D, true); /* detaches */
  for (int k = 0; k < n; k++) exec_destroy(es[k]);
  exec_destroy(plain);
  graph_free(&g);
}

TEST_MAIN()
