/* bench_step.c — times whole compiled training steps (forward, loss,
 * backward, Adam) of models/bert.yaml on one backend and reports, per
 * configuration (graph x batch): examples/s, ms/step, compile time
 * (pipeline_run and exec_create apart), memory (arena vs intermediates, peak
 * RSS), the share of step time spent in GEMMs, and achieved GFLOP/s against
 * the CPU's peak FMA rate (on cuda: a peak given with --peak-gflops). Output:
 * an aligned table, and JSON with --json (graph/json.h's writer; a file is
 * replaced atomically, graph/fileio.h). Devices: interp, cpu, cuda, cuda:N.
 *
 * Not here: correctness (tests/ check the numbers; this only checks that the
 * loss is finite), data loading (batches are random but shaped like d2l's),
 * the peak measurement itself (bench/peak_fma.c).
 *
 * Each configuration runs in a forked child so that peak RSS is its own; the
 * child sends its Result back through a pipe. The timed step is what a
 * training loop pays per batch: writing the batch's inputs, exec_run, and
 * reading the loss back (which also waits for an asynchronous backend).
 * CUDA is never initialized in the parent when configurations run in
 * children (a CUDA context does not survive fork): the device check runs in
 * a child too. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_batch.h"
#include "graph/fileio.h"
#include "graph/json.h"
#include "passes/passes.h"
#include "runtime/backend.h"

#define DEFAULT_MODEL "models/bert.yaml"
enum { MAX_CONFIGS = 64, MAX_SETS = 64, N_BATCHES = 4, ERR_LEN = BATCH_ERR_LEN, MAX_STEP_LOG = 256 };

static const char usage[] =
    "usage: bench_step [options]\n"
    "\n"
    "Compiles training steps (forward, loss, backward, Adam; like `bertc compile\n"
    "--train`) of a YAML model and times them on one backend. Without --graph\n"
    "and --batch it runs the reference configurations of models/bert.yaml:\n"
    "nli at batch 64 and 512, pretrain at batch 64, 128 and 256.\n"
    "\n"
    "options:\n"
    "  --model FILE        model file (default " DEFAULT_MODEL ")\n"
    "  --graph NAME        graph to time (repeatable; default: nli and pretrain)\n"
    "  --batch N           batch size (repeatable; default: nli 64 512,\n"
    "                      pretrain 64 128 256); every graph runs at every batch\n"
    "  --device NAME       backend: cpu (default), interp, cuda (= cuda:0),\n"
    "                      cuda:N\n"
    "  --steps N           timed steps per configuration (default 10)\n"
    "  --warmup N          untimed steps first (default 2)\n"
    "  --threads N         threads for the backend: sets BC_THREADS,\n"
    "                      OMP_NUM_THREADS and OPENBLAS_NUM_THREADS and\n"
    "                      re-executes itself so libraries see them at load\n"
    "                      (default: leave the environment alone; the cpu\n"
    "                      backend then uses BC_THREADS, else one per CPU)\n"
    "  --set NAME=VALUE    override a hyperparameter (repeatable), e.g.\n"
    "                      --set hidden=8 --set layers=1 --set max_len=16\n"
    "  --lr X              learning rate input (default: nli 1e-4,\n"
    "                      pretrain 0.01, as d2l)\n"
    "  --seed N            seed of parameters, dropout and batches (default 1)\n"
    "  --json FILE         also write the results as JSON (- = stdout); FILE\n"
    "                      is replaced whole or not at all\n"
    "  --peak-json FILE    JSON written by peak_fma: peak_gflops_1core with\n"
    "                      --threads 1, else the largest \"...gflops...\" value\n"
    "  --peak-gflops X     the peak FMA rate in GFLOP/s, given directly\n"
    "  --peak-exe PATH     peak_fma to run when neither of the above is given\n"
    "                      (default: peak_fma beside this executable; skipped\n"
    "                      when missing, and then fractions of peak are null;\n"
    "                      never on cuda, whose peak is not the CPU's: give\n"
    "                      --peak-gflops, e.g. 66900 for an H100 SXM's f32)\n"
    "  --no-peak           do not look for the peak at all\n"
    "  --no-fork           run configurations in this process (peak RSS is\n"
    "                      then the maximum so far)\n"
    "  -h, --help          this text\n"
    "\n"
    "Reported per configuration: examples/s and ms/step of the median timed\n"
    "step (JSON adds means, min, max and every step); compile time of\n"
    "pipeline_run and of exec_create (which includes code generation); arena\n"
    "bytes vs the sum of the values it holds (from exec_stats, null where the\n"
    "backend lacks it); peak RSS; GEMM share of step time (exec_stats); FLOPs\n"
    "per step counted from the graph (2*M*N*K per matmul, 1 per element of\n"
    "elementwise ops and reduction inputs); achieved GFLOP/s and its fraction\n"
    "of the peak. A timed step writes a batch, runs, and reads the loss.\n"
    "\n"
    "exit status: 0 all configurations ran, 1 one failed, 2 bad usage,\n"
    "3 the device is not available (unknown name, no GPU or driver).\n";

typedef struct {
  const char *graph;
  int batch;
} Config;

/* What a child reports for one configuration: fixed size, no pointers, so it
 * crosses the pipe as bytes. Negative byte counts and NAN mean "unknown". */
