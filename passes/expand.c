/* expand.c — the model front end: a YAML model file (and its imports) into
 * one graph of primitives, following the schema in models/README.md.
 *
 * Steps: load the main file and its imports (ydoc trees, cycles detected),
 * register blocks, resolve hparams with --set overrides, then expand the
 * chosen graph: inputs, its node list (sorted by data dependencies), block
 * calls recursively in scopes, `repeat` chains, implicit numpy broadcasts,
 * scalar literals as constants, parameters, outputs and the loss.
 *
 * Block attributes are evaluated lazily, in the scope of the caller that
 * wrote them, so `dim(x, -1)` in a call refers to the caller's `x` and a
 * bare word means a name where a number is needed and text where a string
 * is. An error in one node poisons its outputs: later nodes that read them
 * are skipped silently, so each mistake is reported once.
 *
 * Decisions the schema leaves open: an imported file contributes blocks only
 * (its hparams and graphs are ignored, the main file's hparams apply); a
 * literal passed to a block input is a scalar [] of the other inputs' dtype
 * (f32 when there are none); `param` defaults to init xavier, scale 0.01 for
 * normal and 0.07 for uniform (MXNet's); two block calls may not share a
 * scope (their parameters and random streams would collide); slice, concat
 * and iota need an explicit `axis`, reduce defaults to -1.
 *
 * Not here: shape rules (graph/shape.c, called through graph_op), the
 * expression evaluator (expr.c), anything after expansion. Requires:
 * nothing. Produces: a graph whose node order is an execution order, with
 * hparams, outputs and loss recorded. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "expand.h"

#define MAX_REPEAT 100000

static const SrcLoc cmdline_loc = {"<command line>", 0, 0};

enum { NK_PRIM, NK_PARAM, NK_BLOCK };
typedef VEC(int) IntVec;

/* One node of a node list, parsed. */
typedef struct {
  const YNode *map;
  SrcLoc loc; /* the op's value: where errors about the node point */
  const char *op_name;
  int kind;
  Op op;
  int block; /* index into ctx.blocks */
  const YNode *in_node;
  const YNode **in;
  int n_in;
  const char **out;
  SrcLoc *out_loc;
  int n_out;
  const char **dep; /* value names read: inputs, `like`, dim()/rank() arguments */
  SrcLoc *dep_loc;
  int *dep_node; /* producer's index in the list, or -1 when bound in scope */
  int n_dep;
  bool bad;
  int state; /* sort: 0 new, 1 on the stack, 2 done */
} NodeSpec;

/* ---------------------------------------------------------------- helpers */

static bool has_word(const char *list, const char *w) {
  size_t n = strlen(w);
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == '|') p++;
    const char *e = p;
    while (*e && *e != ' ' && *e != '|') e++;
    if ((size_t)(e - p) == n && strncmp(p, w, n) == 0) return true;
    p = e;
  }
  return false;
}

