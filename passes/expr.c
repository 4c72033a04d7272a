/* expr.c — the expressions of model files: shape dims, numeric attributes,
 * repeat counts, scalar constants and the conditions of a block's
 * `require:`. A recursive-descent evaluator over the scalar's text with
 * Python's arithmetic (// floors, % takes the sign of the divisor, / of
 * integers stays an integer only when exact), integer overflow and division
 * by zero reported at the operator, and one comparison (== != < <= > >=,
 * 1 or 0) on top. dtype(v) and the names f32 and i32 are dtypes: they
 * compare with == and != only, and are never a number.
 *
 * Not here: deciding which YAML scalars are expressions (expand.c) or any
 * graph building; dim(), rank() and dtype() only read values in scope. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "expand.h"

#define MAX_EXPR_DEPTH 100

/* ---------------------------------------------------------------- helpers */

bool expr_is_ident(const char *s) {
  if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return false;
  return true;
}

/* The location of byte `off` of a scalar's text, when it can be known (a
 * scalar on one line); else the scalar's start. */
SrcLoc expr_loc(const YNode *n, int off) {
  SrcLoc l = n->loc;
  if (n->kind == YNODE_SCALAR && n->end_line == n->loc.line) l.col += off + (n->quoted ? 1 : 0);
  return l;
}

/* A number literal, all of `s`: integers stay integers. */
bool expr_parse_number(const char *s, Num *out) {
  if (!*s || strspn(s, "0123456789+-.eE") != strlen(s)) return false;
  char *end;
  errno = 0;
  bool is_float = strpbrk(s, ".eE") != NULL;
  if (!is_float) {
    long long v = strtoll(s, &end, 10);
    if (*end || errno) return false;
    *out = (Num){true, v, (double)v, false};
    return true;
  }
  double v = strtod(s, &end);
  if (*end || errno || !isfinite(v)) return false;
  *out = (Num){false, 0, v, false};
  return true;
}

/* -------------------------------------------------------- expressions */


Tok expr_lex(const char *s, int pos) {
  while (s[pos] == ' ' || s[pos] == '\t') pos++;
  Tok t = {TK_END, pos, 0, pos, 0};
  char ch = s[pos];
  if (!ch) return t;
  if (ch == '$' && s[pos + 1] == '(') { /* `$(expr)`: the `$` is decoration */
    t.k = TK_LP;
    t.len = 2;
    return t;
  }
  if (ch == '$' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
    int p = pos + (ch == '$');
    int start = p;
    while ((s[p] >= 'a' && s[p] <= 'z') || (s[p] >= 'A' && s[p] <= 'Z') ||
           (s[p] >= '0' && s[p] <= '9') || s[p] == '_')
      p++;
    bool ok = p > start && !(s[start] >= '0' && s[start] <= '9');
    t.k = ok ? TK_IDENT : TK_BAD;
    t.len = ok ? p - pos : 1;
    t.name = start;
    t.name_len = p - start;
    return t;
  }
  if ((ch >= '0' && ch <= '9') || (ch == '.' && s[pos + 1] >= '0' && s[pos + 1] <= '9')) {
    int p = pos;
    while (s[p] >= '0' && s[p] <= '9') p++;
    if (s[p] == '.') {
      p++;
      while (s[p] >= '0' && s[p] <= '9') p++;
    }
    if ((s[p] == 'e' || s[p] == 'E') &&
        ((s[p + 1] >= '0' && s[p + 1] <= '9') ||
         ((s[p + 1] == '-' || s[p + 1] == '+') && s[p + 2] >= '0' && s[p + 2] <= '9'))) {
      p += 2;
      while (s[p] >= '0' && s[p] <= '9') p++;
    }
    t.k = TK_NUM;
    t.len = p - pos;
    return t;
  }
  t.len = 1;
  switch (ch) {
  case '(': t.k = TK_LP; break;
  case ')': t.k = TK_RP; break;
  case ',': t.k = TK_COMMA; break;
  case '/':
    t.k = TK_OP;
    if (s[pos + 1] == '/') t.len = 2;
    break;
  case '+': case '-': case '*': case '%': t.k = TK_OP; break;
  case '<': case '>': /* < <= > >= */
    t.k = TK_CMP;
    if (s[pos + 1] == '=') t.len = 2;
    break;
  case '=': case '!': /* == != ('=' and '!' alone are not operators) */
    if (s[pos + 1] == '=') {
      t.k = TK_CMP;
      t.len = 2;
    } else {
      t.k = TK_BAD;
    }
    break;
  default: t.k = TK_BAD; break;
  }
  return t;
}

