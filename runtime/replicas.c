/* replicas.c — the replicas of one process (dist.h): the threads that run
 * them at once (dist_run), the in-memory average of host replicas
 * (cpu:0,1), and the NCCL communicators of GPU replicas.
 *
 * Host replicas: each gradient bucket is averaged by the last replica to
 * report it ready, summing the replicas in replica order (a0 + a1 for two,
 * as MPI_SUM over two ranks), and every replica waits for that reduction
 * before its optimizer reads the bucket.
 *
 * GPU replicas: one NCCL communicator over every replica of every process,
 * joined by a process's replicas in one group call; MPI (dist.c) only
 * carries its id from rank 0. A replica failing marks the group given up,
 * which ends the others' waits.
 *
 * Not here: MPI and the communication thread (dist.c), the NCCL calls
 * (nccl.c), the device streams (the backend's attach_nccl). */
#include "dist_internal.h"

#include <stdlib.h>
#include <string.h>

/* Host replicas in one process (cpu:0,1): each bucket is averaged by the
 * last replica to report it ready, summing the replicas in replica order;
 * every replica then waits for that reduction (gen[b] reaching the target
 * it recorded at ready). aborted wakes the waiters of a step that failed. */
typedef struct {
  struct Dist *D;
  int k;
} ReplicaRef;

typedef struct LocalSync {
  int n, n_buckets;
  ReplicaRef refs[BC_MAX_REPLICAS];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int *arrived;      /* per bucket: replicas that reported it this step */
  uint64_t *gen;     /* per bucket: reductions done */
  uint64_t *target;  /* [k * n_buckets + b]: the reduction replica k waits for */
  bool aborted;
} LocalSync;

typedef struct Worker {
  struct Dist *D;
  int k;
  pthread_t thread;
  uint64_t seen; /* the last run_gen it ran (starts at the current one) */
  Diag diag;
  bool ok;
} Worker;

/* ---- host replicas in one process ---------------------------------------- */

static void local_reduce(Dist *D, int b) {
  LocalSync *L = D->local;
  const GradBuckets *gb = D->buckets;
  int n = L->n;
  for (int i = gb->start[b]; i < gb->start[b + 1]; i++) {
    ValueId v = gb->values[i];
    int64_t count = shape_numel(&D->exec->graph->values.data[v].shape);
    DType t;
    void *p[BC_MAX_REPLICAS];
    for (int k = 0; k < n; k++) p[k] = exec_value_ptr(D->execs[k], v, &t);
    /* the sum in replica order, then / n: for two replicas a0 + a1, as MPI */
    if (t == DTYPE_F32) {
      float s = (float)n;
      for (int64_t j = 0; j < count; j++) {
        float x = ((float *)p[0])[j];
        for (int k = 1; k < n; k++) x += ((float *)p[k])[j];
        x /= s;
        for (int k = 0; k < n; k++) ((float *)p[k])[j] = x;
      }
    } else {
      double s = (double)n;
      for (int64_t j = 0; j < count; j++) {
        double x = ((double *)p[0])[j];
        for (int k = 1; k < n; k++) x += ((double *)p[k])[j];
        x /= s;
        for (int k = 0; k < n; k++) ((double *)p[k])[j] = x;
      }
    }
  }
}

static void local_ready(void *ctx, int b, void *stream) {
  (void)stream;
  ReplicaRef *r = ctx;
  LocalSync *L = r->D->local;
  pthread_mutex_lock(&L->mu);
  L->target[(size_t)r->k * (size_t)L->n_buckets + (size_t)b] = L->gen[b] + 1;
  if (++L->arrived[b] == L->n && !L->aborted) {
    /* every replica has finished b and waits for it before reading it
     * again, so nobody else touches its buffers until gen[b] moves on */
    L->arrived[b] = 0;
    pthread_mutex_unlock(&L->mu);
    local_reduce(r->D, b);
    pthread_mutex_lock(&L->mu);
    L->gen[b]++;
    pthread_cond_broadcast(&L->cv);
  }
  pthread_mutex_unlock(&L->mu);
}

static void local_wait(void *ctx, int b, void *stream) {
  (void)stream;
  ReplicaRef *r = ctx;
  LocalSync *L = r->D->local;
  uint64_t want = L->target[(size_t)r->k * (size_t)L->n_buckets + (size_t)b];
  pthread_mutex_lock(&L->mu);
  while (L->gen[b] < want && !L->aborted) pthread_cond_wait(&L->cv, &L->mu);
  pthread_mutex_unlock(&L->mu);
}

