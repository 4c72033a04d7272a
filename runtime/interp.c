/* interp.c — the reference interpreter (`--device interp`): every value is a
 * double array, every op a naive loop. It is the oracle every other backend
 * and every gradient test is compared against, so it favours obviously
 * right over fast.
 *
 * Not here: fusion, memory planning, threads, or any f32 rounding (values
 * declared f32 are computed in double; i32 values hold exact integers and
 * every i32 result is truncated toward zero and wrapped to int32).
 *
 * Invariants: every value of the graph, intermediates included, has its own
 * buffer for the Exec's whole life (tests read intermediates); a run
 * computes the nodes in graph order and then applies the assigns in node
 * order; elementwise forwards are the `ref` expressions of graph/ops.def.
 * With data-parallel hooks (set_grad_sync, runtime/dist.c) every node is a
 * step, and gradients are all-reduced as doubles. */
#include "attention.h"
#include "backend.h"
#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

typedef struct {
  int n_values;
  double **buf; /* buf[v]: shape_numel(values[v].shape) doubles */
  bool have_sync; /* data-parallel hooks (runtime/dist.c); steps are nodes */
  GradSync sync;
} Interp;

/* ---- helpers ---------------------------------------------------------- */

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Truncates toward zero and wraps to int32 like a two's-complement int32
 * register; NaN and ±inf (i32 division by zero) become 0, pinning what C
 * leaves undefined. */
static double to_i32(double x) {
  if (isnan(x)) return 0.0;
  if (isinf(x)) return 0.0;
  double t = trunc(x);
  if (t >= -2147483648.0 && t <= 2147483647.0) return t;
  double m = fmod(t, 4294967296.0); /* (-2^32, 2^32) */
  if (m < 0) m += 4294967296.0;
  if (m >= 2147483648.0) m -= 4294967296.0;
  return m;
}

static void fix_dtype(double *x, int64_t n, DType t) {
  if (t != DTYPE_I32) return;
  for (int64_t i = 0; i < n; i++) x[i] = to_i32(x[i]);
}

/* Row-major strides of s. */
static void strides_of(const Shape *s, int64_t *st) {
  int64_t acc = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s->dim[i];
  }
}

/* Strides of `in` seen through numpy broadcasting to `out` (aligned right;
 * a size-1 or missing dim gets stride 0), in out's rank. */
static void bcast_strides(const Shape *in, const Shape *out, int64_t *st) {
  int64_t ist[BC_MAX_RANK];
  strides_of(in, ist);
  int off = out->rank - in->rank;
  BC_ASSERT(off >= 0);
  for (int i = 0; i < out->rank; i++) {
    int j = i - off;
    st[i] = (j < 0 || in->dim[j] == 1) ? 0 : ist[j];
  }
}

/* Advances the row-major multi-index idx over shape s (wraps to 0). */
static void next_index(int64_t *idx, const Shape *s) {
  for (int i = s->rank - 1; i >= 0; i--) {
    if (++idx[i] < s->dim[i]) return;
    idx[i] = 0;
  }
}

static int64_t dot_index(const int64_t *idx, const int64_t *st, int rank) {
  int64_t o = 0;
  for (int i = 0; i < rank; i++) o += idx[i] * st[i];
  return o;
}

/* Shape without its last `k` dims. */
static Shape drop_last(const Shape *s, int k) {
  Shape r = *s;
  r.rank = s->rank - k;
  return r;
}

/* ---- elementwise, from the op table ------------------------------------ */

static double eval_unary(Op op, double a) {
  switch (op) {
#define UNARY(ID, name, ref, ...) \
  case OP_##ID: \
    return (ref);
#include "../graph/ops.def"
  default:
    break;
  }
  BC_ASSERT(!"not a unary op");
  return 0;
}

static double eval_binary(Op op, double a, double b) {
  switch (op) {
#define BINARY(ID, name, ref, ...) \
  case OP_##ID: \
    return (ref);
#include "../graph/ops.def"
  default:
    break;
  }
  BC_ASSERT(!"not a binary op");
  return 0;
}

/* ---- the ops ----------------------------------------------------------- */

typedef struct {
  const Graph *g;
  Interp *in;
  const Node *n;
  const RunContext *ctx;
  Diag *d;
} Step;

static const Value *val(const Step *s, ValueId v) { return &s->g->values.data[v]; }
static double *buf(const Step *s, ValueId v) { return s->in->buf[v]; }

/* out[o] = op(x[bcast(o)], y[bcast(o)]); shapes broadcast numpy-style (the
 * loader makes them equal, but the oracle need not rely on it). */