typedef struct {
  int ok;
  char error[ERR_LEN];
  int steps, warmup;
  int64_t seq_len, n_pred, vocab;
  double pipeline_s, exec_create_s, init_s;
  double timed_s, ms_mean, ms_median, ms_min, ms_max;
  double loss_first, loss_last;
  int64_t n_nodes, n_matmul;
  int64_t flops, matmul_flops;      /* per step, counted from the graph */
  int64_t param_count, param_bytes; /* parameters only */
  int64_t node_value_bytes;         /* every node's output with a buffer of its own */
  int has_stats; /* exec_stats answered (the interpreter keeps none) */
  int64_t n_kernels, pinned_bytes, arena_bytes, sum_intermediate_bytes;
  double gemm_ns, total_ns; /* over the timed steps */
  int64_t peak_rss_bytes;
  double step_ms[MAX_STEP_LOG]; /* the first timed steps, in order */
} Result;

typedef struct {
  const char *model, *device; /* device: the spec as given ("cuda:1") */
  int device_index;           /* N of cuda:N; 0 elsewhere */
  const Setting *sets;
  int n_sets;
  int steps, warmup;
  double lr; /* NAN = per graph */
  uint64_t seed;
} Options;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- counting from the graph ---- */

/* FLOPs of one run of g: 2*M*N*K per matmul (times its batch dims), one per
 * output element of elementwise ops and select, one per input element of
 * reductions and per update element of scatter_add; layout ops, gathers,
 * random and constants count nothing. An attention counts as the matmuls
 * it replaces, 2 * 2*B*heads*Tq*Tk*d (scores, weighted sum), its backward
 * as their gradients' 4 (the scores it recomputes are not counted: PyTorch
 * stores them instead), and the softmax rows as 1 per weight. */
