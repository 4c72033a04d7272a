/* test_ir.c — graph building, shape rules, verifier, compaction, printers. */
#include "graph/ir.h"
#include "tests/test.h"

static int count_op(const Graph *g, Op op) {
  int n = 0;
  for (int i = 0; i < g->nodes.n; i++) n += g->nodes.data[i].op == op;
  return n;
}

TEST(op_table) {
  CHECK_EQ_INT(op_from_name("matmul"), OP_MATMUL);
  CHECK_EQ_INT(op_from_name("reduce_sum"), OP_REDUCE_SUM);
  CHECK_EQ_INT(op_from_name("nope"), OP_COUNT);
  CHECK(op_info[OP_ADD].flags & OPF_ELEMENTWISE);
  CHECK(op_info[OP_ASSIGN].flags & OPF_SIDE_EFFECT);
  for (int op = 0; op < OP_COUNT; op++) /* every row named, once */
    CHECK_MSG(op_from_name(op_info[op].name) == (Op)op, "op %d '%s'", op, op_info[op].name);
}

TEST(shape_rules) {
  Graph g;
  graph_init(&g, "t");
  Diag d;
  diag_init(&d);
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(3, 2, 5, 4), SRCLOC_NONE);
  ValueId w = graph_add_param(&g, "w", DTYPE_F32, shape_of(2, 4, 7), (Init){INIT_XAVIER, 0}, SRCLOC_NONE);
  ValueId y = graph_matmul(&g, x, w, false, false);
  char b[96];
  CHECK_STR(shape_str(&g.values.data[y].shape, b), "[2, 5, 7]");
  ValueId yt = graph_matmul(&g, x, x, false, true);
  CHECK_STR(shape_str(&g.values.data[yt].shape, b), "[2, 5, 5]");
  ValueId s = graph_reduce(&g, OP_REDUCE_SUM, y, -1);
  CHECK_STR(shape_str(&g.values.data[s].shape, b), "[2, 5, 1]");
  CHECK_EQ_INT(g.nodes.data[g.values.data[s].node].a.axis, 2);
  ValueId sum = graph_binary(&g, OP_ADD, y, s); /* broadcast inserted */
  CHECK_EQ_INT(count_op(&g, OP_BROADCAST), 1);
  CHECK_STR(shape_str(&g.values.data[sum].shape, b), "[2, 5, 7]");
  int perm[3] = {2, 0, 1};
  ValueId p = graph_permute(&g, sum, perm);
  CHECK_STR(shape_str(&g.values.data[p].shape, b), "[7, 2, 5]");
  ValueId idx = graph_add_input(&g, "idx", DTYPE_I32, shape_of(2, 3, 6), SRCLOC_NONE);
  ValueId gt = graph_gather(&g, w, idx);
  CHECK_STR(shape_str(&g.values.data[gt].shape, b), "[3, 6, 7]");
  ValueId sc = graph_scatter_add(&g, idx, gt, shape_of(2, 4, 7));
  CHECK_STR(shape_str(&g.values.data[sc].shape, b), "[4, 7]");
  ValueId st = graph_sum_to(&g, sum, shape_of(2, 1, 7));
  CHECK_STR(shape_str(&g.values.data[st].shape, b), "[1, 7]");

  /* errors: matmul inner mismatch, at the current location */
  g.cur_loc = (SrcLoc){"m.yaml", 3, 5};
  ValueId in2[2] = {x, x};
  Attrs a = {0};
  CHECK_EQ_INT(graph_op(&g, OP_MATMUL, 2, in2, &a, &d), -1);
  CHECK(strstr(diag_first(&d), "m.yaml:3:5: error: matmul: inner dimensions differ") == diag_first(&d));
  diag_free(&d);
  diag_init(&d);
  a.axis = 3;
  CHECK_EQ_INT(graph_op(&g, OP_REDUCE_SUM, 1, &x, &a, &d), -1);
  CHECK(strstr(diag_first(&d), "axis 3 out of range for rank 3") != NULL);
  diag_free(&d);
  diag_init(&d);
  a = (Attrs){0};
  a.shape = shape_of(2, 3, 3);
  CHECK_EQ_INT(graph_op(&g, OP_RESHAPE, 1, &x, &a, &d), -1);
  CHECK(strstr(diag_first(&d), "reshape: [2, 5, 4] has 40 elements, [3, 3] has 9") != NULL);
  CHECK(graph_verify(&g, &d) || true);
  diag_free(&d);
  diag_init(&d);
  CHECK(graph_verify(&g, &d));
  diag_free(&d);
  graph_free(&g);
}

TEST(compact_and_verify) {
  Graph g;
  graph_init(&g, "t");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(1, 4), SRCLOC_NONE);
  ValueId a = graph_unary(&g, OP_EXP, x);
  ValueId b = graph_unary(&g, OP_TANH, x); /* dead */
  ValueId c = graph_binary(&g, OP_MUL, a, a);
  (void)b;
  vec_push(&g.outputs, c);
  bool keep[3] = {true, false, true};
  ValueId *map = graph_compact(&g, keep);
  CHECK_EQ_INT(g.nodes.n, 2);
  CHECK_EQ_INT(map[b], -1);
  CHECK(map[c] >= 0);
  CHECK_EQ_INT(g.outputs.data[0], map[c]);
  free(map);
  Diag d;
  diag_init(&d);
  CHECK(graph_verify(&g, &d));
  /* break the order invariant: the verifier must notice */
  g.nodes.data[0].in[0] = g.nodes.data[1].out;
  CHECK(!graph_verify(&g, &d));
  CHECK(strstr(diag_first(&d), "before it is computed") != NULL);
  diag_free(&d);
  graph_free(&g);
}

