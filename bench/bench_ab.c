/* bench_ab.c — two builds of one training step in one process, their steps
 * alternated, for changes worth a few percent on a machine whose speed
 * drifts more than that between runs (a shared VM): side A is compiled with
 * the environment as it is, side B with NAME=VALUE settings added
 * (`--env BC_NO_EPILOGUE=1`), and each pair of steps runs A then B (or B
 * then A, alternating) on the same batch. Reports each side's median
 * ms/step and the median of the pair ratios B/A, which drift cancels out
 * of. Batches are bench_batch.c's; the cpu backend unless --device.
 *
 * Not here: absolute numbers for reports (bench_step, bench/run.sh). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_batch.h"
#include "passes/passes.h"
#include "runtime/backend.h"

enum { MAX_SETS = 32, MAX_ENV = 8, N_BATCHES = 4 };

static const char usage[] =
    "usage: bench_ab --env NAME=VALUE [--env ...] [options]\n"
    "\n"
    "Compiles one training step twice, A with the environment as it is and B\n"
    "with the --env settings added, and runs their steps alternately (A B,\n"
    "B A, ...) on the same batches. Prints each side's median ms/step and\n"
    "the median ratio of B's step time to A's over the pairs (below 1: B is\n"
    "faster).\n"
    "\n"
    "options:\n"
    "  --env NAME=VALUE    set for side B only (repeatable; at least one)\n"
    "  --model FILE        model file (default models/bert.yaml)\n"
    "  --graph NAME        graph (default nli)\n"
    "  --batch N           batch size (default 64)\n"
    "  --set NAME=VALUE    hyperparameter for both sides (repeatable)\n"
    "  --device NAME       backend (default cpu)\n"
    "  --pairs N           timed pairs of steps (default 20)\n"
    "  --warmup N          untimed pairs first (default 2)\n"
    "  --help              this text\n";

typedef struct {
  Graph g;
  Exec *e;
  bool have_graph;
} Side;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *x, int n) {
  qsort(x, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Compiles and prepares one side: pipeline and exec both read the
 * environment, so B's settings are in it while they run. */
static bool side_make(Side *s, const CompileOptions *base, const Backend *be, int device, Diag *d) {
  CompileOptions co;
  compile_options_default(&co); /* this side's BC_NO_* and dumps */
  co.model_path = base->model_path;
  co.graph_name = base->graph_name;
  co.sets = base->sets;
  co.n_sets = base->n_sets;
  co.train = true;
  static const char *const no_outputs[] = {NULL};
  co.outputs = no_outputs; /* as bench_step */
  if (!pipeline_run(&s->g, &co, d)) return false;
  s->have_graph = true;
  s->e = exec_create_on(be, device, &s->g, d);
  return s->e && exec_init_params(s->e, 1, d);
}

static bool side_step(Side *s, const Batch *b, uint32_t step, double *dt, Diag *d) {
  double t0 = now_s();
  for (int i = 0; i < b->n; i++)
    if (!exec_write(s->e, b->ids[i], b->bufs[i], s->g.values.data[b->ids[i]].dtype, d)) return false;
  RunContext ctx = {1, step, 0};
  float loss = NAN;
  if (!exec_run(s->e, &ctx, d) || !exec_read(s->e, s->g.loss, &loss, DTYPE_F32, d)) return false;
  *dt = now_s() - t0;
  if (!isfinite(loss)) {
    diag_error(d, SRCLOC_NONE, "loss is %g at step %u", (double)loss, step);
    return false;
  }
  return true;
}

