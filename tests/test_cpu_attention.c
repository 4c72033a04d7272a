/* test_cpu_attention.c — the cpu backend's fused attention
 * (runtime/cpu_attention.c) called directly, against attention.h's double
 * reference, with its output buffer full of NaN first: in a planned step
 * that buffer holds what earlier kernels left there, so every element the
 * kernel does not compute (the rows of d k and d v of masked keys, which it
 * writes as zeros) would show. Valid lengths: none (uniform weights), a
 * ragged one, one a multiple of 16, all. Every installed GEMM library. */
#include "../runtime/cpu_attention.h"
#include "../runtime/threadpool.h"
#include "test.h"

enum { B = 4, T = 40, F = 32, H = 2 };

static float rnd(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((*s >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

static void check_lib(GemmLib lib, Pool *pool) {
  static const int32_t valid[B] = {0, 17, 32, T};
  AttnDims a = {0};
  a.B = B, a.Tq = T, a.Tk = T, a.F = F, a.H = H, a.d = F / H;
  a.inv_sqrt_d = 1.0 / sqrt((double)a.d);
  a.p = 0, a.keep_scale = 1;
  enum { N = B * T * F, NG = 3 * B * T * F };
  static float q[N], k[N], v[N], dout[N], out[N], grad[NG];
  static double qd[N], kd[N], vd[N], doutd[N], vld[B], outd[N], gradd[NG];
  uint32_t s = 7;
  for (int i = 0; i < N; i++) {
    qd[i] = q[i] = 2 * rnd(&s), kd[i] = k[i] = 2 * rnd(&s), vd[i] = v[i] = rnd(&s), doutd[i] = dout[i] = rnd(&s);
    out[i] = NAN;
  }
  for (int i = 0; i < NG; i++) grad[i] = NAN;
  for (int b = 0; b < B; b++) vld[b] = valid[b];
  float *scratch = malloc(sizeof(float) * (size_t)(cpu_attention_scratch(&a) * pool_n_threads(pool)));
  cpu_attention(pool, lib, &a, q, k, v, valid, NULL, out, scratch);
  cpu_attention(pool, lib, &a, q, k, v, valid, dout, grad, scratch);
  attn_ref_forward(&a, qd, kd, vd, vld, outd);
  attn_ref_backward(&a, qd, kd, vd, vld, doutd, gradd);
  double worst = 0;
  int bad = 0;
  for (int i = 0; i < N + NG; i++) {
    double x = i < N ? out[i] : grad[i - N], r = i < N ? outd[i] : gradd[i - N];
    double e = fabs(x - r) / (fabs(r) + 1e-2);
    if (!(e <= 1e-4)) bad++; /* f32 dot products of <= 40 terms and the exp polynomial */
    if (e > worst || x != x) worst = x != x ? INFINITY : e;
  }
  fprintf(stderr, "  %s: forward and backward, worst relative error %.3g\n", gemm_lib_name(lib), worst);
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
      check_lib((GemmLib)l, pool);
      n++;
    }
  CHECK(n >= 1);
  if (pool) pool_destroy(pool);
  diag_free(&d);
}

TEST_MAIN()
