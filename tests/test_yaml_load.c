/* test_yaml_load.c — the model front end: the YNode tree (locations, quoted
 * vs plain scalars, duplicate keys, aliases, syntax errors), the expression
 * evaluator (integer vs float, // and % like Python, dim/rank), and the
 * expansion of small models written to a temporary folder (sorting, repeat,
 * scopes and parameter names, implicit broadcasts and scalar constants,
 * imports, --set, outputs and loss). Broken models live in tests/yaml_errors/. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/yaml_load.h"
#include "passes/passes.h"
#include "tests/test.h"

/* ------------------------------------------------------------ helpers */

static char tmp_dir[64];

static const char *tmp_path(const char *name) {
  static char buf[8][256];
  static int k;
  if (!tmp_dir[0]) {
    strcpy(tmp_dir, "/tmp/bc_yaml_XXXXXX");
    BC_ASSERT(mkdtemp(tmp_dir));
  }
  char *b = buf[k++ % 8];
  snprintf(b, 256, "%s/%s", tmp_dir, name);
  return b;
}

static const char *write_model(const char *name, const char *text) {
  const char *p = tmp_path(name);
  FILE *f = fopen(p, "w");
  BC_ASSERT(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* Expands `text` (written as `name`), graph `graph` (NULL: first); prints
 * the diagnostics when it fails and `want_ok`. */
static bool expand(Graph *g, const char *name, const char *text, const char *graph,
                   const Setting *sets, int n_sets, Diag *d, bool want_ok) {
  const char *p = write_model(name, text);
  diag_init(d);
  bool ok = model_expand(g, p, graph, sets, n_sets, d);
  if (!ok && want_ok) diag_print(d, stderr);
  return ok;
}

/* The first line of the first diagnostic, after "file:line:col: ". */
static const char *first_msg(const Diag *d) {
  static char buf[512];
  const char *f = diag_first(d);
  const char *e = strstr(f, "error: ");
  snprintf(buf, sizeof buf, "%.*s", (int)strcspn(e ? e : f, "\n"), e ? e : f);
  return buf;
}

static const Value *find_value(const Graph *g, const char *name) {
  for (int i = 0; i < g->values.n; i++)
    if (strcmp(g->values.data[i].name, name) == 0) return &g->values.data[i];
  return NULL;
}

static int count_op(const Graph *g, Op op) {
  int n = 0;
  for (int i = 0; i < g->nodes.n; i++) n += g->nodes.data[i].op == op;
  return n;
}

static const Node *producer(const Graph *g, const char *name) {
  const Value *v = find_value(g, name);
  return v && v->kind == VALUE_NODE ? &g->nodes.data[v->node] : NULL;
}

/* ------------------------------------------------------------- tree */

TEST(tree_locations_and_scalar_styles) {
  const char *text =
      "a: 512\n"
      "b: \"512\"\n"
      "list:\n"
      "  - x\n"
      "  - {k: 'v', n: ~}\n"
      "flow: [1, two, \"three\"]\n"
      "block: |\n"
      "  text\n";
  YDoc doc;
  Diag d;
  diag_init(&d);
  CHECK(ydoc_load_string(&doc, "mem.yaml", text, strlen(text), &d));
  const YNode *r = doc.root;
  CHECK(r->kind == YNODE_MAP);
  CHECK_EQ_INT(r->n, 5);
  CHECK_STR(r->pairs[0].key, "a");
  CHECK_EQ_INT(r->pairs[0].key_loc.line, 1);
  CHECK_EQ_INT(r->pairs[0].key_loc.col, 1);
  const YNode *a = ynode_get(r, "a");
  CHECK_STR(a->text, "512");
  CHECK(!a->quoted);
  CHECK_EQ_INT(a->loc.line, 1);
  CHECK_EQ_INT(a->loc.col, 4);
  const YNode *b = ynode_get(r, "b");
  CHECK_STR(b->text, "512");
  CHECK(b->quoted);
  CHECK_EQ_INT(b->loc.col, 4);
  const YNode *list = ynode_get(r, "list");
  CHECK(list->kind == YNODE_SEQ);
  CHECK_EQ_INT(list->n, 2);
  CHECK_EQ_INT(list->items[0]->loc.line, 4);
  CHECK_EQ_INT(list->items[0]->loc.col, 5);
  const YNode *m = list->items[1];
  CHECK(m->kind == YNODE_MAP);
  CHECK_EQ_INT(m->loc.col, 5); /* the `{` */
  CHECK(ynode_get(m, "k")->quoted);
  CHECK(ynode_is_null(ynode_get(m, "n")));
  CHECK(!ynode_is_null(ynode_get(m, "k")));
  CHECK_EQ_INT(ynode_pair(m, "n")->key_loc.col, 14);
  const YNode *flow = ynode_get(r, "flow");
  CHECK_EQ_INT(flow->n, 3);
  CHECK(!flow->items[1]->quoted);
  CHECK(flow->items[2]->quoted);
  CHECK_EQ_INT(flow->items[2]->loc.col, 16);
  const YNode *blk = ynode_get(r, "block");
  CHECK_STR(blk->text, "text\n");
  CHECK(blk->quoted);
  CHECK(ynode_get(r, "missing") == NULL);
  CHECK(ynode_get(a, "x") == NULL); /* not a mapping */
  CHECK_STR(doc.file, "mem.yaml");
  CHECK_EQ_INT(d.n_errors, 0);
  ydoc_free(&doc);
  diag_free(&d);
}

TEST(tree_duplicate_keys_are_errors) {
  const char *text = "top:\n  x: 1\n  y: 2\n  x: 3\n";
  YDoc doc;
  Diag d;
  diag_init(&d);
  CHECK(!ydoc_load_string(&doc, "dup.yaml", text, strlen(text), &d));
  CHECK(doc.root == NULL);
  CHECK_STR(first_msg(&d), "error: duplicate key 'x' (first at line 2)");
  CHECK(strncmp(diag_first(&d), "dup.yaml:4:3: ", 14) == 0);
  ydoc_free(&doc); /* harmless after a failure */
  diag_free(&d);

  /* the same key in different mappings is fine */
  const char *ok = "a: {x: 1}\nb: {x: 2}\n";
  diag_init(&d);
  CHECK(ydoc_load_string(&doc, "ok.yaml", ok, strlen(ok), &d));
  ydoc_free(&doc);
  diag_free(&d);
}

TEST(tree_syntax_errors_at_libyaml_mark) {
  const char *text = "a: 1\nb: [1, 2\nc: 3\n";
  YDoc doc;
  Diag d;
  diag_init(&d);
  CHECK(!ydoc_load_string(&doc, "bad.yaml", text, strlen(text), &d));
  CHECK(d.n_errors == 1);
  CHECK(strncmp(diag_first(&d), "bad.yaml:", 9) == 0);
  CHECK(strstr(diag_first(&d), "error: ") != NULL);
  diag_free(&d);

  const char *tab = "a:\n\tb: 1\n";
  diag_init(&d);
  CHECK(!ydoc_load_string(&doc, "tab.yaml", tab, strlen(tab), &d));
  CHECK(strncmp(diag_first(&d), "tab.yaml:2:", 11) == 0);
  diag_free(&d);

  const char *badutf = "a: \xff\xfe\n";
  diag_init(&d);
  CHECK(!ydoc_load_string(&doc, "utf.yaml", badutf, strlen(badutf), &d));
  CHECK(strncmp(diag_first(&d), "utf.yaml:1:4: error: ", 21) == 0);
  diag_free(&d);
}

TEST(tree_empty_and_aliases) {
  YDoc doc;
  Diag d;
  const char *texts[] = {"", "# only a comment\n", "---\n", "~\n"};
  for (int i = 0; i < 4; i++) {
    diag_init(&d);
    CHECK(!ydoc_load_string(&doc, "e.yaml", texts[i], strlen(texts[i]), &d));
    CHECK_STR(diag_first(&d), "e.yaml: error: empty model file");
    diag_free(&d);
  }
  const char *al = "base: &b {x: 1, y: [2, 3]}\nuse: *b\n";
  diag_init(&d);
  CHECK(ydoc_load_string(&doc, "al.yaml", al, strlen(al), &d));
  CHECK(ynode_get(doc.root, "use") == ynode_get(doc.root, "base"));
  CHECK_STR(ynode_get(ynode_get(doc.root, "use"), "x")->text, "1");
  ydoc_free(&doc);
  diag_free(&d);

  const char *self = "a: &s [1, *s]\n"; /* a cycle would make the tree infinite */
  diag_init(&d);
  CHECK(!ydoc_load_string(&doc, "self.yaml", self, strlen(self), &d));
  CHECK(strstr(diag_first(&d), "unknown alias '*s'") != NULL);
  diag_free(&d);

  diag_init(&d);
  CHECK(!ydoc_load_file(&doc, tmp_path("does_not_exist.yaml"), &d));
  CHECK(strstr(diag_first(&d), "cannot open file") != NULL);
  diag_free(&d);
}

/* ------------------------------------------------------- expressions */

/* The value of the constant node that makes `out` in a one-node graph with
 * hparams {a: 7, b: 2, h: 0.5} and input x [2, 3, 4]. */
static bool const_value(const char *expr, double *v, char *err, size_t err_n) {
  char *text = bc_asprintf(
      "bertc: 1\n"
      "hparams: {a: 7, b: 2, h: 0.5}\n"
      "graphs:\n"
      "  g:\n"
      "    inputs: {x: [2, 3, 4, f32]}\n"
      "    nodes:\n"
      "      - op: constant\n"
      "        out: c\n"
      "        shape: [1]\n"
      "        value: %s\n",
      expr);
  Graph g;
  Diag d;
  bool ok = expand(&g, "expr.yaml", text, NULL, NULL, 0, &d, false);
  free(text);
  if (ok) {
    *v = producer(&g, "c")->a.scalar;
    graph_free(&g);
  } else {
    snprintf(err, err_n, "%s", first_msg(&d));
  }
  diag_free(&d);
  return ok;
}

TEST(expressions_evaluate_like_python) {
  struct {
    const char *expr;
    double want;
  } cases[] = {
      {"a + b * 3", 13},       {"(a + b) * 3", 27},  {"a / b", 3.5},      {"a // b", 3},
      {"-a // b", -4},         {"a % b", 1},         {"-a % 3", 2},       {"a % -3", -2},
      {"8 / b", 4},            {"-(a - 10)", 3},     {"--a", 7},          {"h * 4", 2},
      {"$a * $b", 14},         {"1e-3", 0.001},      {".5 + 1.5", 2},     {"dim(x, 0)", 2},
      {"dim(x, -1) * 2", 8},   {"rank(x)", 3},       {"7.5 // 2", 3},     {"7.5 % 2", 1.5},
      {"\"dim(x, 1) + a\"", 10}, {"$(a - b) * 2", 10},
      {"a > b", 1},            {"a <= b", 0},        {"a != 7", 0},       {"h < 1", 1},
      {"\"dim(x, 0) == b\"", 1}, {"rank(x) >= 3", 1}, {"dtype(x) == f32", 1},
      {"dtype(x) != f32", 0},  {"a % b == 1", 1},   {"a <= 7", 1},       {"a >= 7", 1},
      {"b < 2", 0},            {"b > 2", 0},         {"h == 0.5", 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double v = 0;
    char err[512] = "";
    bool ok = const_value(cases[i].expr, &v, err, sizeof err);
    CHECK_MSG(ok, "%s: %s", cases[i].expr, err);
    if (ok) CHECK_MSG(v == cases[i].want, "%s = %g, want %g", cases[i].expr, v, cases[i].want);
  }
}

TEST(expression_errors) {
  struct {
    const char *expr, *want;
  } cases[] = {
      {"a / (b - 2)", "error: division by zero in 'a / (b - 2)'"},
      {"a % 0", "error: division by zero in 'a % 0'"},
      {"a +", "error: incomplete expression 'a +'"},
      {"(a + b", "error: unexpected end"},
      {"a b", "error: unexpected 'b' in expression 'a b'"},
      {"a ; b", "error: unexpected character ';'"},
      {"c + 1", "error: unknown name 'c' (not an hparam or block attribute)"},
      {"max(a, b)", "error: unknown function 'max' (expected dim, rank or dtype)"},
      {"dtype(x)", "error: expected a number, got the dtype f32"},
      {"dtype(x) + 1", "error: the dtype f32 is not a number"},
      {"dtype(x) == 1", "error: cannot compare the dtype f32 with a number"},
      {"dtype(x) < i32", "error: dtypes compare with == and != only, not '<'"},
      {"a < b < 3", "error: unexpected '<' in expression 'a < b < 3'"},
      {"a = b", "error: unexpected character '='"},
      {"dim(y, 0)", "error: undefined value 'y'"},
      {"dim(x, 3)", "error: dim(): axis 3 out of range for 'x' of shape [2, 3, 4]"},
      {"9223372036854775807 + 1", "error: integer overflow in '9223372036854775807 + 1'"},
      {"[1]", "error: expected a number, got a list"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double v;
    char err[512] = "";
    CHECK_MSG(!const_value(cases[i].expr, &v, err, sizeof err), "%s evaluated", cases[i].expr);
    /* "(a + b" reports where it ended: accept any message that starts right */
    if (strcmp(cases[i].expr, "(a + b") == 0)
      CHECK_MSG(strstr(err, "incomplete expression") || strstr(err, "unexpected"), "%s", err);
    else
      CHECK_MSG(strncmp(err, cases[i].want, strlen(cases[i].want)) == 0, "%s: got '%s'",
                cases[i].expr, err);
  }
}

TEST(integer_where_needed) {
  /* 7 / 2 is 3.5: not a dimension; 8 / 2 is the integer 4 */
  const char *m = "bertc: 1\nhparams: {a: 7, b: 2}\ngraphs:\n  g:\n    inputs: {x: [a / b, f32]}\n";
  Graph g;
  Diag d;
  CHECK(!expand(&g, "int.yaml", m, NULL, NULL, 0, &d, false));
  CHECK_STR(first_msg(&d), "error: a dimension must be an integer, got 3.5");
  diag_free(&d);
  Setting s = {"a", "8"};
  CHECK(expand(&g, "int.yaml", m, NULL, &s, 1, &d, true));
  CHECK_EQ_INT(g.values.data[g.inputs.data[0]].shape.dim[0], 4);
  CHECK_NEAR(graph_hparam(&g, "a", 0), 8, 0, 0);
  graph_free(&g);
  diag_free(&d);
}

/* -------------------------------------------------------- expansion */

static const char *lib_text =
    "bertc: 1\n"
    "blocks:\n"
    "  dense:\n"
    "    in: [x]\n"
    "    out: [y]\n"
    "    attrs: {units: ~, init: xavier}\n"
    "    nodes:\n"
    "      - {op: add, in: [xw, b], out: y}          # b [units] broadcast to [.., units]\n"
    "      - {op: matmul, in: [x, W], out: xw}\n"
    "      - {op: param, out: W, shape: [\"dim(x, -1)\", units], init: $init}\n"
    "      - {op: param, out: b, shape: [units], init: zeros}\n";

static const char *main_text =
    "bertc: 1\n"
    "hparams: {batch: 4, width: 8, layers: 3, p: 0.5}\n"
    "import: [sub/lib.yaml]\n"
    "blocks:\n"
    "  layer:\n"
    "    in: [x, mask]\n"
    "    out: [y]\n"
    "    attrs: {units: ~}\n"
    "    nodes:\n"
    "      - {op: dense, in: x, out: h, units: $units, init: normal}\n"
    "      - {op: tanh, in: h, out: t}\n"
    "      - {op: mul, in: [t, mask], out: y}       # mask [batch, 1] broadcast\n"
    "graphs:\n"
    "  train:\n"
    "    inputs:\n"
    "      x: [batch, width, f32]\n"
    "      mask: [batch, 1, f32]\n"
    "      label: [batch, i32]\n"
    "    nodes:\n"
    "      - {op: reduce_sum, in: half, out: s, axis: -1}\n"
    "      - {op: mul, in: [enc, $p], out: half}\n"
    "      - {op: layer, in: [x, mask], out: enc, repeat: $layers, units: $width}\n"
    "      - {op: add, in: [label, 1], out: shifted}\n"
    "      - {op: random, like: x, out: noise}\n"
    "      - {op: reshape, in: s, out: flat, shape: [-1]}\n"
    "      - {op: reduce_sum, in: flat, out: total, axis: 0}\n"
    "    outputs: [enc, total, shifted]\n"
    "    loss: total\n"
    "  other:\n"
    "    inputs: {x: [2, width, f32]}\n"
    "    nodes:\n"
    "      - {op: dense, in: x, out: y, name: enc.0.h, units: width}\n";

TEST(expand_blocks_repeat_broadcast_imports) {
  mkdir(tmp_path("sub"), 0777);
  write_model("sub/lib.yaml", lib_text);
  Graph g;
  Diag d;
  bool ok = expand(&g, "main.yaml", main_text, NULL, NULL, 0, &d, true);
  CHECK(ok);
  if (!ok) {
    diag_free(&d);
    return;
  }
  CHECK_STR(g.name, "train");
  CHECK_EQ_INT(g.inputs.n, 3);
  /* three layers, each a dense with W and b, named by scope */
  CHECK_EQ_INT(g.params.n, 6);
  const char *params[] = {"enc.0.h.W", "enc.0.h.b", "enc.1.h.W", "enc.1.h.b", "enc.2.h.W", "enc.2.h.b"};
  for (int i = 0; i < 6; i++) {
    const Value *v = find_value(&g, params[i]);
    CHECK_MSG(v && v->kind == VALUE_PARAM, "%s", params[i]);
  }
  const Value *w0 = find_value(&g, "enc.0.h.W");
  if (w0) {
    CHECK_EQ_INT(w0->shape.rank, 2);
    CHECK_EQ_INT(w0->shape.dim[0], 8);
    CHECK_EQ_INT(w0->shape.dim[1], 8);
    CHECK(w0->init.kind == INIT_NORMAL);
    CHECK_NEAR(w0->init.scale, 0.01, 0, 0);
    CHECK(find_value(&g, "enc.0.h.b")->init.kind == INIT_ZEROS);
  }
  /* the chained output is renamed to the caller's name; inner values keep theirs */
  CHECK(find_value(&g, "enc") != NULL);
  CHECK(find_value(&g, "enc.0.y") != NULL);
  CHECK(find_value(&g, "enc.1.t") != NULL);
  CHECK(find_value(&g, "enc.2.h.xw") != NULL);
  /* broadcasts: b [8] -> [4, 8] per layer, mask [4, 1] -> [4, 8] per layer,
   * and the scalar constants come shaped already */
  CHECK_EQ_INT(count_op(&g, OP_BROADCAST), 6);
  const Node *half = producer(&g, "half");
  CHECK(half && half->op == OP_MUL);
  if (half) {
    const Value *k = &g.values.data[half->in[1]];
    const Node *kn = &g.nodes.data[k->node];
    CHECK(kn->op == OP_CONSTANT);
    CHECK_NEAR(kn->a.scalar, 0.5, 0, 0);
    CHECK(k->dtype == DTYPE_F32);
    CHECK_EQ_INT(k->shape.rank, 2);
  }
  const Node *sh = producer(&g, "shifted");
  CHECK(sh && g.values.data[sh->in[1]].dtype == DTYPE_I32);
  CHECK(find_value(&g, "shifted")->dtype == DTYPE_I32);
  /* random keyed by its value's full name, shaped like x */
  const Node *rn = producer(&g, "noise");
  CHECK(rn && rn->a.key == bc_hash32("noise"));
  CHECK(rn && rn->a.shape.dim[1] == 8);
  /* reshape -1 resolved; negative axis normalized by shape inference */
  CHECK_EQ_INT(find_value(&g, "flat")->shape.dim[0], 4);
  CHECK_EQ_INT(producer(&g, "s")->a.axis, 1);
  /* outputs, loss, hparams */
  CHECK_EQ_INT(g.outputs.n, 3);
  CHECK(g.loss >= 0 && strcmp(g.values.data[g.loss].name, "total") == 0);
  CHECK_NEAR(graph_hparam(&g, "layers", 0), 3, 0, 0);
  CHECK_NEAR(graph_hparam(&g, "p", 0), 0.5, 0, 0);
  /* the node array is an execution order */
  for (int i = 0; i < g.nodes.n; i++)
    for (int k = 0; k < g.nodes.data[i].n_in; k++) {
      const Value *v = &g.values.data[g.nodes.data[i].in[k]];
      CHECK(v->kind != VALUE_NODE || v->node < i);
    }
  CHECK(graph_verify(&g, &d));
  /* locations point into the right file */
  const Node *xw = producer(&g, "enc.0.h.xw");
  CHECK(xw && strstr(xw->loc.file, "sub/lib.yaml") && xw->loc.line == 9);
  graph_free(&g);
  diag_free(&d);

  /* the second graph reuses the names: same full parameter name */
  CHECK(expand(&g, "main.yaml", main_text, "other", NULL, 0, &d, true));
  CHECK(find_value(&g, "enc.0.h.W") && find_value(&g, "enc.0.h.W")->shape.dim[1] == 8);
  CHECK(find_value(&g, "enc.0.h.W")->init.kind == INIT_XAVIER);
  graph_free(&g);
  diag_free(&d);

  /* --set reaches blocks through attributes */
  Setting sets[] = {{"layers", "1"}, {"width", "16"}};
  CHECK(expand(&g, "main.yaml", main_text, NULL, sets, 2, &d, true));
  CHECK_EQ_INT(g.params.n, 2);
  CHECK_EQ_INT(find_value(&g, "enc.0.h.W")->shape.dim[1], 16);
  graph_free(&g);
  diag_free(&d);

  const char **names = NULL;
  diag_init(&d);
  CHECK_EQ_INT(model_graph_names(tmp_path("main.yaml"), &names, &d), 2);
  if (names) {
    CHECK_STR(names[0], "train");
    CHECK_STR(names[1], "other");
  }
  free(names);
  diag_free(&d);
}

TEST(expand_string_attrs_pass_through) {
  const char *m =
      "bertc: 1\n"
      "blocks:\n"
      "  conv:\n"
      "    in: [x]\n"
      "    out: [y]\n"
      "    attrs: {t: f32, ax: -1}\n"
      "    nodes:\n"
      "      - {op: cast, in: x, out: c, dtype: $t}\n"
      "      - {op: reduce_max, in: c, out: y, axis: ax}\n"
      "graphs:\n"
      "  g:\n"
      "    inputs: {x: [2, 3, i32]}\n"
      "    nodes:\n"
      "      - {op: conv, in: x, out: y, name: first, ax: 0}\n"
      "      - {op: conv, in: x, out: z, t: i32}\n";
  Graph g;
  Diag d;
  CHECK(expand(&g, "pass.yaml", m, NULL, NULL, 0, &d, true));
  if (g.values.n) {
    CHECK(find_value(&g, "y")->dtype == DTYPE_F32);
    CHECK_EQ_INT(find_value(&g, "y")->shape.dim[0], 1);
    CHECK(find_value(&g, "z")->dtype == DTYPE_I32);
    CHECK_EQ_INT(find_value(&g, "z")->shape.dim[1], 1);
    CHECK(find_value(&g, "first.c") != NULL);
    graph_free(&g);
  }
  diag_free(&d);
}

TEST(expand_reports_many_errors_once_each) {
  /* two independent mistakes are both reported; values that depend on a
   * failed node are skipped silently */
  const char *m =
      "bertc: 1\n"
      "graphs:\n"
      "  g:\n"
      "    inputs: {x: [2, 3, f32]}\n"
      "    nodes:\n"
      "      - {op: relu, in: nope, out: a}\n"
      "      - {op: exp, in: a, out: b}\n"
      "      - {op: reshape, in: x, out: c, shape: [7]}\n"
      "      - {op: tanh, in: c, out: d}\n";
  Graph g;
  Diag d;
  CHECK(!expand(&g, "many.yaml", m, NULL, NULL, 0, &d, false));
  CHECK_EQ_INT(d.n_errors, 2);
  diag_free(&d);
}

/* A block used many times with an error inside reports it once. */
TEST(expand_block_error_once) {
  const char *m =
      "bertc: 1\n"
      "blocks:\n"
      "  bad:\n"
      "    in: [x]\n"
      "    out: [y]\n"
      "    nodes:\n"
      "      - {op: reshape, in: x, out: y, shape: [5]}\n"
      "graphs:\n"
      "  g:\n"
      "    inputs: {x: [2, 3, f32]}\n"
      "    nodes:\n"
      "      - {op: bad, in: x, out: a, repeat: 4}\n"
      "      - {op: bad, in: x, out: b}\n";
  Graph g;
  Diag d;
  CHECK(!expand(&g, "once.yaml", m, NULL, NULL, 0, &d, false));
  CHECK_EQ_INT(d.n_errors, 1);
  CHECK_MSG(strstr(diag_first(&d), "/once.yaml:7:45: error: reshape:") != NULL, "%s", diag_first(&d));
  diag_free(&d);
}

TEST(expand_scopes_are_used_once) {
  const char *m =
      "bertc: 1\n"
      "blocks:\n"
      "  drop:\n"
      "    in: [x]\n"
      "    out: [y]\n"
      "    nodes:\n"
      "      - {op: random, like: x, out: u}\n"
      "      - {op: mul, in: [x, u], out: y}\n"
      "graphs:\n"
      "  g:\n"
      "    inputs: {x: [2, 3, f32]}\n"
      "    nodes:\n"
      "      - {op: drop, in: x, out: a, repeat: 2}\n"
      "      - {op: drop, in: a, out: b, name: a.1}\n";
  Graph g;
  Diag d;
  CHECK(!expand(&g, "scope.yaml", m, NULL, NULL, 0, &d, false));
  CHECK_STR(first_msg(&d),
            "error: scope 'a.1' is already used by the block call at line 13 (give this call another 'name')");
  diag_free(&d);
  /* distinct scopes: distinct random streams */
  const char *ok = "bertc: 1\n"
                   "blocks:\n"
                   "  drop:\n"
                   "    in: [x]\n"
                   "    out: [y]\n"
                   "    nodes:\n"
                   "      - {op: random, like: x, out: u}\n"
                   "      - {op: mul, in: [x, u], out: y}\n"
                   "graphs:\n"
                   "  g:\n"
                   "    inputs: {x: [2, 3, f32]}\n"
                   "    nodes:\n"
                   "      - {op: drop, in: x, out: a, repeat: 2}\n";
  CHECK(expand(&g, "scope.yaml", ok, NULL, NULL, 0, &d, true));
  const Node *u0 = producer(&g, "a.0.u"), *u1 = producer(&g, "a.1.u");
  CHECK(u0 && u1 && u0->a.key == bc_hash32("a.0.u") && u1->a.key == bc_hash32("a.1.u"));
  CHECK(u0 && u1 && u0->a.key != u1->a.key);
  graph_free(&g);
  diag_free(&d);
}

TEST(cleanup_tmp) {
  char *cmd = bc_asprintf("rm -rf '%s'", tmp_dir);
  if (tmp_dir[0]) CHECK(system(cmd) == 0);
  free(cmd);
}

TEST_MAIN()
