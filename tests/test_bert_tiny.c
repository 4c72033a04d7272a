/* test_bert_tiny.c — the whole BERT training steps of models/bert.yaml at a
 * tiny size, on the reference interpreter:
 *  - every sampled parameter gradient of the `pretrain` and `nli` training
 *    graphs agrees with central finite differences of the loss (double);
 *  - 50 training steps on tests/data/tiny_nli.tsv at least halve the loss,
 *    and two runs with the same seed give bit-identical losses.
 * Autodiff is compared with finite differences of the same graph, so this
 * checks the gradients of whatever the model computes, not the model: a
 * wrong constant or a dropped term in models/ has consistent gradients and
 * passes here. The model's forward (every block, and the whole tiny BERT's
 * encoder, heads and losses) is checked against straightforward C in
 * test_models.c (block_*, tiny_bert_*_forward_matches_reference). */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "runtime/philox.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"
enum { VOCAB = 40, T = 12, B = 4 };

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"}, {"dropout", "0.2"},
};

static bool compile(Graph *g, const char *graph, const char *batch, Diag *d) {
  CompileOptions o;
  compile_options_default(&o);
  Setting sets[sizeof tiny / sizeof tiny[0]];
  memcpy(sets, tiny, sizeof tiny);
  for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
    if (!strcmp(sets[i].key, "batch")) sets[i].value = batch;
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = (int)(sizeof tiny / sizeof tiny[0]);
  o.train = true;
  bool ok = pipeline_run(g, &o, d);
  if (!ok) diag_print(d, stderr);
  return ok;
}

static double read_loss(Exec *e, const Graph *g, Diag *d) {
  double l = NAN;
  CHECK(exec_read(e, g->loss, &l, DTYPE_F64, d));
  return l;
}

static void grad_check(const char *graph) {
  Diag d;
  diag_init(&d);
  Graph g;
  if (!compile(&g, graph, "4", &d)) {
    CHECK(0);
    diag_free(&d);
    return;
  }
  Exec *e = exec_create(&backend_interp, &g, &d);
  CHECK(e != NULL);
  CHECK(exec_init_params(e, 11, &d));
  bert_batch_fill(&e, 1, &g, 3, 0.01);
  /* originals of every parameter, restored before each run (a run applies
   * the Adam update) */
  int np = g.params.n;
  double **orig = calloc((size_t)np, sizeof(double *));
  for (int i = 0; i < np; i++) {
    const Value *v = &g.values.data[g.params.data[i]];
    orig[i] = malloc(sizeof(double) * (size_t)shape_numel(&v->shape));
    CHECK(exec_read(e, g.params.data[i], orig[i], DTYPE_F64, &d));
  }
  RunContext ctx = {42, 3, 0}; /* same dropout masks in every run */
  CHECK(exec_run(e, &ctx, &d));
  uint32_t s = 99;
  int n_checked = 0;
  for (int k = 0; k < 40; k++) {
    int pi = (int)bert_batch_rnd(&s, (uint32_t)np);
    const Value *pv = &g.values.data[g.params.data[pi]];
    int64_t n = shape_numel(&pv->shape);
    int64_t j = bert_batch_rnd(&s, (uint32_t)n);
    double *gbuf = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < np; i++) CHECK(exec_write(e, g.params.data[i], orig[i], DTYPE_F64, &d));
    CHECK(exec_run(e, &ctx, &d));
    CHECK(exec_read(e, pv->grad, gbuf, DTYPE_F64, &d));
    double analytic = gbuf[j];
    free(gbuf);
    /* central differences in double: truncation error O(eps^2), rounding
     * error ~1e-16/eps; eps 1e-6 keeps both near 1e-10 */
    double eps = 1e-6, lp, lm, saved = orig[pi][j];
    orig[pi][j] = saved + eps;
    for (int i = 0; i < np; i++) CHECK(exec_write(e, g.params.data[i], orig[i], DTYPE_F64, &d));
    CHECK(exec_run(e, &ctx, &d));
    lp = read_loss(e, &g, &d);
    orig[pi][j] = saved - eps;
    for (int i = 0; i < np; i++) CHECK(exec_write(e, g.params.data[i], orig[i], DTYPE_F64, &d));
    CHECK(exec_run(e, &ctx, &d));
    lm = read_loss(e, &g, &d);
    orig[pi][j] = saved;
    double fd = (lp - lm) / (2 * eps);
    /* tolerance: FD error ~1e-9 absolute; ReLU kinks within eps of an input
     * are astronomically unlikely with these random values */
    if (fabs(fd - analytic) > 1e-6 + 1e-4 * fabs(fd))
      fprintf(stderr, "  %s %s[%lld]: autodiff %.10g, finite differences %.10g\n", graph, pv->name,
              (long long)j, analytic, fd);
    CHECK_NEAR(analytic, fd, 1e-6, 1e-4);
    n_checked++;
  }
  CHECK_EQ_INT(n_checked, 40);
  for (int i = 0; i < np; i++) free(orig[i]);
  free(orig);
  diag_print(&d, stderr);
  exec_destroy(e);
  graph_free(&g);
  diag_free(&d);
}

