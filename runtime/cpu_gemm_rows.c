/* cpu_gemm_rows.c — GEMMs that leave out rows: an operand's zero rows,
 * found by a scan (cpu_ops.h: cpu_gemm_live_rows), or the rows a row
 * guard gives (cpu_gemm_given_rows: the dead rows of C written as zeros,
 * the same two ways and cost model, its compaction by blocks of rows and
 * columns kept in cache).
 *
 * A training step's backward GEMMs read gradients, and many rows of a
 * gradient are exactly zero: the rows of padding tokens (nothing the loss
 * reads depends on them), every token row but <cls> in the last encoder
 * layer of a classifier, the MLM slots of weight 0. A zero row of A makes
 * a zero row of C = A B; a zero row of either operand of C = A^T B adds
 * nothing to C. So the rows are scanned first (a live row stops the scan
 * at its first nonzero element, a zero row costs one read per element),
 * and the GEMM runs over the live rows in one of two ways, whichever a
 * cost model in rows of work says is cheapest, or densely when neither
 * saves at least a tenth:
 *  - runs: one library call per run of consecutive live rows (long runs:
 *    the padding tails of examples);
 *  - compacted: the live rows copied into a scratch block, one dense GEMM
 *    there, its rows copied back (short runs: MLM slots, the rows of <cls>
 *    tokens).
 * Where a row guard's zero fact covers the scanned rows, its live rows
 * stand for the scan (`given`), and the gradient's compacted rows, first
 * in the scratch, may be the ones the GEMM before left there (`ready`:
 * the MLM head's d X then d W GEMMs of one column block).
 *
 * Not here: dense GEMMs and the pool's tiling of them (cpu_ops.c), which
 * GEMMs are eligible and which rows a guard leaves live (cpu.c).
 *
 * Invariants: the result equals the dense GEMM's up to the order of the
 * K sums (C = A^T B adds its runs one after another), except where the
 * other operand holds an infinity or NaN: 0 times it is NaN densely and
 * no term here. The choice depends only on the data and the thread count,
 * so runs on the same thread count give the same bits. */
#include "cpu_ops.h"

#include <string.h>

/* Fewer rows than this: always dense (the scan would not pay). */
enum { MIN_ROWS = 256 };
/* A library call's fixed cost (packing its other operand, the call) in
 * rows of work: a run of C = A^T B adds into every tile of C, so it costs
 * about twice one of C = A B. A copied row's cost in rows of work per
 * (K + N) / (K N) (copying 4 bytes against 2 flops per pair of elements).
 * Fitted to the backward GEMMs of pretrain at batches 64 and 256
 * (`BC_PROFILE`, against BC_NO_ZERO_ROWS=1); `BC_BENCH=1
 * test_cpu_gemm_rows bench` times the way they choose against the dense
 * GEMM on the BERT step's shapes. */
#define RUN_COST_ROWS 24.0
#define RUN_COST_ROWS_K 48.0
#define COPY_COST 20.0

typedef struct {
  GemmLib lib;
  const float *A, *B;
  float *C;
  bool ta, tb;
  float beta;
  int64_t M, N, K;     /* of the whole GEMM */
  int64_t la, lb;      /* row lengths of A and B along the scanned rows */
  uint8_t *live;       /* per scanned row */
  const int32_t *seg;  /* [start, end) pairs: runs or pieces of runs */
  int64_t n_seg;
  const int32_t *rows; /* compacted: the live rows in order */
  float *As, *Bs, *Cs; /* compacted operands */
  bool ready;          /* compacted: the gradient's rows (B's of A^T B, else A's) are there already */
  int64_t tn;          /* C = A^T B by runs: columns per tile */
} RowsJob;

/* Whether x[0..len) has an element other than +-0: 32 at a time (one
 * test per block, so the compiler vectorizes the block), then the rest. */
static bool row_nonzero(const float *x, int64_t len) {
  int64_t q = 0;
  for (; q + 32 <= len; q += 32) {
    uint32_t any = 0;
    for (int i = 0; i < 32; i++) {
      uint32_t u;
      memcpy(&u, x + q + i, sizeof u);
      any |= u << 1; /* drops the sign: -0 is zero too */
    }
    if (any) return true;
  }
  for (; q < len; q++)
    if (x[q] != 0.0f) return true;
  return false;
}

