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

/* The learning rate after the warmup (train_optim.h: the rate per step). */
typedef enum {
  TRAIN_SCHEDULE_CONSTANT, /* lr */
  TRAIN_SCHEDULE_LINEAR,   /* linear decay to 0 at the run's end */
  TRAIN_SCHEDULE_COSINE,   /* half a cosine down to 0 at the run's end */
} TrainSchedule;
/* "constant", "linear", "cosine"; false for another name. */
bool train_schedule_parse(const char *name, TrainSchedule *out);
const char *train_schedule_name(TrainSchedule s);

#define TRAIN_MAX_SETS 64
#define TRAIN_MAX_FILES 16

typedef struct {
  const char *task;   /* "pretrain" or "snli" */
  const char *graph;  /* snli: the model's graph to fine-tune (NULL: "nli") */
  const char *model;  /* --model; NULL: the checkpoint's own (--init, --resume), else models/bert.yaml beside the binary */
  const char *data;   /* folder with wikitext-2/ and snli/ */
  const char *out;    /* run folder: checkpoint, vocab.txt, metrics, plot */
  const char *init;   /* snli: the pretraining checkpoint (NULL: train from scratch) */
  const char *vocab;  /* snli from scratch: vocab.txt to use (NULL: built from the training data) */
  const char *device; /* cpu (default), cuda, cuda:N, interp; train: also a list (cuda:0,1, cuda:all, cpu:0,1) */
  Setting sets[TRAIN_MAX_SETS];
  int n_sets;
  const char *snli_train[TRAIN_MAX_FILES]; /* snli: training files */
  int n_snli_train;
  int64_t steps;   /* pretrain */
  int epochs;      /* snli */
  int batch;       /* examples per step */
  int eval_batch;  /* examples per evaluation step */
  double lr;               /* the peak learning rate */
  TrainSchedule schedule;  /* the rate after the warmup (default constant) */
  int64_t warmup;          /* steps of linear warmup from 0 to lr (default 0) */
  double weight_decay;     /* AdamW's, of parameters of rank >= 2 (default 0: none) */
  double clip;             /* global gradient-norm bound (default 0: no clipping) */
  uint64_t seed;
  int max_len;        /* 0: the checkpoint's (--init), else 128 */
  int max_len_cap;    /* > 0: without --max-len, at most this (recipe hf: 128) */
  int64_t save_every; /* steps between checkpoints (0: only at the end) */
  int64_t max_examples; /* > 0: use only the first N training examples */
  int64_t report_every; /* steps per progress/metrics record (0: every ~10 s) */
  int64_t eval_every;   /* snli: also evaluate dev every N steps (0: at each epoch's end only) */
  bool resume;
  bool overwrite;          /* start afresh in a run folder that holds a checkpoint */
  bool pad_to_max;         /* every batch padded to max_len (d2l), not to its length bucket */
  bool allow_partial_init; /* --init that finds none of the encoder's parameters */
  /* The command that continues this run (--resume), shown when a signal
   * interrupts it. */
  const char *resume_command;
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

/* The defaults for `task` under a recipe: "bertc" (settings that learn:
 * bertrun --help lists them), "d2l" (the chapter's: pretrain 4,000 steps
 * at batch 256, lr 0.01; snli 5 epochs at batch 512, lr 1e-4; both a
 * constant rate, no warmup, weight decay or clipping) or, for snli only,
 * "hf" (BERT's fine-tuning: 3 epochs at batch 32, lr 3e-5 decaying
 * linearly, max_len at most 128); false for an unknown recipe. */
bool train_options_default(TrainOptions *o, const char *task, const char *recipe);

typedef enum {
  TRAIN_FAILED,      /* errors in the Diag */
  TRAIN_DONE,        /* every step ran and the run folder holds the result */
  TRAIN_INTERRUPTED, /* SIGINT or SIGTERM: stopped after a step, checkpoint written */
} TrainStatus;

TrainStatus train_pretrain(const TrainOptions *o, Diag *d);
TrainStatus train_snli(const TrainOptions *o, Diag *d);
/* Whether `checkpoint` is a Hugging Face BERT (made by `bertc import` or
 * fine-tuned from one); false also when it cannot be read. */
bool train_init_is_hf(const char *checkpoint);

/* Test accuracy and confusion matrix of an snli checkpoint on snli_1.0_test
 * (o: data, device, eval_batch, model). `checkpoint` may be a run folder:
 * its best.safetensors (the best on dev), else its checkpoint.safetensors;
 * the file evaluated is named on stdout. */
bool train_eval_snli(const char *checkpoint, const TrainOptions *o, Diag *d);
/* Labels and probabilities under an snli checkpoint (predict.c): of the
 * pair premise/hypothesis, or with `input` (a file, "-" for standard
 * input) of every pair in it, as JSON lines in batches of o->eval_batch. */
bool train_predict(const char *checkpoint, const TrainOptions *o, const char *premise, const char *hypothesis,
                   const char *input, Diag *d);
/* The hidden states of the texts of `input` (a file, "-" for standard
 * input; a line is a text or a TAB-separated pair) under a Hugging Face
 * BERT checkpoint (encode.c), in batches of o->eval_batch on o->device,
 * written to the safetensors file `output`; with the full last hidden
 * states of the first `hidden_rows` texts. */
bool train_encode(const char *checkpoint, const TrainOptions *o, const char *input, const char *output,
                  int hidden_rows, Diag *d);

#endif
