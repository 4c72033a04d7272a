/* test_row_blocks.c — row blocks (passes/row_blocks.c) and what they rest
 * on: the MLM logits made, reduced and differentiated a block of rows at a
 * time, never whole in the arena; each block's kernels guarded by its
 * slice of the loss weights (row_guard.c); the original nodes, matmuls and
 * reductions among them, computed by no kernel (fuse.c's dead nodes).
 * Their values against interp: test_cpu row_blocks_match_interp. */
#include "tests/test.h"
#include "tests/backend_check.h"
#include "tests/plan_check.h"

/* The pretrain training step's plan with these settings and row block size
 * (0: the default), row blocks on or off. */
static bool build_chunked(const Setting *sets, int n_sets, int64_t block_bytes, bool off, int64_t chunk_bytes,
                          Graph *eg, KernelPlan *plan, MemPlan *mem) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = BC_SOURCE_DIR "/models/bert.yaml";
  o.graph_name = "pretrain";
  o.train = true;
  o.sets = sets;
  o.n_sets = n_sets;
  o.row_block_bytes = block_bytes;
  o.chunk_bytes = chunk_bytes;
  static const char *const none[] = {NULL}; /* as the trainer: the logits would be stored whole */
  o.outputs = none;
  o.off.row_blocks = off;
  return plan_build(&o, eg, plan, mem);
}

static bool build(const Setting *sets, int n_sets, int64_t block_bytes, bool off, Graph *eg, KernelPlan *plan,
                  MemPlan *mem) {
  return build_chunked(sets, n_sets, block_bytes, off, 0, eg, plan, mem);
}

/* The GEMM kernels making [rows, vocab] logits, in order: their rows and
 * the first weight row of their guard (-1: none). */
static int logits_gemms(const Graph *g, const KernelPlan *p, int64_t vocab, int64_t *rows, int64_t *row0, int max) {
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    const Node *nd = &g->nodes.data[k->first_node];
    const Shape *s = &g->values.data[nd->out].shape;
    if (k->kind != KERNEL_GEMM || nd->a.trans_a || s->rank != 2 || s->dim[1] != vocab) continue;
    if (n < max) {
      rows[n] = s->dim[0];
      const RowGuard *rg = k->guard >= 0 ? &p->guards.list.data[k->guard] : NULL;
      row0[n] = rg && rg->seq == 0 && rg->n_rows == s->dim[0] ? rg->row0 : -1;
    }
    n++;
  }
  return n;
}

/* pretrain at batch 64: the logits are [1216, 20256], 98.5 MB; by default
 * two blocks of 608 rows, each GEMM guarded by its half of the loss weights. The
 * arena is at most a quarter of the intermediates (the goal), and smaller
 * than without blocks by more than a quarter of the logits. */
