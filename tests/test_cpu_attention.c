/* test_cpu_attention.c — the cpu backend's fused attention
 * (runtime/cpu_attention.c) called directly, against attention.h's double
 * reference, with its output buffer full of NaN first: in a planned step
 * that buffer holds what earlier kernels left there, so every element the
 * kernel does not compute (the rows of d k and d v of masked keys, which it
 * writes as zeros) would show. Valid lengths: none (uniform weights), a
 * ragged one, one a multiple of 16, all. Every installed GEMM library,
 * without dropout and with it: rows long enough for the 64-weight blocks
 * of the vector dropout stream and a ragged last block, and an odd row
 * length with an example offset, so that rows start inside a Philox
 * counter; and both with d out zero on some query rows. The backward
 * runs twice: into a buffer of its own, and over its inputs (q, k and v
 * one block, the output written over it). */
#include "../runtime/cpu_attention.h"
#include "../runtime/threadpool.h"
#include "test.h"

enum { B = 4, F = 32, H = 2, T_MAX = 100 };

static float rnd(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((*s >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

/* Rows of T keys; dropout p (0: none); offset: the example offset of
 * the dropout stream; zero_tail: d out is zero on some query rows of each
 * example (all, all but the first, two in three of the first half and the
 * second half, none), as on the rows of padding and of tokens no loss
 * reads, which the backward leaves out. */
typedef struct {
  int T;
  double p;
  int64_t offset;
  bool zero_tail;
} Case;

static bool row_nonzero(const float *x, int n) {
  for (int i = 0; i < n; i++)
    if (x[i] != 0) return true;
  return false;
}

static void check_lib(GemmLib lib, Pool *pool, Case c) {
  const int T = c.T;
  const int32_t valid[B] = {0, T / 2 - 3, T / 16 * 16, T};
  AttnDims a = {0};
  a.B = B, a.Tq = T, a.Tk = T, a.F = F, a.H = H, a.d = F / H;
  a.inv_sqrt_d = 1.0 / sqrt((double)a.d);
  a.p = c.p, a.keep_scale = 1 / (1 - c.p);
  a.seed = 0x1234567890ull, a.step = 5, a.key = 11;
  a.stride[0] = H * T * T, a.stride[1] = T * T, a.stride[2] = T, a.stride[3] = 1; /* random_key_map of [B, H, T, T] */
  a.per_example = H * T * T, a.example_offset = c.offset;
  enum { NMAX = B * T_MAX * F, NGMAX = 3 * NMAX };
  static float q[NMAX], k[NMAX], v[NMAX], dout[NMAX], out[NMAX], grad[NGMAX];
  static double qd[NMAX], kd[NMAX], vd[NMAX], doutd[NMAX], vld[B], outd[NMAX], gradd[NGMAX];
  const int N = B * T * F, NG = 3 * N;
  uint32_t s = 7;
  for (int i = 0; i < N; i++) {
    qd[i] = q[i] = 2 * rnd(&s), kd[i] = k[i] = 2 * rnd(&s), vd[i] = v[i] = rnd(&s), doutd[i] = dout[i] = rnd(&s);
    out[i] = NAN;
  }
  for (int i = 0; i < NG; i++) grad[i] = NAN;
  for (int b = 0; b < B; b++) vld[b] = valid[b];
  /* live rows of d out: none; the first; every third of the first half
   * (few and apart: copied together); all but the second (computed in
   * place) */
  for (int b = 0; c.zero_tail && b < B; b++)
    for (int t = 0; t < T; t++) {
      bool live = (b == 3 && t != 1) || (b == 1 && t == 0) || (b == 2 && t < T / 2 && t % 3 == 0);
      for (int f = 0; !live && f < F; f++) doutd[(b * T + t) * F + f] = dout[(b * T + t) * F + f] = 0;
    }
  float *scratch = malloc(sizeof(float) * (size_t)(cpu_attention_scratch(&a) * pool_n_threads(pool)));
  /* the forward's live query rows, where d out has them: the others must
   * come out zero (example 2's few and apart: copied together) */
  static uint8_t live_q[B * T_MAX];
  for (int r = 0; r < B * T; r++) live_q[r] = row_nonzero(dout + r * F, F);
  cpu_attention(pool, lib, &a, q, k, v, valid, NULL, out, scratch, false, c.zero_tail ? live_q : NULL);
  cpu_attention(pool, lib, &a, q, k, v, valid, dout, grad, scratch, false, NULL);
  attn_ref_forward(&a, qd, kd, vd, vld, outd);
  for (int r = 0; c.zero_tail && r < B * T; r++)
    for (int f = 0; !live_q[r] && f < F; f++) outd[r * F + f] = 0;
  /* the backward over its inputs, q | k | v one block, as the memory
   * plan places them where they die (passes/memplan.c) */
  static float qkv[NGMAX];
  memcpy(qkv, q, sizeof(float) * (size_t)N);
  memcpy(qkv + N, k, sizeof(float) * (size_t)N);
  memcpy(qkv + 2 * N, v, sizeof(float) * (size_t)N);
  cpu_attention(pool, lib, &a, qkv, qkv + N, qkv + 2 * N, valid, dout, qkv, scratch, false, NULL);
  attn_ref_backward(&a, qd, kd, vd, vld, doutd, gradd);
  double worst = 0;
  int bad = 0;
  for (int i = 0; i < N + 2 * NG; i++) {
    double x = i < N ? out[i] : i < N + NG ? grad[i - N] : qkv[i - N - NG];
    double r = i < N ? outd[i] : i < N + NG ? gradd[i - N] : gradd[i - N - NG];
    double e = fabs(x - r) / (fabs(r) + 1e-2);
    if (!(e <= 1e-4)) bad++; /* f32 dot products of <= 100 terms and the exp polynomial */
    if (e > worst || x != x) worst = x != x ? INFINITY : e;
  }
  /* a masked key's weight is exactly 0 (exp of -1e6 less the row's
   * maximum), so its rows of d k and d v are exactly 0: not the
   * denormals a weight of exp(-87) / sum would leave, which slow every
   * GEMM reading them where the CPU has no fast path for denormals */
  int nonzero = 0;
  for (int b = 0; b < B; b++)
    for (int t = valid[b] > 0 ? valid[b] : T; t < T; t++)
      for (int f = 0; f < F; f++) {
        int64_t at = (int64_t)(b * T + t) * F + f;
        nonzero += grad[N + at] != 0 || grad[2 * N + at] != 0 || qkv[N + at] != 0 || qkv[2 * N + at] != 0;
      }
  CHECK_EQ_INT(nonzero, 0);
  fprintf(stderr, "  %s, T %d, p %g, offset %lld%s: forward, backward and backward over q | k | v, worst relative error %.3g\n",
          gemm_lib_name(lib), T, c.p, (long long)c.offset, c.zero_tail ? ", zero rows of d out" : "", worst);
  CHECK_EQ_INT(bad, 0);
  free(scratch);
}

TEST(attention_writes_every_element) {
  Diag d;
  diag_init(&d);
  Pool *pool = pool_create(2, &d);
  CHECK(pool != NULL);
  int n = 0;
  for (int l = 0; pool && l < GEMM_LIB_COUNT; l++)
    if (gemm_lib_load((GemmLib)l)) {
      static const Case cases[] = {{40, 0, 0, false},   {T_MAX, 0.1, 0, false}, {37, 0.25, 3, false},
                                   {T_MAX, 0.1, 0, true}, {37, 0.25, 3, true}};
      for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_lib((GemmLib)l, pool, cases[i]);
      n++;
    }
  CHECK(n >= 1);
  if (pool) pool_destroy(pool);
  diag_free(&d);
}

TEST_MAIN()
