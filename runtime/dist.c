/* dist.c — data-parallel training across MPI processes (dist.h): Open MPI
 * loaded at run time, a communication thread that owns every MPI call,
 * gradient buckets all-reduced while the backward pass runs, collectives
 * with a timeout, attaching replicas, and the BC_TRACE spans of kernels,
 * all-reduces and waits (written by trace.c).
 *
 * Loading: dlopen("libmpi.so.40") (Debian's Open MPI; else libmpi.so) with
 * RTLD_GLOBAL (Open MPI's plugins resolve against it); functions by dlsym,
 * typed from mpi.h's prototypes; the predefined handles are the global
 * objects Open MPI exports (MPI_COMM_WORLD is &ompi_mpi_comm_world, ...).
 * Nothing from MPI is linked; built without mpi.h, running under mpirun is
 * an error that says so.
 *
 * Threads: the communication thread calls MPI_Init_thread(FUNNELED) and
 * then every other MPI function; the training thread queues requests (a
 * mutex and two condition variables) and waits for the ones it needs.
 * Requests run one at a time in queue order, which is the same on every
 * rank (buckets become ready in bucket order), so collectives match. Each
 * is nonblocking (MPI_Iallreduce, MPI_Ibcast, MPI_Ibarrier) and polled
 * with MPI_Test, with short sleeps so that two ranks on two cores leave the
 * cores to the kernels, until it completes or BC_DIST_TIMEOUT passes.
 *
 * Numerics: a bucket's gradients are copied into one buffer, summed with
 * MPI_SUM in their own type (f32 on cpu, f64 on interp) and divided by N.
 * With two ranks the sum is a0 + a1 on both, so the replicas stay bit-
 * identical (dist_check_replicas verifies it); against one process at the
 * same global batch the gradients differ only in summation order (each
 * rank sums its half of the batch first), a few ulps. That holds for
 * pretraining too because its MLM loss divides by the GLOBAL batch's masked-
 * token count over N (graph input mlm_norm, set by tasks/train.c), not by
 * the rank's own count.
 *
 * The launcher: only this file reads mpirun's environment (OMPI_*, PMIX_*);
 * tasks ask dist_launcher_*.
 *
 * Not here: a process's replicas (replicas.c: their threads, host
 * averaging, NCCL), the trace file (trace.c), NCCL calls (nccl.c) and GPU
 * streams (the backend's), splitting batches (tasks/train.c). */
#include "dist_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


#if defined(__has_include) && !defined(BC_NO_MPI) /* BC_NO_MPI: build the stub */
#if __has_include(<openmpi/mpi.h>)
#include <openmpi/mpi.h>
#elif __has_include(<mpi.h>)
#include <mpi.h>
#endif
#endif
#if defined(OMPI_MAJOR_VERSION)
#define HAVE_MPI 1
#else
#define HAVE_MPI 0
#endif

double dist_now_ns(void) { return trace_now_ns(); }