static void run_elementwise(const Step *s) {
  const Node *n = s->n;
  const Shape *os = &val(s, n->out)->shape;
  double *o = buf(s, n->out);
  int64_t numel = shape_numel(os);
  int64_t st[3][BC_MAX_RANK], idx[BC_MAX_RANK] = {0};
  for (int k = 0; k < n->n_in; k++) bcast_strides(&val(s, n->in[k])->shape, os, st[k]);
  const double *x = buf(s, n->in[0]);
  const double *y = n->n_in > 1 ? buf(s, n->in[1]) : NULL;
  const double *z = n->n_in > 2 ? buf(s, n->in[2]) : NULL;
  for (int64_t i = 0; i < numel; i++) {
    double a = x[dot_index(idx, st[0], os->rank)];
    if (n->op == OP_SELECT) {
      double b = y[dot_index(idx, st[1], os->rank)];
      double c = z[dot_index(idx, st[2], os->rank)];
      o[i] = a != 0.0 ? b : c; /* (cond, a, b) */
    } else if (y) {
      o[i] = eval_binary(n->op, a, y[dot_index(idx, st[1], os->rank)]);
    } else {
      o[i] = eval_unary(n->op, a);
    }
    next_index(idx, os);
  }
}

static void run_copy(const Step *s) { /* cast, reshape: same element order */
  int64_t numel = shape_numel(&val(s, s->n->out)->shape);
  memcpy(buf(s, s->n->out), buf(s, s->n->in[0]), (size_t)numel * sizeof(double));
}

static void run_broadcast(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int64_t st[BC_MAX_RANK], idx[BC_MAX_RANK] = {0};
  bcast_strides(&val(s, s->n->in[0])->shape, os, st);
  const double *x = buf(s, s->n->in[0]);
  double *o = buf(s, s->n->out);
  int64_t numel = shape_numel(os);
  for (int64_t i = 0; i < numel; i++) {
    o[i] = x[dot_index(idx, st, os->rank)];
    next_index(idx, os);
  }
}

static void run_permute(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int64_t ist[BC_MAX_RANK], st[BC_MAX_RANK], idx[BC_MAX_RANK] = {0};
  strides_of(&val(s, s->n->in[0])->shape, ist);
  for (int i = 0; i < os->rank; i++) st[i] = ist[s->n->a.perm[i]]; /* out dim i walks in dim perm[i] */
  const double *x = buf(s, s->n->in[0]);
  double *o = buf(s, s->n->out);
  int64_t numel = shape_numel(os);
  for (int64_t i = 0; i < numel; i++) {
    o[i] = x[dot_index(idx, st, os->rank)];
    next_index(idx, os);
  }
}

/* Splits shape s around `axis` into (outer, s.dim[axis], inner). */
static void split_axis(const Shape *s, int axis, int64_t *outer, int64_t *inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < axis; i++) *outer *= s->dim[i];
  for (int i = axis + 1; i < s->rank; i++) *inner *= s->dim[i];
}

static void run_slice(const Step *s) {
  const Attrs *a = &s->n->a;
  const Shape *is = &val(s, s->n->in[0])->shape;
  int64_t outer, inner, len = a->end - a->start;
  split_axis(is, a->axis, &outer, &inner);
  const double *x = buf(s, s->n->in[0]);
  double *o = buf(s, s->n->out);
  for (int64_t p = 0; p < outer; p++)
    memcpy(o + p * len * inner, x + (p * is->dim[a->axis] + a->start) * inner,
           (size_t)(len * inner) * sizeof(double));
}

static void run_concat(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int axis = s->n->a.axis;
  int64_t outer, inner, at = 0;
  split_axis(os, axis, &outer, &inner);
  double *o = buf(s, s->n->out);
  for (int k = 0; k < s->n->n_in; k++) {
    int64_t len = val(s, s->n->in[k])->shape.dim[axis];
    const double *x = buf(s, s->n->in[k]);
    for (int64_t p = 0; p < outer; p++)
      memcpy(o + (p * os->dim[axis] + at) * inner, x + p * len * inner,
             (size_t)(len * inner) * sizeof(double));
    at += len;
  }
}

