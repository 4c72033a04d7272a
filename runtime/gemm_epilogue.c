/* gemm_epilogue.c — GEMMs with an epilogue (gemm_lib.h): oneDNN matmul
 * primitives with post-ops, and for the other libraries (and the steps no
 * post-op expresses) the product by blocks of rows, each followed by the
 * steps over the rows just written, still in cache.
 *
 * oneDNN's matmul API is used through its 2.x headers (Debian libdnnl-dev)
 * for the struct layouts, and called through dlsym'ed pointers like
 * dnnl_sgemm in gemm_lib.c, so nothing links libdnnl. Without the headers
 * at build time every library takes the second path.
 *
 * A primitive is made the first time a (shape, layout, epilogue kinds)
 * comes, under a mutex, and kept for the process: the plans of a model
 * have a few dozen. Threads run one primitive at once (the tiles of one
 * GEMM), so its scratchpad is the caller's: each calling thread has a
 * stream and a scratchpad buffer of its own (pthread key: freed with the
 * thread). With the library's scratchpad, one per primitive, two threads
 * overwrote each other's partial results. */
#include "gemm_lib.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../graph/base.h"

static float epi_step(GemmEpiKind kind, float v) {
  switch (kind) {
  case GEMM_EPI_RELU: return v > 0.0f ? v : 0.0f;
  case GEMM_EPI_GELU: return 0.5f * v * (1.0f + erff(v * 0.707106781f));
  case GEMM_EPI_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.797884561f * (v + 0.044715f * v * v * v)));
  default: return v;
  }
}

/* The steps of e over an m x n block of C (ldc) the product just wrote. */
static void epilogue_rows(int64_t m, int64_t n, float *C, int64_t ldc, const GemmEpilogue *e) {
  for (int64_t i = 0; i < m; i++) {
    float *c = C + i * ldc;
    for (int s = 0; s < e->n; s++) {
      const GemmEpiStep *st = &e->step[s];
      if (st->kind == GEMM_EPI_BIAS) {
        for (int64_t j = 0; j < n; j++) c[j] += st->src[j];
      } else if (st->kind == GEMM_EPI_ADD) {
        for (int64_t j = 0; j < n; j++) c[j] += st->src[i * st->ld + j];
      } else if (st->kind == GEMM_EPI_RELU_MASK) {
        const float *y = st->src + (st->rows ? st->rows[i] : i) * st->ld;
        for (int64_t j = 0; j < n; j++) c[j] = y[j] > 0.0f ? c[j] : 0.0f;
      } else {
        for (int64_t j = 0; j < n; j++) c[j] = epi_step(st->kind, c[j]);
      }
    }
  }
}

GemmEpilogue gemm_epilogue_compacted(const GemmEpilogue *e, const int32_t *rows) {
  GemmEpilogue r = *e;
  for (int s = 0; s < r.n; s++) {
    BC_ASSERT(r.step[s].kind != GEMM_EPI_ADD && !r.step[s].rows);
    if (r.step[s].kind == GEMM_EPI_RELU_MASK) r.step[s].rows = rows;
  }
  return r;
}

GemmEpilogue gemm_epilogue_at(const GemmEpilogue *e, int64_t i0, int64_t j0) {
  GemmEpilogue r = *e;
  for (int s = 0; s < r.n; s++) {
    GemmEpiStep *st = &r.step[s];
    if (!st->src) continue;
    st->src += j0;
    if (st->rows) st->rows += i0;
    else if (st->kind != GEMM_EPI_BIAS) st->src += i0 * st->ld;
  }
  return r;
}

/* The blocks of C for the product followed by the steps: at most 256
 * columns, and rows for 512 KiB of C (64 at least), so that the steps find
 * the block in L2 and each library call has rows enough to pay for packing
 * its block of B (with blocks of 64 KiB, the packing made a [4096, 384] x
 * [384, 1536] GEMM 20% slower). The cpu backend's given-rows blocks
 * (runtime/cpu_gemm_rows.c) are one block. */
static void epilogue_block(int64_t n, int64_t *mb, int64_t *nb) {
  *nb = n < 256 ? n : 256;
  int64_t r = ((int64_t)128 << 10) / (*nb > 0 ? *nb : 1) / 16 * 16;
  *mb = r < 64 ? 64 : r;
}