static void sleep_ns(long ns) {
  struct timespec t = {ns / 1000000000L, ns % 1000000000L};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

/* ---- MPI ---------------------------------------------------------------- */

#if HAVE_MPI
#if HAVE_MPI
struct MpiApi {
  void *lib;
  __typeof__(MPI_Init_thread) *Init_thread;
  __typeof__(MPI_Finalize) *Finalize;
  __typeof__(MPI_Comm_rank) *Comm_rank;
  __typeof__(MPI_Comm_size) *Comm_size;
  __typeof__(MPI_Iallreduce) *Iallreduce;
  __typeof__(MPI_Ibcast) *Ibcast;
  __typeof__(MPI_Ibarrier) *Ibarrier;
  __typeof__(MPI_Test) *Test;
  __typeof__(MPI_Abort) *Abort;
  __typeof__(MPI_Error_string) *Error_string;
  MPI_Comm world;
  MPI_Datatype f32, f64, i32;
  MPI_Op sum;
};
typedef struct MpiApi MpiApi;
#endif
#endif

typedef enum { REQ_BUCKET, REQ_SUM, REQ_BCAST, REQ_BARRIER, REQ_STOP } ReqKind;

typedef struct Req {
  ReqKind kind;
  void *buf;
  int64_t count;
  DType type;
  int bucket;    /* REQ_BUCKET */
  int64_t step;  /* training step when issued */
  bool ok;       /* REQ_STOP: finalize (true) or abort */
  bool done;     /* under Dist.mu */
  struct Req *next;
} Req;

typedef struct {
  void *ptr;
  int64_t count;
} Part;

typedef struct Bucket {
  Req req;
  Part *parts;
  int n_parts;
  int64_t count, bytes;
  DType type;
  void *staging; /* count elements; NULL when the bucket is one gradient */
} Bucket;

/* ---- tracing ------------------------------------------------------------- */

/* The lane of the calling thread: the communication thread's, or the
 * training thread's. */
static void trace_here(Dist *D, TraceEvent ev) {
  if (!D || !D->trace) return;
  bool comm = D->thread_started && pthread_equal(pthread_self(), D->thread);
  trace_add(D->trace, comm ? TRACE_COMMUNICATION : TRACE_TRAINING, ev);
}

void dist_trace(Dist *D, const char *name, const char *cat, double t0_ns, double t1_ns, int64_t step) {
  trace_here(D, (TraceEvent){name, cat, t0_ns, t1_ns, step, -1, 0, false});
}

/* ---- the communication thread ------------------------------------------- */

#if HAVE_MPI
static const char *mpi_message(Dist *D, int rc, char *buf) {
  int len = 0;
  if (D->api->Error_string(rc, buf, &len) != MPI_SUCCESS) snprintf(buf, MPI_MAX_ERROR_STRING, "error %d", rc);
  return buf;
}

/* An MPI error inside a collective: the ranks cannot agree any more. */
static void mpi_fail(Dist *D, const char *call, int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  fprintf(stderr, "rank %d: dist: %s failed: %s\n", D->rank, call, mpi_message(D, rc, msg));
  fflush(stderr);
  D->api->Abort(D->api->world, 1);
  _exit(1);
}

static MPI_Datatype mpi_type(Dist *D, DType t) {
  return t == DTYPE_F32 ? D->api->f32 : t == DTYPE_F64 ? D->api->f64 : D->api->i32;
}

/* Polls r until it completes; past the timeout, aborts the job. Open MPI
 * progresses a nonblocking collective only inside MPI calls on each rank,
 * so the poll interval is its latency: while the training thread waits for
 * this rank's requests there is nothing else to run and polls are back to
 * back (yielding the core); while kernels run, polls are 20 us naps apart
 * (timer slack 1 us, see comm_main) so two ranks on two cores keep the
 * cores for the kernels. */
static void complete(Dist *D, MPI_Request *r, const char *what, int64_t step, int bucket) {
  double t0 = dist_now_ns();
  for (int polls = 0;; polls++) {
    int flag = 0, rc = D->api->Test(r, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Test", rc);
    if (flag) return;
    if ((dist_now_ns() - t0) / 1e9 > D->timeout_s) {
      char where[64] = "";
      if (bucket >= 0) snprintf(where, sizeof where, " of gradient bucket %d", bucket);
      if (step >= 0) snprintf(where + strlen(where), sizeof where - strlen(where), " (step %lld)", (long long)step);
      fprintf(stderr, "rank %d: %s%s timed out after %g s: another rank died or hangs\n", D->rank, what, where,
              D->timeout_s);
      fflush(stderr);
      D->api->Abort(D->api->world, 1);
      _exit(1);
    }
    if (polls < 16 || atomic_load_explicit(&D->n_waiting, memory_order_relaxed) > 0) sched_yield();
    else sleep_ns(20000);
  }
}

static void run_bucket(Dist *D, Bucket *b) {
  double t0 = dist_now_ns();
  size_t esz = dtype_size(b->type);
  void *buf = b->staging ? b->staging : b->parts[0].ptr;
  if (b->staging) {
    char *p = b->staging;
    for (int i = 0; i < b->n_parts; i++) {
      memcpy(p, b->parts[i].ptr, (size_t)b->parts[i].count * esz);
      p += (size_t)b->parts[i].count * esz;
    }
  }
  MPI_Request r;
  int rc = D->api->Iallreduce(MPI_IN_PLACE, buf, (int)b->count, mpi_type(D, b->type), D->api->sum, D->api->world, &r);
  if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Iallreduce", rc);
  complete(D, &r, "all-reduce", b->req.step, b->req.bucket);
  /* the average: the sum divided by N, correctly rounded (exact for N = 1, 2, 4...) */
  char *p = buf;
  for (int i = 0; i < b->n_parts; i++) {
    int64_t n = b->parts[i].count;
    if (b->type == DTYPE_F32) {
      float *src = (float *)p, *dst = b->parts[i].ptr, s = (float)D->size;
      for (int64_t j = 0; j < n; j++) dst[j] = src[j] / s;
    } else if (b->type == DTYPE_F64) {
      double *src = (double *)p, *dst = b->parts[i].ptr, s = (double)D->size;
      for (int64_t j = 0; j < n; j++) dst[j] = src[j] / s;
    }
    p += (size_t)n * esz;
  }
  trace_here(D, (TraceEvent){"all-reduce", "allreduce", t0, dist_now_ns(), b->req.step, b->req.bucket, b->bytes, false});
}

/* Runs one request; false when the thread should end. */
static bool run_request(Dist *D, Req *q) {
  MPI_Request r;
  int rc;
  switch (q->kind) {
  case REQ_BUCKET:
    run_bucket(D, (Bucket *)q);
    return true;
  case REQ_SUM:
    rc = D->api->Iallreduce(MPI_IN_PLACE, q->buf, (int)q->count, mpi_type(D, q->type), D->api->sum, D->api->world, &r);
    if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Iallreduce", rc);
    complete(D, &r, "all-reduce of metrics", q->step, -1);
    return true;
  case REQ_BCAST:
    rc = D->api->Ibcast(q->buf, (int)q->count, mpi_type(D, q->type), 0, D->api->world, &r);
    if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Ibcast", rc);
    complete(D, &r, "broadcast from rank 0", q->step, -1);
    return true;
  case REQ_BARRIER:
    rc = D->api->Ibarrier(D->api->world, &r);
    if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Ibarrier", rc);
    complete(D, &r, "barrier", q->step, -1);
    return true;
  case REQ_STOP:
    if (!q->ok && D->size > 1) {
      fflush(stderr);
      D->api->Abort(D->api->world, 1);
      _exit(1);
    }
    rc = D->api->Ibarrier(D->api->world, &r);
    if (rc != MPI_SUCCESS) mpi_fail(D, "MPI_Ibarrier", rc);
    complete(D, &r, "final barrier", -1, -1);
    rc = D->api->Finalize();
    if (rc != MPI_SUCCESS) fprintf(stderr, "rank %d: dist: MPI_Finalize failed (error %d)\n", D->rank, rc);
    return false;
  }
  return true;
}

static void *comm_main(void *arg) {
  Dist *D = arg;
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* naps of 20 us, not 20 + 50 */
  int provided = 0, rc = D->api->Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  char msg[MPI_MAX_ERROR_STRING];
  if (rc != MPI_SUCCESS) {
    snprintf(D->init_error, sizeof D->init_error, "MPI_Init_thread failed: %s", mpi_message(D, rc, msg));
  } else if (provided < MPI_THREAD_FUNNELED) {
    snprintf(D->init_error, sizeof D->init_error, "MPI_Init_thread gave thread level %d, below FUNNELED", provided);
  } else {
    D->api->Comm_rank(D->api->world, &D->rank);
    D->api->Comm_size(D->api->world, &D->size);
  }
  pthread_mutex_lock(&D->mu);
  D->init_done = true;
  pthread_cond_broadcast(&D->done_cv);
  pthread_mutex_unlock(&D->mu);
  if (D->init_error[0]) return NULL;
  for (;;) {
    pthread_mutex_lock(&D->mu);
    while (!D->head) pthread_cond_wait(&D->work_cv, &D->mu);
    Req *q = D->head;
    D->head = q->next;
    if (!D->head) D->tail = NULL;
    pthread_mutex_unlock(&D->mu);
    bool more = run_request(D, q);
    pthread_mutex_lock(&D->mu);
    q->done = true;
    if (q->kind == REQ_BUCKET) atomic_fetch_sub(&D->n_pending, 1);
    pthread_cond_broadcast(&D->done_cv);
    pthread_mutex_unlock(&D->mu);
    if (!more) return NULL;
  }
}

static bool load_mpi(Dist *D, Diag *d) {
  MpiApi *a = D->api;
  const char *names[] = {"libmpi.so.40", "libmpi.so"};
  char first_error[512] = "";
  for (int i = 0; i < 2 && !a->lib; i++) {
    a->lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!a->lib && !first_error[0]) snprintf(first_error, sizeof first_error, "%s", dlerror());
  }
  if (!a->lib) {
    diag_error(d, SRCLOC_NONE,
               "dist: started by mpirun but Open MPI cannot be loaded: %s (install openmpi-bin, "
               "libopenmpi-dev: scripts/install-deps.sh)",
               first_error);
    return false;
  }
  const char *missing = NULL;
#define SYM(field, name) \
  do { \
    *(void **)&a->field = dlsym(a->lib, name); \
    if (!a->field && !missing) missing = name; \
  } while (0)
  SYM(Init_thread, "MPI_Init_thread");
  SYM(Finalize, "MPI_Finalize");
  SYM(Comm_rank, "MPI_Comm_rank");
  SYM(Comm_size, "MPI_Comm_size");
  SYM(Iallreduce, "MPI_Iallreduce");
  SYM(Ibcast, "MPI_Ibcast");
  SYM(Ibarrier, "MPI_Ibarrier");
  SYM(Test, "MPI_Test");
  SYM(Abort, "MPI_Abort");
  SYM(Error_string, "MPI_Error_string");
  /* Open MPI's predefined handles are addresses of exported objects */
  SYM(world, "ompi_mpi_comm_world");
  SYM(f32, "ompi_mpi_float");
  SYM(f64, "ompi_mpi_double");
  SYM(i32, "ompi_mpi_int");
  SYM(sum, "ompi_mpi_op_sum");
#undef SYM
  if (missing) {
    diag_error(d, SRCLOC_NONE, "dist: the loaded libmpi lacks %s (is it Open MPI 4?)", missing);
    return false;
  }
  return true;
}
#endif /* HAVE_MPI */

/* Queues q for the communication thread. */
static void submit(Dist *D, Req *q) {
  pthread_mutex_lock(&D->mu);
  q->done = false;
  q->next = NULL;
  if (D->tail) D->tail->next = q;
  else D->head = q;
  D->tail = q;
  pthread_cond_signal(&D->work_cv);
  pthread_mutex_unlock(&D->mu);
}

static void await(Dist *D, Req *q) {
  pthread_mutex_lock(&D->mu);
  atomic_fetch_add(&D->n_waiting, 1);
  while (!q->done) pthread_cond_wait(&D->done_cv, &D->mu);
  atomic_fetch_sub(&D->n_waiting, 1);
  pthread_mutex_unlock(&D->mu);
}

static void run_sync(Dist *D, ReqKind kind, void *buf, int64_t count, DType type) {
  BC_ASSERT(count <= 0x7fffffff && "MPI counts are int");
  Req q = {0};
  q.kind = kind;
  q.buf = buf;
  q.count = count;
  q.type = type;
  q.bucket = -1;
  q.step = D->cur_step;
  submit(D, &q);
  await(D, &q);
}

/* ---- starting and stopping ---------------------------------------------- */

/* D's locks and D itself (nothing may use them any more). */
static void dist_free(Dist *D) {
  pthread_mutex_destroy(&D->mu);
  pthread_cond_destroy(&D->work_cv);
  pthread_cond_destroy(&D->done_cv);
  pthread_mutex_destroy(&D->run_mu);
  pthread_cond_destroy(&D->run_cv);
  pthread_cond_destroy(&D->run_done_cv);
  free(D->api); /* libmpi stays loaded: Open MPI does not support being unloaded */
  free(D);
}

/* ---- the launcher's environment ------------------------------------------ */

bool dist_launcher_started(void) {
  const char *s = getenv("OMPI_COMM_WORLD_SIZE"), *r = getenv("PMIX_RANK");
  return (s && *s) || (r && *r);
}

/* An integer variable of the launcher's, `unset` when it is not set. */
static int launcher_int(const char *name, int unset) {
  const char *v = getenv(name);
  return v ? atoi(v) : unset;
}

int dist_launcher_ranks(void) { return launcher_int("OMPI_COMM_WORLD_SIZE", 0); }
int dist_launcher_rank(void) { return launcher_int("OMPI_COMM_WORLD_RANK", 0); }
int dist_launcher_local_ranks(void) { return launcher_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1); }
int dist_launcher_local_rank(void) {
  const char *v = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return v && *v ? atoi(v) : -1;
}

