/* train.c — pretraining (WikiText-2: masked LM + next sentence), SNLI
 * fine-tuning, evaluation and prediction, as d2l's chapter runs them
 * (D2L.md): d2l's data rules (wikitext.c, snli.c), the YAML model compiled
 * into one training step, Adam, d2l's metrics.
 *
 * A run folder holds checkpoint.safetensors (parameters, Adam moments,
 * step, seed, hparams, vocabulary hash), vocab.txt, metrics.jsonl and
 * curves.svg. Checkpoints are written atomically; --resume continues from
 * the last one and, because batches depend only on (seed, epoch) and dropout
 * on (seed, step), repeats the losses of an uninterrupted run exactly.
 *
 * Deliberate choices: a partial last training batch is dropped (the step is
 * compiled for one batch size; d2l keeps it); evaluation pads its last batch
 * and counts only real examples; the loss is the batch mean (D2L.md).
 *
 * Data parallel (TrainOptions.dist, runtime/dist.h): every rank builds the
 * same global batch, and each of its replicas (one, or one per device of
 * --device cuda:0,1 / cuda:all / cpu:0,1, run at once by dist_run) trains
 * on its slice (Split below), with
 * pretraining's MLM normalizer taken from the global batch (write_mlm_norm);
 * the step is compiled for the slice; evaluation batches are dealt out
 * round robin and the counts summed. Everything that writes the run folder or prints runs
 * on rank 0; everything collective (broadcasts, sums, replica checks) runs
 * on every rank at the same point of the loop. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../runtime/backend.h"
#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "dataset.h"
#include "report.h"
#include "snli.h"
#include "vocab.h"
#include "wikitext.h"

#define CHECKPOINT_FILE "checkpoint.safetensors"

void train_options_default(TrainOptions *o, const char *task) {
  memset(o, 0, sizeof(*o));
  o->task = task;
  o->model = "models/bert.yaml";
  o->device = "cpu";
  o->max_len = 128;
  bool pre = task && strcmp(task, "pretrain") == 0;
  o->steps = pre ? 4000 : 0;
  o->epochs = pre ? 0 : 5;
  o->batch = pre ? 256 : 512;
  o->eval_batch = 256;
  o->lr = pre ? 0.01 : 1e-4;
}

/* ---- small helpers ---- */

static char *join(const char *a, const char *b) { return bc_asprintf("%s/%s", a, b); }

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* mkdir -p */
static bool make_dir(const char *p, Diag *d) {
  char *s = bc_strdup(p);
  bool ok = true;
  for (char *c = s + 1; ok; c++) {
    if (*c != '/' && *c != '\0') continue;
    char saved = *c;
    *c = '\0';
    if (mkdir(s, 0777) != 0 && errno != EEXIST) ok = false;
    *c = saved;
    if (!saved) break;
  }
  free(s);
  if (!ok) diag_error(d, (SrcLoc){bc_intern(p), 0, 0}, "cannot create the run folder: %s", strerror(errno));
  return ok;
}

static const char *data_dir(const char *given, Diag *d) {
  const char *dir = given ? given : getenv("BERT_DATA");
  if (!dir || !*dir)
    diag_error(d, (SrcLoc){"<command line>", 0, 0}, "no data folder: pass --data DIR or set BERT_DATA");
  return dir && *dir ? dir : NULL;
}

/* The folder of a file path ("." when it has none); caller frees. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return bc_strdup(".");
  char *s = bc_strdup(path);
  s[slash - path] = '\0';
  return s;
}

/* ---- data parallel ---- */

static bool is_root(const TrainOptions *o) { return dist_rank(o->dist) == 0; }

/* Progress messages: rank 0 only. */
static void info(const TrainOptions *o, const char *fmt, ...) BC_PRINTF(2, 3);
static void info(const TrainOptions *o, const char *fmt, ...) {
  if (!is_root(o)) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
}

/* This process's replicas (one, or one per device of a device list such as
 * cuda:0,1) and their parts of the global batch: replica k of rank r is
 * replica r * n_local + k of size in all. */
typedef struct {
  int n_local;   /* replicas in this process */
  int first;     /* global index of this process's replica 0 */
  int size;      /* replicas in all */
  int n_ranks;   /* processes */
  int local;     /* examples per replica */
  const Backend *backend;
  int devices[BC_MAX_REPLICAS];
  bool have_batch[BC_MAX_REPLICAS];
  DataBatch batch[BC_MAX_REPLICAS]; /* size > 1: the slices */
  int64_t check_every; /* BC_DIST_CHECK=N: compare the replicas every N steps */
} Split;

static bool split_init(Split *sp, const TrainOptions *o, Diag *d) {
  memset(sp, 0, sizeof(*sp));
  sp->backend = backend_parse_list(o->device, sp->devices, &sp->n_local, d);
  if (!sp->backend) return false;
  /* under mpirun, `--device cuda` means one GPU per rank: rank r of a node
   * takes cuda:(its local rank); cuda:N pins every rank to GPU N */
  int lr = dist_launcher_local_rank();
  if (sp->backend->device_count && strcmp(o->device, sp->backend->name) == 0 && lr >= 0) sp->devices[0] = lr;
  sp->n_ranks = dist_size(o->dist);
  if (sp->n_local > 1 && !sp->backend->device_count && sp->n_ranks > 1) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--device %s runs %d host replicas in one process, which is not for mpirun: give each rank one "
               "(--device %s)",
               o->device, sp->n_local, sp->backend->name);
    return false;
  }
  int ls = dist_launcher_local_ranks();
  if (sp->n_local > 1 && sp->backend->device_count && ls > 1) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--device %s would give each of the %d ranks on this node the same %d GPUs: with several ranks "
               "per node use --device cuda (rank r takes GPU r)",
               o->device, ls, sp->n_local);
    return false;
  }
  sp->size = sp->n_ranks * sp->n_local;
  sp->first = dist_rank(o->dist) * sp->n_local;
  if (o->batch % sp->size != 0) {
    char over[96];
    if (sp->n_local == 1) snprintf(over, sizeof over, "%d ranks", sp->size);
    else if (sp->n_ranks == 1) snprintf(over, sizeof over, "%d replicas (--device %s)", sp->size, o->device);
    else snprintf(over, sizeof over, "%d replicas (%d ranks x %d devices)", sp->size, sp->n_ranks, sp->n_local);
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--batch %d cannot be split evenly over %s (%d %% %d = %d): pass a global batch that is a "
               "multiple of the number of replicas",
               o->batch, over, o->batch, sp->size, o->batch % sp->size);
    return false;
  }
  sp->local = o->batch / sp->size;
  const char *c = getenv("BC_DIST_CHECK");
  sp->check_every = c && *c ? atoll(c) : 0;
  return true;
}

