/* test_interp.c — forward values of every op on the reference interpreter,
 * on small cases computed by hand; data errors (gather out of range);
 * assign timing; random streams across replicas; parameter initialization.
 * Exact comparisons are meant: every case is exact in double or within one
 * rounding of a libm call. */
#include "runtime/backend.h"
#include "runtime/philox.h"
#include "test.h"

/* ---- helpers ----------------------------------------------------------- */

static ValueId in_f32(Graph *g, const char *name, Shape s) {
  return graph_add_input(g, name, DTYPE_F32, s, SRCLOC_NONE);
}

static Exec *make_exec(Graph *g) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(backend_by_name("interp"), g, &d);
  if (!e) diag_print(&d, stderr);
  diag_free(&d);
  return e;
}

static void put(Exec *e, ValueId v, const double *x) {
  Diag d;
  diag_init(&d);
  bool ok = exec_write(e, v, x, DTYPE_F64, &d);
  CHECK(ok);
  diag_free(&d);
}

static bool run_step(Exec *e, uint64_t seed, uint32_t step, int64_t offset, Diag *d) {
  RunContext ctx = {seed, step, offset};
  return exec_run(e, &ctx, d);
}

static void run_ok(Exec *e) {
  Diag d;
  diag_init(&d);
  bool ok = run_step(e, 1, 0, 0, &d);
  if (!ok) diag_print(&d, stderr);
  CHECK(ok);
  diag_free(&d);
}

/* Reads v (n elements) and compares with want[] to 1e-15 relative. */
static void expect(Exec *e, ValueId v, const double *want, int n) {
  const Value *val = &e->graph->values.data[v];
  if (shape_numel(&val->shape) != n || n > 256) {
    CHECK_EQ_INT(shape_numel(&val->shape), n);
    return;
  }
  double got[256];
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, v, got, DTYPE_F64, &d));
  diag_free(&d);
  for (int i = 0; i < n; i++) CHECK_NEAR(got[i], want[i], 1e-15, 1e-15);
}

/* ---- elementwise: the known values (`ex`) of every row of ops.def ------- */

#define EX_LIST(...) {__VA_ARGS__}
#define UNARY(ID, name, ref, cuda, llvm, vjp, dom, tol, ex) static const double ex_##ID[] = EX_LIST ex;
#define BINARY(ID, name, ref, cuda, llvm, va, vb, dom, tol, ex) static const double ex_##ID[] = EX_LIST ex;
#include "graph/ops.def"

typedef struct {
  const double *ex;
  int n; /* doubles in ex */
} EwRow;

static const EwRow ew_rows[OP_COUNT] = {
#define UNARY(ID, ...) [OP_##ID] = {ex_##ID, (int)(sizeof ex_##ID / sizeof *ex_##ID)},
#define BINARY(ID, ...) [OP_##ID] = {ex_##ID, (int)(sizeof ex_##ID / sizeof *ex_##ID)},
#include "graph/ops.def"
};

/* Every row has whole examples, a domain letter per input and a tolerance,
 * and the interpreter gives its known values to 1e-15. */
TEST(elementwise_every_op) {
  for (int op = 0; op < OP_COUNT; op++) {
    const OpInfo *info = &op_info[op];
    if (!(info->flags & OPF_ELEMENTWISE)) continue;
    int arity = info->n_in, per = arity + 1;
    const EwRow *r = &ew_rows[op];
    CHECK_MSG(r->n > 0 && r->n % per == 0, "ops.def row '%s': ex needs (input%s, want) tuples", info->name,
              arity == 1 ? "" : "s");
    CHECK_MSG((int)strlen(info->dom) == arity && strspn(info->dom, "xpzk") == (size_t)arity,
              "ops.def row '%s': dom must be one of x p z k per input, got \"%s\"", info->name, info->dom);
    CHECK_MSG(info->tol >= 0 && info->tol <= 1e-4, "ops.def row '%s': tol %g", info->name, info->tol);
    for (int c = 0; c + per <= r->n; c += per) {
      Graph g;
      graph_init(&g, "ew");
      ValueId a = in_f32(&g, "a", shape_of(1, 1)), b = in_f32(&g, "b", shape_of(1, 1));
      ValueId y = arity == 1 ? graph_unary(&g, (Op)op, a) : graph_binary(&g, (Op)op, a, b);
      Exec *e = make_exec(&g);
      double zero = 0;
      put(e, a, &r->ex[c]);
      put(e, b, arity == 1 ? &zero : &r->ex[c + 1]);
      run_ok(e);
      expect(e, y, &r->ex[c + arity], 1);
      exec_destroy(e);
      graph_free(&g);
    }
  }
}

