/* test_narrow.c — computing only the rows a slice reads (passes/narrow.c):
 * the graph it makes against the same graph compiled with BC_NO_NARROW,
 * both on the interpreter, one training step on the same parameters and
 * batch: loss, outputs and every parameter gradient equal (double, up to
 * the order of sums). The nli step narrows its last encoder layer to the
 * <cls> rows, dropout included (its streams keyed by the unsliced shapes);
 * a slice starting past row 0 narrows the arithmetic but not the dropout
 * (its stream has no offset); pretrain reads every row and is left alone. */
#include "tests/test.h"
#include "tests/backend_check.h"

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"},
};
enum { N_TINY = sizeof tiny / sizeof tiny[0] };

/* The training step compiled with narrowing on or off. */
static bool compile_step(Graph *g, const char *graph, bool narrow) {
  bool had = check_setenv("BC_NO_NARROW", !narrow);
  bool ok = check_compile(g, graph, tiny, N_TINY, true);
  if (had) setenv("BC_NO_NARROW", "1", 1);
  else unsetenv("BC_NO_NARROW");
  return ok;
}

/* Attention nodes with one query row per example. */
static int one_query_attentions(const Graph *g) {
  int n = 0;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *nd = &g->nodes.data[i];
    n += nd->op == OP_ATTENTION && g->values.data[nd->in[0]].shape.dim[1] == 1;
  }
  return n;
}

/* Reads value v of e (n elements) as doubles. */
static double *read_all(Exec *e, const Graph *g, ValueId v) {
  int64_t n = shape_numel(&g->values.data[v].shape);
  double *x = bc_malloc(sizeof(double) * (size_t)(n ? n : 1));
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, v, x, DTYPE_F64, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  return x;
}

/* One step of a and b (the same graph, narrowed and not) on interp from
 * the same parameters and inputs (bert_batch_fill, or x filled here when
 * fill is false); their loss, outputs and parameter gradients compared by
 * name. Returns how many values were compared. */