Dist *dist_start(Diag *d) {
  Dist *D = bc_calloc(1, sizeof(*D));
  D->size = 1;
  D->fault_step = -1;
  D->cur_step = -1;
  D->timeout_s = 120;
  const char *t = getenv("BC_DIST_TIMEOUT");
  if (t && *t && atof(t) > 0) D->timeout_s = atof(t);
  pthread_mutex_init(&D->mu, NULL);
  pthread_cond_init(&D->work_cv, NULL);
  pthread_cond_init(&D->done_cv, NULL);
  pthread_mutex_init(&D->run_mu, NULL);
  pthread_cond_init(&D->run_cv, NULL);
  pthread_cond_init(&D->run_done_cv, NULL);
  if (dist_launcher_started()) {
#if HAVE_MPI
    D->api = bc_calloc(1, sizeof(*D->api));
    if (!load_mpi(D, d)) goto fail;
    D->mpi = true;
    int rc = pthread_create(&D->thread, NULL, comm_main, D);
    if (rc != 0) {
      diag_error(d, SRCLOC_NONE, "dist: cannot start the communication thread: %s", strerror(rc));
      goto fail;
    }
    D->thread_started = true;
    pthread_mutex_lock(&D->mu);
    while (!D->init_done) pthread_cond_wait(&D->done_cv, &D->mu);
    pthread_mutex_unlock(&D->mu);
    if (D->init_error[0]) {
      diag_error(d, SRCLOC_NONE, "dist: %s", D->init_error);
      pthread_join(D->thread, NULL);
      D->thread_started = false;
      goto fail;
    }
#else
    diag_error(d, SRCLOC_NONE,
               "dist: started by mpirun, but this build has no Open MPI support (mpi.h was not found "
               "when it was compiled: install libopenmpi-dev and rebuild)");
    goto fail;
#endif
  }
  const char *f = getenv("BC_DIST_TEST_FAULT");
  if (f && *f) {
    char kind[8] = "";
    long long step = -1;
    if (sscanf(f, "%7[a-z]:%lld", kind, &step) == 2 && (!strcmp(kind, "kill") || !strcmp(kind, "hang"))) {
      snprintf(D->fault_kind, sizeof D->fault_kind, "%s", kind);
      D->fault_step = step;
    }
  }
  if (D->mpi) {
    const char *th = getenv("BC_THREADS");
    long cores = sysconf(_SC_NPROCESSORS_ONLN), local = dist_launcher_local_ranks(), threads = th ? atol(th) : cores;
    D->crowded = local * ((threads > 0 ? threads : cores) + 1) > cores;
  }
  const char *tr = getenv("BC_TRACE");
  if (tr && *tr) {
    char *path = D->mpi && D->size > 1 ? bc_asprintf("%s.%d", tr, D->rank) : bc_strdup(tr);
    D->trace = trace_open(path, D->rank);
    free(path);
  }
  return D;
fail:
  dist_free(D);
  return NULL;
}