/* i32 arithmetic truncates toward zero like C; casts truncate. */
TEST(int32_semantics) {
  Graph g;
  graph_init(&g, "i32");
  ValueId a = graph_add_input(&g, "a", DTYPE_I32, shape_of(1, 4), SRCLOC_NONE);
  ValueId b = graph_add_input(&g, "b", DTYPE_I32, shape_of(1, 4), SRCLOC_NONE);
  ValueId f = in_f32(&g, "f", shape_of(1, 4));
  ValueId q = graph_binary(&g, OP_DIV, a, b);
  ValueId s = graph_binary(&g, OP_ADD, a, b);
  ValueId c = graph_cast(&g, f, DTYPE_I32);
  ValueId n = graph_unary(&g, OP_NEG, a);
  Exec *e = make_exec(&g);
  int32_t av[4] = {7, -7, 2147483647, 9}, bv[4] = {-2, 2, 1, 3};
  float fv[4] = {2.7f, -2.7f, 0.5f, -0.5f};
  Diag d;
  diag_init(&d);
  CHECK(exec_write(e, a, av, DTYPE_I32, &d));
  CHECK(exec_write(e, b, bv, DTYPE_I32, &d));
  CHECK(exec_write(e, f, fv, DTYPE_F32, &d));
  run_ok(e);
  expect(e, q, (double[]){-3, -3, 2147483647, 3}, 4);
  expect(e, s, (double[]){5, -5, -2147483648.0, 12}, 4); /* wraps like int32 */
  expect(e, c, (double[]){2, -2, 0, 0}, 4);
  expect(e, n, (double[]){-7, 7, -2147483647, -9}, 4);
  int32_t back[4];
  CHECK(exec_read(e, s, back, DTYPE_I32, &d));
  CHECK(back[2] == INT32_MIN && back[3] == 12);
  diag_free(&d);
  exec_destroy(e);
  graph_free(&g);
}

TEST(select_op) {
  Graph g;
  graph_init(&g, "sel");
  ValueId c = in_f32(&g, "c", shape_of(1, 3)), a = in_f32(&g, "a", shape_of(1, 3));
  ValueId b = in_f32(&g, "b", shape_of(1, 3));
  ValueId y = graph_select(&g, c, a, b);
  Exec *e = make_exec(&g);
  put(e, c, (double[]){1, 0, -0.5});
  put(e, a, (double[]){1, 2, 3});
  put(e, b, (double[]){4, 5, 6});
  run_ok(e);
  expect(e, y, (double[]){1, 5, 3}, 3);
  exec_destroy(e);
  graph_free(&g);
}

