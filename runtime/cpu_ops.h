/* cpu_ops.h — the CPU backend's hand-written kernels, the ones that are not
 * generated from the kernel IR: matmul on an SGEMM library (gemm_lib.h:
 * oneDNN, OpenBLAS or BLIS), also over an operand's live rows or the
 * rows a row guard gives (cpu_gemm_rows.c), gather, scatter-add,
 * concat, and a strided copy that materializes a view. Data are in host
 * memory; arithmetic is f32, indices are i32, copies move 4-byte elements
 * (f32 or i32 alike).
 *
 * Not here: argument checking against the graph (shapes are assumed to be
 * what graph/shape.c inferred; a mismatch is a bug and hits BC_ASSERT),
 * buffers or allocation (callers pass memory they own; nothing here
 * allocates), error reporting beyond returning the bad index.
 *
 * Invariants: a result depends on the pool's thread count at most, never
 * on which thread ran what (scatter-add accumulates in index order; a GEMM
 * is split only along M or N, never K, into tiles fixed by the shape and
 * the thread count), so runs on the same number of threads are
 * reproducible bit for bit. Only GEMMs cut into tiles (fewer batch GEMMs
 * than threads) can change bits with the thread count, and only under
 * kernels that round by sub-matrix (OpenBLAS's Haswell ones do). */
#ifndef BC_CPU_OPS_H
#define BC_CPU_OPS_H

#include "../graph/ir.h"
#include "gemm_lib.h"
#include "threadpool.h"

/* ---- matmul --------------------------------------------------------------
 *
 * How a GEMM uses the cores:
 *  - CPU_GEMM_POOL: the library runs single-threaded, all parallelism is the
 *    pool's: independent batch GEMMs (attention heads) are spread over the
 *    threads; with fewer batch GEMMs than threads each is cut into a grid
 *    of tiles along M and N (one per thread; the grid that packs the least
 *    A and B in total).
 *  - CPU_GEMM_BLAS: batch GEMMs run one after another, each on the
 *    library's own threads (as many as the pool has).
 *  - CPU_GEMM_AUTO: the measured rule in cpu_ops.c (cpu_gemm_choose):
 *    at present always the pool, which was as fast or faster on the BERT
 *    shapes and leaves no OpenBLAS threads spinning against the pool.
 * The library's thread count is process-global state, so cpu_gemm calls
 * take turns (a mutex). */
typedef enum { CPU_GEMM_AUTO, CPU_GEMM_POOL, CPU_GEMM_BLAS } CpuGemmPar;

/* C = op(A) op(B) + beta C, the MATMUL op of graph/ops.def exactly as
 * runtime/interp.c defines it:
 *   A (.., M, K), or (.., K, M) when trans_a
 *   B (.., K, N), or (.., N, K) when trans_b
 *   C (.., M, N), its batch dims the numpy broadcast of A's and B's
 * All three contiguous row-major. beta is 0 (overwrite; C may hold NaNs)
 * or 1 (accumulate, for fused gradient sums). When B has no batch (or
 * broadcasts over A's trailing batch dims) and A is not transposed, those
 * batch dims are folded into M: x (B, T, K) x W (K, N) is one
 * (B*T, K) x (K, N) call. p may be NULL (one thread). */
void cpu_gemm(Pool *p, CpuGemmPar par, GemmLib lib, const float *A, const Shape *a_shape, bool trans_a,
              const float *B, const Shape *b_shape, bool trans_b, float beta, float *C,
              const Shape *c_shape);

/* cpu_gemm (beta 0) of a product without batch dims once A's are folded
 * into M, and the epilogue e on C (gemm_lib.h; its pointers at C[0][0]),
 * each tile's part with the tile. */
void cpu_gemm_epilogue(Pool *p, GemmLib lib, const float *A, const Shape *a_shape, bool trans_a, const float *B,
                       const Shape *b_shape, bool trans_b, float *C, const Shape *c_shape, const GemmEpilogue *e);

/* cpu_gemm over the rows that can be nonzero (cpu_gemm_rows.c): the rows
 * of A of C = A B (A not transposed), or the K rows of C = A^T B (B not
 * transposed) where both A and B have a nonzero, found by a scan; the
 * rows a zero row of A makes are written as zeros (beta 0) or left as
 * they are (beta 1). Other GEMMs, and any with a batch dim left after
 * folding, run as cpu_gemm. The scratch is the caller's: `rows` bytes in
 * live and 2 rows + 2 ints in seg (GEMMs over more rows run densely), and
 * `floats` in buf for copying the live rows of the operands (a GEMM whose
 * copies would not fit is not compacted). given: the live rows instead of
 * the scan (a row guard's, where the rows it leaves out are zero in the
 * scanned operands). Compacted, buf starts with the live rows of the
 * gradient, in order: B's of C = A^T B, else A's; ready (with given):
 * they are there already, a GEMM before left them. Returns how it ran. */
typedef enum { CPU_ROWS_DENSE, CPU_ROWS_RUNS, CPU_ROWS_COMPACTED } CpuRowsWay;
typedef struct {
  float *buf;
  int64_t floats;
  uint8_t *live;
  int32_t *seg;
  int64_t rows;
} CpuRowsScratch;
CpuRowsWay cpu_gemm_live_rows(Pool *p, GemmLib lib, const float *A, const Shape *a_shape, bool trans_a,
                              const float *B, const Shape *b_shape, bool trans_b, float beta, float *C,
                              const Shape *c_shape, const CpuRowsScratch *s, const uint8_t *given, bool ready);

