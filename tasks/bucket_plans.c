/* bucket_plans.c — see bucket_plans.h. */
#include "bucket_plans.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

bool bucket_plans_get(BucketPlans *bp, int len, const Graph **g, Exec ***es, Diag *d) {
  BC_ASSERT(len >= 1 && len <= bp->max_len);
  if (len == bp->max_len) {
    *g = bp->owner_g;
    *es = bp->owner;
    return true;
  }
  for (int i = 0; i < bp->n; i++)
    if (bp->plans[i]->len == len) {
      *g = &bp->plans[i]->g;
      *es = bp->plans[i]->es;
      return true;
    }
  BC_ASSERT(bp->n < TRAIN_MAX_BUCKETS);
  double t0 = now_s();
  BucketPlan *p = bc_calloc(1, sizeof *p);
  p->len = len;
  if (!train_compile_bucket(&p->g, bp->model, bp->graph, bp->sets, len, bp->max_len, bp->adam, bp->outputs, d)) {
    free(p);
    return false;
  }
  bp->plans[bp->n++] = p;
  for (int k = 0; k < (bp->sp ? bp->sp->n_local : 1); k++)
    if (!(p->es[k] = exec_create_sharing(bp->owner[k], &p->g, d))) return false;
  bp->compile_s += now_s() - t0;
  *g = &p->g;
  *es = p->es;
  return true;
}

void bucket_plans_free(BucketPlans *bp) {
  for (int i = 0; i < bp->n; i++) {
    BucketPlan *p = bp->plans[i];
    for (int k = 0; k < BC_MAX_REPLICAS; k++) exec_destroy(p->es[k]);
    graph_free(&p->g);
    free(p);
  }
  bp->n = 0;
}

void bucket_plans_describe(const BucketPlans *bp, char *buf, size_t size) {
  int at = snprintf(buf, size, "%d shorter length bucket%s (", bp->n, bp->n == 1 ? "" : "s");
  for (int i = 0; i < bp->n && at < (int)size; i++)
    at += snprintf(buf + at, size - (size_t)at, "%s%d", i ? ", " : "", bp->plans[i]->len);
  if (at < (int)size) snprintf(buf + at, size - (size_t)at, ") compiled in %.1f s", bp->compile_s);
}