/* live[r]: row r of A (C = A B) or of both A and B (C = A^T B) has a
 * nonzero element. B is scanned first: it is the gradient. */
static void scan_range(void *ctx, int64_t begin, int64_t end) {
  RowsJob *j = ctx;
  for (int64_t r = begin; r < end; r++)
    j->live[r] = j->ta ? row_nonzero(j->B + r * j->lb, j->lb) && row_nonzero(j->A + r * j->la, j->la)
                       : row_nonzero(j->A + r * j->la, j->la);
}

/* C = A B by runs: segment s is rows [seg[2s], seg[2s+1]) of A and C. */
static void runs_m_range(void *ctx, int64_t begin, int64_t end) {
  const RowsJob *j = ctx;
  int64_t ldb = j->tb ? j->K : j->N;
  for (int64_t s = begin; s < end; s++) {
    int64_t r0 = j->seg[2 * s], r1 = j->seg[2 * s + 1];
    gemm_lib_sgemm(j->lib, false, j->tb, r1 - r0, j->N, j->K, j->A + r0 * j->K, j->K, j->B, ldb, j->beta,
                   j->C + r0 * j->N, j->N);
  }
}

/* C = A^T B by runs: item t is columns [t tn, (t + 1) tn) of C, summed
 * over the runs one after another. */
static void runs_k_range(void *ctx, int64_t begin, int64_t end) {
  const RowsJob *j = ctx;
  for (int64_t t = begin; t < end; t++) {
    int64_t n0 = t * j->tn, n1 = n0 + j->tn < j->N ? n0 + j->tn : j->N;
    for (int64_t s = 0; s < j->n_seg; s++) {
      int64_t r0 = j->seg[2 * s], r1 = j->seg[2 * s + 1];
      gemm_lib_sgemm(j->lib, true, false, j->M, n1 - n0, r1 - r0, j->A + r0 * j->M, j->M, j->B + r0 * j->N + n0,
                     j->N, s == 0 ? j->beta : 1.0f, j->C + n0, j->N);
    }
  }
}

static int64_t rows_grain(int64_t floats_per_row) {
  int64_t g = (16 << 10) / (floats_per_row > 0 ? floats_per_row : 1);
  return g < 1 ? 1 : g;
}

/* The dead rows of C [., N]: zeros (a zero row of A leaves one zero, a
 * row guard's dead row is written as one). */
typedef struct {
  float *C;
  int64_t N;
  const uint8_t *live;
} DeadRows;

static void zero_dead_range(void *ctx, int64_t begin, int64_t end) {
  const DeadRows *j = ctx;
  for (int64_t r = begin; r < end; r++)
    if (!j->live[r]) memset(j->C + r * j->N, 0, sizeof(float) * (size_t)j->N);
}

static void zero_dead_rows(Pool *p, float *C, int64_t M, int64_t N, const uint8_t *live) {
  DeadRows z = {C, N, live};
  pool_parallel_for(p, M, rows_grain(N), zero_dead_range, &z);
}

/* Compacted: the live rows of A (and of B for C = A^T B) into As (Bs),
 * but those already there. */
static void compact_range(void *ctx, int64_t begin, int64_t end) {
  const RowsJob *j = ctx;
  for (int64_t i = begin; i < end; i++) {
    int64_t r = j->rows[i];
    if (j->ta || !j->ready) memcpy(j->As + i * j->la, j->A + r * j->la, sizeof(float) * (size_t)j->la);
    if (j->ta && !j->ready) memcpy(j->Bs + i * j->lb, j->B + r * j->lb, sizeof(float) * (size_t)j->lb);
  }
}