void dist_stop(Dist *D, bool ok) {
  if (!D) return;
  dist_detach(D);
  replicas_stop(D);
  if (D->thread_started) {
    Req q = {0};
    q.kind = REQ_STOP;
    q.ok = ok;
    q.step = -1;
    submit(D, &q);
    await(D, &q);
    pthread_join(D->thread, NULL);
  }
  trace_close(D->trace);
  dist_free(D);
}

int dist_rank(const Dist *D) { return D ? D->rank : 0; }
int dist_size(const Dist *D) { return D ? D->size : 1; }
bool dist_is_mpi(const Dist *D) { return D && D->mpi; }

void dist_step(Dist *D, int64_t step) {
  if (!D) return;
  D->cur_step = step;
  if (D->fault_step != step || D->size < 2 || D->rank != D->size - 1) return;
  fprintf(stderr, "rank %d: BC_DIST_TEST_FAULT: %s at step %lld\n", D->rank, D->fault_kind, (long long)step);
  fflush(stderr);
  if (!strcmp(D->fault_kind, "kill")) raise(SIGKILL);
  for (;;) sleep_ns(1000000000L); /* hang: stop answering */
}

/* ---- gradient buckets ----------------------------------------------------- */

static void hook_ready(void *ctx, int bucket, void *stream) {
  (void)stream; /* cpu, interp: the step has finished */
  Dist *D = ctx;
  if (!D->bk) return;
  Bucket *b = &D->bk[bucket];
  b->req.step = D->cur_step;
  if (D->trace) {
    double t = dist_now_ns();
    trace_here(D, (TraceEvent){"ready", "ready", t, t, D->cur_step, bucket, 0, false});
  }
  atomic_fetch_add(&D->n_pending, 1);
  submit(D, &b->req);
  if (D->crowded) sched_yield();
}

