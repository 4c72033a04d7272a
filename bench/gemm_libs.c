/* gemm_libs.c — single-precision GEMM libraries on the shapes of d2l's BERT
 * training step, on this machine, one and two threads: OpenBLAS as bertc
 * calls it (cblas_sgemm, kernels as OPENBLAS_CORETYPE or its own choice
 * make them), BLIS (bli_sgemm, its own kernel choice), oneDNN (dnnl_sgemm),
 * libxsmm (JIT kernels on 64-row tiles) and bertc's own micro-kernel
 * emitted by its LLVM backend for each depth (llvm_jit_gemm_panel). Each library is loaded with
 * dlopen when it is installed (Debian: libblis4-openmp, libdnnl2,
 * libxsmm-dev is static only and linked when the build finds it); one that
 * is missing is reported as such.
 *
 * Two threads: the output is cut in two along M (or the batch, for the
 * attention GEMMs), one single-threaded call per thread, as bertc's pool
 * does (runtime/cpu_ops.c). GFLOP/s are the best of 3 timed runs of at
 * least 0.2 s each. Output: a table on stdout and, with --json FILE, the
 * same numbers as JSON. bench/GEMM.md holds the measured table. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "codegen/llvm_emit.h"

#ifdef HAVE_LIBXSMM
#include <libxsmm.h>
#endif

typedef struct {
  const char *name;
  int batch;      /* independent GEMMs (attention heads x examples) */
  int M, N, K;
  bool ta, tb;
} GemmShape;

/* nli at batch 64 (T = 128: M = 8192; FFN 512; QKV fused to 384) and the
 * MLM head of pretrain at batch 64 (20 predictions each: M = 1280). */
static const GemmShape shapes[] = {
    {"x W (proj) [8192,128]x[128,128]", 1, 8192, 128, 128, false, false},
    {"x Wqkv [8192,128]x[128,384]", 1, 8192, 384, 128, false, false},
    {"x W1 (ffn) [8192,128]x[128,512]", 1, 8192, 512, 128, false, false},
    {"h W2 (ffn) [8192,512]x[512,128]", 1, 8192, 128, 512, false, false},
    {"dY W^T [8192,512]x[128,512]^T", 1, 8192, 128, 512, false, true},
    {"dY W^T [8192,128]x[512,128]^T", 1, 8192, 512, 128, false, true},
    {"X^T dY [8192,128]^T x[8192,512]", 1, 128, 512, 8192, true, false},
    {"X^T dY [8192,128]^T x[8192,128]", 1, 128, 128, 8192, true, false},
    {"QK^T 128x [128,64]x[128,64]^T", 128, 128, 128, 64, false, true},
    {"PV 128x [128,128]x[128,64]", 128, 128, 64, 128, false, false},
    {"dP V^T 128x [128,64]x[128,64]^T", 128, 128, 128, 64, false, true},
    {"P^T dO 128x [128,128]^T x[128,64]", 128, 128, 64, 128, true, false},
    {"MLM x Wv [1280,128]x[128,20256]", 1, 1280, 20256, 128, false, false},
    {"MLM dY Wv^T [1280,20256]x[128,20256]^T", 1, 1280, 128, 20256, false, true},
    {"MLM X^T dY [1280,128]^T x[1280,20256]", 1, 128, 20256, 1280, true, false},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };

/* C = op(A) op(B) for rows [m0, m1) of C, row-major, one thread. */
typedef bool (*GemmFn)(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1);

static int lda_of(const GemmShape *s) { return s->ta ? s->M : s->K; }
static int ldb_of(const GemmShape *s) { return s->tb ? s->K : s->N; }
static const float *a_rows(const GemmShape *s, const float *A, int m0) { return s->ta ? A + m0 : A + (size_t)m0 * lda_of(s); }

static bool gemm_openblas(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1) {
  cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, m1 - m0, s->N,
              s->K, 1.0f, a_rows(s, A, m0), lda_of(s), B, ldb_of(s), 0.0f, C + (size_t)m0 * s->N, s->N);
  return true;
}

/* BLIS's typed API takes both strides of every operand: a transpose is the
 * strides swapped, so the transpose arguments stay BLIS_NO_TRANSPOSE (0). */
typedef void (*BliSgemm)(int, int, int64_t, int64_t, int64_t, const float *, const float *, int64_t, int64_t,
                         const float *, int64_t, int64_t, const float *, float *, int64_t, int64_t);
static BliSgemm bli_sgemm_p;
static bool gemm_blis(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1) {
  const float one = 1.0f, zero = 0.0f;
  int64_t rsa = s->ta ? 1 : lda_of(s), csa = s->ta ? lda_of(s) : 1;
  int64_t rsb = s->tb ? 1 : ldb_of(s), csb = s->tb ? ldb_of(s) : 1;
  bli_sgemm_p(0, 0, m1 - m0, s->N, s->K, &one, a_rows(s, A, m0), rsa, csa, B, rsb, csb, &zero,
              C + (size_t)m0 * s->N, s->N, 1);
  return true;
}

