/* selection.h — model selection on SNLI dev for fine-tuning (train.c):
 * the dev set read and encoded exactly as the test set is (snli_load: the
 * same cleaning, truncation and vocabulary), its accuracy after each epoch
 * (and every --eval-every steps), the best model kept as best.safetensors
 * beside the last checkpoint, and the best so far recorded in the last
 * checkpoint's metadata so a resumed run keeps it. Also which file
 * `bertrun eval RUN_DIR` evaluates (eval.c).
 *
 * Invariants: dev only chooses, and test never does; a tie keeps the
 * earlier model; the dev evaluation runs on the evaluation Exec (dropout
 * 0, batches in file order), so it draws nothing from the training random
 * stream and leaves the data order alone. Not here: when to evaluate (the
 * training loop), the test set, pretraining (which has no dev set and
 * keeps no best). */
#ifndef BC_TASKS_SELECTION_H
#define BC_TASKS_SELECTION_H

#include "../runtime/checkpoint.h"
#include "eval.h"
#include "snli.h"
#include "train_util.h"

#define SELECTION_BEST_FILE "best.safetensors"
#define SELECTION_DEV_FILE "snli_1.0_dev.txt"

typedef struct {
  char *dev_path; /* <data>/snli/snli_1.0_dev.txt; owned */
  SnliData dev;
  bool have_dev;
  double best_acc;   /* -inf: none yet */
  int64_t best_step; /* the step best.safetensors holds; -1: none yet */
  double last_acc;   /* the last evaluation's; NaN: none in this process */
  int n_evals;       /* dev evaluations in this process ... */
  double eval_s;     /* ... and their seconds (not training time) */
} Selection;

void selection_init(Selection *s);
void selection_free(Selection *s);

/* Whether the data folder's dev file exists: checked before any data are
 * read, so a run never learns it is missing after its first epoch. False
 * with an error naming the file. */
bool selection_check_dev(Selection *s, const char *data_dir, Diag *d);
/* Reads the dev file as the test file is read (v, max_len). */
bool selection_load_dev(Selection *s, const Vocab *v, int max_len, Diag *d);

/* A resumed run: the best so far from the metadata of the checkpoint it
 * resumes. False (the best forgotten: the next evaluation writes a new one)
 * when the metadata name a best but `best_path` does not exist. */
bool selection_resume(Selection *s, const CheckpointMeta *m, const char *best_path);

/* Dev accuracy of `steps` (an nli graph, dropout 0, holding the parameters
 * after `step` steps) into s->last_acc; *better when it beats the best so
 * far strictly, which then becomes (last_acc, step). With several ranks
 * every rank calls it (eval_run sums the counts). */
bool selection_eval(Selection *s, const EvalSteps *steps, Dist *dist, int64_t step, bool *better, Diag *d);

/* The last checkpoint's record of the best: best_dev_acc and best_step
 * into m's extra pairs (nothing before the first evaluation). */
void selection_meta(const Selection *s, CheckpointMeta *m);

/* Writes `path` (best.safetensors) from the training Exec e, atomically,
 * as train_save writes a checkpoint, with dev_acc and epoch (step /
 * steps_per_epoch) added to its metadata; s->best_* say which. */
bool selection_save_best(const Selection *s, const char *path, Exec *e, const TrainModel *m,
                         int64_t steps_per_epoch, const TrainOptions *o, int64_t total, const Vocab *v,
                         double time_s, Diag *d);

/* The test accuracy of best.safetensors (`best_path`): loaded into
 * steps->e (the nli graph, dropout 0) on rank 0, broadcast, evaluated on `test` by
 * every rank. For the summary: test is reported, never chosen by. */
bool selection_test_best(const Selection *s, const char *best_path, const EvalSteps *steps, const Dataset *test,
                         const Vocab *v, Dist *dist, double *acc, Diag *d);

/* "3" for an epoch's end, "2.5" half-way through the third (%.4g). */
void selection_epoch_text(int64_t step, int64_t steps_per_epoch, char buf[32]);

/* What `bertrun eval PATH` evaluates: in a run folder its best.safetensors,
 * else its checkpoint.safetensors; any other path itself. A heap string;
 * NULL with an error naming the folder when it holds neither. */
char *selection_pick(const char *path, Diag *d);

#endif
