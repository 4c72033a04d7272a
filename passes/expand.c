/* expand.c — the model front end: a YAML model file (and its imports) into
 * one graph of primitives, following the schema in models/README.md.
 *
 * Steps: load the main file and its imports (ydoc trees, cycles detected),
 * register blocks, resolve hparams with --set overrides, then expand the
 * chosen graph: inputs, its node list (sorted by data dependencies), block
 * calls recursively in scopes, `repeat` chains, implicit numpy broadcasts,
 * scalar literals as constants, parameters, outputs and the loss. The
 * scopes (expand_scope_*) live here; primitive and param nodes and graph
 * inputs in expand_prim.c; blocks' `require:` contracts, checked at each
 * call before its nodes, in expand_check.c.
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
/* What repeats of repeats may expand to (a few lines can ask for 10^15 nodes). */
#define MAX_BLOCK_INSTANCES 20000
#define MAX_NODES 200000
static bool expand_too_big(Ctx *c, SrcLoc at, int limit, const char *what) {
  diag_error(c->d, at, "the model expands to more than %d %s (repeats of repeats?)", limit, what);
  return false;
}

static const SrcLoc cmdline_loc = {"<command line>", 0, 0};

typedef VEC(int) IntVec;

/* ---------------------------------------------------------------- helpers */

/* ---------------------------------------------------------------- scopes */

ValBind *expand_scope_find(Scope *s, const char *name) {
  name = bc_intern(name);
  for (int i = s->vals.n - 1; i >= 0; i--)
    if (s->vals.data[i].name == name) return &s->vals.data[i];
  return NULL;
}

void expand_scope_bind(Scope *s, const char *name, ValueId v, SrcLoc loc) {
  ValBind *b = expand_scope_find(s, name);
  if (b) {
    b->v = v;
    return;
  }
  vec_push(&s->vals, ((ValBind){bc_intern(name), v, loc}));
}

const char *expand_scope_full_name(Ctx *c, const Scope *s, const char *local) {
  if (!s->prefix) return bc_intern(local);
  char *t = arena_printf(&c->arena, "%s.%s", s->prefix, local);
  return bc_intern(t);
}

AttrBind *expand_attr(const Scope *s, const char *name, size_t len) {
  if (!s) return NULL;
  for (int i = 0; i < s->n_attrs; i++)
    if (strlen(s->attrs[i].name) == len && strncmp(s->attrs[i].name, name, len) == 0)
      return &s->attrs[i];
  return NULL;
}

