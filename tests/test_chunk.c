/* test_chunk.c — column blocks (passes/chunk.c) and what they rest on: the
 * MLM logits' gradient made and consumed block by block, never whole in
 * the arena; nodes nothing reads not computed (fuse.c's dead nodes); the
 * blocks' kernels sharing their code (codegen: kernel_same_code). Their
 * values against interp: test_cpu column_blocks_match_interp. */
#include "tests/test.h"
#include "tests/plan_check.h"

/* The pretrain training step's plan with these settings and block size
 * (0: the default), column blocks on or off, reading these outputs (NULL:
 * all). */
static bool build_reading(const char *const *outputs, const Setting *sets, int n_sets, int64_t chunk_bytes,
                          bool no_chunk, Graph *eg, KernelPlan *plan, MemPlan *mem) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = BC_SOURCE_DIR "/models/bert.yaml";
  o.graph_name = "pretrain";
  o.train = true;
  o.outputs = outputs;
  o.sets = sets;
  o.n_sets = n_sets;
  o.chunk_bytes = chunk_bytes;
  o.off.chunk = no_chunk;
  return plan_build(&o, eg, plan, mem);
}

static bool build(const Setting *sets, int n_sets, int64_t chunk_bytes, bool no_chunk, Graph *eg, KernelPlan *plan,
                  MemPlan *mem) {
  return build_reading(NULL, sets, n_sets, chunk_bytes, no_chunk, eg, plan, mem);
}

static const Setting batch64[] = {{"batch", "64"}};

/* GEMM kernels whose epilogue is one add. */
static int gemms_adding(const Graph *g, const KernelPlan *p) {
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    n += k->kind == KERNEL_GEMM && k->nodes.n == 2 && g->nodes.data[k->nodes.data[1]].op == OP_ADD;
  }
  return n;
}

/* pretrain at batch 64: the logits' gradient is [1216, 20256], 98.5 MB.
 * In blocks, no arena buffer is a fifth of that, the arena is at most a
 * quarter of the intermediates, and it is smaller than without blocks by
 * about the gradient's size. */
TEST(mlm_logits_gradient_is_made_by_column_blocks) {
  Graph g, g0;
  KernelPlan p, p0;
  MemPlan m, m0;
  if (!build(batch64, 1, 0, false, &g, &p, &m) || !build(batch64, 1, 0, true, &g0, &p0, &m0)) {
    CHECK(0);
    return;
  }
  int64_t whole = (int64_t)1216 * 20256 * 4;
  CHECK_MSG(plan_largest_arena_buffer(&g0, &m0) >= whole, "without blocks the gradient is one buffer");
  /* the largest is then an attention gradient, [3 B T, 128] */
  CHECK_MSG(plan_largest_arena_buffer(&g, &m) < whole / 5, "largest buffer %lld bytes", (long long)plan_largest_arena_buffer(&g, &m));
  CHECK_MSG(m.arena_bytes * 4 <= m.sum_intermediate_bytes, "arena %lld of %lld bytes", (long long)m.arena_bytes,
            (long long)m.sum_intermediate_bytes);
  CHECK(m0.arena_bytes - m.arena_bytes > whole / 2);
  CHECK_EQ_INT(plan_computed_unread(&g, &p), 0);
  /* the readers: d h summed over the blocks, d W and d b concatenated */
  CHECK_EQ_INT(kernel_plan_count(&p, KERNEL_CONCAT), kernel_plan_count(&p0, KERNEL_CONCAT) + 2);
  int n_blocks = 0;
  for (int i = 0; i < p.kernels.n; i++)
    if (p.kernels.data[i].kind == KERNEL_CONCAT) n_blocks = g.nodes.data[p.kernels.data[i].first_node].n_in;
  CHECK(n_blocks >= 8);
  /* each block's product after the first adds itself to the sum in its
   * GEMM (an epilogue: accumulating into it) */
  CHECK_EQ_INT(gemms_adding(&g, &p) - gemms_adding(&g0, &p0), n_blocks - 1);
  plan_release(&g, &p, &m);
  plan_release(&g0, &p0, &m0);
}

/* The blocks' kernels differ only in where they read and write: all but
 * the last (narrower) block run one compiled function per kind. */
