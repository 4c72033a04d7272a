/* test_dist.c — the pieces of data-parallel training that need no second
 * process (tests/dist.sh runs mpirun):
 *  - gradient buckets (passes/schedule.c) over the node order and over the
 *    cpu kernel order of the tiny BERT graphs: every parameter gradient in
 *    exactly one bucket, buckets issued in order, every producer at or
 *    before its bucket's ready step and every reader at or after its wait
 *    step, the size cap kept, a gradient read in its own step refused;
 *  - the backend hooks (interp, cpu): each bucket is issued once and waited
 *    for once per run, in that order; when it is issued its gradients are
 *    final; and what the hooks write into them between issue and wait is
 *    what the optimizer reads: zeroing them there leaves every parameter
 *    unchanged by the Adam step;
 *  - runtime/dist.c without mpirun: one rank, collectives are no-ops;
 *    mpirun's environment as dist_launcher_* reads it; BC_TRACE's file;
 *  - device specs by what a backend can do (B:N, B:all, host lists);
 *  - several host replicas in one process (dist_run, as --device cpu:0,1,2):
 *    started from different parameters, they all hold replica 0's after
 *    dist_broadcast_exec; fed different batches, the gradient each applies
 *    is the mean of the replicas' own gradients (computed apart), and they
 *    stay identical; a replica that fails releases the others (no hang)
 *    and its error reaches the caller. */
#include "codegen/kernel.h"
#include "passes/passes.h"
#include "runtime/backend.h"
#include "runtime/dist.h"
#include "tests/test.h"
#include "tests/bert_batch.h"

#include <unistd.h>

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"

