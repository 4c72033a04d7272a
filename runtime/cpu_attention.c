/* cpu_attention.c — the cpu backend's fused attention (attention.h for the
 * arithmetic): each thread of the pool claims one (example, head) at a
 * time, the examples with the most live keys first (the last units to
 * finish are then the shortest, and no thread waits long for another); its
 * [Tq, Tk] score block lives in a per-thread scratch buffer (in cache at
 * BERT's lengths), never in the arena. The GEMMs are single-threaded calls
 * of the GEMM library reading q, k, v and writing the result in place in
 * their [B, T, features] layout (leading dimension F), so no head is ever
 * permuted into a copy. The backward recomputes the weights and regenerates
 * the dropout mask from the same Philox stream. Only the keys an example's
 * valid length leaves (rounded up to 16) are computed: a masked key's
 * weight is exactly 0, and its rows of d k and d v are written as zeros.
 * The backward leaves out the query rows whose d out is zero (padding;
 * the tokens no loss reads, as in pretraining's last layer all but <cls>
 * and the masked positions): they add nothing to d k and d v, and their d
 * q is zero.
 *
 * Speed: the row loops (scale, mask, max, exp, sum) work on 16-lane
 * vectors with partial sums in a fixed order, cloned for AVX-512 and AVX2
 * (target_clones: the loader picks the widest the CPU has), since the
 * project's baseline ISA is SSE2; their exp is a polynomial (|rel err| <
 * 2e-7). With AVX-512, a row's dropout runs 16 Philox counters (64
 * weights) at a time and applies their uniforms as a mask in registers,
 * the row's ragged end included; else one counter at a time.
 *
 * Invariants: the same bits for the same inputs on any thread count (each
 * (example, head) is computed by one thread, alone, in a fixed order). A
 * backward unit reads its rows of q, k and v before it writes the same
 * rows of its output, d q (kept in the scratch until d k has read q), d k
 * and d v: the memory plan may put the output over q | k | v. */
#include "cpu_attention.h"

#include "philox.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define ROW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROW_CLONES
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_PHILOX16 1
#endif

/* 16 lanes: GCC lowers them to the clone's vector width (1 AVX-512
 * register, 2 AVX2, 4 SSE). */
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
#define LANES 16

