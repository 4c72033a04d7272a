/* cuda.h — what the cuda backend (cuda.c) offers beyond the Backend table:
 * for its tests and benchmarks, which check a GPU or compile its own
 * kernels without one. Everything else (tasks, dist.c) reaches the backend
 * through backend.h and asks it what it can do. No CUDA header is needed to
 * include this one. */
#ifndef BC_CUDA_H
#define BC_CUDA_H

#include "backend.h"

/* Number of CUDA devices the driver reports. False with an error saying
 * why CUDA cannot be used here (no libcuda.so.1, cuInit failed, no device);
 * tests that need a GPU skip (exit 77) on false. Loads the driver once.
 * backend_cuda.device_count is this function. */
bool cuda_device_count(int *n, Diag *d);
/* The CUDA C of the cuda backend's own row-copy kernels (gather,
 * scatter-add, concat), which it compiles with NVRTC next to the emitted
 * ones; tests compile it too. "" when built without the CUDA headers. */
const char *cuda_lib_source(void);
/* backend_cuda.stream and backend_cuda.attach_nccl (backend.h), for tests
 * that drive NCCL by hand. */
void *cuda_exec_stream(Exec *e);
const GradBuckets *cuda_attach_nccl(Exec *e, struct GpuComm *comm, int64_t bucket_bytes, Diag *d);

#endif
