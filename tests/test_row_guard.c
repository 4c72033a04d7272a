/* test_row_guard.c — rows that a loss weight of 0 or the padding leaves
 * unread or zero (passes/row_guard.c), and the cpu kernels that leave them
 * out (runtime/cpu.c, cpu_gemm_given_rows):
 *  - which kernels are guarded: pretrain's MLM head and loss by
 *    pred_weights once its logits are no output (CompileOptions.outputs),
 *    not while they are; the encoders' GEMMs and row kernels by valid_len,
 *    in pretrain and nli; pretrain's last layer (but its keys and values)
 *    by the rows the MLM gather and the <cls> slice read;
 *  - steps on cpu, every buffer filled with NaN first, against interp:
 *    loss, gradients, outputs and Adam's state as the reference computes
 *    them densely, with half the MLM slots of weight 0 and lengths of 4 to
 *    12 tokens of 12. A kernel that left a dead row unwritten, wrote a live
 *    row's result elsewhere, or left out a row a gather or slice reads,
 *    leaves NaN or a wrong value behind. */
#include "tests/test.h"
#include "tests/backend_check.h"
#include "tests/bert_batch.h"
#include "../codegen/kernel.h"

static const Setting tiny[] = {
    {"vocab", "64"}, /* row_blocks_... : the MLM head's 8 columns narrow beside it */ {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };

static const char *const losses_only[] = {"mlm_loss", "nsp_loss", NULL};

/* The training step reading `outputs` (NULL: all). */
static bool compile_step(Graph *g, const char *graph, const char *const *outputs) {
  AdamOptions a;
  adam_options_default(&a);
  return check_compile_outputs(g, graph, tiny, N_TINY, &a, outputs);
}

typedef struct {
  int by_weights, by_lengths; /* guarded kernels, by the kind of guard */
  int vocab_gemms, vocab_gemm_guard_ok; /* forward C = X W over the vocabulary */
  int vocab_gemm_dead_unread;            /* its dead rows left unwritten, its rows compacted */
  int guarded_row_reductions, encoder_gemms, encoder_gemms_guarded;
  int last_picked, last_kv_by_lengths; /* the last layer's forward GEMMs */
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
  for (int i = 0; i < plan.kernels.n; i++) {
    const Kernel *k = &plan.kernels.data[i];
    const RowGuard *rg = k->guard >= 0 ? &plan.guards.list.data[k->guard] : NULL;
    if (rg) {
      const char *in = eg.values.data[rg->input].name;
      CHECK(rg->seq > 0 ? !strcmp(in, "valid_len") && rg->seq == 12 : !strcmp(in, "pred_weights"));
      c.by_lengths += rg->seq > 0;
      c.by_weights += rg->seq == 0;
    }
    if (k->kind == KERNEL_GEMM) {
      const Node *n = &eg.nodes.data[k->first_node];
      const Value *b = &eg.values.data[n->in[1]];
      bool forward = b->kind == VALUE_PARAM && !n->a.trans_a && !n->a.trans_b;
      if (forward && b->shape.dim[b->shape.rank - 1] == 64) { /* the vocabulary */
        c.vocab_gemms++;
        c.vocab_gemm_guard_ok += expect_vocab ? rg && rg->seq == 0 : !rg;
        c.vocab_gemm_dead_unread += k->dead_unread && k->compact_out;
      }
      if (forward && strstr(b->name, "encoder.blk.0.")) {
        c.encoder_gemms++;
        c.encoder_gemms_guarded += rg && rg->seq > 0;
      }
      bool kv = strstr(b->name, ".W_k.") || strstr(b->name, ".W_v.");
      if (forward && strstr(b->name, "encoder.blk.1.")) {
        c.last_picked += !kv && rg && rg->parent >= 0;
        c.last_kv_by_lengths += kv && rg && rg->seq > 0 && rg->parent < 0;
      }
    }
    if (k->kind == KERNEL_LOOP && rg)
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

TEST(the_mlm_head_and_the_padding_are_guarded) {
  Graph g;
  CHECK(compile_step(&g, "pretrain", losses_only));
  Counts c = count_guards(&g, true);
  CHECK_EQ_INT(c.vocab_gemms, 1);
  CHECK_EQ_INT(c.vocab_gemm_guard_ok, 1);
  /* the logits' dead rows: only the loss's kernels read them, live rows
   * only, and so they may be written compacted */
  CHECK_EQ_INT(c.vocab_gemm_dead_unread, 1);
  CHECK(c.guarded_row_reductions >= 4); /* layer norms, softmax statistics and their gradients */
  /* the first layer's forward GEMMs leave out padding tokens */
  CHECK(c.encoder_gemms >= 4);
  CHECK_EQ_INT(c.encoder_gemms_guarded, c.encoder_gemms);
  /* the last layer's are read at the MLM positions and <cls> only: its
   * queries, attention output and FFN compute those rows; its keys and
   * values the whole of each example */
  CHECK_EQ_INT(c.last_picked, 4);
  CHECK_EQ_INT(c.last_kv_by_lengths, 2);
  graph_free(&g);

  CHECK(compile_step(&g, "pretrain", NULL)); /* mlm_logits read: computed whole */
  c = count_guards(&g, false);
  CHECK_EQ_INT(c.vocab_gemm_guard_ok, 1);
  CHECK(c.by_weights > 0); /* the loss's own rows still are */
  graph_free(&g);

  CHECK(compile_step(&g, "nli", NULL)); /* no weights; padding */
  c = count_guards(&g, false);
  CHECK_EQ_INT(c.by_weights, 0);
  CHECK(c.by_lengths > 10);
  CHECK_EQ_INT(c.encoder_gemms_guarded, c.encoder_gemms);
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

/* The first MLM slot of the first example predicts its last position,
 * past its valid length: a gather of a padding row, which must then be
 * computed. */
static void predict_padding(Exec *e, const Graph *g) {
  ValueId pos = graph_find(g, "pred_positions"), vl = graph_find(g, "valid_len");
  int32_t p[64], l[16];
  int64_t np = shape_numel(&g->values.data[pos].shape), T = (int64_t)graph_hparam(g, "max_len", 12);
  Diag d;
  diag_init(&d);
  CHECK(np <= 64 && g->values.data[vl].shape.dim[0] <= 16);
  CHECK(exec_read(e, pos, p, DTYPE_I32, &d) && exec_read(e, vl, l, DTYPE_I32, &d));
  CHECK(l[0] < T); /* bert_batch_fill's seed 17 pads the first example */
  p[0] = (int32_t)T - 1;
  CHECK(exec_write(e, pos, p, DTYPE_I32, &d));
  diag_print(&d, stderr);
  diag_free(&d);
}

/* One step of `graph` (reading `outputs`) on interp and on cpu, every
 * buffer of cpu's NaN first; slots: half the MLM slots dead. The loss,
 * gradients and outputs must match (f32 against double, as test_cpu). */
static void compare_step(const char *graph, const char *const *outputs, bool slots) {
  Graph g;
  if (!compile_step(&g, graph, outputs)) {
    CHECK(0);
    return;
  }
  Exec *ref = check_make("interp", &g, 5), *dev = check_make("cpu", &g, 5);
  if (ref && dev) {
    poison(dev, &g);
    bert_batch_fill(&ref, 1, &g, 17, 0.0); /* lr 0: see backend_check.h (RefStep) */
    bert_batch_fill(&dev, 1, &g, 17, 0.0);
    if (slots) {
      half_the_slots(ref, &g);
      half_the_slots(dev, &g);
      predict_padding(ref, &g);
      predict_padding(dev, &g);
    }
    Diag d;
    diag_init(&d);
    CHECK(exec_run(ref, &check_step_ctx, &d) && exec_run(dev, &check_step_ctx, &d));
    diag_print(&d, stderr);
    diag_free(&d);
    StepResult r = {0};
    r.worst_name = "";
    /* the gradients and the loss: f32 against double, as test_cpu */
    check_values(dev, ref, &g, graph, CMP_PINNED, 5e-3, &r);
    fprintf(stderr, "  %s: %d values compared, worst relative error %.3g (%s)\n", graph, r.n_checked, r.worst,
            r.worst_name);
    CHECK(r.n_checked > 40);
    CHECK_EQ_INT(r.n_failed, 0);
  }
  if (ref) exec_destroy(ref);
  if (dev) exec_destroy(dev);
  graph_free(&g);
}

/* bert_batch_fill's lengths: 4 to 12 tokens of 12 */
TEST(a_pretrain_step_leaving_out_dead_slots_and_padding_matches_interp) {
  compare_step("pretrain", losses_only, true);
}
/* By row blocks (passes/row_blocks.c) of 3, 3 and 2 of the 8 MLM rows,
 * every other one dead: each block's guard is its own slice of the
 * weights. */
TEST(a_pretrain_step_by_row_blocks_leaving_out_dead_slots_matches_interp) {
  setenv("BC_ROW_BLOCK_BYTES", "768", 1);
  compare_step("pretrain", losses_only, true);
  unsetenv("BC_ROW_BLOCK_BYTES");
}
TEST(a_pretrain_step_reading_the_logits_matches_interp) { compare_step("pretrain", NULL, true); }
TEST(an_nli_step_leaving_out_padding_matches_interp) { compare_step("nli", NULL, false); }

/* At a size where the guarded GEMMs take their compacted paths (MLM rows
 * and encoder rows in the hundreds; cpu_gemm_rows.c's MIN_ROWS) and the
 * vocabulary's gradient is made in column blocks (chunk.c), each block's
 * d W GEMM taking the rows its d X GEMM compacted (cpu.c: compacted): one
 * step with the row guards against one without (BC_NO_ROW_GUARDS), both
 * cpu, every buffer of the guarded one NaN first. */
TEST(guards_at_a_compacting_size_match_the_unguarded_step) {
  static const Setting mid[] = {
      {"hidden", "32"}, {"ffn", "64"}, {"heads", "2"}, {"layers", "2"}, {"max_len", "64"}, {"batch", "16"},
  };
  AdamOptions a;
  adam_options_default(&a);
  Graph g;
  if (!check_compile_outputs(&g, "pretrain", mid, sizeof mid / sizeof mid[0], &a, losses_only)) {
    CHECK(0);
    return;
  }
  Exec *dev = check_make("cpu", &g, 5);
  bool had = check_setenv("BC_NO_ROW_GUARDS", true);
  Exec *ref = check_make("cpu", &g, 5);
  check_setenv("BC_NO_ROW_GUARDS", had);
  if (ref && dev) {
    poison(dev, &g);
    bert_batch_fill(&ref, 1, &g, 23, 0.0);
    bert_batch_fill(&dev, 1, &g, 23, 0.0);
    Diag d;
    diag_init(&d);
    CHECK(exec_run(ref, &check_step_ctx, &d) && exec_run(dev, &check_step_ctx, &d));
    diag_print(&d, stderr);
    diag_free(&d);
    /* the key biases' gradients are 0 in exact arithmetic (softmax
     * ignores a per-query constant): rounding noise in either, and so
     * their Adam moments; not compared (set to 0 in both) */
    for (int i = 0; i < g.params.n; i++) {
      const Value *pv = &g.values.data[g.params.data[i]];
      if (!strstr(pv->name, "W_k.b")) continue;
      char name[256];
      ValueId noise[3] = {pv->grad, -1, -1};
      snprintf(name, sizeof name, "%s.adam_m", pv->name);
      noise[1] = graph_find(&g, name);
      snprintf(name, sizeof name, "%s.adam_v", pv->name);
      noise[2] = graph_find(&g, name);
      double zero[64] = {0};
      CHECK(shape_numel(&pv->shape) <= 64);
      diag_init(&d);
      for (int k = 0; k < 3; k++)
        CHECK(noise[k] >= 0 && exec_write(ref, noise[k], zero, DTYPE_F64, &d) &&
              exec_write(dev, noise[k], zero, DTYPE_F64, &d));
      diag_free(&d);
    }
    StepResult r = {0};
    r.worst_name = "";
    /* f32 both: sums over other row sets and in other orders */
    check_values(dev, ref, &g, "guarded vs not", CMP_PINNED, 1e-4, &r);
    fprintf(stderr, "  %d values compared, worst relative error %.3g (%s)\n", r.n_checked, r.worst, r.worst_name);
    CHECK(r.n_checked > 40);
    CHECK_EQ_INT(r.n_failed, 0);
  }
  if (ref) exec_destroy(ref);
  if (dev) exec_destroy(dev);
  graph_free(&g);
}

TEST_MAIN()
