/* dist_grads.c — the averaged gradients of data-parallel training across MPI
 * ranks (runtime/dist.c) against one process. tests/dist.sh runs it under
 * `mpirun -np 2`: each rank runs its half of a global batch of the tiny BERT
 * training graphs (pretrain, nli; interp and cpu) with the all-reduce
 * installed, and every parameter gradient after the step (the average the
 * optimizer read) is compared with the gradient of the whole batch in one
 * process (the graph compiled at the global batch size, same parameters,
 * same dropout masks), which every rank also computes alone.
 *
 * Adam's update is nearly blind to the scale of the gradient, so a loss
 * curve cannot tell a sum over ranks from a mean; this can (test_dist.c
 * checks the same for replicas in one process). Not a ctest entry of its
 * own: without mpirun it is one rank and exits 77. */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "runtime/dist.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"
enum { LOCAL_BATCH = 4 };

static bool compile(Graph *g, const char *graph, const char *batch) {
  const Setting sets[] = {
      {"vocab", "40"}, {"hidden", "8"},  {"ffn", "16"},   {"heads", "2"},       {"layers", "2"},
      {"max_len", "12"}, {"batch", batch}, {"n_pred", "2"}, {"dropout", "0.2"},
  };
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = (int)(sizeof sets / sizeof sets[0]);
  o.train = true;
  Diag d;
  diag_init(&d);
  bool ok = pipeline_run(g, &o, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* ||a - b|| / (tol ||b|| + atol sqrt(n)): at most 1 when a agrees with b.
 * atol covers gradients that are zero in exact arithmetic (the key bias:
 * softmax ignores a per-query constant), which hold only rounding noise. */
static double excess(const double *a, const double *b, int64_t n, double tol, double atol) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return sqrt(num) / (tol * sqrt(den) + atol * sqrt((double)n));
}

/* One step of `graph` on backend `be`: rank r of N runs rows [r B, (r+1) B)
 * of the global batch with the all-reduce attached; the reference runs all
 * N B rows in one Exec. Every parameter gradient within tol, atol (excess). */
static void check_graph(Dist *D, const Backend *be, const char *graph, double tol, double atol) {
  int rank = dist_rank(D), N = dist_size(D);
  char full_batch[16];
  snprintf(full_batch, sizeof full_batch, "%d", LOCAL_BATCH * N);
  char local_batch[16];
  snprintf(local_batch, sizeof local_batch, "%d", LOCAL_BATCH);
  Graph gl, gf;
  if (!compile(&gl, graph, local_batch)) {
    CHECK(0);
    return;
  }
  if (!compile(&gf, graph, full_batch)) {
    CHECK(0);
    graph_free(&gl);
    return;
  }
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(be, &gl, &d), *ref = exec_create(be, &gf, &d);
  CHECK(e && ref);
  if (!e || !ref) goto done;
  CHECK(exec_init_params(e, 5, &d) && exec_init_params(ref, 5, &d));
  CHECK(dist_attach(D, &e, 1, &d));
  /* the global batch on ref; this rank's rows of it on e, and mlm_norm as
   * tasks/train.c writes it: the global batch's weight sum / N */
  bert_batch_fill(&ref, 1, &gf, 31, 0.01);
  for (int i = 0; i < gl.inputs.n; i++) {
    ValueId v = gl.inputs.data[i];
    const Value *x = &gl.values.data[v];
    ValueId vf = graph_find(&gf, x->name);
    int64_t n = shape_numel(&x->shape), nf = shape_numel(&gf.values.data[vf].shape);
    double *buf = malloc(sizeof(double) * (size_t)nf);
    CHECK(exec_read(ref, vf, buf, DTYPE_F64, &d));
    if (!strcmp(x->name, "mlm_norm")) buf[0] /= N;
    else if (x->shape.rank > 0) memmove(buf, buf + (size_t)rank * (size_t)n, sizeof(double) * (size_t)n);
    CHECK(exec_write(e, v, buf, DTYPE_F64, &d));
    free(buf);
  }
  RunContext c = {11, 0, (int64_t)rank * LOCAL_BATCH}, cf = {11, 0, 0};
  CHECK(exec_run(e, &c, &d));
  CHECK(exec_run(ref, &cf, &d));
  int n_bad = 0;
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < gl.params.n; i++) {
    const Value *p = &gl.values.data[gl.params.data[i]];
    if (p->grad < 0) continue;
    ValueId pf = graph_find(&gf, p->name);
    int64_t n = shape_numel(&p->shape);
    double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
    CHECK(pf >= 0 && exec_read(e, p->grad, a, DTYPE_F64, &d) &&
          exec_read(ref, gf.values.data[pf].grad, b, DTYPE_F64, &d));
    double err = excess(a, b, n, tol, atol);
    if (!(err <= worst)) worst = err, worst_name = p->name;
    if (!(err <= 1) && n_bad++ < 5)
      fprintf(stderr, "  rank %d, %s on %s: gradient of %s: differs by %.3g times the tolerance (%g relative, "
              "%g absolute); [0] %.9g vs %.9g (one process)\n", rank, graph, be->name, p->name, err, tol, atol,
              a[0], b[0]);
    free(a);
    free(b);
  }
  CHECK_MSG(n_bad == 0, "rank %d, %s on %s: %d of %d averaged gradients differ from one process's", rank, graph,
            be->name, n_bad, gl.params.n);
  fprintf(stderr, "  rank %d, %s on %s: %d gradients averaged over %d ranks, worst at %.3g of the tolerance (%s)\n",
          rank, graph, be->name, gl.params.n, N, worst, worst_name);
  dist_detach(D);
done:
  diag_print(&d, stderr);
  diag_free(&d);
  exec_destroy(e);
  exec_destroy(ref);
  graph_free(&gl);
  graph_free(&gf);
}