TEST(layout_ops) {
  Graph g;
  graph_init(&g, "layout");
  ValueId x = in_f32(&g, "x", shape_of(2, 2, 3)); /* [[0 1 2] [3 4 5]] */
  ValueId r = in_f32(&g, "r", shape_of(1, 3));    /* [10 20 30] */
  ValueId col = in_f32(&g, "col", shape_of(2, 2, 1));
  ValueId b1 = graph_broadcast(&g, r, shape_of(2, 2, 3));
  ValueId b2 = graph_broadcast(&g, col, shape_of(3, 2, 2, 3));
  ValueId rs = graph_reshape(&g, x, shape_of(2, 3, 2));
  ValueId pt = graph_permute(&g, x, (int[]){1, 0});
  ValueId sl = graph_slice(&g, x, 1, 1, 3);
  ValueId cc = graph_concat(&g, 2, (ValueId[]){x, sl}, 1);
  ValueId c0 = graph_concat(&g, 2, (ValueId[]){x, x}, 0);
  Exec *e = make_exec(&g);
  put(e, x, (double[]){0, 1, 2, 3, 4, 5});
  put(e, r, (double[]){10, 20, 30});
  put(e, col, (double[]){7, 8});
  run_ok(e);
  expect(e, b1, (double[]){10, 20, 30, 10, 20, 30}, 6);
  double want_b2[12];
  for (int i = 0; i < 12; i++) want_b2[i] = (i / 3) % 2 ? 8 : 7;
  expect(e, b2, want_b2, 12);
  expect(e, rs, (double[]){0, 1, 2, 3, 4, 5}, 6);
  expect(e, pt, (double[]){0, 3, 1, 4, 2, 5}, 6);
  expect(e, sl, (double[]){1, 2, 4, 5}, 4);
  expect(e, cc, (double[]){0, 1, 2, 1, 2, 3, 4, 5, 4, 5}, 10);
  expect(e, c0, (double[]){0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}, 12);
  exec_destroy(e);
  graph_free(&g);
}

TEST(permute_rank3) {
  Graph g;
  graph_init(&g, "perm");
  ValueId x = in_f32(&g, "x", shape_of(3, 2, 3, 4));
  ValueId p = graph_permute(&g, x, (int[]){2, 0, 1}); /* (4, 2, 3) */
  Exec *e = make_exec(&g);
  double xv[24], want[24];
  for (int i = 0; i < 24; i++) xv[i] = i;
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) want[(k * 2 + i) * 3 + j] = xv[(i * 3 + j) * 4 + k];
  put(e, x, xv);
  run_ok(e);
  expect(e, p, want, 24);
  exec_destroy(e);
  graph_free(&g);
}

TEST(reduce_ops) {
  Graph g;
  graph_init(&g, "reduce");
  ValueId x = in_f32(&g, "x", shape_of(2, 2, 3)); /* [[1 5 2] [-4 0 3]] */
  ValueId s0 = graph_reduce(&g, OP_REDUCE_SUM, x, 0);
  ValueId s1 = graph_reduce(&g, OP_REDUCE_SUM, x, 1);
  ValueId m0 = graph_reduce(&g, OP_REDUCE_MAX, x, 0);
  ValueId m1 = graph_reduce(&g, OP_REDUCE_MAX, x, 1);
  Exec *e = make_exec(&g);
  put(e, x, (double[]){1, 5, 2, -4, 0, 3});
  run_ok(e);
  CHECK_EQ_INT(e->graph->values.data[s1].shape.rank, 2);
  CHECK_EQ_INT(e->graph->values.data[s1].shape.dim[1], 1);
  expect(e, s0, (double[]){-3, 5, 5}, 3);
  expect(e, s1, (double[]){8, -1}, 2);
  expect(e, m0, (double[]){1, 5, 3}, 3);
  expect(e, m1, (double[]){5, 3}, 2);
  exec_destroy(e);
  graph_free(&g);
}

