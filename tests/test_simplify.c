/* test_simplify.c — constant folding, identities, CSE and dead-code
 * elimination: node counts after the pass, and equal results before and
 * after on the reference interpreter. */
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tests/test.h"

static int count_op(const Graph *g, Op op) {
  int n = 0;
  for (int i = 0; i < g->nodes.n; i++) n += g->nodes.data[i].op == op;
  return n;
}

/* Runs g on interp with input x filled by f(i) and returns output 0 in out. */
static void run_interp(const Graph *g, double *out, int n_out) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(&backend_interp, g, &d);
  CHECK(e != NULL);
  if (!e) {
    diag_print(&d, stderr);
    diag_free(&d);
    return;
  }
  for (int i = 0; i < g->inputs.n; i++) {
    const Value *v = &g->values.data[g->inputs.data[i]];
    int64_t n = shape_numel(&v->shape);
    double *buf = malloc(sizeof(double) * (size_t)n);
    for (int64_t j = 0; j < n; j++) buf[j] = 0.25 * (double)(j % 7) - 0.6;
    CHECK(exec_write(e, g->inputs.data[i], buf, DTYPE_F64, &d));
    free(buf);
  }
  CHECK(exec_init_params(e, 7, &d));
  RunContext ctx = {1, 0, 0};
  CHECK(exec_run(e, &ctx, &d));
  CHECK_EQ_INT(shape_numel(&g->values.data[g->outputs.data[0]].shape), n_out);
  CHECK(exec_read(e, g->outputs.data[0], out, DTYPE_F64, &d));
  diag_print(&d, stderr);
  exec_destroy(e);
  diag_free(&d);
}

TEST(fold_cse_dce) {
  Graph g;
  graph_init(&g, "s");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 3, 4), SRCLOC_NONE);
  ValueId one = graph_unary(&g, OP_EXP, graph_const(&g, 0, DTYPE_F32, shape_of(0)));
  ValueId x1 = graph_binary(&g, OP_MUL, x, one); /* x * exp(0) -> x */
  ValueId t1 = graph_unary(&g, OP_TANH, x1);
  ValueId t2 = graph_unary(&g, OP_TANH, x); /* same as t1 after folding */
  ValueId dead = graph_unary(&g, OP_LOG, x);
  (void)dead;
  ValueId y = graph_binary(&g, OP_ADD, t1, t2);
  vec_push(&g.outputs, y);
  double before[12], after[12];
  run_interp(&g, before, 12);
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&g, NULL, &d));
  CHECK(graph_verify(&g, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK_EQ_INT(g.nodes.n, 2); /* tanh, add */
  CHECK_EQ_INT(count_op(&g, OP_TANH), 1);
  CHECK_EQ_INT(count_op(&g, OP_LOG), 0);
  run_interp(&g, after, 12);
  for (int i = 0; i < 12; i++) CHECK_NEAR(after[i], before[i], 0, 0);
  graph_free(&g);
}

/* With CSE switched off (BC_NO_CSE) the duplicate stays; folding and dead
 * code go as before. */
TEST(cse_switched_off) {
  Graph g;
  graph_init(&g, "s");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 3), SRCLOC_NONE);
  ValueId t1 = graph_unary(&g, OP_TANH, x);
  ValueId t2 = graph_unary(&g, OP_TANH, x);
  graph_unary(&g, OP_LOG, x); /* dead */
  vec_push(&g.outputs, graph_binary(&g, OP_ADD, t1, t2));
  OptSwitches off = {0};
  off.cse = true;
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&g, &off, &d));
  CHECK_EQ_INT(count_op(&g, OP_TANH), 2);
  CHECK_EQ_INT(count_op(&g, OP_LOG), 0);
  off.cse = false;
  CHECK(simplify_run(&g, &off, &d));
  CHECK_EQ_INT(count_op(&g, OP_TANH), 1);
  diag_free(&d);
  graph_free(&g);
}

/* Dropout with rate 0, as the model library writes it, disappears. */
TEST(dropout_rate_zero_removed) {
  Graph g;
  graph_init(&g, "s");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 4, 5), SRCLOC_NONE);
  ValueId u = graph_random(&g, shape_of(2, 4, 5), 17);
  ValueId p = graph_const(&g, 0.0, DTYPE_F32, shape_of(0));
  ValueId drop = graph_binary(&g, OP_LT, u, p);
  ValueId scale = graph_binary(&g, OP_DIV, graph_const(&g, 1.0, DTYPE_F32, shape_of(0)),
                               graph_binary(&g, OP_SUB, graph_const(&g, 1.0, DTYPE_F32, shape_of(0)), p));
  ValueId kept = graph_binary(&g, OP_MUL, x, scale);
  ValueId y = graph_select(&g, drop, graph_const_like(&g, 0.0, x), kept);
  ValueId z = graph_unary(&g, OP_RELU, y);
  vec_push(&g.outputs, z);
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&g, NULL, &d));
  CHECK_EQ_INT(g.nodes.n, 1);
  CHECK_EQ_INT(count_op(&g, OP_RELU), 1);
  CHECK_EQ_INT(g.nodes.data[0].in[0], g.inputs.data[0]);
  diag_free(&d);
  graph_free(&g);
}

