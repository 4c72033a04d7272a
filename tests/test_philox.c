/* test_philox.c — Philox4x32-10 against Random123's known-answer vectors
 * (kat_vectors, philox4x32_10), and the uniform draw's range and moments. */
#include "runtime/philox.h"
#include "test.h"

static void check_kat(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4]) {
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  for (int i = 0; i < 4; i++) CHECK_MSG(out[i] == want[i], "word %d: %08x != %08x", i, out[i], want[i]);
}

TEST(kat_zero) {
  uint32_t ctr[4] = {0, 0, 0, 0}, key[2] = {0, 0};
  uint32_t want[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
  check_kat(ctr, key, want);
}

TEST(kat_ones) {
  uint32_t ctr[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, key[2] = {0xffffffff, 0xffffffff};
  uint32_t want[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
  check_kat(ctr, key, want);
}

TEST(kat_pi) {
  uint32_t ctr[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, key[2] = {0xa4093822, 0x299f31d0};
  uint32_t want[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
  check_kat(ctr, key, want);
}

/* The counter layout of philox.h: index i is word i % 4 of counter
 * (i / 4 lo, i / 4 hi, op key, step), key (seed lo, seed hi); the uniform
 * is that word's top 24 bits. Zero's known answer is indices 0 to 3; the
 * pi vector's counter is too large for an index (its high word would need
 * bits 64 and 65 of i), so the test draws the words of that counter with
 * its top bit cleared. */
TEST(uniform_layout) {
  uint64_t seed = 0x299f31d0a4093822ull;
  uint32_t pi_ctr[4] = {0x243f6a88, 0x05a308d3, 0x13198a2e, 0x03707344}, pi_key[2] = {0xa4093822, 0x299f31d0};
  uint32_t want[4];
  philox4x32_10(pi_ctr, pi_key, want);
  for (uint32_t x = 0; x < 4; x++) {
    uint64_t index = (0x05a308d3243f6a88ull << 2) | x;
    CHECK(philox_uniform(seed, 0x03707344, 0x13198a2e, index) == (float)(want[x] >> 8) / 16777216.0f);
  }
  static const uint32_t zero[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
  for (uint32_t x = 0; x < 4; x++) CHECK(philox_uniform(0, 0, 0, x) == (float)(zero[x] >> 8) / 16777216.0f);
}

/* 10^6 draws: mean 1/2 and variance 1/12 within ~5 standard errors
 * (sd of the mean = 0.289/1000, of the variance ~ 0.0745/1000). */
TEST(uniform_moments) {
  const int n = 1000000;
  double sum = 0, sum2 = 0, lo = 1, hi = 0;
  for (int i = 0; i < n; i++) {
    double u = philox_uniform(1234, 7, 99, (uint64_t)i);
    sum += u;
    sum2 += u * u;
    if (u < lo) lo = u;
    if (u > hi) hi = u;
  }
  double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(lo >= 0.0 && hi < 1.0);
  CHECK(lo < 1e-4 && hi > 1 - 1e-4);
  CHECK_NEAR(mean, 0.5, 1.5e-3, 0);
  CHECK_NEAR(var, 1.0 / 12.0, 4e-4, 0);
}

/* Each counter field changes the stream. */
TEST(uniform_fields) {
  float base = philox_uniform(1, 2, 3, 4);
  CHECK(philox_uniform(2, 2, 3, 4) != base);
  CHECK(philox_uniform(1, 3, 3, 4) != base);
  CHECK(philox_uniform(1, 2, 4, 4) != base);
  CHECK(philox_uniform(1, 2, 3, 5) != base);
  CHECK(philox_uniform(1ull << 32 | 1, 2, 3, 4) != base);
  CHECK(philox_uniform(1, 2, 3, 4ull | 1ull << 32) != base);
  CHECK(philox_uniform(1, 2, 3, 4) == base);
}

TEST_MAIN()
