/* test_fuse.c — what the fusion pass makes of the d2l BERT: kernel counts
 * and shapes of the kernels that matter (softmax, layer norm, Adam), and a
 * golden listing of the nli training step's kernels and memory plan
 * (tests/golden/; BC_UPDATE_GOLDEN=1 rewrites it, review the diff). */
#include "tests/test.h"

#include <stddef.h>
#include "tests/backend_check.h"
#include "tests/plan_check.h"

/* The options compiling `graph` of models/bert.yaml (its training step
 * with `train`), the switches as the environment sets them. */
static CompileOptions options_for(const char *graph, bool train) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = "models/bert.yaml"; /* relative: golden text names it so */
  o.graph_name = graph;
  o.train = train;
  return o;
}

static bool build(const char *graph, bool train, Graph *eg, KernelPlan *plan, MemPlan *mem) {
  CompileOptions o = options_for(graph, train);
  return plan_build(&o, eg, plan, mem);
}

/* The nli training step's plan with the switch at `field` (offsetof in
 * OptSwitches) set to `off`; a failed build is a failed check. */
static bool build_nli_switched(size_t field, bool off, Graph *eg, KernelPlan *plan, MemPlan *mem) {
  CompileOptions o = options_for("nli", true);
  *(bool *)((char *)&o.off + field) = off;
  bool ok = plan_build(&o, eg, plan, mem);
  CHECK(ok);
  return ok;
}

/* Whether kernel k computes op: one of its nodes, or (for the generators
 * folded into their readers, like random) one of its instructions. */
static bool kernel_has(const Graph *g, const Kernel *k, Op op) {
  for (int i = 0; i < k->nodes.n; i++)
    if (g->nodes.data[k->nodes.data[i]].op == op) return true;
  for (int i = 0; i < k->insts.n; i++)
    if (op == OP_RANDOM && k->insts.data[i].kind == KI_RANDOM) return true;
  return false;
}

static int count_with(const Graph *g, const KernelPlan *p, Op a, Op b, Op c) {
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    if (kernel_has(g, k, a) && (b == OP_COUNT || kernel_has(g, k, b)) && (c == OP_COUNT || kernel_has(g, k, c)))
      n++;
  }
  return n;
}

TEST(forward_kernels) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build("nli", false, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  int layers = 2;
  /* scores, masked softmax, dropout and the weighted sum: one fused
   * attention kernel per layer, and no [B, heads, T, T] value anywhere */
  CHECK_EQ_INT(kernel_plan_count(&p, KERNEL_ATTENTION), layers);
  CHECK_EQ_INT(count_with(&g, &p, OP_REDUCE_MAX, OP_EXP, OP_RANDOM), 0);
  for (int v = 0; v < g.values.n; v++) {
    const Shape *s = &g.values.data[v].shape;
    CHECK_MSG(!(s->rank == 4 && s->dim[2] > 1 && s->dim[2] == s->dim[3]), "%s has the attention weights' shape",
              g.values.data[v].name);
  }
  /* add & norm (residual, dropout, layer norm): one row kernel each */
  CHECK_EQ_INT(count_with(&g, &p, OP_RSQRT, OP_REDUCE_SUM, OP_RANDOM), 2 * layers);
  /* every matmul is one library call; nothing else is */
  int n_matmul = 0;
  for (int i = 0; i < g.nodes.n; i++) n_matmul += g.nodes.data[i].op == OP_MATMUL;
  CHECK_EQ_INT(kernel_plan_count(&p, KERNEL_GEMM), n_matmul);
  CHECK(p.kernels.n <= 70);
  memplan_free(&m);
  kernel_plan_free(&p);
  graph_free(&g);
}

/* A per-row value broadcast inside its row kernel (a layer norm's 1/std)
 * and read by the backward is kept at row size, [B, T, 1], and read
 * through the broadcast there: never stored broadcast to [B, T, F]. */
TEST(row_values_are_stored_at_row_size) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build("nli", true, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  int joined = 0;
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    for (int j = 0; k->kind == KERNEL_LOOP && j < k->nodes.n; j++) {
      const Node *n = &g.nodes.data[k->nodes.data[j]];
      if (n->op != OP_BROADCAST) continue;
      joined++;
      CHECK_MSG(!p.materialized[n->out], "%s stores the broadcast '%s'", k->name, g.values.data[n->out].name);
    }
  }
  CHECK(joined > 0); /* the softmax and layer norm forwards still broadcast in their kernels */
  kernel_plan_free(&p);
  memplan_free(&m);
  graph_free(&g);
}