static void run_reduce(const Step *s) {
  const Shape *is = &val(s, s->n->in[0])->shape;
  int axis = s->n->a.axis;
  int64_t outer, inner, len = is->dim[axis];
  split_axis(is, axis, &outer, &inner);
  const double *x = buf(s, s->n->in[0]);
  double *o = buf(s, s->n->out);
  bool is_max = s->n->op == OP_REDUCE_MAX;
  for (int64_t p = 0; p < outer; p++)
    for (int64_t q = 0; q < inner; q++) {
      double acc = is_max ? -INFINITY : 0.0;
      for (int64_t r = 0; r < len; r++) {
        double v = x[(p * len + r) * inner + q];
        if (!is_max) acc += v;
        else if (isnan(v) || v > acc) acc = v; /* NaN sticks: a NaN is a bug to see */
        if (is_max && isnan(acc)) break;
      }
      o[p * inner + q] = acc;
    }
}

/* C[.., M, N] = op(A)[.., M, K] op(B)[.., K, N]; op transposes the last two
 * dims when trans_a / trans_b; batch dims broadcast numpy-style. */
static void run_matmul(const Step *s) {
  const Node *n = s->n;
  const Shape *as = &val(s, n->in[0])->shape, *bs = &val(s, n->in[1])->shape;
  const Shape *os = &val(s, n->out)->shape;
  BC_ASSERT(as->rank >= 2 && bs->rank >= 2 && os->rank >= 2);
  bool ta = n->a.trans_a, tb = n->a.trans_b;
  int64_t M = os->dim[os->rank - 2], N = os->dim[os->rank - 1];
  int64_t K = ta ? as->dim[as->rank - 2] : as->dim[as->rank - 1];
  Shape ob = drop_last(os, 2), ab = drop_last(as, 2), bb = drop_last(bs, 2);
  int64_t ast[BC_MAX_RANK], bst[BC_MAX_RANK], idx[BC_MAX_RANK] = {0};
  bcast_strides(&ab, &ob, ast); /* in units of whole matrices */
  bcast_strides(&bb, &ob, bst);
  const double *A = buf(s, n->in[0]), *B = buf(s, n->in[1]);
  double *C = buf(s, n->out);
  int64_t n_batch = shape_numel(&ob);
  for (int64_t bi = 0; bi < n_batch; bi++) {
    const double *Ab = A + dot_index(idx, ast, ob.rank) * M * K;
    const double *Bb = B + dot_index(idx, bst, ob.rank) * K * N;
    double *Cb = C + bi * M * N;
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double acc = 0.0;
        for (int64_t k = 0; k < K; k++) {
          double x = ta ? Ab[k * M + i] : Ab[i * K + k];
          double y = tb ? Bb[j * K + k] : Bb[k * N + j];
          acc += x * y;
        }
        Cb[i * N + j] = acc;
      }
    next_index(idx, &ob);
  }
}

/* Checks idx[i] against [0, rows); reports the first bad one. */
static bool check_index(const Step *s, double v, int64_t i, int64_t rows) {
  if (v >= 0 && v < (double)rows && v == trunc(v)) return true;
  diag_error(s->d, s->n->loc, "%s: index %.17g at position %lld of '%s' is out of range [0, %lld)",
             op_info[s->n->op].name, v, (long long)i, val(s, s->n->out)->name ? val(s, s->n->out)->name : "?",
             (long long)rows);
  return false;
}

/* (table [N, D..], idx [I..]) -> [I.., D..]. */
static bool run_gather(const Step *s) {
  const Shape *ts = &val(s, s->n->in[0])->shape;
  int64_t rows = ts->dim[0], row = shape_numel(ts) / (rows ? rows : 1);
  int64_t n_idx = shape_numel(&val(s, s->n->in[1])->shape);
  const double *t = buf(s, s->n->in[0]), *ix = buf(s, s->n->in[1]);
  double *o = buf(s, s->n->out);
  for (int64_t i = 0; i < n_idx; i++) {
    if (!check_index(s, ix[i], i, rows)) return false;
    memcpy(o + i * row, t + (int64_t)ix[i] * row, (size_t)row * sizeof(double));
  }
  return true;
}

/* (idx [I..], upd [I.., D..]) -> zeros [N, D..] += rows of upd. */
static bool run_scatter_add(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int64_t rows = os->dim[0], row = shape_numel(os) / (rows ? rows : 1);
  int64_t n_idx = shape_numel(&val(s, s->n->in[0])->shape);
  const double *ix = buf(s, s->n->in[0]), *u = buf(s, s->n->in[1]);
  double *o = buf(s, s->n->out);
  memset(o, 0, (size_t)shape_numel(os) * sizeof(double));
  for (int64_t i = 0; i < n_idx; i++) {
    if (!check_index(s, ix[i], i, rows)) return false;
    double *dst = o + (int64_t)ix[i] * row;
    for (int64_t j = 0; j < row; j++) dst[j] += u[i * row + j];
  }
  return true;
}