int main(int argc, char **argv) {
  const char *model = "models/bert.yaml", *graph = "nli", *device = "cpu";
  int batch = 64, pairs = 20, warmup = 2, n_env = 0, n_sets = 0;
  const char *env[MAX_ENV];
  Setting sets[MAX_SETS + 1];
  char batch_str[32];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 0;
    }
    if (!v) {
      fprintf(stderr, "bench_ab: %s needs a value\n%s", a, usage);
      return 2;
    }
    i++;
    if (!strcmp(a, "--env") && n_env < MAX_ENV && strchr(v, '=')) env[n_env++] = v;
    else if (!strcmp(a, "--set") && n_sets < MAX_SETS && strchr(v, '=')) {
      char *eq = strchr(v, '=');
      sets[n_sets++] = (Setting){strndup(v, (size_t)(eq - v)), eq + 1};
    } else if (!strcmp(a, "--model")) model = v;
    else if (!strcmp(a, "--graph")) graph = v;
    else if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--batch") && atoi(v) > 0) batch = atoi(v);
    else if (!strcmp(a, "--pairs") && atoi(v) > 0) pairs = atoi(v);
    else if (!strcmp(a, "--warmup") && atoi(v) >= 0) warmup = atoi(v);
    else {
      fprintf(stderr, "bench_ab: bad option %s %s\n%s", a, v, usage);
      return 2;
    }
  }
  if (n_env == 0) {
    fprintf(stderr, "bench_ab: give side B at least one --env NAME=VALUE\n%s", usage);
    return 2;
  }
  snprintf(batch_str, sizeof batch_str, "%d", batch);
  sets[n_sets++] = (Setting){"batch", batch_str};
  Diag d;
  diag_init(&d);
  int dev_index = 0;
  const Backend *be = backend_parse(device, &dev_index, &d);
  if (!be) {
    diag_print(&d, stderr);
    return 2;
  }

  CompileOptions base = {0};
  base.model_path = model;
  base.graph_name = graph;
  base.sets = sets;
  base.n_sets = n_sets;
  Side side[2];
  memset(side, 0, sizeof side);
  Batch batches[N_BATCHES] = {{0}};
  double *t[2] = {bc_calloc((size_t)pairs, sizeof(double)), bc_calloc((size_t)pairs, sizeof(double))};
  double *ratio = bc_calloc((size_t)pairs, sizeof(double));
  int rc = 1;
  char err[BATCH_ERR_LEN];
  if (!side_make(&side[0], &base, be, dev_index, &d)) goto done;
  for (int i = 0; i < n_env; i++) {
    char *eq = strchr(env[i], '=');
    char *name = strndup(env[i], (size_t)(eq - env[i]));
    setenv(name, eq + 1, 1);
    free(name);
  }
  bool ok_b = side_make(&side[1], &base, be, dev_index, &d);
  for (int i = 0; i < n_env; i++) {
    char *name = strndup(env[i], (size_t)(strchr(env[i], '=') - env[i]));
    unsetenv(name);
    free(name);
  }
  if (!ok_b) goto done;
  double lr = strcmp(graph, "pretrain") == 0 ? 0.01 : 1e-4;
  uint64_t rng = 0x9E3779B97F4A7C15ull + (uint64_t)batch;
  for (int i = 0; i < N_BATCHES; i++)
    if (!batch_make(&batches[i], &side[0].g, lr, &rng, err)) {
      fprintf(stderr, "bench_ab: %s\n", err);
      goto done;
    }
  fprintf(stderr, "bench_ab: %s batch %d on %s, B =", graph, batch, device);
  for (int i = 0; i < n_env; i++) fprintf(stderr, " %s", env[i]);
  fprintf(stderr, ": %d warmup + %d timed pairs\n", warmup, pairs);
  for (int p = 0; p < warmup + pairs; p++) {
    const Batch *b = &batches[p % N_BATCHES];
    double dt[2];
    for (int k = 0; k < 2; k++) {
      int s = p % 2 ? 1 - k : k; /* A B, then B A: neither side always goes first */
      if (!side_step(&side[s], b, (uint32_t)p, &dt[s], &d)) goto done;
    }
    if (p >= warmup) {
      t[0][p - warmup] = dt[0];
      t[1][p - warmup] = dt[1];
      ratio[p - warmup] = dt[1] / dt[0];
    }
  }
  double ma = 1e3 * median(t[0], pairs), mb = 1e3 * median(t[1], pairs), mr = median(ratio, pairs);
  printf("A %.2f ms/step (%.1f examples/s)  B %.2f ms/step (%.1f examples/s)  B/A time %.4f (min %.4f, max %.4f)\n",
         ma, 1e3 * batch / ma, mb, 1e3 * batch / mb, mr, ratio[0], ratio[pairs - 1]);
  rc = 0;
done:
  if (rc) diag_print(&d, stderr);
  for (int i = 0; i < N_BATCHES; i++) batch_free(&batches[i]);
  for (int k = 0; k < 2; k++) {
    exec_destroy(side[k].e);
    if (side[k].have_graph) graph_free(&side[k].g);
  }
  for (int i = 0; i + 1 < n_sets; i++) free((char *)sets[i].key);
  free(t[0]);
  free(t[1]);
  free(ratio);
  diag_free(&d);
  return rc;
}