/* Global index of local replica k's first example in a batch. */
static int64_t split_first(const Split *sp, int k) { return (int64_t)(sp->first + k) * sp->local; }

/* "cuda:0,1 (2 replicas)", "cpu (2 ranks)", "cuda" */
static void split_where(const Split *sp, const char *device, char *buf, size_t cap) {
  if (sp->size == 1) snprintf(buf, cap, "%s", device);
  else if (sp->n_local == 1) snprintf(buf, cap, "%s (%d ranks)", device, sp->size);
  else if (sp->n_ranks == 1) snprintf(buf, cap, "%s (%d replicas)", device, sp->size);
  else snprintf(buf, cap, "%s (%d ranks x %d devices)", device, sp->n_ranks, sp->n_local);
}

/* The batch local replica k runs: the global one, or its rows of it. */
static const DataBatch *split_batch(Split *sp, const DataBatch *global, int k) {
  if (sp->size == 1) return global;
  DataBatch *lb = &sp->batch[k];
  if (!sp->have_batch[k]) {
    data_batch_init(lb, &global->data, sp->local);
    sp->have_batch[k] = true;
  }
  int64_t first = split_first(sp, k);
  for (int f = 0; f < global->data.n_fields; f++) {
    size_t row = (size_t)data_field_row_bytes(&global->data.fields[f]);
    memcpy(lb->data.fields[f].data, (const char *)global->data.fields[f].data + (size_t)first * row,
           (size_t)sp->local * row);
  }
  memcpy(lb->rows, global->rows + first, sizeof(int32_t) * (size_t)sp->local);
  int64_t real = global->n_real - first;
  lb->n_real = real < 0 ? 0 : real > sp->local ? sp->local : (int)real;
  return lb;
}

static void split_free(Split *sp) {
  for (int k = 0; k < BC_MAX_REPLICAS; k++)
    if (sp->have_batch[k]) data_batch_free(&sp->batch[k]);
}

/* One Exec of g per local replica; false with an error (es[] then holds
 * those made, for destroy_execs). */
static bool make_execs(const Split *sp, const Graph *g, Exec **es, Diag *d) {
  for (int k = 0; k < sp->n_local; k++)
    if (!(es[k] = exec_create_on(sp->backend, sp->devices[k], g, d))) return false;
  return true;
}

static void destroy_execs(Exec **es) {
  for (int k = 0; k < BC_MAX_REPLICAS; k++) {
    exec_destroy(es[k]);
    es[k] = NULL;
  }
}

/* Rank 0's parameters, optimizer state, start step and training time, on
 * every rank (after initialization, --init or --resume on rank 0). */
static bool sync_start(const TrainOptions *o, const Split *sp, Exec **es, int64_t *start, double *time_offset,
                       Diag *d) {
  double x[2] = {(double)*start, *time_offset};
  if (!dist_broadcast(o->dist, x, 2, d) || !dist_broadcast_exec(o->dist, es, sp->n_local, d)) return false;
  *start = (int64_t)x[0];
  *time_offset = x[1];
  return dist_attach(o->dist, es, sp->n_local, d);
}

/* Settings owned as strings: the user's, then the ones the data decides. */
typedef struct {
  Setting s[2 * TRAIN_MAX_SETS];
  char *owned[TRAIN_MAX_SETS];
  int n, n_owned;
} Sets;

static void sets_init(Sets *s, const Setting *user, int n_user) {
  memset(s, 0, sizeof(*s));
  for (int i = 0; i < n_user; i++) s->s[s->n++] = user[i];
}

static void sets_add(Sets *s, const char *key, double value) {
  char *v = bc_asprintf("%.17g", value);
  s->owned[s->n_owned++] = v;
  s->s[s->n++] = (Setting){key, v};
}

static void sets_free(Sets *s) {
  for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
}

static bool compile(Graph *g, const char *model, const char *graph, const Sets *s, bool train, Diag *d) {
  CompileOptions c;
  compile_options_default(&c);
  c.model_path = model;
  c.graph_name = graph;
  c.sets = s->s;
  c.n_sets = s->n;
  c.train = train;
  return pipeline_run(g, &c, d);
}

static ValueId output_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->outputs.n; i++)
    if (strcmp(g->values.data[g->outputs.data[i]].name, name) == 0) return g->outputs.data[i];
  return -1;
}

/* Copies a batch's fields into the graph inputs of the same names. */
static bool write_batch(Exec *e, const Graph *g, const DataBatch *b, double lr, Diag *d) {
  for (int i = 0; i < b->data.n_fields; i++) {
    const DataField *f = &b->data.fields[i];
    ValueId v = graph_find(g, f->name);
    if (v < 0) continue; /* e.g. pretraining fields the nli graph does not read */
    if (!exec_write(e, v, f->data, f->dtype == DATA_I32 ? DTYPE_I32 : DTYPE_F32, d)) return false;
  }
  ValueId lv = graph_find(g, "lr");
  if (lv >= 0) {
    float x = (float)lr;
    if (!exec_write(e, lv, &x, DTYPE_F32, d)) return false;
  }
  return true;
}