static void run_iota(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int64_t outer, inner, len = os->dim[s->n->a.axis];
  split_axis(os, s->n->a.axis, &outer, &inner);
  double *o = buf(s, s->n->out);
  int64_t numel = shape_numel(os);
  for (int64_t i = 0; i < numel; i++) o[i] = (double)((i / inner) % len);
}

/* Philox index of element i: example_offset * (elements per example) +
 * its row-major index over the key shape (random_key_map; see backend.h). */
static void run_random(const Step *s) {
  const Shape *os = &val(s, s->n->out)->shape;
  int64_t numel = shape_numel(os), stride[BC_MAX_RANK], per_example;
  bool plain = random_key_map(os, &s->n->a.key_shape, stride, &per_example);
  double *o = buf(s, s->n->out);
  for (int64_t i = 0; i < numel; i++) {
    int64_t k = i;
    if (!plain) {
      k = 0;
      for (int64_t d = os->rank - 1, rest = i; d >= 0; d--) {
        k += (rest % os->dim[d]) * stride[d];
        rest /= os->dim[d];
      }
    }
    uint64_t gi = (uint64_t)(k + s->ctx->example_offset * per_example);
    o[i] = philox_uniform(s->ctx->seed, s->ctx->step, s->n->a.key, gi);
  }
}

static void run_constant(const Step *s) {
  int64_t numel = shape_numel(&val(s, s->n->out)->shape);
  double *o = buf(s, s->n->out);
  for (int64_t i = 0; i < numel; i++) o[i] = s->n->a.scalar;
}

/* One node; false (with a diagnostic) on a data-dependent error. */
static bool run_node(const Step *s) {
  const Node *n = s->n;
  switch (n->op) {
#define UNARY(ID, ...) case OP_##ID:
#define BINARY(ID, ...) case OP_##ID:
#include "../graph/ops.def"
  case OP_SELECT:
    run_elementwise(s);
    break;
  case OP_CAST:
  case OP_RESHAPE:
    run_copy(s);
    break;
  case OP_BROADCAST:
    run_broadcast(s);
    break;
  case OP_PERMUTE:
    run_permute(s);
    break;
  case OP_SLICE:
    run_slice(s);
    break;
  case OP_CONCAT:
    run_concat(s);
    break;
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX:
    run_reduce(s);
    break;
  case OP_MATMUL:
    run_matmul(s);
    break;
  case OP_GATHER:
    if (!run_gather(s)) return false;
    break;
  case OP_SCATTER_ADD:
    if (!run_scatter_add(s)) return false;
    break;
  case OP_IOTA:
    run_iota(s);
    break;
  case OP_RANDOM:
    run_random(s);
    break;
  case OP_CONSTANT:
    run_constant(s);
    break;
  case OP_ATTENTION:
  case OP_ATTENTION_GRAD: {
    AttnDims a;
    attn_dims(&a, s->g, n, s->ctx);
    const double *q = buf(s, n->in[0]), *k = buf(s, n->in[1]), *v = buf(s, n->in[2]), *vl = buf(s, n->in[3]);
    if (n->op == OP_ATTENTION) attn_ref_forward(&a, q, k, v, vl, buf(s, n->out));
    else attn_ref_backward(&a, q, k, v, vl, buf(s, n->in[4]), buf(s, n->out));
    break;
  }
  case OP_ASSIGN: /* the output mirrors the new value; the update waits for the end of the run */
    run_copy(s);
    break;
  case OP_COUNT:
    BC_ASSERT(!"OP_COUNT is not an op");
  }
  const Value *o = val(s, n->out);
  fix_dtype(buf(s, n->out), shape_numel(&o->shape), o->dtype);
  return true;
}

/* ---- the Backend table ------------------------------------------------- */

static bool interp_supports_op(Op op) { return op >= 0 && op < OP_COUNT; }

static void interp_release(Exec *e) {
  Interp *in = e->impl;
  if (!in) return;
  if (in->have_sync) grad_sync_free(&in->sync);
  for (int i = 0; i < in->n_values; i++)
    if (!exec_shared_ptr(e, e->graph, i)) free(in->buf[i]);
  free(in->buf);
  free(in);
  e->impl = NULL;
}