static void count_flops(const Graph *g, Result *r) {
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    const Shape *out = &g->values.data[n->out].shape;
    int64_t numel = shape_numel(out);
    if (n->op == OP_MATMUL) {
      const Shape *a = &g->values.data[n->in[0]].shape;
      int64_t K = n->a.trans_a ? a->dim[a->rank - 2] : a->dim[a->rank - 1];
      int64_t f = 2 * K * numel; /* numel = batch dims * M * N */
      r->matmul_flops += f;
      r->flops += f;
      r->n_matmul++;
    } else if ((op_info[n->op].flags & OPF_ELEMENTWISE) || n->op == OP_SELECT) {
      r->flops += numel;
    } else if (op_info[n->op].flags & OPF_REDUCE) {
      r->flops += shape_numel(&g->values.data[n->in[0]].shape);
    } else if (n->op == OP_SCATTER_ADD) {
      r->flops += shape_numel(&g->values.data[n->in[1]].shape);
    } else if (n->op == OP_ATTENTION || n->op == OP_ATTENTION_GRAD) {
      const Shape *q = &g->values.data[n->in[0]].shape, *w = &n->a.shape; /* [B, heads, Tq, Tk] */
      int64_t weights = shape_numel(w), f = (n->op == OP_ATTENTION ? 2 : 4) * 2 * weights * (q->dim[2] / n->a.heads);
      r->matmul_flops += f;
      r->flops += f + weights;
      r->n_matmul += n->op == OP_ATTENTION ? 2 : 4;
    }
  }
  r->n_nodes = g->nodes.n;
  for (int i = 0; i < g->values.n; i++) {
    const Value *v = &g->values.data[i];
    int64_t bytes = shape_numel(&v->shape) * (int64_t)dtype_size(v->dtype);
    if (v->kind == VALUE_PARAM) r->param_count += shape_numel(&v->shape), r->param_bytes += bytes;
    else if (v->kind == VALUE_NODE && !(g->nodes.data[v->node].op == OP_ASSIGN))
      r->node_value_bytes += bytes;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nothing measured yet: zero, with NAN and -1 where 0 would be a value. */
static void result_init(Result *r) {
  memset(r, 0, sizeof *r);
  r->loss_first = r->loss_last = NAN;
  r->n_kernels = r->pinned_bytes = r->arena_bytes = r->sum_intermediate_bytes = -1;
  r->gemm_ns = r->total_ns = NAN;
}

static void set_error(Result *r, const char *what, const Diag *d) {
  const char *first = d ? diag_first(d) : "";
  snprintf(r->error, ERR_LEN, "%s%s%s", what, *first ? ": " : "", first);
}

/* Compiles, prepares and times one configuration into *r. */
static void run_config(const Options *opt, const Config *c, const Backend *be, Result *r) {
  result_init(r);
  r->steps = opt->steps;
  r->warmup = opt->warmup;
  Diag d;
  diag_init(&d);
  Graph g;
  bool have_graph = false;
  Exec *e = NULL;
  Batch batches[N_BATCHES] = {{0}};
  double *times = bc_calloc((size_t)(opt->steps > 0 ? opt->steps : 1), sizeof(double));

  Setting *sets = bc_calloc((size_t)opt->n_sets + 1, sizeof(Setting));
  memcpy(sets, opt->sets, (size_t)opt->n_sets * sizeof(Setting));
  char batch_str[32];
  snprintf(batch_str, sizeof batch_str, "%d", c->batch);
  sets[opt->n_sets] = (Setting){"batch", batch_str}; /* last wins over any --set batch */
  CompileOptions co;
  compile_options_default(&co);
  co.model_path = opt->model;
  co.graph_name = c->graph;
  co.sets = sets;
  co.n_sets = opt->n_sets + 1;
  co.train = true;
  static const char *const no_outputs[] = {NULL};
  co.outputs = no_outputs; /* the step reads its loss, as a trainer reads only scalars */

  double t0 = now_s();
  if (!pipeline_run(&g, &co, &d)) {
    set_error(r, "compile failed", &d);
    goto cleanup;
  }
  have_graph = true;
  r->pipeline_s = now_s() - t0;
  count_flops(&g, r);
  ValueId tok = graph_find(&g, "tokens"), pos = graph_find(&g, "pred_positions");
  r->seq_len = tok >= 0 ? g.values.data[tok].shape.dim[g.values.data[tok].shape.rank - 1] : 0;
  r->n_pred = pos >= 0 ? g.values.data[pos].shape.dim[1] : 0;
  r->vocab = (int64_t)graph_hparam(&g, "vocab", 0);
  if (g.loss < 0) {
    snprintf(r->error, ERR_LEN, "graph '%s' has no loss", g.name);
    goto cleanup;
  }

  t0 = now_s();
  e = exec_create_on(be, opt->device_index, &g, &d);
  r->exec_create_s = now_s() - t0;
  if (!e) {
    set_error(r, "exec_create failed", &d);
    goto cleanup;
  }
  t0 = now_s();
  if (!exec_init_params(e, opt->seed, &d)) {
    set_error(r, "exec_init_params failed", &d);
    goto cleanup;
  }
  r->init_s = now_s() - t0;

  double lr = !isnan(opt->lr) ? opt->lr : !strcmp(c->graph, "pretrain") ? 0.01 : 1e-4;
  uint64_t rng = opt->seed * 0x9E3779B97F4A7C15ull + (uint64_t)c->batch;
  for (int i = 0; i < N_BATCHES; i++)
    if (!batch_make(&batches[i], &g, lr, &rng, r->error)) goto cleanup;

  ExecStats before = {0}, after = {0};
  int total = opt->warmup + opt->steps;
  for (int s = 0; s < total; s++) {
    if (s == opt->warmup) r->has_stats = exec_stats(e, &before);
    const Batch *b = &batches[s % N_BATCHES];
    double ts = now_s();
    for (int i = 0; i < b->n; i++) {
      DType host = g.values.data[b->ids[i]].dtype;
      if (!exec_write(e, b->ids[i], b->bufs[i], host, &d)) {
        set_error(r, "exec_write failed", &d);
        goto cleanup;
      }
    }
    RunContext ctx = {opt->seed, (uint32_t)s, 0};
    float loss = NAN;
    if (!exec_run(e, &ctx, &d) || !exec_read(e, g.loss, &loss, DTYPE_F32, &d)) {
      set_error(r, "exec_run failed", &d);
      goto cleanup;
    }
    double dt = now_s() - ts;
    if (s >= opt->warmup) {
      times[s - opt->warmup] = dt, r->timed_s += dt;
      if (s - opt->warmup < MAX_STEP_LOG) r->step_ms[s - opt->warmup] = 1e3 * dt;
    }
    if (s == 0) r->loss_first = loss;
    r->loss_last = loss;
    if (!isfinite(loss)) {
      snprintf(r->error, ERR_LEN, "loss is %g at step %d", (double)loss, s);
      goto cleanup;
    }
  }
  if (opt->steps == 0) r->has_stats = exec_stats(e, &before);
  if (r->has_stats && exec_stats(e, &after)) {
    r->n_kernels = after.n_kernels;
    r->pinned_bytes = after.pinned_bytes;
    r->arena_bytes = after.arena_bytes;
    r->sum_intermediate_bytes = after.sum_intermediate_bytes;
    /* the counters sum over runs: the timed steps are the difference */
    r->gemm_ns = after.gemm_ns - before.gemm_ns;
    r->total_ns = after.total_ns - before.total_ns;
  }
  if (opt->steps > 0) {
    r->ms_mean = 1e3 * r->timed_s / opt->steps;
    qsort(times, (size_t)opt->steps, sizeof(double), cmp_double);
    r->ms_min = 1e3 * times[0];
    r->ms_max = 1e3 * times[opt->steps - 1];
    r->ms_median = 1e3 * (opt->steps % 2 ? times[opt->steps / 2]
                                         : 0.5 * (times[opt->steps / 2 - 1] + times[opt->steps / 2]));
  }
  r->ok = 1;
cleanup:
  {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss_bytes = (int64_t)ru.ru_maxrss * 1024;
  }
  for (int i = 0; i < N_BATCHES; i++) batch_free(&batches[i]);
  exec_destroy(e);
  if (have_graph) graph_free(&g);
  diag_free(&d);
  free(sets);
  free(times);
}

/* Up to n bytes from fd until end of file or an error; how many came. */
static size_t read_all(int fd, void *buf, size_t n) {
  size_t got = 0;
  for (ssize_t k; got < n && (k = read(fd, (char *)buf + got, n - got)) != 0;) {
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) break;
    got += (size_t)k;
  }
  close(fd);
  return got;
}

/* waitpid's status of the child pid. */
static int reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

