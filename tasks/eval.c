/* eval.c — evaluation and prediction (eval.h): counting argmax predictions
 * into an accuracy and confusion matrix, evaluating an nli graph over a
 * dataset, and `bertrun eval` / `bertrun predict` from a fine-tuned
 * checkpoint (the nli graph rebuilt from the hparams the checkpoint
 * records, dropout 0, on one device); `bertrun eval` of a run folder
 * evaluates its best model on dev (selection.h). */
#include "eval.h"

#include <math.h>
#include <string.h>

#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "selection.h"
#include "train_util.h"

int eval_argmax(const float *x, int n) {
  int k = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[k]) k = i;
  return k;
}

void eval_count(EvalResult *r, const float *logits, const int32_t *labels, const int32_t *rows,
                int n_rows) {
  for (int j = 0; j < n_rows; j++) {
    int gold = labels[rows ? rows[j] : j], pred = eval_argmax(logits + j * SNLI_N_LABELS, SNLI_N_LABELS);
    BC_ASSERT(gold >= 0 && gold < SNLI_N_LABELS);
    r->n++;
    r->correct += gold == pred;
    r->confusion[gold][pred]++;
  }
}

double eval_accuracy(const EvalResult *r) { return r->n ? (double)r->correct / (double)r->n : NAN; }

void eval_steps_bucket(EvalSteps *steps, BucketPlans *bp, const TrainModel *model, const char *graph,
                       const TrainSets *sets) {
  steps->bp = NULL;
  if (isnan(graph_hparam(steps->g, "seq", NAN))) return; /* a model without the seq hparam: padded */
  *bp = (BucketPlans){.model = model, .graph = graph, .sets = sets, .adam = NULL,
                      .max_len = (int)graph_hparam(steps->g, "max_len", 128), .owner_g = steps->g, .owner = &steps->e};
  steps->bp = bp;
}

bool eval_logits(const EvalSteps *steps, const Dataset *ds, int rank, int size, EvalRowsFn fn, void *ctx, Diag *d) {
  int B = (int)graph_hparam(steps->g, "batch", 1);
  ValueId logits = train_output(steps->g, "logits");
  if (logits < 0) {
    diag_error(d, SRCLOC_NONE, "graph '%s' has no output named 'logits'", steps->g->name);
    return false;
  }
  Batcher b;
  batcher_init(&b, ds->n_examples, B, false, false);
  /* one batch: its bucket's compile would cost more than the padding */
  bool bucketed = steps->bp && b.n_batches > 1;
  if (bucketed) {
    const DataField *vl = dataset_field(ds, "valid_len");
    BC_ASSERT(vl && vl->dtype == DATA_I32);
    batcher_sort_by_length(&b, vl->data, steps->bp->max_len, TRAIN_BUCKET_GRANULE);
  }
  DataBatch db;
  data_batch_init(&db, ds, B);
  float *out = bc_malloc(sizeof(float) * (size_t)B * SNLI_N_LABELS);
  bool ok = true;
  for (int i = rank; ok && i < b.n_batches; i += size) {
    batcher_fill(&b, ds, i, &db);
    Exec *e = steps->e;
    const Graph *g = steps->g;
    int len = bucketed ? batcher_len(&b, i) : 0;
    if (bucketed && len < steps->bp->max_len) {
      Exec **es;
      if (!(ok = bucket_plans_get(steps->bp, len, &g, &es, d))) break;
      e = es[0];
    }
    RunContext rc = {0, 0, 0};
    ok = train_write_batch(e, g, &db, 0, d) && exec_run(e, &rc, d) &&
         exec_read(e, train_output(g, "logits"), out, DTYPE_F32, d);
    if (ok) fn(ctx, out, db.rows, db.n_real);
  }
  free(out);
  data_batch_free(&db);
  batcher_free(&b);
  return ok;
}

typedef struct {
  EvalResult *r;
  const int32_t *labels;
} Counting;

static void count_rows(void *ctx, const float *logits, const int32_t *rows, int n) {
  Counting *c = ctx;
  eval_count(c->r, logits, c->labels, rows, n);
}

bool eval_run(const EvalSteps *steps, const Dataset *ds, Dist *dist, EvalResult *r, Diag *d) {
  memset(r, 0, sizeof(*r));
  Counting c = {r, dataset_i32(ds, "label")};
  bool ok = eval_logits(steps, ds, dist_rank(dist), dist_size(dist), count_rows, &c, d);
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

/* ---- evaluation and prediction from a checkpoint ---- */

/* Every parameter of e finite; else an error naming the first that is not. */
static bool weights_finite(const char *checkpoint, Exec *e, const Graph *g, Diag *d) {
  bool ok = true;
  for (int i = 0; ok && i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    int64_t n = shape_numel(&v->shape);
    float *buf = bc_malloc(sizeof(float) * (size_t)n);
    if (!exec_read(e, g->params.data[i], buf, DTYPE_F32, d)) ok = false;
    for (int64_t k = 0; ok && k < n; k++)
      if (!isfinite(buf[k])) {
        diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0},
                   "parameter %s holds a non-finite value (%g at element %lld): the training diverged; use an "
                   "earlier checkpoint or train again with a lower --lr",
                   v->name, (double)buf[k], (long long)k);
        ok = false;
      }
    free(buf);
  }
  return ok;
}