typedef struct {
  Ctx *c;
  Scope *env; /* may be NULL: hparams only */
  const YNode *n;
  const char *s; /* the text parsed: n's, or a part of it starting at byte base */
  int base;
  Tok t;
  int depth;
} ExprParser;


static bool expr_fail(ExprParser *p, int off, const char *fmt, ...) BC_PRINTF(3, 4);
static bool expr_fail(ExprParser *p, int off, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(p->c->d, expr_loc(p->n, p->base + off), fmt, ap);
  va_end(ap);
  return false;
}

static void advance(ExprParser *p) { p->t = expr_lex(p->s, p->t.pos + p->t.len); }

static bool syntax_error(ExprParser *p) {
  const Tok *t = &p->t;
  if (t->k == TK_END)
    return expr_fail(p, t->pos, "incomplete expression '%s'", p->s);
  if (t->k == TK_BAD)
    return expr_fail(p, t->pos, "unexpected character '%c' in expression '%s'", p->s[t->pos], p->s);
  return expr_fail(p, t->pos, "unexpected '%.*s' in expression '%s'", t->len, p->s + t->pos, p->s);
}

static bool parse_sum(ExprParser *p, Num *out);
static bool eval(Ctx *c, Scope *env, const YNode *n, int off, int len, Num *out);

/* A dtype where arithmetic needs a number: an error at byte `off`. */
static bool not_number(ExprParser *p, int off, Num v) {
  return expr_fail(p, off, "the dtype %s is not a number (dtypes compare with == and != only)",
                   dtype_name((DType)v.i));
}

/* The Value bound to the identifier token `t` in the parser's scope. */
static bool expr_value(ExprParser *p, const Tok *t, ValueId *v) {
  char *name = arena_printf(&p->c->arena, "%.*s", t->name_len, p->s + t->name);
  ValBind *b = p->env ? expand_scope_find(p->env, name) : NULL;
  if (!b) return expr_fail(p, t->pos, "undefined value '%s'", name);
  if (b->v == VID_POISON) return false; /* its error is already reported */
  *v = b->v;
  return true;
}

static bool parse_call(ExprParser *p, const Tok *fn, Num *out) {
  bool is_dim = fn->name_len == 3 && strncmp(p->s + fn->name, "dim", 3) == 0;
  bool is_rank = fn->name_len == 4 && strncmp(p->s + fn->name, "rank", 4) == 0;
  bool is_dtype = fn->name_len == 5 && strncmp(p->s + fn->name, "dtype", 5) == 0;
  if (!is_dim && !is_rank && !is_dtype) {
    char *name = arena_printf(&p->c->arena, "%.*s", fn->name_len, p->s + fn->name);
    return expr_fail(p, fn->pos, "unknown function '%s' (expected dim, rank or dtype)", name);
  }
  advance(p); /* ( */
  Tok arg = p->t;
  if (arg.k != TK_IDENT) return syntax_error(p);
  ValueId v = -1;
  if (!expr_value(p, &arg, &v)) return false;
  const Shape *sh = &p->c->g->values.data[v].shape;
  advance(p);
  if (is_rank || is_dtype) {
    if (p->t.k != TK_RP) return syntax_error(p);
    advance(p);
    if (is_dtype) *out = (Num){true, p->c->g->values.data[v].dtype, 0, true};
    else *out = (Num){true, sh->rank, sh->rank, false};
    return true;
  }
  if (p->t.k != TK_COMMA) return syntax_error(p);
  advance(p);
  int axis_pos = p->t.pos;
  Num ax;
  if (!parse_sum(p, &ax)) return false;
  if (p->t.k != TK_RP) return syntax_error(p);
  advance(p);
  if (!ax.is_int) return expr_fail(p, axis_pos, "dim(): the axis must be an integer");
  int64_t a = ax.i < 0 ? ax.i + sh->rank : ax.i;
  if (a < 0 || a >= sh->rank) {
    char b[96];
    return expr_fail(p, axis_pos, "dim(): axis %lld out of range for '%s' of shape %s",
                     (long long)ax.i, p->c->g->values.data[v].name, shape_str(sh, b));
  }
  *out = (Num){true, sh->dim[a], (double)sh->dim[a], false};
  return true;
}