typedef int (*DnnlSgemm)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                         int64_t, float, float *, int64_t);
static DnnlSgemm dnnl_sgemm_p;
static void (*dnnl_omp_set_threads)(int); /* oneDNN's OpenMP runtime */
static bool gemm_dnnl(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1) {
  /* OpenMP's thread count is per calling thread and read from the
   * environment only when libgomp loads: one thread per call, as the others */
  static __thread bool one_thread;
  if (!one_thread) dnnl_omp_set_threads(1);
  one_thread = true;
  return dnnl_sgemm_p(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', m1 - m0, s->N, s->K, 1.0f, a_rows(s, A, m0), lda_of(s),
                      B, ldb_of(s), 0.0f, C + (size_t)m0 * s->N, s->N) == 0;
}

#ifdef HAVE_LIBXSMM
/* Row-major C = A B is column-major C' = B' A': a kernel of m = N, n = rows,
 * k = K with libxsmm's "a" = B and "b" = A; tiles of XSMM_ROWS rows. */
enum { XSMM_ROWS = 64 };
static bool gemm_xsmm(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1) {
  int flags = LIBXSMM_GEMM_FLAG_BETA_0 | (s->tb ? LIBXSMM_GEMM_FLAG_TRANS_A : 0) |
              (s->ta ? LIBXSMM_GEMM_FLAG_TRANS_B : 0);
  libxsmm_blasint lda = ldb_of(s), ldb = lda_of(s), ldc = s->N;
  for (int r = m0; r < m1; r += XSMM_ROWS) {
    int rows = m1 - r < XSMM_ROWS ? m1 - r : XSMM_ROWS;
    libxsmm_smmfunction k = libxsmm_smmdispatch(s->N, rows, s->K, &lda, &ldb, &ldc, NULL, NULL, &flags, NULL);
    if (!k) return false;
    k(B, a_rows(s, A, r), C + (size_t)r * s->N);
  }
  return true;
}
#endif

/* bertc's own micro-kernel (codegen/llvm_gemm.c, specialized to K), with
 * the loops around it a library would have: B packed into K x 32 panels in
 * blocks of at most PACK_FLOATS per call (the packing counted), then each
 * block of ROW_BLOCK rows of A against the block's panels. No blocking of
 * K, no packing of A (it is read through its strides). N a multiple of 32
 * here: every shape's is. */
enum { PACK_FLOATS = 256 << 10, ROW_BLOCK = 240 };
static LlvmJit *jit;
static struct {
  int K;
  LlvmGemmPanelFn fn;
} panel_fns[N_SHAPES];

static LlvmGemmPanelFn panel_fn(int K) {
  for (int i = 0; i < N_SHAPES; i++)
    if (panel_fns[i].K == K) return panel_fns[i].fn;
  return NULL;
}

static bool gemm_llvm(const GemmShape *s, const float *A, const float *B, float *C, int m0, int m1) {
  LlvmGemmPanelFn fn = panel_fn(s->K);
  if (!fn || s->N % LLVM_GEMM_NR) return false;
  /* panels per block: as many as PACK_FLOATS holds, one at least */
  int panel = s->K * LLVM_GEMM_NR, per = PACK_FLOATS / panel > 1 ? PACK_FLOATS / panel : 1, ldb = ldb_of(s);
  static __thread float *pack;
  static __thread size_t cap;
  if (cap < (size_t)per * panel) {
    free(pack);
    cap = (size_t)per * panel;
    pack = malloc(sizeof(float) * cap);
  }
  int64_t rs = s->ta ? 1 : lda_of(s), cs = s->ta ? lda_of(s) : 1;
  for (int p0 = 0; p0 < s->N / LLVM_GEMM_NR; p0 += per) {
    int np = s->N / LLVM_GEMM_NR - p0 < per ? s->N / LLVM_GEMM_NR - p0 : per;
    for (int p = 0; p < np; p++) /* panel p0 + p: columns [32 (p0 + p), +32) of B, K rows of 32 */
      for (int k = 0; k < s->K; k++)
        for (int j = 0; j < LLVM_GEMM_NR; j++) {
          int col = (p0 + p) * LLVM_GEMM_NR + j;
          pack[(size_t)p * panel + (size_t)k * LLVM_GEMM_NR + j] = s->tb ? B[(size_t)col * ldb + k] : B[(size_t)k * ldb + col];
        }
    for (int r = m0; r < m1; r += ROW_BLOCK) {
      int rows = m1 - r < ROW_BLOCK ? m1 - r : ROW_BLOCK;
      const float *a = s->ta ? A + r : A + (size_t)r * lda_of(s);
      for (int p = 0; p < np; p++)
        fn(a, rs, cs, pack + (size_t)p * panel, C + (size_t)r * s->N + (p0 + p) * LLVM_GEMM_NR, s->N,
           rows);
    }
  }
  return true;
}