TEST(print_is_deterministic) {
  Graph g;
  graph_init(&g, "p");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 2, 3), SRCLOC_NONE);
  ValueId w = graph_add_param(&g, "w", DTYPE_F32, shape_of(2, 3, 3), (Init){INIT_XAVIER, 0}, SRCLOC_NONE);
  g.cur_loc = (SrcLoc){"f.yaml", 7, 3};
  ValueId y = graph_matmul(&g, x, w, false, true);
  vec_push(&g.outputs, y);
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  graph_print(&g, f);
  fclose(f);
  CHECK(strstr(buf, "%2 %2 : f32[2, 3] = matmul(%0, %1) transpose_b  @ f.yaml:7:3") != NULL);
  CHECK(strstr(buf, "counts: 1 nodes, 1 parameter tensors, 9 parameter elements") != NULL);
  free(buf);
  f = open_memstream(&buf, &n);
  graph_print_dot(&g, DOT_NODES, f);
  fclose(f);
  CHECK(strncmp(buf, "digraph \"p\" {", 13) == 0);
  CHECK(strstr(buf, "v0 -> v2;") != NULL);
  free(buf);
  graph_free(&g);
}

/* DOT: nodes say their value name and YAML line; block instances are
 * nested clusters; the block view draws one node per instance with the
 * types crossing on its edges. */
TEST(dot_clusters_and_block_view) {
  Graph g;
  graph_init(&g, "d");
  ValueId x = graph_add_input(&g, "x", DTYPE_F32, shape_of(2, 2, 3), SRCLOC_NONE);
  BlockId outer = graph_add_block(&g, "enc", "encoder", (SrcLoc){"m.yaml", 3, 7}, -1);
  BlockId inner = graph_add_block(&g, "enc.ln", "layer_norm", (SrcLoc){"m.yaml", 9, 7}, outer);
  BlockId head = graph_add_block(&g, "head", "linear", (SrcLoc){"m.yaml", 12, 7}, -1);
  g.cur_loc = (SrcLoc){"lib.yaml", 20, 5};
  g.cur_block = outer;
  ValueId a = graph_unary(&g, OP_TANH, x);
  graph_set_name(&g, a, "enc.a");
  g.cur_block = inner;
  ValueId b = graph_unary(&g, OP_EXP, a);
  graph_set_name(&g, b, "enc.ln.b");
  g.cur_block = head;
  ValueId c = graph_reduce(&g, OP_REDUCE_SUM, b, 1);
  graph_set_name(&g, c, "head.c");
  vec_push(&g.outputs, c);
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  graph_print_dot(&g, DOT_NODES, f);
  fclose(f);
  CHECK(strstr(buf, "label=\"enc.ln.b\\nexp f32[2, 3]\\nlib.yaml:20\"") != NULL);
  const char *c0 = strstr(buf, "subgraph cluster_b0 {"), *c1 = strstr(buf, "subgraph cluster_b1 {");
  const char *c2 = strstr(buf, "subgraph cluster_b2 {");
  CHECK(c0 && c1 && c2 && c0 < c1 && c1 < c2);
  if (c1 && c2) { /* b1 nests in b0: two closing braces between b1's node and b2 */
    const char *p = strstr(c1, "v2 [");
    int closes = 0;
    for (; p && p < c2; p++) closes += *p == '}';
    CHECK_EQ_INT(closes, 2);
  }
  free(buf);
  f = open_memstream(&buf, &n);
  graph_print_dot(&g, DOT_BLOCKS, f);
  fclose(f);
  CHECK(strstr(buf, "subgraph cluster_b0 {") != NULL); /* it holds another */
  CHECK(strstr(buf, "subgraph cluster_b1") == NULL);   /* a leaf is a node */
  CHECK(strstr(buf, "  b1 -> b2 [label=\"f32[2, 3]\"];") != NULL);
  CHECK(strstr(buf, "  b0 -> b1 [label=\"f32[2, 3]\"];") != NULL);
  CHECK(strstr(buf, "  v0 -> b0 [label=\"f32[2, 3]\"];") != NULL);
  CHECK(strstr(buf, "  b2 -> out0;") != NULL);
  CHECK(strstr(buf, " -> v") == NULL); /* no op node outside a block */
  free(buf);
  graph_free(&g);
}

TEST(diag_caret) {
  const char *path = "/tmp/bc_test_diag.yaml";
  FILE *f = fopen(path, "w");
  fputs("a: 1\nbb: nope\n", f);
  fclose(f);
  Diag d;
  diag_init(&d);
  diag_error(&d, (SrcLoc){path, 2, 5}, "bad value '%s'", "nope");
  CHECK_STR(diag_first(&d), "/tmp/bc_test_diag.yaml:2:5: error: bad value 'nope'\n  bb: nope\n      ^");
  CHECK_EQ_INT(d.n_errors, 1);
  diag_free(&d);
}

TEST_MAIN()
