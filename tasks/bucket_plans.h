/* bucket_plans.h — one compiled training step per sequence-length bucket
 * (DESIGN §9): the step of the longest length, max_len, is the run's own
 * (its Execs hold the parameters, Adam's state, what checkpoints save);
 * a shorter bucket's step is compiled the first time a batch of that
 * length comes, with hparam seq = its length and random streams keyed as
 * at max_len, and its Execs share the owner's parameters and state
 * (exec_create_sharing), so every bucket trains the same weights. */
#ifndef BC_BUCKET_PLANS_H
#define BC_BUCKET_PLANS_H

#include "split.h"
#include "train_util.h"

typedef struct {
  int len;
  Graph g;
  Exec *es[BC_MAX_REPLICAS];
} BucketPlan;

/* Bucket lengths are multiples of this (and max_len): SNLI's pairs then
 * pad to 34 tokens on average instead of 128, and a run compiles at most
 * max_len / 16 steps. */
#define TRAIN_BUCKET_GRANULE 16
#define TRAIN_MAX_BUCKETS 64
typedef struct {
  const TrainModel *model;
  const char *graph;
  const TrainSets *sets;
  const Split *sp; /* the local replicas; NULL: one (evaluation) */
  const AdamOptions *adam; /* training steps' optimizer; NULL: inference (evaluation, prediction) */
  const char *const *outputs; /* what the steps read (train_compile); NULL: every output */
  int max_len;
  const Graph *owner_g; /* the step at max_len, and its replicas */
  Exec **owner;
  int n;
  BucketPlan *plans[TRAIN_MAX_BUCKETS];
  double compile_s; /* wall time compiling the buckets' steps (JIT included) */
} BucketPlans;

/* The step for batches of length `len` (<= max_len): its graph and one Exec
 * per local replica. */
bool bucket_plans_get(BucketPlans *bp, int len, const Graph **g, Exec ***es, Diag *d);
void bucket_plans_free(BucketPlans *bp);
/* "N shorter length buckets (l1, l2, ...) compiled in X s" into buf. */
void bucket_plans_describe(const BucketPlans *bp, char *buf, size_t size);

#endif
