/* kernel_eval.c — reference evaluator of KERNEL_LOOP kernels (kernel_eval.h):
 * scalar loops in f32 / i32 over the work items of the CPU ABI, following
 * kernel.h's semantics literally. The numerics are stated in kernel_eval.h.
 *
 * Row kernels (col_axis < 0) evaluate one row at a time, one instruction at
 * a time over the whole row: a full value keeps L = domain[rank-1] numbers,
 * a row value one (computed at last index 0), so multi-phase rows (layer
 * norm: mean, then variance) need no phase analysis here. Column kernels
 * (col_axis >= 0) evaluate point by point: for each output point the
 * instructions that do not depend on a reduction run for every index k of
 * col_axis (accumulating), then the rest run once at k = 0.
 *
 * Not here: speed (it is the oracle and a fallback), threads, non-LOOP
 * kernels. Invariant: nothing in this file includes runtime/. */
#include "kernel_eval.h"

#include <math.h>
#include <string.h>

/* A switch over Op that misses a row is a compile error, not a silent gap. */
#pragma GCC diagnostic error "-Wswitch"

typedef union {
  float f;
  int32_t i;
} Num;

/* ---- Philox4x32-10 (the layout of runtime/philox.h) -------------------- */

float kernel_eval_philox_uniform(uint64_t seed, uint32_t step, uint32_t op_key, uint64_t index) {
  uint64_t c = index >> 2; /* word index % 4 of counter index / 4 */
  uint32_t c0 = (uint32_t)c, c1 = (uint32_t)(c >> 32), c2 = op_key, c3 = step;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    if (r > 0) { /* the key is bumped between rounds, never before the first */
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
  }
  uint32_t word[4] = {c0, c1, c2, c3};
  return (float)(word[index & 3] >> 8) * (1.0f / 16777216.0f); /* top 24 bits: exact, < 1 */
}

/* ---- scalar semantics --------------------------------------------------- */

/* f32 -> i32: truncation toward zero wrapped modulo 2^32; NaN, ±inf -> 0.
 * Floats of magnitude >= 2^63 are multiples of 2^40, so they wrap to 0. */
static int32_t f32_to_i32(float x) {
  if (!(fabsf(x) < 9223372036854775808.0f)) return 0;
  return (int32_t)(uint32_t)(uint64_t)(int64_t)x;
}

static float unary_f32(Op op, float x) {
  double a = x;
  switch (op) {
#define UNARY(ID, name, ref, ...) \
  case OP_##ID: \
    return (float)(ref);
#include "../graph/ops.def"
  default:
    break;
  }
  BC_ASSERT(!"not a unary op");
  return 0;
}

static float binary_f32(Op op, float x, float y) {
  double a = x, b = y;
  switch (op) {
#define BINARY(ID, name, ref, ...) \
  case OP_##ID: \
    return (float)(ref);
#include "../graph/ops.def"
  default:
    break;
  }
  BC_ASSERT(!"not a binary op");
  return 0;
}

static int32_t unary_i32(Op op, int32_t a) {
  switch (op) {
  case OP_NEG:
    return (int32_t)(0u - (uint32_t)a);
  case OP_RELU:
    return a > 0 ? a : 0;
  default: /* transcendental ops on integers: in f32, converted like KI_CAST */
    return f32_to_i32(unary_f32(op, (float)a));
  }
}

static int32_t binary_i32(Op op, int32_t a, int32_t b) {
  switch (op) {
  case OP_ADD:
    return (int32_t)((uint32_t)a + (uint32_t)b);
  case OP_SUB:
    return (int32_t)((uint32_t)a - (uint32_t)b);
  case OP_MUL:
    return (int32_t)((uint32_t)a * (uint32_t)b);
  case OP_DIV:
    if (b == 0) return 0;
    if (a == INT32_MIN && b == -1) return INT32_MIN;
    return a / b;
  case OP_MAX:
    return a >= b ? a : b;
  case OP_MIN:
    return a <= b ? a : b;
  case OP_LT:
    return a < b;
  case OP_EQ:
    return a == b;
  default:
    return f32_to_i32(binary_f32(op, (float)a, (float)b));
  }
}