/* Runs one configuration in a child process so that ru_maxrss is its own. */
static void run_config_forked(const Options *opt, const Config *c, const Backend *be, Result *r) {
  int fds[2];
  if (pipe(fds) != 0) {
    run_config(opt, c, be, r);
    return;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]), close(fds[1]);
    run_config(opt, c, be, r);
    return;
  }
  if (pid == 0) {
    close(fds[0]);
    Result *mine = bc_calloc(1, sizeof *mine);
    run_config(opt, c, be, mine);
    const char *p = (const char *)mine;
    size_t left = sizeof *mine;
    while (left > 0) {
      ssize_t k = write(fds[1], p, left);
      if (k <= 0 && errno != EINTR) _exit(1);
      if (k > 0) p += k, left -= (size_t)k;
    }
    _exit(0);
  }
  close(fds[1]);
  size_t got = read_all(fds[0], r, sizeof *r);
  int status = reap(pid);
  if (got != sizeof *r) {
    result_init(r);
    if (WIFSIGNALED(status))
      snprintf(r->error, ERR_LEN, "benchmark process killed by signal %d (%s)", WTERMSIG(status),
               WTERMSIG(status) == SIGKILL ? "out of memory?" : strsignal(WTERMSIG(status)));
    else snprintf(r->error, ERR_LEN, "benchmark process exited with status %d", WEXITSTATUS(status));
  }
}

/* ---- the peak FMA rate ---- */

/* Walks v in document order for peak_from_json: *exact is the first number
 * under "peak_gflops", *preferred the last under `prefer`, *best the largest
 * under a key containing "gflop" (keys compared case-insensitively). */
static void find_peak(const JsonValue *v, const char *prefer, double *exact, double *preferred,
                      double *best) {
  for (int i = 0; i < v->n && isnan(*exact); i++) {
    const JsonValue *x = &v->items[i];
    if (x->kind == JSON_ARRAY || x->kind == JSON_OBJECT) find_peak(x, prefer, exact, preferred, best);
    if (v->kind != JSON_OBJECT || x->kind != JSON_NUMBER) continue;
    char key[128];
    snprintf(key, sizeof key, "%s", v->keys[i]);
    for (char *k = key; *k; k++) *k = (char)tolower((unsigned char)*k);
    if (!strcmp(key, "peak_gflops")) *exact = x->num;
    else if (prefer && !strcmp(key, prefer)) *preferred = x->num;
    if (strstr(key, "gflop") && (isnan(*best) || x->num > *best)) *best = x->num;
  }
}

/* The peak in GFLOP/s from peak_fma's JSON text s[0, n) ({"peak_gflops_1core":
 * x, "peak_gflops_all": y, ...}): the number under key "peak_gflops" or under
 * `prefer` (non-NULL), else the largest number under any key containing
 * "gflop" (case-insensitive), at any depth: with several threads the all-core
 * rate, or the one-core rate where noise put it higher. NAN when there is
 * none or s is not JSON (said on stderr, naming `from`). */
static double peak_from_json(const char *s, size_t n, const char *prefer, const char *from) {
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  JsonOptions jo = {.allow_nonfinite = true};
  double exact = NAN, preferred = NAN, best = NAN;
  bool parsed = json_parse(s, n, &jo, &arena, &root, &err);
  if (parsed) find_peak(&root, prefer, &exact, &preferred, &best);
  else fprintf(stderr, "bench_step: %s is not JSON (byte %zu: %s)\n", from, err.pos, err.msg);
  arena_free(&arena);
  double x = !isnan(exact) ? exact : !isnan(preferred) ? preferred : best;
  if (parsed && isnan(x)) fprintf(stderr, "bench_step: no peak GFLOP/s found in %s\n", from);
  return x;
}

/* one thread is judged against the one-core peak */
static const char *peak_key(int threads) { return threads == 1 ? "peak_gflops_1core" : NULL; }

static double peak_from_file(const char *path, int threads) {
  Diag d;
  diag_init(&d);
  size_t n = 0;
  char *s = bc_read_file(path, &n, &d);
  if (!s) fprintf(stderr, "bench_step: %s\n", diag_first(&d));
  diag_free(&d);
  double x = s ? peak_from_json(s, n, peak_key(threads), path) : NAN;
  free(s);
  return x;
}

/* Runs peak_fma and reads the JSON it prints; NAN when it is not there. */
static double peak_from_exe(const char *exe, int threads) {
  char self[4096];
  char path[4200];
  if (!exe) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NAN;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return NAN;
    *slash = '\0';
    snprintf(path, sizeof path, "%s/peak_fma", self);
    exe = path;
  }
  if (access(exe, X_OK) != 0) {
    fprintf(stderr, "bench_step: %s not found; fractions of peak will be null\n", exe);
    return NAN;
  }
  char *cmd = bc_asprintf("'%s'", exe);
  fprintf(stderr, "bench_step: measuring the peak with %s\n", exe);
  fflush(NULL);
  FILE *f = popen(cmd, "r");
  free(cmd);
  if (!f) return NAN;
  StrBuf out = {0};
  char chunk[4096];
  for (size_t k; (k = fread(chunk, 1, sizeof chunk, f)) > 0;) strbuf_add(&out, chunk, k);
  pclose(f);
  char *from = bc_asprintf("the output of %s", exe);
  double x = peak_from_json(out.data ? out.data : "", out.n, peak_key(threads), from);
  free(from);
  strbuf_free(&out);
  return x;
}

