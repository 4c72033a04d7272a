/* train.c — pretraining (WikiText-2: masked LM + next sentence) and SNLI
 * fine-tuning as d2l's chapter runs them (D2L.md): d2l's data rules
 * (wikitext.c, snli.c), the YAML model compiled into one training step,
 * Adam, d2l's metrics. One loop (train_run) runs both; a TrainTask says
 * what differs: the data, how parameters start, what a step reports, what
 * an epoch's end and the run's end do.
 *
 * A run folder holds checkpoint.safetensors (parameters, Adam moments,
 * step, seed, hparams, vocabulary hash), vocab.txt, metrics.jsonl and
 * curves.svg. Checkpoints are written atomically; --resume continues from
 * the last one and, because batches depend only on (seed, epoch) and dropout
 * on (seed, step), repeats the losses of an uninterrupted run exactly.
 *
 * Deliberate choices: a partial last training batch is dropped (the step is
 * compiled for one batch size; d2l keeps it); evaluation (eval.c) pads its
 * last batch and counts only real examples; the loss is the batch mean.
 *
 * Data parallel (TrainOptions.dist, runtime/dist.h): every rank builds the
 * same global batch, and each of its replicas (one, or one per device of
 * --device cuda:0,1 / cuda:all / cpu:0,1, run at once by dist_run) trains
 * on its slice (split.h), with pretraining's MLM normalizer taken from the
 * global batch (write_mlm_norm); the step is compiled for the slice;
 * evaluation batches are dealt out round robin and the counts summed.
 * Everything that writes the run folder or prints runs on rank 0;
 * everything collective (broadcasts, sums, replica checks) runs on every
 * rank at the same point of the loop. */
#include "train.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "eval.h"
#include "report.h"
#include "snli.h"
#include "split.h"
#include "train_util.h"
#include "wikitext.h"

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

/* ---- one step on every replica ---- */

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
  if (!train_write_batch(e, j->g, lb, j->o->lr, d) || !write_mlm_norm(e, j->g, j->global, j->sp->size, d) ||
      !exec_run(e, &c, d))
    return false;
  for (int i = 0; i < j->n_out; i++)
    if (!read_scalar(e, j->out[i], &j->x[k][i], d)) return false;
  if (j->logits < 0) return true;
  if (!exec_read(e, j->logits, j->logits_buf[k], DTYPE_F32, d)) return false;
  double correct = 0;
  for (int r = 0; r < lb->n_real; r++)
    correct += eval_argmax(j->logits_buf[k] + r * SNLI_N_LABELS, SNLI_N_LABELS) == j->labels[lb->rows[r]];
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

/* ---- one training loop, parameterized by the task ---- */

typedef struct TrainRun TrainRun;

/* What differs between pretraining and fine-tuning. Hooks return false
 * with an error to stop the run; train_run then frees everything. */
typedef struct {
  const char *name;       /* "pretrain", "snli": progress lines, messages */
  const char *graph;      /* the model's graph to train */
  const char *plot_title; /* curves.svg */
  const char *examples;   /* "pretraining", "training": the batch-too-large error */
  bool by_epoch;          /* --epochs (progress by epoch and batch) or --steps */
  bool has_acc;           /* the step reports a training accuracy */
  /* Reads the data: sets r->state, r->data, r->vocab, adds the settings
   * the data decides to r->sets. */
  bool (*load)(TrainRun *r, Diag *d);
  /* After the training graph compiled, before its Execs exist. NULL: none. */
  bool (*setup)(TrainRun *r, Diag *d);
  /* The Execs exist with seeded parameters: on rank 0, resume or load what
   * the run starts from, setting r->start and r->time_offset. */
  bool (*init)(TrainRun *r, Diag *d);
  /* The step's outputs into r->job (n_out, out, logits, labels). */
  void (*configure)(TrainRun *r);
  /* x: the step's outputs (then the correct count) summed over replicas;
   * the task's running sums, and the step's numbers into *m. */
  void (*step_done)(TrainRun *r, int64_t step, double *x, Metrics *m);
  /* After step `step` was recorded (an epoch's end). NULL: none. */
  bool (*after_step)(TrainRun *r, int64_t step, Diag *d);
  /* After the last save: prints the summary, ends r->prog (sets it NULL). */
  bool (*finish)(TrainRun *r, Diag *d);
  void (*free)(TrainRun *r);
} TrainTask;