/* Reduction identity and step. Max: a NaN sticks (the interpreter's rule). */
static Num reduce_init(Op op, DType t) {
  Num n;
  if (t == DTYPE_I32) n.i = op == OP_REDUCE_MAX ? INT32_MIN : 0;
  else n.f = op == OP_REDUCE_MAX ? -INFINITY : -0.0f; /* the exact identity of + */
  return n;
}

static Num reduce_step(Op op, DType t, Num acc, Num v) {
  if (t == DTYPE_I32) {
    if (op == OP_REDUCE_MAX) acc.i = v.i > acc.i ? v.i : acc.i;
    else acc.i = (int32_t)((uint32_t)acc.i + (uint32_t)v.i);
  } else {
    if (op == OP_REDUCE_MAX) acc.f = (isnan(v.f) || v.f > acc.f) ? v.f : acc.f;
    else acc.f += v.f;
  }
  return acc;
}

/* ---- checking ------------------------------------------------------------ */


static int64_t last_dim(const Kernel *k) {
  return k->domain.rank ? k->domain.dim[k->domain.rank - 1] : 1;
}

static int64_t last_stride(const Kernel *k, const KView *v) {
  return k->domain.rank ? v->stride[k->domain.rank - 1] : 0;
}

static const char *kname(const Kernel *k) { return k->name ? k->name : "(unnamed)"; }


/* Which instructions depend (transitively) on a reduction, reductions
 * included: in a column kernel these run once per output after the loop
 * over col_axis. `post` has k->insts.n entries. */
static void mark_post(const Kernel *k, bool *post) {
  for (int i = 0; i < k->insts.n; i++) {
    const KInst *in = &k->insts.data[i];
    post[i] = in->kind == KI_REDUCE;
    for (int s = 0; s < kinst_n_operands(in->kind); s++)
      if (post[kinst_operand(in, s)]) post[i] = true;
  }
}

