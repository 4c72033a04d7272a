/* shape.c — shapes: the Shape helpers (element count, equality,
 * broadcasting, printing), the dtype and shape rule of every op, and the
 * matmul layout the GEMM libraries are called with. The rules are called by
 * graph_op when a node is made and by graph_verify on every node after each
 * pass. Errors are user errors located at the node's YAML line (the loader
 * sets the location); they name the op and the shapes involved. Negative
 * axes are normalized. Nothing here builds or changes a graph. */
#include "ir.h"

#include <stdio.h>
#include <string.h>

/* ---- Shape helpers ------------------------------------------------------ */

int64_t shape_numel(const Shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

bool shape_eq(const Shape *a, const Shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

bool random_key_map(const Shape *s, const Shape *key, int64_t stride[], int64_t *per_example) {
  const Shape *k = key->rank > 0 ? key : s;
  BC_ASSERT(k->rank == s->rank);
  int64_t m = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    stride[d] = m;
    m *= k->dim[d];
  }
  *per_example = s->rank >= 1 && s->dim[0] > 0 ? (k->dim[0] > 0 ? m / k->dim[0] : 0) : 0;
  for (int d = 1; d < s->rank; d++)
    if (k->dim[d] != s->dim[d]) return false;
  return true;
}

int64_t shape_slice_offset(const Shape *s, int axis, int64_t start) {
  for (int d = 0; d < axis; d++)
    if (s->dim[d] != 1) return -1;
  int64_t inner = 1;
  for (int d = axis + 1; d < s->rank; d++) inner *= s->dim[d];
  return start * inner;
}

Shape shape_of(int rank, ...) {
  BC_ASSERT(rank >= 0 && rank <= BC_MAX_RANK);
  Shape s = {0};
  s.rank = rank;
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) s.dim[i] = va_arg(ap, int);
  va_end(ap);
  return s;
}

char *shape_str(const Shape *s, char *buf) {
  int n = sprintf(buf, "[");
  for (int i = 0; i < s->rank; i++)
    n += sprintf(buf + n, "%s%lld", i ? ", " : "", (long long)s->dim[i]);
  sprintf(buf + n, "]");
  return buf;
}

bool shape_broadcast(const Shape *a, const Shape *b, Shape *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  Shape s = {0};
  s.rank = r;
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    s.dim[i] = da == 1 ? db : da;
  }
  *out = s;
  return true;
}

/* ---- shape rules -------------------------------------------------------- */


#define V(i) (&g->values.data[in[i]])

static bool fail(Diag *d, SrcLoc loc, const char *fmt, ...) BC_PRINTF(3, 4);
static bool fail(Diag *d, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, loc, fmt, ap);
  va_end(ap);
  return false;
}

static bool norm_axis(int *axis, int rank, const char *op, SrcLoc loc, Diag *d) {
  int a = *axis < 0 ? *axis + rank : *axis;
  if (a < 0 || a >= rank)
    return fail(d, loc, "%s: axis %d out of range for rank %d", op, *axis, rank);
  *axis = a;
  return true;
}

static bool check_shape_attr(const Shape *s, const char *op, SrcLoc loc, Diag *d) {
  if (s->rank < 0 || s->rank > BC_MAX_RANK)
    return fail(d, loc, "%s: rank %d not supported (at most %d)", op, s->rank, BC_MAX_RANK);
  for (int i = 0; i < s->rank; i++)
    if (s->dim[i] <= 0) {
      char b[96];
      return fail(d, loc, "%s: shape %s has a dimension < 1", op, shape_str(s, b));
    }
  return true;
}