/* Assigns are roots; a parameter's gradient survives; outputs keep names. */
TEST(roots_kept) {
  Graph g;
  graph_init(&g, "s");
  ValueId w = graph_add_param(&g, "w", DTYPE_F32, shape_of(1, 3), (Init){INIT_ONES, 0}, SRCLOC_NONE);
  ValueId t = graph_unary(&g, OP_NEG, w);
  ValueId gr = graph_unary(&g, OP_EXP, w);
  g.values.data[w].grad = gr;
  graph_assign(&g, w, t);
  graph_unary(&g, OP_TANH, w); /* dead */
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&g, NULL, &d));
  CHECK_EQ_INT(g.nodes.n, 3);
  CHECK_EQ_INT(count_op(&g, OP_ASSIGN), 1);
  ValueId nw = graph_find(&g, "w");
  CHECK(nw >= 0 && g.values.data[nw].grad >= 0);
  CHECK_EQ_INT(g.nodes.data[g.values.data[g.values.data[nw].grad].node].op, OP_EXP);
  CHECK(graph_verify(&g, &d));
  diag_free(&d);
  graph_free(&g);
}

/* CSE names a survivor merged from differently named values for what it
 * is, not after its first use; outputs keep their names; the block
 * instance is the one holding both. */
TEST(cse_names_shared_values_neutrally) {
  Graph g;
  graph_init(&g, "s");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(1, 4), SRCLOC_NONE);
  BlockId enc = graph_add_block(&g, "enc", "encoder", SRCLOC_NONE, -1);
  BlockId a0 = graph_add_block(&g, "enc.blk.0.attn", "attention", SRCLOC_NONE, enc);
  BlockId a1 = graph_add_block(&g, "enc.blk.1.attn", "attention", SRCLOC_NONE, enc);
  g.cur_block = a0;
  g.cur_scope = "enc.blk.0.attn";
  ValueId c0 = graph_const(&g, 8.0, DTYPE_F32, shape_of(1, 4));
  graph_set_name(&g, c0, "enc.blk.0.attn.sqrt_d");
  ValueId t0 = graph_unary(&g, OP_TANH, x);
  graph_set_name(&g, t0, "enc.blk.0.attn.t");
  g.cur_block = a1;
  g.cur_scope = "enc.blk.1.attn";
  ValueId t1 = graph_unary(&g, OP_TANH, x);
  graph_set_name(&g, t1, "enc.blk.1.attn.t");
  g.cur_block = -1;
  g.cur_scope = NULL;
  ValueId c1 = graph_const(&g, 8.0, DTYPE_F32, shape_of(1, 4));
  graph_set_name(&g, c1, "loss_norm");
  ValueId s0 = graph_binary(&g, OP_DIV, t0, c0);
  ValueId s1 = graph_binary(&g, OP_DIV, t1, c1);
  ValueId out = graph_binary(&g, OP_ADD, s0, s1);
  graph_set_name(&g, out, "y");
  ValueId same = graph_binary(&g, OP_ADD, s0, s1); /* merges into the output */
  graph_set_name(&g, same, "other");
  vec_push(&g.outputs, out);
  vec_push(&g.outputs, graph_binary(&g, OP_MUL, same, same));
  Diag d;
  diag_init(&d);
  CHECK(simplify_run(&g, NULL, &d));
  CHECK_EQ_INT(count_op(&g, OP_CONSTANT), 1);
  CHECK_EQ_INT(count_op(&g, OP_TANH), 1);
  CHECK_EQ_INT(g.blocks.n, 3);
  for (int i = 0; i < g.nodes.n; i++) {
    const Node *n = &g.nodes.data[i];
    const char *nm = g.values.data[n->out].name;
    if (n->op == OP_CONSTANT) {
      CHECK_STR(nm, "const.8");
      CHECK_EQ_INT(n->block, -1);
    }
    if (n->op == OP_TANH) {
      CHECK_STR(nm, "enc.blk.*.attn.t");
      CHECK_EQ_INT(n->block, enc);
    }
  }
  CHECK_STR(g.values.data[g.outputs.data[0]].name, "y");
  diag_free(&d);
  graph_free(&g);
}

TEST_MAIN()