/* Pretraining's MLM normalizer, the graph input mlm_norm (models/bert.yaml,
 * pretrain_loss_normed: mlm_loss = sum(ce * w) / (mlm_norm + 1e-8)): the sum
 * W of the GLOBAL batch's pred_weights over N ranks, W / N. Every rank
 * builds the same global batch, so each computes it alone; rank r's MLM
 * loss is then N * sum_r(ce * w) / (W + N * 1e-8), and the mean over ranks
 * (the all-reduce of the gradients, the reported loss) is the one-process
 * loss up to eps and summation order. The weights are 0/1, so W is an exact
 * integer and with N = 1 the graph computes d2l's sum(w) + 1e-8 bit for
 * bit, also on the interpreter (written as f64). No-op for graphs without
 * the input (tiny/bert.yaml normalizes in the graph). */
static bool write_mlm_norm(Exec *e, const Graph *g, const DataBatch *global, int n_ranks, Diag *d) {
  ValueId v = graph_find(g, "mlm_norm");
  if (v < 0) return true;
  const DataField *f = dataset_field(&global->data, "pred_weights");
  if (!f || f->dtype != DATA_F32) {
    diag_error(d, SRCLOC_NONE, "graph '%s' has input mlm_norm but the data have no pred_weights", g->name);
    return false;
  }
  const float *w = f->data; /* (batch_size, n_pred) */
  double sum = 0;
  for (int64_t i = 0, n = (int64_t)global->batch_size * f->width; i < n; i++) sum += w[i];
  double x = sum / n_ranks;
  return exec_write(e, v, &x, DTYPE_F64, d);
}

static bool read_scalar(Exec *e, ValueId v, double *out, Diag *d) {
  if (v < 0) {
    *out = NAN;
    return true;
  }
  return exec_read(e, v, out, DTYPE_F64, d);
}

/* Copies every parameter `to` shares by name with `from`. */
static bool copy_params(Exec *from, const Graph *gf, Exec *to, const Graph *gt, Diag *d) {
  bool ok = true;
  for (int i = 0; ok && i < gt->params.n; i++) {
    const Value *v = &gt->values.data[gt->params.data[i]];
    ValueId src = graph_find(gf, v->name);
    if (src < 0) continue;
    int64_t n = shape_numel(&v->shape);
    float *buf = bc_malloc(sizeof(float) * (size_t)n);
    ok = exec_read(from, src, buf, DTYPE_F32, d) && exec_write(to, gt->params.data[i], buf, DTYPE_F32, d);
    free(buf);
  }
  return ok;
}

static char *hparams_json(const Graph *g) {
  size_t cap = 64 + (size_t)g->hparams.n * 64;
  char *s = bc_malloc(cap);
  size_t n = (size_t)snprintf(s, cap, "{");
  for (int i = 0; i < g->hparams.n; i++)
    n += (size_t)snprintf(s + n, cap - n, "%s\"%s\": %.17g", i ? ", " : "", g->hparams.data[i].name,
                          g->hparams.data[i].value);
  snprintf(s + n, cap - n, "}");
  return s;
}

/* Parses {"name": number, ...} (as hparams_json writes it) into sets. */
static bool parse_hparams(const char *json, const char *file, Sets *s, Diag *d) {
  const char *p = json ? strchr(json, '{') : NULL;
  if (!p) goto bad;
  p++;
  for (;;) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == '}') return true;
    if (*p != '"') goto bad;
    const char *k = ++p;
    while (*p && *p != '"') p++;
    if (!*p) goto bad;
    char *key = bc_strdup(k);
    key[p - k] = '\0';
    p++;
    while (*p == ' ' || *p == ':') p++;
    char *end;
    double v = strtod(p, &end);
    if (end == p || s->n_owned >= TRAIN_MAX_SETS - 4 || s->n >= TRAIN_MAX_SETS) {
      free(key);
      goto bad;
    }
    const char *ikey = bc_intern(key);
    free(key);
    sets_add(s, ikey, v);
    p = end;
  }
bad:
  diag_error(d, (SrcLoc){bc_intern(file), 0, 0}, "checkpoint metadata: malformed or too many hparams");
  return false;
}

static void vocab_hash_str(const Vocab *v, char buf[32]) {
  snprintf(buf, 32, "%016llx", (unsigned long long)vocab_hash(v));
}

static bool save(const char *out, Exec *e, const Graph *g, const char *model, int64_t step, uint64_t seed,
                 const Vocab *v, double time_s, Diag *d) {
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  m.step = step;
  m.seed = seed;
  char hash[32];
  vocab_hash_str(v, hash);
  m.vocab_hash = bc_strdup(hash);
  m.model_path = bc_strdup(model);
  m.graph_name = bc_strdup(g->name);
  m.hparams_json = hparams_json(g);
  char ts[32];
  snprintf(ts, sizeof ts, "%.3f", time_s);
  checkpoint_meta_set(&m, "time_s", ts);
  char *path = join(out, CHECKPOINT_FILE);
  bool ok = checkpoint_save(path, e, &m, d);
  free(path);
  checkpoint_meta_free(&m);
  return ok;
}

/* --resume: when the run folder has a checkpoint, loads all of it (same
 * vocabulary required) and returns the step and training time it reached;
 * without one the run starts fresh. */
static bool resume_run(const TrainOptions *o, const char *ckpt, Exec *e, const Vocab *v, int64_t *start,
                       double *time_offset, Diag *d) {
  if (!file_exists(ckpt)) return true;
  char hash[32];
  vocab_hash_str(v, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_ALL, hash};
  CheckpointMeta m;
  int n = checkpoint_load(ckpt, e, &lo, &m, d);
  if (n >= 0) {
    *start = m.step;
    const char *t = checkpoint_meta_get(&m, "time_s");
    *time_offset = t ? atof(t) : 0;
    info(o, "%s: resuming from %s at step %lld\n", o->task, ckpt, (long long)*start);
  }
  checkpoint_meta_free(&m);
  return n >= 0;
}

