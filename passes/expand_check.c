/* expand_check.c — contracts of blocks and a hint for cut expressions.
 *
 * A block's `require:` list states what its callers must respect:
 *
 *   require:
 *     - {that: "hidden % heads == 0", error: "heads ({heads}) must divide hidden ({hidden})"}
 *
 * Each `that` is an expression (expr.c: attributes, hparams, dim(), rank(),
 * dtype(), one comparison) over the block's inputs and attributes,
 * evaluated when the block is called, before its nodes are expanded, in
 * the order written; the first that is 0 fails the call with its `error`,
 * where `{expr}` is replaced by the expression's value (`{shape(x)}` by x's
 * shape, `{{` and `}}` by braces). The error is reported where the user can
 * act on it: at the innermost call site outside the file that declares the
 * block (a library's internals are not the user's to change), with notes
 * naming the hparams `that` read (and the `--set` that gave one) and the
 * requirement's own line. A check adds no node to the graph.
 *
 * Also here: an unquoted `dim(x, 0)` in a flow list `[...]` (or mapping
 * `{...}`) arrives as the scalars `dim(x` and `0)`; expand_check_split
 * reports it as one expression to quote.
 *
 * Not here: expression evaluation (expr.c), block calls (expand.c). */
#include <string.h>

#include "expand.h"

/* ---------------------------------------------------------------- helpers */

static int paren_balance(const char *s) {
  int b = 0;
  for (; *s; s++) b += (*s == '(') - (*s == ')');
  return b;
}

static bool is_plain(const YNode *n) {
  return n && n->kind == YNODE_SCALAR && !n->quoted && n->text[0];
}

/* A number as the message shows it: integers exactly, floats with %g. */
static const char *num_text(Ctx *c, Num v) {
  if (v.is_dtype) return dtype_name((DType)v.i);
  if (v.is_int) return arena_printf(&c->arena, "%lld", (long long)v.i);
  return arena_printf(&c->arena, "%g", v.f);
}

/* ------------------------------------------------------ cut expressions */

bool expand_check_split(Ctx *c, const YNode *n) {
  if (n->kind == YNODE_SEQ) {
    for (int i = 0; i < n->n; i++) {
      const YNode *x = n->items[i];
      if (n->flow && is_plain(x) && paren_balance(x->text) > 0) {
        const char *joined = x->text;
        int bal = paren_balance(x->text);
        for (int j = i + 1; j < n->n && bal > 0 && is_plain(n->items[j]); j++) {
          joined = arena_printf(&c->arena, "%s, %s", joined, n->items[j]->text);
          bal += paren_balance(n->items[j]->text);
        }
        if (bal == 0 && joined != x->text) {
          diag_error(c->d, x->loc,
                     "write \"%s\" in quotes: in a flow list [...] YAML splits at the comma", joined);
          return true;
        }
      }
      if (expand_check_split(c, x)) return true;
    }
  } else if (n->kind == YNODE_MAP) {
    for (int i = 0; i < n->n; i++) {
      const YNode *v = n->pairs[i].value;
      /* {end: dim(x, 1)} is {end: "dim(x", "1)": null} */
      if (n->flow && is_plain(v) && paren_balance(v->text) > 0) {
        const char *joined = v->text;
        int bal = paren_balance(v->text);
        for (int j = i + 1; j < n->n && bal > 0 && ynode_is_null(n->pairs[j].value); j++) {
          joined = arena_printf(&c->arena, "%s, %s", joined, n->pairs[j].key);
          bal += paren_balance(n->pairs[j].key);
        }
        if (bal == 0 && joined != v->text) {
          diag_error(c->d, v->loc,
                     "write \"%s\" in quotes: in a flow mapping {...} YAML splits at the comma",
                     joined);
          return true;
        }
      }
      if (expand_check_split(c, v)) return true;
    }
  }
  return false;
}

/* ------------------------------------------------------------ parsing */

/* A walk over a requirement's message, piece by piece (next_piece). */
typedef struct {
  const char *s;
  int pos;
} MsgWalk;

/* The next piece of message text: a literal run ([*off, *off + *len),
 * is_expr false, `{{` and `}}` kept doubled) or an `{expr}` (is_expr
 * true, the bytes between the braces). -1 in *len: an unmatched brace at
 * *off. False at the end. */
static bool next_piece(MsgWalk *w, int *off, int *len, bool *is_expr) {
  const char *s = w->s;
  int p = w->pos;
  if (!s[p]) return false;
  *off = p;
  if (s[p] == '{' && s[p + 1] != '{') {
    int e = p + 1;
    while (s[e] && s[e] != '}' && s[e] != '{') e++;
    *is_expr = true;
    if (s[e] != '}') {
      *len = -1;
      w->pos = e + (s[e] != 0);
      return true;
    }
    *off = p + 1;
    *len = e - p - 1;
    w->pos = e + 1;
    return true;
  }
  *is_expr = false;
  while (s[p]) {
    if ((s[p] == '{' && s[p + 1] == '{') || (s[p] == '}' && s[p + 1] == '}')) {
      p += 2;
    } else if (s[p] == '{') {
      break;
    } else if (s[p] == '}') {
      *len = -1;
      *off = p;
      w->pos = p + 1;
      return true;
    } else {
      p++;
    }
  }
  *len = p - *off;
  w->pos = p;
  return true;
}