/* Compacted C = A B: Cs's rows back into the live rows of C. */
static void expand_range(void *ctx, int64_t begin, int64_t end) {
  const RowsJob *j = ctx;
  for (int64_t i = begin; i < end; i++) {
    float *c = j->C + (int64_t)j->rows[i] * j->N;
    const float *cs = j->Cs + i * j->N;
    if (j->beta == 0.0f) memcpy(c, cs, sizeof(float) * (size_t)j->N);
    else
      for (int64_t q = 0; q < j->N; q++) c[q] += cs[q];
  }
}

CpuRowsWay cpu_gemm_live_rows(Pool *p, GemmLib lib, const float *A, const Shape *as, bool trans_a, const float *B,
                              const Shape *bs, bool trans_b, float beta, float *C, const Shape *cs,
                              const CpuRowsScratch *s, const uint8_t *given, bool ready) {
  MatmulLayout l;
  shape_matmul_layout(as, trans_a, bs, trans_b, cs, &l);
  bool k_rows = trans_a && !trans_b; /* C = A^T B: the rows are K's */
  int64_t R = k_rows ? l.K : l.M;
  if (!s || l.n_batch_dims > 0 || (trans_a && trans_b) || R < MIN_ROWS || R > s->rows || shape_numel(cs) == 0) {
    cpu_gemm(p, CPU_GEMM_AUTO, lib, A, as, trans_a, B, bs, trans_b, beta, C, cs);
    return CPU_ROWS_DENSE;
  }
  RowsJob j = {.lib = lib, .A = A, .B = B, .C = C, .ta = trans_a, .tb = trans_b, .beta = beta,
               .M = l.M, .N = l.N, .K = l.K, .la = k_rows ? l.M : l.K, .lb = l.N, .live = s->live};
  if (given) memcpy(j.live, given, (size_t)R);
  else pool_parallel_for(p, R, rows_grain(j.la), scan_range, &j);

  /* the runs of live rows as [start, end) pairs in s->seg */
  int32_t *seg = s->seg;
  int64_t n = 0, runs = 0;
  for (int64_t r = 0; r < R; r++) {
    if (!j.live[r]) continue;
    n++;
    if (r == 0 || !j.live[r - 1]) seg[2 * runs++] = (int32_t)r;
    seg[2 * runs - 1] = (int32_t)r + 1;
  }
  if (n == R) {
    cpu_gemm(p, CPU_GEMM_AUTO, lib, A, as, trans_a, B, bs, trans_b, beta, C, cs);
    return CPU_ROWS_DENSE;
  }
  if (n == 0) { /* C = beta C */
    if (beta == 0.0f) memset(C, 0, sizeof(float) * (size_t)(l.M * l.N));
    return CPU_ROWS_RUNS;
  }

  /* the cost of each way, in rows of work */
  double other = k_rows ? (double)l.M : (double)l.K; /* with N: a row's work is 2 other N flops */
  double by_runs = (double)n + (k_rows ? RUN_COST_ROWS_K : RUN_COST_ROWS) * (double)runs;
  double by_copy = (double)n * (1.0 + COPY_COST * (other + (double)l.N) / (other * (double)l.N));
  bool fits = n * (int64_t)(other + (double)l.N) <= s->floats;
  CpuRowsWay way = CPU_ROWS_DENSE;
  double best = 0.9 * (double)R;
  if (by_runs < best) way = CPU_ROWS_RUNS, best = by_runs;
  if (fits && by_copy < best) way = CPU_ROWS_COMPACTED;
  if (way == CPU_ROWS_DENSE) {
    cpu_gemm(p, CPU_GEMM_AUTO, lib, A, as, trans_a, B, bs, trans_b, beta, C, cs);
    return way;
  }
  int nt = pool_n_threads(p);

  if (way == CPU_ROWS_COMPACTED) {
    /* the live rows' indices, in order, after the runs in seg */
    int32_t *rows = seg + 2 * runs;
    for (int64_t r = 0, i = 0; r < R; r++)
      if (j.live[r]) rows[i++] = (int32_t)r;
    j.rows = rows;
    j.ready = ready && given;
    /* the gradient's rows first (B's of A^T B), where a GEMM before may
     * have left them */
    j.As = k_rows ? s->buf + n * j.lb : s->buf;
    j.Bs = k_rows ? s->buf : s->buf + n * j.la;
    j.Cs = j.Bs;
    pool_parallel_for(p, n, rows_grain(j.la + (k_rows ? j.lb : 0)), compact_range, &j);
    if (k_rows) {
      Shape sa = shape_of(2, (int)n, (int)l.M), sb = shape_of(2, (int)n, (int)l.N);
      cpu_gemm(p, CPU_GEMM_AUTO, lib, j.As, &sa, true, j.Bs, &sb, false, beta, C, cs);
    } else {
      Shape sa = shape_of(2, (int)n, (int)l.K), sc = shape_of(2, (int)n, (int)l.N);
      cpu_gemm(p, CPU_GEMM_AUTO, lib, j.As, &sa, false, B, bs, trans_b, 0.0f, j.Cs, &sc);
      pool_parallel_for(p, n, rows_grain(l.N), expand_range, &j);
      if (beta == 0.0f) zero_dead_rows(p, C, R, l.N, j.live);
    }
    return way;
  }

  cpu_gemm_lock(lib, 1);
  if (k_rows) {
    /* column tiles, a multiple of 16 wide, one or more per thread */
    int64_t tn = (l.N + nt - 1) / nt;
    tn = tn < l.N ? (tn + 15) / 16 * 16 : tn;
    j.tn = tn > 0 ? tn : 1;
    j.seg = seg;
    j.n_seg = runs;
    pool_parallel_for(p, (l.N + j.tn - 1) / j.tn, 1, runs_k_range, &j);
  } else {
    /* runs cut into pieces of at most `piece` rows, so that every thread
     * has several; the pieces overwrite seg from the end of the runs */
    int64_t piece = (n + 4 * nt - 1) / (4 * nt);
    piece = piece < 64 ? 64 : (piece + 15) / 16 * 16;
    int64_t pieces = 0;
    for (int64_t q = 0; q < runs; q++)
      pieces += (seg[2 * q + 1] - seg[2 * q] + piece - 1) / piece;
    /* pieces >= runs: fill from the last piece backwards, never past a run
     * not yet read */
    int64_t out = pieces;
    for (int64_t q = runs - 1; q >= 0; q--) {
      int64_t r0 = seg[2 * q], r1 = seg[2 * q + 1], np = (r1 - r0 + piece - 1) / piece;
      for (int64_t t = np - 1; t >= 0; t--) {
        out--;
        seg[2 * out] = (int32_t)(r0 + t * piece);
        seg[2 * out + 1] = (int32_t)(r0 + (t + 1) * piece < r1 ? r0 + (t + 1) * piece : r1);
      }
    }
    j.seg = seg;
    j.n_seg = pieces;
    pool_parallel_for(p, pieces, 1, runs_m_range, &j);
  }
  cpu_gemm_unlock();
  if (!k_rows && beta == 0.0f) zero_dead_rows(p, C, R, l.N, j.live);
  return way;
}