struct TrainRun {
  const TrainOptions *o;
  const TrainTask *t;
  Split sp;
  const char *dir; /* the data folder */
  char where[96];  /* split_where */
  const Dataset *data;
  const Vocab *vocab;
  TrainSets sets;
  Graph g;
  bool have_graph, have_batch;
  Exec *es[BC_MAX_REPLICAS], *e; /* e = es[0], the replica rank 0 saves */
  Batcher b;
  DataBatch db;
  MetricsLog log;
  Progress *prog;
  char *ckpt;
  int64_t start, total, train_examples;
  double time_offset, train_s;
  StepJob job;
  void *state; /* the task's */
};

/* The record of a step or an epoch into metrics.jsonl and curves.svg (rank 0). */
static bool record(TrainRun *r, const MetricsRecord *rec, Diag *d) {
  if (!train_is_root(r->o) || !rec) return true;
  return metrics_log_append(&r->log, rec, d) && metrics_log_plot(&r->log, r->t->plot_title, d);
}

static bool train_loop(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  const TrainTask *t = r->t;
  int cur_epoch = -1;
  for (int64_t step = r->start; step < r->total; step++) {
    dist_step(o->dist, step);
    int epoch = (int)(step / r->b.n_batches);
    if (epoch != cur_epoch) {
      batcher_set_epoch(&r->b, o->seed, epoch);
      cur_epoch = epoch;
    }
    batcher_fill(&r->b, r->data, (int)(step % r->b.n_batches), &r->db);
    r->job.step = (uint32_t)step;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double tt = dist_now_ns(), x[4];
    if (!run_step(&r->job, x, r->job.n_out + (r->job.logits >= 0), d)) return false;
    dist_trace(o->dist, "step", "step", tt, dist_now_ns(), step);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->train_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    r->train_examples += o->batch;
    Metrics m = {0};
    t->step_done(r, step, x, &m);
    if (!record(r, progress_update(r->prog, step + 1, &m), d)) return false;
    if (t->after_step && !t->after_step(r, step, d)) return false;
    bool save_now = o->save_every > 0 && (step + 1) % o->save_every == 0 && step + 1 < r->total;
    if ((save_now || (r->sp.check_every > 0 && (step + 1) % r->sp.check_every == 0)) &&
        !dist_check_replicas(o->dist, r->es, r->sp.n_local, step + 1, d))
      return false;
    if (save_now && train_is_root(o) &&
        !train_save(o->out, r->e, o->model, step + 1, o->seed, r->vocab, r->train_s, d))
      return false;
  }
  if (!dist_check_replicas(o->dist, r->es, r->sp.n_local, r->total, d)) return false;
  return !train_is_root(o) ||
         train_save(o->out, r->e, o->model, r->total, o->seed, r->vocab, r->train_s, d);
}

static bool train_run(const TrainOptions *o, const TrainTask *t, Diag *d) {
  TrainRun r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.t = t;
  if (!split_init(&r.sp, o, d)) return false;
  r.dir = train_data_dir(o->data, d);
  if (!r.dir || !train_make_dir(o->out, d)) return false;
  train_sets_init(&r.sets, o->sets, o->n_sets);
  r.ckpt = train_join(o->out, TRAIN_CHECKPOINT_FILE);
  char *vpath = train_join(o->out, "vocab.txt");
  bool ok = false;
  if (!t->load(&r, d)) goto done;
  split_where(&r.sp, o->device, r.where, sizeof r.where);
  if (r.sp.size > 1)
    train_info(o, "%s: %s, %d examples each per step of %d\n", t->name, r.where, r.sp.local, o->batch);
  if (train_is_root(o) && !vocab_save(r.vocab, vpath, d)) goto done;
  if (!train_compile(&r.g, o->model, t->graph, &r.sets, true, d)) goto done;
  r.have_graph = true;
  if (t->setup && !t->setup(&r, d)) goto done;
  if (!split_make_execs(&r.sp, &r.g, r.es, d)) goto done;
  r.e = r.es[0];
  if (!exec_init_params(r.e, o->seed, d)) goto done;
  if (!t->init(&r, d)) goto done;
  if (!split_sync_start(o, &r.sp, r.es, &r.start, &r.time_offset, d)) goto done;
  batcher_init(&r.b, r.data->n_examples, o->batch, true, true);
  data_batch_init(&r.db, r.data, o->batch);
  r.have_batch = true;
  if (r.b.n_batches == 0) {
    diag_error(d, SRCLOC_NONE, "batch %d is larger than the %d %s examples", o->batch, r.data->n_examples,
               t->examples);
    goto done;
  }
  r.total = t->by_epoch ? (int64_t)o->epochs * r.b.n_batches : o->steps;
  if (train_is_root(o) && !metrics_log_open(&r.log, o->out, r.start > 0 ? r.start : METRICS_FRESH, d)) goto done;
  ProgressConfig pc = {0};
  pc.task = t->name;
  pc.every_steps = o->report_every;
  if (o->report_every > 0) pc.every_s = -1;
  pc.total_steps = r.total;
  if (t->by_epoch) pc.steps_per_epoch = r.b.n_batches;
  pc.start_step = r.start;
  pc.time_offset_s = r.time_offset;
  pc.has_acc = t->has_acc;
  r.prog = progress_start(train_is_root(o) ? stderr : NULL, &pc);
  r.job = (StepJob){.o = o, .sp = &r.sp, .es = r.es, .g = &r.g, .global = &r.db, .logits = -1};
  t->configure(&r);
  r.train_s = r.time_offset;
  ok = train_loop(&r, d) && t->finish(&r, d);
done:
  if (r.prog) progress_finish(r.prog, NULL);
  metrics_log_close(&r.log);
  if (r.have_batch) {
    data_batch_free(&r.db);
    batcher_free(&r.b);
  }
  dist_detach(o->dist);
  split_destroy_execs(r.es);
  split_free(&r.sp);
  if (r.state) t->free(&r);
  if (r.have_graph) graph_free(&r.g);
  train_sets_free(&r.sets);
  free(vpath);
  free(r.ckpt);
  return ok;
}

