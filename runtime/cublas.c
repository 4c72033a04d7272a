/* cublas.c — cuBLAS GEMMs for the cuda backend (cublas.h).
 *
 * Row-major to column-major: cuBLAS is column-major, and a row-major (M, N)
 * matrix is the column-major (N, M) matrix of its transpose, so
 * C = op(A) op(B) is issued as C^T = op(B)^T op(A)^T: cuBLAS's "A" is our B,
 * its m is our N, its n our M, and no data moves.
 *
 * Batches: trailing batch dims where B is shared (stride 0) and A's
 * matrices are consecutive fold into M, as in cpu_gemm (x (B, T, K) times
 * W (K, N) is one (B*T, K) x (K, N) GEMM). The remaining batch dims merge
 * into one strided-batched call where each operand's strides are uniform
 * (attention: (B, heads) matrices); any dims left are looped on the host.
 *
 * Not here: data types other than f32, beta != 0 (the plan never
 * accumulates into C). */
#include "cublas.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BC_HAVE_CUDA_H
#include <cublas_api.h>


void cublas_plan_gemm(const Shape *as, bool trans_a, const Shape *bs, bool trans_b, const Shape *cs,
                      GemmPlan *p) {
  memset(p, 0, sizeof(*p));
  MatmulLayout l;
  shape_matmul_layout(as, trans_a, bs, trans_b, cs, &l);
  int64_t N = l.N, K = l.K;
  int t = l.n_batch_dims;
  p->ta = trans_a;
  p->tb = trans_b;
  p->M = l.M;
  p->N = N;
  p->K = K;
  p->lda = trans_a ? l.M_unfolded : K; /* row-major leading dims (no folding when A is transposed) */
  p->ldb = trans_b ? K : N;
  /* Element strides of the batch dims [0, t); C is contiguous: M*N per
   * matrix of the innermost one. */
  int64_t sa[BC_MAX_RANK], sb[BC_MAX_RANK], sc[BC_MAX_RANK], acc = p->M * N;
  for (int i = t - 1; i >= 0; i--) {
    sa[i] = l.a_stride[i];
    sb[i] = l.b_stride[i];
    sc[i] = acc;
    acc *= l.dim[i];
  }
  /* Merge the innermost batch dims while every operand's strides stay
   * uniform: dim i joins the batch when s[i] == s[i+1] * dim[i+1]. */
  int first = t;
  int64_t nb = 1;
  if (t > 0) {
    first = t - 1;
    nb = cs->dim[t - 1];
    p->sa = sa[t - 1];
    p->sb = sb[t - 1];
    p->sc = sc[t - 1];
    while (first > 0) {
      int i = first - 1;
      if (sa[i] != p->sa * nb || sb[i] != p->sb * nb || sc[i] != p->sc * nb) break;
      nb *= cs->dim[i];
      first = i;
    }
  }
  p->n_batch = nb;
  p->n_outer = first;
  for (int i = 0; i < first; i++) {
    p->outer_dim[i] = cs->dim[i];
    p->outer_sa[i] = sa[i];
    p->outer_sb[i] = sb[i];
    p->outer_sc[i] = sc[i];
  }
}

/* ---- loading ------------------------------------------------------------ */

/* The entry points we use, typed from cublas_api.h's own prototypes. */
#define CUBLAS_FUNCS(X) \
  X(cublasCreate_v2) \
  X(cublasDestroy_v2) \
  X(cublasSetStream_v2) \
  X(cublasSetWorkspace_v2) \
  X(cublasSetMathMode) \
  X(cublasGetVersion_v2) \
  X(cublasGetStatusString) \
  X(cublasSgemm_v2) \
  X(cublasSgemmStridedBatched)

static struct {
  bool tried, ok;
  char why[512];
  void *lib;
#define X(f) __typeof__(f) *f;
  CUBLAS_FUNCS(X)
#undef X
} L;
static char version[64];

