/* eval.h — accuracy and confusion matrix of the NLI classifier: the argmax
 * of each row of logits counted against the gold labels, and evaluation of
 * a compiled nli graph over a dataset (as d2l's evaluate_accuracy_gpu).
 *
 * Also `bertrun eval` (train_eval_snli, declared in train.h) and the
 * loading of a fine-tuned checkpoint it shares with `bertrun predict`
 * (predict.c). Not here: training. */
#ifndef BC_TASKS_EVAL_H
#define BC_TASKS_EVAL_H

#include "../runtime/backend.h"
#include "bucket_plans.h"
#include "dataset.h"
#include "snli.h"
#include "vocab.h"

typedef struct Dist Dist; /* runtime/dist.h */

/* The compiled nli graph an evaluation runs: g at max_len on e (dropout 0,
 * output "logits" (batch, 3)) and, when bp is given, the graphs of shorter
 * length buckets (inference BucketPlans owned by g and e: compiled the
 * first time a batch of that length comes, sharing e's parameters). With
 * bp NULL every batch is padded to max_len, as d2l's. */
typedef struct {
  Exec *e;
  const Graph *g;
  BucketPlans *bp;
} EvalSteps;

/* Inference BucketPlans for `steps` (whose g was compiled from `model`'s
 * graph `graph` with `sets`), unless g has no hparam seq to bucket by:
 * then bp stays NULL. The pointers must outlive bp. */
void eval_steps_bucket(EvalSteps *steps, BucketPlans *bp, const TrainModel *model, const char *graph,
                       const TrainSets *sets);

typedef struct {
  int64_t n, correct;
  int64_t confusion[SNLI_N_LABELS][SNLI_N_LABELS]; /* [gold][predicted] */
} EvalResult;

/* The index of the largest of x[0, n) (n >= 1); a tie goes to the lowest
 * index. Comparisons with NaN are false: a NaN after the running maximum
 * is skipped, one at index 0 is never replaced. */
int eval_argmax(const float *x, int n);

/* Counts n_rows predictions into r (which the caller zeroed once): row j of
 * `logits` (n_rows, SNLI_N_LABELS) predicts eval_argmax of it, the gold
 * label is labels[rows[j]] (rows NULL: labels[j]), each in
 * [0, SNLI_N_LABELS). */
void eval_count(EvalResult *r, const float *logits, const int32_t *labels, const int32_t *rows,
                int n_rows);

/* correct / n, NaN when n is 0. */
double eval_accuracy(const EvalResult *r);

/* The logits of every example of `ds` (its fields as the graph's inputs,
 * "valid_len" among them when bucketed): batches of the graph's batch size
 * (the last one's padding rows not reported), with buckets in order of
 * length; fn(ctx, logits, rows, n) gets each batch's n real rows (logits
 * (n, 3), rows: their indices in ds). Of rank/size, only every size-th
 * batch from the rank-th is run. */
typedef void (*EvalRowsFn)(void *ctx, const float *logits, const int32_t *rows, int n_rows);
bool eval_logits(const EvalSteps *steps, const Dataset *ds, int rank, int size, EvalRowsFn fn, void *ctx, Diag *d);

/* Accuracy of `steps` on `ds` (eval_logits); with several ranks each runs
 * its batches and the counts are summed (dist may be NULL). */
bool eval_run(const EvalSteps *steps, const Dataset *ds, Dist *dist, EvalResult *r, Diag *d);

/* A fine-tuned checkpoint loaded for evaluation or prediction. */
typedef struct {
  Vocab vocab;
  TrainModel model;
  TrainSets sets;
  Graph g;
  BucketPlans bp;
  EvalSteps steps;
} NliModel;

/* The nli graph of a fine-tuned checkpoint on `device` with every
 * parameter loaded: the model the checkpoint carries (`model`, --model,
 * when given), its hparams with the given batch and dropout 0, its
 * vocabulary; bucketed (eval_steps_bucket) unless `padded`. Refuses
 * (errors naming the file) a checkpoint of another graph, one lacking
 * parameters, one with non-finite weights. On failure nothing is left to
 * free; else nli_model_free. */
bool eval_load_nli(const char *checkpoint, const char *model, const char *device, int batch, bool padded,
                   NliModel *m, Diag *d);
void nli_model_free(NliModel *m);

#endif