TEST(pretrain_gradients_match_finite_differences) { grad_check("pretrain"); }
TEST(nli_gradients_match_finite_differences) { grad_check("nli"); }

/* ---- training on the tiny fixture ---- */

/* The whole fixture (16 examples) is one batch, so 50 steps are 50 epochs. */
enum { TB = 16 };
#define TRAIN_B_STR "16"

typedef struct {
  int label;
  int p[T], np, h[T], nh;
} Example;

static int load_fixture(Example *ex, int max) {
  FILE *f = fopen(BC_SOURCE_DIR "/tests/data/tiny_nli.tsv", "r");
  CHECK(f != NULL);
  if (!f) return 0;
  char line[512];
  int n = 0;
  while (n < max && fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    Example *e = &ex[n];
    memset(e, 0, sizeof *e);
    char *p = strtok(line, "\t");
    e->label = atoi(p);
    char *prem = strtok(NULL, "\t"), *hyp = strtok(NULL, "\t\n");
    for (char *t = strtok(prem, " "); t; t = strtok(NULL, " ")) e->p[e->np++] = atoi(t);
    for (char *t = strtok(hyp, " "); t; t = strtok(NULL, " \n")) e->h[e->nh++] = atoi(t);
    n++;
  }
  fclose(f);
  return n;
}

/* <cls> p <sep> h <sep>, segments 0 then 1, padded with <pad> = 0. */
static void write_batch(Exec *e, const Graph *g, const Example *ex, int first, int n_ex, Diag *d) {
  double tok[TB * T] = {0}, seg[TB * T] = {0}, vl[TB], lab[TB], lr = 0.01;
  for (int b = 0; b < TB; b++) {
    const Example *x = &ex[(first + b) % n_ex];
    int t = 0;
    tok[b * T + t++] = 2;
    for (int i = 0; i < x->np; i++) tok[b * T + t++] = x->p[i];
    tok[b * T + t++] = 3;
    for (int i = 0; i < x->nh; i++) seg[b * T + t] = 1, tok[b * T + t++] = x->h[i];
    seg[b * T + t] = 1, tok[b * T + t++] = 3;
    vl[b] = t;
    lab[b] = x->label;
  }
  CHECK(exec_write(e, graph_find(g, "tokens"), tok, DTYPE_F64, d));
  CHECK(exec_write(e, graph_find(g, "segments"), seg, DTYPE_F64, d));
  CHECK(exec_write(e, graph_find(g, "valid_len"), vl, DTYPE_F64, d));
  CHECK(exec_write(e, graph_find(g, "label"), lab, DTYPE_F64, d));
  CHECK(exec_write(e, graph_find(g, "lr"), &lr, DTYPE_F64, d));
}

static void train(const Graph *g, double *losses, int steps) {
  Diag d;
  diag_init(&d);
  Example ex[32];
  int n_ex = load_fixture(ex, 32);
  CHECK(n_ex == 16);
  Exec *e = exec_create(&backend_interp, g, &d);
  CHECK(e && exec_init_params(e, 1234, &d));
  for (int s = 0; s < steps; s++) {
    write_batch(e, g, ex, 0, n_ex, &d);
    RunContext ctx = {1234, (uint32_t)s, 0};
    CHECK(exec_run(e, &ctx, &d));
    losses[s] = read_loss(e, g, &d);
  }
  diag_print(&d, stderr);
  exec_destroy(e);
  diag_free(&d);
}

TEST(nli_training_halves_loss_deterministically) {
  Diag d;
  diag_init(&d);
  Graph g;
  if (!compile(&g, "nli", TRAIN_B_STR, &d)) {
    CHECK(0);
    diag_free(&d);
    return;
  }
  enum { STEPS = 50 };
  double a[STEPS], b[STEPS];
  train(&g, a, STEPS);
  train(&g, b, STEPS);
  double first = a[0], last = 0;
  for (int i = STEPS - 4; i < STEPS; i++) last += a[i] / 4; /* mean of the last 4 steps */
  if (getenv("BC_TEST_VERBOSE")) for (int i = 0; i < STEPS; i++) fprintf(stderr, "%.3f ", a[i]);
  fprintf(stderr, "  nli loss: step 0 %.4f, last 4 steps mean %.4f\n", first, last);
  CHECK(first > 0.8); /* ~ln 3 at initialization */
  CHECK_MSG(last <= 0.5 * first, "loss fell from %g to %g", first, last);
  CHECK(memcmp(a, b, sizeof a) == 0); /* bit-identical with the same seed */
  graph_free(&g);
  diag_free(&d);
}

TEST_MAIN()