static inline v16f vload(const float *p) {
  v16f v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline void vstore(float *p, v16f v) { memcpy(p, &v, sizeof v); }
static inline v16f vsplat(float x) { return (v16f){0} + x; }
static inline v16f vsel(v16i mask, v16f a, v16f b) { return (v16f)(((v16i)a & mask) | ((v16i)b & ~mask)); }
static inline v16f vmax(v16f a, v16f b) { return vsel(a > b, a, b); }
/* Horizontal sum and max as trees of halves (16 -> 8 -> 4 -> 2 -> 1): a
 * few dependent vector ops, where one lane at a time was 15 dependent
 * scalar ones per row. The sum's order is fixed (deterministic); a max
 * is the same in any order. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
static inline v8f half8(v16f v, int hi) {
  v8f r;
  memcpy(&r, (const char *)&v + (hi ? 32 : 0), sizeof r);
  return r;
}
static inline v4f half4(v8f v, int hi) {
  v4f r;
  memcpy(&r, (const char *)&v + (hi ? 16 : 0), sizeof r);
  return r;
}
static inline float hsum(v16f v) {
  v8f s8 = half8(v, 0) + half8(v, 1);
  v4f s4 = half4(s8, 0) + half4(s8, 1);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int32_t v4i __attribute__((vector_size(16)));
static inline float hmax(v16f v) {
  v8f a = half8(v, 0), b = half8(v, 1);
  v8i k8 = a > b;
  v8f m8 = (v8f)(((v8i)a & k8) | ((v8i)b & ~k8));
  v4f c = half4(m8, 0), d = half4(m8, 1);
  v4i k4 = c > d;
  v4f m4 = (v4f)(((v4i)c & k4) | ((v4i)d & ~k4));
  float x = m4[0] > m4[2] ? m4[0] : m4[2], y = m4[1] > m4[3] ? m4[1] : m4[3];
  return x > y ? x : y;
}

/* exp for x <= 0 (scores minus their row maximum): 2^n * p(r), r in
 * [-ln2/2, ln2/2], degree-6 Taylor polynomial (|rel err| < 2e-7); below
 * -87 it is 0. The scalar form does the same arithmetic for the tails. */
#define EXP_NONPOS(T, x, splat, to_int, from_bits)                                                             \
  do {                                                                                                         \
    T t_ = x * splat(1.44269504088896341f) + splat(12582912.0f); /* round to nearest via 1.5 * 2^23 */        \
    T n_ = t_ - splat(12582912.0f);                                                                            \
    T r_ = x - n_ * splat(0.693359375f) - n_ * splat(-2.12194440e-4f);                                         \
    T p_ = splat(1.0f / 720);                                                                                  \
    p_ = p_ * r_ + splat(1.0f / 120);                                                                          \
    p_ = p_ * r_ + splat(1.0f / 24);                                                                           \
    p_ = p_ * r_ + splat(1.0f / 6);                                                                            \
    p_ = p_ * r_ + splat(0.5f);                                                                                \
    p_ = p_ * r_ + splat(1.0f);                                                                                \
    p_ = p_ * r_ + splat(1.0f);                                                                                \
    x = p_ * from_bits((to_int(t_) - 0x4B400000 + 127) << 23);                                                 \
  } while (0)
static inline float f_splat(float x) { return x; }
static inline int32_t f_bits(float x) {
  int32_t i;
  memcpy(&i, &x, 4);
  return i;
}
static inline float f_from(int32_t i) {
  float x;
  memcpy(&x, &i, 4);
  return x;
}
static inline v16i v_bits(v16f x) { return (v16i)x; }
static inline v16f v_from(v16i i) { return (v16f)i; }
static inline float exp_nonpos(float x) {
  bool under = x < -87.0f;
  x = under ? -87.0f : x;
  EXP_NONPOS(float, x, f_splat, f_bits, f_from);
  return under ? 0.0f : x;
}
static inline v16f vexp_nonpos(v16f x) {
  v16i under = x < vsplat(-87.0f);
  x = vmax(x, vsplat(-87.0f));
  EXP_NONPOS(v16f, x, vsplat, v_bits, v_from);
  return vsel(under, vsplat(0.0f), x);
}

#ifdef HAVE_PHILOX16
/* A row's dropout (dropout_row) for stream indices ix0 + j, j in [0, n),
 * ix0 a multiple of 4: 16 Philox counters at once give 64 uniforms; the
 * 32 x 32 -> 64-bit products of even and odd lanes are one vpmuludq each.
 * The counters' four words are transposed into index order, compared with
 * the threshold and applied as a mask (the last block's extra uniforms
 * unused). Returns how many indices it did: all n, or fewer (a multiple
 * of 64) where the counter's low word would carry, which the scalar path
 * then does. */
__attribute__((target("avx512f"))) static int64_t dropout_avx512(const AttnDims *a, uint64_t ix0, int64_t n,
                                                                 uint32_t threshold, float scale, const float *w,
                                                                 float *out) {
  const __m512i m0 = _mm512_set1_epi64(PHILOX_M0), m1 = _mm512_set1_epi64(PHILOX_M1);
  const __m512i lo32 = _mm512_set1_epi64(0xFFFFFFFFll), thr = _mm512_set1_epi32((int)threshold);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t j = 0;
  for (; j < n; j += 64) {
    uint64_t ctr = (ix0 + (uint64_t)j) >> 2;
    if ((uint32_t)ctr > 0xFFFFFFF0u) break; /* the low word would carry: the scalar path */
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)ctr), lane);
    __m512i c1 = _mm512_set1_epi32((int)(uint32_t)(ctr >> 32)), c2 = _mm512_set1_epi32((int)a->key);
    __m512i c3 = _mm512_set1_epi32((int)a->step);
    uint32_t k0 = (uint32_t)a->seed, k1 = (uint32_t)(a->seed >> 32);
    for (int r = 0; r < 10; r++) {
      __m512i e0 = _mm512_mul_epu32(c0, m0), o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      __m512i e1 = _mm512_mul_epu32(c2, m1), o1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      __m512i lo0 = _mm512_or_si512(_mm512_and_si512(e0, lo32), _mm512_slli_epi64(o0, 32));
      __m512i hi0 = _mm512_or_si512(_mm512_srli_epi64(e0, 32), _mm512_andnot_si512(lo32, o0));
      __m512i lo1 = _mm512_or_si512(_mm512_and_si512(e1, lo32), _mm512_slli_epi64(o1, 32));
      __m512i hi1 = _mm512_or_si512(_mm512_srli_epi64(e1, 32), _mm512_andnot_si512(lo32, o1));
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
      c1 = lo1;
      c3 = lo0;
      k0 += PHILOX_W0; /* before the next round, as Random123 */
      k1 += PHILOX_W1;
    }
    /* Index 4l + x is word x of counter l (lane l of cx). Per 128-bit
     * lane L, the 4 x 4 transpose gives r_m = counter 4L + m's words;
     * then vector q (indices 16q..16q+15) is lane q of r0, r1, r2, r3. */
    __m512i t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpacklo_epi32(c2, c3);
    __m512i t2 = _mm512_unpackhi_epi32(c0, c1), t3 = _mm512_unpackhi_epi32(c2, c3);
    __m512i r0 = _mm512_unpacklo_epi64(t0, t1), r1 = _mm512_unpackhi_epi64(t0, t1);
    __m512i r2 = _mm512_unpacklo_epi64(t2, t3), r3 = _mm512_unpackhi_epi64(t2, t3);
    __m512i s0 = _mm512_shuffle_i32x4(r0, r1, 0x44), s1 = _mm512_shuffle_i32x4(r2, r3, 0x44);
    __m512i s2 = _mm512_shuffle_i32x4(r0, r1, 0xEE), s3 = _mm512_shuffle_i32x4(r2, r3, 0xEE);
    __m512i words[4] = {_mm512_shuffle_i32x4(s0, s1, 0x88), _mm512_shuffle_i32x4(s0, s1, 0xDD),
                        _mm512_shuffle_i32x4(s2, s3, 0x88), _mm512_shuffle_i32x4(s2, s3, 0xDD)};
    for (int q = 0; q < 4 && j + 16 * q < n; q++) {
      int64_t at = j + 16 * q, left = n - at;
      __mmask16 in = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
      __mmask16 keep = _mm512_mask_cmpge_epu32_mask(in, _mm512_srli_epi32(words[q], 8), thr);
      __m512 x = _mm512_maskz_loadu_ps(in, w + at);
      _mm512_mask_storeu_ps(out + at, in, _mm512_maskz_mul_ps(keep, x, vscale));
    }
  }
  return j < n ? j : n;
}
#endif

