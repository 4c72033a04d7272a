/* bench_batch.h — random batches shaped like d2l's, for bench_step: every
 * input of a BERT graph filled for one training step. */
#ifndef BC_BENCH_BATCH_H
#define BC_BENCH_BATCH_H

#include "graph/ir.h"

/* Size of the err buffer batch_make writes its message into. */
#define BATCH_ERR_LEN 2048

/* One batch, every input's host buffer (f32 or i32, as the value's dtype). */
typedef struct {
  int n;
  ValueId *ids;
  void **bufs;
} Batch;

/* Fills every input of g for one batch: valid_len uniform in [T/4, T];
 * `<cls> a <sep> b <sep>` with segments 0 then 1; up to n_pred MLM slots
 * (d2l: max(1, round(0.15 len)) of the non-special positions, 80% masked,
 * sorted, padding slots position 0 / label 0 / weight 0); random labels;
 * lr as given. rng is a splitmix64 state. False with a message in err
 * (BATCH_ERR_LEN bytes) for an input it does not know; out is then empty. */
bool batch_make(Batch *out, const Graph *g, double lr, uint64_t *rng, char *err);
/* Frees the buffers; b is empty after. */
void batch_free(Batch *b);

#endif
