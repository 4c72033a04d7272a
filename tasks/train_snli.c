/* train_snli.c — the SNLI fine-tuning task of the training loop
 * (train_run.h): d2l's SNLI data (snli.c) and vocabulary, the nli graph
 * started from --init's encoder or from scratch, the training accuracy of
 * each step, dev accuracy and the best model after each epoch
 * (selection.c), test accuracy reported as d2l does, evaluation in length
 * buckets like training. */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "eval.h"
#include "selection.h"
#include "snli.h"
#include "train_run.h"

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
  Vocab vocab; /* the checkpoint's (--init, --resume), --vocab, or built from the training data */
  bool have_vocab;
  char *train_paths[TRAIN_MAX_FILES + 2];
  int n_train;
  SnliData tr, te;
  bool have_tr, have_te;
  TrainSets se; /* the evaluation graph's settings */
  Graph ge;     /* the nli graph for evaluation: dropout 0, eval_batch */
  bool have_ge;
  Exec *ee; /* on replica 0's device */
  BucketPlans ebp; /* its shorter length buckets (unless --pad-to-max) */
  EvalSteps es;
  float *logits_buf;
  double ep_loss, ep_correct, ep_n; /* this epoch's sums */
  double test_acc;                  /* after the last epoch end */
  Selection sel;                    /* dev accuracy and the best model */
  char *best_path;                  /* <out>/best.safetensors */
} Snli;

/* A fresh run: the model and hparams of --init's checkpoint, else (from
 * scratch) --model or the default. */
static bool snli_task_prepare(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  if (!o->init) {
    train_model_file(&r->model, o->model);
    return true;
  }
  if (o->vocab) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--vocab: fine-tuning from --init uses the vocabulary of that checkpoint");
    return false;
  }
  if (!train_origin_read(&r->origin, o->init, d)) return false;
  r->have_origin = true;
  /* per run: the batch, and seq (each length bucket's, else max_len) */
  static const char *const not_inherited[] = {"batch", "seq", NULL};
  return train_origin_model(&r->origin, o->model, &r->model, &r->sets, not_inherited, d);
}

static bool snli_task_vocab(TrainRun *r, Snli *s, Diag *d) {
  const TrainOptions *o = r->o;
  if (r->have_origin) return s->have_vocab = train_origin_vocab(&r->origin, &s->vocab, d);
  vocab_init(&s->vocab);
  s->have_vocab = true;
  if (o->vocab) return vocab_load(&s->vocab, o->vocab, d);
  /* d2l's SNLI chapters: the training text's tokens seen at least 5 times */
  if (!snli_build_vocab(&s->vocab, (const char *const *)s->train_paths, s->n_train, 5, d)) return false;
  train_info(o, "snli: vocabulary of %d tokens built from the training data (min_freq 5)\n", s->vocab.n);
  return true;
}

static bool snli_task_load(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  Snli *s = bc_calloc(1, sizeof *s);
  r->state = s;
  s->test_acc = NAN;
  selection_init(&s->sel);
  s->best_path = train_join(o->out, SELECTION_BEST_FILE);
  train_sets_init(&s->se, NULL, 0);
  s->n_train = snli_train_files(o, r->dir, s->train_paths, d);
  if (s->n_train == 0 || !selection_check_dev(&s->sel, r->dir, d) || !snli_task_vocab(r, s, d)) return false;
  if (!snli_load(&s->tr, (const char *const *)s->train_paths, s->n_train, &s->vocab, r->max_len, d)) return false;
  s->have_tr = true;
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", r->dir);
  const char *tp[1] = {test_path};
  s->have_te = snli_load(&s->te, tp, 1, &s->vocab, r->max_len, d);
  free(test_path);
  if (!s->have_te || !selection_load_dev(&s->sel, &s->vocab, r->max_len, d)) return false;
  if (o->max_examples > 0 && s->tr.data.n_examples > o->max_examples)
    dataset_resize(&s->tr.data, (int)o->max_examples);
  train_info(o, "snli: %d training examples (%d files, %d unlabeled '-' rows dropped), %d dev examples, %d test "
             "examples\n", s->tr.data.n_examples, s->n_train, s->tr.n_skipped, s->sel.dev.data.n_examples,
             s->te.data.n_examples);
  if (r->resuming && !selection_resume(&s->sel, &r->origin.info.meta, s->best_path))
    train_info(o, "snli: warning: %s records a best model, but %s is gone: the next dev evaluation writes a new one\n",
               r->ckpt, s->best_path);
  r->data = &s->tr.data;
  r->vocab = &s->vocab;
  train_sets_add(&r->sets, "vocab", s->vocab.n);
  train_sets_add(&r->sets, "batch", r->sp.local);
  train_sets_push(&s->se, r->sets.s, r->sets.n);
  train_sets_add(&s->se, "batch", o->eval_batch);
  train_sets_add(&s->se, "dropout", 0);
  return true;
}