/* ---- evaluation ---- */

typedef struct {
  int64_t n, correct;
  int64_t confusion[SNLI_N_LABELS][SNLI_N_LABELS]; /* [gold][predicted] */
} EvalResult;

static int argmax3(const float *x) {
  int k = 0;
  for (int i = 1; i < SNLI_N_LABELS; i++)
    if (x[i] > x[k]) k = i;
  return k;
}

/* Accuracy of `e` (the nli graph, dropout 0) on `ds`, batch by batch; with
 * several ranks each runs every size-th batch and the counts are summed. */
static bool evaluate(Exec *e, const Graph *g, const Dataset *ds, Dist *dist, EvalResult *r, Diag *d) {
  memset(r, 0, sizeof(*r));
  int B = (int)graph_hparam(g, "batch", 1);
  ValueId logits = output_named(g, "logits");
  if (logits < 0) {
    diag_error(d, SRCLOC_NONE, "graph '%s' has no output named 'logits'", g->name);
    return false;
  }
  Batcher b;
  batcher_init(&b, ds->n_examples, B, false, false);
  DataBatch db;
  data_batch_init(&db, ds, B);
  float *out = bc_malloc(sizeof(float) * (size_t)B * SNLI_N_LABELS);
  bool ok = true;
  const int32_t *labels = dataset_i32(ds, "label");
  for (int i = dist_rank(dist); ok && i < b.n_batches; i += dist_size(dist)) {
    batcher_fill(&b, ds, i, &db);
    RunContext ctx = {0, 0, 0};
    ok = write_batch(e, g, &db, 0, d) && exec_run(e, &ctx, d) && exec_read(e, logits, out, DTYPE_F32, d);
    for (int j = 0; ok && j < db.n_real; j++) {
      int gold = labels[db.rows[j]], pred = argmax3(out + j * SNLI_N_LABELS);
      r->n++;
      r->correct += gold == pred;
      r->confusion[gold][pred]++;
    }
  }
  free(out);
  data_batch_free(&db);
  batcher_free(&b);
  if (ok && dist_size(dist) > 1) {
    double x[2 + SNLI_N_LABELS * SNLI_N_LABELS] = {(double)r->n, (double)r->correct};
    for (int i = 0; i < SNLI_N_LABELS * SNLI_N_LABELS; i++) x[2 + i] = (double)r->confusion[i / SNLI_N_LABELS][i % SNLI_N_LABELS];
    ok = dist_sum(dist, x, 2 + SNLI_N_LABELS * SNLI_N_LABELS, d);
    r->n = (int64_t)x[0];
    r->correct = (int64_t)x[1];
    for (int i = 0; i < SNLI_N_LABELS * SNLI_N_LABELS; i++) r->confusion[i / SNLI_N_LABELS][i % SNLI_N_LABELS] = (int64_t)x[2 + i];
  }
  return ok;
}

/* ---- pretraining ---- */

/* One training step of every local replica, at once (dist_run): each
 * writes its slice of the global batch, runs, and reads its scalar outputs
 * and, for fine-tuning, counts its correct predictions. */
typedef struct {
  const TrainOptions *o;
  Split *sp;
  Exec **es;
  const Graph *g;
  const DataBatch *global;
  uint32_t step;
  int n_out;
  ValueId out[3];
  ValueId logits; /* fine-tuning: x[k][n_out] is replica k's correct count */
  float *logits_buf[BC_MAX_REPLICAS];
  const int32_t *labels;
  double x[BC_MAX_REPLICAS][4];
} StepJob;

static bool step_job(void *ctx, int k, Diag *d) {
  StepJob *j = ctx;
  Exec *e = j->es[k];
  const DataBatch *lb = split_batch(j->sp, j->global, k);
  RunContext c = {j->o->seed, j->step, split_first(j->sp, k)};
  if (!write_batch(e, j->g, lb, j->o->lr, d) || !write_mlm_norm(e, j->g, j->global, j->sp->size, d) ||
      !exec_run(e, &c, d))
    return false;
  for (int i = 0; i < j->n_out; i++)
    if (!read_scalar(e, j->out[i], &j->x[k][i], d)) return false;
  if (j->logits < 0) return true;
  if (!exec_read(e, j->logits, j->logits_buf[k], DTYPE_F32, d)) return false;
  double correct = 0;
  for (int r = 0; r < lb->n_real; r++)
    correct += argmax3(j->logits_buf[k] + r * SNLI_N_LABELS) == j->labels[lb->rows[r]];
  j->x[k][j->n_out] = correct;
  return true;
}

/* Runs the step on every replica; x[0..n) := the outputs summed over all
 * replicas of all ranks (n = n_out, plus the correct count when logits). */
static bool run_step(StepJob *j, double *x, int n, Diag *d) {
  if (!dist_run(j->o->dist, j->sp->n_local, step_job, j, d)) return false;
  for (int i = 0; i < n; i++) {
    x[i] = 0;
    for (int k = 0; k < j->sp->n_local; k++) x[i] += j->x[k][i];
  }
  return dist_sum(j->o->dist, x, n, d);
}