#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#define HAVE_ONEDNN_MATMUL 1

/* The oneDNN entry points used here, resolved once. */
#define DNNL_FNS(X) \
  X(dnnl_engine_create) \
  X(dnnl_stream_create) \
  X(dnnl_stream_destroy) \
  X(dnnl_stream_wait) \
  X(dnnl_memory_desc_init_by_strides) \
  X(dnnl_memory_create) \
  X(dnnl_memory_destroy) \
  X(dnnl_matmul_desc_init) \
  X(dnnl_primitive_attr_create) \
  X(dnnl_primitive_attr_destroy) \
  X(dnnl_primitive_attr_set_post_ops) \
  X(dnnl_primitive_attr_set_scratchpad_mode) \
  X(dnnl_primitive_desc_query_md) \
  X(dnnl_memory_desc_get_size) \
  X(dnnl_post_ops_create) \
  X(dnnl_post_ops_destroy) \
  X(dnnl_post_ops_append_eltwise) \
  X(dnnl_post_ops_append_binary) \
  X(dnnl_primitive_desc_create) \
  X(dnnl_primitive_desc_destroy) \
  X(dnnl_primitive_create) \
  X(dnnl_primitive_destroy) \
  X(dnnl_primitive_execute) \
  X(dnnl_primitive_desc_query)
static struct {
#define DNNL_FIELD(f) __typeof__(&f) f;
  DNNL_FNS(DNNL_FIELD)
#undef DNNL_FIELD
  dnnl_engine_t engine;
  bool ok;
} dn;

static pthread_once_t dn_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;

typedef struct {
  dnnl_stream_t stream;
  void *scratch;
  size_t scratch_bytes;
} ThreadState;

static void thread_state_free(void *p) {
  ThreadState *t = p;
  if (!t) return;
  if (t->stream) dn.dnnl_stream_destroy(t->stream);
  free(t->scratch);
  free(t);
}

static void dn_load(void) {
  void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) return;
  bool all = true;
#define DNNL_SYM(f) all = all && (*(void **)&dn.f = dlsym(h, #f)) != NULL;
  DNNL_FNS(DNNL_SYM)
#undef DNNL_SYM
  if (!all || dn.dnnl_engine_create(&dn.engine, dnnl_cpu, 0) != dnnl_success) return;
  dn.ok = pthread_key_create(&thread_key, thread_state_free) == 0;
}

typedef struct Prim {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  int n_steps;
  GemmEpiKind kinds[GEMM_EPILOGUE_MAX];
  dnnl_primitive_t prim;
  dnnl_memory_desc_t scratch_md;
  size_t scratch_bytes;
  struct Prim *next;
} Prim;

static pthread_mutex_t prims_mu = PTHREAD_MUTEX_INITIALIZER;
static Prim *prims;

/* The memory descriptors of a call: A, B, C, a bias row and an addend. */
typedef struct {
  dnnl_memory_desc_t a, b, c, row;
} Descs;

static bool make_descs(const Prim *p, Descs *d) {
  dnnl_dims_t da = {p->m, p->k}, sa = {p->ta ? 1 : p->lda, p->ta ? p->lda : 1};
  dnnl_dims_t db = {p->k, p->n}, sb = {p->tb ? 1 : p->ldb, p->tb ? p->ldb : 1};
  dnnl_dims_t dc = {p->m, p->n}, sc = {p->ldc, 1};
  dnnl_dims_t dr = {1, p->n}, sr = {p->n, 1};
  return dn.dnnl_memory_desc_init_by_strides(&d->a, 2, da, dnnl_f32, sa) == dnnl_success &&
         dn.dnnl_memory_desc_init_by_strides(&d->b, 2, db, dnnl_f32, sb) == dnnl_success &&
         dn.dnnl_memory_desc_init_by_strides(&d->c, 2, dc, dnnl_f32, sc) == dnnl_success &&
         dn.dnnl_memory_desc_init_by_strides(&d->row, 2, dr, dnnl_f32, sr) == dnnl_success;
}

/* Builds p->prim: a first step that adds a bias is the matmul's bias (a
 * [1, N] row, broadcast over the rows: measured ~3x cheaper than the same
 * as a binary post-op), every other step a post-op. NULL when oneDNN
 * refuses it or offers only a reference kernel. */
