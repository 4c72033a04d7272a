/* train.c — pretraining (WikiText-2: masked LM + next sentence) and SNLI
 * fine-tuning as d2l's chapter runs them (D2L.md): d2l's data rules
 * (wikitext.c, snli.c), the YAML model compiled into one training step,
 * Adam, d2l's metrics. One loop (train_run) runs both; a TrainTask says
 * what differs: the data, how parameters start, what a step reports, what
 * an epoch's end and the run's end do (train_run.h; fine-tuning's is in
 * train_snli.c).
 *
 * A run folder holds checkpoint.safetensors (parameters, Adam moments,
 * step, seed, hparams, vocabulary hash, the optimizer settings of
 * train_optim.c), vocab.txt, metrics.jsonl and curves.svg; fine-tuning also
 * best.safetensors, the model of the best dev accuracy (selection.c: dev
 * chooses, test only reports). Checkpoints are written atomically; --resume continues from
 * the last one and, because batches depend only on (seed, epoch) and dropout
 * on (seed, step), repeats the losses of an uninterrupted run exactly.
 * Nothing is lost unasked: a folder holding a run is refused without
 * --resume or --overwrite, SIGINT/SIGTERM end the run after its step with a
 * checkpoint (a second signal ends it at once), and a --resume with no
 * step left to run is refused. The model, its flags and the task's
 * contract are checked (train_model.c) before any data are read.
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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "bucket_plans.h"
#include "eval.h"
#include "interrupt.h"
#include "report.h"
#include "selection.h"
#include "snli.h"
#include "split.h"
#include "train_optim.h"
#include "train_run.h"
#include "train_util.h"
#include "wikitext.h"

bool train_options_default(TrainOptions *o, const char *task, const char *recipe) {
  memset(o, 0, sizeof(*o)); /* both recipes: constant rate, no warmup, decay or clipping */
  o->task = task;
  o->device = "cpu";
  o->eval_batch = 256;
  bool pre = task && strcmp(task, "pretrain") == 0;
  if (!recipe || strcmp(recipe, "bertc") == 0) {
    /* d2l's pretraining lr 0.01 collapses within 500 steps (README); 1e-3
     * learns. Fine-tuning: the sweep of bench/RECIPE.md (lr 1e-3 constant
     * at batch 128 beat warmup with linear decay, higher and lower rates
     * and batch 64; dev accuracy levels off after ~14 epochs of the 25,302
     * pairs, and the best-dev model is kept). */
    o->steps = pre ? 4000 : 0;
    o->epochs = pre ? 0 : 15;
    o->batch = pre ? 256 : 128;
    o->lr = 1e-3;
  } else if (strcmp(recipe, "hf") == 0) {
    /* BERT's own fine-tuning (Devlin et al.; transformers' Trainer): a few
     * epochs at a small rate decaying linearly, batch 32 */
    if (pre) return false;
    o->epochs = 3;
    o->batch = 32;
    o->lr = 3e-5;
    o->schedule = TRAIN_SCHEDULE_LINEAR;
    o->max_len_cap = 128; /* SNLI's pairs fit (99% within 48 tokens); BERT's 512 would cost plans */
  } else if (strcmp(recipe, "d2l") == 0) {
    o->steps = pre ? 4000 : 0;
    o->epochs = pre ? 0 : 5;
    o->batch = pre ? 256 : 512;
    o->lr = pre ? 0.01 : 1e-4;
    o->pad_to_max = true;
  } else {
    return false;
  }
  return true;
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
bool train_copy_params(Exec *from, const Graph *gf, Exec *to, const Graph *gt, Diag *d) {
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


static bool step_job(void *ctx, int k, Diag *d) {
  StepJob *j = ctx;
  Exec *e = j->es[k];
  const DataBatch *lb = split_batch(j->sp, j->global, k);
  RunContext c = {j->o->seed, j->step, split_first(j->sp, k)};
  if (!train_write_batch(e, j->g, lb, j->lr, d) || !write_mlm_norm(e, j->g, j->global, j->sp->size, d) ||
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

/* Points the job at the step for batches of length len, its outputs found
 * by name; data-parallel hooks follow the step that runs. */
static bool use_bucket(TrainRun *r, int len, Diag *d) {
  const Graph *g;
  Exec **es;
  if (!bucket_plans_get(&r->bp, len, &g, &es, d)) return false;
  if (g == r->cur_g) return true;
  StepJob *j = &r->job;
  j->g = g;
  j->es = es;
  for (int i = 0; i < j->n_out; i++)
    j->out[i] = r->out0[i] < 0 ? -1 : r->out0[i] == r->g.loss ? g->loss : train_output(g, r->g.values.data[r->out0[i]].name);
  if (r->logits0 >= 0) j->logits = train_output(g, r->g.values.data[r->logits0].name);
  if (r->cur_g && !dist_attach(r->o->dist, es, r->sp.n_local, d)) return false;
  r->cur_g = g;
  return true;
}

/* Whether any rank was signalled (every rank stops after the same step). */
static bool stop_requested(const TrainOptions *o, Diag *d, bool *stop) {
  double x = interrupt_signal() != 0;
  if (dist_size(o->dist) > 1 && !dist_sum(o->dist, &x, 1, d)) return false;
  *stop = x > 0;
  return true;
}

bool train_record(TrainRun *r, const MetricsRecord *rec, Diag *d) {
  if (!train_is_root(r->o) || !rec) return true;
  MetricsRecord x = *rec;
  if (!metrics_record_has(&x, "lr")) metrics_record_set(&x, "lr", r->rate);
  return metrics_log_append(&r->log, &x, d) && metrics_log_plot(&r->log, r->t->plot_title, d);
}

static bool save(TrainRun *r, int64_t step, Diag *d) {
  if (!train_is_root(r->o)) return true;
  CheckpointMeta extra;
  checkpoint_meta_init(&extra);
  if (r->t->save_meta) r->t->save_meta(r, &extra);
  bool ok = train_save_path(r->ckpt, r->o, r->total, r->e, &r->model, step, r->vocab, r->train_s, &extra, d);
  checkpoint_meta_free(&extra);
  return ok;
}

static TrainStatus train_loop(TrainRun *r, Diag *d) {
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
    if (r->bucketed && !use_bucket(r, r->pad_buckets ? r->max_len : batcher_len(&r->b, (int)(step % r->b.n_batches)), d))
      return TRAIN_FAILED;
    r->job.step = (uint32_t)step;
    r->job.lr = r->rate = train_rate(o, r->total, step);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double tt = dist_now_ns(), x[4];
    if (!run_step(&r->job, x, r->job.n_out + (r->job.logits >= 0), d)) return TRAIN_FAILED;
    dist_trace(o->dist, "step", "step", tt, dist_now_ns(), step);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->train_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    r->train_examples += o->batch;
    Metrics m = {0};
    t->step_done(r, step, x, &m);
    if (!train_record(r, progress_update(r->prog, step + 1, &m), d)) return TRAIN_FAILED;
    if (t->after_step && !t->after_step(r, step, d)) return TRAIN_FAILED;
    bool stop;
    if (!stop_requested(o, d, &stop)) return TRAIN_FAILED;
    bool save_now = stop || (o->save_every > 0 && (step + 1) % o->save_every == 0 && step + 1 < r->total);
    if ((save_now || (r->sp.check_every > 0 && (step + 1) % r->sp.check_every == 0)) &&
        !dist_check_replicas(o->dist, r->es, r->sp.n_local, step + 1, d))
      return TRAIN_FAILED;
    if (save_now && !save(r, step + 1, d)) return TRAIN_FAILED;
    if (stop && step + 1 < r->total) {
      if (!train_record(r, progress_flush(r->prog), d)) return TRAIN_FAILED;
      progress_finish(r->prog, "interrupted");
      r->prog = NULL;
      train_info(o, "interrupted at step %lld of %lld; checkpoint %s\ncontinue with: %s\n",
                 (long long)(step + 1), (long long)r->total, r->ckpt,
                 o->resume_command ? o->resume_command : "bertrun train ... --resume");
      return TRAIN_INTERRUPTED;
    }
  }
  if (!dist_check_replicas(o->dist, r->es, r->sp.n_local, r->total, d)) return TRAIN_FAILED;
  return save(r, r->total, d) ? TRAIN_DONE : TRAIN_FAILED;
}

/* ---- before any data: the run folder, the model, the flags ---- */

/* A fresh run never replaces an earlier run's work unasked. */
static bool check_run_folder(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  char *metrics = train_join(o->out, "metrics.jsonl"), *best = train_join(o->out, SELECTION_BEST_FILE);
  bool has_ckpt = train_file_exists(r->ckpt), has_metrics = train_file_exists(metrics),
       has_best = train_file_exists(best);
  free(metrics);
  free(best);
  SrcLoc at = {bc_intern(o->out), 0, 0};
  if (o->resume && o->overwrite) {
    diag_error(d, SRCLOC_NONE, "--resume and --overwrite contradict each other: choose one");
    return false;
  }
  if (o->resume && !has_ckpt) {
    diag_error(d, at, "--resume: this run folder holds no %s to continue from (start without --resume)",
               TRAIN_CHECKPOINT_FILE);
    return false;
  }
  if (!o->resume && !o->overwrite && (has_ckpt || has_metrics || has_best)) {
    diag_error(d, at,
               "this run folder holds an earlier run (%s): continue it with --resume, or start afresh "
               "and replace it with --overwrite (or choose another --out)",
               has_ckpt ? TRAIN_CHECKPOINT_FILE : has_metrics ? "metrics.jsonl" : SELECTION_BEST_FILE);
    return false;
  }
  return true;
}

/* The model, its hparams and max_len; every flag checked against them and
 * against the task's contract. */
static bool setup_model(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  const TrainTask *t = r->t;
  r->resuming = o->resume;
  if (r->resuming) {
    if (!train_origin_read(&r->origin, r->ckpt, d)) return false;
    r->have_origin = true;
    if (r->origin.info.meta.graph_name && strcmp(r->origin.info.meta.graph_name, r->contract.graph) != 0) {
      diag_error(d, (SrcLoc){bc_intern(r->ckpt), 0, 0},
                 "a checkpoint of graph '%s', which --task %s does not train (it trains '%s')",
                 r->origin.info.meta.graph_name, t->name, r->contract.graph);
      return false;
    }
    if (!train_origin_model(&r->origin, o->model, &r->model, &r->sets, NULL, d)) return false;
  } else if (!t->prepare(r, d)) {
    return false;
  }
  const HParam *ml = r->have_origin ? train_origin_hparam(&r->origin, "max_len") : NULL;
  r->max_len = o->max_len > 0 ? o->max_len : ml ? (int)ml->value : 128;
  if (o->max_len <= 0 && o->max_len_cap > 0 && r->max_len > o->max_len_cap) r->max_len = o->max_len_cap;
  train_sets_push(&r->sets, o->sets, o->n_sets);
  train_sets_add(&r->sets, "max_len", r->max_len);
  Graph probe;
  if (!train_expand(&probe, &r->model, r->contract.graph, &r->sets, d)) return false;
  bool ok = train_check_contract(&probe, r->model.path, &r->contract, d) &&
            (!r->have_origin || train_origin_check_shapes(&r->origin, &probe, &r->sets, d));
  graph_free(&probe);
  return ok;
}

/* The first step of a resumed run must come before the last, and the run
 * continues under the optimizer settings it started with. */
static bool check_resume_step(TrainRun *r, Diag *d) {
  if (!r->resuming) return true;
  const TrainOptions *o = r->o;
  if (!train_optim_check(o, r->total, &r->origin.info.meta, r->ckpt, d)) return false;
  int64_t at = r->origin.info.meta.step;
  if (at < r->total) return true;
  if (r->t->by_epoch)
    diag_error(d, (SrcLoc){bc_intern(r->ckpt), 0, 0},
               "the checkpoint is at step %lld (epoch %lld), and --epochs %d ends at step %lld: nothing to run "
               "(raise --epochs to train further)",
               (long long)at, (long long)(at / r->n_batches), o->epochs, (long long)r->total);
  else
    diag_error(d, (SrcLoc){bc_intern(r->ckpt), 0, 0},
               "the checkpoint is at step %lld, and --steps %lld ends there or before: nothing to run "
               "(raise --steps to train further)",
               (long long)at, (long long)r->total);
  return false;
}

TrainStatus train_run(const TrainOptions *o, const TrainTask *t, Diag *d) {
  TrainRun r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.t = t;
  r.contract = t->contract;
  if (o->graph) r.contract.graph = o->graph;
  if (!split_init(&r.sp, o, d)) return TRAIN_FAILED;
  train_sets_init(&r.sets, NULL, 0);
  r.ckpt = train_join(o->out, TRAIN_CHECKPOINT_FILE);
  char *vpath = train_join(o->out, "vocab.txt");
  TrainStatus status = TRAIN_FAILED;
  r.dir = train_data_dir(o->data, d);
  if (!r.dir || !check_run_folder(&r, d) || !setup_model(&r, d)) goto done;
  if (!t->by_epoch) {
    r.total = o->steps;
    if (!check_resume_step(&r, d)) goto done;
  }
  if (!train_make_dir(o->out, d) || !t->load(&r, d)) goto done;
  r.n_batches = r.data->n_examples / o->batch;
  if (r.n_batches == 0) {
    diag_error(d, SRCLOC_NONE, "batch %d is larger than the %d %s examples", o->batch, r.data->n_examples,
               t->examples);
    goto done;
  }
  if (t->by_epoch) {
    r.total = (int64_t)o->epochs * r.n_batches;
    if (!check_resume_step(&r, d)) goto done;
  }
  split_where(&r.sp, o->device, r.where, sizeof r.where);
  if (r.sp.size > 1)
    train_info(o, "%s: %s, %d examples each per step of %d\n", t->name, r.where, r.sp.local, o->batch);
  if (train_is_root(o) && !vocab_save(r.vocab, vpath, d)) goto done;
  AdamOptions adam;
  train_adam_options(o, &adam);
  if (!train_compile(&r.g, &r.model, r.contract.graph, &r.sets, &adam, r.contract.outputs, d)) goto done;
  r.have_graph = true;
  if (t->setup && !t->setup(&r, d)) goto done;
  if (!split_make_execs(&r.sp, &r.g, r.es, d)) goto done;
  r.e = r.es[0];
  if (!exec_init_params(r.e, o->seed, d)) goto done;
  if (train_is_root(o)) {
    if (r.resuming) {
      if (!train_resume(o, r.ckpt, r.e, r.vocab, &r.start, &r.time_offset, d)) goto done;
    } else if (t->init && !t->init(&r, d)) {
      goto done;
    }
  }
  if (!split_sync_start(o, &r.sp, r.es, &r.start, &r.time_offset, d)) goto done;
  batcher_init(&r.b, r.data->n_examples, o->batch, true, true);
  r.b.max_len = r.max_len;
  r.bucketed = !o->pad_to_max && !isnan(graph_hparam(&r.g, "seq", NAN));
  if (r.bucketed) {
    const DataField *vl = dataset_field(r.data, "valid_len");
    BC_ASSERT(vl && vl->dtype == DATA_I32);
    batcher_bucket(&r.b, vl->data, r.max_len, TRAIN_BUCKET_GRANULE);
    const char *pb = getenv("BC_PAD_BUCKETS");
    r.pad_buckets = pb && *pb && strcmp(pb, "0") != 0;
    r.bp = (BucketPlans){.model = &r.model, .graph = r.contract.graph, .sets = &r.sets, .sp = &r.sp,
                         .adam = &adam, .outputs = r.contract.outputs, .max_len = r.max_len, .owner_g = &r.g, .owner = r.es};
  }
  data_batch_init(&r.db, r.data, o->batch);
  r.have_batch = true;
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
  for (int i = 0; i < 3; i++) r.out0[i] = i < r.job.n_out ? r.job.out[i] : -1;
  r.logits0 = r.job.logits;
  r.cur_g = &r.g;
  r.train_s = r.time_offset;
  interrupt_catch(true);
  status = train_loop(&r, d);
  interrupt_catch(false);
  if (r.bucketed) {
    char what[320];
    bucket_plans_describe(&r.bp, what, sizeof what);
    train_info(o, "%s: steps for %s; longest %d\n", t->name, what, r.max_len);
  }
  if (status == TRAIN_DONE) {
    if (!train_record(&r, progress_flush(r.prog), d)) status = TRAIN_FAILED;
    progress_finish(r.prog, NULL);
    r.prog = NULL;
    if (status == TRAIN_DONE && !t->finish(&r, d)) status = TRAIN_FAILED;
  }
done:
  if (r.prog) progress_finish(r.prog, NULL);
  metrics_log_close(&r.log);
  if (r.have_batch) {
    data_batch_free(&r.db);
    batcher_free(&r.b);
  }
  dist_detach(o->dist);
  bucket_plans_free(&r.bp);
  split_destroy_execs(r.es);
  split_free(&r.sp);
  if (r.state) t->free(&r);
  if (r.have_graph) graph_free(&r.g);
  if (r.have_origin) train_origin_free(&r.origin);
  train_model_free(&r.model);
  train_sets_free(&r.sets);
  free(vpath);
  free(r.ckpt);
  return status;
}

/* Examples per second over the time spent in training steps (data loading
 * and evaluation excluded, as d2l measures), this run's steps only. */
double train_examples_per_s(const TrainRun *r) {
  double t = r->train_s - r->time_offset;
  return t > 0 ? (double)r->train_examples / t : NAN;
}

/* ---- pretraining ---- */

typedef struct {
  WikiData w;
  bool have_w;
  double sum_mlm, sum_nsp; /* over this run's steps, for the summary */
  int64_t n_sum;
} Pretrain;

static bool pretrain_prepare(TrainRun *r, Diag *d) {
  (void)d;
  train_model_file(&r->model, r->o->model);
  return true;
}

static bool pretrain_load(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  Pretrain *p = bc_calloc(1, sizeof *p);
  r->state = p;
  char *path = bc_asprintf("%s/wikitext-2/wiki.train.tokens", r->dir);
  WikiOptions wo = wiki_options_default();
  wo.max_len = r->max_len;
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
  train_sets_add(&r->sets, "n_pred", p->w.n_pred);
  return true;
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
  (void)d;
  Pretrain *p = r->state;
  if (train_is_root(r->o)) /* n_sum > 0: a run of no steps is refused before it starts */
    printf("MLM loss %.3f, NSP loss %.3f (means over this run's %lld steps)\n%.1f examples/sec on %s\n"
           "checkpoint %s\n",
           p->sum_mlm / (double)p->n_sum, p->sum_nsp / (double)p->n_sum, (long long)p->n_sum, train_examples_per_s(r),
           r->where, r->ckpt);
  return true;
}

static void pretrain_free(TrainRun *r) {
  Pretrain *p = r->state;
  if (p->have_w) wiki_free(&p->w);
  free(p);
  r->state = NULL;
}

static const char *const pretrain_hparams[] = {"vocab", "batch", "max_len", "n_pred", NULL};
static const char *const pretrain_inputs[] = {"tokens",     "segments",   "valid_len", "pred_positions", "pred_weights",
                                              "mlm_labels", "nsp_labels", "mlm_norm",  NULL};
static const char *const pretrain_outputs[] = {"mlm_loss", "nsp_loss", NULL};

static const TrainTask pretrain_task = {
    .name = "pretrain",
    .plot_title = "bertc pretrain",
    .examples = "pretraining",
    .contract = {"pretrain", "pretrain", pretrain_hparams, pretrain_inputs, pretrain_outputs},
    .prepare = pretrain_prepare,
    .load = pretrain_load,
    .configure = pretrain_configure,
    .step_done = pretrain_step_done,
    .finish = pretrain_finish,
    .free = pretrain_free,
};

TrainStatus train_pretrain(const TrainOptions *o, Diag *d) { return train_run(o, &pretrain_task, d); }