bool train_pretrain(const TrainOptions *o, Diag *d) {
  Split sp;
  if (!split_init(&sp, o, d)) return false;
  const char *dir = data_dir(o->data, d);
  if (!dir || !make_dir(o->out, d)) return false;
  char *path = bc_asprintf("%s/wikitext-2/wiki.train.tokens", dir);
  WikiOptions wo = wiki_options_default();
  wo.max_len = o->max_len;
  wo.seed = o->seed;
  WikiData w;
  info(o, "pretrain: reading %s\n", path);
  bool ok = wiki_load(&w, path, &wo, d);
  free(path);
  if (!ok) return false;
  if (o->max_examples > 0 && w.data.n_examples > o->max_examples) dataset_resize(&w.data, (int)o->max_examples);
  info(o, "pretrain: %d examples (%d sentence pairs over max_len %d skipped), vocabulary %d\n", w.data.n_examples,
       w.n_skipped, w.max_len, w.vocab.n);
  char where[96];
  split_where(&sp, o->device, where, sizeof where);
  if (sp.size > 1) info(o, "pretrain: %s, %d examples each per step of %d\n", where, sp.local, o->batch);

  Sets s;
  sets_init(&s, o->sets, o->n_sets);
  sets_add(&s, "vocab", w.vocab.n);
  sets_add(&s, "batch", sp.local);
  sets_add(&s, "max_len", w.max_len);
  sets_add(&s, "n_pred", w.n_pred);
  Graph g;
  Exec *es[BC_MAX_REPLICAS] = {0}, *e = NULL;
  Progress *prog = NULL;
  MetricsLog log = {0};
  Batcher b = {0};
  DataBatch db = {0};
  bool have_graph = false, have_batch = false;
  ok = false;
  char *vpath = join(o->out, "vocab.txt"), *ckpt = join(o->out, CHECKPOINT_FILE);
  if (is_root(o) && !vocab_save(&w.vocab, vpath, d)) goto done;
  if (!compile(&g, o->model, "pretrain", &s, true, d)) goto done;
  have_graph = true;
  if (!make_execs(&sp, &g, es, d)) goto done;
  e = es[0];
  if (!exec_init_params(e, o->seed, d)) goto done;
  int64_t start = 0;
  double time_offset = 0;
  if (is_root(o) && o->resume && !resume_run(o, ckpt, e, &w.vocab, &start, &time_offset, d)) goto done;
  if (!sync_start(o, &sp, es, &start, &time_offset, d)) goto done;
  batcher_init(&b, w.data.n_examples, o->batch, true, true);
  data_batch_init(&db, &w.data, o->batch);
  have_batch = true;
  if (b.n_batches == 0) {
    diag_error(d, SRCLOC_NONE, "batch %d is larger than the %d pretraining examples", o->batch, w.data.n_examples);
    goto done;
  }
  if (is_root(o) && !metrics_log_open(&log, o->out, start > 0 ? start : METRICS_FRESH, d)) goto done;
  ProgressConfig pc = {0};
  pc.task = "pretrain";
  pc.every_steps = o->report_every;
  if (o->report_every > 0) pc.every_s = -1;
  pc.total_steps = o->steps;
  pc.start_step = start;
  pc.time_offset_s = time_offset;
  prog = progress_start(is_root(o) ? stderr : NULL, &pc);
  StepJob job = {o, &sp, es, &g, &db, 0, 3, {g.loss, output_named(&g, "mlm_loss"), output_named(&g, "nsp_loss")},
                 -1, {0}, NULL, {{0}}};
  double sum_mlm = 0, sum_nsp = 0, train_s = time_offset;
  int64_t n_sum = 0;
  int cur_epoch = -1;
  for (int64_t step = start; step < o->steps; step++) {
    dist_step(o->dist, step);
    int epoch = (int)(step / b.n_batches);
    if (epoch != cur_epoch) {
      batcher_set_epoch(&b, o->seed, epoch);
      cur_epoch = epoch;
    }
    batcher_fill(&b, &w.data, (int)(step % b.n_batches), &db);
    job.step = (uint32_t)step;
    double x[3]; /* loss, MLM loss, NSP loss: summed over the replicas, then their means */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double tt = dist_now_ns();
    if (!run_step(&job, x, 3, d)) goto done;
    dist_trace(o->dist, "step", "step", tt, dist_now_ns(), step);
    for (int i = 0; i < 3; i++) x[i] /= sp.size;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    train_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    sum_mlm += x[1];
    sum_nsp += x[2];
    n_sum++;
    Metrics mt = {0};
    mt.loss = x[0];
    mt.n_examples = o->batch;
    mt.n_extra = 2;
    mt.extra[0].name = "mlm_loss";
    mt.extra[0].value = x[1];
    mt.extra[1].name = "nsp_loss";
    mt.extra[1].value = x[2];
    const MetricsRecord *rec = progress_update(prog, step + 1, &mt);
    if (is_root(o) && rec &&
        (!metrics_log_append(&log, rec, d) || !metrics_log_plot(&log, "bertc pretrain", d)))
      goto done;
    bool save_now = o->save_every > 0 && (step + 1) % o->save_every == 0 && step + 1 < o->steps;
    if ((save_now || (sp.check_every > 0 && (step + 1) % sp.check_every == 0)) &&
        !dist_check_replicas(o->dist, es, sp.n_local, step + 1, d))
      goto done;
    if (save_now && is_root(o) && !save(o->out, e, &g, o->model, step + 1, o->seed, &w.vocab, train_s, d))
      goto done;
  }
  if (!dist_check_replicas(o->dist, es, sp.n_local, o->steps, d)) goto done;
  if (is_root(o) && !save(o->out, e, &g, o->model, o->steps, o->seed, &w.vocab, train_s, d)) goto done;
  {
    const MetricsRecord *rec = progress_flush(prog);
    if (is_root(o) && rec &&
        (!metrics_log_append(&log, rec, d) || !metrics_log_plot(&log, "bertc pretrain", d)))
      goto done;
  }
  char summary[256];
  snprintf(summary, sizeof summary, "MLM loss %.3f, NSP loss %.3f (means over this run); checkpoint %s",
           n_sum ? sum_mlm / (double)n_sum : NAN, n_sum ? sum_nsp / (double)n_sum : NAN, ckpt);
  progress_finish(prog, summary);
  prog = NULL;
  if (is_root(o)) printf("%s\n", summary);
  ok = true;
done:
  if (prog) progress_finish(prog, NULL);
  metrics_log_close(&log);
  if (have_batch) {
    data_batch_free(&db);
    batcher_free(&b);
  }
  dist_detach(o->dist);
  destroy_execs(es);
  split_free(&sp);
  if (have_graph) graph_free(&g);
  sets_free(&s);
  wiki_free(&w);
  free(vpath);
  free(ckpt);
  return ok;
}