bool eval_load_nli(const char *checkpoint, const char *model, const char *device, int batch, bool padded,
                   NliModel *m, Diag *d) {
  TrainOrigin s;
  memset(m, 0, sizeof *m);
  train_sets_init(&m->sets, NULL, 0);
  vocab_init(&m->vocab);
  bool ok = false, have_graph = false;
  if (!train_origin_read(&s, checkpoint, d)) goto done;
  /* the graph it was fine-tuned as (nli, or another --graph of its model) */
  const char *graph = s.info.meta.graph_name ? bc_intern(s.info.meta.graph_name) : NULL; /* outlives s */
  if (!graph || strcmp(graph, "pretrain") == 0 || strcmp(graph, "encode") == 0) {
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0},
               "a checkpoint of graph '%s', not of a fine-tuned 'nli' model (fine-tune with "
               "`bertrun train --task snli ...` first)",
               graph ? graph : "?");
    goto done;
  }
  if (!train_origin_model(&s, model, &m->model, &m->sets, NULL, d)) goto done;
  train_sets_add(&m->sets, "batch", batch);
  train_sets_add(&m->sets, "dropout", 0);
  vocab_free(&m->vocab);
  if (!train_origin_vocab(&s, &m->vocab, d)) goto done;
  if (!train_compile(&m->g, &m->model, graph, &m->sets, NULL, NULL, d)) goto done;
  have_graph = true;
  m->steps.g = &m->g;
  m->steps.e = exec_create_spec(device, &m->g, d); /* evaluation, prediction: one device */
  if (!m->steps.e) goto done;
  if (!padded) eval_steps_bucket(&m->steps, &m->bp, &m->model, graph, &m->sets);
  char hash[32];
  train_vocab_hash(&m->vocab, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
  int n = checkpoint_load(checkpoint, m->steps.e, &lo, NULL, d);
  if (n >= 0 && n != m->g.params.n)
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0}, "the checkpoint has %d of the %d parameters of the nli model", n,
               m->g.params.n);
  ok = n == m->g.params.n && weights_finite(checkpoint, m->steps.e, &m->g, d);
done:
  if (!ok) {
    exec_destroy(m->steps.e);
    m->steps.e = NULL;
    if (have_graph) graph_free(&m->g);
    vocab_free(&m->vocab);
    train_sets_free(&m->sets);
    train_model_free(&m->model);
  }
  train_origin_free(&s);
  return ok;
}

void nli_model_free(NliModel *m) {
  bucket_plans_free(&m->bp);
  exec_destroy(m->steps.e);
  graph_free(&m->g);
  vocab_free(&m->vocab);
  train_sets_free(&m->sets);
  train_model_free(&m->model);
}

/* "evaluating FILE" and, for a best model, where it came from. */
static void say_which(const char *given, const char *checkpoint) {
  CheckpointMeta m;
  Diag quiet; /* a bad file is eval_load_nli's to report */
  diag_init(&quiet);
  bool ok = checkpoint_read_meta(checkpoint, &m, &quiet);
  const char *acc = ok ? checkpoint_meta_get(&m, "dev_acc") : NULL, *ep = ok ? checkpoint_meta_get(&m, "epoch") : NULL;
  printf("evaluating %s", checkpoint);
  if (acc && ep)
    printf(" (the best on dev: dev accuracy %.4f at step %lld, epoch %s)", atof(acc), (long long)m.step, ep);
  else if (strcmp(given, checkpoint) != 0)
    printf(" (the run's last checkpoint: it holds no %s)", SELECTION_BEST_FILE);
  printf("\n");
  checkpoint_meta_free(&m);
  diag_free(&quiet);
}

bool train_eval_snli(const char *path, const TrainOptions *o, Diag *d) {
  const char *dir = train_data_dir(o->data, d);
  if (!dir) return false;
  char *checkpoint = selection_pick(path, d);
  if (!checkpoint) return false;
  NliModel m;
  if (!eval_load_nli(checkpoint, o->model, o->device, o->eval_batch, o->pad_to_max, &m, d)) {
    free(checkpoint);
    return false;
  }
  say_which(path, checkpoint);
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", dir);
  const char *tp[1] = {test_path};
  SnliData te;
  bool ok = snli_load(&te, tp, 1, &m.vocab, (int)graph_hparam(&m.g, "max_len", 128), d);
  EvalResult r;
  if (ok && (ok = eval_run(&m.steps, &te.data, NULL, &r, d))) {
    printf("test accuracy %.4f (%lld of %lld examples of %s)\n", eval_accuracy(&r),
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
  nli_model_free(&m);
  free(checkpoint);
  return ok;
}

