/* cpu_ops.c — the CPU backend's hand-written kernels (see cpu_ops.h): GEMM
 * on an SGEMM library (gemm_lib.h) cut over the pool, gather, scatter-add, concat and strided copy,
 * each split over the thread pool by item ranges.
 *
 * Not here: generated kernels (codegen/llvm_emit.c), the choice of buffers
 * (the memory plan), or any allocation: every per-call context lives on the
 * caller's stack.
 *
 * Invariants: the same inputs on the same number of threads give the same
 * bits, whichever thread ran what: a GEMM is cut into the same tiles for
 * the same thread count (along M or N only, each C element one sgemm dot
 * product over all of K); scatter-add partitions the output, never the
 * updates, and adds each element's updates in index order. Another thread
 * count may cut a GEMM into other tiles, and a library's kernels (OpenBLAS's
 * Haswell ones among them) may round an element differently when the
 * sub-matrix around it changes: cutting by shape alone would make the bits
 * independent of the threads, but thin tiles of the long-K weight-gradient
 * GEMMs cost a third of their speed on 2 cores, so it is not done. */
#include "cpu_ops.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

/* ---- GEMM ------------------------------------------------------------- */

/* Work below this many flops (2*M*N*K summed over an item range) is not
 * worth waking another thread for: ~10 us of one core. */
#define GEMM_MIN_PAR_FLOPS (1 << 20)

typedef struct {
  GemmLib lib;
  const float *A, *B;
  float *C;
  bool ta, tb;
  float beta;
  int64_t M, N, K; /* of one batch GEMM, after folding batch dims into M */
  /* Outer (unfolded) batch dims: dims and per-operand strides in elements. */
  int rank;
  int64_t dim[BC_MAX_RANK], ast[BC_MAX_RANK], bst[BC_MAX_RANK];
  int64_t cst; /* elements of C per outer batch */
  /* Each batch GEMM cut into a grid of gm x gn tiles of tm x tn. */
  int64_t gm, gn, tm, tn;
  const GemmEpilogue *epi; /* NULL, or the epilogue of one [M, N] product (no batch dims) */
} GemmJob;

/* The library's thread count is process-global state (OpenBLAS's, BLIS's;
 * oneDNN's is per calling thread but set alike), and a GEMM below runs
 * either the library's threads or single-threaded calls on the pool's
 * threads: one cpu_gemm at a time holds the setting (uncontended for one
 * Exec; Execs running at once, cpu:0,1, take turns at GEMMs). */
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;

/* One sgemm: rows [m0, m1) x columns [n0, n1) of C for A, B, C already
 * offset to the batch. lda/ldb/ldc are those of the whole matrices. */
static void sgemm_block(const GemmJob *j, const float *A, const float *B, float *C, int64_t m0,
                        int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  int64_t lda = j->ta ? j->M : j->K, ldb = j->tb ? j->K : j->N, ldc = j->N;
  const float *a = j->ta ? A + m0 : A + m0 * lda;
  const float *b = j->tb ? B + n0 * ldb : B + n0;
  float *c = C + m0 * ldc + n0;
  if (j->epi) { /* the tile's own rows and columns of the epilogue's operands */
    GemmEpilogue e = gemm_epilogue_at(j->epi, m0, n0);
    gemm_lib_sgemm_epilogue(j->lib, j->ta, j->tb, m1 - m0, n1 - n0, j->K, a, lda, b, ldb, c, ldc, &e);
    return;
  }
  if (j->K == 0) { /* sgemm may leave C alone when K == 0: define it */
    for (int64_t i = 0; i < m1 - m0; i++)
      for (int64_t q = 0; q < n1 - n0; q++) c[i * ldc + q] = j->beta == 0.0f ? 0.0f : c[i * ldc + q];
    return;
  }
  gemm_lib_sgemm(j->lib, j->ta, j->tb, m1 - m0, n1 - n0, j->K, a, lda, b, ldb, j->beta, c, ldc);
}

/* Batch GEMM number `bi` (row-major over the outer batch dims), tile s. */
static void gemm_item(const GemmJob *j, int64_t bi, int64_t s) {
  int64_t rest = bi, aoff = 0, boff = 0;
  for (int i = j->rank - 1; i >= 0; i--) {
    int64_t x = rest % j->dim[i];
    rest /= j->dim[i];
    aoff += x * j->ast[i];
    boff += x * j->bst[i];
  }
  const float *A = j->A + aoff, *B = j->B + boff;
  float *C = j->C + bi * j->cst;
  int64_t m0 = s / j->gn * j->tm, n0 = s % j->gn * j->tn;
  int64_t m1 = m0 + j->tm < j->M ? m0 + j->tm : j->M, n1 = n0 + j->tn < j->N ? n0 + j->tn : j->N;
  sgemm_block(j, A, B, C, m0, m1, n0, n1);
}