/* The evaluation graph, on replica 0's device. */
static bool snli_task_setup(TrainRun *r, Diag *d) {
  Snli *s = r->state;
  s->have_ge = train_compile(&s->ge, &r->model, r->contract.graph, &s->se, NULL, NULL, d);
  if (!s->have_ge) return false;
  s->ee = exec_create_on(r->sp.backend, r->sp.devices[0], &s->ge, d);
  s->es = (EvalSteps){s->ee, &s->ge, NULL};
  if (!r->o->pad_to_max) eval_steps_bucket(&s->es, &s->ebp, &r->model, r->contract.graph, &s->se);
  return s->ee != NULL;
}

/* The model's pretrained part: its parameters under `encoder.` (the
 * scope bert.yaml's graphs share), or all of them when it has none. */
static bool pretrained_part(const Graph *g, const Value *v) {
  for (int i = 0; i < g->params.n; i++)
    if (strncmp(g->values.data[g->params.data[i]].name, "encoder.", 8) == 0)
      return strncmp(v->name, "encoder.", 8) == 0;
  return true;
}

/* --init: the parameters the checkpoint holds, by name. Which of the
 * pretrained part it lacks is said; none of it is an error unless
 * --allow-partial-init. */
static bool snli_task_init(TrainRun *r, Diag *d) {
  const TrainOptions *o = r->o;
  Snli *s = r->state;
  /* --overwrite: an earlier run's best must not pass for this run's */
  if (remove(s->best_path) != 0 && train_file_exists(s->best_path)) {
    diag_error(d, (SrcLoc){bc_intern(s->best_path), 0, 0}, "cannot remove the earlier run's best model");
    return false;
  }
  if (!r->have_origin) return true; /* from scratch: the seeded initialization */
  const CheckpointInfo *info = &r->origin.info;
  int n_part = 0, n_found = 0, n_any = 0;
  char missing[512] = "";
  size_t at = 0;
  for (int i = 0; i < r->g.params.n; i++) {
    const Value *v = &r->g.values.data[r->g.params.data[i]];
    bool found = false;
    for (int k = 0; k < info->tensors.n && !found; k++) found = strcmp(info->tensors.data[k].name, v->name) == 0;
    n_any += found;
    if (!pretrained_part(&r->g, v)) continue;
    n_part++;
    n_found += found;
    if (!found && at < sizeof missing)
      at += (size_t)snprintf(missing + at, sizeof missing - at, "%s%s", at ? ", " : "", v->name);
  }
  SrcLoc loc = {bc_intern(o->init), 0, 0};
  if (n_found == 0 && !o->allow_partial_init) {
    diag_error(d, loc,
               "holds none of the %d parameters of the model's pretrained part (%s), so it is no "
               "pretraining of this model; fine-tune from scratch without --init, or pass "
               "--allow-partial-init to start from the %d tensors it shares",
               n_part, missing, n_any);
    return false;
  }
  if (n_found < n_part)
    train_info(o, "%s: warning: %d of the %d parameters of the pretrained part are not in it and start random: %s\n",
               o->init, n_part - n_found, n_part, missing);
  if (n_any > 0) {
    char hash[32];
    train_vocab_hash(&s->vocab, hash);
    CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
    if (checkpoint_load(o->init, r->e, &lo, NULL, d) < 0) return false;
  }
  train_info(o, "snli: %d of %d parameter tensors initialized from %s, the rest new\n", n_any, r->g.params.n,
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

/* The test accuracy of the evaluation graph's parameters (dropout off). */
static bool snli_test(TrainRun *r, Diag *d) {
  Snli *s = r->state;
  EvalResult er;
  if (!eval_run(&s->es, &s->te.data, r->o->dist, &er, d)) return false;
  s->test_acc = eval_accuracy(&er);
  return true;
}

/* After each epoch and every --eval-every steps: the dev accuracy of the
 * training replica's parameters, and the best kept; at an epoch's end also
 * the test accuracy, as d2l reports it (never used to choose). */
static bool snli_task_after_step(TrainRun *r, int64_t step, Diag *d) {
  const TrainOptions *o = r->o;
  Snli *s = r->state;
  Selection *sel = &s->sel;
  bool epoch_end = (step + 1) % r->b.n_batches == 0;
  if (!epoch_end && !(o->eval_every > 0 && (step + 1) % o->eval_every == 0)) return true;
  const MetricsRecord *fr = progress_flush(r->prog);
  MetricsRecord er = fr ? *fr : progress_event(r->prog);
  bool better;
  if (!train_copy_params(r->e, &r->g, s->ee, &s->ge, d) ||
      !selection_eval(sel, &s->es, o->dist, step + 1, &better, d))
    return false;
  if (better && train_is_root(o) &&
      !selection_save_best(sel, s->best_path, r->e, &r->model, r->b.n_batches, o, r->total, r->vocab, r->train_s, d))
    return false;
  char dev[96], ep[32];
  selection_epoch_text(sel->best_step, r->b.n_batches, ep);
  if (better)
    snprintf(dev, sizeof dev, "dev acc %.3f (best so far)", sel->last_acc);
  else
    snprintf(dev, sizeof dev, "dev acc %.3f (best %.3f at epoch %s)", sel->last_acc, sel->best_acc, ep);
  metrics_record_set(&er, "dev_acc", sel->last_acc);
  if (epoch_end) {
    if (!snli_test(r, d)) return false;
    progress_log(r->prog, "snli epoch %d: loss %.3f, train acc %.3f, %s, test acc %.3f",
                 (int)(step / r->b.n_batches) + 1, s->ep_loss / s->ep_n, s->ep_correct / s->ep_n, dev, s->test_acc);
    metrics_record_set(&er, "test_acc", s->test_acc);
  } else {
    selection_epoch_text(step + 1, r->b.n_batches, ep);
    progress_log(r->prog, "snli step %lld (epoch %s): %s", (long long)(step + 1), ep, dev);
  }
  progress_restart_window(r->prog);
  return train_record(r, &er, d);
}

static void snli_task_save_meta(TrainRun *r, CheckpointMeta *m) {
  Snli *s = r->state;
  selection_meta(&s->sel, m);
}

static bool snli_task_finish(TrainRun *r, Diag *d) {
  Snli *s = r->state; /* the run ends at an epoch's end: its sums are whole */
  const Selection *sel = &s->sel;
  double best_test = s->test_acc; /* the last model's, when it is the best */
  if (sel->best_step != r->total &&
      !selection_test_best(sel, s->best_path, &s->es, &s->te.data, &s->vocab, r->o->dist, &best_test, d))
    return false;
  if (s->es.bp) {
    char what[320];
    bucket_plans_describe(s->es.bp, what, sizeof what);
    train_info(r->o, "snli: evaluation steps for %s\n", what);
  }
  if (train_is_root(r->o)) {
    char ep[32];
    selection_epoch_text(sel->best_step, r->b.n_batches, ep);
    printf("loss %.3f, train acc %.3f, test acc %.3f (the last model, step %lld)\n"
           "best dev acc %.3f at step %lld (epoch %s): test acc %.3f (%s)\n"
           "%.1f examples/sec on %s\n"
           "dev evaluation: %d pass%s over %d examples, %.1f s (not in the examples/sec)\n",
           s->ep_loss / s->ep_n, s->ep_correct / s->ep_n, s->test_acc, (long long)r->total, sel->best_acc,
           (long long)sel->best_step, ep, best_test, s->best_path, train_examples_per_s(r), r->where, sel->n_evals,
           sel->n_evals == 1 ? "" : "es", sel->dev.data.n_examples, sel->eval_s);
  }
  return true;
}

static void snli_task_free(TrainRun *r) {
  Snli *s = r->state;
  free(s->logits_buf);
  bucket_plans_free(&s->ebp);
  exec_destroy(s->ee);
  if (s->have_ge) graph_free(&s->ge);
  selection_free(&s->sel);
  free(s->best_path);
  train_sets_free(&s->se);
  if (s->have_tr) snli_free(&s->tr);
  if (s->have_te) snli_free(&s->te);
  for (int i = 0; i < s->n_train; i++) free(s->train_paths[i]);
  if (s->have_vocab) vocab_free(&s->vocab);
  free(s);
  r->state = NULL;
}

static const char *const snli_hparams[] = {"vocab", "batch", "max_len", "dropout", NULL};
static const char *const snli_inputs[] = {"tokens", "segments", "valid_len", "label", NULL};
static const char *const snli_outputs[] = {"logits", NULL};

static const TrainTask snli_task = {
    .name = "snli",
    .plot_title = "bertc snli",
    .examples = "training",
    .by_epoch = true,
    .has_acc = true,
    .contract = {"snli", "nli", snli_hparams, snli_inputs, snli_outputs},
    .prepare = snli_task_prepare,
    .load = snli_task_load,
    .setup = snli_task_setup,
    .init = snli_task_init,
    .configure = snli_task_configure,
    .step_done = snli_task_step_done,
    .after_step = snli_task_after_step,
    .save_meta = snli_task_save_meta,
    .finish = snli_task_finish,
    .free = snli_task_free,
};

TrainStatus train_snli(const TrainOptions *o, Diag *d) { return train_run(o, &snli_task, d); }