/* ---- rows given by the caller (a row guard) ---- */

/* Compacted rows per call are rounded up to this (rows not copied out): a
 * oneDNN primitive is made per shape, so the shapes stay few. */
enum { GIVEN_ROUND = 32 };
/* Floats of one thread's block of the compacted product, kept in cache
 * until its rows are copied out. */
enum { GIVEN_BLOCK_FLOATS = 128 << 10 };
/* Floats of A's compacted rows at a time: more live rows than fit are
 * compacted and multiplied a chunk of rows after another. */
enum { GIVEN_CHUNK_FLOATS = 2 << 20 };
/* K from which B's packing per call outweighs C's blocks staying in cache:
 * one block per thread, and chunks of a block more than fits in
 * GIVEN_CHUNK_FLOATS where that leaves a thread idle. */
enum { GIVEN_LONG_K = 2048 };

typedef struct {
  GemmLib lib;
  const float *A, *B;
  float *As, *C, *Cs;
  bool tb;
  int64_t M, N, K, n, n_pad;
  int64_t mb, nb, n_col_blocks; /* rows and columns per block */
  int64_t c0, cn;               /* the chunk of compacted rows [c0, c0 + cn) in As */
  const uint8_t *live;
  const int32_t *idx;
  const int32_t *seg; /* by runs: [start, end) pairs */
  const GemmEpilogue *e;
  bool zero_dead;     /* write the dead rows as zeros */
} GivenJob;