static int compare_narrowed(const Graph *a, const Graph *b, bool fill) {
  Exec *ea = check_make("interp", a, 5), *eb = check_make("interp", b, 5);
  if (!ea || !eb) {
    if (ea) exec_destroy(ea);
    if (eb) exec_destroy(eb);
    return 0;
  }
  Diag d;
  diag_init(&d);
  if (fill) {
    bert_batch_fill(&ea, 1, a, 17, 0.0);
    bert_batch_fill(&eb, 1, b, 17, 0.0);
  } else {
    for (int i = 0; i < a->inputs.n; i++) {
      ValueId va = a->inputs.data[i], vb = graph_find(b, a->values.data[va].name);
      int64_t n = shape_numel(&a->values.data[va].shape);
      double *x = bc_malloc(sizeof(double) * (size_t)n);
      for (int64_t j = 0; j < n; j++) x[j] = sin(0.7 * (double)j + 0.3 * i);
      CHECK(exec_write(ea, va, x, DTYPE_F64, &d) && exec_write(eb, vb, x, DTYPE_F64, &d));
      free(x);
    }
  }
  const RunContext ctx = {9, 2, 0};
  CHECK(exec_run(ea, &ctx, &d) && exec_run(eb, &ctx, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  int compared = 0;
  /* the loss, the outputs (by position), the gradients (by parameter name) */
  ValueId pairs[64][2];
  int np = 0;
  pairs[np][0] = a->loss, pairs[np++][1] = b->loss;
  for (int i = 0; i < a->outputs.n && np < 64; i++) pairs[np][0] = a->outputs.data[i], pairs[np++][1] = b->outputs.data[i];
  for (int i = 0; i < a->params.n && np < 64; i++) {
    ValueId pa = a->params.data[i], pb = graph_find(b, a->values.data[pa].name);
    CHECK(pb >= 0);
    if (pb < 0 || a->values.data[pa].grad < 0) continue;
    pairs[np][0] = a->values.data[pa].grad, pairs[np++][1] = b->values.data[pb].grad;
  }
  for (int i = 0; i < np; i++) {
    const Value *va = &a->values.data[pairs[i][0]];
    CHECK(shape_eq(&va->shape, &b->values.data[pairs[i][1]].shape));
    double *x = read_all(ea, a, pairs[i][0]), *y = read_all(eb, b, pairs[i][1]);
    double e = rel_err(x, y, shape_numel(&va->shape));
    /* the same arithmetic in double, sums over rows without the rows that
     * add exact zeros */
    if (!(e <= 1e-12)) fprintf(stderr, "  %s: relative error %.3g\n", va->name, e);
    CHECK(e <= 1e-12);
    compared++;
    free(x);
    free(y);
  }
  exec_destroy(ea);
  exec_destroy(eb);
  return compared;
}

TEST(nli_last_layer_runs_on_cls_rows) {
  Graph narrowed, full;
  CHECK(compile_step(&narrowed, "nli", true));
  CHECK(compile_step(&full, "nli", false));
  /* the last layer's attention has one query per example, the first all */
  CHECK_EQ_INT(one_query_attentions(&narrowed), 1);
  CHECK_EQ_INT(one_query_attentions(&full), 0);
  int n = compare_narrowed(&narrowed, &full, true);
  fprintf(stderr, "  nli: %d values equal\n", n);
  CHECK(n > 30);
  graph_free(&narrowed);
  graph_free(&full);
}

TEST(pretrain_reads_every_row_and_is_unchanged) {
  Graph narrowed, full;
  CHECK(compile_step(&narrowed, "pretrain", true));
  CHECK(compile_step(&full, "pretrain", false));
  CHECK_EQ_INT(narrowed.nodes.n, full.nodes.n);
  CHECK_EQ_INT(one_query_attentions(&narrowed), 0);
  graph_free(&narrowed);
  graph_free(&full);
}

/* loss = sum(select(random < 0.3, 0, relu(x W))[:, 2:4, :]): rows 2 and 3
 * of the product and the relu; the dropout stream, which cannot start at
 * row 2, stays whole and is sliced. */
static void middle_rows(Graph *g) {
  graph_init(g, "middle");
  ValueId x = graph_add_input(g, "x", DTYPE_F32, shape_of(3, 2, 6, 4), SRCLOC_NONE);
  ValueId w = graph_add_param(g, "W", DTYPE_F32, shape_of(2, 4, 4), (Init){INIT_XAVIER, 0}, SRCLOC_NONE);
  ValueId r = graph_unary(g, OP_RELU, graph_matmul(g, x, w, false, false));
  ValueId u = graph_random(g, shape_of(3, 2, 6, 4), 77);
  ValueId drop = graph_binary(g, OP_LT, u, graph_const(g, 0.3, DTYPE_F32, shape_of(3, 2, 6, 4)));
  ValueId y = graph_select(g, drop, graph_const(g, 0, DTYPE_F32, shape_of(3, 2, 6, 4)), r);
  ValueId s = graph_slice(g, y, 1, 2, 4);
  for (int axis = 2; axis >= 0; axis--) s = graph_reduce(g, OP_REDUCE_SUM, s, axis);
  g->loss = graph_reshape(g, s, shape_of(1, 1));
  vec_push(&g->outputs, g->loss);
}

TEST(rows_past_the_first_narrow_all_but_the_dropout) {
  Graph a, b;
  middle_rows(&a);
  middle_rows(&b);
  Diag d;
  diag_init(&d);
  CHECK(narrow_run(&a, &d));
  int sliced_matmul = 0, whole_random = 0;
  for (int i = 0; i < a.nodes.n; i++) {
    const Node *n = &a.nodes.data[i];
    sliced_matmul += n->op == OP_MATMUL && a.values.data[n->out].shape.dim[1] == 2;
    whole_random += n->op == OP_RANDOM && a.values.data[n->out].shape.dim[1] == 6;
  }
  CHECK_EQ_INT(sliced_matmul, 1);
  CHECK_EQ_INT(whole_random, 1);
  CHECK(graph_verify(&a, &d));
  CHECK(autodiff_run(&a, &d) && autodiff_run(&b, &d));
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK_EQ_INT(compare_narrowed(&a, &b, false), 3);
  graph_free(&a);
  graph_free(&b);
}

TEST_MAIN()
