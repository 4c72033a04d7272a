/* test_models.c — the model files of models/:
 *  - every graph of every model expands and verifies; BERT has d2l's exact
 *    parameter counts (pretrain 5,455,138, nli 2,842,371, BERT-base nli
 *    109,087,747); pretrain and nli share the encoder by name; parameter
 *    names, inits, inputs and outputs are the documented ones;
 *  - every standard-library block (tiny/blocks.yaml) and the whole tiny BERT
 *    (both graphs, dropout 0) compute what straightforward C computes, on the
 *    reference interpreter; dropout with p = 0 is exactly the identity;
 *  - the MLP, the bag-of-embeddings NLI model and tiny BERT fit one batch. */
#include "../passes/passes.h"
#include "../runtime/backend.h"
#include "test.h"

#define MODEL(rel) BC_SOURCE_DIR "/models/" rel

/* Expands `graph` of `path` with `sets`; on failure prints the diagnostics
 * and returns false (*g is then not initialized). */
static bool expand(Graph *g, const char *path, const char *graph, const Setting *sets, int n_sets) {
  Diag d;
  diag_init(&d);
  bool ok = model_expand(g, path, graph, sets, n_sets, &d);
  if (!ok || d.n_errors) {
    fprintf(stderr, "  model_expand(%s, %s) failed:\n", path, graph);
    diag_print(&d, stderr);
  }
  diag_free(&d);
  return ok;
}

static int64_t param_elements(const Graph *g) {
  int64_t n = 0;
  for (int i = 0; i < g->params.n; i++) n += shape_numel(&g->values.data[g->params.data[i]].shape);
  return n;
}

static const Value *find_param(const Graph *g, const char *name) {
  for (int i = 0; i < g->params.n; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    if (strcmp(v->name, name) == 0) return v;
  }
  return NULL;
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* d2l's BERT parameter count, by the arithmetic of the brief. */
typedef struct {
  int64_t vocab, h, f, layers, max_len;
} BertSize;

static int64_t bert_encoder_params(BertSize s) {
  int64_t h = s.h, f = s.f;
  int64_t layer = 4 * (h * h + h) + 2 * (2 * h) + (h * f + f) + (f * h + h);
  return s.layers * layer + s.vocab * h + 2 * h + s.max_len * h;
}
static int64_t bert_pretrain_params(BertSize s) {
  int64_t h = s.h;
  int64_t mlm = h * h + h + 2 * h + h * s.vocab + s.vocab;
  int64_t nsp = h * h + h + 2 * h + 2;
  return bert_encoder_params(s) + mlm + nsp;
}
static int64_t bert_nli_params(BertSize s, int64_t cls_hidden) {
  return bert_encoder_params(s) + s.h * cls_hidden + cls_hidden + cls_hidden * 3 + 3;
}

static const BertSize d2l_size = {20256, 128, 128, 2, 128};
static const BertSize base_size = {30522, 768, 3072, 12, 512};
static const Setting base_sets[] = {{"vocab", "30522"}, {"hidden", "768"},  {"ffn", "3072"},
                                    {"heads", "12"},    {"layers", "12"},   {"max_len", "512"}};

TEST(formula_matches_brief) {
  CHECK_EQ_INT(bert_pretrain_params(d2l_size), 5455138);
  CHECK_EQ_INT(bert_nli_params(d2l_size, 256), 2842371);
  CHECK_EQ_INT(bert_nli_params(base_size, 256), 109087747);
}

/* Every graph of every model file expands and has a one-element f32 loss. */
TEST(every_model_expands) {
  static const char *files[] = {MODEL("bert.yaml"), MODEL("bow_nli.yaml"), MODEL("tiny/bert.yaml"),
                                MODEL("tiny/mlp.yaml"), MODEL("tiny/blocks.yaml")};
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    Diag d;
    diag_init(&d);
    const char **names = NULL;
    int n = model_graph_names(files[f], &names, &d);
    if (n < 0) diag_print(&d, stderr);
    diag_free(&d);
    CHECK_MSG(n > 0, "%s: %d graphs", files[f], n);
    for (int i = 0; i < n; i++) {
      Graph g;
      bool ok = expand(&g, files[f], names[i], NULL, 0);
      CHECK_MSG(ok, "%s --graph %s", files[f], names[i]);
      if (!ok) continue;
      Diag vd;
      diag_init(&vd);
      bool verified = graph_verify(&g, &vd);
      if (!verified) diag_print(&vd, stderr);
      diag_free(&vd);
      CHECK_MSG(verified, "%s --graph %s verifies", files[f], names[i]);
      /* every graph but the block catalogue's trains something */
      if (!strstr(files[f], "blocks.yaml"))
        CHECK_MSG(g.loss >= 0, "%s --graph %s has a loss", files[f], names[i]);
      if (g.loss >= 0) {
        const Value *l = &g.values.data[g.loss];
        CHECK_EQ_INT(l->dtype, DTYPE_F32);
        CHECK_EQ_INT(shape_numel(&l->shape), 1);
      }
      graph_free(&g);
    }
    free(names);
  }
}

/* The library files declare blocks only: they are imported, not compiled
 * (tiny/blocks.yaml calls every one of their blocks). */
TEST(library_files_are_not_models) {
  static const char *files[] = {MODEL("lib/nn.yaml"), MODEL("lib/loss.yaml")};
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    Diag d;
    diag_init(&d);
    const char **names = NULL;
    int n = model_graph_names(files[f], &names, &d);
    CHECK_MSG(n <= 0, "%s: %d graphs", files[f], n);
    free(names);
    diag_free(&d);
  }
}