TEST(adam_is_one_kernel_per_parameter) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build("nli", true, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  /* every assign is stored by the kernel computing its value: p, m and v of
   * a parameter in one kernel (parameters of one shape may share it), no
   * copy kernels */
  int n_params = g.params.n, n_assign = 0;
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    int assigns = 0;
    for (int j = 0; j < k->nodes.n; j++) assigns += g.nodes.data[k->nodes.data[j]].op == OP_ASSIGN;
    CHECK_MSG(assigns != k->nodes.n, "kernel %s only copies", k->name);
    if (k->domain.rank > 0) CHECK_MSG(assigns % 3 == 0, "kernel %s: %d assigns", k->name, assigns);
    n_assign += assigns;
  }
  CHECK_EQ_INT(n_assign, 3 * n_params + 1); /* + the step count t */
  /* no allocation per step: everything fits the plan, and the arena is much
   * smaller than the intermediates it holds */
  CHECK(m.arena_bytes < m.sum_intermediate_bytes / 2);
  memplan_free(&m);
  kernel_plan_free(&p);
  graph_free(&g);
}

TEST(golden_nli_training_kernels) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!build("nli", true, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  char *text = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&text, &n);
  kernel_plan_print(&g, &p, f);
  memplan_print_summary(&m, f);
  fclose(f);
  const char *path = BC_SOURCE_DIR "/tests/golden/nli_train_kernels.txt";
  const char *update = getenv("BC_UPDATE_GOLDEN");
  if (update && *update && strcmp(update, "0") != 0) {
    FILE *o = fopen(path, "w");
    CHECK(o != NULL);
    if (o) {
      fputs(text, o);
      fclose(o);
    }
  } else {
    Diag d;
    diag_init(&d);
    char *want = bc_read_file(path, NULL, &d);
    CHECK_MSG(want != NULL, "%s missing: run with BC_UPDATE_GOLDEN=1", path);
    if (want && strcmp(want, text) != 0) {
      /* first differing line, for the log */
      const char *a = want, *b = text;
      int line = 1;
      while (*a && *a == *b) {
        if (*a == '\n') line++;
        a++;
        b++;
      }
      CHECK_MSG(0, "%s differs from the compiler's output at line %d (BC_UPDATE_GOLDEN=1 rewrites it)",
                path, line);
    }
    free(want);
    diag_free(&d);
  }
  free(text);
  memplan_free(&m);
  kernel_plan_free(&p);
  graph_free(&g);
}

/* Deepest chain of folded nodes a kernel recomputes (views and index math). */
static int folded_depth(const Graph *g, const Fusion *f) {
  int *depth = calloc((size_t)g->nodes.n, sizeof(int)), worst = 0;
  for (int i = 0; i < g->nodes.n; i++) {
    if (f->group_of[i] >= 0) continue;
    const Node *n = &g->nodes.data[i];
    for (int j = 0; j < n->n_in; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p >= 0 && f->group_of[p] < 0 && depth[p] > depth[i]) depth[i] = depth[p];
    }
    if (++depth[i] > worst) worst = depth[i];
  }
  free(depth);
  return worst;
}

/* Folded chains are cut: 200,000 links lower without one stack frame per
 * link (that overflowed the stack), and no kernel recomputes more than a
 * short chain. */
