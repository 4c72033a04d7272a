/* train_run.h — the training loop's parts that a task (train.c:
 * pretraining, train_snli.c: fine-tuning) sees: one run's state
 * (TrainRun), what a task supplies (TrainTask), and train_run, the loop
 * that runs a task. Internal to tasks/. */
#ifndef BC_TASKS_TRAIN_RUN_H
#define BC_TASKS_TRAIN_RUN_H

#include "bucket_plans.h"
#include "report.h"
#include "split.h"
#include "train_util.h"

/* One training step of every local replica, at once (dist_run): each
 * writes its slice of the global batch, runs, and reads its scalar outputs
 * and, for fine-tuning, counts its correct predictions. */
typedef struct {
  const TrainOptions *o;
  Split *sp;
  Exec **es;
  const Graph *g;
  const DataBatch *global;
  uint32_t step;
  double lr; /* the step's rate (train_rate) */
  int n_out;
  ValueId out[3];
  ValueId logits; /* fine-tuning: x[k][n_out] is replica k's correct count */
  float *logits_buf[BC_MAX_REPLICAS];
  const int32_t *labels;
  double x[BC_MAX_REPLICAS][4];
} StepJob;

typedef struct TrainRun TrainRun;

/* What differs between pretraining and fine-tuning. Hooks return false
 * with an error to stop the run; train_run then frees everything. */
typedef struct {
  const char *name;       /* "pretrain", "snli": progress lines, messages */
  const char *plot_title; /* curves.svg */
  const char *examples;   /* "pretraining", "training": the batch-too-large error */
  bool by_epoch;          /* --epochs (progress by epoch and batch) or --steps */
  bool has_acc;           /* the step reports a training accuracy */
  TrainContract contract; /* the graph it trains and what it asks of it */
  /* A fresh run (not --resume): sets r->model, the hparams it starts from
   * (r->sets) and r->origin when it starts from a checkpoint; reads no data. */
  bool (*prepare)(TrainRun *r, Diag *d);
  /* Reads the data: sets r->state, r->data, r->vocab, adds the settings
   * the data decides to r->sets. */
  bool (*load)(TrainRun *r, Diag *d);
  /* After the training graph compiled, before its Execs exist. NULL: none. */
  bool (*setup)(TrainRun *r, Diag *d);
  /* The Execs exist with seeded parameters: on rank 0 of a fresh run, load
   * what the run starts from. NULL: nothing. */
  bool (*init)(TrainRun *r, Diag *d);
  /* The step's outputs into r->job (n_out, out, logits, labels). */
  void (*configure)(TrainRun *r);
  /* x: the step's outputs (then the correct count) summed over replicas;
   * the task's running sums, and the step's numbers into *m. */
  void (*step_done)(TrainRun *r, int64_t step, double *x, Metrics *m);
  /* After step `step` was recorded (an epoch's end). NULL: none. */
  bool (*after_step)(TrainRun *r, int64_t step, Diag *d);
  /* Extra metadata pairs of the run's checkpoint (rank 0). NULL: none. */
  void (*save_meta)(TrainRun *r, CheckpointMeta *m);
  /* After the last save: prints the results (stdout, rank 0). */
  bool (*finish)(TrainRun *r, Diag *d);
  void (*free)(TrainRun *r);
} TrainTask;

struct TrainRun {
  const TrainOptions *o;
  const TrainTask *t;
  TrainContract contract; /* t's, with the graph --graph names */
  Split sp;
  const char *dir; /* the data folder */
  char where[96];  /* split_where */
  TrainModel model;
  TrainOrigin origin; /* the checkpoint the run starts from (have_origin) */
  bool have_origin, resuming;
  int max_len;        /* --max-len, else the origin's, else 128 */
  const Dataset *data;
  const Vocab *vocab;
  TrainSets sets;
  Graph g;
  bool have_graph, have_batch;
  Exec *es[BC_MAX_REPLICAS], *e; /* e = es[0], the replica rank 0 saves */
  Batcher b;
  DataBatch db;
  MetricsLog log;
  Progress *prog;
  char *ckpt;
  int64_t start, total, n_batches, train_examples;
  double time_offset, train_s;
  double rate; /* the learning rate of the last step run */
  StepJob job;
  BucketPlans bp;      /* the steps of shorter length buckets (bucketed) */
  bool bucketed;       /* batches padded to their length bucket, not max_len */
  bool pad_buckets;    /* BC_PAD_BUCKETS=1: the same batches, padded to max_len (a check) */
  const Graph *cur_g;  /* the step the last batch ran */
  ValueId out0[3], logits0; /* the job's outputs in r->g, the max_len step */
  void *state; /* the task's */
};

/* Trains task t as o says (train.c): the run folder, the model, the data,
 * the compiled steps, the loop, the checkpoints, the summary. */
TrainStatus train_run(const TrainOptions *o, const TrainTask *t, Diag *d);

/* The record of a step or an epoch into metrics.jsonl and curves.svg (rank
 * 0), with "lr": the rate of its last step, so the curves show the schedule. */
bool train_record(TrainRun *r, const MetricsRecord *rec, Diag *d);

/* Copies every parameter `to` shares by name with `from`. */
bool train_copy_params(Exec *from, const Graph *gf, Exec *to, const Graph *gt, Diag *d);

/* Examples per second over the time spent in training steps (data loading
 * and evaluation excluded, as d2l measures), this run's steps only. */
double train_examples_per_s(const TrainRun *r);

#endif
