/* cuda_expr.c — the text of values in the CUDA code generator: lines
 * (into the emitter's StrBuf), f32 and i32 literals that read back exactly, elementwise ops from
 * the `cuda` templates of graph/ops.def (and the wrapping i32 forms of the
 * prelude), view addresses, and one instruction's value or store at the
 * current point of a kernel.
 * Not here: loops, indices and launch shapes (cuda_kernels.c), the prelude
 * and the module (cuda_emit.c). Invariant: each value is one `const T x<i>`
 * declared in the scope the caller opened; nothing here opens a scope. */
#include "cuda_emit_internal.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

/* ---- lines and names ------------------------------------------------------------ */

void BC_PRINTF(2, 3) cuda_line(Em *E, const char *fmt, ...) {
  strbuf_printf(E->o, "%*s", 2 * E->ind, "");
  va_list ap;
  va_start(ap, fmt);
  strbuf_vprintf(E->o, fmt, ap);
  va_end(ap);
  strbuf_printf(E->o, "\n");
}

/* A name that can go into a comment: printable, no comment end. */
const char *cuda_commentable(const char *s) {
  if (!s || strstr(s, "*/")) return NULL;
  for (const char *c = s; *c; c++)
    if ((unsigned char)*c < 32 || *c == 127) return NULL;
  return s;
}

/* The graph value name a node or view stands for, or NULL without a graph. */
const char *cuda_node_value_name(const Em *E, NodeId id) {
  if (!E->g || id < 0 || id >= E->g->nodes.n) return NULL;
  ValueId v = E->g->nodes.data[id].out;
  return v >= 0 && v < E->g->values.n ? cuda_commentable(E->g->values.data[v].name) : NULL;
}
const char *cuda_view_value_name(const Em *E, int v) {
  ValueId id = view(E, v)->value;
  return E->g && id >= 0 && id < E->g->values.n ? cuda_commentable(E->g->values.data[id].name) : NULL;
}

/* ---- scalars ----------------------------------------------------------------------- */

/* An f32 literal that reads back as exactly x (%.9g round-trips a float). */
static void f32_literal(float x, char *b, size_t n) {
  if (isnan(x) || isinf(x)) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    snprintf(b, n, "__int_as_float(0x%08x)", bits);
    return;
  }
  char t[48];
  snprintf(t, sizeof t, "%.9g", (double)x);
  snprintf(b, n, "%s%sf", t, strpbrk(t, ".e") ? "" : ".0");
}

/* f32 -> i32 of a constant, as bc_f2i does on the device. */
static int32_t const_i32(double imm) {
  float x = (float)imm;
  if (!(fabsf(x) < 9223372036854775808.0f)) return 0;
  return (int32_t)(uint32_t)(uint64_t)(int64_t)x;
}

static void i32_literal(int32_t x, char *b, size_t n) {
  if (x == INT32_MIN) snprintf(b, n, "(-2147483647 - 1)");
  else snprintf(b, n, "%d", (int)x);
}

/* ---- elementwise ops: the `cuda` templates of graph/ops.def ------------------------ */

/* Template t with the identifiers `a` and `b` replaced by the operand
 * expressions a and c (numbers, other names and punctuation copied). False
 * when the result does not fit. */
static bool fill_template(const char *t, const char *a, const char *c, char *b, size_t n) {
  size_t len = 0;
  while (*t) {
    const char *s = t, *put = NULL;
    size_t k;
    if (isalpha((unsigned char)*t) || *t == '_') {
      while (isalnum((unsigned char)*t) || *t == '_') t++;
      if (t - s == 1 && *s == 'a') put = a;
      else if (t - s == 1 && *s == 'b') put = c;
    } else if (isdigit((unsigned char)*t) || *t == '.') { /* 1.0f, 0x1p-3f: one token */
      while (isalnum((unsigned char)*t) || *t == '.' || *t == '_') t++;
    } else {
      t++;
    }
    k = put ? strlen(put) : (size_t)(t - s);
    if (len + k + 1 > n) return false;
    memcpy(b + len, put ? put : s, k);
    len += k;
  }
  b[len] = 0;
  return true;
}

