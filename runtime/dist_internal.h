/* dist_internal.h — the state that dist.c (MPI, the communication thread,
 * collectives) and replicas.c (a process's replicas: their threads, the
 * in-memory average of host replicas, NCCL communicators of GPU replicas)
 * share. Private to those two files: nothing else includes it, and nothing
 * here mentions MPI. */
#ifndef BC_DIST_INTERNAL_H
#define BC_DIST_INTERNAL_H

#include "dist.h"
#include "nccl.h"
#include "trace.h"

#include <pthread.h>
#include <stdatomic.h>

struct Dist {
  int rank, size;
  bool mpi;
  double timeout_s;
  struct MpiApi *api; /* dist.c's: Open MPI's entry points; NULL without mpirun */
  pthread_t thread;
  bool thread_started;
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  struct Req *head, *tail;
  _Atomic int n_waiting; /* training threads blocked in await */
  _Atomic int n_pending; /* gradient buckets issued and not yet reduced */
  bool crowded;          /* ranks x (threads + 1) > cores: see hook_step */
  bool init_done;
  char init_error[512];
  /* the attached Execs: this process's replicas */
  Exec *exec; /* replica 0; NULL when nothing is attached */
  Exec *execs[BC_MAX_REPLICAS];
  int n_local;
  bool gpu;                         /* NCCL-capable Execs: their gradients go through NCCL */
  GpuComm *gpus[BC_MAX_REPLICAS];   /* one communicator per replica */
  struct LocalSync *local;          /* several host replicas: averaged in memory */
  const GradBuckets *buckets;
  struct Bucket *bk;                /* MPI: one request per bucket */
  int last_grad_step;
  /* replica threads (dist_run): workers[k - 1] runs replica k >= 1 */
  struct Worker *workers[BC_MAX_REPLICAS];
  int n_workers;
  pthread_mutex_t run_mu;
  pthread_cond_t run_cv, run_done_cv;
  uint64_t run_gen;
  int run_n, run_pending;
  DistJob run_fn;
  void *run_ctx;
  bool run_stop;
  _Atomic bool run_failed; /* a replica's step failed (dist_run; any replica thread) */
  /* tests */
  int64_t fault_step;
  char fault_kind[8];
  int64_t cur_step;
  Trace *trace; /* BC_TRACE; NULL without */
};

/* dist.c: es[0..n) become D's attached replicas. */
void dist_set_execs(Dist *D, Exec *const *es, int n);
/* dist.c: removes the gradient hooks of D's attached replicas. */
void dist_clear_hooks(Dist *D);

/* replicas.c: attaching several host replicas, or GPU replicas through
 * NCCL (dist_attach chooses); false with an error, nothing attached. */
bool replicas_attach_host(Dist *D, Exec *const *es, int n, Diag *d);
bool replicas_attach_gpu(Dist *D, Exec *const *es, int n, Diag *d);
/* replicas.c: undoes either attach and returns true; false (nothing done)
 * when D's replicas are neither (one replica under MPI or tracing). */
bool replicas_detach(Dist *D);
/* replicas.c: ends the replica threads of dist_run (dist_stop). */
void replicas_stop(Dist *D);

#endif