TEST(matmul_op) {
  Graph g;
  graph_init(&g, "mm");
  ValueId a = in_f32(&g, "a", shape_of(2, 2, 3));  /* [[1 2 3] [4 5 6]] */
  ValueId at = in_f32(&g, "at", shape_of(2, 3, 2)); /* its transpose */
  ValueId b = in_f32(&g, "b", shape_of(2, 3, 2));  /* [[1 0] [0 1] [1 1]] */
  ValueId bt = in_f32(&g, "bt", shape_of(2, 2, 3));
  ValueId ab = in_f32(&g, "ab", shape_of(3, 2, 2, 3)); /* batch: a, then 2a */
  ValueId c = graph_matmul(&g, a, b, false, false);
  ValueId c_t = graph_matmul(&g, at, bt, true, true);
  ValueId c_ta = graph_matmul(&g, at, b, true, false);
  ValueId c_tb = graph_matmul(&g, a, bt, false, true);
  ValueId c_batch = graph_matmul(&g, ab, b, false, false); /* (2, 2, 2): b broadcast */
  Exec *e = make_exec(&g);
  put(e, a, (double[]){1, 2, 3, 4, 5, 6});
  put(e, at, (double[]){1, 4, 2, 5, 3, 6});
  put(e, b, (double[]){1, 0, 0, 1, 1, 1});
  put(e, bt, (double[]){1, 0, 1, 0, 1, 1});
  put(e, ab, (double[]){1, 2, 3, 4, 5, 6, 2, 4, 6, 8, 10, 12});
  run_ok(e);
  double want[4] = {4, 5, 10, 11};
  expect(e, c, want, 4);
  expect(e, c_t, want, 4);
  expect(e, c_ta, want, 4);
  expect(e, c_tb, want, 4);
  expect(e, c_batch, (double[]){4, 5, 10, 11, 8, 10, 20, 22}, 8);
  exec_destroy(e);
  graph_free(&g);
}

TEST(gather_scatter) {
  Graph g;
  graph_init(&g, "gs");
  ValueId t = in_f32(&g, "t", shape_of(2, 3, 2)); /* rows [0 1] [2 3] [4 5] */
  ValueId ix = graph_add_input(&g, "ix", DTYPE_I32, shape_of(2, 2, 2), SRCLOC_NONE);
  ValueId ga = graph_gather(&g, t, ix);                           /* (2, 2, 2) */
  ValueId sc = graph_scatter_add(&g, ix, ga, shape_of(2, 4, 2)); /* repeated index 2 */
  Exec *e = make_exec(&g);
  put(e, t, (double[]){0, 1, 2, 3, 4, 5});
  put(e, ix, (double[]){2, 0, 2, 1});
  run_ok(e);
  expect(e, ga, (double[]){4, 5, 0, 1, 4, 5, 2, 3}, 8);
  expect(e, sc, (double[]){0, 1, 2, 3, 8, 10, 0, 0}, 8);
  exec_destroy(e);
  graph_free(&g);
}

TEST(gather_out_of_range) {
  Graph g;
  graph_init(&g, "oor");
  SrcLoc loc = {bc_intern("model.yaml"), 12, 5};
  g.cur_loc = loc;
  ValueId t = in_f32(&g, "t", shape_of(2, 3, 2));
  ValueId ix = graph_add_input(&g, "ix", DTYPE_I32, shape_of(1, 3), SRCLOC_NONE);
  ValueId ga = graph_gather(&g, t, ix);
  ValueId sc = graph_scatter_add(&g, ix, ga, shape_of(2, 2, 2)); /* only 2 rows */
  (void)sc;
  Exec *e = make_exec(&g);
  put(e, t, (double[]){0, 1, 2, 3, 4, 5});
  Diag d;
  diag_init(&d);
  put(e, ix, (double[]){0, 3, 1});
  CHECK(!run_step(e, 1, 0, 0, &d));
  CHECK(strstr(diag_first(&d), "model.yaml:12:5: error: gather: index 3 at position 1") != NULL);
  diag_free(&d);
  diag_init(&d);
  put(e, ix, (double[]){0, 2, -1});
  CHECK(!run_step(e, 1, 0, 0, &d));
  CHECK(strstr(diag_first(&d), "gather: index -1 at position 2") != NULL);
  diag_free(&d);
  diag_init(&d);
  put(e, ix, (double[]){0, 2, 1});
  CHECK(!run_step(e, 1, 0, 0, &d));
  CHECK(strstr(diag_first(&d), "scatter_add: index 2 at position 1") != NULL);
  diag_free(&d);
  exec_destroy(e);
  graph_free(&g);
}