/* ---- output ---- */

static double gemm_fraction(const Result *r) {
  return r->total_ns > 0 && r->gemm_ns >= 0 ? r->gemm_ns / r->total_ns : NAN;
}
/* Rates use the median step, robust to other processes on a shared machine
 * (bench/torch_ref.py reports the same statistic); *_mean use the total. */
static double examples_per_s(const Config *c, const Result *r) {
  return r->ok && r->ms_median > 0 ? 1e3 * c->batch / r->ms_median : NAN;
}
static double examples_per_s_mean(const Config *c, const Result *r) {
  return r->ok && r->timed_s > 0 ? (double)c->batch * r->steps / r->timed_s : NAN;
}
static double gflops(const Result *r) {
  return r->ok && r->ms_median > 0 ? (double)r->flops / (r->ms_median * 1e6) : NAN;
}

static void cpu_model(char *out, size_t n) {
  snprintf(out, n, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) != 0) continue;
    char *c = strchr(line, ':');
    if (!c) break;
    c++;
    while (*c == ' ') c++;
    c[strcspn(c, "\n")] = '\0';
    snprintf(out, n, "%s", c);
    break;
  }
  fclose(f);
}

/* The JSON's members: `sep` (a comma, a line break: the file is laid out
 * for reading) then "key": value. Numbers as %.6g; NaN, an infinity and a
 * negative count mean unknown and are written null. */
static void put_key(StrBuf *b, const char *sep, const char *key) {
  strbuf_puts(b, sep);
  json_write_key(b, key);
  strbuf_putc(b, ' ');
}
static void put_num(StrBuf *b, const char *sep, const char *key, double x) {
  put_key(b, sep, key);
  json_write_double_fmt(b, "%.6g", x);
}
static void put_count(StrBuf *b, const char *sep, const char *key, int64_t x) {
  put_key(b, sep, key);
  if (x >= 0) json_write_int(b, x);
  else strbuf_puts(b, "null");
}
static void put_int(StrBuf *b, const char *sep, const char *key, int64_t x) {
  put_key(b, sep, key);
  json_write_int(b, x);
}
static void put_str(StrBuf *b, const char *sep, const char *key, const char *s) {
  put_key(b, sep, key);
  if (s) json_write_string(b, s);
  else strbuf_puts(b, "null");
}
static void put_bool(StrBuf *b, const char *sep, const char *key, bool x) {
  put_key(b, sep, key);
  strbuf_puts(b, x ? "true" : "false");
}
static void put_nums(StrBuf *b, const char *sep, const char *key, const double *x, int n) {
  put_key(b, sep, key);
  strbuf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    strbuf_puts(b, i ? ", " : "");
    json_write_double_fmt(b, "%.6g", x[i]);
  }
  strbuf_putc(b, ']');
}

static void write_json(StrBuf *b, const Options *opt, const Config *cs, const Result *rs, int n,
                       double peak, int threads, const double *load0, const double *load1) {
  char cpu[256];
  cpu_model(cpu, sizeof cpu);
  const char *nl = ",\n  ", *nl5 = ",\n     ";
  put_str(b, "{\n  ", "tool", "bench_step");
  put_str(b, nl, "device", opt->device);
  put_str(b, nl, "model", opt->model);
  put_str(b, nl, "cpu", cpu);
  put_int(b, nl, "online_cpus", sysconf(_SC_NPROCESSORS_ONLN));
  put_count(b, nl, "threads", threads);
  put_key(b, nl, "sets");
  strbuf_putc(b, '{');
  for (int i = 0; i < opt->n_sets; i++) put_str(b, i ? ", " : "", opt->sets[i].key, opt->sets[i].value);
  strbuf_putc(b, '}');
  put_nums(b, nl, "loadavg_start", load0, 3);
  put_nums(b, ", ", "loadavg_end", load1, 3);
  put_num(b, nl, "peak_gflops", peak);
  put_key(b, nl, "configs");
  strbuf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    const Config *c = &cs[i];
    const Result *r = &rs[i];
    put_str(b, i ? ",\n    {" : "\n    {", "graph", c->graph);
    put_int(b, ", ", "batch", c->batch);
    put_int(b, ", ", "seq_len", r->seq_len);
    put_int(b, ", ", "n_pred", r->n_pred);
    put_int(b, ", ", "vocab", r->vocab);
    put_bool(b, ", ", "ok", r->ok);
    put_str(b, nl5, "error", r->ok ? NULL : r->error);
    put_int(b, nl5, "steps", r->steps);
    put_int(b, ", ", "warmup", r->warmup);
    put_num(b, ", ", "examples_per_s", examples_per_s(c, r));
    put_num(b, ", ", "ms_per_step", r->ok ? r->ms_median : NAN);
    put_num(b, ", ", "examples_per_s_mean", examples_per_s_mean(c, r));
    put_num(b, ", ", "ms_per_step_mean", r->ok ? r->ms_mean : NAN);
    put_num(b, ", ", "ms_per_step_min", r->ok ? r->ms_min : NAN);
    put_num(b, ", ", "ms_per_step_max", r->ok ? r->ms_max : NAN);
    put_num(b, nl5, "compile_pipeline_s", r->pipeline_s);
    put_num(b, ", ", "compile_exec_create_s", r->exec_create_s);
    put_num(b, ", ", "init_params_s", r->init_s);
    put_bool(b, nl5, "exec_stats", r->has_stats);
    put_count(b, ", ", "kernels", r->n_kernels);
    put_count(b, ", ", "pinned_bytes", r->pinned_bytes);
    put_count(b, ", ", "arena_bytes", r->arena_bytes);
    put_count(b, ", ", "sum_intermediate_bytes", r->sum_intermediate_bytes);
    put_count(b, ", ", "graph_node_value_bytes", r->node_value_bytes);
    put_count(b, ", ", "param_count", r->param_count);
    put_count(b, ", ", "peak_rss_bytes", r->peak_rss_bytes);
    put_num(b, nl5, "gemm_fraction", gemm_fraction(r));
    put_int(b, ", ", "graph_nodes", r->n_nodes);
    put_int(b, ", ", "matmuls", r->n_matmul);
    put_count(b, ", ", "flops_per_step", r->flops);
    put_count(b, ", ", "matmul_flops_per_step", r->matmul_flops);
    put_num(b, nl5, "gflops", gflops(r));
    put_num(b, ", ", "fraction_of_peak", gflops(r) / peak);
    put_num(b, ", ", "loss_first", r->loss_first);
    put_num(b, ", ", "loss_last", r->loss_last);
    int n_ms = r->ok ? (r->steps < MAX_STEP_LOG ? r->steps : MAX_STEP_LOG) : 0;
    put_nums(b, nl5, "step_ms", r->step_ms, n_ms);
    strbuf_putc(b, '}');
  }
  strbuf_puts(b, "\n  ]\n}\n");
}

