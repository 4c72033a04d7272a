/* gemm_lib.c — the SGEMM libraries of gemm_lib.h: OpenBLAS linked, BLIS and
 * oneDNN dlopen'ed (RTLD_LOCAL: BLIS also exports cblas_* and must not
 * replace OpenBLAS's), and OpenBLAS's kernel choice (cpu_blas_init).
 *
 * Not here: cutting GEMMs over threads (cpu_ops.c). */
#include "gemm_lib.h"

#include <cblas.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../graph/base.h"

/* oneDNN first: the fastest on every shape of the BERT step (bench/GEMM.md),
 * with kernels it picks from the CPU whatever OPENBLAS_CORETYPE says;
 * OpenBLAS where oneDNN is not installed. */
static const GemmLib GEMM_LIB_DEFAULT_ORDER[] = {GEMM_LIB_ONEDNN, GEMM_LIB_OPENBLAS};

static const char *const lib_names[GEMM_LIB_COUNT] = {"openblas", "blis", "onednn"};

const char *gemm_lib_name(GemmLib lib) { return lib >= 0 && lib < GEMM_LIB_COUNT ? lib_names[lib] : "?"; }

/* ---- OpenBLAS's kernels ---------------------------------------------- */

/* OpenBLAS's run-time kernel selection (DYNAMIC_ARCH builds, as Debian's):
 * exported but not declared in cblas.h; weak, so a build without them
 * still links and the choice below just keeps what it has. */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

static bool core_is(const char *core, const char *const *names) {
  for (; *names; names++)
    if (strcasecmp(core, *names) == 0) return true;
  return false;
}

static char blas_msg[160];

/* Once per process (pthread_once): replicas in one process (cpu:0,1) may
 * reach their first GEMM together, and OpenBLAS must not be switching
 * kernels while one of them multiplies. */
static void blas_init_once(void) {
  char *msg = blas_msg;
  const char *core = openblas_get_corename();
  snprintf(msg, sizeof(blas_msg), "OpenBLAS kernels: %s", core);
  if (getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
  /* The best kernels this CPU can run, and the cores that are worse. */
  static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
  static const char *const pre_avx2_cores[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                               "Sandybridge", "Atom", "Katmai", "Coppermine",
                                               "Northwood", "Banias", "Barcelona", "Bobcat",
                                               "Bulldozer", "Piledriver", "Steamroller", "Excavator",
                                               "Opteron", "Opteron_SSE3", "Nano", NULL};
  __builtin_cpu_init();
  const char *want = NULL;
  /* AVX-512 kernels only on Intel (measured there); elsewhere only a core
   * without AVX2 is replaced. */
  if (__builtin_cpu_is("intel") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq")) {
    if (!core_is(core, avx512_cores))
      want = __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (core_is(core, pre_avx2_cores)) want = "Haswell";
  }
  if (!want) return;
  /* OpenBLAS reads OPENBLAS_CORETYPE only while it initializes (before
   * main): set it and select again. Left set, so child processes agree. */
  setenv("OPENBLAS_CORETYPE", want, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  snprintf(msg, sizeof(blas_msg), "OpenBLAS kernels: %s (chose %s over %s)", openblas_get_corename(), want,
           core);
}

const char *cpu_blas_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, blas_init_once);
  return blas_msg;
}

/* ---- the dlopen'ed libraries ------------------------------------------ */

/* BLIS's typed API takes both strides of every operand, so a transpose is
 * the strides swapped and the trans_t arguments stay BLIS_NO_TRANSPOSE. */
typedef void (*BliSgemmFn)(int transa, int transb, int64_t m, int64_t n, int64_t k, const float *alpha,
                           const float *a, int64_t rsa, int64_t csa, const float *b, int64_t rsb, int64_t csb,
                           const float *beta, float *c, int64_t rsc, int64_t csc);
typedef int (*DnnlSgemmFn)(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                           int64_t ldc);
typedef void (*OmpSetThreadsFn)(int);

static BliSgemmFn bli_sgemm_fn;
static void (*bli_set_threads_fn)(int64_t);
static DnnlSgemmFn dnnl_sgemm_fn;
static OmpSetThreadsFn dnnl_omp_set_threads; /* oneDNN's OpenMP runtime */
static char lib_info[GEMM_LIB_COUNT][192];
static bool loaded[GEMM_LIB_COUNT];
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;

static void *open_first(const char *a, const char *b) {
  void *h = dlopen(a, RTLD_NOW | RTLD_LOCAL);
  return h ? h : dlopen(b, RTLD_NOW | RTLD_LOCAL);
}

static bool load_blis(void) {
  void *h = open_first("libblis.so.4", "libblis.so");
  if (!h) return false;
  bli_sgemm_fn = (BliSgemmFn)dlsym(h, "bli_sgemm");
  bli_set_threads_fn = (void (*)(int64_t))dlsym(h, "bli_thread_set_num_threads");
  int (*arch_id)(void) = (int (*)(void))dlsym(h, "bli_arch_query_id");
  const char *(*arch_name)(int) = (const char *(*)(int))dlsym(h, "bli_arch_string");
  if (!bli_sgemm_fn || !bli_set_threads_fn) return false;
  bli_set_threads_fn(1); /* as gemm_lib_set_threads assumes */
  snprintf(lib_info[GEMM_LIB_BLIS], sizeof lib_info[0], "BLIS kernels: %s",
           arch_id && arch_name ? arch_name(arch_id()) : "?");
  return true;
}