TEST(iota_constant) {
  Graph g;
  graph_init(&g, "iota");
  ValueId i0 = graph_iota(&g, shape_of(2, 2, 3), 0, DTYPE_I32);
  ValueId i1 = graph_iota(&g, shape_of(2, 2, 3), 1, DTYPE_F32);
  ValueId k = graph_const(&g, 2.5, DTYPE_F32, shape_of(1, 3));
  ValueId ki = graph_const(&g, -3.7, DTYPE_I32, shape_of(0));
  Exec *e = make_exec(&g);
  run_ok(e);
  expect(e, i0, (double[]){0, 0, 0, 1, 1, 1}, 6);
  expect(e, i1, (double[]){0, 1, 2, 0, 1, 2}, 6);
  expect(e, k, (double[]){2.5, 2.5, 2.5}, 3);
  expect(e, ki, (double[]){-3}, 1);
  exec_destroy(e);
  graph_free(&g);
}

/* Element i of example j draws Philox(seed, step, key, i + j * per_example):
 * a replica holding examples 2..3 sees rows 2..3 of the full batch. */
TEST(random_replicas) {
  Graph full, half;
  graph_init(&full, "full");
  graph_init(&half, "half");
  ValueId rf = graph_random(&full, shape_of(3, 4, 2, 3), 77);
  ValueId rh = graph_random(&half, shape_of(3, 2, 2, 3), 77);
  Exec *ef = make_exec(&full), *eh = make_exec(&half);
  Diag d;
  diag_init(&d);
  CHECK(run_step(ef, 42, 5, 0, &d));
  CHECK(run_step(eh, 42, 5, 2, &d));
  double vf[24], vh[12];
  CHECK(exec_read(ef, rf, vf, DTYPE_F64, &d));
  CHECK(exec_read(eh, rh, vh, DTYPE_F64, &d));
  for (int i = 0; i < 12; i++) CHECK(vh[i] == vf[12 + i]);
  for (int i = 0; i < 24; i++) {
    CHECK(vf[i] >= 0 && vf[i] < 1);
    CHECK(vf[i] == (double)philox_uniform(42, 5, 77, (uint64_t)i));
  }
  CHECK(run_step(ef, 42, 6, 0, &d)); /* another step, other numbers */
  double v6[24];
  CHECK(exec_read(ef, rf, v6, DTYPE_F64, &d));
  CHECK(v6[0] != vf[0]);
  diag_free(&d);
  exec_destroy(ef);
  exec_destroy(eh);
  graph_free(&full);
  graph_free(&half);
}

/* Nodes see the parameter's old value; assigns land after the step, in
 * node order. */
TEST(assign_after_step) {
  Graph g;
  graph_init(&g, "assign");
  Init z = {INIT_ZEROS, 0};
  ValueId p = graph_add_param(&g, "p", DTYPE_F32, shape_of(1, 2), z, SRCLOC_NONE);
  ValueId one = graph_const_like(&g, 1.0, p);
  ValueId p1 = graph_binary(&g, OP_ADD, p, one);
  graph_assign(&g, p, p1);
  ValueId seen = graph_binary(&g, OP_MUL, p, one); /* after the assign node: still old p */
  ValueId p2 = graph_binary(&g, OP_ADD, p1, one);
  graph_assign(&g, p, p2); /* the later assign wins */
  Exec *e = make_exec(&g);
  put(e, p, (double[]){1, 2});
  run_ok(e);
  expect(e, seen, (double[]){1, 2}, 2);
  expect(e, p, (double[]){3, 4}, 2);
  run_ok(e);
  expect(e, seen, (double[]){3, 4}, 2);
  expect(e, p, (double[]){5, 6}, 2);
  exec_destroy(e);
  graph_free(&g);
}

/* ---- exec_init_params ----------------------------------------------------- */

static void read_all(Exec *e, ValueId v, double *x) {
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, v, x, DTYPE_F64, &d));
  diag_free(&d);
}