static void make_prim(Prim *p) {
  Descs d;
  if (!make_descs(p, &d)) return;
  dnnl_matmul_desc_t md;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  bool bias = p->n_steps > 0 && p->kinds[0] == GEMM_EPI_BIAS;
  bool ok = dn.dnnl_matmul_desc_init(&md, &d.a, &d.b, bias ? &d.row : NULL, &d.c) == dnnl_success &&
            dn.dnnl_post_ops_create(&po) == dnnl_success && dn.dnnl_primitive_attr_create(&attr) == dnnl_success;
  for (int s = bias; ok && s < p->n_steps; s++) {
    switch (p->kinds[s]) {
    case GEMM_EPI_BIAS: ok = dn.dnnl_post_ops_append_binary(po, dnnl_binary_add, &d.row) == dnnl_success; break;
    case GEMM_EPI_ADD: ok = dn.dnnl_post_ops_append_binary(po, dnnl_binary_add, &d.c) == dnnl_success; break;
    case GEMM_EPI_RELU:
      ok = dn.dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f) == dnnl_success;
      break;
    case GEMM_EPI_GELU:
      ok = dn.dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f) == dnnl_success;
      break;
    case GEMM_EPI_GELU_TANH:
      ok = dn.dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f) == dnnl_success;
      break;
    case GEMM_EPI_RELU_MASK: ok = false; break; /* no post-op (the caller does not ask) */
    }
  }
  ok = ok && dn.dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success &&
       dn.dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
       dn.dnnl_primitive_desc_create(&pd, &md, attr, dn.engine, NULL) == dnnl_success &&
       dn.dnnl_primitive_create(&p->prim, pd) == dnnl_success;
  /* oneDNN's reference kernels (shapes its JIT ones do not take) are far
   * slower than the library's product and our loop after it */
  const char *impl = NULL;
  if (ok && (dn.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl ||
             strncmp(impl, "ref", 3) == 0)) {
    dn.dnnl_primitive_destroy(p->prim);
    ok = false;
  }
  const dnnl_memory_desc_t *smd = ok ? dn.dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) : NULL;
  if (smd) {
    p->scratch_md = *smd;
    p->scratch_bytes = dn.dnnl_memory_desc_get_size(smd);
  }
  if (!ok) p->prim = NULL;
  if (pd) dn.dnnl_primitive_desc_destroy(pd);
  if (attr) dn.dnnl_primitive_attr_destroy(attr);
  if (po) dn.dnnl_post_ops_destroy(po);
}

static const Prim *prim_for(const Prim *want) {
  pthread_mutex_lock(&prims_mu);
  Prim *p = prims;
  for (; p; p = p->next)
    if (p->ta == want->ta && p->tb == want->tb && p->m == want->m && p->n == want->n && p->k == want->k &&
        p->lda == want->lda && p->ldb == want->ldb && p->ldc == want->ldc && p->n_steps == want->n_steps &&
        memcmp(p->kinds, want->kinds, sizeof(GemmEpiKind) * (size_t)want->n_steps) == 0)
      break;
  if (!p) {
    p = bc_malloc(sizeof *p);
    *p = *want;
    make_prim(p);
    p->next = prims;
    prims = p;
  }
  pthread_mutex_unlock(&prims_mu);
  return p;
}

/* Runs the product and epilogue on oneDNN; false when oneDNN cannot (not
 * installed, or it refused the primitive), for the caller's fallback. */
