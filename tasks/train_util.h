/* train_util.h — what training (train.c), evaluation and prediction
 * (eval.c) share: run folders and data paths, settings owned as strings,
 * compiling the model, writing a batch into a step, checkpoints of a run.
 *
 * Internal to tasks/: bertrun.c calls train.h only. Errors go into the Diag
 * as everywhere; nothing prints except train_info (rank 0's stderr). */
#ifndef BC_TRAIN_UTIL_H
#define BC_TRAIN_UTIL_H

#include "../runtime/backend.h"
#include "dataset.h"
#include "train.h"
#include "vocab.h"

#define TRAIN_CHECKPOINT_FILE "checkpoint.safetensors"

/* "<a>/<b>" in a fresh string. */
char *train_join(const char *a, const char *b);
bool train_file_exists(const char *path);
/* mkdir -p; an error naming the folder on failure. */
bool train_make_dir(const char *path, Diag *d);
/* --data, else $BERT_DATA; NULL with an error when neither is set. */
const char *train_data_dir(const char *given, Diag *d);
/* Whether this process is rank 0 (always, without a Dist). */
bool train_is_root(const TrainOptions *o);
/* fprintf(stderr, ...) on rank 0 only. */
void train_info(const TrainOptions *o, const char *fmt, ...) BC_PRINTF(2, 3);

/* Settings owned as strings: the user's, then the ones the data decides. */
typedef struct {
  Setting s[2 * TRAIN_MAX_SETS];
  char *owned[TRAIN_MAX_SETS];
  int n, n_owned;
} TrainSets;

void train_sets_init(TrainSets *s, const Setting *user, int n_user);
/* key = value (as %.17g, so every double is kept exactly); key is borrowed. */
void train_sets_add(TrainSets *s, const char *key, double value);
void train_sets_free(TrainSets *s);
/* Each member of a checkpoint's hparams object {"name": number, ...} as a
 * setting; an error naming `file` when it is not such an object or has too
 * many members. */
bool train_sets_add_hparams(TrainSets *s, const char *json, const char *file, Diag *d);

/* Graph `graph` of `model` compiled with the settings, for training (forward,
 * backward, Adam) or inference. */
bool train_compile(Graph *g, const char *model, const char *graph, const TrainSets *s, bool train,
                   Diag *d);
/* The graph output named `name`, or -1. */
ValueId train_output(const Graph *g, const char *name);
/* Copies a batch's fields into the graph inputs of the same names, and `lr`
 * into the input lr when the graph has one. */
bool train_write_batch(Exec *e, const Graph *g, const DataBatch *b, double lr, Diag *d);

/* The vocabulary's hash as checkpoints record it (16 hex digits). */
void train_vocab_hash(const Vocab *v, char buf[32]);
/* Loads vocab.txt from the folder of `checkpoint` (v initialized here). */
bool train_vocab_beside(Vocab *v, const char *checkpoint, Diag *d);

/* Writes <out>/checkpoint.safetensors of e at `step`. */
bool train_save(const char *out, Exec *e, const char *model, int64_t step,
                uint64_t seed, const Vocab *v, double time_s, Diag *d);
/* --resume: when `ckpt` exists, loads all of it (same vocabulary required)
 * and returns the step and training time it reached; without one the run
 * starts fresh (true, *start untouched). */
bool train_resume(const TrainOptions *o, const char *ckpt, Exec *e, const Vocab *v, int64_t *start,
                  double *time_offset, Diag *d);

#endif