static bool interp_prepare(Exec *e, Diag *d) {
  (void)d;
  const Graph *g = e->graph;
  Interp *in = bc_calloc(1, sizeof(*in));
  in->n_values = g->values.n;
  in->buf = bc_calloc((size_t)in->n_values, sizeof(double *));
  for (int v = 0; v < in->n_values; v++) {
    in->buf[v] = exec_shared_ptr(e, g, v);
    if (!in->buf[v]) in->buf[v] = bc_calloc((size_t)shape_numel(&g->values.data[v].shape), sizeof(double));
  }
  e->impl = in;
  return true;
}

static bool check_value(const Exec *e, ValueId v, Diag *d) {
  Interp *in = e->impl;
  if (v >= 0 && v < in->n_values) return true;
  diag_error(d, SRCLOC_NONE, "interp: value id %d out of range (graph has %d values)", (int)v,
             in->n_values);
  return false;
}

static bool interp_write(Exec *e, ValueId v, const void *src, DType host_t, Diag *d) {
  if (!check_value(e, v, d)) return false;
  const Value *val = &e->graph->values.data[v];
  int64_t numel = shape_numel(&val->shape);
  double *dst = ((Interp *)e->impl)->buf[v];
  for (int64_t i = 0; i < numel; i++) {
    switch (host_t) {
    case DTYPE_F32:
      dst[i] = ((const float *)src)[i];
      break;
    case DTYPE_I32:
      dst[i] = ((const int32_t *)src)[i];
      break;
    case DTYPE_F64:
      dst[i] = ((const double *)src)[i];
      break;
    }
  }
  fix_dtype(dst, numel, val->dtype);
  return true;
}

static bool interp_read(Exec *e, ValueId v, void *dst, DType host_t, Diag *d) {
  if (!check_value(e, v, d)) return false;
  int64_t numel = shape_numel(&e->graph->values.data[v].shape);
  const double *src = ((Interp *)e->impl)->buf[v];
  for (int64_t i = 0; i < numel; i++) {
    switch (host_t) {
    case DTYPE_F32:
      ((float *)dst)[i] = (float)src[i];
      break;
    case DTYPE_I32:
      ((int32_t *)dst)[i] = (int32_t)to_i32(src[i]);
      break;
    case DTYPE_F64:
      ((double *)dst)[i] = src[i];
      break;
    }
  }
  return true;
}

static bool interp_run(Exec *e, const RunContext *ctx, Diag *d) {
  const Graph *g = e->graph;
  Interp *in = e->impl;
  BC_ASSERT(in->n_values == g->values.n); /* the graph must not change after exec_create */
  const GradSync *sync = in->have_sync ? &in->sync : NULL;
  for (int i = 0; i < g->nodes.n; i++) {
    Step s = {g, in, &g->nodes.data[i], ctx, d};
    if (sync) grad_sync_before(sync, i, NULL);
    double t0 = sync && sync->hooks.step ? now_ns() : 0;
    if (!run_node(&s)) return false;
    if (sync) grad_sync_after(sync, i, op_info[s.n->op].name, t0, sync->hooks.step ? now_ns() : 0, NULL);
  }
  if (sync) grad_sync_end(sync, g->nodes.n, NULL);
  /* Assigns take effect after every node ran, in node order, so each node
   * of this step saw the old parameters. */
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op != OP_ASSIGN) continue;
    const Value *t = &g->values.data[n->in[0]];
    int64_t numel = shape_numel(&t->shape);
    BC_ASSERT(numel == shape_numel(&g->values.data[n->in[1]].shape));
    memcpy(in->buf[n->in[0]], in->buf[n->in[1]], (size_t)numel * sizeof(double));
    fix_dtype(in->buf[n->in[0]], numel, t->dtype);
  }
  return true;
}

static const GradBuckets *interp_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d) {
  Interp *in = e->impl;
  if (in->have_sync) grad_sync_free(&in->sync);
  in->have_sync = false;
  if (!h) return NULL;
  if (!grad_sync_init(&in->sync, e->graph, NULL, bucket_bytes, h, d)) return NULL;
  in->have_sync = true;
  return &in->sync.buckets;
}

static void *interp_value_ptr(Exec *e, ValueId v, DType *t) {
  *t = DTYPE_F64;
  return ((Interp *)e->impl)->buf[v];
}

const Backend backend_interp = {
    .name = "interp",
    .host_memory = true,
    .supports_op = interp_supports_op,
    .prepare = interp_prepare,
    .release = interp_release,
    .write = interp_write,
    .read = interp_read,
    .run = interp_run,
    .set_grad_sync = interp_set_grad_sync,
    .value_ptr = interp_value_ptr,
};