static bool parse_primary(ExprParser *p, Num *out) {
  Tok t = p->t;
  if (t.k == TK_NUM) {
    char *txt = arena_printf(&p->c->arena, "%.*s", t.len, p->s + t.pos);
    if (!expr_parse_number(txt, out)) return expr_fail(p, t.pos, "bad number '%s'", txt);
    advance(p);
    return true;
  }
  if (t.k == TK_LP) {
    if (++p->depth > MAX_EXPR_DEPTH) return expr_fail(p, t.pos, "expression nested too deeply");
    advance(p);
    if (!parse_sum(p, out)) return false;
    if (p->t.k != TK_RP) return syntax_error(p);
    p->depth--;
    advance(p);
    return true;
  }
  if (t.k != TK_IDENT) return syntax_error(p);
  advance(p);
  if (p->t.k == TK_LP) return parse_call(p, &t, out);
  AttrBind *ab = expand_attr(p->env, p->s + t.name, (size_t)t.name_len);
  if (ab) {
    /* an attribute that failed once is reported once, not at every use */
    if (ab->failed) return false;
    if (eval(p->c, ab->env, ab->node, 0, -1, out)) return true;
    ab->failed = true;
    return false;
  }
  const HP *hp = expand_hparam(p->c, p->s + t.name, (size_t)t.name_len);
  if (hp) {
    if (p->c->hp_read) {
      bool seen = false;
      for (int i = 0; i < p->c->hp_read->n; i++) seen |= p->c->hp_read->data[i] == hp;
      if (!seen) vec_push(p->c->hp_read, hp);
    }
    *out = hp->value;
    return true;
  }
  char *name = arena_printf(&p->c->arena, "%.*s", t.name_len, p->s + t.name);
  DType dt;
  if (dtype_from_name(name, &dt)) {
    *out = (Num){true, dt, 0, true};
    return true;
  }
  return expr_fail(p, t.pos, "unknown name '%s' (not an hparam or block attribute)", name);
}

static bool parse_unary(ExprParser *p, Num *out) {
  if (p->t.k == TK_OP && p->t.len == 1 && (p->s[p->t.pos] == '-' || p->s[p->t.pos] == '+')) {
    bool neg = p->s[p->t.pos] == '-';
    int op_pos = p->t.pos;
    if (++p->depth > MAX_EXPR_DEPTH) return expr_fail(p, p->t.pos, "expression nested too deeply");
    advance(p);
    if (!parse_unary(p, out)) return false;
    if (out->is_dtype) return not_number(p, op_pos, *out);
    p->depth--;
    if (neg) {
      if (out->is_int && out->i == INT64_MIN) return expr_fail(p, p->t.pos, "integer overflow");
      out->i = -out->i;
      out->f = -out->f;
    }
    return true;
  }
  return parse_primary(p, out);
}

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