const HP *expand_hparam(Ctx *c, const char *name, size_t len) {
  for (int i = 0; i < c->hparams.n; i++)
    if (strlen(c->hparams.data[i].name) == len && strncmp(c->hparams.data[i].name, name, len) == 0)
      return &c->hparams.data[i];
  return NULL;
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
    } else if (strcmp(q->key, "require") == 0) {
      ok = expand_check_parse(c, &b, v) && ok;
    } else if (strcmp(q->key, "nodes") == 0) {
      if (v->kind != YNODE_SEQ && !ynode_is_null(v)) {
        diag_error(c->d, v->loc, "'nodes' must be a list, got %s", ynode_kind_name(v->kind));
        ok = false;
      } else if (v->kind == YNODE_SEQ) {
        b.nodes = v;
      }
    } else {
      diag_error(c->d, q->key_loc,
                 "unknown key '%s' in block '%s' (expected in, out, attrs, require, nodes)", q->key,
                 p->key);
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
  const char *rp, *text = NULL;
  if (c->n_src > 0) { /* a checkpoint's files: named exactly as when it was saved */
    for (int i = 0; i < c->n_src && !text; i++)
      if (strcmp(c->src[i].path, path) == 0) text = c->src[i].text;
    if (!text) {
      diag_error(c->d, from.line > 0 ? from : (SrcLoc){bc_intern(path), 0, 0},
                 "cannot %s '%s': the model stored with it has no such file", from.line > 0 ? "import" : "read",
                 as_written);
      return false;
    }
    rp = path;
  } else {
    char *real = realpath(path, NULL);
    if (!real) {
      if (from.line > 0) {
        diag_error(c->d, from, "cannot import '%s' (%s): %s", as_written, path, strerror(errno));
      } else {
        diag_error(c->d, (SrcLoc){bc_intern(path), 0, 0}, "cannot open file: %s", strerror(errno));
      }
      return false;
    }
    rp = arena_strdup(&c->arena, real);
    free(real);
    struct stat st;
    if (stat(rp, &st) == 0 && !S_ISREG(st.st_mode)) {
      SrcLoc at = from.line > 0 ? from : (SrcLoc){bc_intern(path), 0, 0};
      diag_error(c->d, at, "cannot %s '%s': not a regular file", from.line > 0 ? "import" : "read",
                 as_written);
      return false;
    }
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
  size_t n_bytes = text ? strlen(text) : 0;
  char *read = text ? NULL : bc_read_file(path, &n_bytes, c->d);
  if (!text && !read) return false;
  if (!text) text = read;
  bool loaded = ydoc_load_string(&mf->doc, path, text, n_bytes, c->d);
  if (loaded && c->g) /* the graph remembers its files, for checkpoints */
    vec_push(&c->g->sources, ((SourceFile){arena_strdup(&c->g->arena, path), arena_strdup(&c->g->arena, text)}));
  free(read);
  if (!loaded) return false;
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
    } else if (!v->quoted && v->text[0] == '$' && expr_is_ident(v->text + 1)) {
      const HP *other = expand_hparam(c, v->text + 1, strlen(v->text + 1));
      if (!other) {
        diag_error(c->d, v->loc, "hparam '%s' = %s: no hparam '%s' is declared above it", p->key, v->text,
                   v->text + 1);
        ok = false;
      } else {
        vec_push(&c->hparams, ((HP){bc_intern(p->key), other->value, v->loc, other->name}));
      }
    } else if (v->quoted || !expr_parse_number(v->text, &n)) {
      diag_error(c->d, v->loc, "hparam '%s' must be a number, got %s'%s'", p->key,
                 v->quoted ? "the string " : "", v->text);
      ok = false;
    } else {
      vec_push(&c->hparams, ((HP){bc_intern(p->key), n, v->loc, NULL}));
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
    h->same_as = NULL;
  }
  /* `$other` follows other's final value (declared earlier, so resolved) */
  for (int i = 0; ok && i < c->hparams.n; i++) {
    HP *h = &c->hparams.data[i];
    if (h->same_as) h->value = expand_hparam(c, h->same_as, strlen(h->same_as))->value;
  }
  return ok;
}

/* ---------------------------------------------------- node lists */

