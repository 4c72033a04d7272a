/* test_row_guard.c — rows a loss weight of 0 leaves unread or zero
 * (passes/row_guard.c), and the cpu kernels that leave them out
 * (runtime/cpu.c, cpu_gemm_given_rows):
 *  - which kernels are guarded: pretrain's MLM head and loss once its
 *    logits are no output (CompileOptions.outputs), none while they are,
 *    none in nli;
 *  - a pretrain step with half its MLM slots of weight 0 on cpu, every
 *    buffer filled with NaN first, against interp: loss, gradients and
 *    Adam's state as the reference computes them densely. A kernel that
 *    left a dead row unwritten, or wrote a live row's result elsewhere,
 *    leaves NaN or a wrong value in a gradient. */
#include "tests/test.h"
#include "tests/backend_check.h"
#include "tests/bert_batch.h"
#include "../codegen/kernel.h"

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };

static const char *const losses_only[] = {"mlm_loss", "nsp_loss", NULL};

/* The training step reading `outputs` (NULL: all). */
static bool compile_step(Graph *g, const char *graph, const char *const *outputs) {
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = CHECK_MODEL;
  o.graph_name = graph;
  o.sets = tiny;
  o.n_sets = N_TINY;
  o.train = true;
  adam_options_default(&o.adam);
  o.outputs = outputs;
  Diag d;
  diag_init(&d);
  bool ok = pipeline_run(g, &o, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

typedef struct {
  int guarded, vocab_gemm_guard_ok, vocab_gemms; /* forward C = X W over the vocabulary */
  int guarded_row_reductions;
} Counts;

/* Guarded kernels of g's plan; the forward vocabulary GEMM's guard is
 * pred_weights (or none when expect_vocab is false). */
static Counts count_guards(const Graph *g0, bool expect_vocab) {
  Counts c = {0};
  Graph eg;
  KernelPlan plan;
  MemPlan mem;
  Diag d;
  diag_init(&d);
  bool ok = kernel_plan_compile(g0, NULL, &eg, &plan, &mem, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK(ok);
  if (!ok) return c;
  ValueId w = graph_find(&eg, "pred_weights");
  for (int i = 0; i < plan.kernels.n; i++) {
    const Kernel *k = &plan.kernels.data[i];
    if (k->guard >= 0) {
      c.guarded++;
      CHECK(k->guard == w);
    }
    if (k->kind == KERNEL_GEMM) {
      const Node *n = &eg.nodes.data[k->first_node];
      const Value *b = &eg.values.data[n->in[1]];
      if (b->kind == VALUE_PARAM && !n->a.trans_a && !n->a.trans_b && b->shape.dim[b->shape.rank - 1] == 40) {
        c.vocab_gemms++;
        c.vocab_gemm_guard_ok += expect_vocab ? k->guard == w : k->guard < 0;
      }
    }
    if (k->kind == KERNEL_LOOP && k->guard >= 0)
      for (int j = 0; j < k->insts.n; j++)
        if (k->insts.data[j].kind == KI_REDUCE) {
          c.guarded_row_reductions++;
          break;
        }
  }
  kernel_plan_free(&plan);
  memplan_free(&mem);
  graph_free(&eg);
  return c;
}

TEST(the_mlm_head_is_guarded_once_its_logits_are_no_output) {
  Graph g;
  CHECK(compile_step(&g, "pretrain", losses_only));
  Counts c = count_guards(&g, true);
  CHECK_EQ_INT(c.vocab_gemms, 1);
  CHECK_EQ_INT(c.vocab_gemm_guard_ok, 1);
  CHECK(c.guarded_row_reductions >= 2); /* the softmax statistics and their gradient */
  graph_free(&g);

  CHECK(compile_step(&g, "pretrain", NULL)); /* mlm_logits read: computed whole */
  c = count_guards(&g, false);
  CHECK_EQ_INT(c.vocab_gemm_guard_ok, 1);
  CHECK(c.guarded > 0); /* the loss's own rows still are */
  graph_free(&g);

  CHECK(compile_step(&g, "nli", NULL)); /* no weight input */
  c = count_guards(&g, false);
  CHECK_EQ_INT(c.guarded, 0);
  graph_free(&g);
}

TEST(an_output_that_is_not_the_graphs_is_an_error) {
  static const char *const bad[] = {"mlm_loss", "no_such_output", NULL};
  Graph g;
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = CHECK_MODEL;
  o.graph_name = "pretrain";
  o.sets = tiny;
  o.n_sets = N_TINY;
  o.outputs = bad;
  Diag d;
  diag_init(&d);
  CHECK(!pipeline_run(&g, &o, &d));
  CHECK(d.n_errors == 1 && strstr(d.msgs.data[0], "no output 'no_such_output'"));
  diag_free(&d);
}

/* NaN into every buffer of e that holds no input, parameter or state. */
static void poison(Exec *e, const Graph *g) {
  enum { MAX_KEPT = 256 };
  uintptr_t lo[MAX_KEPT], hi[MAX_KEPT];
  int n_kept = 0;
  for (int v = 0; v < g->values.n; v++) {
    DType t;
    char *p = g->values.data[v].kind != VALUE_NODE ? exec_value_ptr(e, v, &t) : NULL;
    if (!p) continue;
    CHECK(n_kept < MAX_KEPT);
    lo[n_kept] = (uintptr_t)p;
    hi[n_kept++] = (uintptr_t)p + (uintptr_t)shape_numel(&g->values.data[v].shape) * 4;
  }
  int n_poisoned = 0;
  for (int v = 0; v < g->values.n; v++) {
    DType t;
    float *p = g->values.data[v].kind == VALUE_NODE ? exec_value_ptr(e, v, &t) : NULL;
    if (!p) continue;
    uintptr_t a = (uintptr_t)p, b = a + (uintptr_t)shape_numel(&g->values.data[v].shape) * 4;
    bool shared = false;
    for (int k = 0; k < n_kept && !shared; k++) shared = a < hi[k] && lo[k] < b;
    if (shared) continue; /* an assign's target, a view of a parameter */
    for (int64_t j = 0; j < shape_numel(&g->values.data[v].shape); j++) p[j] = NAN;
    n_poisoned++;
  }
  CHECK(n_poisoned > 50);
}

/* pred_weights: slot 0 of every example real, the others padding; mlm_norm
 * their sum. */
static void half_the_slots(Exec *e, const Graph *g) {
  ValueId w = graph_find(g, "pred_weights"), norm = graph_find(g, "mlm_norm");
  const Shape *s = &g->values.data[w].shape;
  int64_t n = shape_numel(s);
  double x[64], sum = 0;
  CHECK(n <= 64);
  for (int64_t i = 0; i < n; i++) sum += x[i] = i % s->dim[1] == 0 ? 1.0 : 0.0;
  Diag d;
  diag_init(&d);
  CHECK(exec_write(e, w, x, DTYPE_F64, &d));
  if (norm >= 0) CHECK(exec_write(e, norm, &sum, DTYPE_F64, &d));
  diag_print(&d, stderr);
  diag_free(&d);
}

TEST(a_step_leaving_out_dead_slots_matches_interp) {
  Graph g;
  if (!compile_step(&g, "pretrain", losses_only)) {
    CHECK(0);
    return;
  }
  Exec *ref = check_make("interp", &g, 5), *dev = check_make("cpu", &g, 5);
  if (ref && dev) {
    poison(dev, &g);
    bert_batch_fill(&ref, 1, &g, 17, 0.0); /* lr 0: see backend_check.h (RefStep) */
    bert_batch_fill(&dev, 1, &g, 17, 0.0);
    half_the_slots(ref, &g);
    half_the_slots(dev, &g);
    Diag d;
    diag_init(&d);
    CHECK(exec_run(ref, &check_step_ctx, &d) && exec_run(dev, &check_step_ctx, &d));
    diag_print(&d, stderr);
    diag_free(&d);
    StepResult r = {0};
    r.worst_name = "";
    /* the gradients and the loss: f32 against double, as test_cpu */
    check_values(dev, ref, &g, "pretrain, half the slots dead", CMP_PINNED, 5e-3, &r);
    fprintf(stderr, "  %d values compared, worst relative error %.3g (%s)\n", r.n_checked, r.worst, r.worst_name);
    CHECK(r.n_checked > 40);
    CHECK_EQ_INT(r.n_failed, 0);
  }
  if (ref) exec_destroy(ref);
  if (dev) exec_destroy(dev);
  graph_free(&g);
}

TEST_MAIN()
