/* nccl.c — NCCL through dlopen (nccl.h). Entry points are typed from
 * nccl.h's own prototypes (__typeof__), resolved with dlsym; the library is
 * looked up on the loader's path, then in the CUDA toolkit's folder.
 * Failures name the call and carry NCCL's message (and the communicator's
 * last error where there is one). */
#include "nccl.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BC_HAVE_CUDA_H
#include <nccl.h>

#define NCCL_FUNCS(X) \
  X(ncclGetVersion) X(ncclGetUniqueId) X(ncclCommInitRank) X(ncclCommDestroy) X(ncclAllReduce) \
  X(ncclGroupStart) X(ncclGroupEnd) X(ncclGetErrorString) X(ncclGetLastError) \
  X(ncclCommGetAsyncError) X(ncclCommAbort)

static struct {
  bool tried, ok;
  char why[512];
  void *lib;
#define X(f) __typeof__(f) *f;
  NCCL_FUNCS(X)
#undef X
} L;
static char version[64];

static bool load(void) {
  if (L.tried) return L.ok;
  L.tried = true;
  static const char *const names[] = {"libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2",
                                      "/usr/local/cuda/targets/x86_64-linux/lib/libnccl.so.2"};
  for (size_t i = 0; i < sizeof names / sizeof *names && !L.lib; i++) {
    L.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!L.lib && i == 0) snprintf(L.why, sizeof L.why, "%s", dlerror());
  }
  if (!L.lib) return false;
  L.ok = true;