/* ---- fine-tuning ---- */

/* The training files: --snli-train, else the full train file, else the 1%
 * sample plus the extra file (whichever exist). */
static int snli_train_files(const TrainOptions *o, const char *dir, char **paths, Diag *d) {
  int n = 0;
  if (o->n_snli_train > 0) {
    for (int i = 0; i < o->n_snli_train; i++) paths[n++] = bc_strdup(o->snli_train[i]);
    return n;
  }
  static const char *const names[] = {"snli_1.0_train.txt", "snli_1.0_train_0.01.txt", "snli_1.0_train_extra.txt"};
  char *full = bc_asprintf("%s/snli/%s", dir, names[0]);
  if (file_exists(full)) {
    paths[n++] = full;
    return n;
  }
  free(full);
  for (int i = 1; i < 3; i++) {
    char *p = bc_asprintf("%s/snli/%s", dir, names[i]);
    if (file_exists(p)) paths[n++] = p;
    else free(p);
  }
  if (n == 0)
    diag_error(d, (SrcLoc){bc_intern(dir), 0, 0}, "no SNLI training file in %s/snli (pass --snli-train FILE)", dir);
  return n;
}

/* Loads vocab.txt from the folder of `checkpoint`. */
static bool vocab_beside(Vocab *v, const char *checkpoint, Diag *d) {
  char *dir = dir_of(checkpoint);
  char *vp = join(dir, "vocab.txt");
  vocab_init(v);
  bool ok = vocab_load(v, vp, d);
  free(dir);
  free(vp);
  return ok;
}