static void gemm_range(void *ctx, int64_t begin, int64_t end) {
  const GemmJob *j = ctx;
  int64_t per = j->gm * j->gn;
  for (int64_t it = begin; it < end; it++) gemm_item(j, it / per, it % per);
}

/* Tile size for cutting `len` into about `parts` pieces: a multiple of 16
 * (full micro-kernel tiles) unless it is all of len. */
static int64_t tile_of(int64_t len, int64_t parts) {
  int64_t t = (len + parts - 1) / parts;
  if (t < len) t = (t + 15) / 16 * 16;
  return t < 1 ? 1 : t;
}

/* Cuts one (M, N, K) GEMM into a grid of about `parts` tiles. Every tile
 * packs its rows of A (tm*K) and its columns of B (K*tn), so the grid
 * gm x gn minimizes M*gn + N*gm, the packing it makes in total. */
static void choose_grid(GemmJob *j, int64_t parts) {
  int64_t best = -1;
  j->gm = j->gn = 1;
  for (int64_t gm = 1; gm <= parts; gm++) {
    int64_t gn = (parts + gm - 1) / gm;
    if ((gm > 1 && j->M < 16 * gm) || (gn > 1 && j->N < 16 * gn)) continue; /* tiles too thin */
    int64_t cost = j->M * gn + j->N * gm;
    if (best < 0 || cost < best) {
      best = cost;
      j->gm = gm;
      j->gn = gn;
    }
  }
  j->tm = tile_of(j->M, j->gm);
  j->tn = tile_of(j->N, j->gn);
  j->gm = (j->M + j->tm - 1) / j->tm; /* rounding may have left fewer */
  j->gn = (j->N + j->tn - 1) / j->tn;
}

/* The rule, from `BC_BENCH=1 test_cpu_ops bench` (GFLOP/s, best of runs,
 * OpenBLAS 0.3.21 Cooperlake kernels, Xeon family 6 model 207 under KVM,
 * 16-core machine; pool = CPU_GEMM_POOL, blas = CPU_GEMM_BLAS with as many
 * OpenBLAS threads; runs vary by ~20%):
 *
 *                                   16 threads    8 threads   2 threads   1
 *                                   pool  blas    pool  blas  pool  blas
 *   [8192,128] x [128,128]          1170   271     649   223   270   192  135
 *   [8192,128]^T x [8192,128]        664   303     379   246   218   148  128
 *   [8192,128] x [128,128]^T        1048   302     713   237   268   205  134
 *   QK^T 128 x [128,64]x[64,128]    1128    57     635    54   205    99  103
 *   PV   128 x [128,128]x[128,64]   1095    51     656    60   206    95  106
 *   [1216,128] x [128,20256]        1036   973     616   724   264   249  131
 *   [1216,20256] x [128,20256]^T    1049   502     523   364   268   216  132
 *   [1216,128]^T x [1216,20256]     1066   650     614   763   227   222  113
 *
 * Attention GEMMs (~25 us each) drown in OpenBLAS's per-call fork/join;
 * big GEMMs come out about even. Besides, OpenBLAS's idle threads keep
 * spinning after a threaded call (its THREAD_TIMEOUT), which slowed a GEMM
 * followed by 20 pool kernels from ~1200 to ~2000 us on 16 threads. So the
 * rule is: always the pool. CPU_GEMM_BLAS stays for benchmarks and for
 * machines where this is measured otherwise. */
CpuGemmPar cpu_gemm_choose(int64_t n_batch, int64_t m, int64_t n, int64_t k, int n_threads) {
  (void)n_batch, (void)m, (void)n, (void)k, (void)n_threads;
  return CPU_GEMM_POOL;
}


void cpu_gemm_lock(GemmLib lib, int n) {
  BC_ASSERT(gemm_lib_load(lib));
  pthread_mutex_lock(&blas_mu);
  gemm_lib_set_threads(lib, n);
}

void cpu_gemm_unlock(void) { pthread_mutex_unlock(&blas_mu); }