static void hook_wait(void *ctx, int bucket, void *stream) {
  (void)stream;
  Dist *D = ctx;
  if (!D->bk) return;
  Bucket *b = &D->bk[bucket];
  pthread_mutex_lock(&D->mu);
  bool done = b->req.done;
  pthread_mutex_unlock(&D->mu);
  if (done) return;
  double t0 = dist_now_ns();
  await(D, &b->req);
  trace_here(D, (TraceEvent){"wait", "wait", t0, dist_now_ns(), D->cur_step, bucket, 0, false});
}

/* After every step. On a crowded machine (every core busy with kernels)
 * a woken communication thread waits for the scheduler to preempt a kernel
 * thread, which it rarely does within a step: the buckets would only be
 * reduced once the optimizer blocks on them. Yielding the core between
 * kernels while a bucket is in flight lets the communication thread poll
 * then, which is what overlaps the all-reduce with the backward pass. */
static void hook_step(void *ctx, int step, const char *name, double t0, double t1) {
  Dist *D = ctx;
  if (D->trace) trace_here(D, (TraceEvent){name, "kernel", t0, t1, D->cur_step, step, 0, step == D->last_grad_step});
  if (D->crowded && atomic_load_explicit(&D->n_pending, memory_order_relaxed) > 0) sched_yield();
}