/* a (op) b for op in + - * / // %; integers stay integers where exact. */
static bool apply(ExprParser *p, int op_pos, const char *op, Num a, Num b, Num *out) {
  if (a.is_dtype || b.is_dtype) return not_number(p, op_pos, a.is_dtype ? a : b);
  bool ints = a.is_int && b.is_int;
  if ((op[0] == '/' || op[0] == '%') && expr_num_f(b) == 0)
    return expr_fail(p, op_pos, "division by zero in '%s'", p->s);
  if (ints) {
    int64_t r = 0;
    bool ovf = false;
    switch (op[0]) {
    case '+': ovf = __builtin_add_overflow(a.i, b.i, &r); break;
    case '-': ovf = __builtin_sub_overflow(a.i, b.i, &r); break;
    case '*': ovf = __builtin_mul_overflow(a.i, b.i, &r); break;
    case '%': r = a.i - floor_div(a.i, b.i) * b.i; break;
    case '/':
      if (op[1] == '/') {
        r = floor_div(a.i, b.i);
      } else if (a.i % b.i != 0) {
        *out = (Num){false, 0, (double)a.i / (double)b.i, false};
        return true;
      } else {
        r = a.i / b.i;
      }
      break;
    }
    if (ovf) return expr_fail(p, op_pos, "integer overflow in '%s'", p->s);
    *out = (Num){true, r, (double)r, false};
    return true;
  }
  double x = expr_num_f(a), y = expr_num_f(b), r = 0;
  switch (op[0]) {
  case '+': r = x + y; break;
  case '-': r = x - y; break;
  case '*': r = x * y; break;
  case '%': r = x - floor(x / y) * y; break;
  case '/': r = op[1] == '/' ? floor(x / y) : x / y; break;
  }
  if (!isfinite(r)) return expr_fail(p, op_pos, "the result of '%s' is not finite", p->s);
  *out = (Num){false, 0, r, false};
  return true;
}

static bool parse_product(ExprParser *p, Num *out) {
  if (!parse_unary(p, out)) return false;
  while (p->t.k == TK_OP && strchr("*/%", p->s[p->t.pos])) {
    char op[3] = {p->s[p->t.pos], p->t.len == 2 ? '/' : 0, 0};
    int op_pos = p->t.pos;
    advance(p);
    Num b;
    if (!parse_unary(p, &b)) return false;
    if (!apply(p, op_pos, op, *out, b, out)) return false;
  }
  return true;
}

static bool parse_sum(ExprParser *p, Num *out) {
  if (!parse_product(p, out)) return false;
  while (p->t.k == TK_OP && strchr("+-", p->s[p->t.pos])) {
    char op[2] = {p->s[p->t.pos], 0};
    int op_pos = p->t.pos;
    advance(p);
    Num b;
    if (!parse_product(p, &b)) return false;
    if (!apply(p, op_pos, op, *out, b, out)) return false;
  }
  return true;
}

/* sum [cmp sum]: one comparison, 1 when it holds, else 0 (no chains). */
static bool parse_compare(ExprParser *p, Num *out) {
  if (!parse_sum(p, out)) return false;
  if (p->t.k != TK_CMP) return true;
  const char *op = p->s + p->t.pos;
  int op_pos = p->t.pos, len = p->t.len;
  advance(p);
  Num b;
  if (!parse_sum(p, &b)) return false;
  bool eq_ne = op[0] == '=' || op[0] == '!';
  if (out->is_dtype != b.is_dtype) {
    Num d = out->is_dtype ? *out : b;
    return expr_fail(p, op_pos, "cannot compare the dtype %s with a number", dtype_name((DType)d.i));
  }
  if (out->is_dtype && !eq_ne)
    return expr_fail(p, op_pos, "dtypes compare with == and != only, not '%.*s'", len, op);
  int cmp; /* -1, 0, 1; integers compared exactly, values are finite */
  if (out->is_int && b.is_int) {
    cmp = (out->i > b.i) - (out->i < b.i);
  } else {
    double x = expr_num_f(*out), y = expr_num_f(b);
    cmp = (x > y) - (x < y);
  }
  bool r = false;
  switch (op[0]) {
  case '=': r = cmp == 0; break;
  case '!': r = cmp != 0; break;
  case '<': r = len == 2 ? cmp <= 0 : cmp < 0; break;
  case '>': r = len == 2 ? cmp >= 0 : cmp > 0; break;
  }
  *out = (Num){true, r, r, false};
  return true;
}