/* The JSON to stdout ("-") or, atomically, to path; false with the reason
 * on stderr. */
static bool save_json(const char *path, const StrBuf *b) {
  if (!strcmp(path, "-")) {
    if (fwrite(b->data, 1, b->n, stdout) == b->n && fflush(stdout) == 0) return true;
    fprintf(stderr, "bench_step: cannot write the JSON to stdout: %s\n", strerror(errno));
    return false;
  }
  Diag d;
  diag_init(&d);
  bool ok = file_write_atomic(path, b->data, b->n, &d);
  if (!ok) fprintf(stderr, "bench_step: %s\n", diag_first(&d));
  diag_free(&d);
  return ok;
}

static void fmt_num(char *buf, size_t n, double x, const char *fmt) {
  if (isfinite(x)) snprintf(buf, n, fmt, x);
  else snprintf(buf, n, "-");
}

static void fmt_mib(char *buf, size_t n, int64_t bytes) {
  if (bytes >= 0) snprintf(buf, n, "%.1f", (double)bytes / (1024.0 * 1024.0));
  else snprintf(buf, n, "-");
}

static void print_table(FILE *f, const Config *cs, const Result *rs, int n, double peak) {
  fprintf(f, "%-9s %6s %10s %9s %9s %9s %9s %9s %9s %6s %8s %7s\n", "graph", "batch", "examples/s",
          "ms/step", "pipe_s", "create_s", "arenaMiB", "interMiB", "rssMiB", "gemm%", "GFLOP/s",
          "%peak");
  for (int i = 0; i < n; i++) {
    const Result *r = &rs[i];
    char ex[32], ms[32], pi[32], cr[32], ar[32], in[32], rss[32], gm[32], gf[32], pk[32];
    fmt_num(ex, sizeof ex, examples_per_s(&cs[i], r), "%.1f");
    fmt_num(ms, sizeof ms, r->ok ? r->ms_median : NAN, "%.2f");
    fmt_num(pi, sizeof pi, r->pipeline_s, "%.3f");
    fmt_num(cr, sizeof cr, r->exec_create_s, "%.3f");
    fmt_mib(ar, sizeof ar, r->arena_bytes);
    fmt_mib(in, sizeof in, r->sum_intermediate_bytes);
    fmt_mib(rss, sizeof rss, r->peak_rss_bytes);
    fmt_num(gm, sizeof gm, 100 * gemm_fraction(r), "%.1f");
    fmt_num(gf, sizeof gf, gflops(r), "%.2f");
    fmt_num(pk, sizeof pk, 100 * gflops(r) / peak, "%.1f");
    fprintf(f, "%-9s %6d %10s %9s %9s %9s %9s %9s %9s %6s %8s %7s\n", cs[i].graph, cs[i].batch, ex,
            ms, pi, cr, ar, in, rss, gm, gf, pk);
    if (!r->ok) fprintf(f, "  ^ failed: %s\n", r->error);
  }
  bool any_missing = false;
  for (int i = 0; i < n; i++) any_missing |= rs[i].ok && !rs[i].has_stats;
  if (any_missing) fprintf(f, "(-: the backend keeps no exec_stats: arena, intermediates, gemm%%)\n");
  if (!isfinite(peak)) fprintf(f, "(%%peak: no peak FMA rate; see --peak-json)\n");
}

/* ---- command line ---- */

static int bad_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "bench_step: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'bench_step --help'.\n");
  return 2;
}