/* ---- attaching ------------------------------------------------------------- */

void dist_clear_hooks(Dist *D) {
  Diag d;
  diag_init(&d);
  for (int k = 0; k < D->n_local; k++) exec_set_grad_sync(D->execs[k], 0, NULL, &d);
  diag_free(&d);
}

void dist_detach(Dist *D) {
  if (!D || !D->exec) return;
  if (replicas_detach(D)) {
    /* GPU or host replicas */
  } else {
    /* a run that failed half-way may have buckets in flight: the
     * communication thread still reads them */
    if (D->bk)
      for (int i = 0; i < D->buckets->n_buckets; i++) await(D, &D->bk[i].req);
    dist_clear_hooks(D);
    if (D->bk)
      for (int i = 0; i < D->buckets->n_buckets; i++) {
        free(D->bk[i].parts);
        free(D->bk[i].staging);
      }
    free(D->bk);
    D->bk = NULL;
  }
  D->buckets = NULL;
  D->exec = NULL;
  D->n_local = 0;
}

void dist_set_execs(Dist *D, Exec *const *es, int n) {
  for (int k = 0; k < n; k++) D->execs[k] = es[k];
  D->n_local = n;
  D->exec = es[0];
}

bool dist_attach(Dist *D, Exec *const *es, int n, Diag *d) {
  BC_ASSERT(n >= 1 && n <= BC_MAX_REPLICAS);
  if (!D) {
    BC_ASSERT(n == 1 && "several replicas need a Dist");
    return true;
  }
  dist_detach(D);
  D->run_failed = false;
  /* BC_DIST_NCCL=1: NCCL even for one replica without MPI, which checks
   * this path on a machine with one GPU (the average over one rank is exact) */
  const char *force = getenv("BC_DIST_NCCL");
  bool nccl = D->mpi || n > 1 || (force && !strcmp(force, "1"));
  if (es[0]->backend->attach_nccl && nccl) return replicas_attach_gpu(D, es, n, d);
  if (n > 1) return replicas_attach_host(D, es, n, d);
  Exec *e = es[0];
  if (!D->mpi && !D->trace) return true;
  GradSyncHooks h = {hook_ready, hook_wait, D->trace || D->crowded ? hook_step : NULL, D};
  const GradBuckets *gb = exec_set_grad_sync(e, grad_bucket_bytes_default(), &h, d);
  if (!gb) return false;
  dist_set_execs(D, es, 1);
  D->buckets = gb;
  D->last_grad_step = -1;
  for (int i = 0; i < gb->n_buckets; i++)
    if (gb->ready_after[i] > D->last_grad_step) D->last_grad_step = gb->ready_after[i];
  if (!D->mpi) return true; /* trace only: ready and wait do nothing */
  D->bk = bc_calloc((size_t)(gb->n_buckets ? gb->n_buckets : 1), sizeof(Bucket));
  for (int i = 0; i < gb->n_buckets; i++) {
    Bucket *b = &D->bk[i];
    b->req.kind = REQ_BUCKET;
    b->req.bucket = i;
    b->req.done = true;
    b->n_parts = gb->start[i + 1] - gb->start[i];
    b->parts = bc_calloc((size_t)b->n_parts, sizeof(Part));
    for (int k = 0; k < b->n_parts; k++) {
      ValueId v = gb->values[gb->start[i] + k];
      const Value *val = &e->graph->values.data[v];
      DType t;
      void *p = exec_value_ptr(e, v, &t);
      if (!p || (k > 0 && t != b->type) || t == DTYPE_I32) {
        diag_error(d, val->loc, "dist: gradient '%s' has no %s buffer on backend '%s'", val->name,
                   p ? "floating-point" : "host", e->backend->name);
        dist_detach(D);
        return false;
      }
      b->type = t;
      b->parts[k] = (Part){p, shape_numel(&val->shape)};
      b->count += b->parts[k].count;
    }
    b->bytes = b->count * (int64_t)dtype_size(b->type);
    if (b->count > 0x7fffffff) {
      diag_error(d, SRCLOC_NONE, "dist: gradient bucket %d has %lld elements, more than MPI's int count", i,
                 (long long)b->count);
      dist_detach(D);
      return false;
    }
    if (b->n_parts > 1) b->staging = bc_malloc((size_t)b->bytes);
  }
  return true;
}

