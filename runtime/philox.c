/* philox.c — Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random
 * numbers: as easy as 1, 2, 3", SC'11), bit-exact with Random123's
 * philox4x32_R(10, ctr, key), and the uniform draw every backend shares.
 *
 * Not here: streams, state, or any other distribution (init's normals are
 * built from these uniforms in exec.c). Invariant: the CUDA and LLVM
 * emitters print this same algorithm; tests/test_philox.c pins the known
 * answers of Random123's kat_vectors. */
#include "philox.h"

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  return (uint32_t)p;
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    /* Random123 bumps the key between rounds, never before the first. */
    if (r > 0) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
    uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

float philox_uniform(uint64_t seed, uint32_t step, uint32_t op_key, uint64_t index) {
  uint64_t c = index >> 2;
  uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), op_key, step};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  /* 24 bits fit a float's mantissa exactly, so the value is the same in
   * f32 and f64 and never rounds up to 1. */
  return (float)(out[index & 3] >> 8) * (1.0f / 16777216.0f);
}
