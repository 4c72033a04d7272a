/* test_cpu.c — the `cpu` backend against the reference interpreter (the
 * machinery is tests/backend_check.h, shared with test_gpu.c):
 *  - every op's output on its own (the tiny BERT graphs with BC_NO_FUSE: a
 *    kernel per node);
 *  - the tiny and the reference-size BERT training steps (`pretrain`, `nli`):
 *    every value the cpu backend keeps in memory (every kernel's output: so
 *    every fused kernel), the loss, every gradient and every updated
 *    parameter agree with interp;
 *  - fusion on/off and memory planning on/off give the same numbers
 *    (bit-identical with and without the memory plan: same kernels). */
#include "tests/backend_check.h"

/* Tolerance of every value: f32 against double through ~100 ops of a
 * training step, with sums over up to vocab (20256) terms: relative norm
 * error 5e-3. Measured: ~1e-4 for fused kernels; up to 1.4e-3 for the
 * unfused gradient of the log-softmax's max, which cancels to ~0 in exact
 * arithmetic. A wrong kernel gives O(1). */
#define TOL 5e-3

/* One step on interp and cpu, every value cpu keeps compared (see
 * check_step in tests/backend_check.h). */
static void compare_step(const char *graph, const Setting *sets, int n_sets, int *n_values_checked) {
  check_step("cpu", graph, sets, n_sets, TOL, n_values_checked);
}

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };

TEST(tiny_pretrain_step_matches_interp) { compare_step("pretrain", tiny, N_TINY, NULL); }
TEST(tiny_nli_step_matches_interp) { compare_step("nli", tiny, N_TINY, NULL); }

/* Every op on its own: with fusion off, every node's output has a buffer. */
TEST(every_op_unfused_matches_interp) {
  setenv("BC_NO_FUSE", "1", 1);
  int n = 0;
  compare_step("pretrain", tiny, N_TINY, &n);
  CHECK(n > 300);
  compare_step("nli", tiny, N_TINY, NULL);
  unsetenv("BC_NO_FUSE");
}

/* The reference configuration at batch 2 (interp's double loops are slow). */
static const Setting reference[] = {{"batch", "2"}};
TEST(reference_nli_step_matches_interp) { compare_step("nli", reference, 1, NULL); }
TEST(reference_pretrain_step_matches_interp) { compare_step("pretrain", reference, 1, NULL); }

TEST(memplan_and_fusion_switches_agree) {
  Graph g;
  if (!check_compile(&g, "pretrain", tiny, N_TINY, true)) {
    CHECK(0);
    return;
  }
  enum { N = 4000 };
  static double planned[N], unplanned[N], unfused[N];
  check_run_steps("cpu", &g, 5, planned, N);
  setenv("BC_NO_MEMPLAN", "1", 1);
  check_run_steps("cpu", &g, 5, unplanned, N);
  unsetenv("BC_NO_MEMPLAN");
  setenv("BC_NO_FUSE", "1", 1);
  check_run_steps("cpu", &g, 5, unfused, N);
  unsetenv("BC_NO_FUSE");
  /* same kernels, other addresses: bit-identical */
  CHECK(memcmp(planned, unplanned, sizeof planned) == 0);
  /* other kernels: elementwise math is the same f32 code, but fused row
   * reductions may sum in another order; 5 Adam steps amplify ulps a little */
  for (int i = 0; i < N; i++) CHECK_NEAR(unfused[i], planned[i], 1e-5, 1e-3);
  graph_free(&g);
}

TEST_MAIN()