/* ---- collectives for the training loop ----------------------------------- */

bool dist_sum(Dist *D, double *x, int n, Diag *d) {
  (void)d;
  if (!D || !D->mpi || n <= 0) return true;
  run_sync(D, REQ_SUM, x, n, DTYPE_F64);
  return true;
}

bool dist_broadcast(Dist *D, double *x, int n, Diag *d) {
  (void)d;
  if (!D || !D->mpi || n <= 0) return true;
  run_sync(D, REQ_BCAST, x, n, DTYPE_F64);
  return true;
}

/* v's buffer when the host can read it (not a GPU's memory), else NULL. */
static void *host_ptr(Exec *e, ValueId v, DType *t) {
  return e->backend->host_memory ? exec_value_ptr(e, v, t) : NULL;
}

/* Every parameter, then every state, of e's graph. */
static int n_tensors(const Graph *g) { return g->params.n + g->states.n; }
static ValueId tensor_at(const Graph *g, int i) {
  return i < g->params.n ? g->params.data[i] : g->states.data[i - g->params.n];
}

/* Replica 0's parameters and optimizer state into replicas 1..n-1, through
 * the host (exact: f32 and i32 fit in double). */
static bool copy_replica0(Exec *const *es, int n, Diag *d) {
  const Graph *g = es[0]->graph;
  for (int i = 0; i < n_tensors(g); i++) {
    ValueId v = tensor_at(g, i);
    int64_t count = shape_numel(&g->values.data[v].shape);
    double *x = bc_malloc(sizeof(double) * (size_t)(count ? count : 1));
    bool ok = exec_read(es[0], v, x, DTYPE_F64, d);
    for (int k = 1; ok && k < n; k++) ok = exec_write(es[k], v, x, DTYPE_F64, d);
    free(x);
    if (!ok) return false;
  }
  return true;
}

