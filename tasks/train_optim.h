/* train_optim.h — the optimizer settings of a run (train_optim.c): the
 * learning rate of each step under the schedule, the AdamOptions the
 * compiled step is built with (AdamW weight decay, gradient clipping), and
 * how a checkpoint records them so that --resume continues the same run.
 *
 * Internal to tasks/: bertrun.c sees only train.h (TrainSchedule and
 * train_schedule_parse). */
#ifndef BC_TRAIN_OPTIM_H
#define BC_TRAIN_OPTIM_H

#include "../runtime/checkpoint.h"
#include "train.h"

/* The rate of step `step` (0-based: the updates done before it) of a run of
 * `total` steps, as Hugging Face's get_{constant,linear,cosine}_schedule_
 * with_warmup: lr * step / warmup while step < warmup, then lr (constant),
 * or lr * (1 - q) (linear) or lr * (1 + cos(pi q)) / 2 (cosine) with
 * q = (step - warmup) / (total - warmup), which reaches 0 at step total,
 * where the run ends (its last update, step total - 1, is the smallest but
 * not 0). Depends on nothing else, so a resumed run feeds the same rates.
 * The constant schedule without warmup returns lr itself. */
double train_schedule_rate(TrainSchedule kind, double lr, int64_t warmup, int64_t total, int64_t step);
/* train_schedule_rate with o's settings. */
double train_rate(const TrainOptions *o, int64_t total, int64_t step);

/* Adam's defaults with o's weight decay and clipping. */
void train_adam_options(const TrainOptions *o, AdamOptions *a);

/* Records lr, schedule, warmup, total_steps, weight_decay and clip in the
 * checkpoint's metadata (total: the run's steps, which a decaying schedule
 * depends on). */
void train_optim_record(const TrainOptions *o, int64_t total, CheckpointMeta *m);
/* --resume: an error naming the flag, the checkpoint's value and this run's
 * for each recorded setting that differs (total_steps only under a decaying
 * schedule: a constant rate does not depend on it, so a run may be
 * extended). A checkpoint written before these were recorded trained with
 * the constant schedule, no warmup, decay or clipping, at an unrecorded lr. */
bool train_optim_check(const TrainOptions *o, int64_t total, const CheckpointMeta *m, const char *ckpt, Diag *d);

#endif
