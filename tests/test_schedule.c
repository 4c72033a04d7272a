/* test_schedule.c — the learning-rate schedule of tasks/train_optim.c at
 * known steps (warmup midpoint and end, decay quarter, midpoint, last step
 * and end, for linear and cosine), the constant rate bit for bit, schedule
 * names, and the optimizer settings a checkpoint records and a resume
 * checks. */
#include <math.h>

#include "tasks/train_optim.h"
#include "tests/test.h"

enum { W = 10, T = 110 }; /* warmup 10 steps, then 100 steps of decay */
static const double LR = 1e-3;

static double rate(TrainSchedule k, int64_t step) { return train_schedule_rate(k, LR, W, T, step); }

TEST(warmup_is_linear_from_zero) {
  for (int k = TRAIN_SCHEDULE_CONSTANT; k <= TRAIN_SCHEDULE_COSINE; k++) {
    CHECK(rate((TrainSchedule)k, 0) == 0);
    CHECK_NEAR(rate((TrainSchedule)k, 1), LR / 10, 0, 1e-15);
    CHECK_NEAR(rate((TrainSchedule)k, 5), LR / 2, 0, 1e-15); /* the warmup's midpoint */
    CHECK_NEAR(rate((TrainSchedule)k, 10), LR, 0, 1e-15);    /* its end: the peak */
  }
}

TEST(linear_decay) {
  CHECK_NEAR(rate(TRAIN_SCHEDULE_LINEAR, 35), 0.75 * LR, 0, 1e-15); /* a quarter of the decay */
  CHECK_NEAR(rate(TRAIN_SCHEDULE_LINEAR, 60), 0.5 * LR, 0, 1e-15);  /* its midpoint */
  CHECK_NEAR(rate(TRAIN_SCHEDULE_LINEAR, 109), LR / 100, 0, 1e-12); /* the last step */
  CHECK(rate(TRAIN_SCHEDULE_LINEAR, 110) == 0);                     /* the run's end */
}

TEST(cosine_decay) {
  CHECK_NEAR(rate(TRAIN_SCHEDULE_COSINE, 35), LR * (1 + sqrt(0.5)) / 2, 0, 1e-15);
  CHECK_NEAR(rate(TRAIN_SCHEDULE_COSINE, 60), 0.5 * LR, 0, 1e-14);
  CHECK_NEAR(rate(TRAIN_SCHEDULE_COSINE, 109), LR * (1 + cos(M_PI * 0.99)) / 2, 0, 1e-12);
  CHECK(rate(TRAIN_SCHEDULE_COSINE, 109) > 0 && rate(TRAIN_SCHEDULE_COSINE, 109) < 3e-7);
  CHECK_NEAR(rate(TRAIN_SCHEDULE_COSINE, 110), 0, 1e-20, 0);
}

/* Without warmup the constant rate is --lr itself, as before schedules
 * existed (default runs keep their bits), and so is the first decaying step. */
TEST(constant_is_lr_exactly) {
  const double lr = 0.000123456789;
  for (int64_t s = 0; s < 1000; s += 37) CHECK(train_schedule_rate(TRAIN_SCHEDULE_CONSTANT, lr, 0, 1000, s) == lr);
  CHECK(rate(TRAIN_SCHEDULE_CONSTANT, 109) == LR);
  CHECK(train_schedule_rate(TRAIN_SCHEDULE_LINEAR, lr, 0, 1000, 0) == lr);
  CHECK(train_schedule_rate(TRAIN_SCHEDULE_COSINE, lr, 0, 1000, 0) == lr);
  /* a warmup as long as the run never decays */
  CHECK_NEAR(train_schedule_rate(TRAIN_SCHEDULE_COSINE, 1, 100, 50, 49), 0.49, 0, 1e-15);
}

TEST(names) {
  TrainSchedule k = TRAIN_SCHEDULE_CONSTANT;
  CHECK(train_schedule_parse("cosine", &k) && k == TRAIN_SCHEDULE_COSINE);
  CHECK(train_schedule_parse("linear", &k) && k == TRAIN_SCHEDULE_LINEAR);
  CHECK(train_schedule_parse("constant", &k) && k == TRAIN_SCHEDULE_CONSTANT);
  CHECK(!train_schedule_parse("step", &k) && k == TRAIN_SCHEDULE_CONSTANT);
  CHECK(strcmp(train_schedule_name(TRAIN_SCHEDULE_COSINE), "cosine") == 0);
}

/* Whether train_optim_check accepts `now` against a checkpoint recorded
 * from `was` (NULL: a checkpoint from before the record existed), and
 * whether its first error holds `says`. */
static bool resumes(const TrainOptions *was, int64_t was_total, const TrainOptions *now, int64_t total,
                    const char *says) {
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  if (was) train_optim_record(was, was_total, &m);
  Diag d;
  diag_init(&d);
  bool ok = train_optim_check(now, total, &m, "run/checkpoint.safetensors", &d);
  CHECK(ok == (d.n_errors == 0));
  if (!ok && says) CHECK_MSG(strstr(diag_first(&d), says) != NULL, "'%s' lacks '%s'", diag_first(&d), says);
  diag_free(&d);
  checkpoint_meta_free(&m);
  return ok;
}

TEST(resume_checks_the_recorded_settings) {
  TrainOptions a, b;
  CHECK(train_options_default(&a, "snli", "bertc"));
  a.schedule = TRAIN_SCHEDULE_COSINE;
  a.warmup = 5;
  a.clip = 1;
  a.weight_decay = 0.01;
  b = a;
  CHECK(resumes(&a, 100, &b, 100, NULL));
  b.clip = 2;
  CHECK(!resumes(&a, 100, &b, 100, "--clip 1;"));
  b = a;
  b.weight_decay = 0;
  CHECK(!resumes(&a, 100, &b, 100, "--weight-decay 0.01"));
  b = a;
  b.warmup = 6;
  CHECK(!resumes(&a, 100, &b, 100, "--warmup 5"));
  b = a;
  b.lr = 2e-3;
  CHECK(!resumes(&a, 100, &b, 100, "--lr 0.001"));
  b = a;
  b.schedule = TRAIN_SCHEDULE_LINEAR;
  CHECK(!resumes(&a, 100, &b, 100, "--schedule cosine"));
  /* a decaying schedule fixes the run's length; a constant one does not */
  CHECK(!resumes(&a, 100, &a, 120, "decays to 0 at step 100"));
  b = a;
  b.schedule = TRAIN_SCHEDULE_CONSTANT;
  CHECK(resumes(&b, 100, &b, 120, NULL));
  /* checkpoints from before: constant, no warmup, decay or clipping */
  CHECK(!resumes(NULL, 0, &a, 100, NULL));
  CHECK(train_options_default(&b, "pretrain", "d2l"));
  CHECK(resumes(NULL, 0, &b, 100, NULL));
  CHECK(b.schedule == TRAIN_SCHEDULE_CONSTANT && b.warmup == 0 && b.weight_decay == 0 && b.clip == 0);
}

TEST(adam_options_follow_the_run) {
  TrainOptions o;
  CHECK(train_options_default(&o, "snli", "bertc"));
  o.weight_decay = 0.01;
  o.clip = 1.5;
  AdamOptions a;
  train_adam_options(&o, &a);
  CHECK(a.weight_decay == 0.01 && a.clip == 1.5 && a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-8);
}

TEST_MAIN()
