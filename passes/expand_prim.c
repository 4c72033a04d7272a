/* expand_prim.c — the leaves of model expansion (expand.h): primitive ops
 * and `param` nodes (attributes checked against graph/ops.def's `attrs`
 * columns and decoded, literal inputs made constants, implicit broadcasts),
 * a graph's `inputs`, and what an unknown op name could have meant.
 *
 * Not here: node lists, blocks, imports (expand.c), expressions (expr.c).
 * Every user error names the YAML node it comes from. */
#include "expand.h"

#include <string.h>

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
const char *expand_prim_suggest(Ctx *c, const char *name) {
  const char *best[4];
  int n = 0;
  for (int d = 1; d <= 2 && n == 0; d++) {
    for (int i = 0; i < OP_COUNT && n < 4; i++)
      if (!(op_info[i].flags & OPF_INTERNAL) && edit_distance(name, op_info[i].name, d) == d) best[n++] = op_info[i].name;
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
    if (!(op_info[i].flags & OPF_INTERNAL)) s = arena_printf(&c->arena, "%s %s", s, op_info[i].name);
  return arena_printf(&c->arena, "%s, param, or a block", s);
}

/* ------------------------------------------------------ attributes */

/* Checks a node's attribute keys against `allowed` ("a b c") and `required`
 * ("a b|c": one of b, c); `what` names the op for messages. */
bool expand_prim_check_attrs(Ctx *c, const NodeSpec *ns, const char *allowed, const char *required,
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
    } else if (block_call && !strcmp(p->key, "stop_gradient")) {
      diag_error(c->d, p->key_loc, "'stop_gradient' applies to primitive ops, not to %s (set it on its nodes)", what);
      ok = false;
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
bool expand_prim_resolve_inputs(Ctx *c, Scope *s, const NodeSpec *ns, bool broadcast_lits, ValueId *in) {
  Graph *g = c->g;
  bool any_lit = false;
  DType t = DTYPE_F32;
  bool have_t = false;
  Shape target = {0};
  for (int i = 0; i < ns->n_in; i++) {
    if (expand_is_literal(ns->in[i])) {
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

bool expand_prim_node(Ctx *c, Scope *s, NodeSpec *ns) {
  Graph *g = c->g;
  Op op = ns->op;
  const char *opn = op_info[op].name;
  const char *what = arena_printf(&c->arena, "op '%s'", opn);
  const char *required;
  const char *allowed = prim_attrs(op, &required);
  /* any primitive may be cut off from the backward pass */
  allowed = arena_printf(&c->arena, "%s%sstop_gradient", allowed, *allowed ? " " : "");
  if (!expand_prim_check_attrs(c, ns, allowed, required, what, false)) return false;
  bool stop_gradient = false;
  const YNode *sg = ynode_get(ns->map, "stop_gradient");
  if (sg && !decode_bool(c, s, sg, &stop_gradient)) return false;
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
  if (!expand_prim_resolve_inputs(c, s, ns, bcast, in)) return false;

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
  case OP_ATTENTION: {
    int64_t h;
    x = ynode_get(m, "heads");
    if (!expr_int(c, s, x, "heads", &h)) return false;
    if (h < 1 || h > INT32_MAX) {
      diag_error(c->d, x->loc, "attention: heads must be at least 1, got %lld", (long long)h);
      return false;
    }
    a.heads = (int)h;
    if ((x = ynode_get(m, "dropout"))) {
      Num p;
      if (!expr_num(c, s, x, &p)) return false;
      a.dropout = expr_num_f(p);
      if (!(a.dropout >= 0 && a.dropout < 1)) {
        diag_error(c->d, x->loc, "attention: dropout must be in [0, 1), got %g", a.dropout);
        return false;
      }
    }
    break;
  }
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

  const char *name = expand_scope_full_name(c, s, ns->out[0]);
  if (op == OP_RANDOM || op == OP_ATTENTION) a.key = bc_hash32(name);
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
  g->nodes.data[g->values.data[v].node].stop_gradient = stop_gradient;
  graph_set_name(g, v, name);
  expand_scope_bind(s, ns->out[0], v, ns->out_loc[0]);
  return true;
}

bool expand_prim_param(Ctx *c, Scope *s, NodeSpec *ns) {
  Graph *g = c->g;
  if (!expand_prim_check_attrs(c, ns, "shape init scale", "shape", "op 'param'", false)) return false;
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
  const char *name = expand_scope_full_name(c, s, ns->out[0]);
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

bool expand_prim_inputs(Ctx *c, Scope *top, const YNode *inputs) {
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

