/* train_optim.c — the optimizer settings of a run (train_optim.h): the
 * learning-rate schedule, computed here on the host and fed to the compiled
 * step through its "lr" input each step (the plan stays fixed), the
 * AdamOptions of that step, and their record in checkpoints.
 *
 * Not here: the update itself (passes/optim.c builds it into the graph). */
#include "train_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const schedule_names[] = {"constant", "linear", "cosine"};

bool train_schedule_parse(const char *name, TrainSchedule *out) {
  for (int i = 0; i < 3; i++)
    if (strcmp(name, schedule_names[i]) == 0) {
      *out = (TrainSchedule)i;
      return true;
    }
  return false;
}

const char *train_schedule_name(TrainSchedule s) {
  return s >= TRAIN_SCHEDULE_CONSTANT && s <= TRAIN_SCHEDULE_COSINE ? schedule_names[s] : "?";
}

double train_schedule_rate(TrainSchedule kind, double lr, int64_t warmup, int64_t total, int64_t step) {
  if (step < warmup) return lr * (double)step / (double)warmup;
  if (kind == TRAIN_SCHEDULE_CONSTANT) return lr;
  int64_t span = total - warmup;
  double q = span > 0 ? (double)(step - warmup) / (double)span : 1.0;
  if (q > 1) q = 1;
  if (kind == TRAIN_SCHEDULE_LINEAR) return lr * (1.0 - q);
  return lr * 0.5 * (1.0 + cos(M_PI * q));
}

double train_rate(const TrainOptions *o, int64_t total, int64_t step) {
  return train_schedule_rate(o->schedule, o->lr, o->warmup, total, step);
}

void train_adam_options(const TrainOptions *o, AdamOptions *a) {
  adam_options_default(a);
  a->weight_decay = o->weight_decay;
  a->clip = o->clip;
}

/* ---- checkpoints ---- */

static void set_num(CheckpointMeta *m, const char *key, double x) {
  char buf[40];
  snprintf(buf, sizeof buf, "%.17g", x); /* every double read back exactly */
  checkpoint_meta_set(m, key, buf);
}

void train_optim_record(const TrainOptions *o, int64_t total, CheckpointMeta *m) {
  set_num(m, "lr", o->lr);
  checkpoint_meta_set(m, "schedule", train_schedule_name(o->schedule));
  set_num(m, "warmup", (double)o->warmup);
  set_num(m, "total_steps", (double)total);
  set_num(m, "weight_decay", o->weight_decay);
  set_num(m, "clip", o->clip);
}

/* The checkpoint's number under `key`, else `absent`; NAN when unreadable. */
static double get_num(const CheckpointMeta *m, const char *key, double absent) {
  const char *s = checkpoint_meta_get(m, key);
  if (!s) return absent;
  char *end;
  double x = strtod(s, &end);
  return *s && !*end ? x : NAN;
}

bool train_optim_check(const TrainOptions *o, int64_t total, const CheckpointMeta *m, const char *ckpt, Diag *d) {
  SrcLoc at = {bc_intern(ckpt), 0, 0};
  int before = d->n_errors;
  const char *sched = checkpoint_meta_get(m, "schedule");
  TrainSchedule kind = TRAIN_SCHEDULE_CONSTANT;
  if (sched && !train_schedule_parse(sched, &kind)) {
    diag_error(d, at, "unknown learning-rate schedule '%s' in the checkpoint's metadata", sched);
    return false;
  }
  if (kind != o->schedule)
    diag_error(d, at, "this run trained with --schedule %s; resume with --schedule %s (this command asks for %s)",
               train_schedule_name(kind), train_schedule_name(kind), train_schedule_name(o->schedule));
  struct {
    const char *key, *flag;
    double absent, now;
  } nums[] = {
      {"lr", "--lr", o->lr, o->lr}, /* not recorded before: not checked */
      {"warmup", "--warmup", 0, (double)o->warmup},
      {"weight_decay", "--weight-decay", 0, o->weight_decay},
      {"clip", "--clip", 0, o->clip},
  };
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
    double was = get_num(m, nums[i].key, nums[i].absent);
    if (isnan(was))
      diag_error(d, at, "the checkpoint's metadata '%s' is not a number: '%s'", nums[i].key,
                 checkpoint_meta_get(m, nums[i].key));
    else if (was != nums[i].now)
      diag_error(d, at, "this run trained with %s %.17g; resume with %s %.17g (this command asks for %.17g)",
                 nums[i].flag, was, nums[i].flag, was, nums[i].now);
  }
  /* A decaying rate depends on where the run ends: another --steps or
   * --epochs would change the rates of the steps still to run. */
  double was_total = get_num(m, "total_steps", (double)total);
  if (kind != TRAIN_SCHEDULE_CONSTANT && o->schedule == kind && was_total != (double)total)
    diag_error(d, at,
               "this run's %s schedule decays to 0 at step %.17g, and this command ends at step %lld: resume "
               "with the --steps or --epochs (and --batch) that end at step %.17g",
               train_schedule_name(kind), was_total, (long long)total, was_total);
  return d->n_errors == before;
}