/* A replica's step failed: the others stop waiting for it. */
static void local_abort(Dist *D) {
  LocalSync *L = D ? D->local : NULL;
  if (!L) return;
  pthread_mutex_lock(&L->mu);
  L->aborted = true;
  pthread_cond_broadcast(&L->cv);
  pthread_mutex_unlock(&L->mu);
}

static void local_free(LocalSync *L) {
  if (!L) return;
  pthread_mutex_destroy(&L->mu);
  pthread_cond_destroy(&L->cv);
  free(L->arrived);
  free(L->gen);
  free(L->target);
  free(L);
}

bool replicas_detach(Dist *D) {
  if (D->gpu) {
    /* after a good run the streams are synchronized and nothing is in
     * flight; after a failed one collectives may wait for a peer forever */
    dist_clear_hooks(D);
    for (int k = 0; k < D->n_local; k++) {
      if (D->run_failed) gpucomm_abort(D->gpus[k]);
      else gpucomm_destroy(D->gpus[k]);
      D->gpus[k] = NULL;
    }
    D->gpu = false;
    return true;
  }
  if (D->local) { /* dist_run returned: no replica thread is in a hook */
    dist_clear_hooks(D);
    local_free(D->local);
    D->local = NULL;
    return true;
  }
  return false;
}

/* ---- attaching ------------------------------------------------------------- */

static void make_current(void *ctx, int k) {
  Exec *e = ((Exec *const *)ctx)[k];
  e->backend->stream(e);
}

/* Execs of a backend with attach_nccl (cuda): gradients stay on the devices
 * and are averaged by NCCL on a stream of the backend's own; one communicator of
 * size x n ranks, replica k of this process being rank rank x n + k. Rank
 * 0 makes the communicator's id and MPI carries it to the others; the
 * replicas of one process join it in one NCCL group call. */
bool replicas_attach_gpu(Dist *D, Exec *const *es, int n, Diag *d) {
  unsigned char id[GPUCOMM_ID_BYTES] = {0};
  double words[GPUCOMM_ID_BYTES / sizeof(double)];
  if (D->rank == 0 && !gpucomm_unique_id(id, d)) return false;
  memcpy(words, id, sizeof words);
  if (!dist_broadcast(D, words, (int)(sizeof words / sizeof words[0]), d)) return false;
  memcpy(id, words, sizeof id);
  dist_set_execs(D, es, n);
  D->gpu = true;
  bool ok = gpucomm_create_local(id, D->size * n, D->rank * n, n, make_current, (void *)es, D->gpus, d);
  const GradBuckets *gb = NULL;
  for (int k = 0; ok && k < n; k++) {
    gb = es[k]->backend->attach_nccl(es[k], D->gpus[k], grad_bucket_bytes_default(), d);
    ok = gb != NULL;
  }
  D->buckets = gb;
  D->last_grad_step = -1;
  if (!ok) dist_detach(D);
  return ok;
}

/* Several host replicas (cpu:0,1) in a process of its own. */
bool replicas_attach_host(Dist *D, Exec *const *es, int n, Diag *d) {
  if (D->mpi && D->size > 1) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "dist: %d host replicas in each of %d processes: under mpirun give each rank one replica "
               "(--device %s)",
               n, D->size, es[0]->backend->name);
    return false;
  }
  dist_set_execs(D, es, n);
  LocalSync *L = bc_calloc(1, sizeof(*L));
  D->local = L;
  L->n = n;
  pthread_mutex_init(&L->mu, NULL);
  pthread_cond_init(&L->cv, NULL);
  bool ok = true;
  for (int k = 0; ok && k < n; k++) {
    L->refs[k] = (ReplicaRef){D, k};
    GradSyncHooks h = {local_ready, local_wait, NULL, &L->refs[k]};
    const GradBuckets *gb = exec_set_grad_sync(es[k], grad_bucket_bytes_default(), &h, d);
    ok = gb != NULL;
    if (ok && k == 0) D->buckets = gb;
    if (ok && k > 0 && (gb->n_buckets != D->buckets->n_buckets ||
                        memcmp(gb->start, D->buckets->start, sizeof(int) * (size_t)(gb->n_buckets + 1)) != 0)) {
      diag_error(d, SRCLOC_NONE, "dist: replica %d groups its gradients into other buckets than replica 0", k);
      ok = false;
    }
    for (int i = 0; ok && i < (gb ? gb->start[gb->n_buckets] : 0); i++) {
      DType t;
      ValueId v = gb->values[i];
      if (!exec_value_ptr(es[k], v, &t) || t == DTYPE_I32) {
        diag_error(d, es[k]->graph->values.data[v].loc, "dist: gradient '%s' has no floating-point host buffer",
                   es[k]->graph->values.data[v].name);
        ok = false;
      }
    }
  }
  if (ok) {
    L->n_buckets = D->buckets->n_buckets;
    size_t nb = (size_t)(L->n_buckets ? L->n_buckets : 1);
    L->arrived = bc_calloc(nb, sizeof(int));
    L->gen = bc_calloc(nb, sizeof(uint64_t));
    L->target = bc_calloc(nb * (size_t)n, sizeof(uint64_t));
  }
  if (!ok) dist_detach(D);
  return ok;
}

