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
#include "dataset.h"
#include "snli.h"
#include "vocab.h"

typedef struct Dist Dist; /* runtime/dist.h */

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

/* Accuracy of `e` (an nli graph g whose output "logits" is (batch, 3),
 * dropout 0) on `ds`, batch by batch, the padded rows of the last batch not
 * counted; with several ranks each runs every size-th batch and the counts
 * are summed (dist may be NULL). */
bool eval_run(Exec *e, const Graph *g, const Dataset *ds, Dist *dist, EvalResult *r, Diag *d);

/* The nli graph of a fine-tuned checkpoint on `device` with every
 * parameter loaded: the model the checkpoint carries (`model`, --model,
 * when given), its hparams with the given batch and dropout 0, its
 * vocabulary (vocab initialized here). Refuses (errors naming the file) a
 * checkpoint of another graph, one lacking parameters, one with non-finite
 * weights. On failure nothing is left to free. */
bool eval_load_nli(const char *checkpoint, const char *model, const char *device, int batch, Vocab *vocab,
                   Graph *g, Exec **e, Diag *d);

#endif