static bool parse_int(const char *s, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (!*s || *end || errno || x < lo || x > hi) return false;
  *out = (int)x;
  return true;
}

static bool parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  *out = strtod(s, &end);
  return *s && !*end && errno == 0;
}

/* With --threads N, the thread variables must be in the environment before
 * OpenBLAS (or OpenMP) initializes at load, so set them and exec again. */
static void apply_threads(int threads, char **argv) {
  char want[32];
  snprintf(want, sizeof want, "%d", threads);
  const char *vars[] = {"BC_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"};
  bool same = true;
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (!v || strcmp(v, want) != 0) same = false;
    setenv(vars[i], want, 1);
  }
  if (same || getenv("BC_BENCH_REEXEC")) return;
  setenv("BC_BENCH_REEXEC", "1", 1);
  fflush(NULL);
  execv("/proc/self/exe", argv);
  /* exec failed: carry on; libraries loaded already may ignore the setting */
  fprintf(stderr, "bench_step: re-exec for --threads failed (%s); continuing\n", strerror(errno));
}

/* "error: x" -> "x" (a diagnostic quoted inside our own message). */
static const char *skip_error_prefix(const char *s) { return strncmp(s, "error: ", 7) ? s : s + 7; }

/* Whether device `index` of backend b can run here; false with the reason in
 * why (ERR_LEN bytes). For cuda the driver is asked in a child process
 * unless configurations run in this one (no_fork): a CUDA context made
 * before fork is unusable in the children that run the configurations. */
