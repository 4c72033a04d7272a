/* cpu_attention.c — the cpu backend's fused attention (attention.h for the
 * arithmetic): the pool runs one (example, head) at a time per thread; its
 * [Tq, Tk] score block lives in a per-thread scratch buffer (in cache at
 * BERT's lengths), never in the arena. The GEMMs are single-threaded calls
 * of the GEMM library reading q, k, v and writing the result in place in
 * their [B, T, features] layout (leading dimension F), so no head is ever
 * permuted into a copy. The backward recomputes the weights and regenerates
 * the dropout mask from the same Philox stream.
 *
 * Speed: the row loops (scale, mask, max, exp, sum, dropout) are written
 * to vectorize; this file is compiled with -O3 and they are cloned for
 * AVX-512 and AVX2 (target_clones: the loader picks the widest the CPU
 * has), since the project's baseline ISA is SSE2. Their exp is a
 * polynomial (|rel err| < 2e-7), Philox is computed 16 lanes at a time.
 *
 * Invariants: the same bits for the same inputs on any thread count (each
 * (example, head) is computed by one thread, alone, in a fixed order). */
#include "cpu_attention.h"

#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define ROW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROW_CLONES
#endif

/* exp for x <= 0 (scores minus their row maximum): 2^n * p(r), r in
 * [-ln2/2, ln2/2], degree-6 Taylor polynomial; below -87 it is 0. */
static inline float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  float t = x * 1.44269504088896341f + 12582912.0f; /* round to nearest via 1.5 * 2^23 */
  float n = t - 12582912.0f;
  float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  int32_t ti;
  memcpy(&ti, &t, 4);
  int32_t e = (ti - 0x4B400000 + 127) << 23; /* 2^n */
  float s;
  memcpy(&s, &e, 4);
  return p * s;
}

/* The top 24 bits of Philox4x32-10's first word for counter (index, op
 * key, step), as philox_uniform, for n consecutive indices. */
ROW_CLONES static void philox_row(uint64_t seed, uint32_t step, uint32_t key, uint64_t index0, int64_t stride,
                                  int64_t n, uint32_t *bits) {
  const uint32_t k0s = (uint32_t)seed, k1s = (uint32_t)(seed >> 32);
  for (int64_t j = 0; j < n; j++) {
    uint64_t ix = index0 + (uint64_t)(j * stride);
    uint32_t c0 = (uint32_t)ix, c1 = (uint32_t)(ix >> 32), c2 = key, c3 = step, k0 = k0s, k1 = k1s;
    for (int r = 0; r < 10; r++) {
      uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
      uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
      c1 = (uint32_t)p1;
      c3 = (uint32_t)p0;
      c0 = n0;
      c2 = n2;
      k0 += PHILOX_W0; /* before the next round, as Random123 */
      k1 += PHILOX_W1;
    }
    bits[j] = c0 >> 8;
  }
}

/* One row of scores s[0..tk) (q k^T, unscaled) into weights: scaled by
 * 1/sqrt_d, keys >= vl at -1e6, softmax. */
ROW_CLONES static void softmax_row(float *s, int64_t tk, int64_t vl, float sqrt_d) {
  float m = -INFINITY;
  for (int64_t j = 0; j < tk; j++) {
    float x = j < vl ? s[j] / sqrt_d : -1e6f;
    s[j] = x;
    m = x > m ? x : m;
  }
  float sum = 0;
  for (int64_t j = 0; j < tk; j++) {
    float e = exp_nonpos(s[j] - m);
    s[j] = e;
    sum += e;
  }
  for (int64_t j = 0; j < tk; j++) s[j] = s[j] / sum;
}

/* a[j] = w[j] * keep[j] / (1 - p), keep from the dropout bits. */
ROW_CLONES static void dropout_row(const float *w, const uint32_t *bits, int64_t tk, uint32_t threshold, float scale,
                                   float *a) {
  for (int64_t j = 0; j < tk; j++) a[j] = bits[j] < threshold ? 0.0f : w[j] * scale;
}

/* d S row from W, d W (in ds): W (d W - sum(W d W)) / sqrt_d, 0 at masked
 * keys. */
ROW_CLONES static void softmax_grad_row(const float *w, float *ds, int64_t tk, int64_t vl, float sqrt_d) {
  float dot = 0;
  for (int64_t j = 0; j < tk; j++) dot += w[j] * ds[j];
  for (int64_t j = 0; j < tk; j++) ds[j] = j < vl ? w[j] * (ds[j] - dot) / sqrt_d : 0.0f;
}

typedef struct {
  const AttnDims *a;
  GemmLib lib;
  const float *q, *k, *v, *dout;
  const int32_t *vl;
  float *out;
  float *scratch; /* per thread: scratch_floats */
  int64_t scratch_floats;
  float sqrt_d, keep_scale;
  uint32_t threshold; /* dropout: 24-bit uniforms below it are dropped */
} AttnJob;

/* The weights W of (b, h) into w (Tq x Tk), and when there is dropout the
 * dropped and scaled A into a (else a = w). */