static bool compile(Graph *g, const char *graph, Diag *d) {
  static const Setting tiny[] = {
      {"vocab", "40"}, {"hidden", "8"},  {"ffn", "16"},   {"heads", "2"},       {"layers", "2"},
      {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"}, {"dropout", "0.2"},
  };
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = tiny;
  o.n_sets = (int)(sizeof tiny / sizeof tiny[0]);
  o.train = true;
  bool ok = pipeline_run(g, &o, d);
  if (!ok) diag_print(d, stderr);
  return ok;
}

static int64_t bytes_of(const Graph *g, ValueId v) {
  return shape_numel(&g->values.data[v].shape) * (int64_t)dtype_size(g->values.data[v].dtype);
}

/* The invariants of the buckets of g over steps step_of (NULL: nodes). */
static void check_buckets(const Graph *g, const int *step_of, int64_t cap) {
  Diag d;
  diag_init(&d);
  GradBuckets b;
  bool ok = grad_buckets_build(g, step_of, cap, &b, &d);
  CHECK(ok);
  if (!ok) {
    diag_print(&d, stderr);
    diag_free(&d);
    return;
  }
  int nv = g->values.n;
  int *bucket_of = malloc(sizeof(int) * (size_t)nv);
  for (int v = 0; v < nv; v++) bucket_of[v] = -1;
  for (int k = 0; k < b.n_buckets; k++) {
    CHECK(b.start[k + 1] > b.start[k]);
    if (k > 0) CHECK(b.ready_after[k] >= b.ready_after[k - 1]);
    CHECK(b.wait_before[k] > b.ready_after[k]);
    int64_t sum = 0;
    for (int i = b.start[k]; i < b.start[k + 1]; i++) {
      CHECK_EQ_INT(bucket_of[b.values[i]], -1); /* each gradient once */
      bucket_of[b.values[i]] = k;
      sum += bytes_of(g, b.values[i]);
    }
    CHECK_EQ_INT(sum, b.bytes[k]);
    CHECK(b.bytes[k] <= cap || b.start[k + 1] - b.start[k] == 1);
  }
  for (int i = 0; i < g->params.n; i++) CHECK(bucket_of[g->values.data[g->params.data[i]].grad] >= 0);
  for (int i = 0; i < g->nodes.n; i++) {
    int s = step_of ? step_of[i] : i;
    const Node *n = &g->nodes.data[i];
    if (bucket_of[n->out] >= 0) CHECK(s <= b.ready_after[bucket_of[n->out]]);
    for (int j = 0; j < n->n_in; j++)
      if (bucket_of[n->in[j]] >= 0) CHECK(s >= b.wait_before[bucket_of[n->in[j]]]);
  }
  if (cap >= (int64_t)1 << 40) CHECK_EQ_INT(b.n_buckets, 1);
  free(bucket_of);
  grad_buckets_free(&b);
  diag_free(&d);
}

static void buckets_of(const char *graph) {
  Diag d;
  diag_init(&d);
  Graph g, eg;
  if (!compile(&g, graph, &d)) {
    CHECK(0);
    return;
  }
  KernelPlan plan;
  MemPlan mem;
  CHECK(kernel_plan_compile(&g, NULL, &eg, &plan, &mem, &d));
  int64_t caps[] = {1, 512, 2048, (int64_t)1 << 40};
  for (int i = 0; i < 4; i++) {
    check_buckets(&g, NULL, caps[i]);
    check_buckets(&eg, mem.kernel_of, caps[i]);
  }
  /* the cap 1: a bucket per gradient */
  GradBuckets b;
  CHECK(grad_buckets_build(&g, NULL, 1, &b, &d));
  int n_grads = 0;
  for (int i = 0; i < g.params.n; i++) n_grads++;
  CHECK(b.n_buckets >= 2 && b.n_buckets <= n_grads);
  grad_buckets_free(&b);
  memplan_free(&mem);
  kernel_plan_free(&plan);
  graph_free(&eg);
  graph_free(&g);
  diag_free(&d);
}

TEST(buckets_nli) { buckets_of("nli"); }
TEST(buckets_pretrain) { buckets_of("pretrain"); }

TEST(bucket_read_in_its_own_step_is_refused) {
  Diag d;
  diag_init(&d);
  Graph g;
  if (!compile(&g, "nli", &d)) {
    CHECK(0);
    return;
  }
  int *one_step = calloc((size_t)g.nodes.n, sizeof(int)); /* everything fused into one kernel */
  GradBuckets b;
  CHECK(!grad_buckets_build(&g, one_step, 1 << 20, &b, &d));
  CHECK(diag_first(&d) && strstr(diag_first(&d), "is computed and read in the same step"));
  CHECK_EQ_INT(b.n_buckets, 0);
  free(one_step);
  graph_free(&g);
  diag_free(&d);
}

/* ---- the hooks ---- */

typedef struct {
  Exec *e;
  const Graph *g;
  const GradBuckets *b;
  int n_ready, n_wait;
  int *state;      /* per bucket: 0 idle, 1 issued, 2 waited */
  double **copy;   /* per gradient of the buckets: its value when issued */
  bool zero;       /* wait: zero the gradients (as an all-reduce could) */
  int errors;
} Probe;

static void probe_ready(void *ctx, int k, void *stream) {
  Probe *p = ctx;
  p->errors += stream != NULL;
  p->errors += p->state[k] != 0 || (k > 0 && p->state[k - 1] == 0); /* once, in order */
  p->state[k] = 1;
  p->n_ready++;
  Diag d;
  diag_init(&d);
  for (int i = p->b->start[k]; i < p->b->start[k + 1]; i++)
    p->errors += !exec_read(p->e, p->b->values[i], p->copy[i], DTYPE_F64, &d);
  diag_free(&d);
}

static void probe_wait(void *ctx, int k, void *stream) {
  Probe *p = ctx;
  p->errors += stream != NULL || p->state[k] != 1;
  p->state[k] = 2;
  p->n_wait++;
  if (!p->zero) return;
  for (int i = p->b->start[k]; i < p->b->start[k + 1]; i++) {
    DType t;
    void *x = exec_value_ptr(p->e, p->b->values[i], &t);
    p->errors += x == NULL || (t != DTYPE_F32 && t != DTYPE_F64);
    if (x) memset(x, 0, (size_t)shape_numel(&p->g->values.data[p->b->values[i]].shape) * dtype_size(t));
  }
}

static void hooks_on(const Backend *be) {
  Diag d;
  diag_init(&d);
  Graph g;
  if (!compile(&g, "nli", &d)) {
    CHECK(0);
    return;
  }
  Exec *e = exec_create(be, &g, &d);
  CHECK(e != NULL);
  if (!e) {
    diag_print(&d, stderr);
    graph_free(&g);
    return;
  }
  CHECK(exec_init_params(e, 5, &d));
  bert_batch_fill(&e, 1, &g, 7, 0.01);
  Probe p = {0};
  p.e = e;
  p.g = &g;
  GradSyncHooks h = {probe_ready, probe_wait, NULL, &p};
  p.b = exec_set_grad_sync(e, 600, &h, &d); /* 600 bytes: several buckets */
  CHECK(p.b != NULL);
  if (!p.b) {
    diag_print(&d, stderr);
    exec_destroy(e);
    graph_free(&g);
    return;
  }
  int nb = p.b->n_buckets, ng = p.b->start[nb];
  CHECK(nb >= 3);
  p.state = calloc((size_t)nb, sizeof(int));
  p.copy = calloc((size_t)ng, sizeof(double *));
  for (int i = 0; i < ng; i++) p.copy[i] = malloc(sizeof(double) * (size_t)shape_numel(&g.values.data[p.b->values[i]].shape));

  /* run 1: issued once, waited once, in order; gradients final when issued */
  RunContext ctx = {3, 1, 0};
  CHECK(exec_run(e, &ctx, &d));
  CHECK_EQ_INT(p.n_ready, nb);
  CHECK_EQ_INT(p.n_wait, nb);
  CHECK_EQ_INT(p.errors, 0);
  for (int i = 0; i < ng; i++) {
    int64_t n = shape_numel(&g.values.data[p.b->values[i]].shape);
    double *now = malloc(sizeof(double) * (size_t)n);
    CHECK(exec_read(e, p.b->values[i], now, DTYPE_F64, &d));
    CHECK(memcmp(now, p.copy[i], sizeof(double) * (size_t)n) == 0);
    free(now);
  }

  /* run 2: zeroed between issue and wait, the gradients Adam reads are 0;
   * with zero moments (reset) the update is 0 / (0 + eps) = 0 */
  for (int i = 0; i < g.states.n; i++) {
    const Value *v = &g.values.data[g.states.data[i]];
    if (!strstr(v->name, "adam_m") && !strstr(v->name, "adam_v")) continue;
    double *z = calloc((size_t)shape_numel(&v->shape), sizeof(double));
    CHECK(exec_write(e, g.states.data[i], z, DTYPE_F64, &d));
    free(z);
  }
  int np = g.params.n;
  double **before = calloc((size_t)np, sizeof(double *));
  for (int i = 0; i < np; i++) {
    before[i] = malloc(sizeof(double) * (size_t)shape_numel(&g.values.data[g.params.data[i]].shape));
    CHECK(exec_read(e, g.params.data[i], before[i], DTYPE_F64, &d));
  }
  memset(p.state, 0, sizeof(int) * (size_t)nb);
  p.zero = true;
  ctx.step = 2;
  CHECK(exec_run(e, &ctx, &d));
  CHECK_EQ_INT(p.errors, 0);
  int changed = 0;
  for (int i = 0; i < np; i++) {
    int64_t n = shape_numel(&g.values.data[g.params.data[i]].shape);
    double *after = malloc(sizeof(double) * (size_t)n);
    CHECK(exec_read(e, g.params.data[i], after, DTYPE_F64, &d));
    changed += memcmp(after, before[i], sizeof(double) * (size_t)n) != 0;
    free(after);
    free(before[i]);
  }
  CHECK_EQ_INT(changed, 0);
  free(before);

  /* removed: runs without hooks */
  CHECK(exec_set_grad_sync(e, 0, NULL, &d) == NULL);
  int n = p.n_ready;
  CHECK(exec_run(e, &ctx, &d));
  CHECK_EQ_INT(p.n_ready, n);
  for (int i = 0; i < ng; i++) free(p.copy[i]);
  free(p.copy);
  free(p.state);
  exec_destroy(e);
  graph_free(&g);
  if (d.n_errors) diag_print(&d, stderr);
  diag_free(&d);
}

TEST(hooks_interp) { hooks_on(&backend_interp); }
TEST(hooks_cpu) { hooks_on(&backend_cpu); }

TEST(dist_without_mpirun_is_one_rank) {
  if (dist_launcher_started()) TEST_SKIP("running under mpirun");
  unsetenv("BC_TRACE");
  Diag d;
  diag_init(&d);
  Dist *D = dist_start(&d);
  CHECK(D != NULL);
  CHECK_EQ_INT(dist_rank(D), 0);
  CHECK_EQ_INT(dist_size(D), 1);
  CHECK(!dist_is_mpi(D));
  double x[2] = {1.5, -2};
  CHECK(dist_sum(D, x, 2, &d) && x[0] == 1.5 && x[1] == -2);
  CHECK(dist_broadcast(D, x, 2, &d) && x[0] == 1.5);
  dist_step(D, 3);
  dist_stop(D, true);
  diag_free(&d);
}

/* ---- host replicas in one process ---- */

typedef struct {
  Exec **es;
  RunContext ctx;
  int fail; /* this replica fails before running; -1: none */
} Replicas;

static bool replica_job(void *p, int k, Diag *d) {
  Replicas *r = p;
  if (k == r->fail) {
    diag_error(d, SRCLOC_NONE, "replica %d fails on purpose", k);
    return false;
  }
  return exec_run(r->es[k], &r->ctx, d);
}

static void host_replicas_on(const Backend *be) {
  enum { N = 3 };
  alarm(120); /* a replica waiting forever fails the test instead of hanging it */
  Diag d;
  diag_init(&d);
  Graph g;
  if (!compile(&g, "nli", &d)) {
    CHECK(0);
    return;
  }
  Exec *es[N] = {0}, *ref = exec_create(be, &g, &d);
  CHECK(ref != NULL);
  for (int k = 0; k < N; k++) {
    es[k] = exec_create(be, &g, &d);
    CHECK(es[k] && exec_init_params(es[k], 5 + (uint64_t)k, &d));
  }
  Dist *D = dist_start(&d);
  CHECK(D != NULL);
  /* replica 0's parameters everywhere */
  CHECK(!dist_check_replicas(D, es, N, 0, &d));
  diag_free(&d);
  diag_init(&d);
  CHECK(dist_broadcast_exec(D, es, N, &d) && dist_check_replicas(D, es, N, 0, &d));
  CHECK(dist_attach(D, es, N, &d));
  /* different batches: the replicas at once, then each batch alone on ref
   * (from the same parameters), whose gradients are summed in replica
   * order and divided by N in the replicas' type, as dist.c does */
  Replicas r = {es, {3, 1, 0}, -1};
  for (int k = 0; k < N; k++) bert_batch_fill(&es[k], 1, &g, 40 + (uint32_t)k, 0.01);
  CHECK(dist_run(D, N, replica_job, &r, &d));
  GradBuckets gb;
  CHECK(grad_buckets_build(&g, NULL, 0, &gb, &d)); /* every parameter gradient */
  int n_grads = gb.start[gb.n_buckets], n_bad = 0;
  double **mean = calloc((size_t)n_grads, sizeof(double *));
  DType t = DTYPE_F64;
  for (int k = 0; k < N; k++) {
    CHECK(exec_init_params(ref, 5, &d));
    bert_batch_fill(&ref, 1, &g, 40 + (uint32_t)k, 0.01);
    CHECK(exec_run(ref, &r.ctx, &d));
    for (int i = 0; i < n_grads; i++) {
      ValueId gv = gb.values[i];
      int64_t n = shape_numel(&g.values.data[gv].shape);
      CHECK(exec_value_ptr(es[0], gv, &t) != NULL);
      double *x = malloc(sizeof(double) * (size_t)n);
      CHECK(exec_read(ref, gv, x, DTYPE_F64, &d));
      if (!mean[i]) mean[i] = x;
      else {
        for (int64_t j = 0; j < n; j++)
          mean[i][j] = t == DTYPE_F32 ? (double)((float)mean[i][j] + (float)x[j]) : mean[i][j] + x[j];
        free(x);
      }
    }
  }
  for (int i = 0; i < n_grads; i++) {
    ValueId gv = gb.values[i];
    int64_t n = shape_numel(&g.values.data[gv].shape);
    for (int64_t j = 0; j < n; j++) mean[i][j] = t == DTYPE_F32 ? (double)((float)mean[i][j] / (float)N) : mean[i][j] / N;
    double *x = malloc(sizeof(double) * (size_t)n);
    for (int k = 0; k < N; k++) {
      CHECK(exec_read(es[k], gv, x, DTYPE_F64, &d));
      n_bad += memcmp(x, mean[i], sizeof(double) * (size_t)n) != 0;
    }
    free(x);
    free(mean[i]);
  }
  free(mean);
  grad_buckets_free(&gb);
  CHECK(n_grads > 0);
  CHECK_EQ_INT(n_bad, 0);
  CHECK(dist_check_replicas(D, es, N, 1, &d));
  /* a replica that fails: the others are released, its error comes back */
  diag_print(&d, stderr);
  diag_free(&d);
  diag_init(&d);
  r.fail = 1;
  r.ctx.step = 2;
  CHECK(!dist_run(D, N, replica_job, &r, &d));
  CHECK(strstr(diag_first(&d), "replica 1 fails on purpose") != NULL);
  diag_free(&d);
  diag_init(&d);
  dist_stop(D, true);
  for (int k = 0; k < N; k++) exec_destroy(es[k]);
  exec_destroy(ref);
  graph_free(&g);
  diag_print(&d, stderr);
  diag_free(&d);
  alarm(0);
}

/* mpirun's environment, read by dist.c alone: set by hand here (and put
 * back), so no mpirun is needed. */
TEST(launcher_environment) {
  if (dist_launcher_started()) TEST_SKIP("running under mpirun");
  CHECK_EQ_INT(dist_launcher_ranks(), 0);
  CHECK_EQ_INT(dist_launcher_rank(), 0);
  CHECK_EQ_INT(dist_launcher_local_ranks(), 1);
  CHECK_EQ_INT(dist_launcher_local_rank(), -1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  CHECK(dist_launcher_started());
  CHECK_EQ_INT(dist_launcher_ranks(), 4);
  CHECK_EQ_INT(dist_launcher_rank(), 3);
  CHECK_EQ_INT(dist_launcher_local_ranks(), 2);
  CHECK_EQ_INT(dist_launcher_local_rank(), 1);
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  CHECK(!dist_launcher_started());
  setenv("PMIX_RANK", "0", 1); /* another launcher's variable says "started" too */
  CHECK(dist_launcher_started());
  unsetenv("PMIX_RANK");
}

/* Device specs follow what a backend can do: "B:N" and "B:all" only for a
 * backend with devices (no driver needed to parse them); lists of a host
 * backend are replicas. */
TEST(device_specs_by_capability) {
  Diag d;
  diag_init(&d);
  int dev = -1, devices[BC_MAX_REPLICAS], n = 0;
  const Backend *b = backend_parse("cuda:3", &dev, &d);
  CHECK(b && b->device_count && dev == 3);
  b = backend_parse("cpu", &dev, &d);
  CHECK(b && !b->device_count && b->compiled && b->host_memory && dev == 0);
  b = backend_parse("interp", &dev, &d);
  CHECK(b && !b->compiled && b->host_memory);
  CHECK_EQ_INT(d.n_errors, 0);
  CHECK(backend_parse("cpu:1", &dev, &d) == NULL);
  CHECK(diag_first(&d) && strstr(diag_first(&d), "choose interp, cpu, cuda or cuda:N"));
  diag_free(&d);
  diag_init(&d);
  b = backend_parse_list("cpu:0,1,2", devices, &n, &d);
  CHECK(b && !b->device_count && n == 3 && devices[2] == 2);
  b = backend_parse_list("cuda:2,0", devices, &n, &d);
  CHECK(b && b->device_count && n == 2 && devices[0] == 2 && devices[1] == 0);
  CHECK_EQ_INT(d.n_errors, 0);
  CHECK(backend_parse_list("interp:all", devices, &n, &d) == NULL);
  CHECK(backend_parse_list("tpu:0,1", devices, &n, &d) == NULL);
  CHECK_EQ_INT(d.n_errors, 2);
  diag_free(&d);
}

/* BC_TRACE in one process (no mpirun): the training loop's spans reach the
 * file when dist_stop writes it, on the training lane. */
TEST(trace_of_one_process) {
  if (dist_launcher_started()) TEST_SKIP("running under mpirun");
  char path[] = "/tmp/bc_test_traceXXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  setenv("BC_TRACE", path, 1);
  Diag d;
  diag_init(&d);
  Dist *D = dist_start(&d);
  unsetenv("BC_TRACE");
  CHECK(D != NULL);
  double t0 = dist_now_ns();
  dist_trace(D, "step", "step", t0, t0 + 2500, 7);
  dist_stop(D, true);
  FILE *f = fopen(path, "r");
  char text[4096] = "";
  size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
  text[len] = 0;
  if (f) fclose(f);
  CHECK(strstr(text, "\"traceEvents\"") != NULL);
  CHECK(strstr(text, "{\"name\": \"step\", \"cat\": \"step\", \"ph\": \"X\"") != NULL);
  CHECK(strstr(text, "\"dur\": 2.500, \"pid\": 0, \"tid\": 0, \"args\": {\"step\": 7}") != NULL);
  unlink(path);
  diag_free(&d);
}

TEST(host_replicas_interp) { host_replicas_on(&backend_interp); }
TEST(host_replicas_cpu) {
  /* f32 replicas; the C kernel evaluator spares four LLVM compiles (~8 s)
   * and runs the same plan, hooks and buffers */
  setenv("BC_NO_JIT", "1", 1);
  host_replicas_on(&backend_cpu);
  unsetenv("BC_NO_JIT");
}

TEST_MAIN()