static bool load_onednn(void) {
  void *h = open_first("libdnnl.so.2", "libdnnl.so");
  if (!h) return false;
  dnnl_sgemm_fn = (DnnlSgemmFn)dlsym(h, "dnnl_sgemm");
  dnnl_omp_set_threads = (OmpSetThreadsFn)dlsym(h, "omp_set_num_threads");
  typedef struct {
    int major, minor, patch;
  } Version;
  const Version *(*version)(void) = (const Version *(*)(void))dlsym(h, "dnnl_version");
  if (!dnnl_sgemm_fn) return false;
  const Version *v = version ? version() : NULL;
  snprintf(lib_info[GEMM_LIB_ONEDNN], sizeof lib_info[0], "oneDNN %d.%d.%d", v ? v->major : 0, v ? v->minor : 0,
           v ? v->patch : 0);
  return true;
}

bool gemm_lib_load(GemmLib lib) {
  pthread_mutex_lock(&load_mu);
  if (!loaded[lib]) {
    switch (lib) {
    case GEMM_LIB_OPENBLAS:
      snprintf(lib_info[lib], sizeof lib_info[0], "%s", cpu_blas_init());
      loaded[lib] = true;
      break;
    case GEMM_LIB_BLIS: loaded[lib] = load_blis(); break;
    case GEMM_LIB_ONEDNN: loaded[lib] = load_onednn(); break;
    default: break;
    }
  }
  bool ok = loaded[lib];
  pthread_mutex_unlock(&load_mu);
  return ok;
}

const char *gemm_lib_info(GemmLib lib) { return gemm_lib_load(lib) ? lib_info[lib] : "not installed"; }

bool gemm_lib_select(GemmLib *lib, char *err, int err_size) {
  const char *want = getenv("BC_GEMM");
  if (want && *want) {
    for (int i = 0; i < GEMM_LIB_COUNT; i++)
      if (strcasecmp(want, lib_names[i]) == 0) {
        *lib = (GemmLib)i;
        if (gemm_lib_load(*lib)) return true;
        snprintf(err, (size_t)err_size, "BC_GEMM=%s: the library is not installed (see README: GEMM libraries)",
                 want);
        return false;
      }
    snprintf(err, (size_t)err_size, "BC_GEMM=%s: not one of openblas, blis, onednn", want);
    return false;
  }
  for (size_t i = 0; i < sizeof GEMM_LIB_DEFAULT_ORDER / sizeof GEMM_LIB_DEFAULT_ORDER[0]; i++)
    if (gemm_lib_load(GEMM_LIB_DEFAULT_ORDER[i])) {
      *lib = GEMM_LIB_DEFAULT_ORDER[i];
      return true;
    }
  *lib = GEMM_LIB_OPENBLAS;
  return gemm_lib_load(*lib);
}

static int onednn_threads = 1; /* what each calling thread should have */

void gemm_lib_set_threads(GemmLib lib, int n) {
  static int openblas_now = -1, blis_now = 1;
  switch (lib) {
  case GEMM_LIB_OPENBLAS:
    if (n != openblas_now) openblas_set_num_threads(n);
    openblas_now = n;
    break;
  case GEMM_LIB_BLIS:
    if (n != blis_now && bli_set_threads_fn) bli_set_threads_fn(n);
    blis_now = n;
    break;
  case GEMM_LIB_ONEDNN: onednn_threads = n; break;
  default: break;
  }
}

void gemm_lib_thread_enter(GemmLib lib) {
  /* OpenMP's thread count is per calling thread */
  static __thread int threads_now;
  if (lib == GEMM_LIB_ONEDNN && threads_now != onednn_threads && dnnl_omp_set_threads)
    dnnl_omp_set_threads(onednn_threads);
  threads_now = onednn_threads;
}

static int as_blasint(int64_t x) {
  BC_ASSERT(x >= 0 && x <= INT_MAX);
  return (int)x;
}

void gemm_lib_sgemm(GemmLib lib, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  const float one = 1.0f;
  switch (lib) {
  case GEMM_LIB_OPENBLAS:
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, as_blasint(m),
                as_blasint(n), as_blasint(k), 1.0f, A, as_blasint(lda), B, as_blasint(ldb), beta, C,
                as_blasint(ldc));
    break;
  case GEMM_LIB_BLIS:
    bli_sgemm_fn(0, 0, m, n, k, &one, A, ta ? 1 : lda, ta ? lda : 1, B, tb ? 1 : ldb, tb ? ldb : 1, &beta, C, ldc,
                 1);
    break;
  case GEMM_LIB_ONEDNN: {
    gemm_lib_thread_enter(lib);
    int st = dnnl_sgemm_fn(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
    BC_ASSERT(st == 0);
    break;
  }
  default: BC_ASSERT(!"unknown GEMM library");
  }
}