TEST(mlm_logits_are_made_by_row_blocks) {
  static const Setting batch64[] = {{"batch", "64"}};
  Graph g, g0;
  KernelPlan p, p0;
  MemPlan m, m0;
  if (!build(batch64, 1, 0, false, &g, &p, &m) || !build(batch64, 1, 0, true, &g0, &p0, &m0)) {
    CHECK(0);
    return;
  }
  int64_t whole = (int64_t)1216 * 20256 * 4, rows[4], row0[4];
  CHECK_MSG(plan_largest_arena_buffer(&g0, &m0) >= whole, "without blocks the logits are one buffer");
  CHECK_EQ_INT(logits_gemms(&g0, &p0, 20256, rows, row0, 4), 1);
  CHECK_EQ_INT(logits_gemms(&g, &p, 20256, rows, row0, 4), 2);
  CHECK_EQ_INT(rows[0], 608);
  CHECK_EQ_INT(rows[1], 608);
  CHECK_EQ_INT(row0[0], 0);
  CHECK_EQ_INT(row0[1], 608);
  CHECK_MSG(plan_largest_arena_buffer(&g, &m) <= whole / 2, "largest buffer %lld bytes",
            (long long)plan_largest_arena_buffer(&g, &m));
  CHECK_MSG(m.arena_bytes * 4 <= m.sum_intermediate_bytes, "arena %lld of %lld bytes", (long long)m.arena_bytes,
            (long long)m.sum_intermediate_bytes);
  CHECK_MSG(m0.arena_bytes - m.arena_bytes > whole / 4, "arena %lld bytes, %lld without blocks",
            (long long)m.arena_bytes, (long long)m0.arena_bytes);
  CHECK_EQ_INT(plan_computed_unread(&g, &p), 0);
  plan_release(&g, &p, &m);
  plan_release(&g0, &p0, &m0);
  /* at batch 32 the logits (47 MiB) are under ROW_BLOCKS_MIN_BYTES: whole */
  static const Setting batch32[] = {{"batch", "32"}};
  if (!build(batch32, 1, 0, false, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(logits_gemms(&g, &p, 20256, rows, row0, 4), 1);
  plan_release(&g, &p, &m);
}

/* The tiny model with a vocabulary of 64 and 768-byte blocks: its [8, 64]
 * logits in blocks of 3, 3 and 2 rows, guarded by weight rows 0, 3 and 6
 * on; one GEMM without the switch. */
TEST(small_blocks_and_the_switch) {
  static const Setting tiny[] = {{"vocab", "64"}, {"hidden", "8"},  {"ffn", "16"},   {"heads", "2"},
                                 {"layers", "2"},  {"max_len", "12"}, {"n_pred", "2"}, {"batch", "4"}};
  for (int off = 0; off < 2; off++) {
    Graph g;
    KernelPlan p;
    MemPlan m;
    bool ok = build(tiny, 8, 768, off, &g, &p, &m);
    CHECK(ok);
    if (!ok) return;
    int64_t rows[4], row0[4];
    int n = logits_gemms(&g, &p, 64, rows, row0, 4);
    if (off) {
      CHECK_EQ_INT(n, 1);
      CHECK_EQ_INT(rows[0], 8);
    } else {
      CHECK_EQ_INT(n, 3);
      for (int b = 0; b < 3 && b < n; b++) {
        CHECK_EQ_INT(rows[b], b < 2 ? 3 : 2);
        CHECK_EQ_INT(row0[b], 3 * b);
      }
    }
    CHECK_EQ_INT(plan_computed_unread(&g, &p), 0);
    plan_release(&g, &p, &m);
  }
}

/* GEMM kernels whose epilogue is one add, making [rows, cols]. */
static int gemms_adding(const Graph *g, const KernelPlan *p, int64_t rows, int64_t cols) {
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    const Shape *s = &g->values.data[g->nodes.data[k->first_node].out].shape;
    n += k->kind == KERNEL_GEMM && k->nodes.n == 2 && g->nodes.data[k->nodes.data[1]].op == OP_ADD &&
         s->rank == 2 && s->dim[0] == rows && s->dim[1] == cols;
  }
  return n;
}

/* Row blocks whose gradient chunk.c makes by column blocks: the [12, 128]
 * logits in three blocks of 4 rows, each block's gradient in 8 of 16
 * columns. The d W of each column block of the second and third row
 * blocks adds itself to the one before (its GEMM accumulating), and d W
 * is concatenated once, not per row block. */
TEST(column_blocks_of_row_blocks_sum_in_place) {
  static const Setting tiny[] = {{"vocab", "128"}, {"hidden", "8"},   {"ffn", "16"},   {"heads", "2"},
                                 {"layers", "2"},   {"max_len", "12"}, {"n_pred", "3"}, {"batch", "4"}};
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build_chunked(tiny, 8, 2048, false, 192, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  int64_t rows[4], row0[4];
  CHECK_EQ_INT(logits_gemms(&g, &p, 128, rows, row0, 4), 3);
  CHECK_EQ_INT(gemms_adding(&g, &p, 8, 16), 2 * 8); /* d W's blocks, [hidden, 16] */
  int concat_dw = 0;
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    const Shape *s = &g.values.data[g.nodes.data[k->first_node].out].shape;
    concat_dw += k->kind == KERNEL_CONCAT && s->rank == 2 && s->dim[0] == 8 && s->dim[1] == 128;
  }
  CHECK_EQ_INT(concat_dw, 1);
  CHECK_EQ_INT(plan_computed_unread(&g, &p), 0);
  plan_release(&g, &p, &m);
}

/* A length bucket's plan shares its owner's pinned memory (exec_create_
 * sharing; runtime/compiled.c). Under row and column blocks the gradient
 * of the vocabulary's bias is a view of a view of a view of the blocks'
 * concatenation, the middle ones made by the passes, so with higher value
 * ids than the first: each must start where that concatenation does. One
 * step (lr 0) on the owner and one on a plan sharing it give the same
 * gradients. */
TEST(a_plan_sharing_its_owner_has_the_blocks_views_right) {
  static const Setting tiny[] = {{"vocab", "128"}, {"hidden", "8"},   {"ffn", "16"},   {"heads", "2"},
                                 {"layers", "2"},   {"max_len", "12"}, {"n_pred", "3"}, {"batch", "4"}};
  static const char *const none[] = {NULL};
  AdamOptions a;
  adam_options_default(&a);
  Graph g;
  if (!check_compile_outputs(&g, "pretrain", tiny, 8, &a, none)) {
    CHECK(0);
    return;
  }
  setenv("BC_ROW_BLOCK_BYTES", "2048", 1);
  setenv("BC_CHUNK_BYTES", "192", 1);
  Diag d;
  diag_init(&d);
  Exec *owner = check_make("cpu", &g, 5), *shared = owner ? exec_create_sharing(owner, &g, &d) : NULL;
  unsetenv("BC_CHUNK_BYTES");
  unsetenv("BC_ROW_BLOCK_BYTES");
  CHECK(shared != NULL);
  ValueId gb = g.values.data[graph_find(&g, "mlm.dense2.b")].grad, gw = g.values.data[graph_find(&g, "mlm.dense2.W")].grad;
  static double b0[128], b1[128], w0[8 * 128], w1[8 * 128];
  if (owner && shared) {
    bert_batch_fill(&owner, 1, &g, 17, 0.0);
    bert_batch_fill(&shared, 1, &g, 17, 0.0);
    CHECK(exec_run(owner, &check_step_ctx, &d) && exec_read(owner, gb, b0, DTYPE_F64, &d) &&
          exec_read(owner, gw, w0, DTYPE_F64, &d));
    CHECK(exec_run(shared, &check_step_ctx, &d) && exec_read(shared, gb, b1, DTYPE_F64, &d) &&
          exec_read(shared, gw, w1, DTYPE_F64, &d));
    double worst = 0;
    for (int i = 0; i < 128; i++) worst = fmax(worst, fabs(b0[i] - b1[i]));
    for (int i = 0; i < 8 * 128; i++) worst = fmax(worst, fabs(w0[i] - w1[i]));
    CHECK_MSG(worst <= 1e-6 && b0[0] != 0.0, "gradients differ by %g", worst);
  }
  diag_print(&d, stderr);
  diag_free(&d);
  if (shared) exec_destroy(shared);
  if (owner) exec_destroy(owner);
  graph_free(&g);
}

TEST_MAIN()