TEST(bert_pretrain_param_count) {
  Graph g;
  if (!expand(&g, MODEL("bert.yaml"), "pretrain", NULL, 0)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(param_elements(&g), 5455138);
  CHECK_EQ_INT(graph_param_elements(&g), 5455138);
  graph_free(&g);
}

TEST(bert_nli_param_count) {
  Graph g;
  if (!expand(&g, MODEL("bert.yaml"), "nli", NULL, 0)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(param_elements(&g), 2842371);
  graph_free(&g);
}

TEST(bert_base_nli_param_count) {
  Graph g;
  if (!expand(&g, MODEL("bert.yaml"), "nli", base_sets, 6)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(param_elements(&g), 109087747);
  graph_free(&g);
}

TEST(bert_base_pretrain_param_count) {
  static const Setting sets[] = {{"vocab", "30522"}, {"hidden", "768"},   {"ffn", "3072"},
                                 {"heads", "12"},    {"layers", "12"},    {"max_len", "512"},
                                 {"n_pred", "77"},   {"batch", "2"}};
  Graph g;
  if (!expand(&g, MODEL("bert.yaml"), "pretrain", sets, 8)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(param_elements(&g), bert_pretrain_params(base_size));
  graph_free(&g);
}

/* pretrain and nli name the encoder's parameters alike, with equal shapes
 * and inits; each graph's other parameters belong to its own heads. */
static void check_shared_encoder(const char *path, const Setting *sets, int n_sets) {
  Graph pre, nli;
  if (!expand(&pre, path, "pretrain", sets, n_sets)) {
    CHECK(0);
    return;
  }
  if (!expand(&nli, path, "nli", sets, n_sets)) {
    CHECK(0);
    graph_free(&pre);
    return;
  }
  int n_enc_pre = 0, n_enc_nli = 0;
  for (int i = 0; i < pre.params.n; i++) {
    const Value *p = &pre.values.data[pre.params.data[i]];
    if (has_prefix(p->name, "encoder.")) n_enc_pre++;
    else CHECK_MSG(has_prefix(p->name, "mlm.") || has_prefix(p->name, "nsp."), "pretrain param %s",
                   p->name);
  }
  for (int i = 0; i < nli.params.n; i++) {
    const Value *p = &nli.values.data[nli.params.data[i]];
    if (!has_prefix(p->name, "encoder.")) {
      CHECK_MSG(has_prefix(p->name, "classifier."), "nli param %s", p->name);
      continue;
    }
    n_enc_nli++;
    const Value *q = find_param(&pre, p->name);
    CHECK_MSG(q != NULL, "nli's %s is not in pretrain", p->name);
    if (!q) continue;
    CHECK_MSG(shape_eq(&p->shape, &q->shape), "%s: shapes differ", p->name);
    CHECK_EQ_INT(p->dtype, q->dtype);
    CHECK_EQ_INT(p->init.kind, q->init.kind);
  }
  CHECK(n_enc_nli > 0);
  CHECK_EQ_INT(n_enc_pre, n_enc_nli);
  graph_free(&pre);
  graph_free(&nli);
}

TEST(pretrain_and_nli_share_encoder) {
  check_shared_encoder(MODEL("bert.yaml"), NULL, 0);
  check_shared_encoder(MODEL("tiny/bert.yaml"), NULL, 0);
}

/* The documented parameter names, shapes and initializers of the d2l model. */
TEST(bert_param_names) {
  Graph g;
  if (!expand(&g, MODEL("bert.yaml"), "pretrain", NULL, 0)) {
    CHECK(0);
    return;
  }
  static const struct {
    const char *name;
    int rank;
    int64_t d0, d1;
    InitKind init;
  } want[] = {
      {"encoder.token_embedding.table", 2, 20256, 128, INIT_NORMAL},
      {"encoder.segment_embedding.table", 2, 2, 128, INIT_NORMAL},
      {"encoder.pos_embedding", 2, 128, 128, INIT_NORMAL},
      {"encoder.blk.0.attention.W_q.W", 2, 128, 128, INIT_XAVIER},
      {"encoder.blk.0.attention.W_q.b", 1, 128, 0, INIT_ZEROS},
      {"encoder.blk.0.attention.W_k.W", 2, 128, 128, INIT_XAVIER},
      {"encoder.blk.0.attention.W_v.W", 2, 128, 128, INIT_XAVIER},
      {"encoder.blk.1.attention.W_o.b", 1, 128, 0, INIT_ZEROS},
      {"encoder.blk.0.addnorm1.ln.gamma", 1, 128, 0, INIT_ONES},
      {"encoder.blk.0.addnorm1.ln.beta", 1, 128, 0, INIT_ZEROS},
      {"encoder.blk.1.ffn.dense1.W", 2, 128, 128, INIT_XAVIER},
      {"encoder.blk.1.ffn.dense2.b", 1, 128, 0, INIT_ZEROS},
      {"encoder.blk.1.addnorm2.ln.gamma", 1, 128, 0, INIT_ONES},
      {"mlm.dense1.W", 2, 128, 128, INIT_XAVIER},
      {"mlm.ln.gamma", 1, 128, 0, INIT_ONES},
      {"mlm.dense2.W", 2, 128, 20256, INIT_XAVIER},
      {"mlm.dense2.b", 1, 20256, 0, INIT_ZEROS},
      {"nsp.pooler.W", 2, 128, 128, INIT_XAVIER},
      {"nsp.output.W", 2, 128, 2, INIT_XAVIER},
      {"nsp.output.b", 1, 2, 0, INIT_ZEROS},
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    const Value *p = find_param(&g, want[i].name);
    CHECK_MSG(p != NULL, "no parameter %s", want[i].name);
    if (!p) continue;
    CHECK_EQ_INT(p->dtype, DTYPE_F32);
    CHECK_EQ_INT(p->shape.rank, want[i].rank);
    CHECK_EQ_INT(p->shape.dim[0], want[i].d0);
    if (want[i].rank == 2) CHECK_EQ_INT(p->shape.dim[1], want[i].d1);
    CHECK_EQ_INT(p->init.kind, want[i].init);
  }
  const Value *pos = find_param(&g, "encoder.pos_embedding");
  if (pos) CHECK_NEAR(pos->init.scale, 1.0, 0, 0);
  CHECK(find_param(&g, "encoder.blk.2.attention.W_q.W") == NULL); /* layers = 2 */
  /* 2 layers x 16 tensors + 3 embeddings + mlm 6 + nsp 4 */
  CHECK_EQ_INT(g.params.n, 2 * 16 + 3 + 6 + 4);
  graph_free(&g);
}

/* Inputs and outputs as the tasks expect them. */
static void check_value(const Graph *g, ValueId v, const char *what, DType t, int rank, int64_t d0,
                        int64_t d1, int64_t d2) {
  CHECK_MSG(v >= 0, "no %s", what);
  if (v < 0) return;
  const Value *x = &g->values.data[v];
  CHECK_MSG(x->dtype == t, "%s: dtype %s", what, dtype_name(x->dtype));
  CHECK_MSG(x->shape.rank == rank, "%s: rank %d", what, x->shape.rank);
  int64_t want[3] = {d0, d1, d2};
  for (int i = 0; i < rank && i < 3; i++)
    CHECK_MSG(x->shape.dim[i] == want[i], "%s: dim %d is %lld, want %lld", what, i,
              (long long)x->shape.dim[i], (long long)want[i]);
}

/* Graph outputs are in the order of the graph's `outputs:` list. */
static ValueId output_at(const Graph *g, int i) { return i < g->outputs.n ? g->outputs.data[i] : -1; }

TEST(bert_interface) {
  Graph g;
  if (expand(&g, MODEL("bert.yaml"), "pretrain", NULL, 0)) {
    CHECK_EQ_INT(g.inputs.n, 8);
    check_value(&g, graph_find(&g, "tokens"), "tokens", DTYPE_I32, 2, 8, 128, 0);
    check_value(&g, graph_find(&g, "segments"), "segments", DTYPE_I32, 2, 8, 128, 0);
    check_value(&g, graph_find(&g, "valid_len"), "valid_len", DTYPE_I32, 1, 8, 0, 0);
    check_value(&g, graph_find(&g, "pred_positions"), "pred_positions", DTYPE_I32, 2, 8, 19, 0);
    check_value(&g, graph_find(&g, "pred_weights"), "pred_weights", DTYPE_F32, 2, 8, 19, 0);
    check_value(&g, graph_find(&g, "mlm_labels"), "mlm_labels", DTYPE_I32, 2, 8, 19, 0);
    check_value(&g, graph_find(&g, "nsp_labels"), "nsp_labels", DTYPE_I32, 1, 8, 0, 0);
    check_value(&g, graph_find(&g, "mlm_norm"), "mlm_norm", DTYPE_F32, 1, 1, 0, 0);
    CHECK_EQ_INT(g.outputs.n, 5);
    check_value(&g, output_at(&g, 0), "loss", DTYPE_F32, 1, 1, 0, 0);
    check_value(&g, output_at(&g, 1), "mlm_loss", DTYPE_F32, 1, 1, 0, 0);
    check_value(&g, output_at(&g, 2), "nsp_loss", DTYPE_F32, 1, 1, 0, 0);
    check_value(&g, output_at(&g, 3), "mlm_logits", DTYPE_F32, 3, 8, 19, 20256);
    check_value(&g, output_at(&g, 4), "nsp_logits", DTYPE_F32, 2, 8, 2, 0);
    CHECK(g.loss == output_at(&g, 0));
    CHECK_NEAR(graph_hparam(&g, "n_pred", -1), 19, 0, 0);
    CHECK_NEAR(graph_hparam(&g, "dropout", -1), 0.2, 1e-12, 0);
    graph_free(&g);
  } else {
    CHECK(0);
  }
  static const Setting sets[] = {{"batch", "3"}, {"max_len", "64"}};
  if (expand(&g, MODEL("bert.yaml"), "nli", sets, 2)) {
    CHECK_EQ_INT(g.inputs.n, 4);
    check_value(&g, graph_find(&g, "tokens"), "tokens", DTYPE_I32, 2, 3, 64, 0);
    check_value(&g, graph_find(&g, "label"), "label", DTYPE_I32, 1, 3, 0, 0);
    CHECK_EQ_INT(g.outputs.n, 2);
    check_value(&g, output_at(&g, 0), "loss", DTYPE_F32, 1, 1, 0, 0);
    check_value(&g, output_at(&g, 1), "logits", DTYPE_F32, 2, 3, 3, 0);
    /* max_len 64 shrinks the position table only */
    CHECK_EQ_INT(param_elements(&g), bert_nli_params((BertSize){20256, 128, 128, 2, 64}, 256));
    graph_free(&g);
  } else {
    CHECK(0);
  }
}

/* d2l's later configurations are --set overrides. */
TEST(bert_overrides) {
  static const Setting small[] = {{"hidden", "256"}, {"ffn", "512"}, {"heads", "4"}};
  Graph g;
  if (expand(&g, MODEL("bert.yaml"), "nli", small, 3)) {
    CHECK_EQ_INT(param_elements(&g), bert_nli_params((BertSize){20256, 256, 512, 2, 128}, 256));
    graph_free(&g);
  } else {
    CHECK(0);
  }
  static const Setting torch_pre[] = {{"max_len", "64"}, {"ffn", "256"}, {"n_pred", "10"},
                                      {"layers", "3"}};
  if (expand(&g, MODEL("bert.yaml"), "pretrain", torch_pre, 4)) {
    CHECK_EQ_INT(param_elements(&g), bert_pretrain_params((BertSize){20256, 128, 256, 3, 64}));
    check_value(&g, output_at(&g, 3), "mlm_logits", DTYPE_F32, 3, 8, 10, 20256);
    graph_free(&g);
  } else {
    CHECK(0);
  }
  /* an unknown hparam is an error */
  static const Setting bad[] = {{"hiden", "256"}};
  Diag d;
  diag_init(&d);
  Graph b;
  CHECK(!model_expand(&b, MODEL("bert.yaml"), "nli", bad, 1, &d));
  CHECK(d.n_errors > 0);
  diag_free(&d);
}

TEST(tiny_bert) {
  static const BertSize tiny = {40, 8, 16, 2, 12};
  Graph g;
  if (expand(&g, MODEL("tiny/bert.yaml"), "pretrain", NULL, 0)) {
    CHECK_EQ_INT(param_elements(&g), bert_pretrain_params(tiny));
    check_value(&g, graph_find(&g, "tokens"), "tokens", DTYPE_I32, 2, 4, 12, 0);
    check_value(&g, output_at(&g, 3), "mlm_logits", DTYPE_F32, 3, 4, 2, 40);
    graph_free(&g);
  } else {
    CHECK(0);
  }
  if (expand(&g, MODEL("tiny/bert.yaml"), "nli", NULL, 0)) {
    CHECK_EQ_INT(param_elements(&g), bert_nli_params(tiny, 16));
    check_value(&g, output_at(&g, 1), "logits", DTYPE_F32, 2, 4, 3, 0);
    graph_free(&g);
  } else {
    CHECK(0);
  }
  /* the tiny file has the same parameter names as bert.yaml at tiny sizes */
  static const Setting as_tiny[] = {{"vocab", "40"}, {"hidden", "8"},  {"ffn", "16"},
                                    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"}};
  Graph big, small;
  if (expand(&big, MODEL("bert.yaml"), "pretrain", as_tiny, 6)) {
    if (expand(&small, MODEL("tiny/bert.yaml"), "pretrain", NULL, 0)) {
      CHECK_EQ_INT(big.params.n, small.params.n);
      for (int i = 0; i < small.params.n; i++) {
        const Value *p = &small.values.data[small.params.data[i]];
        const Value *q = find_param(&big, p->name);
        CHECK_MSG(q && shape_eq(&p->shape, &q->shape), "tiny %s differs from bert.yaml", p->name);
      }
      graph_free(&small);
    } else {
      CHECK(0);
    }
    graph_free(&big);
  } else {
    CHECK(0);
  }
}

TEST(tiny_mlp) {
  Graph g;
  if (!expand(&g, MODEL("tiny/mlp.yaml"), "train", NULL, 0)) {
    CHECK(0);
    return;
  }
  /* 6*16+16 + 16*3+3 */
  CHECK_EQ_INT(param_elements(&g), 6 * 16 + 16 + 16 * 3 + 3);
  CHECK(find_param(&g, "layer1.dense.W") != NULL);
  CHECK(find_param(&g, "output.b") != NULL);
  check_value(&g, output_at(&g, 1), "logits", DTYPE_F32, 2, 4, 3, 0);
  graph_free(&g);
}

TEST(bow_nli) {
  Graph g;
  if (!expand(&g, MODEL("bow_nli.yaml"), "nli", NULL, 0)) {
    CHECK(0);
    return;
  }
  CHECK_EQ_INT(param_elements(&g), 20256 * 128 + (3 * 128) * 256 + 256 + 256 * 3 + 3);
  CHECK_EQ_INT(g.inputs.n, 4);
  check_value(&g, output_at(&g, 1), "logits", DTYPE_F32, 2, 8, 3, 0);
  graph_free(&g);
}

/* ---- the library blocks, numerically (tiny/blocks.yaml on the interpreter) ---- */

#define BLOCKS MODEL("tiny/blocks.yaml")
enum { NB = 3, NT = 3, NW = 4, NH = 2, NC = 5, NN = 6, NDROP = 4000 };

typedef struct {
  Graph g;
  Exec *e;
  Diag d;
} Run;

static uint32_t lcg_state = 12345;
static double urand(void) { /* in [-1, 1) */
  lcg_state = lcg_state * 1664525u + 1013904223u;
  return (double)(lcg_state >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static bool run_open(Run *r, const char *graph, const Setting *sets, int n_sets) {
  diag_init(&r->d);
  r->e = NULL;
  if (!expand(&r->g, BLOCKS, graph, sets, n_sets)) {
    diag_free(&r->d);
    return false;
  }
  r->e = exec_create(&backend_interp, &r->g, &r->d);
  if (!r->e || !exec_init_params(r->e, 7, &r->d)) {
    diag_print(&r->d, stderr);
    if (r->e) exec_destroy(r->e);
    graph_free(&r->g);
    diag_free(&r->d);
    return false;
  }
  return true;
}

static void run_close(Run *r) {
  if (r->d.n_errors) diag_print(&r->d, stderr);
  CHECK_EQ_INT(r->d.n_errors, 0);
  exec_destroy(r->e);
  graph_free(&r->g);
  diag_free(&r->d);
}

static void run_write(Run *r, const char *name, const double *data) {
  ValueId v = graph_find(&r->g, name);
  CHECK_MSG(v >= 0, "no input or parameter %s", name);
  if (v >= 0) CHECK(exec_write(r->e, v, data, DTYPE_F64, &r->d));
}

/* Fills every parameter with values in [-1, 1) (biases and betas included,
 * so a block that forgot one is caught). */
static void run_randomize_params(Run *r) {
  for (int i = 0; i < r->g.params.n; i++) {
    const Value *v = &r->g.values.data[r->g.params.data[i]];
    int64_t n = shape_numel(&v->shape);
    double *buf = malloc(sizeof(double) * (size_t)n);
    for (int64_t j = 0; j < n; j++) buf[j] = urand();
    CHECK(exec_write(r->e, r->g.params.data[i], buf, DTYPE_F64, &r->d));
    free(buf);
  }
}

static bool run_step(Run *r, uint32_t step) {
  RunContext ctx = {5, step, 0};
  bool ok = exec_run(r->e, &ctx, &r->d);
  CHECK(ok);
  return ok;
}

/* A value's contents as a fresh double array (NULL if it cannot be read). */
static double *run_read_value(Run *r, ValueId v, int64_t expect_n) {
  if (v < 0) return NULL;
  int64_t n = shape_numel(&r->g.values.data[v].shape);
  CHECK_EQ_INT(n, expect_n);
  if (n != expect_n) return NULL;
  double *buf = calloc((size_t)n, sizeof(double));
  CHECK(exec_read(r->e, v, buf, DTYPE_F64, &r->d));
  return buf;
}
static double *run_output(Run *r, int i, int64_t n) { return run_read_value(r, output_at(&r->g, i), n); }
static double *run_param(Run *r, const char *name, int64_t n) {
  const Value *p = find_param(&r->g, name);
  CHECK_MSG(p != NULL, "no parameter %s", name);
  return p ? run_read_value(r, (ValueId)(p - r->g.values.data), n) : NULL;
}

static void check_close(const double *got, const double *want, int64_t n, const char *what) {
  if (!got || !want) {
    CHECK_MSG(0, "%s: missing data", what);
    return;
  }
  int bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= 1e-5 + 1e-4 * fabs(want[i]))) {
      if (bad++ < 5)
        CHECK_MSG(0, "%s[%lld] = %.9g, want %.9g", what, (long long)i, got[i], want[i]);
    }
  if (bad > 5) CHECK_MSG(0, "%s: %d elements differ", what, bad);
}

static void fill_random(double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = urand() * 2.0;
}

/* y[r, u] = sum_i x[r, i] W[i, u] (+ b[u]) */
static void ref_linear(const double *x, int rows, int in, const double *W, const double *b, int units,
                       double *y) {
  for (int r = 0; r < rows; r++)
    for (int u = 0; u < units; u++) {
      double s = b ? b[u] : 0;
      for (int i = 0; i < in; i++) s += x[r * in + i] * W[i * units + u];
      y[r * units + u] = s;
    }
}

/* torch.nn.LayerNorm over rows of n: biased variance, eps inside the sqrt. */
static void ref_layer_norm(const double *x, int rows, int n, const double *gamma,
                           const double *beta, double *y) {
  for (int r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[r * n + i] / n;
    for (int i = 0; i < n; i++) var += (x[r * n + i] - mean) * (x[r * n + i] - mean) / n;
    for (int i = 0; i < n; i++)
      y[r * n + i] = (x[r * n + i] - mean) / sqrt(var + 1e-5) * gamma[i] + beta[i];
  }
}

static void ref_softmax(const double *x, int rows, int n, double *y) {
  for (int r = 0; r < rows; r++) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) m = fmax(m, x[r * n + i]);
    for (int i = 0; i < n; i++) s += exp(x[r * n + i] - m);
    for (int i = 0; i < n; i++) y[r * n + i] = exp(x[r * n + i] - m) / s;
  }
}

/* d2l's masked_softmax over the last axis of [B, rows_per_b, keys]. */
static void ref_masked_softmax(const double *x, int batch, int rows_per_b, int keys,
                               const double *valid_len, double *y) {
  double *tmp = malloc(sizeof(double) * (size_t)(batch * rows_per_b * keys));
  for (int b = 0; b < batch; b++)
    for (int r = 0; r < rows_per_b; r++)
      for (int k = 0; k < keys; k++) {
        int i = (b * rows_per_b + r) * keys + k;
        tmp[i] = k < valid_len[b] ? x[i] : -1e6;
      }
  ref_softmax(tmp, batch * rows_per_b, keys, y);
  free(tmp);
}

TEST(block_linear) {
  Run r;
  if (!run_open(&r, "linear", NULL, 0)) {
    CHECK(0);
    return;
  }
  double x[NB * NT * NW], y[NB * NT * 3], z[NB * NT * 2];
  fill_random(x, NB * NT * NW);
  run_write(&r, "x", x);
  double *W = run_param(&r, "dense.W", NW * 3), *b = run_param(&r, "dense.b", 3);
  double *P = run_param(&r, "proj.W", NW * 2);
  /* fresh initialization: Xavier W within +-sqrt(6 / (4 + 3)), zero bias */
  if (W && b) {
    double lim = sqrt(6.0 / (NW + 3)), mx = 0;
    for (int i = 0; i < NW * 3; i++) mx = fmax(mx, fabs(W[i]));
    CHECK(mx > 0 && mx <= lim);
    for (int i = 0; i < 3; i++) CHECK(b[i] == 0);
  }
  free(W), free(b), free(P);
  run_randomize_params(&r);
  W = run_param(&r, "dense.W", NW * 3), b = run_param(&r, "dense.b", 3);
  P = run_param(&r, "proj.W", NW * 2);
  if (run_step(&r, 0) && W && b && P) {
    ref_linear(x, NB * NT, NW, W, b, 3, y);
    ref_linear(x, NB * NT, NW, P, NULL, 2, z);
    double *gy = run_output(&r, 0, NB * NT * 3), *gz = run_output(&r, 1, NB * NT * 2);
    check_close(gy, y, NB * NT * 3, "linear");
    check_close(gz, z, NB * NT * 2, "linear_nobias");
    free(gy), free(gz);
  }
  free(W), free(b), free(P);
  run_close(&r);
}

TEST(block_embedding) {
  Run r;
  if (!run_open(&r, "embedding", NULL, 0)) {
    CHECK(0);
    return;
  }
  double idx[NB * NT], want[NB * NT * NW];
  for (int i = 0; i < NB * NT; i++) idx[i] = (i * 5) % 7;
  run_write(&r, "idx", idx);
  double *table = run_param(&r, "emb.table", 7 * NW);
  if (run_step(&r, 0) && table) {
    for (int i = 0; i < NB * NT; i++)
      for (int k = 0; k < NW; k++) want[i * NW + k] = table[(int)idx[i] * NW + k];
    double *got = run_output(&r, 0, NB * NT * NW);
    check_close(got, want, NB * NT * NW, "embedding");
    free(got);
  }
  free(table);
  run_close(&r);
}

TEST(block_layer_norm) {
  Run r;
  if (!run_open(&r, "layer_norm", NULL, 0)) {
    CHECK(0);
    return;
  }
  double x[NB * NT * NW], want[NB * NT * NW];
  fill_random(x, NB * NT * NW);
  x[0] = x[1] = x[2] = x[3] = 0.25; /* a constant row: var 0, y = beta whatever eps is */
  /* Rows of 0.25 -+ d (exact in f32) have variance d^2 near eps = 1e-5, so
   * the normalized value d / sqrt(d^2 + eps) depends on eps at O(1):
   * d = 2^-8 (var 1.5 eps): 0.777 (eps 1e-5), 0.968 (1e-6), 1 (0);
   * d = 2^-9 (var 0.38 eps): 0.525, 0.890, 1;
   * d = 2^-10 (var 0.095 eps): 0.295, 0.698, 1.
   * check_close's 1e-5 + 1e-4 relative sees eps off by ~1% on the last row. */
  for (int r = 1; r <= 3; r++)
    for (int i = 0; i < NW; i++) x[r * NW + i] = 0.25 + (i & 1 ? 1 : -1) * ldexp(1.0, -7 - r);
  run_write(&r, "x", x);
  double *g0 = run_param(&r, "ln.gamma", NW), *b0 = run_param(&r, "ln.beta", NW);
  if (g0 && b0)
    for (int i = 0; i < NW; i++) CHECK(g0[i] == 1 && b0[i] == 0);
  free(g0), free(b0);
  run_randomize_params(&r);
  double *gamma = run_param(&r, "ln.gamma", NW), *beta = run_param(&r, "ln.beta", NW);
  if (run_step(&r, 0) && gamma && beta) {
    ref_layer_norm(x, NB * NT, NW, gamma, beta, want);
    double *got = run_output(&r, 0, NB * NT * NW);
    check_close(got, want, NB * NT * NW, "layer_norm");
    free(got);
  }
  free(gamma), free(beta);
  run_close(&r);
}

TEST(block_softmax) {
  Run r;
  if (!run_open(&r, "softmax", NULL, 0)) {
    CHECK(0);
    return;
  }
  double x[NB * NT * NW], want[NB * NT * NW];
  fill_random(x, NB * NT * NW);
  x[4] = 80, x[5] = 85; /* exp would overflow f32 without the max subtraction */
  run_write(&r, "x", x);
  if (run_step(&r, 0)) {
    ref_softmax(x, NB * NT, NW, want);
    double *got = run_output(&r, 0, NB * NT * NW);
    check_close(got, want, NB * NT * NW, "softmax");
    free(got);
  }
  run_close(&r);
}

TEST(block_masked_softmax) {
  Run r;
  if (!run_open(&r, "masked_softmax", NULL, 0)) {
    CHECK(0);
    return;
  }
  enum { N = NB * NH * NT * NT };
  double x[N], want[N], vl[NB] = {2, 3, 0}; /* 0: every key masked, uniform as in d2l */
  fill_random(x, N);
  run_write(&r, "x", x);
  run_write(&r, "valid_len", vl);
  if (run_step(&r, 0)) {
    ref_masked_softmax(x, NB, NH * NT, NT, vl, want);
    double *got = run_output(&r, 0, N);
    check_close(got, want, N, "masked_softmax");
    if (got) {
      CHECK(got[2] == 0);                                    /* key 2 >= valid_len 2 */
      CHECK_NEAR(got[2 * NH * NT * NT], 1.0 / NT, 1e-6, 0); /* valid_len 0 */
    }
    free(got);
  }
  run_close(&r);
}

TEST(block_dropout) {
  static double x[NDROP];
  for (int i = 0; i < NDROP; i++) x[i] = 1.0 + urand() * 0.5;
  Run r;
  /* p = 0: exactly the identity */
  if (run_open(&r, "dropout", NULL, 0)) {
    run_write(&r, "x", x);
    if (run_step(&r, 0)) {
      /* bit for bit equal to the backend's own copy of x */
      double *got = run_output(&r, 0, NDROP), *xb = run_read_value(&r, graph_find(&r.g, "x"), NDROP);
      int same = 0;
      for (int i = 0; got && xb && i < NDROP; i++) same += memcmp(&got[i], &xb[i], sizeof(double)) == 0;
      CHECK_EQ_INT(same, NDROP);
      free(got), free(xb);
    }
    run_close(&r);
  } else {
    CHECK(0);
  }
  /* p = 0.2: about a fifth dropped, the rest scaled by 1.25, new mask per step */
  static const Setting p02[] = {{"p", "0.2"}};
  if (!run_open(&r, "dropout", p02, 1)) {
    CHECK(0);
    return;
  }
  run_write(&r, "x", x);
  double *y0 = NULL, *y1 = NULL;
  if (run_step(&r, 0)) y0 = run_output(&r, 0, NDROP);
  if (run_step(&r, 1)) y1 = run_output(&r, 0, NDROP);
  if (y0 && y1) {
    int dropped = 0, differ = 0;
    for (int i = 0; i < NDROP; i++) {
      double xf = (float)x[i];
      if (y0[i] == 0) dropped++;
      else CHECK_NEAR(y0[i], xf * 1.25, 0, 1e-6);
      differ += (y0[i] == 0) != (y1[i] == 0);
    }
    double frac = (double)dropped / NDROP; /* sd 0.0063 */
    CHECK_MSG(frac > 0.17 && frac < 0.23, "dropped %.4f", frac);
    CHECK(differ > NDROP / 10);
  }
  free(y0), free(y1);
  run_close(&r);
}

/* d2l's MultiHeadAttention over x [B, T, W] (self-attention), heads
 * splitting W; p = {W_q.W, W_q.b, W_k.W, W_k.b, W_v.W, W_v.b, W_o.W, W_o.b}. */
static void ref_attention(const double *x, int B, int T, int W, int heads, const double *vl,
                          double *const p[8], double *y) {
  int N = B * T * W, D = W / heads;
  double *q = malloc(sizeof(double) * (size_t)N * 4), *k = q + N, *v = k + N, *o = v + N;
  double *s = malloc(sizeof(double) * (size_t)(T * T) * 2), *a = s + T * T;
  ref_linear(x, B * T, W, p[0], p[1], W, q);
  ref_linear(x, B * T, W, p[2], p[3], W, k);
  ref_linear(x, B * T, W, p[4], p[5], W, v);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < heads; h++) {
      for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
          double dot = 0;
          for (int c = 0; c < D; c++)
            dot += q[(b * T + i) * W + h * D + c] * k[(b * T + j) * W + h * D + c];
          s[i * T + j] = dot / sqrt((double)D);
        }
      ref_masked_softmax(s, 1, T, T, &vl[b], a);
      for (int i = 0; i < T; i++)
        for (int c = 0; c < D; c++) {
          double acc = 0;
          for (int j = 0; j < T; j++) acc += a[i * T + j] * v[(b * T + j) * W + h * D + c];
          o[(b * T + i) * W + h * D + c] = acc;
        }
    }
  ref_linear(o, B * T, W, p[6], p[7], W, y);
  free(q);
  free(s);
}

TEST(block_attention) {
  Run r;
  if (!run_open(&r, "attention", NULL, 0)) {
    CHECK(0);
    return;
  }
  enum { N = NB * NT * NW };
  double x[N], vl[NB] = {2, 3, 1}, want[N];
  fill_random(x, N);
  run_write(&r, "x", x);
  run_write(&r, "valid_len", vl);
  run_randomize_params(&r);
  static const char *names[8] = {"attention.W_q.W", "attention.W_q.b", "attention.W_k.W",
                                 "attention.W_k.b", "attention.W_v.W", "attention.W_v.b",
                                 "attention.W_o.W", "attention.W_o.b"};
  double *p[8];
  bool have = true;
  for (int i = 0; i < 8; i++) have &= (p[i] = run_param(&r, names[i], i % 2 ? NW : NW * NW)) != NULL;
  if (run_step(&r, 0) && have) {
    ref_attention(x, NB, NT, NW, NH, vl, p, want);
    double *got = run_output(&r, 0, N);
    check_close(got, want, N, "multi_head_attention");
    free(got);
  }
  for (int i = 0; i < 8; i++) free(p[i]);
  run_close(&r);
}

TEST(block_add_norm) {
  Run r;
  if (!run_open(&r, "add_norm", NULL, 0)) {
    CHECK(0);
    return;
  }
  enum { N = NB * NT * NW };
  double x[N], y[N], s[N], want[N];
  fill_random(x, N);
  fill_random(y, N);
  run_write(&r, "x", x);
  run_write(&r, "y", y);
  run_randomize_params(&r);
  double *gamma = run_param(&r, "addnorm.ln.gamma", NW), *beta = run_param(&r, "addnorm.ln.beta", NW);
  if (run_step(&r, 0) && gamma && beta) {
    for (int i = 0; i < N; i++) s[i] = (double)(float)x[i] + (double)(float)y[i];
    ref_layer_norm(s, NB * NT, NW, gamma, beta, want);
    double *got = run_output(&r, 0, N);
    check_close(got, want, N, "add_norm");
    free(got);
  }
  free(gamma), free(beta);
  run_close(&r);
}

TEST(block_ffn) {
  Run r;
  if (!run_open(&r, "ffn", NULL, 0)) {
    CHECK(0);
    return;
  }
  enum { N = NB * NT * NW };
  double x[N], h[NB * NT * 6], want[N];
  fill_random(x, N);
  run_write(&r, "x", x);
  run_randomize_params(&r);
  double *W1 = run_param(&r, "ffn.dense1.W", NW * 6), *b1 = run_param(&r, "ffn.dense1.b", 6);
  double *W2 = run_param(&r, "ffn.dense2.W", 6 * NW), *b2 = run_param(&r, "ffn.dense2.b", NW);
  if (run_step(&r, 0) && W1 && b1 && W2 && b2) {
    ref_linear(x, NB * NT, NW, W1, b1, 6, h);
    for (int i = 0; i < NB * NT * 6; i++) h[i] = h[i] > 0 ? h[i] : 0;
    ref_linear(h, NB * NT, 6, W2, b2, NW, want);
    double *got = run_output(&r, 0, N);
    check_close(got, want, N, "ffn");
    free(got);
  }
  free(W1), free(b1), free(W2), free(b2);
  run_close(&r);
}

TEST(block_losses) {
  Run r;
  if (!run_open(&r, "losses", NULL, 0)) {
    CHECK(0);
    return;
  }
  double logits[NN * NC], labels[NN] = {0, 4, 2, 2, 1, 3}, w[NN] = {1, 1, 0, 1, 0.5, 0};
  fill_random(logits, NN * NC);
  logits[7] = 95; /* large logit: max subtraction */
  run_write(&r, "logits", logits);
  run_write(&r, "labels", labels);
  run_write(&r, "weights", w);
  if (run_step(&r, 0)) {
    double ce[NN], num = 0, den = 0, mean = 0, p[NN * NC];
    ref_softmax(logits, NN, NC, p);
    for (int i = 0; i < NN; i++) {
      double m = -INFINITY, s = 0;
      for (int c = 0; c < NC; c++) m = fmax(m, logits[i * NC + c]);
      for (int c = 0; c < NC; c++) s += exp(logits[i * NC + c] - m);
      ce[i] = -(logits[i * NC + (int)labels[i]] - m - log(s));
      num += ce[i] * w[i], den += w[i], mean += ce[i] / NN;
    }
    double wce = num / (den + 1e-8);
    double *gce = run_output(&r, 0, NN), *gw = run_output(&r, 1, 1), *gm = run_output(&r, 2, 1);
    check_close(gce, ce, NN, "cross_entropy");
    check_close(gw, &wce, 1, "weighted_cross_entropy");
    check_close(gm, &mean, 1, "mean");
    free(gce), free(gw), free(gm);
  }
  run_close(&r);
}

/* ---- the whole tiny BERT against a C forward pass (dropout 0) ---- */

enum { TB = 4, TT = 12, TH = 8, TF = 16, THEADS = 2, TLAYERS = 2, TV = 40, TP = 2, TCLS = 16 };
static const Setting tiny_eval[] = {{"dropout", "0"}};

typedef struct {
  double tokens[TB * TT], segments[TB * TT], valid_len[TB];
  double pred_positions[TB * TP], pred_weights[TB * TP], mlm_labels[TB * TP], nsp_labels[TB];
  double mlm_norm[1]; /* the batch's weight total: one process's MLM normalizer */
  double label[TB];
} TinyBatch;

static void tiny_batch(TinyBatch *x) {
  static const int vl[TB] = {12, 7, 5, 9};
  for (int b = 0; b < TB; b++) {
    x->valid_len[b] = vl[b];
    for (int t = 0; t < TT; t++) {
      x->tokens[b * TT + t] = t < vl[b] ? (t == 0 ? 2 : 5 + (b * 7 + t * 3) % (TV - 5)) : 0;
      x->segments[b * TT + t] = t < vl[b] && t > vl[b] / 2 ? 1 : 0;
    }
    for (int j = 0; j < TP; j++) {
      x->pred_positions[b * TP + j] = 1 + (b + 3 * j) % (vl[b] - 1);
      x->pred_weights[b * TP + j] = (b == 2 && j == 1) ? 0 : 1;
      x->mlm_labels[b * TP + j] = 5 + (b * 11 + j * 5) % (TV - 5);
    }
    x->nsp_labels[b] = b % 2;
    x->label[b] = b % 3;
  }
  x->mlm_norm[0] = 0;
  for (int i = 0; i < TB * TP; i++) x->mlm_norm[0] += x->pred_weights[i];
}

/* Writes the graph's inputs from the batch (by name) and returns false if
 * the graph has an input the batch does not know. */
static bool tiny_write(Run *r, const TinyBatch *x) {
  for (int i = 0; i < r->g.inputs.n; i++) {
    const char *n = r->g.values.data[r->g.inputs.data[i]].name;
    const double *src = !strcmp(n, "tokens")           ? x->tokens
                        : !strcmp(n, "segments")       ? x->segments
                        : !strcmp(n, "valid_len")      ? x->valid_len
                        : !strcmp(n, "pred_positions") ? x->pred_positions
                        : !strcmp(n, "pred_weights")   ? x->pred_weights
                        : !strcmp(n, "mlm_labels")     ? x->mlm_labels
                        : !strcmp(n, "nsp_labels")     ? x->nsp_labels
                        : !strcmp(n, "label")          ? x->label
                        : !strcmp(n, "mlm_norm")       ? x->mlm_norm
                                                       : NULL;
    CHECK_MSG(src != NULL, "unexpected input %s", n);
    if (!src) return false;
    CHECK(exec_write(r->e, r->g.inputs.data[i], src, DTYPE_F64, &r->d));
  }
  return true;
}

static bool tiny_open(Run *r, const char *graph) {
  diag_init(&r->d);
  r->e = NULL;
  if (!expand(&r->g, MODEL("tiny/bert.yaml"), graph, tiny_eval, 1)) {
    diag_free(&r->d);
    return false;
  }
  r->e = exec_create(&backend_interp, &r->g, &r->d);
  if (!r->e) {
    diag_print(&r->d, stderr);
    graph_free(&r->g);
    diag_free(&r->d);
    return false;
  }
  run_randomize_params(r); /* nonzero biases and betas everywhere */
  return true;
}

static double *P(Run *r, const char *fmt, int layer, int64_t n) {
  char name[128];
  snprintf(name, sizeof name, fmt, layer);
  return run_param(r, name, n);
}

/* The encoder by hand: returns [TB, TT, TH] (caller frees). */
static double *ref_encoder(Run *r, const TinyBatch *x) {
  enum { N = TB * TT * TH };
  double *tok = P(r, "encoder.token_embedding.table", 0, TV * TH);
  double *seg = P(r, "encoder.segment_embedding.table", 0, 2 * TH);
  double *pos = P(r, "encoder.pos_embedding", 0, TT * TH);
  double *X = malloc(sizeof(double) * N * 4), *A = X + N, *Hh = A + N, *F = Hh + N;
  double tmp[TB * TT * TF];
  if (tok && seg && pos)
    for (int b = 0; b < TB; b++)
      for (int t = 0; t < TT; t++)
        for (int c = 0; c < TH; c++)
          X[(b * TT + t) * TH + c] = tok[(int)x->tokens[b * TT + t] * TH + c] +
                                     seg[(int)x->segments[b * TT + t] * TH + c] + pos[t * TH + c];
  free(tok), free(seg), free(pos);
  for (int l = 0; l < TLAYERS; l++) {
    static const char *an[8] = {"W_q.W", "W_q.b", "W_k.W", "W_k.b", "W_v.W", "W_v.b", "W_o.W", "W_o.b"};
    double *p[8];
    for (int i = 0; i < 8; i++) {
      char fmt[96];
      snprintf(fmt, sizeof fmt, "encoder.blk.%%d.attention.%s", an[i]);
      p[i] = P(r, fmt, l, i % 2 ? TH : TH * TH);
    }
    double *g1 = P(r, "encoder.blk.%d.addnorm1.ln.gamma", l, TH);
    double *b1 = P(r, "encoder.blk.%d.addnorm1.ln.beta", l, TH);
    double *W1 = P(r, "encoder.blk.%d.ffn.dense1.W", l, TH * TF);
    double *c1 = P(r, "encoder.blk.%d.ffn.dense1.b", l, TF);
    double *W2 = P(r, "encoder.blk.%d.ffn.dense2.W", l, TF * TH);
    double *c2 = P(r, "encoder.blk.%d.ffn.dense2.b", l, TH);
    double *g2 = P(r, "encoder.blk.%d.addnorm2.ln.gamma", l, TH);
    double *b2 = P(r, "encoder.blk.%d.addnorm2.ln.beta", l, TH);
    bool have = g1 && b1 && W1 && c1 && W2 && c2 && g2 && b2;
    for (int i = 0; i < 8; i++) have &= p[i] != NULL;
    if (have) {
      ref_attention(X, TB, TT, TH, THEADS, x->valid_len, p, A);
      for (int i = 0; i < N; i++) A[i] += X[i];
      ref_layer_norm(A, TB * TT, TH, g1, b1, Hh);
      ref_linear(Hh, TB * TT, TH, W1, c1, TF, tmp);
      for (int i = 0; i < TB * TT * TF; i++) tmp[i] = tmp[i] > 0 ? tmp[i] : 0;
      ref_linear(tmp, TB * TT, TF, W2, c2, TH, F);
      for (int i = 0; i < N; i++) F[i] += Hh[i];
      ref_layer_norm(F, TB * TT, TH, g2, b2, X);
    }
    for (int i = 0; i < 8; i++) free(p[i]);
    free(g1), free(b1), free(W1), free(c1), free(W2), free(c2), free(g2), free(b2);
  }
  return X;
}

/* -log softmax(z)[label] */
static double ref_ce(const double *z, int C, int label) {
  double m = -INFINITY, s = 0;
  for (int c = 0; c < C; c++) m = fmax(m, z[c]);
  for (int c = 0; c < C; c++) s += exp(z[c] - m);
  return -(z[label] - m - log(s));
}

TEST(tiny_bert_nli_forward_matches_reference) {
  Run r;
  if (!tiny_open(&r, "nli")) {
    CHECK(0);
    return;
  }
  TinyBatch x;
  tiny_batch(&x);
  if (tiny_write(&r, &x) && run_step(&r, 0)) {
    double *enc = ref_encoder(&r, &x);
    double *W1 = P(&r, "classifier.hidden.W", 0, TH * TCLS), *b1 = P(&r, "classifier.hidden.b", 0, TCLS);
    double *W2 = P(&r, "classifier.output.W", 0, TCLS * 3), *b2 = P(&r, "classifier.output.b", 0, 3);
    if (W1 && b1 && W2 && b2) {
      double cls[TB * TH], h[TB * TCLS], logits[TB * 3], loss = 0;
      for (int b = 0; b < TB; b++) memcpy(&cls[b * TH], &enc[b * TT * TH], sizeof(double) * TH);
      ref_linear(cls, TB, TH, W1, b1, TCLS, h);
      for (int i = 0; i < TB * TCLS; i++) h[i] = h[i] > 0 ? h[i] : 0;
      ref_linear(h, TB, TCLS, W2, b2, 3, logits);
      for (int b = 0; b < TB; b++) loss += ref_ce(&logits[b * 3], 3, (int)x.label[b]) / TB;
      double *gl = run_output(&r, 0, 1), *gz = run_output(&r, 1, TB * 3);
      check_close(gz, logits, TB * 3, "nli logits");
      check_close(gl, &loss, 1, "nli loss");
      free(gl), free(gz);
    }
    free(enc), free(W1), free(b1), free(W2), free(b2);
  }
  run_close(&r);
}

TEST(tiny_bert_pretrain_forward_matches_reference) {
  Run r;
  if (!tiny_open(&r, "pretrain")) {
    CHECK(0);
    return;
  }
  TinyBatch x;
  tiny_batch(&x);
  if (tiny_write(&r, &x) && run_step(&r, 0)) {
    double *enc = ref_encoder(&r, &x);
    double *M1 = P(&r, "mlm.dense1.W", 0, TH * TH), *m1 = P(&r, "mlm.dense1.b", 0, TH);
    double *lg = P(&r, "mlm.ln.gamma", 0, TH), *lb = P(&r, "mlm.ln.beta", 0, TH);
    double *M2 = P(&r, "mlm.dense2.W", 0, TH * TV), *m2 = P(&r, "mlm.dense2.b", 0, TV);
    double *N1 = P(&r, "nsp.pooler.W", 0, TH * TH), *n1 = P(&r, "nsp.pooler.b", 0, TH);
    double *N2 = P(&r, "nsp.output.W", 0, TH * 2), *n2 = P(&r, "nsp.output.b", 0, 2);
    if (M1 && m1 && lg && lb && M2 && m2 && N1 && n1 && N2 && n2) {
      /* MLM: the encodings at the prediction positions, then the head */
      double g[TB * TP * TH], h[TB * TP * TH], hn[TB * TP * TH], mlm[TB * TP * TV];
      for (int b = 0; b < TB; b++)
        for (int j = 0; j < TP; j++)
          memcpy(&g[(b * TP + j) * TH], &enc[(b * TT + (int)x.pred_positions[b * TP + j]) * TH],
                 sizeof(double) * TH);
      ref_linear(g, TB * TP, TH, M1, m1, TH, h);
      for (int i = 0; i < TB * TP * TH; i++) h[i] = h[i] > 0 ? h[i] : 0;
      ref_layer_norm(h, TB * TP, TH, lg, lb, hn);
      ref_linear(hn, TB * TP, TH, M2, m2, TV, mlm);
      double num = 0, den = 0;
      for (int i = 0; i < TB * TP; i++) {
        num += ref_ce(&mlm[i * TV], TV, (int)x.mlm_labels[i]) * x.pred_weights[i];
        den += x.pred_weights[i];
      }
      double mlm_loss = num / (den + 1e-8);
      /* NSP: tanh pooler on <cls>, dense(2) */
      double cls[TB * TH], pooled[TB * TH], nsp[TB * 2], nsp_loss = 0;
      for (int b = 0; b < TB; b++) memcpy(&cls[b * TH], &enc[b * TT * TH], sizeof(double) * TH);
      ref_linear(cls, TB, TH, N1, n1, TH, pooled);
      for (int i = 0; i < TB * TH; i++) pooled[i] = tanh(pooled[i]);
      ref_linear(pooled, TB, TH, N2, n2, 2, nsp);
      for (int b = 0; b < TB; b++) nsp_loss += ref_ce(&nsp[b * 2], 2, (int)x.nsp_labels[b]) / TB;
      double loss = mlm_loss + nsp_loss;
      double *gl = run_output(&r, 0, 1), *gm = run_output(&r, 1, 1), *gn = run_output(&r, 2, 1);
      double *gml = run_output(&r, 3, TB * TP * TV), *gnl = run_output(&r, 4, TB * 2);
      check_close(gml, mlm, TB * TP * TV, "mlm_logits");
      check_close(gnl, nsp, TB * 2, "nsp_logits");
      check_close(gm, &mlm_loss, 1, "mlm_loss");
      check_close(gn, &nsp_loss, 1, "nsp_loss");
      check_close(gl, &loss, 1, "loss");
      free(gl), free(gm), free(gn), free(gml), free(gnl);
    }
    free(enc), free(M1), free(m1), free(lg), free(lb), free(M2), free(m2);
    free(N1), free(n1), free(N2), free(n2);
  }
  run_close(&r);
}

/* ---- training: each model fits one fixed batch (autodiff + Adam, interpreter) ---- */

/* Compiles `graph` of `path` as a training step, feeds the same batch
 * `steps` times at learning rate `lr`, returns the first and last loss. */
static bool overfit(const char *path, const char *graph, const Setting *sets, int n_sets, int steps,
                    double lr, double *first, double *last) {
  Diag d;
  diag_init(&d);
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = path;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = n_sets;
  o.train = true;
  Graph g;
  if (!pipeline_run(&g, &o, &d)) {
    diag_print(&d, stderr);
    diag_free(&d);
    return false;
  }
  Exec *e = exec_create(&backend_interp, &g, &d);
  bool ok = e && exec_init_params(e, 3, &d);
  TinyBatch x;
  tiny_batch(&x);
  for (int i = 0; ok && i < g.inputs.n; i++) {
    const Value *v = &g.values.data[g.inputs.data[i]];
    int64_t n = shape_numel(&v->shape);
    double *buf = calloc((size_t)n, sizeof(double));
    const double *src = NULL;
    if (!strcmp(v->name, "lr")) buf[0] = lr;
    else if (!strcmp(v->name, "x")) fill_random(buf, n);
    else if (!strcmp(v->name, "tokens")) src = x.tokens;
    else if (!strcmp(v->name, "segments")) src = x.segments;
    else if (!strcmp(v->name, "valid_len")) src = x.valid_len;
    else if (!strcmp(v->name, "label")) src = x.label;
    else {
      CHECK_MSG(0, "unexpected input %s", v->name);
      ok = false;
    }
    if (src) memcpy(buf, src, sizeof(double) * (size_t)n);
    ok = ok && exec_write(e, g.inputs.data[i], buf, DTYPE_F64, &d);
    free(buf);
  }
  for (int s = 0; ok && s < steps; s++) {
    RunContext ctx = {9, (uint32_t)s, 0};
    double l = NAN;
    ok = exec_run(e, &ctx, &d) && exec_read(e, g.loss, &l, DTYPE_F64, &d);
    if (s == 0) *first = l;
    *last = l;
  }
  if (!ok) diag_print(&d, stderr);
  exec_destroy(e);
  graph_free(&g);
  diag_free(&d);
  return ok;
}

TEST(models_fit_one_batch) {
  static const Setting mlp[] = {{"dropout", "0"}};
  static const Setting bow[] = {{"vocab", "40"},   {"emb_dim", "8"}, {"hidden", "16"},
                                {"max_len", "12"}, {"batch", "4"},   {"dropout", "0"}};
  static const struct {
    const char *path, *graph;
    const Setting *sets;
    int n_sets;
  } runs[] = {
      {MODEL("tiny/mlp.yaml"), "train", mlp, 1},
      {MODEL("bow_nli.yaml"), "nli", bow, 6},
      {MODEL("tiny/bert.yaml"), "nli", tiny_eval, 1},
  };
  for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
    double first = NAN, last = NAN;
    bool ok = overfit(runs[i].path, runs[i].graph, runs[i].sets, runs[i].n_sets, 60, 0.01, &first,
                      &last);
    CHECK_MSG(ok, "%s --graph %s", runs[i].path, runs[i].graph);
    fprintf(stderr, "  %s: loss %.4f -> %.4f\n", runs[i].path, first, last);
    CHECK_MSG(first > 0.5 && last < 0.25 * first, "%s: loss %g -> %g", runs[i].path, first, last);
  }
}

TEST_MAIN()
