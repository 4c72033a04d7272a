/* dist.h — data-parallel training across processes (DESIGN §6): every rank
 * holds a replica of the parameters and a slice of the global batch; the
 * gradients are all-reduced (averaged) in buckets while the backward pass
 * goes on, so the optimizer update is the same on every replica.
 *
 * On CPUs the ranks are MPI processes (`mpirun -np N bertrun train ...`).
 * Open MPI is loaded at run time (dlopen of libmpi.so.40, like the CUDA
 * libraries); a process started without mpirun never loads it and is rank
 * 0 of 1, every collective a no-op. All MPI calls run on one communication
 * thread; the training thread hands it work and waits only where it must
 * (the optimizer reading a bucket, metrics, broadcasts).
 *
 * Every collective has a timeout (BC_DIST_TIMEOUT seconds, default 120): a
 * rank that died or hangs makes the others print "rank R: <what> timed out
 * after N s: another rank died or hangs" and MPI_Abort the job. That abort
 * is the one place below main that ends the process: a collective that
 * never completes cannot be cancelled, and MPI_Finalize would hang on it.
 *
 * Replicas in one process: a process may drive several replicas, one per
 * device of a device list (backend_parse_list: `--device cuda:0,1`,
 * `cuda:all`), each run by a thread of its own (dist_run). Replica k of
 * this process is replica rank x n + k of size x n in all: it takes that
 * slice of the global batch and those dropout draws. Several host replicas
 * (cpu:0,1, in a process without other ranks) are averaged in memory, by
 * the last replica to finish each bucket, in replica order: a check of the
 * data-parallel numerics without MPI, bit-identical to as many MPI ranks
 * for two replicas.
 *
 * GPUs: the gradient buckets of a backend with attach_nccl (cuda) are
 * averaged by NCCL (runtime/nccl.c) on a stream of the backend's own,
 * overlapped with the backward pass and captured into its CUDA graph
 * (replicas.c): one communicator
 * over every replica of every process, which the replicas of a process
 * join in one NCCL group call. MPI only carries the communicator's id from
 * rank 0 to the others. NCCL collectives cannot time out, so the cuda
 * backend polls the end of such a step: past BC_DIST_TIMEOUT, on an error
 * NCCL reports, or when another replica of the process failed, the run
 * fails (and the job ends as above); the communicators are then aborted,
 * not waited for.
 *
 * Implemented by dist.c (MPI, collectives), replicas.c (a process's
 * replicas) and trace.c (BC_TRACE). Not here: splitting batches
 * (tasks/train.c). */
#ifndef BC_DIST_H
#define BC_DIST_H

#include "backend.h"

typedef struct Dist Dist;

/* What the MPI launcher told this process through its environment, known
 * before (and without) dist_start; the only place that reads it. Whether
 * mpirun started this process (OMPI_COMM_WORLD_SIZE or PMIX_RANK set). */
bool dist_launcher_started(void);
/* The number of ranks mpirun started (OMPI_COMM_WORLD_SIZE); 0 when not
 * started by it. */
int dist_launcher_ranks(void);
/* This process's rank (OMPI_COMM_WORLD_RANK); 0 when not started by mpirun. */
int dist_launcher_rank(void);
/* The ranks on this node, which share its cores and GPUs
 * (OMPI_COMM_WORLD_LOCAL_SIZE); 1 when not started by mpirun. */
int dist_launcher_local_ranks(void);
/* This process's rank among them (OMPI_COMM_WORLD_LOCAL_RANK); -1 when
 * mpirun did not say. */
int dist_launcher_local_rank(void);

/* Joins the job this process belongs to. Under mpirun
 * (dist_launcher_started): loads Open MPI, starts the communication thread, which
 * calls MPI_Init_thread(FUNNELED). Otherwise: one rank, nothing loaded.
 * BC_TRACE=FILE starts a Chrome trace (written by dist_stop). NULL with an
 * error naming the library and its message on failure. */
Dist *dist_start(Diag *d);
/* Leaves the job and frees D (NULL: nothing). ok: waits for every rank
 * (with the timeout), MPI_Finalize, writes the trace. !ok with several
 * ranks: MPI_Abort(1), which ends the whole job now instead of letting the
 * others wait for this rank until their timeout; it does not return. */
void dist_stop(Dist *D, bool ok);

int dist_rank(const Dist *D); /* 0 for NULL */
int dist_size(const Dist *D); /* 1 for NULL */
/* Whether MPI is loaded (started by mpirun, even with one rank). */
bool dist_is_mpi(const Dist *D);

/* Installs the gradient all-reduce on this process's replicas es[0..n)
 * (Execs of one graph on one backend; buckets of BC_DIST_BUCKET_BYTES,
 * default 256 KiB, in their run order): from the next exec_run on, each
 * bucket is summed over all replicas and divided by their number as soon as
 * the backward pass has computed it, and the optimizer waits for it. Call
 * dist_detach before destroying them. Nothing happens (true) for one
 * replica in one rank without MPI and without BC_TRACE. Execs of a
 * backend with attach_nccl (cuda) go through NCCL (BC_TRACE then records no all-reduce spans: they run on the
 * GPU; BC_DIST_NCCL=1 takes that path also for one replica without MPI);
 * several host replicas need a process without other ranks. False
 * with an error when the backend has no hooks or a gradient has no buffer. */
bool dist_attach(Dist *D, Exec *const *es, int n, Diag *d);
void dist_detach(Dist *D);

/* Runs fn(ctx, k, dk) for the replicas k = 0..n-1 at once: k = 0 on the
 * calling thread, the others on threads of D's (started on first use, kept
 * until dist_stop). Returns when all have returned: true when all did;
 * their errors are added to d in replica order. A replica that fails
 * releases the others from waiting for its gradients (host replicas; a GPU
 * replica failing inside a step leaves NCCL waiting). n == 1 calls fn(ctx,
 * 0, d) and needs no D. */
typedef bool (*DistJob)(void *ctx, int replica, Diag *d);
bool dist_run(Dist *D, int n, DistJob fn, void *ctx, Diag *d);

/* Overwrites every parameter and optimizer state of es[0..n) with rank 0's
 * replica 0's. */
bool dist_broadcast_exec(Dist *D, Exec *const *es, int n, Diag *d);
/* x[0..n) summed over ranks, in place, in double. */
bool dist_sum(Dist *D, double *x, int n, Diag *d);
/* x[0..n) replaced by rank 0's. */
bool dist_broadcast(Dist *D, double *x, int n, Diag *d);
/* False with an error when some replica's parameters or optimizer state
 * differ from replica 0's of rank 0 (bit for bit): they diverged, a bug. */
bool dist_check_replicas(Dist *D, Exec *const *es, int n, int64_t step, Diag *d);

/* The training loop calls this at the start of step `step`: it labels the
 * trace and the timeout messages, and honours BC_DIST_TEST_FAULT=kill:S or
 * hang:S (tests only: the last rank kills itself with SIGKILL, or stops
 * answering, at step S). */
void dist_step(Dist *D, int64_t step);

/* Adds a span [t0_ns, t1_ns] (CLOCK_MONOTONIC, dist_now_ns) of the calling
 * thread to the trace; nothing without BC_TRACE. name and cat must outlive
 * D (literals, interned strings). */
void dist_trace(Dist *D, const char *name, const char *cat, double t0_ns, double t1_ns, int64_t step);
double dist_now_ns(void);

#endif