/* f32 expression of unary op on f32 operand expression a. */
static bool unary_f32(Op op, const char *a, char *b, size_t n) {
  switch (op) {
#define UNARY(ID, name, ref, cuda, ...) \
  case OP_##ID: return fill_template(cuda, a, "", b, n);
#include "../graph/ops.def"
  default: return false;
  }
}

/* f32 expression of binary op, or for i32 operands (t) the wrapping
 * integer forms of the prelude; other ops on i32 run in f32 and convert
 * back like a cast (kernel_eval.c). */
static bool binary_expr(Op op, DType t, const char *a, const char *c, char *b, size_t n) {
  if (t == DTYPE_I32) {
    switch (op) {
    case OP_ADD: return snprintf(b, n, "bc_add(%s, %s)", a, c) < (int)n;
    case OP_SUB: return snprintf(b, n, "bc_sub(%s, %s)", a, c) < (int)n;
    case OP_MUL: return snprintf(b, n, "bc_mul(%s, %s)", a, c) < (int)n;
    case OP_DIV: return snprintf(b, n, "bc_div(%s, %s)", a, c) < (int)n;
    case OP_MAX: return snprintf(b, n, "(%s >= %s ? %s : %s)", a, c, a, c) < (int)n;
    case OP_MIN: return snprintf(b, n, "(%s <= %s ? %s : %s)", a, c, a, c) < (int)n;
    case OP_LT: return snprintf(b, n, "(%s < %s ? 1 : 0)", a, c) < (int)n;
    case OP_EQ: return snprintf(b, n, "(%s == %s ? 1 : 0)", a, c) < (int)n;
    default: {
      char fa[48], fc[48], fx[400];
      snprintf(fa, sizeof fa, "(float)%s", a);
      snprintf(fc, sizeof fc, "(float)%s", c);
      return binary_expr(op, DTYPE_F32, fa, fc, fx, sizeof fx) && snprintf(b, n, "bc_f2i(%s)", fx) < (int)n;
    }
    }
  }
  switch (op) {
#define BINARY(ID, name, ref, cuda, ...) \
  case OP_##ID: return fill_template(cuda, a, c, b, n);
#include "../graph/ops.def"
  default: return false;
  }
}

/* ---- addresses and values ------------------------------------------------------------- */

/* The element index of view v at the current point: its base p<v> (offset
 * and the outer indices), plus the col_axis term in column kernels, plus
 * the last-axis term. */
static void addr(const Em *E, int v, char *b, size_t n) {
  const KView *w = view(E, v);
  int len = snprintf(b, n, "p%d", v);
  int c = E->k->col_axis;
  if (c >= 0 && w->stride[c] != 0)
    len += snprintf(b + len, n - (size_t)len, " + i%d * %lld", c, (long long)w->stride[c]);
  int64_t s = lstride(E, v);
  if (s == 1) snprintf(b + len, n - (size_t)len, " + %s", E->jx);
  else if (s != 0) snprintf(b + len, n - (size_t)len, " + %s * %lld", E->jx, (long long)s);
}

static void opnd(int o, char *b, size_t n) { snprintf(b, n, "x%d", o); }

/* Declares x<i> = the value of instruction i (not a reduce or store) at the
 * current point. Loads of vectorized views read lane e of q<i>. */