bool kernel_eval_supported(const Kernel *k, Diag *d) {
#define FAIL(...) \
  do { \
    diag_error(d, SRCLOC_NONE, __VA_ARGS__); \
    ok = false; \
    goto done; \
  } while (0)
  bool ok = true;
  bool *post = NULL;
  const int rank = k->domain.rank, n = k->insts.n;
  const int64_t L = last_dim(k);
  if (k->kind != KERNEL_LOOP) FAIL("kernel %s: not a LOOP kernel", kname(k));
  if (rank < 0 || rank > BC_MAX_RANK) FAIL("kernel %s: domain rank %d", kname(k), rank);
  if (k->col_axis >= 0 && k->col_axis >= rank - 1)
    FAIL("kernel %s: col_axis %d is not a leading axis of a rank-%d domain", kname(k), k->col_axis, rank);
  for (int i = 0; i < n; i++) {
    const KInst *in = &k->insts.data[i];
    for (int s = 0; s < kinst_n_operands(in->kind); s++) {
      int o = kinst_operand(in, s);
      if (o < 0 || o >= i) FAIL("kernel %s: instruction %d reads %d", kname(k), i, o);
      if (k->insts.data[o].kind == KI_STORE) FAIL("kernel %s: instruction %d reads a store", kname(k), i);
    }
    if (in->dtype != DTYPE_F32 && in->dtype != DTYPE_I32)
      FAIL("kernel %s: instruction %d has dtype %s", kname(k), i, dtype_name(in->dtype));
    if ((in->kind == KI_LOAD || in->kind == KI_STORE) && (in->view < 0 || in->view >= k->views.n))
      FAIL("kernel %s: instruction %d uses view %d of %d", kname(k), i, in->view, k->views.n);
    if (in->kind == KI_UNARY && !(op_info[in->op].flags & OPF_UNARY))
      FAIL("kernel %s: instruction %d: %s is not a unary op", kname(k), i, op_info[in->op].name);
    if (in->kind == KI_BINARY && !(op_info[in->op].flags & OPF_BINARY))
      FAIL("kernel %s: instruction %d: %s is not a binary op", kname(k), i, op_info[in->op].name);
    if (in->kind == KI_IOTA && (in->axis < 0 || in->axis >= (rank ? rank : 1)))
      FAIL("kernel %s: instruction %d: iota axis %d", kname(k), i, in->axis);
    if (in->kind == KI_REDUCE) {
      if (in->op != OP_REDUCE_SUM && in->op != OP_REDUCE_MAX)
        FAIL("kernel %s: instruction %d reduces with %s", kname(k), i, op_info[in->op].name);
      int want = k->col_axis >= 0 ? k->col_axis : rank - 1;
      if (in->axis != want)
        FAIL("kernel %s: instruction %d reduces axis %d, not %d", kname(k), i, in->axis, want);
    }
    if (k->col_axis < 0 && in->row && L > 1) {
      /* A row value is computed once per row, at last index 0. */
      for (int s = 0; s < kinst_n_operands(in->kind) && in->kind != KI_REDUCE && in->kind != KI_STORE; s++)
        if (!k->insts.data[kinst_operand(in, s)].row)
          FAIL("kernel %s: row instruction %d reads full value %d", kname(k), i, kinst_operand(in, s));
      if (in->kind == KI_LOAD && last_stride(k, &k->views.data[in->view]) != 0)
        FAIL("kernel %s: row load %d has last stride %lld", kname(k), i,
             (long long)last_stride(k, &k->views.data[in->view]));
      if (in->kind == KI_RANDOM || (in->kind == KI_IOTA && in->axis == rank - 1))
        FAIL("kernel %s: instruction %d varies along the last axis but is marked row", kname(k), i);
    }
  }
  if (k->col_axis >= 0) {
    /* After the loop over col_axis nothing may depend on the col index. */
    post = bc_calloc((size_t)(n ? n : 1), sizeof(bool));
    mark_post(k, post);
    for (int i = 0; i < n; i++) {
      const KInst *in = &k->insts.data[i];
      if (in->kind == KI_REDUCE && post[in->a])
        FAIL("kernel %s: reduction %d reads another reduction", kname(k), i);
      if (!post[i] && !(in->kind == KI_STORE && post[in->a])) continue;
      if (in->kind == KI_STORE && k->views.data[in->view].stride[k->col_axis] != 0)
        FAIL("kernel %s: store %d of a column reduction varies along col_axis", kname(k), i);
    }
    /* Loads, iota and random are never post (they have no operands). */
  }
done:
  free(post);
  return ok;
#undef FAIL
}

/* ---- evaluation ----------------------------------------------------------- */

typedef struct {
  const Kernel *k;
  void *const *bufs;
  const KernelRunInfo *info;
  int rank;
  int64_t L;
  int64_t key_stride[BC_MAX_RANK]; /* KI_RANDOM: random_key_map of the domain */
  int64_t ex_base;                 /* example_offset * its elements per example */
} Ev;

static int64_t view_offset(const Ev *e, const KView *v, const int64_t *idx) {
  int64_t o = v->offset;
  for (int d = 0; d < e->rank; d++) o += idx[d] * v->stride[d];
  return o;
}