bool expand_is_literal(const YNode *n) {
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

/* Adds a dependency for each `dim(NAME`, `rank(NAME`, `dtype(NAME` in the
 * scalars under n. */
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
         (a.name_len == 4 && !strncmp(s + a.name, "rank", 4)) ||
         (a.name_len == 5 && !strncmp(s + a.name, "dtype", 5)))) {
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
  if (expand_check_split(c, item)) return false;
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
  if (ns->op != OP_COUNT && (op_info[ns->op].flags & OPF_INTERNAL)) {
    diag_error(c->d, op->loc, "op '%s' is made by the compiler, not available in YAML", op->text);
    return false;
  } else if (ns->op != OP_COUNT) {
    ns->kind = NK_PRIM;
  } else if (strcmp(op->text, "param") == 0) {
    ns->kind = NK_PARAM;
  } else if (find_block(c, op->text)) {
    ns->kind = NK_BLOCK;
    ns->block = (int)(find_block(c, op->text) - c->blocks.data);
  } else {
    diag_error(c->d, op->loc, "unknown op '%s' (%s)", op->text, expand_prim_suggest(c, op->text));
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
      if (expand_is_literal(x)) scan_refs(c, x, ns);
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
  if (!expand_prim_check_attrs(c, ns, allowed, required, what, true)) return false;
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
  if (!expand_prim_resolve_inputs(c, s, ns, false, in)) return false;

  int n_attrs = b->attrs ? b->attrs->n : 0;
  AttrBind *attrs = arena_alloc(&c->arena, sizeof(AttrBind) * (size_t)(n_attrs + 1));
  for (int i = 0; i < n_attrs; i++) {
    const YPair *p = &b->attrs->pairs[i];
    const YNode *given = ynode_get(ns->map, p->key);
    attrs[i] = (AttrBind){p->key, given ? given : p->value, given ? s : NULL, false};
  }
  const char *base = s->prefix ? arena_printf(&c->arena, "%s.%s", s->prefix, scope_name) : scope_name;
  if (c->scopes.n + repeat + 1 > MAX_BLOCK_INSTANCES) /* also bounds the scope check's n^2 */
    return expand_too_big(c, rep ? rep->loc : ns->loc, MAX_BLOCK_INSTANCES, "block instances");
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
  vec_push(&c->call_locs, ns->loc);
  /* block instances for DOT: the repeated call holds one per round */
  const BlockId caller = g->cur_block;
  BlockId group = caller;
  if (rep) {
    group = graph_add_block(g, base, b->name, ns->loc, caller);
    g->blocks.data[group].repeat = (int)repeat;
  }
  for (int64_t r = 0; r < repeat && ok; r++) {
    if (g->nodes.n > MAX_NODES) {
      ok = expand_too_big(c, rep ? rep->loc : ns->loc, MAX_NODES, "nodes");
      break;
    }
    Scope inner = {0};
    inner.prefix = bc_intern(rep ? arena_printf(&c->arena, "%s.%lld", base, (long long)r) : base);
    g->cur_block = graph_add_block(g, inner.prefix, b->name, ns->loc, group);
    inner.attrs = attrs;
    inner.n_attrs = n_attrs;
    for (int i = 0; i < b->n_in; i++) expand_scope_bind(&inner, b->in[i], in[i], b->in_loc[i]);
    int err0 = c->d->n_errors;
    if (expand_check_block(c, b, &inner)) expand_nodes(c, &inner, b->nodes);
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
  c->call_locs.n--;
  b->active = false;
  g->cur_block = caller;
  if (!ok) {
    b->failed = true;
    return false;
  }
  for (int i = 0; i < b->n_out; i++) {
    Value *v = &g->values.data[outs[i]];
    if (outs[i] >= first_new && v->kind == VALUE_NODE) graph_set_name(g, outs[i], expand_scope_full_name(c, s, ns->out[i]));
    expand_scope_bind(s, ns->out[i], outs[i], ns->out_loc[i]);
  }
  return true;
}

static bool expand_node(Ctx *c, Scope *s, NodeSpec *ns) {
  c->g->cur_loc = ns->loc;
  c->g->cur_scope = s->prefix;
  switch (ns->kind) {
  case NK_PRIM: return expand_prim_node(c, s, ns);
  case NK_PARAM: return expand_prim_param(c, s, ns);
  default: return expand_call(c, s, ns);
  }
}

/* ------------------------------------------------------------ graphs */

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
  if (inputs && !ynode_is_null(inputs)) expand_prim_inputs(c, &top, inputs);
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
  vec_free(&c->call_locs);
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

static bool expand(Graph *out, const char *path, const SourceFile *src, int n_src, const char *graph_name,
                   const Setting *sets, int n_sets, Diag *d) {
  Ctx c = {0};
  c.d = d;
  c.src = src;
  c.n_src = n_src;
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

bool model_expand(Graph *out, const char *path, const char *graph_name, const Setting *sets,
                  int n_sets, Diag *d) {
  return expand(out, path, NULL, 0, graph_name, sets, n_sets, d);
}

bool model_expand_sources(Graph *out, const SourceFile *files, int n_files, const char *graph_name,
                          const Setting *sets, int n_sets, Diag *d) {
  BC_ASSERT(n_files > 0);
  return expand(out, files[0].path, files, n_files, graph_name, sets, n_sets, d);
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