/* ---- pretraining ---- */

typedef struct {
  WikiData w;
  bool have_w;
  double sum_mlm, sum_nsp; /* over this run's steps, for the summary */
  int64_t n_sum;
} Pretrain;

static bool pretrain_load(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  Pretrain *p = bc_calloc(1, sizeof *p);
  r->state = p;
  char *path = bc_asprintf("%s/wikitext-2/wiki.train.tokens", r->dir);
  WikiOptions wo = wiki_options_default();
  wo.max_len = o->max_len;
  wo.seed = o->seed;
  train_info(o, "pretrain: reading %s\n", path);
  p->have_w = wiki_load(&p->w, path, &wo, d);
  free(path);
  if (!p->have_w) return false;
  if (o->max_examples > 0 && p->w.data.n_examples > o->max_examples) dataset_resize(&p->w.data, (int)o->max_examples);
  train_info(o, "pretrain: %d examples (%d sentence pairs over max_len %d skipped), vocabulary %d\n",
             p->w.data.n_examples, p->w.n_skipped, p->w.max_len, p->w.vocab.n);
  r->data = &p->w.data;
  r->vocab = &p->w.vocab;
  train_sets_add(&r->sets, "vocab", p->w.vocab.n);
  train_sets_add(&r->sets, "batch", r->sp.local);
  train_sets_add(&r->sets, "max_len", p->w.max_len);
  train_sets_add(&r->sets, "n_pred", p->w.n_pred);
  return true;
}

static bool pretrain_init(TrainRun *r, Diag *d) {
  if (!train_is_root(r->o) || !r->o->resume) return true;
  return train_resume(r->o, r->ckpt, r->e, r->vocab, &r->start, &r->time_offset, d);
}

static void pretrain_configure(TrainRun *r) {
  r->job.n_out = 3;
  r->job.out[0] = r->g.loss;
  r->job.out[1] = train_output(&r->g, "mlm_loss");
  r->job.out[2] = train_output(&r->g, "nsp_loss");
}

static void pretrain_step_done(TrainRun *r, int64_t step, double *x, Metrics *m) {
  (void)step;
  Pretrain *p = r->state;
  for (int i = 0; i < 3; i++) x[i] /= r->sp.size; /* loss, MLM loss, NSP loss: replica means */
  p->sum_mlm += x[1];
  p->sum_nsp += x[2];
  p->n_sum++;
  m->loss = x[0];
  m->n_examples = r->o->batch;
  m->n_extra = 2;
  m->extra[0].name = "mlm_loss";
  m->extra[0].value = x[1];
  m->extra[1].name = "nsp_loss";
  m->extra[1].value = x[2];
}

static bool pretrain_finish(TrainRun *r, Diag *d) {
  Pretrain *p = r->state;
  if (!record(r, progress_flush(r->prog), d)) return false;
  char summary[256];
  snprintf(summary, sizeof summary, "MLM loss %.3f, NSP loss %.3f (means over this run); checkpoint %s",
           p->n_sum ? p->sum_mlm / (double)p->n_sum : NAN, p->n_sum ? p->sum_nsp / (double)p->n_sum : NAN,
           r->ckpt);
  progress_finish(r->prog, summary);
  r->prog = NULL;
  if (train_is_root(r->o)) printf("%s\n", summary);
  return true;
}