static bool onednn_epilogue(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                            const float *B, int64_t ldb, float *C, int64_t ldc, const GemmEpilogue *e) {
  pthread_once(&dn_once, dn_load);
  if (!dn.ok) return false;
  Prim want = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .n_steps = e->n};
  for (int s = 0; s < e->n; s++) want.kinds[s] = e->step[s].kind;
  const Prim *p = prim_for(&want);
  if (!p->prim) return false;
  ThreadState *ts = pthread_getspecific(thread_key);
  if (!ts) {
    ts = bc_calloc(1, sizeof *ts);
    if (dn.dnnl_stream_create(&ts->stream, dn.engine, dnnl_stream_default_flags) != dnnl_success) {
      free(ts);
      return false;
    }
    pthread_setspecific(thread_key, ts);
  }
  if (ts->scratch_bytes < p->scratch_bytes) {
    free(ts->scratch);
    ts->scratch = bc_malloc(p->scratch_bytes);
    ts->scratch_bytes = p->scratch_bytes;
  }
  gemm_lib_thread_enter(GEMM_LIB_ONEDNN);
  Descs d;
  BC_ASSERT(make_descs(p, &d));
  dnnl_exec_arg_t args[4 + GEMM_EPILOGUE_MAX];
  int na = 0;
  const void *ptr[3] = {A, B, C};
  const dnnl_memory_desc_t *md[3] = {&d.a, &d.b, &d.c};
  static const int arg_of[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
  bool ok = true;
  for (int i = 0; i < 3 && ok; i++) {
    ok = dn.dnnl_memory_create(&args[na].memory, md[i], dn.engine, (void *)ptr[i]) == dnnl_success;
    if (ok) args[na++].arg = arg_of[i];
  }
  bool bias = e->n > 0 && e->step[0].kind == GEMM_EPI_BIAS;
  for (int s = 0; s < e->n && ok; s++) {
    if (e->step[s].kind != GEMM_EPI_BIAS && e->step[s].kind != GEMM_EPI_ADD) continue;
    const dnnl_memory_desc_t *sd = e->step[s].kind == GEMM_EPI_BIAS ? &d.row : &d.c;
    ok = dn.dnnl_memory_create(&args[na].memory, sd, dn.engine, (void *)e->step[s].src) == dnnl_success;
    /* post-op indices count from the first post-op (after the bias) */
    if (ok) args[na++].arg = s == 0 && bias ? DNNL_ARG_BIAS : DNNL_ARG_ATTR_MULTIPLE_POST_OP(s - bias) | DNNL_ARG_SRC_1;
  }
  if (ok && p->scratch_bytes > 0) {
    ok = dn.dnnl_memory_create(&args[na].memory, &p->scratch_md, dn.engine, ts->scratch) == dnnl_success;
    if (ok) args[na++].arg = DNNL_ARG_SCRATCHPAD;
  }
  ok = ok && dn.dnnl_primitive_execute(p->prim, ts->stream, na, args) == dnnl_success &&
       dn.dnnl_stream_wait(ts->stream) == dnnl_success;
  for (int i = 0; i < na; i++) dn.dnnl_memory_destroy(args[i].memory);
  BC_ASSERT(ok && "oneDNN matmul failed after its primitive was made");
  return true;
}
#endif

bool gemm_lib_fuses_epilogues(GemmLib lib) {
#ifdef HAVE_ONEDNN_MATMUL
  if (lib != GEMM_LIB_ONEDNN) return false;
  pthread_once(&dn_once, dn_load);
  return dn.ok;
#else
  (void)lib;
  return false;
#endif
}

void gemm_lib_sgemm_epilogue(GemmLib lib, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, const GemmEpilogue *e) {
  if (m <= 0 || n <= 0) return;
  bool post_ops = true; /* every step a oneDNN post-op, its operand laid out like C */
  for (int s = 0; s < e->n; s++)
    if (e->step[s].kind == GEMM_EPI_RELU_MASK || (e->step[s].kind == GEMM_EPI_ADD && e->step[s].ld != ldc))
      post_ops = false;
#ifdef HAVE_ONEDNN_MATMUL
  if (post_ops && lib == GEMM_LIB_ONEDNN && k > 0 && onednn_epilogue(ta, tb, m, n, k, A, lda, B, ldb, C, ldc, e))
    return;
#endif
  int64_t rows, cols;
  epilogue_block(n, &rows, &cols);
  for (int64_t i0 = 0; i0 < m; i0 += rows)
    for (int64_t j0 = 0; j0 < n; j0 += cols) {
      int64_t mb = m - i0 < rows ? m - i0 : rows, nb = n - j0 < cols ? n - j0 : cols;
      float *c = C + i0 * ldc + j0;
      if (k > 0)
        gemm_lib_sgemm(lib, ta, tb, mb, nb, k, ta ? A + i0 : A + i0 * lda, lda, tb ? B + j0 * ldb : B + j0, ldb, 0.0f,
                       c, ldc);
      else
        for (int64_t i = 0; i < mb; i++) memset(c + i * ldc, 0, sizeof(float) * (size_t)nb);
      GemmEpilogue eb = gemm_epilogue_at(e, i0, j0);
      epilogue_rows(mb, nb, c, ldc, &eb);
    }
}