/* One instruction (not a reduce or store) at domain point idx, operands given. */
static Num eval_inst(const Ev *e, const KInst *in, Num a, Num b, Num c, const int64_t *idx) {
  const KInst *ins = e->k->insts.data;
  Num r;
  r.i = 0;
  switch (in->kind) {
  case KI_LOAD: {
    int64_t o = view_offset(e, &e->k->views.data[in->view], idx);
    if (in->dtype == DTYPE_I32) r.i = ((const int32_t *)e->bufs[in->view])[o];
    else r.f = ((const float *)e->bufs[in->view])[o];
    break;
  }
  case KI_CONST:
    if (in->dtype == DTYPE_I32) r.i = f32_to_i32((float)in->imm);
    else r.f = (float)in->imm;
    break;
  case KI_UNARY:
    if (in->dtype == DTYPE_I32) r.i = unary_i32(in->op, a.i);
    else r.f = unary_f32(in->op, a.f);
    break;
  case KI_BINARY: {
    /* Comparisons give 1 or 0 in their inputs' dtype, which is the result's. */
    if (ins[in->a].dtype == DTYPE_I32) r.i = binary_i32(in->op, a.i, b.i);
    else r.f = binary_f32(in->op, a.f, b.f);
    break;
  }
  case KI_SELECT: {
    bool cond = ins[in->a].dtype == DTYPE_I32 ? a.i != 0 : a.f != 0.0f; /* NaN != 0 */
    r = cond ? b : c;
    break;
  }
  case KI_CAST: {
    DType from = ins[in->a].dtype;
    if (from == in->dtype) r = a;
    else if (in->dtype == DTYPE_I32) r.i = f32_to_i32(a.f);
    else r.f = (float)a.i;
    break;
  }
  case KI_IOTA: {
    int64_t v = e->rank ? idx[in->axis] : 0;
    if (in->dtype == DTYPE_I32) r.i = (int32_t)v;
    else r.f = (float)v;
    break;
  }
  case KI_RANDOM: {
    int64_t lin = 0;
    for (int d = 0; d < e->rank; d++) lin += idx[d] * e->key_stride[d];
    BC_ASSERT(e->info);
    r.f = kernel_eval_philox_uniform(e->info->seed, e->info->step, in->key, (uint64_t)(lin + e->ex_base));
    break;
  }
  case KI_REDUCE:
  case KI_STORE:
    BC_ASSERT(!"reduce and store are evaluated by their callers");
  }
  return r;
}

static void store_num(const Ev *e, const KInst *in, Num v, const int64_t *idx) {
  int64_t o = view_offset(e, &e->k->views.data[in->view], idx);
  if (in->dtype == DTYPE_I32) ((int32_t *)e->bufs[in->view])[o] = v.i;
  else ((float *)e->bufs[in->view])[o] = v.f;
}

/* Row kernels: vals[i * Ls + j] holds instruction i at last index j (row
 * values only at j = 0). */
static void eval_rows(const Ev *e, int64_t begin, int64_t end) {
  const Kernel *k = e->k;
  const int n = k->insts.n, r = e->rank;
  const int64_t L = e->L, Ls = L > 0 ? L : 1;
  Num *vals = bc_calloc((size_t)(n ? n : 1) * (size_t)Ls, sizeof(Num));
  int64_t idx[BC_MAX_RANK] = {0};
  const Num zero = {0};
#define GET(o, j) (((o) < 0) ? zero : k->insts.data[o].row ? vals[(int64_t)(o) * Ls] : vals[(int64_t)(o) * Ls + (j)])
  for (int64_t item = begin; item < end; item++) {
    int64_t rem = item;
    for (int d = r - 2; d >= 0; d--) {
      idx[d] = rem % k->domain.dim[d];
      rem /= k->domain.dim[d];
    }
    for (int i = 0; i < n; i++) {
      const KInst *in = &k->insts.data[i];
      Num *out = &vals[(int64_t)i * Ls];
      if (in->kind == KI_REDUCE) {
        Num acc = reduce_init(in->op, in->dtype);
        for (int64_t j = 0; j < L; j++) acc = reduce_step(in->op, in->dtype, acc, GET(in->a, j));
        for (int64_t j = 0; j < (in->row ? 1 : Ls); j++) out[j] = acc;
      } else if (in->kind == KI_STORE) {
        bool once = k->insts.data[in->a].row && last_stride(k, &k->views.data[in->view]) == 0;
        for (int64_t j = 0; j < (once ? 1 : L); j++) {
          if (r) idx[r - 1] = j;
          store_num(e, in, GET(in->a, j), idx);
        }
      } else if (in->row) {
        if (r) idx[r - 1] = 0;
        out[0] = eval_inst(e, in, GET(in->a, 0), GET(in->b, 0), GET(in->c, 0), idx);
      } else {
        for (int64_t j = 0; j < L; j++) {
          if (r) idx[r - 1] = j;
          out[j] = eval_inst(e, in, GET(in->a, j), GET(in->b, j), GET(in->c, j), idx);
        }
      }
    }
  }
#undef GET
  free(vals);
}