static void gemm_run(Pool *p, CpuGemmPar par, GemmLib lib, const float *A, const Shape *as, bool trans_a,
                     const float *B, const Shape *bs, bool trans_b, float beta, float *C, const Shape *cs,
                     const GemmEpilogue *epi) {
  BC_ASSERT(beta == 0.0f || beta == 1.0f);
  MatmulLayout l;
  shape_matmul_layout(as, trans_a, bs, trans_b, cs, &l);
  int64_t N = l.N, K = l.K;
  if (shape_numel(cs) == 0) return;
  BC_ASSERT(gemm_lib_load(lib));
  BC_ASSERT(!epi || (l.n_batch_dims == 0 && beta == 0.0f));

  GemmJob j = {.lib = lib, .A = A, .B = B, .C = C, .ta = trans_a, .tb = trans_b, .beta = beta,
               .M = l.M, .N = N, .K = K, .rank = l.n_batch_dims, .epi = epi};
  int64_t n_batch = 1;
  for (int i = 0; i < l.n_batch_dims; i++) {
    j.dim[i] = l.dim[i];
    j.ast[i] = l.a_stride[i];
    j.bst[i] = l.b_stride[i];
    n_batch *= l.dim[i];
  }
  j.cst = j.M * N;

  int n_threads = pool_n_threads(p);
  if (par == CPU_GEMM_AUTO) par = cpu_gemm_choose(n_batch, j.M, N, K, n_threads);

  pthread_mutex_lock(&blas_mu);
  if (par == CPU_GEMM_BLAS || n_threads == 1) {
    gemm_lib_set_threads(lib, n_threads);
    j.gm = j.gn = 1;
    j.tm = j.M;
    j.tn = N;
    gemm_range(&j, 0, n_batch);
    pthread_mutex_unlock(&blas_mu);
    return;
  }

  /* Pool: single-threaded library calls per item. With at least as many batch
   * GEMMs as threads, an item is one batch GEMM; with fewer, each is cut
   * into tiles so that every thread has one. */
  gemm_lib_set_threads(lib, 1);
  j.gm = j.gn = 1;
  j.tm = j.M;
  j.tn = N;
  if (n_batch < n_threads) choose_grid(&j, (n_threads + n_batch - 1) / n_batch);
  int64_t per = j.gm * j.gn;
  double item_flops = 2.0 * (double)j.M * (double)N * (double)K / (double)per;
  int64_t grain = item_flops >= GEMM_MIN_PAR_FLOPS ? 1 : (int64_t)(GEMM_MIN_PAR_FLOPS / (item_flops + 1.0)) + 1;
  pool_parallel_for(p, n_batch * per, grain, gemm_range, &j);
  pthread_mutex_unlock(&blas_mu);
}

void cpu_gemm(Pool *p, CpuGemmPar par, GemmLib lib, const float *A, const Shape *as, bool trans_a,
              const float *B, const Shape *bs, bool trans_b, float beta, float *C, const Shape *cs) {
  gemm_run(p, par, lib, A, as, trans_a, B, bs, trans_b, beta, C, cs, NULL);
}

void cpu_gemm_epilogue(Pool *p, GemmLib lib, const float *A, const Shape *as, bool trans_a, const float *B,
                       const Shape *bs, bool trans_b, float *C, const Shape *cs, const GemmEpilogue *e) {
  gemm_run(p, CPU_GEMM_AUTO, lib, A, as, trans_a, B, bs, trans_b, 0.0f, C, cs, e->n > 0 ? e : NULL);
}

/* ---- index checks ------------------------------------------------------ */

static bool check_indices(const int32_t *idx, int64_t n_idx, int64_t n_rows, int64_t *bad_pos) {
  for (int64_t i = 0; i < n_idx; i++)
    if (idx[i] < 0 || idx[i] >= n_rows) {
      if (bad_pos) *bad_pos = i;
      return false;
    }
  return true;
}

/* Chunks of a row-copying loop should move at least this many bytes. */
#define COPY_MIN_BYTES (32 << 10)

static int64_t grain_for(int64_t bytes_per_item) {
  if (bytes_per_item < 1) bytes_per_item = 1;
  int64_t g = COPY_MIN_BYTES / bytes_per_item;
  return g < 1 ? 1 : g;
}

/* ---- gather ------------------------------------------------------------ */

typedef struct {
  const char *table;
  const int32_t *idx;
  char *out;
  size_t row_bytes;
} GatherJob;

static void gather_range(void *ctx, int64_t begin, int64_t end) {
  const GatherJob *j = ctx;
  for (int64_t i = begin; i < end; i++)
    memcpy(j->out + (size_t)i * j->row_bytes, j->table + (size_t)j->idx[i] * j->row_bytes,
           j->row_bytes);
}