static bool load(Diag *d) {
  if (!L.tried) {
    L.tried = true;
    static const char *const names[] = {"libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13",
                                        "/usr/local/cuda/targets/x86_64-linux/lib/libcublas.so.13"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !L.lib; i++) {
      L.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
      if (!L.lib && i == 0) snprintf(L.why, sizeof(L.why), "%s", dlerror());
    }
    if (L.lib) {
      L.ok = true;
#define X(f) \
  if (L.ok && !(L.f = (__typeof__(f) *)dlsym(L.lib, #f))) { \
    snprintf(L.why, sizeof(L.why), "libcublas.so.13 has no %s", #f); \
    L.ok = false; \
  }
      CUBLAS_FUNCS(X)
#undef X
    }
  }
  if (!L.ok) diag_error(d, SRCLOC_NONE, "cuda: cannot load cuBLAS: %s", L.why);
  return L.ok;
}

struct CublasHandle {
  cublasHandle_t h;
};

static bool check(cublasStatus_t s, const char *call, Diag *d) {
  if (s == CUBLAS_STATUS_SUCCESS) return true;
  diag_error(d, SRCLOC_NONE, "cuda: %s failed (runtime/cublas.c): %s (status %d)", call,
             L.cublasGetStatusString ? L.cublasGetStatusString(s) : "?", (int)s);
  return false;
}

CublasHandle *cublas_create(void *stream, uint64_t workspace, size_t workspace_bytes, bool tf32,
                            Diag *d) {
  if (!load(d)) return NULL;
  CublasHandle *h = bc_calloc(1, sizeof(*h));
  if (!check(L.cublasCreate_v2(&h->h), "cublasCreate", d)) {
    free(h);
    return NULL;
  }
  if (!check(L.cublasSetStream_v2(h->h, (cudaStream_t)stream), "cublasSetStream", d) ||
      !check(L.cublasSetWorkspace_v2(h->h, (void *)(uintptr_t)workspace, workspace_bytes),
             "cublasSetWorkspace", d) ||
      !check(L.cublasSetMathMode(h->h, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
             "cublasSetMathMode", d)) {
    cublas_destroy(h);
    return NULL;
  }
  int v = 0;
  if (L.cublasGetVersion_v2(h->h, &v) == CUBLAS_STATUS_SUCCESS)
    snprintf(version, sizeof(version), "cuBLAS %d.%d.%d", v / 10000, v / 100 % 100, v % 100);
  return h;
}

void cublas_destroy(CublasHandle *h) {
  if (!h) return;
  if (h->h) L.cublasDestroy_v2(h->h);
  free(h);
}

const char *cublas_version_string(void) { return version; }

static int as_int(int64_t x) {
  BC_ASSERT(x >= 0 && x <= 0x7fffffff);
  return (int)x;
}

bool cublas_run_gemm(CublasHandle *h, const GemmPlan *p, uint64_t a, uint64_t b, uint64_t c, Diag *d) {
  if (p->M == 0 || p->N == 0) return true;
  const float one = 1.0f, zero = 0.0f;
  /* C^T (N, M) = op(B)^T (N, K) op(A)^T (K, M) in cuBLAS's column-major. */
  cublasOperation_t opb = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  int64_t n_outer = 1;
  for (int i = 0; i < p->n_outer; i++) n_outer *= p->outer_dim[i];
  for (int64_t o = 0; o < n_outer; o++) {
    int64_t rem = o, oa = 0, ob = 0, oc = 0;
    for (int i = p->n_outer - 1; i >= 0; i--) {
      int64_t ix = rem % p->outer_dim[i];
      rem /= p->outer_dim[i];
      oa += ix * p->outer_sa[i];
      ob += ix * p->outer_sb[i];
      oc += ix * p->outer_sc[i];
    }
    const float *A = (const float *)(uintptr_t)a + oa, *B = (const float *)(uintptr_t)b + ob;
    float *C = (float *)(uintptr_t)c + oc;
    /* K == 0: cuBLAS computes beta*C = 0, which defines C as the op does. */
    cublasStatus_t s;
    if (p->n_batch == 1)
      s = L.cublasSgemm_v2(h->h, opb, opa, as_int(p->N), as_int(p->M), as_int(p->K), &one, B,
                           as_int(p->ldb), A, as_int(p->lda), &zero, C, as_int(p->N));
    else
      s = L.cublasSgemmStridedBatched(h->h, opb, opa, as_int(p->N), as_int(p->M), as_int(p->K), &one,
                                      B, as_int(p->ldb), p->sb, A, as_int(p->lda), p->sa, &zero, C,
                                      as_int(p->N), p->sc, as_int(p->n_batch));
    if (!check(s, p->n_batch == 1 ? "cublasSgemm" : "cublasSgemmStridedBatched", d)) return false;
  }
  return true;
}

#else /* no CUDA headers at build time */

void cublas_plan_gemm(const Shape *a, bool trans_a, const Shape *b, bool trans_b, const Shape *c,
                      GemmPlan *p) {
  (void)a, (void)trans_a, (void)b, (void)trans_b, (void)c;
  memset(p, 0, sizeof(*p));
}
CublasHandle *cublas_create(void *stream, uint64_t workspace, size_t workspace_bytes, bool tf32,
                            Diag *d) {
  (void)stream, (void)workspace, (void)workspace_bytes, (void)tf32;
  diag_error(d, SRCLOC_NONE, "cuda: this bertc was built without the CUDA headers");
  return NULL;
}
void cublas_destroy(CublasHandle *h) { (void)h; }
bool cublas_run_gemm(CublasHandle *h, const GemmPlan *p, uint64_t a, uint64_t b, uint64_t c, Diag *d) {
  (void)h, (void)p, (void)a, (void)b, (void)c;
  diag_error(d, SRCLOC_NONE, "cuda: this bertc was built without the CUDA headers");
  return false;
}
const char *cublas_version_string(void) { return ""; }

#endif
