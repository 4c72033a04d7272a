/* train_util.h — what training (train.c), evaluation and prediction
 * (eval.c) share: run folders and data paths, settings owned as strings,
 * compiling the model, writing a batch into a step, checkpoints of a run.
 *
 * Internal to tasks/: bertrun.c calls train.h only. Errors go into the Diag
 * as everywhere; nothing prints except train_info (rank 0's stderr). */
#ifndef BC_TRAIN_UTIL_H
#define BC_TRAIN_UTIL_H

#include "../runtime/backend.h"
#include "../runtime/checkpoint.h"
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
/* Appends settings (borrowed), after which they override the earlier ones. */
void train_sets_push(TrainSets *s, const Setting *user, int n_user);

/* ---- models (train_model.c) ---- */

/* The model a run compiles: a YAML file on the disk, or the files a
 * checkpoint carries (n_files > 0; they compile without the disk). */
typedef struct {
  const char *path;  /* the main file's name: messages and metadata */
  SourceFile *files; /* owned */
  int n_files;
  char *owned_path;
} TrainModel;

/* models/bert.yaml beside the binary (a checkout's build/, or
 * PREFIX/share/bertc/models for PREFIX/bin), else relative to the working
 * folder; heap string. */
char *train_default_model(void);
/* models/FILE found the same way (train_default_model is "bert.yaml"). */
char *train_model_beside_binary(const char *file);
/* The model in the YAML file `path` (NULL: train_default_model). */
void train_model_file(TrainModel *m, const char *path);
void train_model_free(TrainModel *m);

/* A checkpoint a run starts from (--init, --resume, eval, predict): its
 * metadata and hparams, read without its tensors. */
typedef struct {
  const char *path;
  CheckpointInfo info; /* metadata and tensor list */
  HParam *hparams;     /* names interned */
  int n_hparams;
} TrainOrigin;

/* The metadata key of the vocabulary text a checkpoint carries. */
#define TRAIN_META_VOCAB "vocab"

/* Reads the checkpoint's header; an error naming it when it is not a bertc
 * checkpoint. Free with train_origin_free (also on failure). */
bool train_origin_read(TrainOrigin *s, const char *ckpt, Diag *d);
void train_origin_free(TrainOrigin *s);
const HParam *train_origin_hparam(const TrainOrigin *s, const char *name);
/* The vocabulary the checkpoint carries (checkpoints written before they
 * did: vocab.txt beside it), checked against its hash; v initialized here. */
bool train_origin_vocab(const TrainOrigin *s, Vocab *v, Diag *d);
/* The model to compile: `model_flag` (--model) when given, else the
 * checkpoint's own files; adds the checkpoint's hparams to `sets` except
 * those named in `skip` (NULL-terminated, may be NULL) and, with
 * --model, those that model does not declare. */
bool train_origin_model(TrainOrigin *s, const char *model_flag, TrainModel *m, TrainSets *sets,
                        const char *const *skip, Diag *d);

/* One error, naming the checkpoint and the settings of `sets` that differ
 * from its hparams, when a parameter of g has another shape than the
 * checkpoint's tensor of that name (a flag such as --set hidden=64 against
 * a checkpoint of hidden 32). */
bool train_origin_check_shapes(const TrainOrigin *s, const Graph *g, const TrainSets *sets, Diag *d);

/* Graph `graph` of the model compiled with the settings, for training
 * (forward, backward and Adam with `adam`) or, with adam NULL, inference;
 * `outputs` NULL keeps every output, else only those named
 * (CompileOptions.outputs: a training step computes no more than it reads). */
bool train_compile(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, const AdamOptions *adam,
                   const char *const *outputs, Diag *d);
/* train_compile of one length bucket: hparam seq = `seq`, random streams
 * keyed as in the graph padded to `max_len` (CompileOptions.key_sets);
 * adam and outputs as for train_compile. */
bool train_compile_bucket(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, int seq, int max_len,
                          const AdamOptions *adam, const char *const *outputs, Diag *d);
/* Only expanded (graph NULL: the model's first graph; s may be NULL). */
bool train_expand(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, Diag *d);

/* What a task asks of a model (models/README.md): the graph it trains,
 * the hparams it sets from its data, the inputs it can feed (the graph may
 * take fewer, no others) and the outputs it reads (NULL-terminated lists). */
typedef struct {
  const char *task, *graph;
  const char *const *hparams, *const *inputs, *const *outputs;
} TrainContract;

/* Whether the expanded graph g (of the model in `model_path`) offers what
 * `c` asks: each missing piece one error naming the model file. */
bool train_check_contract(const Graph *g, const char *model_path, const TrainContract *c, Diag *d);
/* "a, b, c" of a NULL-terminated list into buf. */
void train_contract_list(const char *const *names, char *buf, size_t n);
/* The graph output named `name`, or -1. */
ValueId train_output(const Graph *g, const char *name);
/* Copies a batch's fields into the graph inputs of the same names, and `lr`
 * into the input lr when the graph has one. */
bool train_write_batch(Exec *e, const Graph *g, const DataBatch *b, double lr, Diag *d);

/* The vocabulary's hash as checkpoints record it (16 hex digits). */
void train_vocab_hash(const Vocab *v, char buf[32]);
/* Loads vocab.txt from the folder of `checkpoint` (v initialized here). */
bool train_vocab_beside(Vocab *v, const char *checkpoint, Diag *d);

/* Writes <o->out>/checkpoint.safetensors of e at `step`: the model's files
 * (from e's graph), hparams, vocabulary and its hash, seed, time, and the
 * optimizer settings of a run of `total` steps (train_optim_record). */
bool train_save(const TrainOptions *o, int64_t total, Exec *e, const TrainModel *m, int64_t step, const Vocab *v,
                double time_s, Diag *d);
/* train_save to `path` (best.safetensors beside the last checkpoint), with
 * the extra metadata pairs of `extra` (NULL: none; its other fields are
 * ignored) after the ones train_save writes. */
bool train_save_path(const char *path, const TrainOptions *o, int64_t total, Exec *e, const TrainModel *m,
                     int64_t step, const Vocab *v, double time_s, const CheckpointMeta *extra, Diag *d);
/* --resume: when `ckpt` exists, loads all of it (same vocabulary required)
 * and returns the step and training time it reached; without one the run
 * starts fresh (true, *start untouched). */
bool train_resume(const TrainOptions *o, const char *ckpt, Exec *e, const Vocab *v, int64_t *start,
                  double *time_offset, Diag *d);

#endif