TEST(init_params) {
  enum { R = 64, C = 96 };
  Graph g1, g2;
  graph_init(&g1, "g1");
  graph_init(&g2, "g2");
  Init xav = {INIT_XAVIER, 0}, nrm = {INIT_NORMAL, 0}, nrm2 = {INIT_NORMAL, 0.02};
  Init uni = {INIT_UNIFORM, 0.5}, ones = {INIT_ONES, 0};
  ValueId w1 = graph_add_param(&g1, "enc.W", DTYPE_F32, shape_of(2, R, C), xav, SRCLOC_NONE);
  ValueId n1 = graph_add_param(&g1, "pos", DTYPE_F32, shape_of(2, R, C), nrm, SRCLOC_NONE);
  ValueId n2 = graph_add_param(&g1, "small", DTYPE_F32, shape_of(1, 4096), nrm2, SRCLOC_NONE);
  ValueId u1 = graph_add_param(&g1, "u", DTYPE_F32, shape_of(1, 4096), uni, SRCLOC_NONE);
  ValueId o1 = graph_add_state(&g1, "o", DTYPE_F32, shape_of(1, 5), ones, SRCLOC_NONE);
  /* the same name in another graph, declared in another order */
  ValueId other = graph_add_param(&g2, "head.W", DTYPE_F32, shape_of(2, R, C), xav, SRCLOC_NONE);
  ValueId w2 = graph_add_param(&g2, "enc.W", DTYPE_F32, shape_of(2, R, C), xav, SRCLOC_NONE);
  Exec *e1 = make_exec(&g1), *e2 = make_exec(&g2);
  Diag d;
  diag_init(&d);
  CHECK(exec_init_params(e1, 9, &d));
  CHECK(exec_init_params(e2, 9, &d));
  diag_free(&d);
  static double a[R * C], b[R * C], c[R * C];
  read_all(e1, w1, a);
  read_all(e2, w2, b);
  read_all(e2, other, c);
  double bound = sqrt(6.0 / (R + C)), mx = 0;
  int same_other = 0;
  for (int i = 0; i < R * C; i++) {
    CHECK(a[i] == b[i]);
    same_other += a[i] == c[i];
    if (fabs(a[i]) > mx) mx = fabs(a[i]);
  }
  CHECK(mx <= bound && mx > 0.99 * bound);
  CHECK(same_other < 4);
  /* normal: mean 0, variance scale^2 within ~5 standard errors */
  read_all(e1, n1, a);
  double s = 0, s2 = 0;
  for (int i = 0; i < R * C; i++) s += a[i], s2 += a[i] * a[i];
  CHECK_NEAR(s / (R * C), 0.0, 0.07, 0);
  CHECK_NEAR(s2 / (R * C), 1.0, 0.12, 0);
  read_all(e1, n2, a);
  s2 = 0;
  for (int i = 0; i < 4096; i++) s2 += a[i] * a[i];
  CHECK_NEAR(sqrt(s2 / 4096), 0.02, 0.002, 0);
  read_all(e1, u1, a);
  mx = 0;
  for (int i = 0; i < 4096; i++) mx = fabs(a[i]) > mx ? fabs(a[i]) : mx;
  CHECK(mx <= 0.5 && mx > 0.49);
  read_all(e1, o1, a);
  for (int i = 0; i < 5; i++) CHECK(a[i] == 1.0);
  /* another seed, other values */
  diag_init(&d);
  CHECK(exec_init_params(e2, 10, &d));
  diag_free(&d);
  read_all(e2, w2, c);
  CHECK(c[0] != b[0] || c[1] != b[1]);
  exec_destroy(e1);
  exec_destroy(e2);
  graph_free(&g1);
  graph_free(&g2);
}

TEST(backend_names) {
  CHECK(backend_by_name("interp") == &backend_interp);
  CHECK(backend_by_name("nope") == NULL);
  CHECK(backend_interp.supports_op(OP_MATMUL));
}

TEST_MAIN()
