/* selection.c — model selection on SNLI dev (selection.h): the dev set,
 * its accuracy, best.safetensors and the record of the best that a resumed
 * run reads back. Deliberately small: train.c decides when to evaluate and
 * prints; this file keeps the score.
 *
 * The record lives in two places on purpose: best.safetensors says what it
 * is (step, epoch, dev_acc), and the last checkpoint says what the best was
 * when it was written (best_dev_acc, best_step), so --resume compares
 * against the best of the steps it continues, not against whatever a later
 * (killed) run may have left on the disk. */
#include "selection.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../runtime/dist.h"
#include "eval.h"

void selection_init(Selection *s) {
  memset(s, 0, sizeof *s);
  s->best_acc = -INFINITY;
  s->best_step = -1;
  s->last_acc = NAN;
}

void selection_free(Selection *s) {
  if (s->have_dev) snli_free(&s->dev);
  free(s->dev_path);
  selection_init(s);
}

bool selection_check_dev(Selection *s, const char *data_dir, Diag *d) {
  free(s->dev_path);
  s->dev_path = bc_asprintf("%s/snli/%s", data_dir, SELECTION_DEV_FILE);
  if (train_file_exists(s->dev_path)) return true;
  diag_error(d, (SrcLoc){bc_intern(s->dev_path), 0, 0},
             "no such file: fine-tuning chooses its best model on SNLI dev (it is in snli_1.0.zip beside "
             "the train and test files)");
  return false;
}

bool selection_load_dev(Selection *s, const Vocab *v, int max_len, Diag *d) {
  BC_ASSERT(s->dev_path && !s->have_dev);
  const char *paths[1] = {s->dev_path};
  s->have_dev = snli_load(&s->dev, paths, 1, v, max_len, d);
  return s->have_dev;
}

bool selection_resume(Selection *s, const CheckpointMeta *m, const char *best_path) {
  const char *acc = checkpoint_meta_get(m, "best_dev_acc"), *step = checkpoint_meta_get(m, "best_step");
  if (!acc || !step) return true; /* no evaluation before the checkpoint */
  if (!train_file_exists(best_path)) return false;
  s->best_acc = strtod(acc, NULL);
  s->best_step = strtoll(step, NULL, 10);
  return true;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

bool selection_eval(Selection *s, const EvalSteps *steps, Dist *dist, int64_t step, bool *better, Diag *d) {
  BC_ASSERT(s->have_dev);
  *better = false;
  double t0 = now_s();
  EvalResult er;
  if (!eval_run(steps, &s->dev.data, dist, &er, d)) return false;
  s->eval_s += now_s() - t0;
  s->n_evals++;
  s->last_acc = eval_accuracy(&er);
  /* strictly higher: a tie keeps the earlier model (the accuracies are
   * counts over the same n, so equal ones compare equal exactly) */
  if (s->last_acc > s->best_acc) {
    s->best_acc = s->last_acc;
    s->best_step = step;
    *better = true;
  }
  return true;
}

void selection_meta(const Selection *s, CheckpointMeta *m) {
  if (s->best_step < 0) return;
  char buf[40];
  snprintf(buf, sizeof buf, "%.17g", s->best_acc);
  checkpoint_meta_set(m, "best_dev_acc", buf);
  snprintf(buf, sizeof buf, "%lld", (long long)s->best_step);
  checkpoint_meta_set(m, "best_step", buf);
}

void selection_epoch_text(int64_t step, int64_t steps_per_epoch, char buf[32]) {
  snprintf(buf, 32, "%.4g", (double)step / (double)steps_per_epoch);
}

bool selection_save_best(const Selection *s, const char *path, Exec *e, const TrainModel *m,
                         int64_t steps_per_epoch, const TrainOptions *o, int64_t total, const Vocab *v,
                         double time_s, Diag *d) {
  BC_ASSERT(s->best_step >= 0);
  CheckpointMeta extra;
  checkpoint_meta_init(&extra);
  char buf[40];
  snprintf(buf, sizeof buf, "%.17g", s->best_acc);
  checkpoint_meta_set(&extra, "dev_acc", buf);
  selection_epoch_text(s->best_step, steps_per_epoch, buf);
  checkpoint_meta_set(&extra, "epoch", buf);
  bool ok = train_save_path(path, o, total, e, m, s->best_step, v, time_s, &extra, d);
  checkpoint_meta_free(&extra);
  return ok;
}

bool selection_test_best(const Selection *s, const char *best_path, const EvalSteps *steps, const Dataset *test,
                         const Vocab *v, Dist *dist, double *acc, Diag *d) {
  BC_ASSERT(s->best_step >= 0);
  Exec *e = steps->e;
  const Graph *g = steps->g;
  if (dist_rank(dist) == 0) {
    char hash[32];
    train_vocab_hash(v, hash);
    CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
    int n = checkpoint_load(best_path, e, &lo, NULL, d);
    if (n < 0) return false;
    if (n != g->params.n) {
      diag_error(d, (SrcLoc){bc_intern(best_path), 0, 0}, "holds %d of the %d parameters of the nli model", n,
                 g->params.n);
      return false;
    }
  }
  EvalResult er;
  if (!dist_broadcast_exec(dist, &e, 1, d) || !eval_run(steps, test, dist, &er, d)) return false;
  *acc = eval_accuracy(&er);
  return true;
}

char *selection_pick(const char *path, Diag *d) {
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return bc_strdup(path);
  static const char *const files[] = {SELECTION_BEST_FILE, TRAIN_CHECKPOINT_FILE};
  for (int i = 0; i < 2; i++) {
    char *p = train_join(path, files[i]);
    if (train_file_exists(p)) return p;
    free(p);
  }
  diag_error(d, (SrcLoc){bc_intern(path), 0, 0}, "this folder holds neither %s nor %s: no run to evaluate",
             SELECTION_BEST_FILE, TRAIN_CHECKPOINT_FILE);
  return NULL;
}
