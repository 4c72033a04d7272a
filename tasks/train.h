/* train.h — the d2l jobs as library calls: pretraining on WikiText-2,
 * fine-tuning on SNLI (train.c), evaluation and prediction (eval.c)
 * (D2L.md). bertrun.c is only their command line.
 *
 * Not here: data parsing (wikitext.c, snli.c), the compiler (passes/) or
 * devices (runtime/). Every function reports user errors through Diag and
 * returns false; it prints progress to stderr and results to stdout (under
 * mpirun, rank 0 only). */
#ifndef BC_TRAIN_H
#define BC_TRAIN_H

#include "../passes/passes.h"

typedef struct Dist Dist; /* runtime/dist.h */

#define TRAIN_MAX_SETS 64
#define TRAIN_MAX_FILES 16

typedef struct {
  const char *task;   /* "pretrain" or "snli" */
  const char *model;  /* models/bert.yaml */
  const char *data;   /* folder with wikitext-2/ and snli/ */
  const char *out;    /* run folder: checkpoint, vocab.txt, metrics, plot */
  const char *init;   /* snli: the pretraining checkpoint */
  const char *device; /* cpu (default), cuda, cuda:N, interp; train: also a list (cuda:0,1, cuda:all, cpu:0,1) */
  Setting sets[TRAIN_MAX_SETS];
  int n_sets;
  const char *snli_train[TRAIN_MAX_FILES]; /* snli: training files */
  int n_snli_train;
  int64_t steps;   /* pretrain */
  int epochs;      /* snli */
  int batch;       /* examples per step */
  int eval_batch;  /* examples per evaluation step */
  double lr;
  uint64_t seed;
  int max_len;
  int64_t save_every; /* steps between checkpoints (0: only at the end) */
  int64_t max_examples; /* > 0: use only the first N training examples */
  int64_t report_every; /* steps per progress/metrics record (0: every ~10 s) */
  bool resume;
  /* Data-parallel job (runtime/dist.h; NULL = one process, which then
   * takes one device). With N replicas in all (ranks x the devices of
   * `device`, a list such as cuda:0,1) the global batch `batch` is split
   * evenly (an error when N does not divide it): replica r trains on rows
   * [r*batch/N, (r+1)*batch/N) of the batch one process would draw, with
   * the same dropout masks; gradients are averaged; parameters and
   * optimizer state start from rank 0's (after --init or --resume); losses
   * and accuracies are averaged over replicas; only rank 0 prints progress
   * and writes the run folder (from its replica 0). */
  Dist *dist;
} TrainOptions;

/* d2l's reference settings for `task`: pretrain 4,000 steps at batch 256,
 * lr 0.01; snli 5 epochs at batch 512, lr 1e-4; max_len 128, seed 0. */
void train_options_default(TrainOptions *o, const char *task);

bool train_pretrain(const TrainOptions *o, Diag *d);
bool train_snli(const TrainOptions *o, Diag *d);
/* Test accuracy and confusion matrix of an snli checkpoint on snli_1.0_test. */
bool train_eval_snli(const char *checkpoint, const char *data, const char *device, int batch, Diag *d);
/* Label and probabilities of one pair under an snli checkpoint. */
bool train_predict(const char *checkpoint, const char *device, const char *premise,
                   const char *hypothesis, Diag *d);

#endif
