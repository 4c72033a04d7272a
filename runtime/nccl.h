/* nccl.h — NCCL loaded at run time (dlopen of libnccl.so.2, like the other
 * CUDA libraries; nothing is linked) for data-parallel training on GPUs:
 * one communicator per device (a process may drive several), in-place
 * averaging all-reduce of device buffers, enqueued on a caller's stream (so
 * they can be captured into a CUDA graph). Several processes agree on a
 * communicator through a 128-byte id that rank 0 creates and sends to the
 * others (over MPI, runtime/dist.c); one process alone needs no MPI.
 *
 * Not here: which buffers, when (runtime/dist.c and the backends), MPI.
 * No CUDA or NCCL header is needed to include this one. */
#ifndef BC_NCCL_H
#define BC_NCCL_H

#include "../graph/base.h"

#include <stddef.h>

#define GPUCOMM_ID_BYTES 128

typedef struct GpuComm GpuComm;

/* True when libnccl.so.2 loads (once per process); else adds an error
 * saying why when d is not NULL. */
bool gpucomm_available(Diag *d);
/* "NCCL 2.27.3", or "" before the library is loaded. */
const char *gpucomm_version_string(void);

/* A fresh communicator id (rank 0 makes it; the others receive it). */
bool gpucomm_unique_id(unsigned char id[GPUCOMM_ID_BYTES], Diag *d);
/* Joins the communicator `id` of n ranks as `rank`, on the device of the
 * calling thread's current CUDA context. NULL with NCCL's message. */
GpuComm *gpucomm_create(const unsigned char id[GPUCOMM_ID_BYTES], int n, int rank, Diag *d);
/* Joins the communicator `id` of n ranks with n_local devices of this
 * process at once (one NCCL group call), as ranks first_rank ..
 * first_rank + n_local - 1: make_current(ctx, k) makes device k's context
 * current before out[k] joins. All or nothing: false with NCCL's message,
 * out[] all NULL. */
bool gpucomm_create_local(const unsigned char id[GPUCOMM_ID_BYTES], int n, int first_rank, int n_local,
                          void (*make_current)(void *ctx, int k), void *ctx, GpuComm **out, Diag *d);
void gpucomm_destroy(GpuComm *c);
/* Frees c without waiting for its collectives (ncclCommAbort): after a
 * failure, when a peer may never take part in them again. */
void gpucomm_abort(GpuComm *c);
/* Marks c's group (the communicators gpucomm_create_local made together;
 * c alone otherwise) as given up: one of its replicas failed and will not
 * take part in the collectives in flight; gpucomm_check then fails for
 * all of them. Any thread. */
void gpucomm_give_up(GpuComm *c);
/* False with an error when the group was given up or NCCL reports an
 * asynchronous error on c (a peer's network failure, ...). Any thread. */
bool gpucomm_check(GpuComm *c, Diag *d);

/* buf (count f32 at a device address) := the average over the ranks of
 * buf, enqueued on `stream` (a CUstream). */
bool gpucomm_allreduce_avg_f32(GpuComm *c, uint64_t buf, size_t count, void *stream, Diag *d);
/* Groups the calls between them into one launch (ncclGroupStart/End). */
bool gpucomm_group_begin(Diag *d);
bool gpucomm_group_end(Diag *d);

#endif