bool shape_infer(const Graph *g, Op op, int n_in, const ValueId *in, Attrs *a, DType *out_t,
                 Shape *out_s, SrcLoc loc, Diag *d) {
  const char *name = op_info[op].name;
  char b0[96], b1[96], b2[96];
  int want = op_info[op].n_in;
  if (want >= 0 && n_in != want)
    return fail(d, loc, "%s takes %d input%s, got %d", name, want, want == 1 ? "" : "s", n_in);
  if (want < 0 && n_in < 1) return fail(d, loc, "%s takes at least 1 input, got 0", name);

  unsigned f = op_info[op].flags;
  if (f & OPF_UNARY) {
    if (V(0)->dtype != DTYPE_F32 && op != OP_NEG)
      return fail(d, loc, "%s needs an f32 input, got %s", name, dtype_name(V(0)->dtype));
    *out_t = V(0)->dtype;
    *out_s = V(0)->shape;
    return true;
  }
  if (f & OPF_BINARY) {
    if (V(0)->dtype != V(1)->dtype)
      return fail(d, loc, "%s: dtypes differ (%s and %s)", name, dtype_name(V(0)->dtype),
                  dtype_name(V(1)->dtype));
    if (!shape_eq(&V(0)->shape, &V(1)->shape))
      return fail(d, loc, "%s: shapes %s and %s differ", name, shape_str(&V(0)->shape, b0),
                  shape_str(&V(1)->shape, b1));
    *out_t = V(0)->dtype;
    *out_s = V(0)->shape;
    return true;
  }

  switch (op) {
  case OP_SELECT:
    if (!shape_eq(&V(0)->shape, &V(1)->shape) || !shape_eq(&V(1)->shape, &V(2)->shape))
      return fail(d, loc, "select: shapes %s, %s and %s differ", shape_str(&V(0)->shape, b0),
                  shape_str(&V(1)->shape, b1), shape_str(&V(2)->shape, b2));
    if (V(1)->dtype != V(2)->dtype)
      return fail(d, loc, "select: dtypes differ (%s and %s)", dtype_name(V(1)->dtype),
                  dtype_name(V(2)->dtype));
    *out_t = V(1)->dtype;
    *out_s = V(1)->shape;
    return true;

  case OP_CAST:
    if (a->dtype != DTYPE_F32 && a->dtype != DTYPE_I32)
      return fail(d, loc, "cast: target dtype must be f32 or i32");
    *out_t = a->dtype;
    *out_s = V(0)->shape;
    return true;

  case OP_BROADCAST: {
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    const Shape *s = &V(0)->shape;
    bool ok = s->rank <= a->shape.rank;
    for (int i = 0; ok && i < s->rank; i++) {
      int64_t dd = a->shape.dim[a->shape.rank - s->rank + i];
      if (s->dim[i] != dd && s->dim[i] != 1) ok = false;
    }
    if (!ok)
      return fail(d, loc, "broadcast: cannot broadcast %s to %s", shape_str(s, b0),
                  shape_str(&a->shape, b1));
    *out_t = V(0)->dtype;
    *out_s = a->shape;
    return true;
  }

  case OP_RESHAPE:
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    if (shape_numel(&a->shape) != shape_numel(&V(0)->shape))
      return fail(d, loc, "reshape: %s has %lld elements, %s has %lld", shape_str(&V(0)->shape, b0),
                  (long long)shape_numel(&V(0)->shape), shape_str(&a->shape, b1),
                  (long long)shape_numel(&a->shape));
    *out_t = V(0)->dtype;
    *out_s = a->shape;
    return true;

  case OP_PERMUTE: {
    const Shape *s = &V(0)->shape;
    bool seen[BC_MAX_RANK] = {0};
    for (int i = 0; i < s->rank; i++) {
      int p = a->perm[i];
      if (p < 0 || p >= s->rank || seen[p]) {
        char pb[64];
        int n = 0;
        for (int j = 0; j < s->rank; j++) n += snprintf(pb + n, sizeof pb - (size_t)n, "%s%d", j ? ", " : "", a->perm[j]);
        return fail(d, loc, "permute: [%s] is not a permutation of %d axes", pb, s->rank);
      }
      seen[p] = true;
    }
    Shape o = *s;
    for (int i = 0; i < s->rank; i++) o.dim[i] = s->dim[a->perm[i]];
    for (int i = s->rank; i < BC_MAX_RANK; i++) a->perm[i] = 0;
    *out_t = V(0)->dtype;
    *out_s = o;
    return true;
  }

  case OP_SLICE: {
    const Shape *s = &V(0)->shape;
    if (!norm_axis(&a->axis, s->rank, name, loc, d)) return false;
    int64_t n = s->dim[a->axis];
    if (a->start < 0 || a->end > n || a->start >= a->end)
      return fail(d, loc, "slice: [%lld, %lld) is not a non-empty range within axis %d of %s",
                  (long long)a->start, (long long)a->end, a->axis, shape_str(s, b0));
    Shape o = *s;
    o.dim[a->axis] = a->end - a->start;
    *out_t = V(0)->dtype;
    *out_s = o;
    return true;
  }

  case OP_CONCAT: {
    Shape o = V(0)->shape;
    if (!norm_axis(&a->axis, o.rank, name, loc, d)) return false;
    int64_t total = 0;
    for (int i = 0; i < n_in; i++) {
      const Shape *s = &V(i)->shape;
      bool ok = s->rank == o.rank && V(i)->dtype == V(0)->dtype;
      for (int j = 0; ok && j < o.rank; j++)
        if (j != a->axis && s->dim[j] != o.dim[j]) ok = false;
      if (!ok)
        return fail(d, loc, "concat: input %d %s %s does not match %s %s except on axis %d", i,
                    dtype_name(V(i)->dtype), shape_str(s, b0), dtype_name(V(0)->dtype),
                    shape_str(&o, b1), a->axis);
      total += s->dim[a->axis];
    }
    o.dim[a->axis] = total;
    *out_t = V(0)->dtype;
    *out_s = o;
    return true;
  }

  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX: {
    Shape o = V(0)->shape;
    if (!norm_axis(&a->axis, o.rank, name, loc, d)) return false;
    o.dim[a->axis] = 1;
    *out_t = V(0)->dtype;
    *out_s = o;
    return true;
  }

  case OP_MATMUL: {
    const Shape *x = &V(0)->shape, *y = &V(1)->shape;
    if (V(0)->dtype != DTYPE_F32 || V(1)->dtype != DTYPE_F32)
      return fail(d, loc, "matmul needs f32 inputs");
    if (x->rank < 2 || y->rank < 2)
      return fail(d, loc, "matmul needs inputs of rank >= 2, got %s and %s", shape_str(x, b0),
                  shape_str(y, b1));
    int64_t m = a->trans_a ? x->dim[x->rank - 1] : x->dim[x->rank - 2];
    int64_t k1 = a->trans_a ? x->dim[x->rank - 2] : x->dim[x->rank - 1];
    int64_t k2 = a->trans_b ? y->dim[y->rank - 1] : y->dim[y->rank - 2];
    int64_t nn = a->trans_b ? y->dim[y->rank - 2] : y->dim[y->rank - 1];
    if (k1 != k2)
      return fail(d, loc, "matmul: inner dimensions differ: %s%s x %s%s (%lld vs %lld)",
                  shape_str(x, b0), a->trans_a ? "^T" : "", shape_str(y, b1),
                  a->trans_b ? "^T" : "", (long long)k1, (long long)k2);
    Shape bx = *x, by = *y, bo;
    bx.rank -= 2;
    by.rank -= 2;
    if (!shape_broadcast(&bx, &by, &bo))
      return fail(d, loc, "matmul: batch dimensions of %s and %s do not broadcast",
                  shape_str(x, b0), shape_str(y, b1));
    if (bo.rank + 2 > BC_MAX_RANK) return fail(d, loc, "matmul: rank too large");
    bo.dim[bo.rank] = m;
    bo.dim[bo.rank + 1] = nn;
    bo.rank += 2;
    *out_t = DTYPE_F32;
    *out_s = bo;
    return true;
  }

  case OP_GATHER: {
    const Shape *t = &V(0)->shape, *ix = &V(1)->shape;
    if (V(1)->dtype != DTYPE_I32) return fail(d, loc, "gather: indices must be i32");
    if (t->rank < 1) return fail(d, loc, "gather: table must have rank >= 1");
    if (ix->rank + t->rank - 1 > BC_MAX_RANK) return fail(d, loc, "gather: result rank too large");
    Shape o = *ix;
    for (int i = 1; i < t->rank; i++) o.dim[o.rank++] = t->dim[i];
    *out_t = V(0)->dtype;
    *out_s = o;
    return true;
  }

  case OP_SCATTER_ADD: {
    const Shape *ix = &V(0)->shape, *u = &V(1)->shape;
    if (V(0)->dtype != DTYPE_I32) return fail(d, loc, "scatter_add: indices must be i32");
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    bool ok = a->shape.rank >= 1 && u->rank == ix->rank + a->shape.rank - 1;
    for (int i = 0; ok && i < ix->rank; i++)
      if (u->dim[i] != ix->dim[i]) ok = false;
    for (int i = 1; ok && i < a->shape.rank; i++)
      if (u->dim[ix->rank + i - 1] != a->shape.dim[i]) ok = false;
    if (!ok)
      return fail(d, loc, "scatter_add: updates %s do not fit indices %s into %s", shape_str(u, b0),
                  shape_str(ix, b1), shape_str(&a->shape, b2));
    *out_t = V(1)->dtype;
    *out_s = a->shape;
    return true;
  }

  case OP_IOTA:
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    if (!norm_axis(&a->axis, a->shape.rank, name, loc, d)) return false;
    if (a->dtype == DTYPE_F64) return fail(d, loc, "iota: dtype must be f32 or i32");
    *out_t = a->dtype;
    *out_s = a->shape;
    return true;

  case OP_RANDOM:
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    if (a->key_shape.rank > 0) {
      bool fits = a->key_shape.rank == a->shape.rank;
      for (int i = 0; fits && i < a->shape.rank; i++) fits = a->key_shape.dim[i] >= a->shape.dim[i];
      if (!fits) return fail(d, loc, "random: key_shape must have the rank of shape and dims no smaller");
    }
    *out_t = DTYPE_F32;
    *out_s = a->shape;
    return true;

  case OP_CONSTANT:
    if (!check_shape_attr(&a->shape, name, loc, d)) return false;
    if (a->dtype == DTYPE_F64) return fail(d, loc, "constant: dtype must be f32 or i32");
    *out_t = a->dtype;
    *out_s = a->shape;
    return true;

  case OP_ATTENTION:
  case OP_ATTENTION_GRAD: {
    const Shape *q = &V(0)->shape, *k = &V(1)->shape, *v = &V(2)->shape, *vl = &V(3)->shape;
    for (int i = 0; i < 3; i++)
      if (V(i)->dtype != DTYPE_F32) return fail(d, loc, "%s: q, k and v must be f32", name);
    if (q->rank != 3 || k->rank != 3 || v->rank != 3)
      return fail(d, loc, "%s: q, k and v must be [batch, length, features], got %s %s %s", name,
                  shape_str(q, b0), shape_str(k, b1), shape_str(v, b2));
    if (k->dim[0] != q->dim[0] || v->dim[0] != q->dim[0] || k->dim[2] != q->dim[2] || !shape_eq(k, v))
      return fail(d, loc, "%s: q %s, k %s and v %s disagree (same batch and features; k and v the same shape)",
                  name, shape_str(q, b0), shape_str(k, b1), shape_str(v, b2));
    if (V(3)->dtype != DTYPE_I32 || vl->rank != 1 || vl->dim[0] != q->dim[0])
      return fail(d, loc, "%s: valid_len must be i32 [%lld], got %s %s", name, (long long)q->dim[0],
                  dtype_name(V(3)->dtype), shape_str(vl, b0));
    if (a->heads < 1 || q->dim[2] % a->heads != 0)
      return fail(d, loc, "%s: heads (%d) must be at least 1 and divide the features (%lld)", name, a->heads,
                  (long long)q->dim[2]);
    if (!(a->dropout >= 0 && a->dropout < 1))
      return fail(d, loc, "%s: dropout must be in [0, 1), got %g", name, a->dropout);
    /* the weights' shape, which keys the dropout stream like a random op's */
    a->shape.rank = 4;
    a->shape.dim[0] = q->dim[0];
    a->shape.dim[1] = a->heads;
    a->shape.dim[2] = q->dim[1];
    a->shape.dim[3] = k->dim[1];
    *out_t = DTYPE_F32;
    *out_s = *q;
    if (op == OP_ATTENTION_GRAD) {
      if (!shape_eq(&V(4)->shape, q) || V(4)->dtype != DTYPE_F32)
        return fail(d, loc, "%s: the output gradient must be f32 %s", name, shape_str(q, b0));
      /* rows: d q [B*Tq, F], then d k and d v [B*Tk, F] each */
      out_s->rank = 2;
      out_s->dim[0] = q->dim[0] * (q->dim[1] + 2 * k->dim[1]);
      out_s->dim[1] = q->dim[2];
    }
    return true;
  }

  case OP_ASSIGN:
    if (V(0)->kind != VALUE_PARAM && V(0)->kind != VALUE_STATE)
      return fail(d, loc, "assign: target '%s' is not a parameter or state", V(0)->name);
    if (V(0)->dtype != V(1)->dtype || !shape_eq(&V(0)->shape, &V(1)->shape))
      return fail(d, loc, "assign: %s %s := %s %s", dtype_name(V(0)->dtype),
                  shape_str(&V(0)->shape, b0), dtype_name(V(1)->dtype), shape_str(&V(1)->shape, b1));
    *out_t = V(0)->dtype;
    *out_s = V(0)->shape;
    return true;

  default: break;
  }
  BC_ASSERT(!"shape rule missing for op");
  return false;
}