bool cpu_gather(Pool *p, const void *table, int64_t n_rows, int64_t row, const int32_t *idx,
                int64_t n_idx, void *out, int64_t *bad_pos) {
  if (!check_indices(idx, n_idx, n_rows, bad_pos)) return false;
  GatherJob j = {table, idx, out, (size_t)row * 4};
  pool_parallel_for(p, n_idx, grain_for(row * 4), gather_range, &j);
  return true;
}

/* ---- scatter-add ------------------------------------------------------- */

/* The output is cut into blocks of whole destination rows [r0, r1) times
 * SCATTER_COLS columns (one 64-byte line); an item owns one block, scans
 * every index in order and adds the updates that land in it. Ownership by
 * output block (never by update) gives the index-order sums at any thread
 * count; column blocks of a cache line keep threads off each other's lines. */
#define SCATTER_COLS 16

typedef struct {
  const int32_t *idx;
  const float *upd;
  float *out;
  int64_t n_idx, n_rows, row;
  int64_t n_cb, n_rp; /* column blocks, row parts */
} ScatterJob;

static void zero_range(void *ctx, int64_t begin, int64_t end) {
  float *o = ctx;
  memset(o + begin, 0, (size_t)(end - begin) * sizeof(float));
}

static void scatter_block(const ScatterJob *j, int64_t rp, int64_t c0, int64_t c1) {
  int64_t r0 = j->n_rows * rp / j->n_rp, r1 = j->n_rows * (rp + 1) / j->n_rp;
  int64_t w = c1 - c0, row = j->row;
  for (int64_t i = 0; i < j->n_idx; i++) {
    int64_t r = j->idx[i];
    if (r < r0 || r >= r1) continue;
    float *restrict dst = j->out + r * row + c0;
    const float *restrict src = j->upd + i * row + c0;
    for (int64_t q = 0; q < w; q++) dst[q] += src[q];
  }
}

static void scatter_range(void *ctx, int64_t begin, int64_t end) {
  const ScatterJob *j = ctx;
  /* Items are (row part, column block) in row-major order: consecutive
   * column blocks of one row part are merged into one scan. */
  int64_t it = begin;
  while (it < end) {
    int64_t rp = it / j->n_cb, cb0 = it % j->n_cb;
    int64_t cb1 = j->n_cb;
    if ((rp + 1) * j->n_cb > end) cb1 = end - rp * j->n_cb;
    int64_t c0 = cb0 * SCATTER_COLS, c1 = cb1 * SCATTER_COLS;
    scatter_block(j, rp, c0, c1 < j->row ? c1 : j->row);
    it = rp * j->n_cb + cb1;
  }
}

bool cpu_scatter_add(Pool *p, const int32_t *idx, int64_t n_idx, const float *upd, int64_t n_rows,
                     int64_t row, float *out, int64_t *bad_pos) {
  if (!check_indices(idx, n_idx, n_rows, bad_pos)) return false;
  int64_t numel = n_rows * row;
  pool_parallel_for(p, numel, COPY_MIN_BYTES / 4, zero_range, out);
  if (n_idx == 0 || row == 0) return true;

  int n_threads = pool_n_threads(p);
  ScatterJob j = {idx, upd, out, n_idx, n_rows, row, (row + SCATTER_COLS - 1) / SCATTER_COLS, 1};
  /* About 4 items per thread; add row parts when column blocks are fewer. */
  int64_t want = 4 * (int64_t)n_threads;
  if (n_threads > 1 && j.n_cb < want) {
    j.n_rp = (want + j.n_cb - 1) / j.n_cb;
    if (j.n_rp > n_rows) j.n_rp = n_rows;
  }
  /* Each item scans all indices: not worth a thread below ~64K updates. */
  int64_t work = n_idx * row;
  int64_t n_items = j.n_rp * j.n_cb;
  int64_t grain = work >= (1 << 16) ? 1 : n_items;
  pool_parallel_for(p, n_items, grain, scatter_range, &j);
  return true;
}

/* ---- concat -------------------------------------------------------------- */

typedef struct {
  int n_in;
  const uint32_t *const *in;
  const int64_t *in_len;
  uint32_t *out;
  int64_t inner, out_len; /* elements after the axis; out's length on it */
} ConcatJob;

/* Output elements [begin, end): runs of consecutive elements that come from
 * one input row are memcpy'd. */