/* Column kernels: for every output point (item, j) run the pre-reduction
 * instructions at each k along col_axis, then the rest at k = 0. */
static void eval_cols(const Ev *e, int64_t begin, int64_t end) {
  const Kernel *k = e->k;
  const int n = k->insts.n, r = e->rank, c = k->col_axis;
  const int64_t C = k->domain.dim[c];
  Num *v = bc_calloc((size_t)(n ? n : 1), sizeof(Num));
  Num *acc = bc_calloc((size_t)(n ? n : 1), sizeof(Num));
  bool *post = bc_calloc((size_t)(n ? n : 1), sizeof(bool));
  mark_post(k, post);
  int64_t idx[BC_MAX_RANK] = {0};
  const Num zero = {0};
#define OPND(o) ((o) < 0 ? zero : v[o])
  const int64_t blk = kernel_col_block(k), nb = blk > 0 ? (e->L + blk - 1) / blk : 1;
  for (int64_t item = begin; item < end; item++) {
    int64_t rem = item / nb, j0 = item % nb * blk, j1 = j0 + blk < e->L ? j0 + blk : e->L;
    for (int d = r - 2; d >= 0; d--) {
      if (d == c) continue;
      idx[d] = rem % k->domain.dim[d];
      rem /= k->domain.dim[d];
    }
    for (int64_t j = j0; j < j1; j++) {
      idx[r - 1] = j;
      for (int i = 0; i < n; i++)
        if (k->insts.data[i].kind == KI_REDUCE) acc[i] = reduce_init(k->insts.data[i].op, k->insts.data[i].dtype);
      for (int64_t kk = 0; kk < C; kk++) {
        idx[c] = kk;
        for (int i = 0; i < n; i++) {
          const KInst *in = &k->insts.data[i];
          if (in->kind == KI_REDUCE) acc[i] = reduce_step(in->op, in->dtype, acc[i], v[in->a]);
          else if (post[i] || (in->kind == KI_STORE && post[in->a])) continue;
          else if (in->kind == KI_STORE) store_num(e, in, v[in->a], idx);
          else v[i] = eval_inst(e, in, OPND(in->a), OPND(in->b), OPND(in->c), idx);
        }
      }
      idx[c] = 0;
      for (int i = 0; i < n; i++) {
        const KInst *in = &k->insts.data[i];
        if (in->kind == KI_REDUCE) v[i] = acc[i];
        else if (in->kind == KI_STORE) {
          if (post[in->a]) store_num(e, in, v[in->a], idx);
        } else if (post[i]) v[i] = eval_inst(e, in, OPND(in->a), OPND(in->b), OPND(in->c), idx);
      }
    }
  }
#undef OPND
  free(v);
  free(acc);
  free(post);
}

void kernel_eval(const Kernel *k, void *const *bufs, int64_t begin, int64_t end,
                 const KernelRunInfo *info) {
  BC_ASSERT(k->kind == KERNEL_LOOP);
  BC_ASSERT(begin >= 0 && begin <= end && end <= kernel_work_items(k));
  Ev e = {.k = k, .bufs = bufs, .info = info, .rank = k->domain.rank, .L = last_dim(k)};
  int64_t per_example;
  random_key_map(&k->domain, &k->key_shape, e.key_stride, &per_example);
  if (info) e.ex_base = info->example_offset * per_example;
  if (k->col_axis >= 0) eval_cols(&e, begin, end);
  else eval_rows(&e, begin, end);
}