/* Evaluates bytes [off, off + len) of scalar `n`'s text (len < 0: to the
 * end) in scope `env`; the result may be a dtype. */
static bool eval(Ctx *c, Scope *env, const YNode *n, int off, int len, Num *out) {
  if (n->kind != YNODE_SCALAR) {
    diag_error(c->d, n->loc, "expected a number, got %s", ynode_kind_name(n->kind));
    return false;
  }
  /* quoted scalars are expressions too: `["dim(x, 0)", 4]` needs the quotes */
  if (ynode_is_null(n) || !n->text[0]) {
    diag_error(c->d, n->loc, "expected a number, got nothing");
    return false;
  }
  const char *t = len < 0 ? n->text + off : arena_printf(&c->arena, "%.*s", len, n->text + off);
  ExprParser p = {c, env, n, t, off, {0}, 0};
  /* `$expr`: a leading `$` before anything but a name only marks an expression */
  int start = t[0] == '$' && !((t[1] >= 'a' && t[1] <= 'z') || (t[1] >= 'A' && t[1] <= 'Z') || t[1] == '_');
  p.t = expr_lex(p.s, start);
  if (!parse_compare(&p, out)) return false;
  if (p.t.k != TK_END) return syntax_error(&p);
  return true;
}

/* Evaluates the scalar `n` as a number in scope `env` (NULL: hparams only). */
bool expr_num(Ctx *c, Scope *env, const YNode *n, Num *out) {
  if (!eval(c, env, n, 0, -1, out)) return false;
  if (out->is_dtype) {
    diag_error(c->d, n->loc, "expected a number, got the dtype %s", dtype_name((DType)out->i));
    return false;
  }
  return true;
}

bool expr_eval(Ctx *c, Scope *env, const YNode *n, int off, int len, Num *out) {
  return eval(c, env, n, off, len, out);
}

bool expr_int(Ctx *c, Scope *env, const YNode *n, const char *what, int64_t *out) {
  Num v;
  if (!expr_num(c, env, n, &v)) return false;
  if (!v.is_int) {
    if (v.f != floor(v.f) || fabs(v.f) > 9e15) {
      diag_error(c->d, n->loc, "%s must be an integer, got %g", what, v.f);
      return false;
    }
    v.i = (int64_t)v.f;
  }
  *out = v.i;
  return true;
}

/* Follows `$name` pass-throughs of block attributes to the node that gives
 * the value, and the scope that node is evaluated in. */
void expr_resolve(Scope **env, const YNode **n) {
  for (int guard = 0; guard < 1000; guard++) {
    const YNode *x = *n;
    if (x->kind != YNODE_SCALAR || x->text[0] != '$' || !expr_is_ident(x->text + 1)) return;
    const AttrBind *ab = expand_attr(*env, x->text + 1, strlen(x->text + 1));
    if (!ab) return;
    *n = ab->node;
    *env = ab->env;
  }
}

/* Text of a string attribute (dtype, init, like), `$name` resolved. */
const char *expr_str(Ctx *c, Scope **env, const YNode **n) {
  expr_resolve(env, n);
  const YNode *x = *n;
  if (x->kind != YNODE_SCALAR) {
    diag_error(c->d, x->loc, "expected a name, got %s", ynode_kind_name(x->kind));
    return NULL;
  }
  if (x->text[0] == '$') {
    diag_error(c->d, x->loc, "unknown attribute '%s'", x->text);
    return NULL;
  }
  return x->text;
}