static void pretrain_free(TrainRun *r) {
  Pretrain *p = r->state;
  if (p->have_w) wiki_free(&p->w);
  free(p);
  r->state = NULL;
}

static const TrainTask pretrain_task = {
    .name = "pretrain",
    .graph = "pretrain",
    .plot_title = "bertc pretrain",
    .examples = "pretraining",
    .load = pretrain_load,
    .init = pretrain_init,
    .configure = pretrain_configure,
    .step_done = pretrain_step_done,
    .finish = pretrain_finish,
    .free = pretrain_free,
};

bool train_pretrain(const TrainOptions *o, Diag *d) { return train_run(o, &pretrain_task, d); }

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
  if (train_file_exists(full)) {
    paths[n++] = full;
    return n;
  }
  free(full);
  for (int i = 1; i < 3; i++) {
    char *p = bc_asprintf("%s/snli/%s", dir, names[i]);
    if (train_file_exists(p)) paths[n++] = p;
    else free(p);
  }
  if (n == 0)
    diag_error(d, (SrcLoc){bc_intern(dir), 0, 0}, "no SNLI training file in %s/snli (pass --snli-train FILE)", dir);
  return n;
}

typedef struct {
  Vocab vocab; /* of the pretraining run (vocab.txt beside --init) */
  bool have_vocab;
  char *train_paths[TRAIN_MAX_FILES + 2];
  int n_train;
  SnliData tr, te;
  bool have_tr, have_te;
  TrainSets se; /* the evaluation graph's settings */
  Graph ge;     /* the nli graph for evaluation: dropout 0, eval_batch */
  bool have_ge;
  Exec *ee; /* on replica 0's device */
  float *logits_buf;
  double ep_loss, ep_correct, ep_n; /* this epoch's sums */
  double test_acc;                  /* after the last epoch end; NaN before */
} Snli;

static bool snli_task_load(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  if (!o->init) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "fine-tuning needs --init PRETRAIN_CHECKPOINT (the encoder to start from)");
    return false;
  }
  Snli *s = bc_calloc(1, sizeof *s);
  r->state = s;
  s->test_acc = NAN;
  train_sets_init(&s->se, o->sets, o->n_sets);
  if (!train_vocab_beside(&s->vocab, o->init, d)) {
    vocab_free(&s->vocab);
    return false;
  }
  s->have_vocab = true;
  s->n_train = snli_train_files(o, r->dir, s->train_paths, d);
  if (s->n_train == 0) return false;
  if (!snli_load(&s->tr, (const char *const *)s->train_paths, s->n_train, &s->vocab, o->max_len, d)) return false;
  s->have_tr = true;
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", r->dir);
  const char *tp[1] = {test_path};
  s->have_te = snli_load(&s->te, tp, 1, &s->vocab, o->max_len, d);
  free(test_path);
  if (!s->have_te) return false;
  if (o->max_examples > 0 && s->tr.data.n_examples > o->max_examples)
    dataset_resize(&s->tr.data, (int)o->max_examples);
  train_info(o, "snli: %d training examples (%d files, %d unlabeled '-' rows dropped), %d test examples\n",
             s->tr.data.n_examples, s->n_train, s->tr.n_skipped, s->te.data.n_examples);
  r->data = &s->tr.data;
  r->vocab = &s->vocab;
  train_sets_add(&r->sets, "vocab", s->vocab.n);
  train_sets_add(&r->sets, "batch", r->sp.local);
  train_sets_add(&r->sets, "max_len", o->max_len);
  train_sets_add(&s->se, "vocab", s->vocab.n);
  train_sets_add(&s->se, "batch", o->eval_batch);
  train_sets_add(&s->se, "max_len", o->max_len);
  train_sets_add(&s->se, "dropout", 0);
  return true;
}

static bool snli_task_setup(TrainRun *r, Diag *d) {
  Snli *s = r->state;
  s->have_ge = train_compile(&s->ge, r->o->model, "nli", &s->se, false, d);
  return s->have_ge;
}