/* a[j] = w[j] * keep[j] / (1 - p), keep from the dropout stream's
 * uniforms bits[j]. */
ROW_CLONES static void dropout_bits(const float *w, const uint32_t *bits, int64_t n, uint32_t threshold, float scale,
                                    float *a) {
  for (int64_t j = 0; j < n; j++) a[j] = bits[j] < threshold ? 0.0f : w[j] * scale;
}

/* One row's dropout: a[j] = w[j] * keep / (1 - p) for stream indices
 * ix0 + j, j in [0, n); bits: n words of scratch for the scalar path. */
static void dropout_row(const AttnDims *d, uint64_t ix0, const float *w, int64_t n, uint32_t threshold, float scale,
                        float *a, uint32_t *bits) {
  int64_t j = 0;
#ifdef HAVE_PHILOX16
  static int avx512 = -1;
  if (avx512 < 0) avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) {
    j = (int64_t)((4 - (ix0 & 3)) & 3); /* up to a counter's first word */
    j = j < n ? j : n;
    attn_bits(d, ix0, j, bits);
    dropout_bits(w, bits, j, threshold, scale, a);
    j += dropout_avx512(d, ix0 + (uint64_t)j, n - j, threshold, scale, w + j, a + j);
  }
#endif
  attn_bits(d, ix0 + (uint64_t)j, n - j, bits + j);
  dropout_bits(w + j, bits + j, n - j, threshold, scale, a + j);
}

/* x / sqrt_d, as a product where that is exact: sqrt_d a power of two
 * (d = 64: 8), whose reciprocal inv is exact too. */
#define SCALED(x, sqrt_d, inv, splat) ((inv) != 0.0f ? (x) * splat(inv) : (x) / splat(sqrt_d))