/* The blocks of the compacted product (n_pad x N): at most
 * GIVEN_BLOCK_FLOATS each, columns a multiple of 16 (all of them when
 * few), rows a multiple of GIVEN_ROUND, and at least two per thread. */
static void given_blocks(int64_t n_pad, int64_t N, int64_t K, int threads, int64_t *mb, int64_t *nb) {
  *nb = N < 256 ? N : 256;
  int64_t rows = GIVEN_BLOCK_FLOATS / *nb, col_blocks = (N + *nb - 1) / *nb;
  /* row blocks for two items per thread; one where K is long (each call
   * packs its K x nb block of B anew) */
  int64_t per_thread = K >= GIVEN_LONG_K ? 1 : 2;
  int64_t want = (per_thread * threads + col_blocks - 1) / col_blocks;
  int64_t split = (n_pad + want - 1) / want;
  if (split < rows) rows = split;
  rows = (rows + GIVEN_ROUND - 1) / GIVEN_ROUND * GIVEN_ROUND;
  *mb = rows < n_pad ? rows : n_pad;
}

/* Compacted rows per chunk: all n_pad, or as many whole row blocks of mb
 * as GIVEN_CHUNK_FLOATS holds (one at least). */
static int64_t given_chunk(int64_t n_pad, int64_t K, int64_t mb, int threads) {
  int64_t rows = GIVEN_CHUNK_FLOATS / (K > 0 ? K : 1) / mb * mb;
  /* long K: a block more when the threads' blocks need it (the scratch
   * holds GIVEN_CHUNK_FLOATS / K rows and a block of at most mb_max) */
  int64_t least = K >= GIVEN_LONG_K && rows < threads * mb ? rows + mb : mb;
  rows = rows < least ? least : rows;
  return rows < n_pad ? rows : n_pad;
}

int64_t cpu_gemm_given_rows_scratch(int64_t M, int64_t N, int64_t K, int threads) {
  int64_t n_pad = (M + GIVEN_ROUND - 1) / GIVEN_ROUND * GIVEN_ROUND, nb = N < 256 ? N : 256;
  /* a chunk's rows (blocks of at most GIVEN_BLOCK_FLOATS / nb rows), then
   * each thread's block */
  int64_t mb_max = (GIVEN_BLOCK_FLOATS / nb + GIVEN_ROUND - 1) / GIVEN_ROUND * GIVEN_ROUND;
  int64_t rows = GIVEN_CHUNK_FLOATS / (K > 0 ? K : 1) + mb_max;
  return (rows < n_pad ? rows : n_pad) * K + (int64_t)threads * (mb_max + GIVEN_ROUND) * nb;
}

static void given_gather_range(void *ctx, int64_t begin, int64_t end) {
  const GivenJob *j = ctx;
  for (int64_t i = begin; i < end; i++) /* the rounding's rows: whatever they hold, their products go nowhere */
    if (j->c0 + i < j->n)
      memcpy(j->As + i * j->K, j->A + (int64_t)j->idx[j->c0 + i] * j->K, sizeof(float) * (size_t)j->K);
}

/* Item b: the chunk's compacted rows [i0, i1) by columns [n0, n0 + w) of
 * the product, into this thread's block, then copied to their live rows
 * of C; the first chunk's first row block's item also zeroes those
 * columns of the dead rows. */