/* "a b c" -> "a, b, c" in the scratch arena. */
static const char *comma_list(Ctx *c, const char *words) {
  char *s = arena_alloc(&c->arena, strlen(words) * 2 + 1);
  char *o = s;
  for (const char *p = words; *p; p++) {
    if (*p == ' ') {
      *o++ = ',';
      *o++ = ' ';
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
  return s;
}

static const char *full_name(Ctx *c, const Scope *s, const char *local) {
  if (!s->prefix) return bc_intern(local);
  char *t = arena_printf(&c->arena, "%s.%s", s->prefix, local);
  return bc_intern(t);
}

/* ------------------------------------------------------------- loading */

static bool parse_names(Ctx *c, const YNode *n, const char *what, const char ***names,
                        SrcLoc **locs, int *count) {
  const YNode *single[1] = {n};
  const YNode *const *items = single;
  int k = ynode_is_null(n) ? 0 : 1;
  if (n->kind == YNODE_SEQ) {
    items = (const YNode *const *)n->items;
    k = n->n;
  }
  *names = arena_alloc(&c->arena, sizeof(char *) * (size_t)(k + 1));
  *locs = arena_alloc(&c->arena, sizeof(SrcLoc) * (size_t)(k + 1));
  *count = k;
  bool ok = true;
  for (int i = 0; i < k; i++) {
    const YNode *x = items[i];
    if (x->kind != YNODE_SCALAR || !expr_is_ident(x->text)) {
      diag_error(c->d, x->loc, "%s must be a name (letters, digits, _), got %s", what,
                 x->kind == YNODE_SCALAR ? arena_printf(&c->arena, "'%s'", x->text)
                                         : ynode_kind_name(x->kind));
      ok = false;
      continue;
    }
    (*names)[i] = bc_intern(x->text);
    (*locs)[i] = x->loc;
  }
  return ok;
}

static BlockDef *find_block(Ctx *c, const char *name) {
  name = bc_intern(name);
  for (int i = 0; i < c->blocks.n; i++)
    if (c->blocks.data[i].name == name) return &c->blocks.data[i];
  return NULL;
}

static bool add_block(Ctx *c, const YPair *p) {
  const YNode *def = p->value;
  if (!expr_is_ident(p->key)) {
    diag_error(c->d, p->key_loc, "block name '%s' must be letters, digits and _", p->key);
    return false;
  }
  if (op_from_name(p->key) != OP_COUNT || strcmp(p->key, "param") == 0) {
    diag_error(c->d, p->key_loc, "block '%s' has the name of a primitive op", p->key);
    return false;
  }
  BlockDef *old = find_block(c, p->key);
  if (old) {
    diag_error(c->d, p->key_loc, "block '%s' is already defined at %s:%d:%d", p->key,
               old->loc.file, old->loc.line, old->loc.col);
    return false;
  }
  if (def->kind != YNODE_MAP) {
    diag_error(c->d, def->loc, "block '%s' must be a mapping (in, out, attrs, nodes), got %s",
               p->key, ynode_kind_name(def->kind));
    return false;
  }
  BlockDef b = {0};
  b.name = bc_intern(p->key);
  b.loc = p->key_loc;
  b.def = def;
  bool ok = true;
  for (int i = 0; i < def->n; i++) {
    const YPair *q = &def->pairs[i];
    const YNode *v = q->value;
    if (strcmp(q->key, "in") == 0) {
      ok = parse_names(c, v, "a block input", &b.in, &b.in_loc, &b.n_in) && ok;
      for (int j = 0; j < b.n_in; j++)
        for (int k = 0; k < j; k++)
          if (b.in[j] && b.in[j] == b.in[k]) {
            diag_error(c->d, b.in_loc[j], "block input '%s' is listed twice", b.in[j]);
            ok = false;
          }
    } else if (strcmp(q->key, "out") == 0) {
      ok = parse_names(c, v, "a block output", &b.out, &b.out_loc, &b.n_out) && ok;
    } else if (strcmp(q->key, "attrs") == 0) {
      if (v->kind != YNODE_MAP && !ynode_is_null(v)) {
        diag_error(c->d, v->loc, "'attrs' must be a mapping of names to defaults (~ = required)");
        ok = false;
      } else if (v->kind == YNODE_MAP) {
        b.attrs = v;
        for (int j = 0; j < v->n; j++) {
          const char *k = v->pairs[j].key;
          if (!expr_is_ident(k) || !strcmp(k, "op") || !strcmp(k, "in") || !strcmp(k, "out") ||
              !strcmp(k, "name") || !strcmp(k, "repeat")) {
            diag_error(c->d, v->pairs[j].key_loc, "'%s' cannot be a block attribute name", k);
            ok = false;
          }
        }
      }
    } else if (strcmp(q->key, "nodes") == 0) {
      if (v->kind != YNODE_SEQ && !ynode_is_null(v)) {
        diag_error(c->d, v->loc, "'nodes' must be a list, got %s", ynode_kind_name(v->kind));
        ok = false;
      } else if (v->kind == YNODE_SEQ) {
        b.nodes = v;
      }
    } else {
      diag_error(c->d, q->key_loc, "unknown key '%s' in block '%s' (expected in, out, attrs, nodes)",
                 q->key, p->key);
      ok = false;
    }
  }
  if (ok && b.n_out == 0) {
    diag_error(c->d, p->key_loc, "block '%s' has no 'out'", p->key);
    ok = false;
  }
  if (!ok) return false;
  vec_push(&c->blocks, b);
  return true;
}

static const char *dir_of(Ctx *c, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return "";
  return arena_printf(&c->arena, "%.*s", (int)(slash - path + 1), path);
}

/* "models/tiny/../lib/nn.yaml" -> "models/lib/nn.yaml" for messages, when
 * both name the same file (a symlinked folder would make them differ). */
static const char *tidy_path(Ctx *c, const char *path) {
  char *out = arena_alloc(&c->arena, strlen(path) + 1);
  const char **seg = arena_alloc(&c->arena, sizeof(char *) * (strlen(path) + 1));
  int *len = arena_alloc(&c->arena, sizeof(int) * (strlen(path) + 1));
  int n = 0;
  bool abs = path[0] == '/';
  for (const char *p = path; *p;) {
    while (*p == '/') p++;
    const char *e = p;
    while (*e && *e != '/') e++;
    int l = (int)(e - p);
    if (l == 0 || (l == 1 && p[0] == '.')) {
      /* skip */
    } else if (l == 2 && p[0] == '.' && p[1] == '.' && n > 0 &&
               !(len[n - 1] == 2 && seg[n - 1][0] == '.' && seg[n - 1][1] == '.')) {
      n--;
    } else {
      seg[n] = p;
      len[n++] = l;
    }
    p = e;
  }
  char *o = out;
  if (abs) *o++ = '/';
  for (int i = 0; i < n; i++) {
    if (i) *o++ = '/';
    memcpy(o, seg[i], (size_t)len[i]);
    o += len[i];
  }
  *o = '\0';
  if (!*out) return path;
  char *a = realpath(path, NULL), *b = realpath(out, NULL);
  bool same = a && b && strcmp(a, b) == 0;
  free(a);
  free(b);
  return same ? out : path;
}

/* Loads `path` and (recursively) its imports, registering blocks. `from` is
 * the import item that names it (line 0 for the main file). */
static bool load_file(Ctx *c, const char *path, SrcLoc from, const char *as_written) {
  char *real = realpath(path, NULL);
  if (!real) {
    if (from.line > 0) {
      diag_error(c->d, from, "cannot import '%s' (%s): %s", as_written, path, strerror(errno));
    } else {
      diag_error(c->d, (SrcLoc){bc_intern(path), 0, 0}, "cannot open file: %s", strerror(errno));
    }
    return false;
  }
  const char *rp = arena_strdup(&c->arena, real);
  free(real);
  struct stat st;
  if (stat(rp, &st) == 0 && !S_ISREG(st.st_mode)) {
    SrcLoc at = from.line > 0 ? from : (SrcLoc){bc_intern(path), 0, 0};
    diag_error(c->d, at, "cannot %s '%s': not a regular file", from.line > 0 ? "import" : "read",
               as_written);
    return false;
  }
  for (int i = 0; i < c->files.n; i++) {
    ModelFile *f = c->files.data[i];
    if (strcmp(f->real, rp) != 0) continue;
    if (!f->loading) return true; /* imported twice (a diamond): once is enough */
    char *chain = arena_strdup(&c->arena, "");
    for (int j = i; j < c->files.n; j++)
      if (c->files.data[j]->loading)
        chain = arena_printf(&c->arena, "%s%s -> ", chain, c->files.data[j]->doc.file);
    diag_error(c->d, from, "import cycle: %s%s", chain, f->doc.file);
    return false;
  }
  ModelFile *mf = arena_alloc(&c->arena, sizeof(ModelFile));
  mf->real = rp;
  if (!ydoc_load_file(&mf->doc, path, c->d)) return false;
  mf->loading = true;
  vec_push(&c->files, mf);
  bool is_main = from.line == 0;
  const YNode *root = mf->doc.root;
  bool ok = true;
  if (root->kind != YNODE_MAP) {
    diag_error(c->d, root->loc,
               "a model file must be a mapping (bertc, hparams, import, blocks, graphs), got %s",
               ynode_kind_name(root->kind));
    return false;
  }
  const YNode *ver = ynode_get(root, "bertc");
  if (!ver) {
    diag_error(c->d, root->loc, "missing 'bertc: 1' (the schema version) in this model file");
    return false;
  }
  if (ver->kind != YNODE_SCALAR || ver->quoted || strcmp(ver->text, "1") != 0) {
    diag_error(c->d, ver->loc, "unsupported schema version '%s' (this bertc reads version 1)",
               ver->kind == YNODE_SCALAR ? ver->text : ynode_kind_name(ver->kind));
    return false;
  }
  for (int i = 0; i < root->n; i++) {
    const char *k = root->pairs[i].key;
    if (strcmp(k, "bertc") && strcmp(k, "hparams") && strcmp(k, "import") && strcmp(k, "blocks") &&
        strcmp(k, "graphs")) {
      diag_error(c->d, root->pairs[i].key_loc,
                 "unknown top-level key '%s' (expected bertc, hparams, import, blocks, graphs)", k);
      ok = false;
    }
  }
  const YNode *imp = ynode_get(root, "import");
  if (imp && !ynode_is_null(imp)) {
    const YNode *single[1] = {imp};
    const YNode *const *items = imp->kind == YNODE_SEQ ? (const YNode *const *)imp->items : single;
    int n = imp->kind == YNODE_SEQ ? imp->n : 1;
    const char *dir = dir_of(c, mf->doc.file);
    for (int i = 0; i < n; i++) {
      const YNode *it = items[i];
      if (it->kind != YNODE_SCALAR || !it->text[0]) {
        diag_error(c->d, it->loc, "an import must be a file path, got %s",
                   it->kind == YNODE_SCALAR ? "nothing" : ynode_kind_name(it->kind));
        ok = false;
        continue;
      }
      const char *p = it->text[0] == '/' ? it->text : arena_printf(&c->arena, "%s%s", dir, it->text);
      if (!load_file(c, tidy_path(c, p), it->loc, it->text)) ok = false;
    }
  }
  const YNode *blocks = ynode_get(root, "blocks");
  if (blocks && !ynode_is_null(blocks)) {
    if (blocks->kind != YNODE_MAP) {
      diag_error(c->d, blocks->loc, "'blocks' must be a mapping of block names to blocks");
      ok = false;
    } else {
      for (int i = 0; i < blocks->n; i++) ok = add_block(c, &blocks->pairs[i]) && ok;
    }
  }
  mf->loading = false;
  if (is_main) c->root = root;
  return ok;
}

static bool read_hparams(Ctx *c, const Setting *sets, int n_sets) {
  const YNode *hp = ynode_get(c->root, "hparams");
  bool ok = true;
  if (hp && !ynode_is_null(hp) && hp->kind != YNODE_MAP) {
    diag_error(c->d, hp->loc, "'hparams' must be a mapping of names to numbers, got %s",
               ynode_kind_name(hp->kind));
    return false;
  }
  for (int i = 0; hp && hp->kind == YNODE_MAP && i < hp->n; i++) {
    const YPair *p = &hp->pairs[i];
    const YNode *v = p->value;
    Num n;
    if (!expr_is_ident(p->key)) {
      diag_error(c->d, p->key_loc, "hparam name '%s' must be letters, digits and _", p->key);
      ok = false;
    } else if (v->kind != YNODE_SCALAR) {
      diag_error(c->d, v->loc, "hparam '%s' must be a number, got %s", p->key,
                 ynode_kind_name(v->kind));
      ok = false;
    } else if (v->quoted || !expr_parse_number(v->text, &n)) {
      diag_error(c->d, v->loc, "hparam '%s' must be a number, got %s'%s'", p->key,
                 v->quoted ? "the string " : "", v->text);
      ok = false;
    } else {
      vec_push(&c->hparams, ((HP){bc_intern(p->key), n, v->loc}));
    }
  }
  if (!ok) return false;
  for (int i = 0; i < n_sets; i++) {
    HP *h = (HP *)expand_hparam(c, sets[i].key, strlen(sets[i].key));
    if (!h) {
      char *known = arena_strdup(&c->arena, "");
      for (int j = 0; j < c->hparams.n; j++)
        known = arena_printf(&c->arena, "%s%s%s", known, j ? ", " : "", c->hparams.data[j].name);
      diag_error(c->d, cmdline_loc, "unknown hparam '%s' in --set (known: %s)", sets[i].key,
                 c->hparams.n ? known : "none");
      ok = false;
      continue;
    }
    Num n;
    if (!expr_parse_number(sets[i].value, &n)) {
      diag_error(c->d, cmdline_loc, "--set %s=%s: the value must be a number", sets[i].key,
                 sets[i].value);
      ok = false;
      continue;
    }
    h->value = n;
    h->loc = cmdline_loc;
  }
  return ok;
}

/* ---------------------------------------------------- node lists */

static bool is_literal(const YNode *n) {
  return n->kind == YNODE_SCALAR && n->text[0] && strchr("0123456789.-+($", n->text[0]);
}

static void add_dep(Ctx *c, NodeSpec *ns, const char *name, SrcLoc loc) {
  /* grown in the arena: node lists are short */
  const char **d = arena_alloc(&c->arena, sizeof(char *) * (size_t)(ns->n_dep + 1));
  SrcLoc *l = arena_alloc(&c->arena, sizeof(SrcLoc) * (size_t)(ns->n_dep + 1));
  if (ns->n_dep) {
    memcpy(d, ns->dep, sizeof(char *) * (size_t)ns->n_dep);
    memcpy(l, ns->dep_loc, sizeof(SrcLoc) * (size_t)ns->n_dep);
  }
  d[ns->n_dep] = bc_intern(name);
  l[ns->n_dep] = loc;
  ns->dep = d;
  ns->dep_loc = l;
  ns->n_dep++;
}

/* Adds a dependency for each `dim(NAME` / `rank(NAME` in the scalars under n. */
static void scan_refs(Ctx *c, const YNode *n, NodeSpec *ns) {
  if (n->kind == YNODE_SEQ) {
    for (int i = 0; i < n->n; i++) scan_refs(c, n->items[i], ns);
    return;
  }
  if (n->kind != YNODE_SCALAR) return;
  const char *s = n->text;
  Tok a = expr_lex(s, 0);
  while (a.k != TK_END) {
    Tok b = expr_lex(s, a.pos + a.len);
    if (a.k == TK_IDENT && b.k == TK_LP &&
        ((a.name_len == 3 && !strncmp(s + a.name, "dim", 3)) ||
         (a.name_len == 4 && !strncmp(s + a.name, "rank", 4)))) {
      Tok v = expr_lex(s, b.pos + b.len);
      if (v.k == TK_IDENT) {
        char *name = arena_printf(&c->arena, "%.*s", v.name_len, s + v.name);
        add_dep(c, ns, name, expr_loc(n, v.pos));
      }
    }
    if (a.k == TK_BAD) break;
    a = b;
  }
}

static bool reserved_key(const char *k) {
  return !strcmp(k, "op") || !strcmp(k, "in") || !strcmp(k, "out") || !strcmp(k, "name");
}

/* Levenshtein distance of a and b, or more than `cap` when it exceeds it. */
static int edit_distance(const char *a, const char *b, int cap) {
  int na = (int)strlen(a), nb = (int)strlen(b);
  if (na - nb > cap || nb - na > cap || nb >= 64) return cap + 1;
  int row[64];
  for (int j = 0; j <= nb; j++) row[j] = j;
  for (int i = 1; i <= na; i++) {
    int diag = row[0];
    row[0] = i;
    for (int j = 1; j <= nb; j++) {
      int up = row[j];
      int best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* What an unknown op name could have meant: "did you mean 'matmul'?" for
 * primitives, `param` and blocks in scope within edit distance 2 (closest
 * first), else the list of primitives. */
static const char *known_ops(Ctx *c, const char *name) {
  const char *best[4];
  int n = 0;
  for (int d = 1; d <= 2 && n == 0; d++) {
    for (int i = 0; i < OP_COUNT && n < 4; i++)
      if (i != OP_ASSIGN && edit_distance(name, op_info[i].name, d) == d) best[n++] = op_info[i].name;
    if (n < 4 && edit_distance(name, "param", d) == d) best[n++] = "param";
    for (int i = 0; i < c->blocks.n && n < 4; i++)
      if (edit_distance(name, c->blocks.data[i].name, d) == d) best[n++] = c->blocks.data[i].name;
  }
  if (n > 0) {
    const char *s = arena_printf(&c->arena, "did you mean '%s'", best[0]);
    for (int i = 1; i < n; i++) s = arena_printf(&c->arena, "%s%s '%s'", s, i == n - 1 ? " or" : ",", best[i]);
    return arena_printf(&c->arena, "%s?", s);
  }
  const char *s = "primitives:";
  for (int i = 0; i < OP_COUNT; i++)
    if (i != OP_ASSIGN) s = arena_printf(&c->arena, "%s %s", s, op_info[i].name);
  return arena_printf(&c->arena, "%s, param, or a block", s);
}

/* Structure of one node; false (reported) when it is unusable. */
static bool parse_node(Ctx *c, const YNode *item, NodeSpec *ns) {
  memset(ns, 0, sizeof(*ns));
  ns->map = item;
  ns->loc = item->loc;
  if (item->kind != YNODE_MAP) {
    diag_error(c->d, item->loc, "a node must be a mapping {op: ..., in: ..., out: ...}, got %s",
               ynode_kind_name(item->kind));
    return false;
  }
  const YNode *op = ynode_get(item, "op");
  if (!op) {
    diag_error(c->d, item->loc, "node has no 'op'");
    return false;
  }
  ns->loc = op->loc;
  if (op->kind != YNODE_SCALAR || !op->text[0]) {
    diag_error(c->d, op->loc, "'op' must be an op or block name");
    return false;
  }
  ns->op_name = bc_intern(op->text);
  ns->op = op_from_name(op->text);
  if (ns->op == OP_ASSIGN) {
    diag_error(c->d, op->loc, "op 'assign' is internal to the optimizer, not available in YAML");
    return false;
  } else if (ns->op != OP_COUNT) {
    ns->kind = NK_PRIM;
  } else if (strcmp(op->text, "param") == 0) {
    ns->kind = NK_PARAM;
  } else if (find_block(c, op->text)) {
    ns->kind = NK_BLOCK;
    ns->block = (int)(find_block(c, op->text) - c->blocks.data);
  } else {
    diag_error(c->d, op->loc, "unknown op '%s' (%s)", op->text, known_ops(c, op->text));
    return false;
  }
  const YNode *out = ynode_get(item, "out");
  if (!out) {
    diag_error(c->d, op->loc, "node '%s' has no 'out'", op->text);
    return false;
  }
  if (!parse_names(c, out, "an output", &ns->out, &ns->out_loc, &ns->n_out)) return false;
  if (ns->n_out == 0) {
    diag_error(c->d, out->loc, "'out' is empty");
    return false;
  }
  const YNode *in = ynode_get(item, "in");
  ns->in_node = in;
  if (in && !ynode_is_null(in)) {
    bool seq = in->kind == YNODE_SEQ;
    ns->n_in = seq ? in->n : 1;
    ns->in = arena_alloc(&c->arena, sizeof(YNode *) * (size_t)(ns->n_in + 1));
    for (int i = 0; i < ns->n_in; i++) {
      const YNode *x = seq ? in->items[i] : in;
      ns->in[i] = x;
      if (x->kind != YNODE_SCALAR || !x->text[0]) {
        diag_error(c->d, x->loc, "an input must be a value name or a number, got %s",
                   x->kind == YNODE_SCALAR ? "nothing" : ynode_kind_name(x->kind));
        return false;
      }
      if (is_literal(x)) scan_refs(c, x, ns);
      else add_dep(c, ns, x->text, x->loc);
    }
  }
  for (int i = 0; i < item->n; i++) {
    const YPair *p = &item->pairs[i];
    if (reserved_key(p->key)) continue;
    const YNode *v = p->value;
    if (strcmp(p->key, "like") == 0 && ns->kind == NK_PRIM && v->kind == YNODE_SCALAR &&
        expr_is_ident(v->text))
      add_dep(c, ns, v->text, v->loc);
    else
      scan_refs(c, v, ns);
  }
  return true;
}

static bool expand_node(Ctx *c, Scope *s, NodeSpec *ns);

static void poison(Scope *s, const NodeSpec *ns) {
  for (int i = 0; i < ns->n_out; i++)
    if (ns->out && ns->out[i]) expand_scope_bind(s, ns->out[i], VID_POISON, ns->out_loc[i]);
}

/* Depth-first topological order; a back edge is a cycle, reported once
 * with the names on it, and its nodes are marked bad. */
static void visit(Ctx *c, NodeSpec *ns, int i, IntVec *stack, IntVec *order) {
  NodeSpec *x = &ns[i];
  if (x->state == 2) return;
  x->state = 1;
  vec_push(stack, i);
  for (int k = 0; k < x->n_dep; k++) {
    int j = x->dep_node[k];
    if (j < 0) continue;
    if (ns[j].state == 1) {
      /* stack holds consumers before producers: j ... i, and j feeds i */
      int from = stack->n - 1;
      while (stack->data[from] != j) from--;
      char *msg = arena_strdup(&c->arena, ns[j].out[0]);
      for (int q = stack->n - 1; q > from; q--)
        msg = arena_printf(&c->arena, "%s -> %s", msg, ns[stack->data[q]].out[0]);
      msg = arena_printf(&c->arena, "%s -> %s", msg, ns[j].out[0]);
      bool already = false;
      for (int q = from; q < stack->n; q++) already |= ns[stack->data[q]].bad;
      if (!already) diag_error(c->d, ns[j].loc, "cycle between nodes: %s", msg);
      for (int q = from; q < stack->n; q++) ns[stack->data[q]].bad = true;
      continue;
    }
    visit(c, ns, j, stack, order);
  }
  stack->n--;
  x->state = 2;
  vec_push(order, i);
}

/* Expands a node list in scope s: parse, resolve names, sort, expand. */
static void expand_nodes(Ctx *c, Scope *s, const YNode *list) {
  if (!list || ynode_is_null(list)) return;
  if (list->kind != YNODE_SEQ) {
    diag_error(c->d, list->loc, "'nodes' must be a list, got %s", ynode_kind_name(list->kind));
    return;
  }
  int n = list->n;
  NodeSpec *ns = arena_alloc(&c->arena, sizeof(NodeSpec) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) ns[i].bad = !parse_node(c, list->items[i], &ns[i]);
  /* names made here: duplicates with each other or with the scope */
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < ns[i].n_out && !ns[i].bad; k++) {
      const char *nm = ns[i].out[k];
      ValBind *b = expand_scope_find(s, nm);
      SrcLoc first = b ? b->loc : SRCLOC_NONE;
      for (int j = 0; j < i && !first.file; j++)
        for (int q = 0; q < ns[j].n_out && ns[j].out; q++)
          if (ns[j].out[q] == nm) first = ns[j].out_loc[q];
      for (int q = 0; q < k && !first.file; q++)
        if (ns[i].out[q] == nm) first = ns[i].out_loc[q];
      if (first.file) {
        diag_error(c->d, ns[i].out_loc[k], "value '%s' is defined twice (first at line %d)", nm,
                   first.line);
        ns[i].bad = true;
      }
    }
  }
  for (int i = 0; i < n; i++) {
    NodeSpec *x = &ns[i];
    x->dep_node = arena_alloc(&c->arena, sizeof(int) * (size_t)(x->n_dep + 1));
    for (int k = 0; k < x->n_dep; k++) {
      x->dep_node[k] = -1;
      for (int j = 0; j < n && x->dep_node[k] < 0; j++)
        for (int q = 0; q < ns[j].n_out && ns[j].out; q++)
          if (ns[j].out[q] == x->dep[k] && !ns[j].bad) x->dep_node[k] = j;
      if (x->dep_node[k] < 0 && !expand_scope_find(s, x->dep[k])) {
        /* a name a bad node would have made is not "undefined": already reported */
        bool shadowed = false;
        for (int j = 0; j < n; j++)
          for (int q = 0; q < ns[j].n_out && ns[j].out; q++) shadowed |= ns[j].out[q] == x->dep[k];
        if (!shadowed) diag_error(c->d, x->dep_loc[k], "undefined value '%s'", x->dep[k]);
        x->bad = true;
      }
    }
  }
  IntVec stack = {0}, order = {0};
  for (int i = 0; i < n; i++) visit(c, ns, i, &stack, &order);
  for (int k = 0; k < order.n; k++) {
    NodeSpec *x = &ns[order.data[k]];
    bool skip = x->bad;
    for (int q = 0; q < x->n_dep && !skip; q++) {
      ValBind *b = expand_scope_find(s, x->dep[q]);
      if (!b || b->v == VID_POISON) skip = true;
    }
    if (skip || !expand_node(c, s, x)) poison(s, x);
  }
  vec_free(&stack);
  vec_free(&order);
}

/* ------------------------------------------------------ attributes */

/* Checks a node's attribute keys against `allowed` ("a b c") and `required`
 * ("a b|c": one of b, c); `what` names the op for messages. */
static bool check_attrs(Ctx *c, const NodeSpec *ns, const char *allowed, const char *required,
                        const char *what, bool block_call) {
  bool ok = true;
  for (int i = 0; i < ns->map->n; i++) {
    const YPair *p = &ns->map->pairs[i];
    if (!strcmp(p->key, "op") || !strcmp(p->key, "in") || !strcmp(p->key, "out")) continue;
    if (!block_call && (!strcmp(p->key, "name") || !strcmp(p->key, "repeat"))) {
      diag_error(c->d, p->key_loc, "'%s' applies to block calls only", p->key);
      ok = false;
    } else if (block_call && (!strcmp(p->key, "name") || !strcmp(p->key, "repeat"))) {
      continue;
    } else if (!has_word(allowed, p->key)) {
      if (*allowed)
        diag_error(c->d, p->key_loc, "unknown attribute '%s' for %s (expected %s)", p->key, what,
                   comma_list(c, allowed));
      else
        diag_error(c->d, p->key_loc, "unknown attribute '%s' for %s (it takes none)", p->key, what);
      ok = false;
    }
  }
  /* required words; `a|b` means one of them */
  for (const char *r = required; *r;) {
    while (*r == ' ') r++;
    if (!*r) break;
    const char *e = r;
    while (*e && *e != ' ') e++;
    char *word = arena_printf(&c->arena, "%.*s", (int)(e - r), r);
    char *bar = strchr(word, '|');
    if (bar) {
      *bar = '\0';
      const YPair *a = ynode_pair(ns->map, word), *b = ynode_pair(ns->map, bar + 1);
      if (!a && !b) {
        diag_error(c->d, ns->loc, "%s needs attribute '%s' or '%s'", what, word, bar + 1);
        ok = false;
      } else if (a && b) {
        diag_error(c->d, b->key_loc, "give '%s' or '%s', not both", word, bar + 1);
        ok = false;
      }
    } else if (!ynode_pair(ns->map, word)) {
      diag_error(c->d, ns->loc, "%s needs attribute '%s'", what, word);
      ok = false;
    }
    r = e;
  }
  return ok;
}

/* `shape: [d, ...]`: integer expressions >= 1 (and one -1 when allow_infer). */
static bool decode_shape(Ctx *c, Scope *env, const YNode *n, bool allow_infer, Shape *out,
                         int *infer_at) {
  expr_resolve(&env, &n);
  if (n->kind != YNODE_SEQ) {
    diag_error(c->d, n->loc, "a shape must be a list of dimensions, got %s", ynode_kind_name(n->kind));
    return false;
  }
  if (n->n > BC_MAX_RANK) {
    diag_error(c->d, n->loc, "rank %d is not supported (at most %d)", n->n, BC_MAX_RANK);
    return false;
  }
  *out = (Shape){0};
  out->rank = n->n;
  if (infer_at) *infer_at = -1;
  for (int i = 0; i < n->n; i++) {
    int64_t v;
    if (!expr_int(c, env, n->items[i], "a dimension", &v)) return false;
    if (v == -1 && allow_infer && *infer_at < 0) {
      *infer_at = i;
    } else if (v < 1) {
      diag_error(c->d, n->items[i]->loc, "a dimension must be >= 1, got %lld%s", (long long)v,
                 allow_infer ? " (or one -1 to infer)" : "");
      return false;
    }
    out->dim[i] = v;
  }
  return true;
}

static bool decode_value_ref(Ctx *c, Scope *env, const YNode *n, ValueId *out) {
  const char *name = expr_str(c, &env, &n);
  if (!name) return false;
  ValBind *b = env ? expand_scope_find(env, name) : NULL;
  if (!b) {
    diag_error(c->d, n->loc, "undefined value '%s'", name);
    return false;
  }
  if (b->v == VID_POISON) return false;
  *out = b->v;
  return true;
}

/* shape or like -> a.shape */
static bool decode_shape_or_like(Ctx *c, Scope *s, const YNode *map, Shape *out) {
  const YNode *sh = ynode_get(map, "shape");
  if (sh) return decode_shape(c, s, sh, false, out, NULL);
  ValueId v;
  if (!decode_value_ref(c, s, ynode_get(map, "like"), &v)) return false;
  *out = c->g->values.data[v].shape;
  return true;
}

static bool decode_dtype(Ctx *c, Scope *env, const YNode *n, DType *out) {
  const char *t = expr_str(c, &env, &n);
  if (!t) return false;
  if (!dtype_from_name(t, out)) {
    diag_error(c->d, n->loc, "unknown dtype '%s' (expected f32 or i32)", t);
    return false;
  }
  return true;
}

static bool decode_axis(Ctx *c, Scope *s, const YNode *n, int rank, const char *op, int *out) {
  int64_t v;
  if (!expr_int(c, s, n, "an axis", &v)) return false;
  if (v < -rank || v >= rank) {
    diag_error(c->d, n->loc, "%s: axis %lld out of range for rank %d", op, (long long)v, rank);
    return false;
  }
  *out = (int)v;
  return true;
}

static bool decode_bool(Ctx *c, Scope *s, const YNode *n, bool *out) {
  const YNode *x = n;
  Scope *env = s;
  expr_resolve(&env, &x);
  if (x->kind == YNODE_SCALAR && !x->quoted && (!strcmp(x->text, "true") || !strcmp(x->text, "false"))) {
    *out = x->text[0] == 't';
    return true;
  }
  int64_t v;
  if (!expr_int(c, env, x, "a flag", &v)) return false;
  if (v != 0 && v != 1) {
    diag_error(c->d, x->loc, "a flag must be 0 or 1, got %lld", (long long)v);
    return false;
  }
  *out = v == 1;
  return true;
}

static bool decode_perm(Ctx *c, Scope *env, const YNode *n, int rank, int *perm) {
  expr_resolve(&env, &n);
  if (n->kind != YNODE_SEQ) {
    diag_error(c->d, n->loc, "perm must be a list of axes, got %s", ynode_kind_name(n->kind));
    return false;
  }
  if (n->n != rank) {
    diag_error(c->d, n->loc, "permute: perm has %d entries, the input has rank %d", n->n, rank);
    return false;
  }
  bool seen[BC_MAX_RANK] = {0};
  bool ok = true;
  for (int i = 0; i < n->n; i++) {
    int64_t v;
    if (!expr_int(c, env, n->items[i], "an axis", &v)) return false;
    if (v < 0 || v >= rank || seen[v]) ok = false;
    else seen[v] = true;
    perm[i] = (int)v;
  }
  if (!ok) {
    char *txt = arena_strdup(&c->arena, "");
    for (int i = 0; i < rank; i++) txt = arena_printf(&c->arena, "%s%s%d", txt, i ? ", " : "", perm[i]);
    diag_error(c->d, n->loc, "permute: [%s] is not a permutation of %d axes", txt, rank);
  }
  return ok;
}

/* -------------------------------------------------------- primitives */

static ValueId lookup_input(Scope *s, const char *name) {
  ValBind *b = expand_scope_find(s, name);
  BC_ASSERT(b && b->v >= 0); /* checked when the list was sorted */
  return b->v;
}

/* The attributes of a primitive: the `attrs` and `required` columns of
 * graph/ops.def. */
static const char *prim_attrs(Op op, const char **required) {
  *required = op_info[op].required;
  return op_info[op].attrs;
}

/* Resolves the inputs of a call: names to values, literals to constants of
 * the other operands' dtype, shaped like their broadcast (binary ops and
 * select) or scalars. */
static bool resolve_inputs(Ctx *c, Scope *s, const NodeSpec *ns, bool broadcast_lits, ValueId *in) {
  Graph *g = c->g;
  bool any_lit = false;
  DType t = DTYPE_F32;
  bool have_t = false;
  Shape target = {0};
  for (int i = 0; i < ns->n_in; i++) {
    if (is_literal(ns->in[i])) {
      any_lit = true;
      in[i] = -1;
      continue;
    }
    in[i] = lookup_input(s, ns->in[i]->text);
    const Value *v = &g->values.data[in[i]];
    /* select's condition does not decide the dtype of its branches */
    if (!have_t && !(ns->kind == NK_PRIM && ns->op == OP_SELECT && i == 0 && ns->n_in == 3)) {
      t = v->dtype;
      have_t = true;
    }
    if (broadcast_lits && !shape_broadcast(&target, &v->shape, &target)) broadcast_lits = false;
  }
  if (!any_lit) return true;
  for (int i = 0; i < ns->n_in; i++) {
    if (in[i] >= 0) continue;
    Num n;
    if (!expr_num(c, s, ns->in[i], &n)) return false;
    DType ct = have_t ? t : (n.is_int ? DTYPE_I32 : DTYPE_F32);
    Attrs a = {0};
    a.scalar = expr_num_f(n);
    a.dtype = ct;
    a.shape = broadcast_lits ? target : (Shape){0};
    ValueId none[1] = {-1}; /* not NULL: graph_op memcpy's zero inputs from it */
    in[i] = graph_op(g, OP_CONSTANT, 0, none, &a, c->d);
    if (in[i] < 0) return false;
  }
  return true;
}

static bool expand_prim(Ctx *c, Scope *s, NodeSpec *ns) {
  Graph *g = c->g;
  Op op = ns->op;
  const char *opn = op_info[op].name;
  const char *what = arena_printf(&c->arena, "op '%s'", opn);
  const char *required;
  const char *allowed = prim_attrs(op, &required);
  if (!check_attrs(c, ns, allowed, required, what, false)) return false;
  if (ns->n_out != 1) {
    diag_error(c->d, ns->out_loc[1], "op '%s' has one output, got %d names", opn, ns->n_out);
    return false;
  }
  int want = op_info[op].n_in;
  if ((want >= 0 && ns->n_in != want) || (want < 0 && ns->n_in < 1)) {
    SrcLoc at = ns->in_node ? ns->in_node->loc : ns->loc;
    if (want < 0)
      diag_error(c->d, at, "%s takes at least 1 input, got 0", opn);
    else
      diag_error(c->d, at, "%s takes %d input%s, got %d", opn, want, want == 1 ? "" : "s", ns->n_in);
    return false;
  }
  unsigned flags = op_info[op].flags;
  bool bcast = (flags & OPF_BINARY) || op == OP_SELECT;
  ValueId *in = arena_alloc(&c->arena, sizeof(ValueId) * (size_t)(ns->n_in + 1));
  if (!resolve_inputs(c, s, ns, bcast, in)) return false;

  const YNode *m = ns->map;
  Attrs a = {0};
  const Shape *in0 = ns->n_in ? &g->values.data[in[0]].shape : NULL;
  const YNode *x;
  switch (op) {
  case OP_CAST:
    if (!decode_dtype(c, s, ynode_get(m, "dtype"), &a.dtype)) return false;
    break;
  case OP_BROADCAST:
  case OP_RANDOM:
    if (!decode_shape_or_like(c, s, m, &a.shape)) return false;
    break;
  case OP_RESHAPE: {
    int infer;
    x = ynode_get(m, "shape");
    if (!decode_shape(c, s, x, true, &a.shape, &infer)) return false;
    int64_t have = shape_numel(in0), known = 1;
    for (int i = 0; i < a.shape.rank; i++)
      if (i != infer) known *= a.shape.dim[i];
    char b0[96], b1[96];
    if (infer >= 0) {
      if (have % known != 0) {
        diag_error(c->d, x->loc, "reshape: cannot reshape %s (%lld elements) to %s",
                   shape_str(in0, b0), (long long)have, shape_str(&a.shape, b1));
        return false;
      }
      a.shape.dim[infer] = have / known;
    } else if (have != known) {
      diag_error(c->d, x->loc, "reshape: %s has %lld elements, %s has %lld", shape_str(in0, b0),
                 (long long)have, shape_str(&a.shape, b1), (long long)known);
      return false;
    }
    break;
  }
  case OP_PERMUTE:
    if (!decode_perm(c, s, ynode_get(m, "perm"), in0->rank, a.perm)) return false;
    break;
  case OP_SLICE:
    if (!decode_axis(c, s, ynode_get(m, "axis"), in0->rank, opn, &a.axis)) return false;
    if (!expr_int(c, s, ynode_get(m, "start"), "start", &a.start)) return false;
    if (!expr_int(c, s, ynode_get(m, "end"), "end", &a.end)) return false;
    break;
  case OP_CONCAT:
    if (!decode_axis(c, s, ynode_get(m, "axis"), in0->rank, opn, &a.axis)) return false;
    break;
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
    a.axis = -1;
    if ((x = ynode_get(m, "axis")) && !decode_axis(c, s, x, in0->rank, opn, &a.axis)) return false;
    break;
  case OP_MATMUL:
    if ((x = ynode_get(m, "transpose_a")) && !decode_bool(c, s, x, &a.trans_a)) return false;
    if ((x = ynode_get(m, "transpose_b")) && !decode_bool(c, s, x, &a.trans_b)) return false;
    break;
  case OP_SCATTER_ADD:
    if (!decode_shape(c, s, ynode_get(m, "shape"), false, &a.shape, NULL)) return false;
    break;
  case OP_IOTA:
    a.dtype = DTYPE_I32;
    if (!decode_shape_or_like(c, s, m, &a.shape)) return false;
    if (!decode_axis(c, s, ynode_get(m, "axis"), a.shape.rank, opn, &a.axis)) return false;
    if ((x = ynode_get(m, "dtype")) && !decode_dtype(c, s, x, &a.dtype)) return false;
    break;
  case OP_CONSTANT: {
    Num v;
    a.dtype = DTYPE_F32;
    if (!decode_shape_or_like(c, s, m, &a.shape)) return false;
    if (!expr_num(c, s, ynode_get(m, "value"), &v)) return false;
    a.scalar = expr_num_f(v);
    if ((x = ynode_get(m, "dtype")) && !decode_dtype(c, s, x, &a.dtype)) return false;
    break;
  }
  default: break;
  }

  const char *name = full_name(c, s, ns->out[0]);
  if (op == OP_RANDOM) a.key = bc_hash32(name);
  if (bcast) {
    Shape target = g->values.data[in[0]].shape;
    for (int i = 1; i < ns->n_in; i++) {
      const Shape *si = &g->values.data[in[i]].shape;
      if (!shape_broadcast(&target, si, &target)) {
        char b0[96], b1[96];
        diag_error(c->d, ns->loc, "%s: shapes %s and %s do not broadcast", opn,
                   shape_str(&g->values.data[in[0]].shape, b0), shape_str(si, b1));
        return false;
      }
    }
    for (int i = 0; i < ns->n_in; i++) {
      if (shape_eq(&g->values.data[in[i]].shape, &target)) continue;
      Attrs ba = {0};
      ba.shape = target;
      in[i] = graph_op(g, OP_BROADCAST, 1, &in[i], &ba, c->d);
      if (in[i] < 0) return false;
    }
  }
  ValueId v = graph_op(g, op, ns->n_in, in, &a, c->d);
  if (v < 0) return false;
  graph_set_name(g, v, name);
  expand_scope_bind(s, ns->out[0], v, ns->out_loc[0]);
  return true;
}

static bool expand_param(Ctx *c, Scope *s, NodeSpec *ns) {
  Graph *g = c->g;
  if (!check_attrs(c, ns, "shape init scale", "shape", "op 'param'", false)) return false;
  if (ns->n_in) {
    diag_error(c->d, ns->in_node->loc, "param takes 0 inputs, got %d", ns->n_in);
    return false;
  }
  if (ns->n_out != 1) {
    diag_error(c->d, ns->out_loc[1], "op 'param' has one output, got %d names", ns->n_out);
    return false;
  }
  Shape sh;
  if (!decode_shape(c, s, ynode_get(ns->map, "shape"), false, &sh, NULL)) return false;
  Init init = {INIT_XAVIER, 0};
  const YNode *x = ynode_get(ns->map, "init");
  if (x) {
    Scope *env = s;
    const char *t = expr_str(c, &env, &x);
    if (!t) return false;
    if (!init_from_name(t, &init.kind)) {
      diag_error(c->d, x->loc, "unknown init '%s' (expected xavier, zeros, ones, normal, uniform)", t);
      return false;
    }
  }
  /* MXNet's defaults: Normal(0.01), Uniform(0.07) */
  init.scale = init.kind == INIT_NORMAL ? 0.01 : init.kind == INIT_UNIFORM ? 0.07 : 0;
  if ((x = ynode_get(ns->map, "scale"))) {
    Num v;
    if (!expr_num(c, s, x, &v)) return false;
    init.scale = expr_num_f(v);
  }
  const char *name = full_name(c, s, ns->out[0]);
  ValueId old = graph_find(g, name);
  if (old >= 0) {
    const Value *ov = &g->values.data[old];
    if (ov->kind == VALUE_PARAM && ov->loc.file == ns->loc.file && ov->loc.line == ns->loc.line)
      diag_error(c->d, ns->loc, "parameter '%s' defined twice (two calls of this block with one name?)",
                 name);
    else if (ov->kind == VALUE_PARAM)
      diag_error(c->d, ns->loc, "parameter '%s' defined twice (first at %s:%d)", name, ov->loc.file,
                 ov->loc.line);
    else
      diag_error(c->d, ns->loc, "parameter '%s' has the name of a graph input", name);
    return false;
  }
  ValueId v = graph_add_param(g, name, DTYPE_F32, sh, init, ns->loc);
  expand_scope_bind(s, ns->out[0], v, ns->out_loc[0]);
  return true;
}

/* ------------------------------------------------------ block calls */

static bool expand_call(Ctx *c, Scope *s, NodeSpec *ns) {
  Graph *g = c->g;
  BlockDef *b = &c->blocks.data[ns->block];
  const char *what = arena_printf(&c->arena, "block '%s'", b->name);
  char *allowed = arena_strdup(&c->arena, "");
  char *required = arena_strdup(&c->arena, "");
  for (int i = 0; b->attrs && i < b->attrs->n; i++) {
    const YPair *p = &b->attrs->pairs[i];
    allowed = arena_printf(&c->arena, "%s%s%s", allowed, i ? " " : "", p->key);
    if (ynode_is_null(p->value)) required = arena_printf(&c->arena, "%s %s", required, p->key);
  }
  if (!check_attrs(c, ns, allowed, required, what, true)) return false;
  if (ns->n_in != b->n_in) {
    char *names = arena_strdup(&c->arena, "");
    for (int i = 0; i < b->n_in; i++) names = arena_printf(&c->arena, "%s%s%s", names, i ? ", " : "", b->in[i]);
    diag_error(c->d, ns->in_node ? ns->in_node->loc : ns->loc,
               "block '%s' takes %d input%s (%s), got %d", b->name, b->n_in,
               b->n_in == 1 ? "" : "s", names, ns->n_in);
    return false;
  }
  if (ns->n_out != b->n_out) {
    char *names = arena_strdup(&c->arena, "");
    for (int i = 0; i < b->n_out; i++) names = arena_printf(&c->arena, "%s%s%s", names, i ? ", " : "", b->out[i]);
    diag_error(c->d, ns->out_loc[0], "block '%s' has %d output%s (%s), got %d", b->name, b->n_out,
               b->n_out == 1 ? "" : "s", names, ns->n_out);
    return false;
  }
  if (b->active) {
    int from = c->call_stack.n - 1;
    while (c->call_stack.data[from] != b) from--;
    char *chain = arena_strdup(&c->arena, "");
    for (int i = from; i < c->call_stack.n; i++)
      chain = arena_printf(&c->arena, "%s%s -> ", chain, c->call_stack.data[i]->name);
    diag_error(c->d, ns->loc, "block cycle: %s%s", chain, b->name);
    b->failed = true;
    return false;
  }
  if (b->failed) return false; /* reported at its first instance */
  const char *scope_name = ns->out[0];
  const YNode *x = ynode_get(ns->map, "name");
  if (x) {
    Scope *env = s;
    scope_name = expr_str(c, &env, &x);
    if (!scope_name) return false;
    bool ok = *scope_name && scope_name[0] != '.' && scope_name[strlen(scope_name) - 1] != '.' &&
              !strstr(scope_name, "..");
    for (const char *p = scope_name; ok && *p; p++)
      ok = *p == '.' || *p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
           (*p >= '0' && *p <= '9');
    if (!ok) {
      diag_error(c->d, x->loc, "bad scope name '%s' (letters, digits, _ and .)", scope_name);
      return false;
    }
  }
  int64_t repeat = 1;
  const YNode *rep = ynode_get(ns->map, "repeat");
  if (rep) {
    if (!expr_int(c, s, rep, "repeat", &repeat)) return false;
    if (repeat < 1 || repeat > MAX_REPEAT) {
      diag_error(c->d, rep->loc, "repeat must be between 1 and %d, got %lld", MAX_REPEAT,
                 (long long)repeat);
      return false;
    }
    if (b->n_in < 1) {
      diag_error(c->d, rep->loc, "block '%s' has no input to chain with repeat", b->name);
      return false;
    }
  }
  ValueId *in = arena_alloc(&c->arena, sizeof(ValueId) * (size_t)(ns->n_in + 1));
  g->cur_loc = ns->loc;
  g->cur_scope = s->prefix;
  if (!resolve_inputs(c, s, ns, false, in)) return false;

  int n_attrs = b->attrs ? b->attrs->n : 0;
  AttrBind *attrs = arena_alloc(&c->arena, sizeof(AttrBind) * (size_t)(n_attrs + 1));
  for (int i = 0; i < n_attrs; i++) {
    const YPair *p = &b->attrs->pairs[i];
    const YNode *given = ynode_get(ns->map, p->key);
    attrs[i] = (AttrBind){p->key, given ? given : p->value, given ? s : NULL};
  }
  const char *base = s->prefix ? arena_printf(&c->arena, "%s.%s", s->prefix, scope_name) : scope_name;
  /* one scope, one call: else parameters would clash and random streams repeat */
  for (int64_t r = -1; r < (rep ? repeat : 0); r++) {
    const char *sc = bc_intern(r < 0 ? base : arena_printf(&c->arena, "%s.%lld", base, (long long)r));
    for (int i = 0; i < c->scopes.n; i++) {
      if (c->scopes.data[i].name != sc) continue;
      diag_error(c->d, x ? x->loc : ns->loc,
                 "scope '%s' is already used by the block call at line %d (give this call another 'name')",
                 sc, c->scopes.data[i].loc.line);
      return false;
    }
  }
  for (int64_t r = -1; r < (rep ? repeat : 0); r++) {
    const char *sc = bc_intern(r < 0 ? base : arena_printf(&c->arena, "%s.%lld", base, (long long)r));
    vec_push(&c->scopes, ((ValBind){sc, -1, ns->loc}));
  }
  ValueId *outs = arena_alloc(&c->arena, sizeof(ValueId) * (size_t)(b->n_out + 1));
  int first_new = g->values.n;
  bool ok = true;
  b->active = true;
  vec_push(&c->call_stack, b);
  for (int64_t r = 0; r < repeat && ok; r++) {
    Scope inner = {0};
    inner.prefix = bc_intern(rep ? arena_printf(&c->arena, "%s.%lld", base, (long long)r) : base);
    inner.attrs = attrs;
    inner.n_attrs = n_attrs;
    for (int i = 0; i < b->n_in; i++) expand_scope_bind(&inner, b->in[i], in[i], b->in_loc[i]);
    int err0 = c->d->n_errors;
    expand_nodes(c, &inner, b->nodes);
    ok = c->d->n_errors == err0;
    if (!ok) diag_note(c->d, ns->loc, "in block '%s' as '%s'", b->name, inner.prefix);
    for (int i = 0; ok && i < b->n_out; i++) {
      ValBind *vb = expand_scope_find(&inner, b->out[i]);
      if (!vb) {
        diag_error(c->d, b->out_loc[i], "output '%s' of block '%s' is not made by its nodes",
                   b->out[i], b->name);
        ok = false;
      } else if (vb->v == VID_POISON) {
        ok = false;
      } else {
        outs[i] = vb->v;
      }
    }
    if (ok) in[0] = outs[0];
    vec_free(&inner.vals);
  }
  c->call_stack.n--;
  b->active = false;
  if (!ok) {
    b->failed = true;
    return false;
  }
  for (int i = 0; i < b->n_out; i++) {
    Value *v = &g->values.data[outs[i]];
    if (outs[i] >= first_new && v->kind == VALUE_NODE) graph_set_name(g, outs[i], full_name(c, s, ns->out[i]));
    expand_scope_bind(s, ns->out[i], outs[i], ns->out_loc[i]);
  }
  return true;
}

static bool expand_node(Ctx *c, Scope *s, NodeSpec *ns) {
  c->g->cur_loc = ns->loc;
  c->g->cur_scope = s->prefix;
  switch (ns->kind) {
  case NK_PRIM: return expand_prim(c, s, ns);
  case NK_PARAM: return expand_param(c, s, ns);
  default: return expand_call(c, s, ns);
  }
}

/* ------------------------------------------------------------ graphs */

static bool add_inputs(Ctx *c, Scope *top, const YNode *inputs) {
  Graph *g = c->g;
  if (inputs->kind != YNODE_MAP) {
    diag_error(c->d, inputs->loc, "'inputs' must be a mapping name: [dims..., dtype], got %s",
               ynode_kind_name(inputs->kind));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < inputs->n; i++) {
    const YPair *p = &inputs->pairs[i];
    const YNode *v = p->value;
    if (!expr_is_ident(p->key)) {
      diag_error(c->d, p->key_loc, "input name '%s' must be letters, digits and _", p->key);
      ok = false;
      continue;
    }
    if (v->kind != YNODE_SEQ || v->n < 1) {
      diag_error(c->d, v->loc, "input '%s' must be a list [dims..., dtype]", p->key);
      ok = false;
      continue;
    }
    const YNode *tn = v->items[v->n - 1];
    DType t;
    if (tn->kind != YNODE_SCALAR || !dtype_from_name(tn->text, &t)) {
      if (tn->kind == YNODE_SCALAR && expr_is_ident(tn->text) && !expand_hparam(c, tn->text, strlen(tn->text)))
        diag_error(c->d, tn->loc, "unknown dtype '%s' (expected f32 or i32)", tn->text);
      else
        diag_error(c->d, tn->loc, "input '%s' needs its dtype (f32 or i32) as the last entry", p->key);
      ok = false;
      continue;
    }
    if (v->n - 1 > BC_MAX_RANK) {
      diag_error(c->d, v->loc, "input '%s' has rank %d (at most %d)", p->key, v->n - 1, BC_MAX_RANK);
      ok = false;
      continue;
    }
    Shape sh = {0};
    sh.rank = v->n - 1;
    bool good = true;
    for (int k = 0; k < sh.rank && good; k++) {
      int64_t d;
      good = expr_int(c, top, v->items[k], "a dimension", &d);
      if (good && d < 1) {
        diag_error(c->d, v->items[k]->loc, "a dimension must be >= 1, got %lld", (long long)d);
        good = false;
      }
      sh.dim[k] = d;
    }
    if (!good) {
      ok = false;
      continue;
    }
    ValueId id = graph_add_input(g, p->key, t, sh, p->key_loc);
    expand_scope_bind(top, p->key, id, p->key_loc);
  }
  return ok;
}

static bool expand_graph(Ctx *c, const YPair *gp) {
  Graph *g = c->g;
  const YNode *def = gp->value;
  if (def->kind != YNODE_MAP) {
    diag_error(c->d, def->loc, "graph '%s' must be a mapping (inputs, nodes, outputs, loss), got %s",
               gp->key, ynode_kind_name(def->kind));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < def->n; i++) {
    const char *k = def->pairs[i].key;
    if (strcmp(k, "inputs") && strcmp(k, "nodes") && strcmp(k, "outputs") && strcmp(k, "loss")) {
      diag_error(c->d, def->pairs[i].key_loc,
                 "unknown key '%s' in graph '%s' (expected inputs, nodes, outputs, loss)", k, gp->key);
      ok = false;
    }
  }
  if (!ok) return false;
  Scope top = {0};
  int err0 = c->d->n_errors;
  const YNode *inputs = ynode_get(def, "inputs");
  if (inputs && !ynode_is_null(inputs)) add_inputs(c, &top, inputs);
  if (c->d->n_errors == err0) expand_nodes(c, &top, ynode_get(def, "nodes"));
  const YNode *outs = ynode_get(def, "outputs");
  if (c->d->n_errors == err0 && outs && !ynode_is_null(outs)) {
    const char **names;
    SrcLoc *locs;
    int n;
    if (parse_names(c, outs, "an output", &names, &locs, &n)) {
      for (int i = 0; i < n; i++) {
        ValBind *b = expand_scope_find(&top, names[i]);
        if (!b) diag_error(c->d, locs[i], "undefined value '%s'", names[i]);
        else if (b->v >= 0) vec_push(&g->outputs, b->v);
      }
    }
  }
  const YNode *loss = ynode_get(def, "loss");
  if (c->d->n_errors == err0 && loss && !ynode_is_null(loss)) {
    ValBind *b = loss->kind == YNODE_SCALAR ? expand_scope_find(&top, loss->text) : NULL;
    if (loss->kind != YNODE_SCALAR) {
      diag_error(c->d, loss->loc, "'loss' must be a value name, got %s", ynode_kind_name(loss->kind));
    } else if (!b) {
      diag_error(c->d, loss->loc, "undefined value '%s'", loss->text);
    } else if (b->v >= 0) {
      const Value *v = &g->values.data[b->v];
      char buf[96];
      if (v->dtype != DTYPE_F32 || shape_numel(&v->shape) != 1)
        diag_error(c->d, loss->loc, "the loss '%s' must be f32 with one element, got %s %s",
                   loss->text, dtype_name(v->dtype), shape_str(&v->shape, buf));
      else
        g->loss = b->v;
    }
  }
  vec_free(&top.vals);
  return c->d->n_errors == err0;
}

/* ------------------------------------------------------------- entry */

static void ctx_free(Ctx *c) {
  for (int i = 0; i < c->files.n; i++) ydoc_free(&c->files.data[i]->doc);
  vec_free(&c->files);
  vec_free(&c->blocks);
  vec_free(&c->hparams);
  vec_free(&c->call_stack);
  vec_free(&c->scopes);
  arena_free(&c->arena);
}

/* Loads the main file and its imports and checks every block's node list
 * for structure (unknown ops in a library surface even when unused). */
static bool load_model(Ctx *c, const char *path) {
  int err0 = c->d->n_errors;
  if (!load_file(c, path, (SrcLoc){NULL, 0, 0}, path) || c->d->n_errors != err0) return false;
  for (int i = 0; i < c->blocks.n; i++) {
    const YNode *list = c->blocks.data[i].nodes;
    for (int k = 0; list && k < list->n; k++) {
      NodeSpec ns;
      parse_node(c, list->items[k], &ns);
    }
  }
  return c->d->n_errors == err0;
}

static const YNode *graphs_of(Ctx *c) {
  const YNode *gs = ynode_get(c->root, "graphs");
  if (!gs || ynode_is_null(gs) || (gs->kind == YNODE_MAP && gs->n == 0)) {
    diag_error(c->d, c->root->loc, "the model declares no graphs (add a 'graphs:' mapping)");
    return NULL;
  }
  if (gs->kind != YNODE_MAP) {
    diag_error(c->d, gs->loc, "'graphs' must be a mapping of graph names to graphs, got %s",
               ynode_kind_name(gs->kind));
    return NULL;
  }
  return gs;
}

bool model_expand(Graph *out, const char *path, const char *graph_name, const Setting *sets,
                  int n_sets, Diag *d) {
  Ctx c = {0};
  c.d = d;
  arena_init(&c.arena);
  graph_init(out, graph_name);
  c.g = out;
  bool ok = false;
  int err0 = d->n_errors;
  if (!load_model(&c, path)) goto cleanup;
  if (!read_hparams(&c, sets, n_sets)) goto cleanup;
  const YNode *gs = graphs_of(&c);
  if (!gs) goto cleanup;
  const YPair *gp = graph_name ? ynode_pair(gs, graph_name) : &gs->pairs[0];
  if (!gp) {
    char *names = arena_strdup(&c.arena, "");
    for (int i = 0; i < gs->n; i++) names = arena_printf(&c.arena, "%s%s%s", names, i ? ", " : "", gs->pairs[i].key);
    diag_error(d, cmdline_loc, "unknown graph '%s' (the model has: %s)", graph_name, names);
    goto cleanup;
  }
  out->name = bc_intern(gp->key);
  for (int i = 0; i < c.hparams.n; i++)
    vec_push(&out->hparams, ((HParam){c.hparams.data[i].name, expr_num_f(c.hparams.data[i].value)}));
  ok = expand_graph(&c, gp) && d->n_errors == err0;
  out->cur_loc = SRCLOC_NONE;
  out->cur_scope = NULL;
cleanup:
  ctx_free(&c);
  if (!ok) graph_free(out);
  return ok;
}

int model_graph_names(const char *path, const char ***names, Diag *d) {
  Ctx c = {0};
  c.d = d;
  arena_init(&c.arena);
  *names = NULL;
  int n = -1;
  if (load_model(&c, path)) {
    const YNode *gs = graphs_of(&c);
    if (gs) {
      n = gs->n;
      *names = bc_malloc(sizeof(char *) * (size_t)(n + 1));
      for (int i = 0; i < n; i++) (*names)[i] = bc_intern(gs->pairs[i].key);
      (*names)[n] = NULL;
    }
  }
  ctx_free(&c);
  return n;
}