/* Strides (in whole matrices) of batch shape `in` broadcast to `out`
 * (numpy: aligned right, size-1 or missing dims get stride 0). */
static void batch_strides(const Shape *in, int in_rank, const Shape *out, int out_rank, int64_t *st) {
  int64_t acc = 1;
  for (int i = out_rank - 1; i >= 0; i--) {
    int ii = i - (out_rank - in_rank);
    if (ii < 0) {
      st[i] = 0;
      continue;
    }
    int64_t d = in->dim[ii];
    BC_ASSERT(d == out->dim[i] || d == 1);
    st[i] = d == 1 ? 0 : acc;
    acc *= d;
  }
}

void shape_matmul_layout(const Shape *as, bool trans_a, const Shape *bs, bool trans_b, const Shape *cs,
                         MatmulLayout *l) {
  BC_ASSERT(as->rank >= 2 && bs->rank >= 2 && cs->rank >= 2);
  memset(l, 0, sizeof(*l));
  int64_t M = cs->dim[cs->rank - 2], N = cs->dim[cs->rank - 1];
  int64_t K = trans_a ? as->dim[as->rank - 2] : as->dim[as->rank - 1];
  BC_ASSERT((trans_a ? as->dim[as->rank - 1] : as->dim[as->rank - 2]) == M);
  BC_ASSERT((trans_b ? bs->dim[bs->rank - 1] : bs->dim[bs->rank - 2]) == K);
  BC_ASSERT((trans_b ? bs->dim[bs->rank - 2] : bs->dim[bs->rank - 1]) == N);
  int r = cs->rank - 2;
  int64_t ast[BC_MAX_RANK], bst[BC_MAX_RANK];
  batch_strides(as, as->rank - 2, cs, r, ast);
  batch_strides(bs, bs->rank - 2, cs, r, bst);
  int t = r;
  int64_t fold = 1;
  if (!trans_a) {
    while (t > 0) {
      int64_t d = cs->dim[t - 1];
      if (d != 1 && !(bst[t - 1] == 0 && ast[t - 1] == fold)) break;
      fold *= d;
      t--;
    }
  }
  l->M = M * fold;
  l->M_unfolded = M;
  l->N = N;
  l->K = K;
  l->n_batch_dims = t;
  for (int i = 0; i < t; i++) {
    l->dim[i] = cs->dim[i];
    l->a_stride[i] = ast[i] * M * K; /* matrices -> elements (A's own M, unfolded) */
    l->b_stride[i] = bst[i] * K * N;
  }
}