/* Runs the cases in the same order on every rank (their all-reduces pair
 * up); exit 1 on any failure, 77 with one rank. Tolerances (relative to
 * the gradient's norm; absolute per element):
 *  - interp, in double: 1e-8, 1e-14: pretraining's MLM loss divides by
 *    W + N eps per rank, not W + eps (tasks/train.c, write_mlm_norm): ~1e-9
 *    relative; the rest is summation order (~1e-16);
 *  - cpu, in f32: 1e-5, 1e-8: the order of f32 sums over examples changes
 *    (~1e-7 relative); the key bias's noise is ~2e-9 per element.
 * A sum where the mean belongs is off by a factor N, a gradient of one
 * rank's half by O(1). */
int main(int argc, char **argv) {
  (void)argc, (void)argv;
  (void)test_cases_, (void)test_n_cases_, (void)test_skipped_; /* test.h's case table: not used */
  setenv("BC_NO_JIT", "1", 1); /* cpu: the C kernel evaluator, same plan, no LLVM compiles */
  Diag d;
  diag_init(&d);
  Dist *D = dist_start(&d);
  if (!D) {
    diag_print(&d, stderr);
    return 1;
  }
  if (dist_size(D) < 2) {
    fprintf(stderr, "skipped: run under mpirun -np 2 (one rank here)\n");
    dist_stop(D, true);
    return 77;
  }
  static const struct {
    const Backend *be;
    const char *graph;
    double tol;
    double atol;
  } cases[] = {{&backend_interp, "nli", 1e-8, 1e-14}, {&backend_interp, "pretrain", 1e-8, 1e-14},
               {&backend_cpu, "nli", 1e-5, 1e-8},    {&backend_cpu, "pretrain", 1e-5, 1e-8}};
  int n_fail = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    test_failed_ = 0;
    check_graph(D, cases[i].be, cases[i].graph, cases[i].tol, cases[i].atol);
    n_fail += test_failed_ != 0;
  }
  dist_stop(D, true);
  diag_free(&d);
  return n_fail ? 1 : 0;
}