/* ---- replica threads ------------------------------------------------------- */

/* A replica's step failed: the others must not wait for it. Host replicas
 * are woken; a GPU group is marked given up, which ends the other replicas'
 * waits for their all-reduces (cuda.c polls gpucomm_check), and dist_detach
 * then aborts the communicators instead of waiting for their collectives. */
static void replica_failed(Dist *D) {
  if (!D) return;
  D->run_failed = true;
  local_abort(D);
  if (D->gpu && D->gpus[0]) gpucomm_give_up(D->gpus[0]);
}

static void *worker_main(void *arg) {
  Worker *w = arg;
  Dist *D = w->D;
  uint64_t seen = w->seen;
  pthread_mutex_lock(&D->run_mu);
  for (;;) {
    while (D->run_gen == seen && !D->run_stop) pthread_cond_wait(&D->run_cv, &D->run_mu);
    if (D->run_stop) break;
    seen = D->run_gen;
    if (w->k >= D->run_n) continue;
    DistJob fn = D->run_fn;
    void *ctx = D->run_ctx;
    pthread_mutex_unlock(&D->run_mu);
    bool ok = fn(ctx, w->k, &w->diag);
    if (!ok) replica_failed(D);
    pthread_mutex_lock(&D->run_mu);
    w->ok = ok;
    if (--D->run_pending == 0) pthread_cond_broadcast(&D->run_done_cv);
  }
  pthread_mutex_unlock(&D->run_mu);
  return NULL;
}

bool dist_run(Dist *D, int n, DistJob fn, void *ctx, Diag *d) {
  BC_ASSERT(n >= 1 && n <= BC_MAX_REPLICAS);
  if (n == 1) {
    bool ok = fn(ctx, 0, d);
    if (!ok) replica_failed(D);
    return ok;
  }
  BC_ASSERT(D && "several replicas need a Dist");
  for (; D->n_workers < n - 1; D->n_workers++) {
    Worker *w = bc_calloc(1, sizeof(*w));
    w->D = D;
    w->k = D->n_workers + 1;
    w->seen = D->run_gen; /* changes only on this thread */
    diag_init(&w->diag);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
      diag_free(&w->diag);
      free(w);
      diag_error(d, SRCLOC_NONE, "dist: cannot start a replica thread: %s", strerror(rc));
      return false;
    }
    D->workers[D->n_workers] = w;
  }
  pthread_mutex_lock(&D->run_mu);
  D->run_fn = fn;
  D->run_ctx = ctx;
  D->run_n = n;
  D->run_pending = n - 1;
  D->run_gen++;
  pthread_cond_broadcast(&D->run_cv);
  pthread_mutex_unlock(&D->run_mu);
  bool ok = fn(ctx, 0, d);
  if (!ok) replica_failed(D);
  pthread_mutex_lock(&D->run_mu);
  while (D->run_pending > 0) pthread_cond_wait(&D->run_done_cv, &D->run_mu);
  pthread_mutex_unlock(&D->run_mu);
  for (int k = 1; k < n; k++) {
    Worker *w = D->workers[k - 1];
    if (!w->ok) ok = false;
    diag_merge(d, &w->diag);
  }
  return ok;
}

void replicas_stop(Dist *D) {
  pthread_mutex_lock(&D->run_mu);
  D->run_stop = true;
  pthread_cond_broadcast(&D->run_cv);
  pthread_mutex_unlock(&D->run_mu);
  for (int i = 0; i < D->n_workers; i++) {
    pthread_join(D->workers[i]->thread, NULL);
    diag_free(&D->workers[i]->diag);
    free(D->workers[i]);
  }
  D->n_workers = 0;
}