bool train_snli(const TrainOptions *o, Diag *d) {
  Split sp;
  if (!split_init(&sp, o, d)) return false;
  const char *dir = data_dir(o->data, d);
  if (!dir || !make_dir(o->out, d)) return false;
  if (!o->init) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "fine-tuning needs --init PRETRAIN_CHECKPOINT (the encoder to start from)");
    return false;
  }
  Vocab vocab;
  if (!vocab_beside(&vocab, o->init, d)) return false;
  char *train_paths[TRAIN_MAX_FILES + 2] = {0};
  int n_train = snli_train_files(o, dir, train_paths, d);
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", dir);
  SnliData tr = {0}, te = {0};
  bool have_tr = false, have_te = false, ok = false;
  Sets s, se;
  sets_init(&s, o->sets, o->n_sets);
  sets_init(&se, o->sets, o->n_sets);
  Graph g, ge;
  bool have_g = false, have_ge = false;
  Exec *es[BC_MAX_REPLICAS] = {0}, *e = NULL, *ee = NULL;
  Progress *prog = NULL;
  MetricsLog log = {0};
  Batcher b = {0};
  DataBatch db = {0};
  bool have_batch = false;
  char *ckpt = join(o->out, CHECKPOINT_FILE), *vpath = join(o->out, "vocab.txt");
  float *logits_buf = NULL;
  if (n_train == 0) goto done;
  if (!snli_load(&tr, (const char *const *)train_paths, n_train, &vocab, o->max_len, d)) goto done;
  have_tr = true;
  const char *tp[1] = {test_path};
  if (!snli_load(&te, tp, 1, &vocab, o->max_len, d)) goto done;
  have_te = true;
  if (o->max_examples > 0 && tr.data.n_examples > o->max_examples) dataset_resize(&tr.data, (int)o->max_examples);
  info(o, "snli: %d training examples (%d files, %d unlabeled '-' rows dropped), %d test examples\n",
       tr.data.n_examples, n_train, tr.n_skipped, te.data.n_examples);
  char where[96];
  split_where(&sp, o->device, where, sizeof where);
  if (sp.size > 1) info(o, "snli: %s, %d examples each per step of %d\n", where, sp.local, o->batch);
  if (is_root(o) && !vocab_save(&vocab, vpath, d)) goto done;

  sets_add(&s, "vocab", vocab.n);
  sets_add(&s, "batch", sp.local);
  sets_add(&s, "max_len", o->max_len);
  sets_add(&se, "vocab", vocab.n);
  sets_add(&se, "batch", o->eval_batch);
  sets_add(&se, "max_len", o->max_len);
  sets_add(&se, "dropout", 0);
  if (!compile(&g, o->model, "nli", &s, true, d)) goto done;
  have_g = true;
  if (!compile(&ge, o->model, "nli", &se, false, d)) goto done;
  have_ge = true;
  if (!make_execs(&sp, &g, es, d)) goto done;
  e = es[0];
  if (!exec_init_params(e, o->seed, d)) goto done;
  ee = exec_create_on(sp.backend, sp.devices[0], &ge, d); /* evaluation: replica 0's device */
  if (!ee) goto done;
  char hash[32];
  vocab_hash_str(&vocab, hash);
  int64_t start = 0;
  double time_offset = 0;
  if (!is_root(o)) {
    /* rank 0's parameters arrive in sync_start */
  } else if (o->resume && file_exists(ckpt)) {
    if (!resume_run(o, ckpt, e, &vocab, &start, &time_offset, d)) goto done;
  } else {
    CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
    int n = checkpoint_load(o->init, e, &lo, NULL, d);
    if (n < 0) goto done;
    info(o, "snli: %d of %d parameter tensors initialized from %s, the rest new\n", n, g.params.n, o->init);
  }
  if (!sync_start(o, &sp, es, &start, &time_offset, d)) goto done;
  batcher_init(&b, tr.data.n_examples, o->batch, true, true);
  data_batch_init(&db, &tr.data, o->batch);
  have_batch = true;
  if (b.n_batches == 0) {
    diag_error(d, SRCLOC_NONE, "batch %d is larger than the %d training examples", o->batch, tr.data.n_examples);
    goto done;
  }
  int64_t total = (int64_t)o->epochs * b.n_batches;
  if (is_root(o) && !metrics_log_open(&log, o->out, start > 0 ? start : METRICS_FRESH, d)) goto done;
  ProgressConfig pc = {0};
  pc.task = "snli";
  pc.every_steps = o->report_every;
  if (o->report_every > 0) pc.every_s = -1;
  pc.total_steps = total;
  pc.steps_per_epoch = b.n_batches;
  pc.start_step = start;
  pc.time_offset_s = time_offset;
  pc.has_acc = true;
  prog = progress_start(is_root(o) ? stderr : NULL, &pc);
  StepJob job = {o, &sp, es, &g, &db, 0, 1, {g.loss}, output_named(&g, "logits"), {0},
                 dataset_i32(&tr.data, "label"), {{0}}};
  logits_buf = bc_malloc(sizeof(float) * (size_t)sp.local * SNLI_N_LABELS * (size_t)sp.n_local);
  for (int k = 0; k < sp.n_local; k++) job.logits_buf[k] = logits_buf + (size_t)k * (size_t)sp.local * SNLI_N_LABELS;
  double ep_loss = 0, ep_correct = 0, ep_n = 0, train_s = time_offset, test_acc = NAN;
  int64_t train_examples = 0;
  for (int64_t step = start; step < total; step++) {
    dist_step(o->dist, step);
    int epoch = (int)(step / b.n_batches);
    if (step % b.n_batches == 0 || step == start) {
      batcher_set_epoch(&b, o->seed, epoch);
      if (step % b.n_batches == 0) ep_loss = ep_correct = ep_n = 0;
    }
    batcher_fill(&b, &tr.data, (int)(step % b.n_batches), &db);
    job.step = (uint32_t)step;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double tt = dist_now_ns(), x[2]; /* loss (replica means), correct predictions: summed over replicas */
    if (!run_step(&job, x, 2, d)) goto done;
    dist_trace(o->dist, "step", "step", tt, dist_now_ns(), step);
    /* the mean of the replicas' means is the global batch mean */
    double loss = x[0] / sp.size, correct = x[1];
    clock_gettime(CLOCK_MONOTONIC, &t1);
    train_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    train_examples += o->batch;
    ep_loss += loss * db.n_real;
    ep_correct += correct;
    ep_n += db.n_real;
    Metrics mt = {0};
    mt.loss = loss;
    mt.acc = correct / db.n_real;
    mt.n_examples = db.n_real;
    const MetricsRecord *rec = progress_update(prog, step + 1, &mt);
    if (is_root(o) && rec && (!metrics_log_append(&log, rec, d) || !metrics_log_plot(&log, "bertc snli", d)))
      goto done;
    bool epoch_end = (step + 1) % b.n_batches == 0;
    if (epoch_end) {
      /* d2l evaluates the test set after every epoch, dropout off */
      EvalResult r;
      if (!copy_params(e, &g, ee, &ge, d) || !evaluate(ee, &ge, &te.data, o->dist, &r, d)) goto done;
      test_acc = r.n ? (double)r.correct / (double)r.n : NAN;
      progress_log(prog, "snli epoch %d: loss %.3f, train acc %.3f, test acc %.3f", epoch + 1,
                   ep_n ? ep_loss / ep_n : NAN, ep_n ? ep_correct / ep_n : NAN, test_acc);
      const MetricsRecord *fr = progress_flush(prog);
      MetricsRecord er = fr ? *fr : metrics_record(step + 1);
      metrics_record_set(&er, "test_acc", test_acc);
      if (is_root(o) && (!metrics_log_append(&log, &er, d) || !metrics_log_plot(&log, "bertc snli", d)))
        goto done;
    }
    bool save_now = o->save_every > 0 && (step + 1) % o->save_every == 0 && step + 1 < total;
    if ((save_now || (sp.check_every > 0 && (step + 1) % sp.check_every == 0)) &&
        !dist_check_replicas(o->dist, es, sp.n_local, step + 1, d))
      goto done;
    if (save_now && is_root(o) && !save(o->out, e, &g, o->model, step + 1, o->seed, &vocab, train_s, d))
      goto done;
  }
  if (!dist_check_replicas(o->dist, es, sp.n_local, total, d)) goto done;
  if (is_root(o) && !save(o->out, e, &g, o->model, total, o->seed, &vocab, train_s, d)) goto done;
  if (isnan(test_acc)) { /* resumed at the very end: evaluate once */
    EvalResult r;
    if (!copy_params(e, &g, ee, &ge, d) || !evaluate(ee, &ge, &te.data, o->dist, &r, d)) goto done;
    test_acc = r.n ? (double)r.correct / (double)r.n : NAN;
  }
  char summary[256];
  double eps = train_s > time_offset ? (double)train_examples / (train_s - time_offset) : NAN;
  snprintf(summary, sizeof summary, "loss %.3f, train acc %.3f, test acc %.3f\n%.1f examples/sec on %s",
           ep_n ? ep_loss / ep_n : NAN, ep_n ? ep_correct / ep_n : NAN, test_acc, eps, where);
  progress_finish(prog, NULL);
  prog = NULL;
  if (is_root(o)) printf("%s\n", summary);
  ok = true;