bool expand_check_parse(Ctx *c, BlockDef *b, const YNode *v) {
  if (ynode_is_null(v)) return true;
  if (v->kind != YNODE_SEQ) {
    diag_error(c->d, v->loc, "'require' must be a list of {that: CONDITION, error: MESSAGE}, got %s",
               ynode_kind_name(v->kind));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < v->n; i++) {
    const YNode *it = v->items[i];
    if (it->kind != YNODE_MAP) {
      diag_error(c->d, it->loc, "a requirement must be a mapping {that: CONDITION, error: MESSAGE}, got %s",
                 ynode_kind_name(it->kind));
      ok = false;
      continue;
    }
    if (expand_check_split(c, it)) {
      ok = false;
      continue;
    }
    for (int k = 0; k < it->n; k++)
      if (strcmp(it->pairs[k].key, "that") && strcmp(it->pairs[k].key, "error")) {
        diag_error(c->d, it->pairs[k].key_loc, "unknown key '%s' in a requirement (expected that, error)",
                   it->pairs[k].key);
        ok = false;
      }
    const char *keys[2] = {"that", "error"};
    for (int k = 0; k < 2; k++) {
      const YNode *x = ynode_get(it, keys[k]);
      if (!x) {
        diag_error(c->d, it->loc, "a requirement needs '%s'", keys[k]);
        ok = false;
      } else if (x->kind != YNODE_SCALAR || ynode_is_null(x) || !x->text[0]) {
        diag_error(c->d, x->loc, "'%s' must be %s", keys[k],
                   k == 0 ? "an expression" : "a message");
        ok = false;
      } else if (k == 1) {
        MsgWalk w = {x->text, 0};
        int off, len;
        bool is_expr;
        while (next_piece(&w, &off, &len, &is_expr)) {
          if (len >= 0) continue;
          diag_error(c->d, expr_loc(x, off),
                     "unmatched '%c' in a requirement's message (write {{ or }} for a brace)",
                     x->text[off]);
          ok = false;
          break;
        }
      }
    }
  }
  if (ok) b->require = v;
  return ok;
}

/* ---------------------------------------------------------- checking */

/* Whether an `{expr}` piece is `shape(name)` (spaces around allowed); the
 * name in the arena. */
static const char *shape_arg(Ctx *c, const char *t, int len) {
  while (len > 0 && (*t == ' ' || *t == '\t')) t++, len--;
  while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
  if (len < 8 || strncmp(t, "shape(", 6) != 0 || t[len - 1] != ')') return NULL;
  const char *name = arena_printf(&c->arena, "%.*s", len - 7, t + 6);
  return expr_is_ident(name) ? name : NULL;
}

/* The message with its `{expr}` parts replaced, or NULL (reported). */
static const char *interpolate(Ctx *c, Scope *s, const YNode *msg) {
  const char *out = "";
  MsgWalk w = {msg->text, 0};
  int off, len;
  bool is_expr;
  while (next_piece(&w, &off, &len, &is_expr)) {
    BC_ASSERT(len >= 0); /* checked by expand_check_parse */
    const char *piece;
    if (!is_expr) {
      char *lit = arena_alloc(&c->arena, (size_t)len + 1), *o = lit;
      for (int i = off; i < off + len; i++) {
        *o++ = msg->text[i];
        if ((msg->text[i] == '{' || msg->text[i] == '}') && msg->text[i + 1] == msg->text[i]) i++;
      }
      *o = '\0';
      piece = lit;
    } else if ((piece = shape_arg(c, msg->text + off, len))) {
      ValBind *vb = expand_scope_find(s, piece);
      if (!vb) {
        diag_error(c->d, expr_loc(msg, off), "undefined value '%s'", piece);
        return NULL;
      }
      if (vb->v < 0) return NULL; /* poisoned: reported */
      char buf[96];
      piece = arena_strdup(&c->arena, shape_str(&c->g->values.data[vb->v].shape, buf));
    } else {
      Num v;
      if (!expr_eval(c, s, msg, off, len, &v)) return NULL;
      piece = num_text(c, v);
    }
    out = arena_printf(&c->arena, "%s%s", out, piece);
  }
  return out;
}

/* Where the user can act on a broken contract of b: the innermost call
 * site in another file than b's (a library block called by a library block
 * points at the user's call of the outer one); else b's own call site. */
static SrcLoc user_site(const Ctx *c, const BlockDef *b) {
  BC_ASSERT(c->call_locs.n > 0);
  for (int i = c->call_locs.n - 1; i >= 0; i--) {
    SrcLoc l = c->call_locs.data[i];
    if (l.file && b->loc.file && strcmp(l.file, b->loc.file) != 0) return l;
  }
  return c->call_locs.data[c->call_locs.n - 1];
}

bool expand_check_block(Ctx *c, const BlockDef *b, Scope *inner) {
  if (!b->require) return true;
  for (int i = 0; i < b->require->n; i++) {
    const YNode *it = b->require->items[i];
    const YNode *that = ynode_get(it, "that"), *msg = ynode_get(it, "error");
    HPRefs read = {0};
    c->hp_read = &read;
    Num v;
    bool ok = expr_eval(c, inner, that, 0, -1, &v);
    c->hp_read = NULL;
    if (ok && v.is_dtype) {
      diag_error(c->d, that->loc, "'that' must be a condition, got the dtype %s",
                 dtype_name((DType)v.i));
      ok = false;
    }
    if (ok && expr_num_f(v) == 0) {
      const char *text = interpolate(c, inner, msg);
      if (text) {
        diag_error(c->d, user_site(c, b), "%s", text);
        for (int k = 0; k < read.n; k++) {
          const HP *h = read.data[k];
          const char *val = num_text(c, h->value);
          if (h->loc.line == 0)
            diag_note(c->d, h->loc, "hparam '%s' is %s (--set %s=%s)", h->name, val, h->name, val);
          else
            diag_note(c->d, h->loc, "hparam '%s' is %s", h->name, val);
        }
        diag_note(c->d, it->loc, "required by block '%s'", b->name);
      }
      ok = false;
    }
    vec_free(&read);
    if (!ok) return false;
  }
  return true;
}