static bool snli_task_init(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  Snli *s = r->state;
  s->ee = exec_create_on(r->sp.backend, r->sp.devices[0], &s->ge, d); /* evaluation: replica 0's device */
  if (!s->ee) return false;
  if (!train_is_root(o)) return true; /* rank 0's parameters arrive in split_sync_start */
  if (o->resume && train_file_exists(r->ckpt))
    return train_resume(o, r->ckpt, r->e, &s->vocab, &r->start, &r->time_offset, d);
  char hash[32];
  train_vocab_hash(&s->vocab, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
  int n = checkpoint_load(o->init, r->e, &lo, NULL, d);
  if (n < 0) return false;
  train_info(o, "snli: %d of %d parameter tensors initialized from %s, the rest new\n", n, r->g.params.n,
             o->init);
  return true;
}

static void snli_task_configure(TrainRun *r) {
  Snli *s = r->state;
  Split *sp = &r->sp;
  r->job.n_out = 1;
  r->job.out[0] = r->g.loss;
  r->job.logits = train_output(&r->g, "logits");
  r->job.labels = dataset_i32(&s->tr.data, "label");
  s->logits_buf = bc_malloc(sizeof(float) * (size_t)sp->local * SNLI_N_LABELS * (size_t)sp->n_local);
  for (int k = 0; k < sp->n_local; k++)
    r->job.logits_buf[k] = s->logits_buf + (size_t)k * (size_t)sp->local * SNLI_N_LABELS;
}

static void snli_task_step_done(TrainRun *r, int64_t step, double *x, Metrics *m) {
  Snli *s = r->state;
  if (step % r->b.n_batches == 0) s->ep_loss = s->ep_correct = s->ep_n = 0;
  /* x: loss (replica means), correct predictions, summed over replicas;
   * the mean of the replicas' means is the global batch mean */
  double loss = x[0] / r->sp.size, correct = x[1];
  int n_real = r->db.n_real;
  s->ep_loss += loss * n_real;
  s->ep_correct += correct;
  s->ep_n += n_real;
  m->loss = loss;
  m->acc = correct / n_real;
  m->n_examples = n_real;
}

/* The test accuracy of the training replica's parameters (dropout off). */
static bool snli_test(TrainRun *r, Diag *d) {
  Snli *s = r->state;
  EvalResult er;
  if (!copy_params(r->e, &r->g, s->ee, &s->ge, d) || !eval_run(s->ee, &s->ge, &s->te.data, r->o->dist, &er, d))
    return false;
  s->test_acc = eval_accuracy(&er);
  return true;
}

/* d2l evaluates the test set after every epoch. */
static bool snli_task_after_step(TrainRun *r, int64_t step, Diag *d) {
  Snli *s = r->state;
  if ((step + 1) % r->b.n_batches != 0) return true;
  if (!snli_test(r, d)) return false;
  int epoch = (int)(step / r->b.n_batches);
  progress_log(r->prog, "snli epoch %d: loss %.3f, train acc %.3f, test acc %.3f", epoch + 1,
               s->ep_n ? s->ep_loss / s->ep_n : NAN, s->ep_n ? s->ep_correct / s->ep_n : NAN, s->test_acc);
  const MetricsRecord *fr = progress_flush(r->prog);
  MetricsRecord er = fr ? *fr : metrics_record(step + 1);
  metrics_record_set(&er, "test_acc", s->test_acc);
  return record(r, &er, d);
}

static bool snli_task_finish(TrainRun *r, Diag *d) {
  Snli *s = r->state;
  if (isnan(s->test_acc) && !snli_test(r, d)) return false; /* resumed at the very end: evaluate once */
  char summary[256];
  double eps = r->train_s > r->time_offset ? (double)r->train_examples / (r->train_s - r->time_offset) : NAN;
  snprintf(summary, sizeof summary, "loss %.3f, train acc %.3f, test acc %.3f\n%.1f examples/sec on %s",
           s->ep_n ? s->ep_loss / s->ep_n : NAN, s->ep_n ? s->ep_correct / s->ep_n : NAN, s->test_acc, eps,
           r->where);
  progress_finish(r->prog, NULL);
  r->prog = NULL;
  if (train_is_root(r->o)) printf("%s\n", summary);
  return true;
}

static void snli_task_free(TrainRun *r) {
  Snli *s = r->state;
  free(s->logits_buf);
  exec_destroy(s->ee);
  if (s->have_ge) graph_free(&s->ge);
  train_sets_free(&s->se);
  if (s->have_tr) snli_free(&s->tr);
  if (s->have_te) snli_free(&s->te);
  for (int i = 0; i < s->n_train; i++) free(s->train_paths[i]);
  if (s->have_vocab) vocab_free(&s->vocab);
  free(s);
  r->state = NULL;
}

static const TrainTask snli_task = {
    .name = "snli",
    .graph = "nli",
    .plot_title = "bertc snli",
    .examples = "training",
    .by_epoch = true,
    .has_acc = true,
    .load = snli_task_load,
    .setup = snli_task_setup,
    .init = snli_task_init,
    .configure = snli_task_configure,
    .step_done = snli_task_step_done,
    .after_step = snli_task_after_step,
    .finish = snli_task_finish,
    .free = snli_task_free,
};

bool train_snli(const TrainOptions *o, Diag *d) { return train_run(o, &snli_task, d); }