done:
  if (prog) progress_finish(prog, NULL);
  free(logits_buf);
  metrics_log_close(&log);
  if (have_batch) {
    data_batch_free(&db);
    batcher_free(&b);
  }
  dist_detach(o->dist);
  destroy_execs(es);
  split_free(&sp);
  exec_destroy(ee);
  if (have_g) graph_free(&g);
  if (have_ge) graph_free(&ge);
  sets_free(&s);
  sets_free(&se);
  if (have_tr) snli_free(&tr);
  if (have_te) snli_free(&te);
  for (int i = 0; i < n_train; i++) free(train_paths[i]);
  free(test_path);
  free(ckpt);
  free(vpath);
  vocab_free(&vocab);
  return ok;
}

/* ---- evaluation and prediction from a checkpoint ---- */

/* The nli graph of `checkpoint` (hparams from its metadata, dropout 0, the
 * given batch) on `device`, with every parameter loaded. */
static bool load_nli(const char *checkpoint, const char *device, int batch, Vocab *vocab, Graph *g, Exec **e,
                     Diag *d) {
  CheckpointMeta m;
  if (!checkpoint_read_meta(checkpoint, &m, d)) {
    checkpoint_meta_free(&m);
    return false;
  }
  bool ok = false;
  Sets s;
  sets_init(&s, NULL, 0);
  if (!m.graph_name || strcmp(m.graph_name, "nli") != 0) {
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0},
               "a checkpoint of graph '%s', not of a fine-tuned 'nli' model (fine-tune with "
               "`bertrun train --task snli --init ...` first)",
               m.graph_name ? m.graph_name : "?");
    goto done;
  }
  if (!parse_hparams(m.hparams_json, checkpoint, &s, d)) goto done;
  sets_add(&s, "batch", batch);
  sets_add(&s, "dropout", 0);
  if (!vocab_beside(vocab, checkpoint, d)) goto done;
  if (!compile(g, m.model_path ? m.model_path : "models/bert.yaml", "nli", &s, false, d)) goto done;
  *e = exec_create_spec(device, g, d); /* evaluation, prediction: one device */
  if (!*e) {
    graph_free(g);
    goto done;
  }
  char hash[32];
  vocab_hash_str(vocab, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
  int n = checkpoint_load(checkpoint, *e, &lo, NULL, d);
  if (n >= 0 && n != g->params.n)
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0}, "the checkpoint has %d of the %d parameters of the nli model", n,
               g->params.n);
  if (n != g->params.n) {
    exec_destroy(*e);
    *e = NULL;
    graph_free(g);
    goto done;
  }
  ok = true;
done:
  sets_free(&s);
  checkpoint_meta_free(&m);
  return ok;
}

bool train_eval_snli(const char *checkpoint, const char *data, const char *device, int batch, Diag *d) {
  const char *dir = data_dir(data, d);
  if (!dir) return false;
  Vocab vocab;
  vocab_init(&vocab);
  Graph g;
  Exec *e = NULL;
  if (!load_nli(checkpoint, device, batch, &vocab, &g, &e, d)) {
    vocab_free(&vocab);
    return false;
  }
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", dir);
  const char *tp[1] = {test_path};
  SnliData te;
  bool ok = snli_load(&te, tp, 1, &vocab, (int)graph_hparam(&g, "max_len", 128), d);
  EvalResult r;
  if (ok && (ok = evaluate(e, &g, &te.data, NULL, &r, d))) {
    printf("test accuracy %.4f (%lld of %lld examples of %s)\n", r.n ? (double)r.correct / (double)r.n : 0,
           (long long)r.correct, (long long)r.n, test_path);
    printf("confusion matrix (rows: gold, columns: predicted)\n%14s", "");
    for (int j = 0; j < SNLI_N_LABELS; j++) printf(" %13s", snli_label_name(j));
    printf("\n");
    for (int i = 0; i < SNLI_N_LABELS; i++) {
      printf("%14s", snli_label_name(i));
      for (int j = 0; j < SNLI_N_LABELS; j++) printf(" %13lld", (long long)r.confusion[i][j]);
      printf("\n");
    }
  }
  if (ok || te.data.n_examples) snli_free(&te);
  free(test_path);
  exec_destroy(e);
  graph_free(&g);
  vocab_free(&vocab);
  return ok;
}

bool train_predict(const char *checkpoint, const char *device, const char *premise, const char *hypothesis,
                   Diag *d) {
  Vocab vocab;
  vocab_init(&vocab);
  Graph g;
  Exec *e = NULL;
  if (!load_nli(checkpoint, device, 1, &vocab, &g, &e, d)) {
    vocab_free(&vocab);
    return false;
  }
  int T = (int)graph_hparam(&g, "max_len", 128);
  int32_t *tok = bc_calloc((size_t)T, sizeof(int32_t)), *seg = bc_calloc((size_t)T, sizeof(int32_t));
  int32_t vl = snli_encode_pair(&vocab, premise, hypothesis, T, tok, seg, d);
  bool ok = vl >= 0;
  float logits[SNLI_N_LABELS];
  if (ok) {
    RunContext ctx = {0, 0, 0};
    ok = exec_write(e, graph_find(&g, "tokens"), tok, DTYPE_I32, d) &&
         exec_write(e, graph_find(&g, "segments"), seg, DTYPE_I32, d) &&
         exec_write(e, graph_find(&g, "valid_len"), &vl, DTYPE_I32, d) && exec_run(e, &ctx, d) &&
         exec_read(e, output_named(&g, "logits"), logits, DTYPE_F32, d);
  }
  if (ok) {
    double mx = logits[0], z = 0, p[SNLI_N_LABELS];
    for (int i = 1; i < SNLI_N_LABELS; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < SNLI_N_LABELS; i++) z += p[i] = exp(logits[i] - mx);
    int k = argmax3(logits);
    printf("%s\n", snli_label_name(k));
    for (int i = 0; i < SNLI_N_LABELS; i++) printf("  %-13s %.4f\n", snli_label_name(i), p[i] / z);
  }
  free(tok);
  free(seg);
  exec_destroy(e);
  graph_free(&g);
  vocab_free(&vocab);
  return ok;
}