void cuda_emit_value(Em *E, int i) {
  const KInst *in = inst(E, i);
  char ex[1536], a[32], b2[32], c3[32], t[96];
  opnd(in->a, a, sizeof a);
  opnd(in->b, b2, sizeof b2);
  opnd(in->c, c3, sizeof c3);
  bool isi = in->dtype == DTYPE_I32;
  switch (in->kind) {
  case KI_LOAD:
    if (E->lanes && lstride(E, in->view) == 1) {
      snprintf(ex, sizeof ex, "bc_lane(q%d, e)", i);
    } else {
      char ad[160];
      addr(E, in->view, ad, sizeof ad);
      snprintf(ex, sizeof ex, "v%d[%s]", in->view, ad);
    }
    break;
  case KI_CONST:
    if (isi) i32_literal(const_i32(in->imm), ex, sizeof ex);
    else f32_literal((float)in->imm, ex, sizeof ex);
    break;
  case KI_UNARY: {
    bool ok;
    if (!isi) ok = unary_f32(in->op, a, ex, sizeof ex);
    else if (in->op == OP_NEG) ok = snprintf(ex, sizeof ex, "bc_neg(%s)", a) > 0;
    else if (in->op == OP_RELU) ok = snprintf(ex, sizeof ex, "(%s > 0 ? %s : 0)", a, a) > 0;
    else { /* transcendental ops on i32: in f32, converted back like a cast */
      char fa[48], fx[400];
      snprintf(fa, sizeof fa, "(float)%s", a);
      ok = unary_f32(in->op, fa, fx, sizeof fx);
      snprintf(ex, sizeof ex, "bc_f2i(%s)", fx);
    }
    if (!ok) cuda_em_error(E, i, "unary op without a CUDA form");
    break;
  }
  case KI_BINARY:
    if (!binary_expr(in->op, inst(E, in->a)->dtype, a, b2, ex, sizeof ex)) cuda_em_error(E, i, "binary op without a CUDA form");
    break;
  case KI_SELECT:
    snprintf(ex, sizeof ex, "(%s != %s ? %s : %s)", a, inst(E, in->a)->dtype == DTYPE_I32 ? "0" : "0.0f", b2, c3);
    break;
  case KI_CAST: {
    DType from = inst(E, in->a)->dtype;
    if (from == in->dtype) snprintf(ex, sizeof ex, "%s", a);
    else if (isi) snprintf(ex, sizeof ex, "bc_f2i(%s)", a);
    else snprintf(ex, sizeof ex, "(float)%s", a);
    break;
  }
  case KI_IOTA: {
    const char *ix = E->rank == 0 ? "0" : in->axis == E->rank - 1 ? E->jx : NULL;
    char nm[16];
    if (!ix) {
      snprintf(nm, sizeof nm, "i%d", in->axis);
      ix = nm;
    }
    snprintf(ex, sizeof ex, "(%s)%s", ctype(in->dtype), ix);
    break;
  }
  case KI_RANDOM: {
    /* the Philox index of the point: its linear index, or (keyed by a
     * padded shape) its coordinates over the key strides */
    char key[1024];
    int64_t stride[BC_MAX_RANK], per;
    if (random_key_map(&E->k->domain, &E->k->key_shape, stride, &per)) {
      snprintf(key, sizeof key, "(long long)(%s)", E->lin);
    } else {
      int len = snprintf(key, sizeof key, "(");
      int64_t rm = 1;
      for (int d = E->rank - 1; d >= 0; d--) {
        len += snprintf(key + len, sizeof key - (size_t)len, "%s((long long)(%s) / %lldll %% %lldll) * %lldll",
                        d == E->rank - 1 ? "" : " + ", E->lin, (long long)rm, (long long)E->k->domain.dim[d],
                        (long long)stride[d]);
        rm *= E->k->domain.dim[d];
      }
      snprintf(key + len, sizeof key - (size_t)len, ")");
    }
    snprintf(ex, sizeof ex, "bc_uniform(seed, step, 0x%08xu, (unsigned long long)(%s + exb))", (unsigned)in->key, key);
    break;
  }
  case KI_REDUCE:
  case KI_STORE: BC_ASSERT(!"reduce and store are emitted by their loops");
  }
  const char *nm = cuda_node_value_name(E, in->node);
  t[0] = 0;
  if (nm && in->kind != KI_LOAD) snprintf(t, sizeof t, "  // %s", nm);
  cuda_line(E, "const %s x%d = %s;%s", ctype(in->dtype), i, ex, t);
}

/* Stores instruction i's operand at the current point. */
void cuda_emit_store(Em *E, int i) {
  const KInst *in = inst(E, i);
  char ad[160];
  addr(E, in->view, ad, sizeof ad);
  const char *nm = cuda_node_value_name(E, in->node);
  if (!nm) nm = cuda_view_value_name(E, in->view);
  if (nm) cuda_line(E, "v%d[%s] = x%d;  // %s", in->view, ad, in->a, nm);
  else cuda_line(E, "v%d[%s] = x%d;", in->view, ad, in->a);
}