static bool device_available(const Backend *b, int index, bool no_fork, char *why) {
  if (!b->device_count) return true;
  int fds[2] = {-1, -1};
  pid_t pid = -1;
  if (!no_fork && pipe(fds) == 0) {
    fflush(NULL);
    pid = fork();
    if (pid < 0) close(fds[0]), close(fds[1]);
  }
  if (pid > 0) { /* parent: the child's answer, "" = available */
    close(fds[1]);
    char buf[ERR_LEN] = "";
    size_t got = read_all(fds[0], buf, sizeof buf - 1);
    buf[got] = '\0';
    int status = reap(pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    snprintf(why, ERR_LEN, "%s", got ? buf : "the device check crashed");
    return false;
  }
  /* the child, or this process when not forking */
  Diag d;
  diag_init(&d);
  int n = 0;
  bool ok = b->device_count(&n, &d);
  char msg[ERR_LEN] = "";
  if (!ok) snprintf(msg, sizeof msg, "%s", skip_error_prefix(diag_first(&d)));
  else if (index >= n) {
    snprintf(msg, sizeof msg, "%s:%d asked for, the driver reports %d device(s)", b->name, index, n);
    ok = false;
  }
  diag_free(&d);
  if (pid == 0) {
    close(fds[0]);
    size_t len = strlen(msg);
    if (len && write(fds[1], msg, len) < 0) _exit(2);
    _exit(ok ? 0 : 1);
  }
  snprintf(why, ERR_LEN, "%s", msg);
  return ok;
}

int main(int argc, char **argv) {
  Options opt = {DEFAULT_MODEL, "cpu", 0, NULL, 0, 10, 2, NAN, 1};
  const char *graphs[MAX_CONFIGS];
  int batches[MAX_CONFIGS], n_graphs = 0, n_batches = 0, threads = -1;
  Setting sets[MAX_SETS];
  int n_sets = 0;
  const char *json_path = NULL, *peak_json = NULL, *peak_exe = NULL;
  double peak = NAN;
  bool no_peak = false, no_fork = false;
  char *owned[MAX_SETS];
  int n_owned = 0, rc = 2;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = !strcmp(a, "--model") || !strcmp(a, "--graph") || !strcmp(a, "--batch") ||
                 !strcmp(a, "--device") || !strcmp(a, "--steps") || !strcmp(a, "--warmup") ||
                 !strcmp(a, "--threads") || !strcmp(a, "--set") || !strcmp(a, "--lr") ||
                 !strcmp(a, "--seed") || !strcmp(a, "--json") || !strcmp(a, "--peak-json") ||
                 !strcmp(a, "--peak-gflops") || !strcmp(a, "--peak-exe");
    if (takes) {
      if (!val) {
        rc = bad_usage("option %s needs a value", a);
        goto done;
      }
      i++;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      rc = 0;
      goto done;
    } else if (!strcmp(a, "--model")) {
      opt.model = val;
    } else if (!strcmp(a, "--graph")) {
      if (n_graphs == MAX_CONFIGS) goto too_many;
      graphs[n_graphs++] = val;
    } else if (!strcmp(a, "--batch")) {
      if (n_batches == MAX_CONFIGS) goto too_many;
      if (!parse_int(val, 1, 1L << 24, &batches[n_batches++])) {
        rc = bad_usage("--batch needs a positive integer, got '%s'", val);
        goto done;
      }
    } else if (!strcmp(a, "--device")) {
      opt.device = val;
    } else if (!strcmp(a, "--steps") || !strcmp(a, "--warmup") || !strcmp(a, "--threads")) {
      int x;
      if (!parse_int(val, !strcmp(a, "--threads") ? 1 : 0, 1000000, &x)) {
        rc = bad_usage("not a valid count: '%s'", val);
        goto done;
      }
      if (a[2] == 's') opt.steps = x;
      else if (a[2] == 'w') opt.warmup = x;
      else threads = x;
    } else if (!strcmp(a, "--set")) {
      const char *eq = strchr(val, '=');
      if (!eq || eq == val) {
        rc = bad_usage("--set needs NAME=VALUE, got '%s'", val);
        goto done;
      }
      if (n_sets == MAX_SETS) goto too_many;
      char *key = bc_strdup(val);
      key[eq - val] = '\0';
      owned[n_owned++] = key;
      sets[n_sets++] = (Setting){key, eq + 1};
    } else if (!strcmp(a, "--lr") || !strcmp(a, "--peak-gflops")) {
      double x;
      if (!parse_double(val, &x) || !(x > 0)) {
        rc = bad_usage("not a positive number: '%s'", val);
        goto done;
      }
      if (a[2] == 'l') opt.lr = x;
      else peak = x;
    } else if (!strcmp(a, "--seed")) {
      int x;
      if (!parse_int(val, 0, 2147483647L, &x)) {
        rc = bad_usage("--seed needs a non-negative integer, got '%s'", val);
        goto done;
      }
      opt.seed = (uint64_t)x;
    } else if (!strcmp(a, "--json")) {
      json_path = val;
    } else if (!strcmp(a, "--peak-json")) {
      peak_json = val;
    } else if (!strcmp(a, "--peak-exe")) {
      peak_exe = val;
    } else if (!strcmp(a, "--no-peak")) {
      no_peak = true;
    } else if (!strcmp(a, "--no-fork")) {
      no_fork = true;
    } else if (!strcmp(a, "--train")) {
      /* the default and only mode; accepted for symmetry with bertc */
    } else {
      rc = bad_usage("unknown option '%s'", a);
      goto done;
    }
  }
  if (threads > 0) apply_threads(threads, argv);
  else { /* what the backend will use: BC_THREADS, else one per CPU */
    const char *bt = getenv("BC_THREADS");
    if (!bt || !parse_int(bt, 1, 1 << 20, &threads)) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  }
  opt.sets = sets;
  opt.n_sets = n_sets;

  const Backend *be;
  {
    Diag d;
    diag_init(&d);
    be = backend_parse(opt.device, &opt.device_index, &d);
    char why[ERR_LEN];
    if (!be) snprintf(why, sizeof why, "%s", skip_error_prefix(diag_first(&d)));
    diag_free(&d);
    if (be && !device_available(be, opt.device_index, no_fork, why)) be = NULL;
    if (!be) {
      fprintf(stderr, "bench_step: device '%s' is not available: %s\n", opt.device, why);
      rc = 3;
      goto done;
    }
  }

  Config cs[MAX_CONFIGS];
  int n = 0;
  if (!n_graphs) graphs[n_graphs++] = "nli", graphs[n_graphs++] = "pretrain";
  for (int gi = 0; gi < n_graphs; gi++) {
    /* pretrain also at 128, bertc's fastest batch on a 2-core CPU */
    static const int def_nli[] = {64, 512}, def_pre[] = {64, 128, 256};
    bool pre = !strcmp(graphs[gi], "pretrain");
    const int *bs = n_batches ? batches : pre ? def_pre : def_nli;
    int nb = n_batches ? n_batches : pre ? 3 : 2;
    for (int bi = 0; bi < nb; bi++) {
      if (n == MAX_CONFIGS) goto too_many;
      cs[n++] = (Config){graphs[gi], bs[bi]};
    }
  }

  /* peak_fma measures the CPU: no use for a GPU's fraction of peak */
  bool cpu_peak = be->host_memory;
  if (!no_peak && isnan(peak) && (cpu_peak || peak_json))
    peak = peak_json ? peak_from_file(peak_json, threads) : peak_from_exe(peak_exe, threads);

  Result *rs = bc_calloc((size_t)n, sizeof(Result));
  double load0[3] = {NAN, NAN, NAN}, load1[3] = {NAN, NAN, NAN};
  getloadavg(load0, 3);
  rc = 0;
  for (int i = 0; i < n; i++) {
    fprintf(stderr, "bench_step: %s batch %d on %s: %d warmup + %d timed steps\n", cs[i].graph,
            cs[i].batch, opt.device, opt.warmup, opt.steps);
    if (no_fork) run_config(&opt, &cs[i], be, &rs[i]);
    else run_config_forked(&opt, &cs[i], be, &rs[i]);
    if (!rs[i].ok) {
      fprintf(stderr, "bench_step: %s batch %d failed: %s\n", cs[i].graph, cs[i].batch,
              rs[i].error);
      rc = 1;
    }
  }
  getloadavg(load1, 3);
  /* with --json - the JSON alone goes to stdout, so it can be piped */
  print_table(json_path && !strcmp(json_path, "-") ? stderr : stdout, cs, rs, n, peak);
  if (json_path) {
    StrBuf b = {0};
    write_json(&b, &opt, cs, rs, n, peak, threads, load0, load1);
    if (!save_json(json_path, &b)) rc = 1;
    strbuf_free(&b);
  }
  free(rs);
  goto done;
too_many:
  fprintf(stderr, "bench_step: too many --graph/--batch/--set values (at most %d)\n", MAX_CONFIGS);
  rc = 2;
done:
  for (int i = 0; i < n_owned; i++) free(owned[i]);
  return rc;
}