static void weights(const AttnJob *j, int64_t b, int64_t h, float *w, float **a, uint32_t *bits) {
  const AttnDims *d = j->a;
  const float *qh = j->q + b * d->Tq * d->F + h * d->d, *kh = j->k + b * d->Tk * d->F + h * d->d;
  gemm_lib_sgemm(j->lib, false, true, d->Tq, d->Tk, d->d, qh, d->F, kh, d->F, 0.0f, w, d->Tk);
  int64_t vl = j->vl[b];
  for (int64_t i = 0; i < d->Tq; i++) softmax_row(w + i * d->Tk, d->Tk, vl, j->sqrt_d);
  if (d->p <= 0) {
    *a = w;
    return;
  }
  for (int64_t i = 0; i < d->Tq; i++) {
    int64_t ix = b * d->stride[0] + h * d->stride[1] + i * d->stride[2];
    philox_row(d->seed, d->step, d->key, (uint64_t)(ix + d->example_offset * d->per_example), d->stride[3], d->Tk,
               bits);
    dropout_row(w + i * d->Tk, bits, d->Tk, j->threshold, j->keep_scale, *a + i * d->Tk);
  }
}

static void forward_range(void *ctx, int64_t begin, int64_t end) {
  const AttnJob *j = ctx;
  const AttnDims *d = j->a;
  float *w = j->scratch + pool_thread_index() * j->scratch_floats, *a = w + d->Tq * d->Tk;
  uint32_t *bits = (uint32_t *)(a + d->Tq * d->Tk);
  for (int64_t it = begin; it < end; it++) {
    int64_t b = it / d->H, h = it % d->H;
    float *ab = a;
    weights(j, b, h, w, &ab, bits);
    const float *vh = j->v + b * d->Tk * d->F + h * d->d;
    gemm_lib_sgemm(j->lib, false, false, d->Tq, d->d, d->Tk, ab, d->Tk, vh, d->F, 0.0f,
                   j->out + b * d->Tq * d->F + h * d->d, d->F);
  }
}

static void backward_range(void *ctx, int64_t begin, int64_t end) {
  const AttnJob *j = ctx;
  const AttnDims *d = j->a;
  int64_t blk = d->Tq * d->Tk, T = d->Tq + 2 * d->Tk;
  float *w = j->scratch + pool_thread_index() * j->scratch_floats, *a = w + blk, *ds = a + blk;
  uint32_t *bits = (uint32_t *)(ds + blk);
  for (int64_t it = begin; it < end; it++) {
    int64_t b = it / d->H, h = it % d->H;
    float *ab = a;
    weights(j, b, h, w, &ab, bits);
    const float *qh = j->q + b * d->Tq * d->F + h * d->d, *kh = j->k + b * d->Tk * d->F + h * d->d;
    const float *vh = j->v + b * d->Tk * d->F + h * d->d, *doh = j->dout + b * d->Tq * d->F + h * d->d;
    float *dq = j->out + b * T * d->F + h * d->d, *dk = dq + d->Tq * d->F, *dv = dk + d->Tk * d->F;
    /* d v = A^T d out; d A = d out v^T */
    gemm_lib_sgemm(j->lib, true, false, d->Tk, d->d, d->Tq, ab, d->Tk, doh, d->F, 0.0f, dv, d->F);
    gemm_lib_sgemm(j->lib, false, true, d->Tq, d->Tk, d->d, doh, d->F, vh, d->F, 0.0f, ds, d->Tk);
    if (d->p > 0) /* d W = d A * keep / (1 - p): the mask again, from A = W * keep / (1 - p) */
      for (int64_t x = 0; x < blk; x++) ds[x] = ab[x] == 0.0f ? 0.0f : ds[x] * j->keep_scale;
    int64_t vl = j->vl[b];
    for (int64_t i = 0; i < d->Tq; i++) softmax_grad_row(w + i * d->Tk, ds + i * d->Tk, d->Tk, vl, j->sqrt_d);
    /* d q = d S k; d k = d S^T q */
    gemm_lib_sgemm(j->lib, false, false, d->Tq, d->d, d->Tk, ds, d->Tk, kh, d->F, 0.0f, dq, d->F);
    gemm_lib_sgemm(j->lib, true, false, d->Tk, d->d, d->Tq, ds, d->Tk, qh, d->F, 0.0f, dk, d->F);
  }
}

void cpu_attention(Pool *p, GemmLib lib, const AttnDims *a, const float *q, const float *k, const float *v,
                   const int32_t *valid_len, const float *dout, float *out) {
  if (a->B * a->H == 0) return;
  int n_threads = pool_n_threads(p);
  AttnJob j = {.a = a, .lib = lib, .q = q, .k = k, .v = v, .dout = dout, .vl = valid_len, .out = out};
  j.sqrt_d = sqrtf((float)a->d);
  j.keep_scale = (float)a->keep_scale;
  /* u < p with u = bits * 2^-24 exactly: bits < p * 2^24, rounded up */
  j.threshold = (uint32_t)ceil(a->p * 16777216.0);
  int64_t blk = a->Tq * a->Tk;
  j.scratch_floats = 3 * blk + a->Tk + 16; /* w, a, d S, one row of dropout bits */
  j.scratch = malloc(sizeof(float) * (size_t)(j.scratch_floats * n_threads));
  BC_ASSERT(j.scratch);
  cpu_gemm_lock(lib, 1);
  pool_parallel_for(p, a->B * a->H, 1, dout ? backward_range : forward_range, &j);
  cpu_gemm_unlock();
  free(j.scratch);
}