TEST(column_blocks_share_code) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build(batch64, 1, 0, false, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  int n_block = 0, n_codes = 0;
  const Kernel *codes[64];
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    if (k->kind != KERNEL_LOOP || k->domain.rank != 2 || k->domain.dim[0] != 1216 ||
        k->domain.dim[1] <= 128 || k->domain.dim[1] >= 20256) /* not the MLM head's [1216, 128] */
      continue;
    n_block++;
    int c = 0;
    while (c < n_codes && !kernel_same_code(codes[c], k)) c++;
    if (c == n_codes && n_codes < 64) codes[n_codes++] = k;
  }
  /* each block: its gradient (one kernel), its column sum; 2 codes each */
  CHECK_MSG(n_block >= 16, "%d block kernels", n_block);
  CHECK_MSG(n_codes <= 4, "%d codes for %d block kernels", n_codes, n_block);
  plan_release(&g, &p, &m);
}

/* Each block's d W GEMM runs right after its d X GEMM, the two reading the
 * same block of the gradient (d X = dY W^T, then d W = h^T dY): the cpu
 * backend's d W then takes the gradient's live rows d X left compacted
 * (runtime/cpu.c) instead of compacting them again. And d X reads its
 * block of W made transposed by a kernel of its own, untransposed (NN:
 * passes/gemm_layout.c). */
TEST(each_block_s_d_w_follows_its_d_x) {
  static const char *const loss_only[] = {NULL}; /* as a trainer compiles it */
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build_reading(loss_only, batch64, 1, 0, false, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  /* d X GEMMs reading a block ([rows, columns of the block]: wider than
   * any encoder value, narrower than the vocabulary), and those of them
   * the block's d W GEMM follows */
  int n_dx = 0, n_pairs = 0, n_nn = 0;
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    if (k->kind != KERNEL_GEMM) continue;
    const Node *dx = &g.nodes.data[k->first_node];
    int64_t cols = g.values.data[dx->in[0]].shape.dim[1];
    if (dx->a.trans_a || cols <= 512 || cols >= 20256) continue;
    n_dx++;
    NodeId wt = g.values.data[dx->in[1]].node;
    n_nn += !dx->a.trans_b && wt >= 0 && g.nodes.data[wt].op == OP_PERMUTE;
    const Kernel *next = i + 1 < p.kernels.n ? &p.kernels.data[i + 1] : NULL;
    const Node *dw = next && next->kind == KERNEL_GEMM ? &g.nodes.data[next->first_node] : NULL;
    n_pairs += dw && dw->a.trans_a && dw->in[1] == dx->in[0];
  }
  CHECK_MSG(n_dx >= 8, "%d d X GEMMs on blocks", n_dx);
  CHECK_EQ_INT(n_pairs, n_dx);
  CHECK_EQ_INT(n_nn, n_dx);
  plan_release(&g, &p, &m);
}

/* Small blocks on the tiny model: three blocks of 16, 16 and 13 columns of
 * the [8, 45] gradient (their column sums: the only [8, C] ones with
 * 8 < C < 45); none without the switch. */
TEST(small_blocks_and_the_switch) {
  static const Setting tiny[] = {{"vocab", "45"}, {"hidden", "8"},  {"ffn", "16"},   {"heads", "2"},
                                 {"layers", "2"},  {"max_len", "12"}, {"n_pred", "2"}, {"batch", "4"}};
  for (int off = 0; off < 2; off++) {
    Graph eg;
    KernelPlan p;
    MemPlan m;
    bool ok = build(tiny, 8, 128, off, &eg, &p, &m);
    CHECK(ok);
    if (!ok) return;
    int widths[3] = {0, 0, 0}, n = 0;
    for (int i = 0; i < p.kernels.n; i++) {
      const Kernel *k = &p.kernels.data[i];
      if (k->kind == KERNEL_LOOP && k->col_axis == 0 && k->domain.rank == 2 && k->domain.dim[0] == 8 &&
          k->domain.dim[1] > 8 && k->domain.dim[1] < 45)
        widths[n < 3 ? n++ : 2] = (int)k->domain.dim[1];
    }
    if (off) {
      CHECK_EQ_INT(n, 0);
    } else {
      CHECK_EQ_INT(n, 3);
      CHECK_EQ_INT(widths[0], 16);
      CHECK_EQ_INT(widths[1], 16);
      CHECK_EQ_INT(widths[2], 13);
    }
    CHECK_EQ_INT(plan_computed_unread(&eg, &p), 0);
    plan_release(&eg, &p, &m);
  }
}

TEST_MAIN()