static void given_block_range(void *ctx, int64_t begin, int64_t end) {
  const GivenJob *j = ctx;
  float *Cs = j->Cs + (int64_t)pool_thread_index() * (j->mb + GIVEN_ROUND) * j->nb;
  for (int64_t b = begin; b < end; b++) {
    int64_t i0 = b / j->n_col_blocks * j->mb, n0 = b % j->n_col_blocks * j->nb;
    int64_t m = i0 + j->mb < j->cn ? j->mb : j->cn - i0, w = n0 + j->nb < j->N ? j->nb : j->N - n0;
    const float *B = j->tb ? j->B + n0 * j->K : j->B + n0;
    int64_t ldb = j->tb ? j->K : j->N;
    if (j->e && j->e->n > 0) {
      /* a mask reads the live rows the block's rows are: the rounding's
       * rows, which have none, are left out */
      GemmEpilogue ec = gemm_epilogue_compacted(j->e, j->idx + j->c0 + i0), e = gemm_epilogue_at(&ec, 0, n0);
      for (int s = 0; s < e.n; s++)
        if (e.step[s].rows && m > j->n - j->c0 - i0) m = j->n - j->c0 - i0;
      gemm_lib_sgemm_epilogue(j->lib, false, j->tb, m, w, j->K, j->As + i0 * j->K, j->K, B, ldb, Cs, w, &e);
    } else {
      gemm_lib_sgemm(j->lib, false, j->tb, m, w, j->K, j->As + i0 * j->K, j->K, B, ldb, 0.0f, Cs, w);
    }
    for (int64_t i = i0; i < i0 + m && j->c0 + i < j->n; i++)
      memcpy(j->C + (int64_t)j->idx[j->c0 + i] * j->N + n0, Cs + (i - i0) * w, sizeof(float) * (size_t)w);
    if (j->c0 == 0 && i0 == 0 && j->zero_dead)
      for (int64_t r = 0; r < j->M; r++)
        if (!j->live[r]) memset(j->C + r * j->N + n0, 0, sizeof(float) * (size_t)w);
  }
}

/* Piece s: rows [seg[2s], seg[2s+1]) of A and C, one library call. */
static void given_runs_range(void *ctx, int64_t begin, int64_t end) {
  const GivenJob *j = ctx;
  for (int64_t s = begin; s < end; s++) {
    int64_t r0 = j->seg[2 * s], m = j->seg[2 * s + 1] - r0, ldb = j->tb ? j->K : j->N;
    if (j->e && j->e->n > 0) {
      GemmEpilogue e = gemm_epilogue_at(j->e, r0, 0);
      gemm_lib_sgemm_epilogue(j->lib, false, j->tb, m, j->N, j->K, j->A + r0 * j->K, j->K, j->B, ldb, j->C + r0 * j->N,
                              j->N, &e);
    }
    else
      gemm_lib_sgemm(j->lib, false, j->tb, m, j->N, j->K, j->A + r0 * j->K, j->K, j->B, ldb, 0.0f, j->C + r0 * j->N,
                     j->N);
  }
}

/* The runs of live rows cut into pieces of at most `piece` rows, each
 * rounded up to a multiple of 16 rows into the dead rows after it (fewer
 * shapes for the library; those rows are computed from finite dead rows of
 * A and then hold finite values); returns the number of pieces. */
static int64_t given_pieces(const uint8_t *live, int64_t M, int64_t piece, int32_t *seg) {
  int64_t n = 0;
  for (int64_t r = 0; r < M;) {
    if (!live[r]) {
      r++;
      continue;
    }
    int64_t e = r;
    while (e < M && live[e]) e++;
    int64_t next = e; /* the next live row, or M */
    while (next < M && !live[next]) next++;
    for (int64_t s = r; s < e; s += piece) {
      int64_t end = s + piece < e ? s + piece : (s + (e - s + 15) / 16 * 16 < next ? s + (e - s + 15) / 16 * 16 : next);
      seg[2 * n] = (int32_t)s, seg[2 * n + 1] = (int32_t)end;
      n++;
    }
    r = e;
  }
  return n;
}

