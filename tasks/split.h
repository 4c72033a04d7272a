/* split.h — a global batch split over the replicas of a data-parallel run
 * (runtime/dist.h): this process's replicas (one, or one per device of a
 * list such as cuda:0,1), their Execs, and the rows of the batch each one
 * trains on. Every rank builds the same global batch; replica r of N in
 * all trains on rows [r*B/N, (r+1)*B/N).
 *
 * Not here: the training loop (train.c), averaging (runtime/dist.c). */
#ifndef BC_TASKS_SPLIT_H
#define BC_TASKS_SPLIT_H

#include "../runtime/backend.h"
#include "dataset.h"
#include "train.h"

/* This process's replicas (one, or one per device of a device list such as
 * cuda:0,1) and their parts of the global batch: replica k of rank r is
 * replica r * n_local + k of size in all. */
typedef struct {
  int n_local;   /* replicas in this process */
  int first;     /* global index of this process's replica 0 */
  int size;      /* replicas in all */
  int n_ranks;   /* processes */
  int local;     /* examples per replica */
  const Backend *backend;
  int devices[BC_MAX_REPLICAS];
  bool have_batch[BC_MAX_REPLICAS];
  DataBatch batch[BC_MAX_REPLICAS]; /* size > 1: the slices */
  int64_t check_every; /* BC_DIST_CHECK=N: compare the replicas every N steps */
} Split;

/* The device list of o->device and the replicas of the job; false with an
 * error when the batch does not split evenly or the devices do not fit the
 * launcher. */
bool split_init(Split *sp, const TrainOptions *o, Diag *d);
/* Global index of local replica k's first example in a batch. */
int64_t split_first(const Split *sp, int k);
/* "cuda:0,1 (2 replicas)", "cpu (2 ranks)", "cuda" */
void split_where(const Split *sp, const char *device, char *buf, size_t cap);
/* The batch local replica k runs: the global one, or its rows of it (valid
 * until the next call for k). */
const DataBatch *split_batch(Split *sp, const DataBatch *global, int k);
void split_free(Split *sp);
/* One Exec of g per local replica; false with an error (es[] then holds
 * those made, for split_destroy_execs). */
bool split_make_execs(const Split *sp, const Graph *g, Exec **es, Diag *d);
void split_destroy_execs(Exec **es);
/* Rank 0's parameters, optimizer state, start step and training time, on
 * every rank (after initialization, --init or --resume on rank 0), then the
 * replicas attached for gradient averaging. */
bool split_sync_start(const TrainOptions *o, const Split *sp, Exec **es, int64_t *start,
                      double *time_offset, Diag *d);

#endif