/* The reciprocal of sqrt_d when it is a power of two, else 0. */
static float exact_inverse(float sqrt_d) {
  int e;
  return frexpf(sqrt_d, &e) == 0.5f ? 1.0f / sqrt_d : 0.0f;
}

/* One row of scores s[0..tk) (q k^T, unscaled) into weights: divided by
 * sqrt_d (inv_sqrt_d: exact_inverse), keys >= vl at -1e6, softmax. */
ROW_CLONES static void softmax_row(float *s, int64_t tk, int64_t vl, float sqrt_d, float inv_sqrt_d) {
  int64_t j = 0;
  v16f vm = vsplat(-INFINITY);
  for (; j + LANES <= tk; j += LANES) {
    v16i idx = (v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + (int32_t)j;
    v16f x = vsel(idx < (int32_t)(vl < tk ? vl : tk), SCALED(vload(s + j), sqrt_d, inv_sqrt_d, vsplat), vsplat(-1e6f));
    vstore(s + j, x);
    vm = vmax(vm, x);
  }
  float m = hmax(vm);
  for (; j < tk; j++) {
    float x = j < vl ? SCALED(s[j], sqrt_d, inv_sqrt_d, f_splat) : -1e6f;
    s[j] = x;
    m = x > m ? x : m;
  }
  v16f vs = vsplat(0.0f);
  for (j = 0; j + LANES <= tk; j += LANES) {
    v16f e = vexp_nonpos(vload(s + j) - m);
    vstore(s + j, e);
    vs += e;
  }
  float sum = hsum(vs);
  for (; j < tk; j++) sum += s[j] = exp_nonpos(s[j] - m);
  float inv = 1.0f / sum; /* one rounding more than dividing: within the op's tolerance */
  for (j = 0; j + LANES <= tk; j += LANES) vstore(s + j, vload(s + j) * inv);
  for (; j < tk; j++) s[j] = s[j] * inv;
}

/* d S row from W and d A (in ds), with A the dropped weights (a == w
 * without dropout): d W = d A * keep / (1 - p) (0 where A is: dropped, or
 * a weight of 0, whose d S is 0 anyway), then
 * d S = W (d W - sum(W d W)) / sqrt_d, 0 at masked keys. */
ROW_CLONES static void softmax_grad_row(const float *w, const float *a, float keep_scale, float *ds, int64_t tk,
                                        int64_t vl, float sqrt_d, float inv) {
  if (a != w)
    for (int64_t j = 0; j < tk; j++) ds[j] = a[j] == 0.0f ? 0.0f : ds[j] * keep_scale;
  int64_t j = 0;
  v16f vd = vsplat(0.0f);
  for (; j + LANES <= tk; j += LANES) vd += vload(w + j) * vload(ds + j);
  float dot = hsum(vd);
  for (; j < tk; j++) dot += w[j] * ds[j];
  for (j = 0; j < tk; j++) ds[j] = j < vl ? SCALED(w[j] * (ds[j] - dot), sqrt_d, inv, f_splat) : 0.0f;
}

typedef struct {
  const AttnDims *a;
  GemmLib lib;
  const float *q, *k, *v, *dout;
  const int32_t *vl;
  float *out;
  float *scratch; /* per thread: scratch_floats */
  int64_t scratch_floats;
  float sqrt_d, inv_sqrt_d, keep_scale; /* inv_sqrt_d: exact_inverse */
  uint32_t threshold; /* dropout: 24-bit uniforms below it are dropped */
  bool all_queries;   /* backward: every query row, also those whose d out is zero */
  bool over_inputs;   /* backward: the output's rows lie over q | k | v (passes/memplan.c) */
  const uint8_t *live_q; /* forward: the query rows (b * Tq + t) whose output is read; NULL: all */
  const int32_t *order; /* the (example, head) units, b * H + h, longest first */
  atomic_llong next;    /* the next unit of order to claim */
} AttnJob;

/* The GEMM libraries' kernels are slower on a ragged number of columns:
 * the live keys are rounded up to a multiple of this (the extra ones
 * masked, their weights 0). */
enum { LIVE_KEYS_ALIGN = 16 };

/* The keys of example b that weigh anything: its first valid_len; all Tk
 * when it has none (every score is then -1e6 and the weights uniform). A
 * masked key's weight is exactly 0 otherwise (exp of -1e6 less the row's
 * maximum), and so are its terms in out, d q, and its rows of d k and d v:
 * the kernels compute the first kv columns of each [Tq, Tk] block only. */
static int64_t live_keys(const AttnJob *j, int64_t b) {
  int64_t vl = j->vl[b], tk = j->a->Tk, kv = (vl + LIVE_KEYS_ALIGN - 1) / LIVE_KEYS_ALIGN * LIVE_KEYS_ALIGN;
  return vl <= 0 || kv >= tk ? tk : kv;
}

/* The weights W of (b, h) for tq query rows (q: their first, ldq apart;
 * rows[i] the query row of row i, NULL: i) into w (a row of Tk each, the
 * first kv columns), and when there is dropout the dropped and scaled A
 * into a (else a = w). */
static void weights(const AttnJob *j, int64_t b, int64_t h, const float *q, int64_t ldq, int64_t tq,
                    const int32_t *rows, int64_t kv, float *w, float **a, uint32_t *bits) {
  const AttnDims *d = j->a;
  const float *kh = j->k + b * d->Tk * d->F + h * d->d;
  gemm_lib_sgemm(j->lib, false, true, tq, kv, d->d, q, ldq, kh, d->F, 0.0f, w, d->Tk);
  int64_t vl = j->vl[b];
  for (int64_t i = 0; i < tq; i++) softmax_row(w + i * d->Tk, kv, vl, j->sqrt_d, j->inv_sqrt_d);
  if (d->p <= 0) {
    *a = w;
    return;
  }
  for (int64_t i = 0; i < tq; i++) {
    dropout_row(d, attn_index(d, b, h, rows ? rows[i] : i, 0), w + i * d->Tk, kv, j->threshold, j->keep_scale,
                *a + i * d->Tk, bits);
  }
}

/* Rows [from, n) of a [n, d] block at stride F: zeros. */
static void zero_rows(float *x, int64_t from, int64_t n, int64_t d, int64_t F) {
  for (int64_t r = from; r < n; r++) memset(x + r * F, 0, sizeof(float) * (size_t)d);
}

/* Copies rows[0..n) of a [., d] block at stride F into a dense [n, d]
 * block (gather), or back (scatter: from the dense block). */
static void gather_rows(const float *x, int64_t F, const int32_t *rows, int64_t n, int64_t d, float *out) {
  for (int64_t i = 0; i < n; i++) memcpy(out + i * d, x + rows[i] * F, sizeof(float) * (size_t)d);
}
static void scatter_rows(const float *x, const int32_t *rows, int64_t n, int64_t d, float *out, int64_t F) {
  for (int64_t i = 0; i < n; i++) memcpy(out + rows[i] * F, x + i * d, sizeof(float) * (size_t)d);
}

/* Unit it = b * H + h of the forward, in scratch: W, A, a row of bits,
 * then (query rows compacted) q and out rows and their indices. With
 * live_q, the live query rows only, the others' outputs zero: the rows up
 * to the last live one in place (the dead among them zeroed after), or,
 * where the live are few (under 3/4 of those), copied together first. */
static void forward_unit(const AttnJob *j, int64_t it, float *scratch) {
  const AttnDims *d = j->a;
  float *w = scratch, *a = w + d->Tq * d->Tk;
  uint32_t *bits = (uint32_t *)(a + d->Tq * d->Tk);
  float *qc = (float *)(bits + d->Tk + 16), *oc = qc + d->Tq * d->d;
  int32_t *rows = (int32_t *)(oc + 2 * d->Tq * d->d);
  int64_t b = it / d->H, h = it % d->H, kv = live_keys(j, b), tq = d->Tq, n = d->Tq;
  const uint8_t *live = j->live_q ? j->live_q + b * d->Tq : NULL;
  if (live) {
    while (tq > 0 && !live[tq - 1]) tq--;
    n = 0;
    for (int64_t i = 0; i < tq; i++)
      if (live[i]) rows[n++] = (int32_t)i;
  }
  const float *qh = j->q + b * d->Tq * d->F + h * d->d, *vh = j->v + b * d->Tk * d->F + h * d->d;
  float *out = j->out + b * d->Tq * d->F + h * d->d;
  bool compact = 4 * n < 3 * tq;
  zero_rows(out, compact ? 0 : tq, d->Tq, d->d, d->F);
  if (n == 0) return;
  const float *q = qh;
  int64_t ld = d->F, m = tq;
  if (compact) {
    gather_rows(qh, d->F, rows, n, d->d, qc);
    q = qc, ld = d->d, m = n;
  }
  float *ab = a;
  weights(j, b, h, q, ld, m, compact ? rows : NULL, kv, w, &ab, bits);
  gemm_lib_sgemm(j->lib, false, false, m, d->d, kv, ab, d->Tk, vh, d->F, 0.0f, compact ? oc : out,
                 compact ? d->d : d->F);
  if (compact) scatter_rows(oc, rows, n, d->d, out, d->F);
  for (int64_t i = 0; !compact && live && i < tq; i++)
    if (!live[i]) memset(out + i * d->F, 0, sizeof(float) * (size_t)d->d);
}

/* Whether row x[0..d) has an element other than +-0. */
static bool row_live(const float *x, int64_t d) {
  uint32_t any = 0;
  for (int64_t c = 0; c < d; c++) {
    uint32_t u;
    memcpy(&u, x + c, sizeof u);
    any |= u << 1; /* -0 is zero too */
  }
  return any != 0;
}

/* Unit it = b * H + h of the backward, in scratch: W, A, d S, a row of
 * bits, then (query rows compacted) q, d out and d q rows and their
 * indices. A query row whose d out is zero adds nothing to d k and d v
 * and has a zero d q, so only the others are computed: the rows up to the
 * last live one in place, or, where they are few (under 3/4 of those),
 * copied together first. */
static void backward_unit(const AttnJob *j, int64_t it, float *scratch) {
  const AttnDims *d = j->a;
  int64_t blk = d->Tq * d->Tk;
  float *w = scratch, *a = w + blk, *ds = a + blk;
  uint32_t *bits = (uint32_t *)(ds + blk);
  float *qc = (float *)(bits + d->Tk + 16), *doc = qc + d->Tq * d->d, *dqc = doc + d->Tq * d->d;
  int32_t *rows = (int32_t *)(dqc + d->Tq * d->d);
  int64_t b = it / d->H, h = it % d->H, kv = live_keys(j, b);
  const float *qh = j->q + b * d->Tq * d->F + h * d->d, *kh = j->k + b * d->Tk * d->F + h * d->d;
  const float *vh = j->v + b * d->Tk * d->F + h * d->d, *doh = j->dout + b * d->Tq * d->F + h * d->d;
  float *dq = j->out + b * d->Tq * d->F + h * d->d;
  float *dk = j->out + (d->B * d->Tq + b * d->Tk) * d->F + h * d->d, *dv = dk + d->B * d->Tk * d->F;
  int64_t tq = d->Tq, n = d->Tq;
  if (!j->all_queries) {
    while (tq > 0 && !row_live(doh + (tq - 1) * d->F, d->d)) tq--;
    n = 0;
    for (int64_t i = 0; i < tq; i++)
      if (i == tq - 1 || row_live(doh + i * d->F, d->d)) rows[n++] = (int32_t)i;
  }
  zero_rows(dq, tq, d->Tq, d->d, d->F);
  if (tq == 0) {
    zero_rows(dk, 0, d->Tk, d->d, d->F);
    zero_rows(dv, 0, d->Tk, d->d, d->F);
    return;
  }
  /* the rows computed: the first tq in place, or the n live ones copied */
  bool compact = 4 * n < 3 * tq;
  const float *q = qh, *dout = doh;
  int64_t ld = d->F, m = tq;
  float *dqm = dq;
  if (compact) {
    gather_rows(qh, d->F, rows, n, d->d, qc);
    gather_rows(doh, d->F, rows, n, d->d, doc);
    zero_rows(dq, 0, tq, d->d, d->F);
    q = qc, dout = doc, ld = d->d, m = n, dqm = dqc;
  }
  /* over q: d q waits in the scratch until d k has read q */
  bool dq_aside = compact || j->over_inputs;
  if (dq_aside && !compact) dqm = dqc;
  float *ab = a;
  weights(j, b, h, q, ld, m, compact ? rows : NULL, kv, w, &ab, bits);
  /* d A = d out v^T, then d v = A^T d out (over v: after v's last read) */
  gemm_lib_sgemm(j->lib, false, true, m, kv, d->d, dout, ld, vh, d->F, 0.0f, ds, d->Tk);
  gemm_lib_sgemm(j->lib, true, false, kv, d->d, m, ab, d->Tk, dout, ld, 0.0f, dv, d->F);
  int64_t vl = j->vl[b];
  for (int64_t i = 0; i < m; i++)
    softmax_grad_row(w + i * d->Tk, ab + i * d->Tk, j->keep_scale, ds + i * d->Tk, kv, vl, j->sqrt_d,
                     j->inv_sqrt_d);
  /* d q = d S k, then d k = d S^T q (over k: after k's last read) */
  gemm_lib_sgemm(j->lib, false, false, m, d->d, kv, ds, d->Tk, kh, d->F, 0.0f, dqm, dq_aside ? d->d : d->F);
  gemm_lib_sgemm(j->lib, true, false, kv, d->d, m, ds, d->Tk, q, ld, 0.0f, dk, d->F);
  if (compact) scatter_rows(dqc, rows, n, d->d, dq, d->F);
  else if (dq_aside)
    for (int64_t i = 0; i < tq; i++) memcpy(dq + i * d->F, dqc + i * d->d, sizeof(float) * (size_t)d->d);
  zero_rows(dk, kv, d->Tk, d->d, d->F);
  zero_rows(dv, kv, d->Tk, d->d, d->F);
}

/* One item per thread: each claims units one at a time, longest first,
 * so that no thread is left with a long one at the end. */
static void run_units(void *ctx, int64_t begin, int64_t end) {
  AttnJob *j = ctx;
  float *scratch = j->scratch + pool_thread_index() * j->scratch_floats;
  (void)begin, (void)end;
  for (;;) {
    long long u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (u >= j->a->B * j->a->H) break;
    if (j->dout) backward_unit(j, j->order[u], scratch);
    else forward_unit(j, j->order[u], scratch);
  }
}

static int ascending(const void *x, const void *y) {
  int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return (a > b) - (a < b);
}

/* The units b * H + h into order, their examples by live keys, most
 * first, then by index. */
static void longest_first(const AttnJob *j, int32_t *order) {
  const AttnDims *a = j->a;
  int64_t *key = malloc(sizeof(int64_t) * (size_t)a->B);
  for (int64_t b = 0; b < a->B; b++) key[b] = (a->Tk - live_keys(j, b)) * a->B + b;
  qsort(key, (size_t)a->B, sizeof *key, ascending);
  for (int64_t u = 0; u < a->B * a->H; u++) order[u] = (int32_t)(key[u / a->H] % a->B * a->H + u % a->H);
  free(key);
}

int64_t cpu_attention_scratch(const AttnDims *a) {
  /* W, A, d S; one row of dropout bits; compacted q, d out, d q rows and
   * their indices */
  return 3 * a->Tq * a->Tk + a->Tk + 16 + 3 * a->Tq * a->d + a->Tq;
}

void cpu_attention(Pool *p, GemmLib lib, const AttnDims *a, const float *q, const float *k, const float *v,
                   const int32_t *valid_len, const float *dout, float *out, float *scratch, bool all_queries,
                   const uint8_t *live_q) {
  if (a->B * a->H == 0) return;
  AttnJob j = {.a = a, .lib = lib, .q = q, .k = k, .v = v, .dout = dout, .vl = valid_len, .out = out,
               .all_queries = all_queries, .over_inputs = dout && out == q, .live_q = live_q};
  j.sqrt_d = sqrtf((float)a->d);
  j.inv_sqrt_d = exact_inverse(j.sqrt_d);
  j.keep_scale = (float)a->keep_scale;
  j.threshold = attn_threshold(a);
  j.scratch_floats = cpu_attention_scratch(a);
  j.scratch = scratch;
  int32_t *order = malloc(sizeof(int32_t) * (size_t)(a->B * a->H));
  longest_first(&j, order);
  j.order = order;
  atomic_init(&j.next, 0);
  cpu_gemm_lock(lib, 1);
  pool_parallel_for(p, pool_n_threads(p), 1, run_units, &j);
  cpu_gemm_unlock();
  free(order);
}