/* C (M x N) = A (M x K) B (K x N, or N x K when trans_b), then the
 * epilogue e (NULL or n = 0: none; no GEMM_EPI_ADD; e's frame is C's),
 * over the n rows idx[0..n) (ascending, in n_runs runs; live[r] marks
 * them; idx[n..M) repeat a live row, as runtime/cpu.c leaves them), the other
 * rows of C written as zeros or, next to a live run, as the product of
 * A's rows there (a row guard: runtime/cpu.c, which A's dead rows must
 * hold finite values for). Whichever way the cost model of
 * cpu_gemm_live_rows prefers:
 *  - by runs: one call per piece of a run (pieces listed in seg, 2 M + 2
 *    ints);
 *  - compacted: the live rows of A copied together (rounded up to a
 *    multiple of 32 rows; a chunk of 2M floats of them at a time), the
 *    product by blocks of rows and columns, one per item of the pool, each
 *    thread's block in cache until copied out. buf:
 *    cpu_gemm_given_rows_scratch(M, N, K, threads) floats; NULL: by runs
 *    always.
 * zero_dead false: the dead rows no one reads are left as they are (those
 * next to a live run may still be written). Returns whether it compacted
 * in one chunk: then buf starts with the n live rows of A, in order. */
bool cpu_gemm_given_rows(Pool *p, GemmLib lib, const float *A, int64_t M, int64_t K, const float *B, bool trans_b,
                         int64_t N, float *C, const GemmEpilogue *e, const uint8_t *live, const int32_t *idx,
                         int64_t n, int64_t n_runs, int32_t *seg, float *buf, bool zero_dead);
int64_t cpu_gemm_given_rows_scratch(int64_t M, int64_t N, int64_t K, int threads);
/* The first n rows of C (M x N) = A's rows idx[0..n) times B, then the
 * epilogue e (no GEMM_EPI_ADD; its masks read the rows idx says, idx as
 * above): a compacted product written in place (a
 * row guard's dead rows no kernel reads: runtime/cpu.c), its rows past n
 * (up to a multiple of 32, within M) anything. A's rows are copied into
 * buf (cpu_gemm_given_rows_scratch floats) a chunk at a time; returns
 * whether in one: then buf starts with the n rows, in order. */
bool cpu_gemm_rows_into(Pool *p, GemmLib lib, const float *A, int64_t M, int64_t K, const float *B, bool trans_b,
                        int64_t N, float *C, const GemmEpilogue *e, const int32_t *idx, int64_t n, float *buf);

/* For kernels that call the GEMM library themselves from the pool's
 * threads: takes cpu_gemm's turn and sets the library's threads per
 * calling thread to n; cpu_gemm_unlock gives the turn back. */
void cpu_gemm_lock(GemmLib lib, int n);
void cpu_gemm_unlock(void);

/* The mode CPU_GEMM_AUTO picks for n_batch independent (m, n, k) GEMMs on
 * n_threads threads (after folding batch dims into M). */
CpuGemmPar cpu_gemm_choose(int64_t n_batch, int64_t m, int64_t n, int64_t k, int n_threads);

/* ---- rows ----------------------------------------------------------------
 *
 * out (n_idx, row) = table (n_rows, row)[idx (n_idx)]: rows of the table
 * (row = product of the table's dims after the first), 4-byte elements.
 * False when some idx[i] is outside [0, n_rows): *bad_pos gets the first
 * such i and out is untouched. */
bool cpu_gather(Pool *p, const void *table, int64_t n_rows, int64_t row, const int32_t *idx,
                int64_t n_idx, void *out, int64_t *bad_pos);

/* out (n_rows, row) = zeros, then out[idx[i]] += upd[i] for i = 0, 1, ...
 * (upd is (n_idx, row)). Each element sums its updates in index order,
 * whatever the thread count, so results are bit-for-bit reproducible.
 * False when some idx[i] is outside [0, n_rows): *bad_pos gets the first
 * such i and out is untouched. */
bool cpu_scatter_add(Pool *p, const int32_t *idx, int64_t n_idx, const float *upd, int64_t n_rows,
                     int64_t row, float *out, int64_t *bad_pos);

/* out = concat(in[0..n_in), axis): out_shape is the result; input k has
 * out_shape's dims except in_len[k] along `axis`. 4-byte elements, all
 * contiguous; inputs must not overlap out. */
void cpu_concat(Pool *p, int n_in, const void *const *in, const int64_t *in_len,
                const Shape *out_shape, int axis, void *out);

/* out (shape) contiguous = the view of `in` with element offset `offset`
 * and stride[i] elements per step along axis i (0 = broadcast; negative
 * allowed): out[i0, .., ir] = in[offset + sum_j i_j * stride[j]]. 4-byte
 * elements; in and out must not overlap. */
void cpu_copy_strided(Pool *p, const void *in, int64_t offset, const int64_t *stride,
                      const Shape *shape, void *out);

#endif