bool dist_broadcast_exec(Dist *D, Exec *const *es, int n, Diag *d) {
  Exec *e = es[0];
  if (D && D->mpi) {
    const Graph *g = e->graph;
    for (int i = 0; i < n_tensors(g); i++) {
      ValueId v = tensor_at(g, i);
      int64_t count = shape_numel(&g->values.data[v].shape);
      DType t;
      void *p = host_ptr(e, v, &t);
      if (p) { /* in place */
        run_sync(D, REQ_BCAST, p, count, t);
        continue;
      }
      double *x = bc_malloc(sizeof(double) * (size_t)(count ? count : 1)); /* through the host */
      bool ok = exec_read(e, v, x, DTYPE_F64, d);
      if (ok) run_sync(D, REQ_BCAST, x, count, DTYPE_F64);
      ok = ok && exec_write(e, v, x, DTYPE_F64, d);
      free(x);
      if (!ok) return false;
    }
  }
  return n == 1 || copy_replica0(es, n, d);
}

/* FNV-1a over the bytes of every parameter and state, as stored. */
static bool exec_hash(Exec *e, uint64_t *h, Diag *d) {
  const Graph *g = e->graph;
  *h = 0xcbf29ce484222325ull;
  for (int i = 0; i < n_tensors(g); i++) {
    ValueId v = tensor_at(g, i);
    int64_t n = shape_numel(&g->values.data[v].shape);
    DType t;
    const unsigned char *p = host_ptr(e, v, &t), *bytes = p;
    double *x = NULL;
    size_t nb = (size_t)n * (p ? dtype_size(t) : sizeof(double));
    if (!p) {
      x = bc_malloc(sizeof(double) * (size_t)(n ? n : 1));
      if (!exec_read(e, v, x, DTYPE_F64, d)) {
        free(x);
        return false;
      }
      bytes = (const unsigned char *)x;
    }
    for (size_t k = 0; k < nb; k++) *h = (*h ^ bytes[k]) * 0x100000001b3ull;
    free(x);
  }
  return true;
}

bool dist_check_replicas(Dist *D, Exec *const *es, int n, int64_t step, Diag *d) {
  bool several = D && D->mpi && D->size > 1;
  if (!several && n == 1) return true;
  uint64_t h;
  if (!exec_hash(es[0], &h, d)) return false;
  for (int k = 1; k < n; k++) {
    uint64_t hk;
    if (!exec_hash(es[k], &hk, d)) return false;
    if (hk != h) {
      diag_error(d, SRCLOC_NONE,
                 "dist: after step %lld, replica %d holds parameters or optimizer state that differ from replica "
                 "0's: the replicas diverged (a bug)",
                 (long long)step, k);
      return false;
    }
  }
  if (!several) return true;
  double mine[2] = {(double)(h >> 32), (double)(h & 0xffffffffu)}, root[2] = {mine[0], mine[1]};
  run_sync(D, REQ_BCAST, root, 2, DTYPE_F64);
  double differ = (mine[0] != root[0] || mine[1] != root[1]) ? 1 : 0;
  run_sync(D, REQ_SUM, &differ, 1, DTYPE_F64);
  if (differ == 0) return true;
  diag_error(d, SRCLOC_NONE,
             "dist: after step %lld, %d of %d ranks hold parameters or optimizer state that differ from rank "
             "0's: the replicas diverged (a bug)",
             (long long)step, (int)differ, D->size);
  return false;
}