bool cpu_gemm_rows_into(Pool *p, GemmLib lib, const float *A, int64_t M, int64_t K, const float *B, bool trans_b,
                        int64_t N, float *C, const GemmEpilogue *e, const int32_t *idx, int64_t n, float *buf) {
  int64_t n_pad = (n + GIVEN_ROUND - 1) / GIVEN_ROUND * GIVEN_ROUND;
  GivenJob j = {.A = A, .As = buf, .K = K, .n = n, .idx = idx};
  int64_t chunk = given_chunk(n_pad, K, GIVEN_ROUND, 1);
  Shape bs = trans_b ? shape_of(2, (int)N, (int)K) : shape_of(2, (int)K, (int)N);
  for (j.c0 = 0; j.c0 < n; j.c0 += chunk) {
    /* rows rounded up within the chunk and C (fewer shapes for the
     * library; the extra rows, past n, no one reads) */
    j.cn = n_pad - j.c0 < chunk ? n_pad - j.c0 : chunk;
    if (j.c0 + j.cn > M) j.cn = M - j.c0;
    pool_parallel_for(p, j.cn, rows_grain(K), given_gather_range, &j);
    Shape as = shape_of(2, (int)j.cn, (int)K), cs = shape_of(2, (int)j.cn, (int)N);
    GemmEpilogue ec = e ? gemm_epilogue_compacted(e, idx + j.c0) : (GemmEpilogue){0};
    if (e && e->n > 0) cpu_gemm_epilogue(p, lib, buf, &as, false, B, &bs, trans_b, C + j.c0 * N, &cs, &ec);
    else cpu_gemm(p, CPU_GEMM_AUTO, lib, buf, &as, false, B, &bs, trans_b, 0.0f, C + j.c0 * N, &cs);
  }
  return chunk >= n_pad;
}

bool cpu_gemm_given_rows(Pool *p, GemmLib lib, const float *A, int64_t M, int64_t K, const float *B, bool trans_b,
                         int64_t N, float *C, const GemmEpilogue *e, const uint8_t *live, const int32_t *idx,
                         int64_t n, int64_t n_runs, int32_t *seg, float *buf, bool zero_dead) {
  if (n == 0) {
    if (zero_dead) memset(C, 0, sizeof(float) * (size_t)(M * N));
    return false;
  }
  int64_t n_pad = (n + GIVEN_ROUND - 1) / GIVEN_ROUND * GIVEN_ROUND;
  GivenJob j = {.lib = lib, .A = A, .B = B, .As = buf, .C = C, .tb = trans_b, .M = M,
                .N = N, .K = K, .n = n, .n_pad = n_pad, .live = live, .idx = idx, .e = e, .zero_dead = zero_dead};
  /* the cost of each way in rows of work, as cpu_gemm_live_rows's */
  int nt = pool_n_threads(p);
  int64_t piece = (n + 4 * nt - 1) / (4 * nt);
  piece = piece < 64 ? 64 : (piece + 15) / 16 * 16;
  double by_runs = (double)n + RUN_COST_ROWS * (double)(n_runs + n / piece);
  double by_copy = (double)n * (1.0 + COPY_COST * (double)(K + N) / (double)(K * N));
  if (!buf || by_runs < by_copy) {
    j.seg = seg;
    int64_t pieces = given_pieces(live, M, piece, seg);
    if (zero_dead) zero_dead_rows(p, C, M, N, live);
    cpu_gemm_lock(lib, 1);
    pool_parallel_for(p, pieces, 1, given_runs_range, &j);
    cpu_gemm_unlock();
    return false;
  }
  given_blocks(n_pad, N, K, pool_n_threads(p), &j.mb, &j.nb);
  j.n_col_blocks = (N + j.nb - 1) / j.nb;
  int64_t chunk = given_chunk(n_pad, K, j.mb, pool_n_threads(p));
  j.Cs = buf + chunk * K;
  for (j.c0 = 0; j.c0 < n_pad; j.c0 += chunk) {
    j.cn = n_pad - j.c0 < chunk ? n_pad - j.c0 : chunk;
    pool_parallel_for(p, j.cn, rows_grain(K), given_gather_range, &j);
    cpu_gemm_lock(lib, 1);
    pool_parallel_for(p, (j.cn + j.mb - 1) / j.mb * j.n_col_blocks, 1, given_block_range, &j);
    cpu_gemm_unlock();
  }
  return chunk >= n_pad; /* one chunk: all the live rows are in buf */
}