typedef struct {
  const char *name;
  GemmFn fn;
  const char *missing; /* why it is not measured, or NULL */
} Lib;

typedef struct {
  const Lib *lib;
  const GemmShape *s;
  const float *A, *B;
  float *C;
  int b0, b1;  /* batch range, or */
  int m0, m1;  /* row range of every batch */
  bool ok;
} Part;

static size_t a_elems(const GemmShape *s) { return (size_t)s->M * s->K; }
static size_t b_elems(const GemmShape *s) { return (size_t)s->K * s->N; }
static size_t c_elems(const GemmShape *s) { return (size_t)s->M * s->N; }

static void *run_part(void *arg) {
  Part *p = arg;
  p->ok = true;
  for (int b = p->b0; b < p->b1; b++)
    p->ok &= p->lib->fn(p->s, p->A + b * a_elems(p->s), p->B + b * b_elems(p->s), p->C + b * c_elems(p->s), p->m0,
                        p->m1);
  return NULL;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One whole GEMM (all batches) on `threads` threads (1 or 2). */
static bool run_once(const Lib *lib, const GemmShape *s, const float *A, const float *B, float *C, int threads) {
  Part parts[2];
  for (int t = 0; t < threads; t++) {
    Part *p = &parts[t];
    *p = (Part){lib, s, A, B, C, 0, s->batch, 0, s->M, false};
    if (threads > 1) {
      if (s->batch >= threads) {
        p->b0 = s->batch * t / threads;
        p->b1 = s->batch * (t + 1) / threads;
      } else { /* rows, in multiples of 16 */
        int cut = (s->M / threads + 15) / 16 * 16;
        p->m0 = t == 0 ? 0 : cut;
        p->m1 = t == 0 ? cut : s->M;
      }
    }
  }
  if (threads == 1) {
    run_part(&parts[0]);
    return parts[0].ok;
  }
  pthread_t th;
  pthread_create(&th, NULL, run_part, &parts[1]);
  run_part(&parts[0]);
  pthread_join(th, NULL);
  return parts[0].ok && parts[1].ok;
}

/* Largest relative difference of C against the double-precision product. */
static double check(const GemmShape *s, const float *A, const float *B, const float *C) {
  double worst = 0;
  for (int i = 0; i < s->M; i += 37)
    for (int j = 0; j < s->N; j += 29) {
      double acc = 0, mag = 0;
      for (int k = 0; k < s->K; k++) {
        double a = s->ta ? A[(size_t)k * s->M + i] : A[(size_t)i * s->K + k];
        double b = s->tb ? B[(size_t)j * s->K + k] : B[(size_t)k * s->N + j];
        acc += a * b;
        mag += a * b < 0 ? -a * b : a * b;
      }
      double e = (C[(size_t)i * s->N + j] - acc) / (mag + 1e-30);
      if (e < 0) e = -e;
      if (e > worst) worst = e;
    }
  return worst;
}

static double measure(const Lib *lib, const GemmShape *s, const float *A, const float *B, float *C, int threads,
                      double *err) {
  memset(C, 0, sizeof(float) * c_elems(s) * (size_t)s->batch);
  if (!run_once(lib, s, A, B, C, threads)) return -1;
  *err = check(s, A, B, C);
  double flops = 2.0 * s->batch * (double)s->M * s->N * s->K, best = 0;
  for (int rep = 0; rep < 3; rep++) {
    int n = 0;
    double t0 = now_s(), t;
    do {
      run_once(lib, s, A, B, C, threads);
      n++;
      t = now_s() - t0;
    } while (t < 0.2);
    double g = flops * n / t / 1e9;
    if (g > best) best = g;
  }
  return best;
}

static void *load(const char *const *names) {
  for (; *names; names++) {
    void *h = dlopen(*names, RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *json = NULL, *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!strcmp(argv[i], "--lib") && i + 1 < argc) only = argv[++i];
    else {
      bool help = !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help");
      fprintf(help ? stdout : stderr,
              "usage: gemm_libs [--json FILE] [--lib NAME]\n\n"
              "Times SGEMM on the BERT step's shapes, one and two threads, GFLOP/s and\n"
              "error against double (bench/GEMM.md).\n\n"
              "  --json FILE   also write the rows as JSON\n"
              "  --lib NAME    only this one: openblas, blis, onednn, libxsmm, or llvm\n"
              "                (bertc's own micro-kernel, codegen/llvm_gemm.c); default all\n");
      return help ? 0 : 2;
    }
  }
  openblas_set_num_threads(1);
  enum { N_LIBS = 5 };
  Lib libs[N_LIBS] = {{"openblas", gemm_openblas, NULL},
                      {"blis", gemm_blis, NULL},
                      {"onednn", gemm_dnnl, NULL},
                      {"libxsmm", NULL, "not built in (libxsmm-dev)"},
                      {"llvm", gemm_llvm, NULL}};
  bool known = !only;
  for (int li = 0; li < N_LIBS; li++) known |= only && !strcmp(only, libs[li].name);
  if (!known) {
    fprintf(stderr, "gemm_libs: unknown library '%s' (openblas, blis, onednn, libxsmm, llvm)\n", only);
    return 2;
  }
  Diag d;
  diag_init(&d);
  jit = llvm_jit_create(&d);
  for (int i = 0; jit && i < N_SHAPES; i++) /* one kernel per depth, compiled before any timing */
    if (!panel_fn(shapes[i].K) && !llvm_jit_gemm_panel(jit, shapes[i].K, &panel_fns[i].fn, &d)) break;
    else if (panel_fns[i].fn) panel_fns[i].K = shapes[i].K;
  if (!jit || d.n_errors) libs[4].missing = "no LLVM JIT (built without LLVM)";
  diag_free(&d);
  static const char *const blis_names[] = {"libblis.so.4", "libblis.so", NULL};
  void *h = load(blis_names);
  if (h) {
    bli_sgemm_p = (BliSgemm)dlsym(h, "bli_sgemm");
    void (*set_threads)(int64_t) = (void (*)(int64_t))dlsym(h, "bli_thread_set_num_threads");
    if (set_threads) set_threads(1);
  }
  if (!bli_sgemm_p) libs[1].missing = "libblis.so.4 not found";
  static const char *const dnnl_names[] = {"libdnnl.so.2", "libdnnl.so", NULL};
  h = load(dnnl_names);
  if (h) {
    dnnl_sgemm_p = (DnnlSgemm)dlsym(h, "dnnl_sgemm");
    dnnl_omp_set_threads = (void (*)(int))dlsym(h, "omp_set_num_threads");
  }
  if (!dnnl_sgemm_p || !dnnl_omp_set_threads) libs[2].missing = "libdnnl.so.2 not found";
#ifdef HAVE_LIBXSMM
  libxsmm_init();
  libs[3].fn = gemm_xsmm;
  libs[3].missing = NULL;
#endif
  printf("OpenBLAS: %s; OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s\n", openblas_get_corename(),
         getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)",
         getenv("OPENBLAS_L2_SIZE") ? getenv("OPENBLAS_L2_SIZE") : "(unset)");
  FILE *jf = json ? fopen(json, "w") : NULL;
  if (jf) fprintf(jf, "{\"openblas_core\": \"%s\", \"rows\": [", openblas_get_corename());
  printf("%-42s %-9s %9s %9s %9s\n", "shape", "library", "1 thread", "2 threads", "rel err");
  bool first = true;
  for (int si = 0; si < N_SHAPES; si++) {
    const GemmShape *s = &shapes[si];
    size_t na = a_elems(s) * s->batch, nb = b_elems(s) * s->batch, nc = c_elems(s) * s->batch;
    float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb), *C = malloc(sizeof(float) * nc);
    uint32_t r = 12345;
    for (size_t i = 0; i < na; i++) A[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < nb; i++) B[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int li = 0; li < N_LIBS; li++) {
      const Lib *lib = &libs[li];
      if (only && strcmp(only, lib->name)) continue;
      if (lib->missing) {
        if (si == 0) printf("%-42s %-9s %s\n", "", lib->name, lib->missing);
        continue;
      }
      double e1 = 0, e2 = 0;
      double g1 = measure(lib, s, A, B, C, 1, &e1), g2 = measure(lib, s, A, B, C, 2, &e2);
      double e = e1 > e2 ? e1 : e2;
      if (g1 < 0) printf("%-42s %-9s %9s\n", s->name, lib->name, "n/a");
      else printf("%-42s %-9s %9.1f %9.1f %9.1e\n", s->name, lib->name, g1, g2, e);
      fflush(stdout);
      if (jf) {
        fprintf(jf, "%s\n  {\"shape\": \"%s\", \"library\": \"%s\", \"gflops_1t\": %.2f, \"gflops_2t\": %.2f, "
                    "\"rel_err\": %.3g}",
                first ? "" : ",", s->name, lib->name, g1, g2, e);
        first = false;
      }
    }
    free(A);
    free(B);
    free(C);
  }
  if (jf) {
    fprintf(jf, "\n]}\n");
    fclose(jf);
  }
  return 0;
}