TEST(long_folded_chains_are_cut) {
  Graph g;
  check_long_chains(&g, 200000);
  Fusion f;
  KernelPlan p;
  Diag d;
  diag_init(&d);
  CHECK(fuse_run(&g, NULL, &f, &d));
  int depth = folded_depth(&g, &f);
  CHECK(depth >= 8 && depth <= 64);
  CHECK(kernel_plan_build(&g, &f, &p, &d));
  CHECK(kernel_plan_check(&g, &p, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  kernel_plan_free(&p);
  fusion_free(&f);
  graph_free(&g);
}

/* The epilogue graph's plan with every optimization on, or with
 * off.epilogue: its kernels and memory plan. */
static bool epilogue_plan(bool epilogue, Graph *eg, KernelPlan *kp, MemPlan *mem) {
  Graph g;
  check_epilogue_graph(&g);
  CompileOptions o;
  compile_options_default(&o);
  memset(&o.off, 0, sizeof o.off);
  o.off.epilogue = !epilogue;
  o.verify = true;
  o.dump_after = NULL;
  Diag d;
  diag_init(&d);
  bool ok = kernel_plan_compile(&g, &o, eg, kp, mem, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  graph_free(&g);
  return ok;
}

/* A GEMM takes its bias add, activation, residual add and relu's
 * backward (passes/fuse.c):
 * one kernel each, no loop kernel after it, and the values between never
 * stored; the addend of a GEMM of its own shares C's buffer (the GEMM
 * accumulates into it), the GEMM's own A never does. */
TEST(gemm_epilogues) {
  Graph g;
  KernelPlan p;
  MemPlan m;
  if (!epilogue_plan(true, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  static const char *const want[CHECK_EPILOGUE_GEMMS] = {
      "matmul_add_relu", "matmul_add_gelu_add", "matmul_gelu_tanh", "matmul", "matmul_add", "matmul_add_relu",
      "matmul_add", "matmul_relu_grad"};
  int n_gemm = 0;
  for (int i = 0; i < p.kernels.n; i++) {
    const Kernel *k = &p.kernels.data[i];
    if (k->kind != KERNEL_GEMM) continue;
    const char *name = strchr(k->name, '_') + 1; /* after "k7_" */
    if (n_gemm < CHECK_EPILOGUE_GEMMS) CHECK_MSG(!strcmp(name, want[n_gemm]), "GEMM %d is %s", n_gemm, k->name);
    n_gemm++;
    for (int j = 0; j + 1 < k->nodes.n; j++) /* the values between are in registers */
      CHECK(!p.materialized[g.nodes.data[k->nodes.data[j]].out]);
  }
  CHECK_EQ_INT(n_gemm, CHECK_EPILOGUE_GEMMS);
  CHECK_EQ_INT(kernel_plan_count(&p, KERNEL_LOOP), 3); /* s = neg(x) and the two negations */
  /* x V^T + x W: in place of x W; s U + s: a buffer of its own */
  ValueId acc = g.nodes.data[g.values.data[g.outputs.data[3]].node].in[0];
  ValueId own = g.nodes.data[g.values.data[g.outputs.data[5]].node].in[0];
  ValueId xw3 = g.nodes.data[g.values.data[acc].node].in[1];
  CHECK_EQ_INT(m.slots[acc].kind, MEM_ARENA);
  CHECK_EQ_INT(m.slots[own].kind, MEM_ARENA);
  CHECK_EQ_INT(m.slots[acc].alias_of, xw3);
  CHECK_EQ_INT(m.slots[own].alias_of, -1);
  kernel_plan_free(&p);
  memplan_free(&m);
  graph_free(&g);

  /* BC_NO_EPILOGUE: every GEMM alone, its epilogue in loop kernels */
  if (!epilogue_plan(false, &g, &p, &m)) {
    CHECK(0);
    return;
  }
  for (int i = 0; i < p.kernels.n; i++)
    if (p.kernels.data[i].kind == KERNEL_GEMM) CHECK_EQ_INT(p.kernels.data[i].nodes.n, 1);
  CHECK(kernel_plan_count(&p, KERNEL_LOOP) >= 6);
  kernel_plan_free(&p);
  memplan_free(&m);
  graph_free(&g);
}

/* relu's backward mask (relu_grad of d h by relu's output) joins the GEMM
 * making d h: in the nli training step the two encoder layers' and the
 * classifier's; with BC_NO_EPILOGUE each is a loop kernel of its own. */
TEST(relu_backward_masks_run_in_their_gemms) {
  int gemm_masks[2] = {0, 0}, loop_masks[2] = {0, 0};
  for (int off = 0; off < 2; off++) {
    Graph g;
    KernelPlan p;
    MemPlan m;
    if (!build_nli_switched(offsetof(OptSwitches, epilogue), off, &g, &p, &m)) return;
    for (int i = 0; i < p.kernels.n; i++) {
      const Kernel *k = &p.kernels.data[i];
      if (!kernel_has(&g, k, OP_RELU_GRAD)) continue;
      if (k->kind == KERNEL_GEMM) {
        gemm_masks[off]++;
        CHECK_MSG(strstr(k->name, "_matmul_relu_grad") && k->nodes.n == 2, "%s", k->name);
      } else {
        loop_masks[off]++;
      }
    }
    plan_release(&g, &p, &m);
  }
  CHECK_EQ_INT(gemm_masks[0], 3);
  CHECK_EQ_INT(loop_masks[0], 0);
  CHECK_EQ_INT(gemm_masks[1], 0);
  CHECK_EQ_INT(loop_masks[1], 3);
}

/* passes/gemm_layout.c on the nli step: the d X = dY W^T over every
 * token's row read W^T, made by a [128, 128] transpose kernel right
 * before the GEMM, untransposed: the first layer's six (q, k, v, o and
 * the FFN's two) and the last layer's k and v. The rest, over the <cls>
 * rows only (the last layer on the rows read, the classifier), keep W
 * transposed: a copy would cost too much next to them.
 * BC_NO_GEMM_LAYOUT: no copies, every such GEMM reads W transposed. */
TEST(gemms_read_small_operands_untransposed) {
  int copied[2] = {0, 0}, transposed[2] = {0, 0};
  for (int off = 0; off < 2; off++) {
    Graph g;
    KernelPlan p;
    MemPlan m;
    if (!build_nli_switched(offsetof(OptSwitches, gemm_layout), off, &g, &p, &m)) return;
    for (int i = 0; i < p.kernels.n; i++) {
      const Kernel *k = &p.kernels.data[i];
      if (k->kind != KERNEL_GEMM) continue;
      const Node *n = &g.nodes.data[k->first_node];
      transposed[off] += n->a.trans_b;
      NodeId b = g.values.data[n->in[1]].node;
      const Kernel *before = i > 0 ? &p.kernels.data[i - 1] : NULL;
      copied[off] += b >= 0 && g.nodes.data[b].op == OP_PERMUTE && before && before->kind == KERNEL_LOOP &&
                     before->first_node == b;
    }
    plan_release(&g, &p, &m);
  }
  CHECK_EQ_INT(copied[0], 8);
  CHECK_EQ_INT(copied[1], 0);
  CHECK_EQ_INT(transposed[1] - transposed[0], 8);
  CHECK(transposed[0] > 0);
}

TEST_MAIN()