static void concat_range(void *ctx, int64_t begin, int64_t end) {
  const ConcatJob *j = ctx;
  int64_t orow = j->out_len * j->inner;
  int64_t pos = begin;
  int64_t outer = pos / orow, r = pos % orow;
  /* Find the input holding element r of the row. */
  int k = 0;
  int64_t at = 0; /* start of input k in the row, in elements */
  while (r >= at + j->in_len[k] * j->inner) {
    at += j->in_len[k] * j->inner;
    k++;
  }
  while (pos < end) {
    int64_t klen = j->in_len[k] * j->inner;
    int64_t run = at + klen - r;
    if (run > end - pos) run = end - pos;
    if (run > 0)
      memcpy(j->out + pos, j->in[k] + outer * klen + (r - at), (size_t)run * sizeof(uint32_t));
    pos += run;
    r += run;
    at += klen;
    k++;
    if (k == j->n_in) {
      k = 0;
      at = 0;
      r = 0;
      outer++;
    }
  }
}

void cpu_concat(Pool *p, int n_in, const void *const *in, const int64_t *in_len,
                const Shape *out_shape, int axis, void *out) {
  BC_ASSERT(n_in >= 1 && axis >= 0 && axis < out_shape->rank);
  int64_t total = 0;
  for (int k = 0; k < n_in; k++) total += in_len[k];
  BC_ASSERT(total == out_shape->dim[axis]);
  int64_t inner = 1;
  for (int i = axis + 1; i < out_shape->rank; i++) inner *= out_shape->dim[i];
  int64_t numel = shape_numel(out_shape);
  if (numel == 0) return;
  ConcatJob j = {n_in, (const uint32_t *const *)in, in_len, out, inner, total};
  pool_parallel_for(p, numel, COPY_MIN_BYTES / 4, concat_range, &j);
}

/* ---- strided copy ------------------------------------------------------ */

typedef struct {
  const uint32_t *in;
  uint32_t *out;
  int rank;
  int64_t offset;
  int64_t dim[BC_MAX_RANK], stride[BC_MAX_RANK];
} StridedJob;

static void strided_range(void *ctx, int64_t begin, int64_t end) {
  const StridedJob *j = ctx;
  int last = j->rank - 1;
  int64_t L = j->dim[last], s = j->stride[last];
  int64_t ix[BC_MAX_RANK];
  int64_t rest = begin, src = j->offset;
  for (int i = last; i >= 0; i--) {
    ix[i] = rest % j->dim[i];
    rest /= j->dim[i];
    src += ix[i] * j->stride[i];
  }
  int64_t pos = begin;
  while (pos < end) {
    int64_t run = L - ix[last];
    if (run > end - pos) run = end - pos;
    uint32_t *o = j->out + pos;
    const uint32_t *x = j->in + src;
    if (s == 1) memcpy(o, x, (size_t)run * sizeof(uint32_t));
    else if (s == 0)
      for (int64_t q = 0; q < run; q++) o[q] = x[0];
    else
      for (int64_t q = 0; q < run; q++) o[q] = x[q * s];
    pos += run;
    /* Advance the multi-index past the run (it ends a row or the range). */
    src += run * s;
    ix[last] += run;
    for (int i = last; i > 0 && ix[i] == j->dim[i]; i--) {
      src -= j->dim[i] * j->stride[i];
      ix[i] = 0;
      ix[i - 1]++;
      src += j->stride[i - 1];
    }
  }
}

void cpu_copy_strided(Pool *p, const void *in, int64_t offset, const int64_t *stride,
                      const Shape *shape, void *out) {
  int64_t numel = shape_numel(shape);
  if (numel == 0) return;
  /* Drop size-1 axes and merge axis pairs that walk memory as one
   * (stride[i] == stride[i+1] * dim[i+1]), so rows are as long as possible. */
  StridedJob j = {in, out, 0, offset, {0}, {0}};
  for (int i = 0; i < shape->rank; i++) {
    if (shape->dim[i] == 1) continue;
    if (j.rank > 0 && j.stride[j.rank - 1] == stride[i] * shape->dim[i]) {
      j.dim[j.rank - 1] *= shape->dim[i];
      j.stride[j.rank - 1] = stride[i];
      continue;
    }
    j.dim[j.rank] = shape->dim[i];
    j.stride[j.rank] = stride[i];
    j.rank++;
  }
  if (j.rank == 0) { /* a single element */
    j.rank = 1;
    j.dim[0] = 1;
    j.stride[0] = 0;
  }
  pool_parallel_for(p, numel, COPY_MIN_BYTES / 4, strided_range, &j);
}