#define X(f) \
  if (L.ok && !(L.f = (__typeof__(f) *)dlsym(L.lib, #f))) { \
    snprintf(L.why, sizeof L.why, "libnccl.so.2 has no %s", #f); \
    L.ok = false; \
  }
  NCCL_FUNCS(X)
#undef X
  int v = 0;
  if (L.ok && L.ncclGetVersion(&v) == ncclSuccess)
    snprintf(version, sizeof version, "NCCL %d.%d.%d", v / 10000, v / 100 % 100, v % 100);
  return L.ok;
}

bool gpucomm_available(Diag *d) {
  if (load()) return true;
  if (d) diag_error(d, SRCLOC_NONE, "nccl: cannot load NCCL: %s", L.why);
  return false;
}

const char *gpucomm_version_string(void) { return version; }

struct GpuComm {
  ncclComm_t comm;
  _Atomic bool *gave_up; /* shared by the communicators of one process's replicas */
  bool owns_flag;
};

static bool check(ncclResult_t r, const char *call, const GpuComm *c, Diag *d) {
  if (r == ncclSuccess) return true;
  const char *last = c && c->comm ? L.ncclGetLastError(c->comm) : NULL;
  diag_error(d, SRCLOC_NONE, "nccl: %s failed (runtime/nccl.c): %s%s%s", call, L.ncclGetErrorString(r),
             last && *last ? ": " : "", last && *last ? last : "");
  return false;
}

bool gpucomm_unique_id(unsigned char id[GPUCOMM_ID_BYTES], Diag *d) {
  if (!gpucomm_available(d)) return false;
  ncclUniqueId u;
  if (!check(L.ncclGetUniqueId(&u), "ncclGetUniqueId", NULL, d)) return false;
  memcpy(id, u.internal, GPUCOMM_ID_BYTES);
  return true;
}

GpuComm *gpucomm_create(const unsigned char id[GPUCOMM_ID_BYTES], int n, int rank, Diag *d) {
  if (!gpucomm_available(d)) return NULL;
  ncclUniqueId u;
  memcpy(u.internal, id, GPUCOMM_ID_BYTES);
  GpuComm *c = bc_calloc(1, sizeof(*c));
  c->gave_up = bc_calloc(1, sizeof(*c->gave_up));
  c->owns_flag = true;
  if (!check(L.ncclCommInitRank(&c->comm, n, u, rank), "ncclCommInitRank", NULL, d)) {
    free((void *)c->gave_up);
    free(c);
    return NULL;
  }
  return c;
}

bool gpucomm_create_local(const unsigned char id[GPUCOMM_ID_BYTES], int n, int first_rank, int n_local,
                          void (*make_current)(void *ctx, int k), void *ctx, GpuComm **out, Diag *d) {
  for (int k = 0; k < n_local; k++) out[k] = NULL;
  if (!gpucomm_available(d)) return false;
  ncclUniqueId u;
  memcpy(u.internal, id, GPUCOMM_ID_BYTES);
  /* several devices from one thread: their ranks join inside one group,
   * else the first ncclCommInitRank would wait for the others forever */
  bool ok = check(L.ncclGroupStart(), "ncclGroupStart", NULL, d);
  _Atomic bool *flag = bc_calloc(1, sizeof(*flag));
  for (int k = 0; ok && k < n_local; k++) {
    out[k] = bc_calloc(1, sizeof(GpuComm));
    out[k]->gave_up = flag;
    out[k]->owns_flag = k == 0;
    make_current(ctx, k);
    ok = check(L.ncclCommInitRank(&out[k]->comm, n, u, first_rank + k), "ncclCommInitRank", NULL, d);
  }
  ok = check(L.ncclGroupEnd(), "ncclGroupEnd", NULL, d) && ok;
  if (!ok) {
    for (int k = 0; k < n_local; k++) {
      if (out[k]) out[k]->owns_flag = false;
      gpucomm_destroy(out[k]); /* frees one that never joined */
      out[k] = NULL;
    }
    free((void *)flag);
  }
  return ok;
}

void gpucomm_destroy(GpuComm *c) {
  if (!c) return;
  if (c->comm) L.ncclCommDestroy(c->comm);
  if (c->owns_flag) free((void *)c->gave_up);
  free(c);
}

void gpucomm_abort(GpuComm *c) {
  if (!c) return;
  if (c->comm) L.ncclCommAbort(c->comm);
  c->comm = NULL;
  gpucomm_destroy(c);
}

void gpucomm_give_up(GpuComm *c) {
  if (c) atomic_store(c->gave_up, true);
}

bool gpucomm_check(GpuComm *c, Diag *d) {
  if (atomic_load_explicit(c->gave_up, memory_order_relaxed)) {
    diag_error(d, SRCLOC_NONE, "nccl: another replica of this process failed: its collectives will not complete");
    return false;
  }
  ncclResult_t r = ncclSuccess;
  if (!check(L.ncclCommGetAsyncError(c->comm, &r), "ncclCommGetAsyncError", c, d)) return false;
  return r == ncclSuccess || r == ncclInProgress || check(r, "a collective", c, d);
}

bool gpucomm_allreduce_avg_f32(GpuComm *c, uint64_t buf, size_t count, void *stream, Diag *d) {
  void *p = (void *)(uintptr_t)buf;
  return check(L.ncclAllReduce(p, p, count, ncclFloat32, ncclAvg, c->comm, (cudaStream_t)stream),
               "ncclAllReduce", c, d);
}

bool gpucomm_group_begin(Diag *d) { return check(L.ncclGroupStart(), "ncclGroupStart", NULL, d); }
bool gpucomm_group_end(Diag *d) { return check(L.ncclGroupEnd(), "ncclGroupEnd", NULL, d); }

#else /* built without the CUDA headers */

static const char *const no_headers = "nccl: this bertc was built without the CUDA headers";
bool gpucomm_available(Diag *d) {
  if (d) diag_error(d, SRCLOC_NONE, "%s", no_headers);
  return false;
}
const char *gpucomm_version_string(void) { return ""; }
bool gpucomm_unique_id(unsigned char id[GPUCOMM_ID_BYTES], Diag *d) {
  (void)id;
  return gpucomm_available(d);
}
GpuComm *gpucomm_create(const unsigned char id[GPUCOMM_ID_BYTES], int n, int rank, Diag *d) {
  (void)id, (void)n, (void)rank;
  gpucomm_available(d);
  return NULL;
}
bool gpucomm_create_local(const unsigned char id[GPUCOMM_ID_BYTES], int n, int first_rank, int n_local,
                          void (*make_current)(void *ctx, int k), void *ctx, GpuComm **out, Diag *d) {
  (void)id, (void)n, (void)first_rank, (void)make_current, (void)ctx;
  for (int k = 0; k < n_local; k++) out[k] = NULL;
  return gpucomm_available(d);
}
void gpucomm_destroy(GpuComm *c) { (void)c; }
void gpucomm_abort(GpuComm *c) { (void)c; }
void gpucomm_give_up(GpuComm *c) { (void)c; }
bool gpucomm_check(GpuComm *c, Diag *d) {
  (void)c;
  return gpucomm_available(d);
}
bool gpucomm_allreduce_avg_f32(GpuComm *c, uint64_t buf, size_t count, void *stream, Diag *d) {
  (void)c, (void)buf, (void)count, (void)stream;
  return gpucomm_available(d);
}
bool gpucomm_group_begin(Diag *d) { return gpucomm_available(d); }
bool gpucomm_group_end(Diag *d) { return gpucomm_available(d); }

#endif
