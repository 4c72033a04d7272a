/* cuda_kernels.c — the bodies of the CUDA kernels, one per launch shape
 * (the launch itself is chosen by cuda_emit.c; see cuda_emit.h for the ABI):
 *  - elementwise (no reduction): one thread per element, or per 4 elements
 *    of the last axis with 16-byte float4/int4 loads and stores when every
 *    view allows it (last stride 1 or 0, offsets and other strides multiples
 *    of 4, L % 4 == 0);
 *  - row kernels (reductions over the last axis): one warp per row for
 *    L <= 1024, else one block per row; one loop over the row per reduction
 *    phase (a reduction's phase is the number of reductions its operand
 *    depends on), each recomputing the full values it needs, then a
 *    __shfl_xor_sync (and shared-memory) reduction; every store of a full
 *    value is in the last loop, so no loop reads a value this kernel stored
 *    (kernels may update in place, kernel_eval.h); row values are stored
 *    once per row, by lane 0, after the last loop;
 *  - column kernels (col_axis >= 0): blocks of TJ outputs along the last
 *    axis (32, or 16 or 8 when there are few outputs and long columns) x KT
 *    slices of col_axis; a thread sums its slice in index order, the slices
 *    are combined in a fixed order through shared memory, and the slice-0
 *    thread computes and stores what follows the reduction.
 * Reduction orders depend only on the launch shape: results are
 * deterministic. Numerics are kernel_eval.c's in f32/i32 (cuda_emit.h).
 *
 * Not here: the text of values (cuda_expr.c), the launch shape, comment and
 * signature of a kernel, the prelude and the module (cuda_emit.c). */
#include "cuda_emit_internal.h"

#include <string.h>

/* Closes need[] over operands (one backward sweep), not entering
 * instructions stop[] marks (values that exist outside the loop). */
static void close_cone(const Em *E, bool *need, const bool *stop) {
  for (int i = E->n - 1; i >= 0; i--) {
    if (!need[i] || (stop && stop[i])) continue;
    const KInst *in = inst(E, i);
    if (in->kind == KI_REDUCE) continue;
    for (int s = 0; s < kinst_n_operands(in->kind); s++) need[kinst_operand(in, s)] = true;
  }
}

/* ---- the frame: indices, bases ------------------------------------------------------ */

/* i<d> for the used axes of dims[first..last) of the domain, from the flat
 * index `q` over those axes (row-major; `skip` excluded; last-axis scale:
 * `inner` units of q per step of axis last-1). */
static void emit_indices(Em *E, const char *q, int first, int last, int skip, int64_t inner) {
  int64_t div = inner;
  int outer = first;
  while (outer == skip) outer++;
  for (int d = last - 1; d >= first; d--) {
    if (d == skip) continue;
    int64_t dim = E->k->domain.dim[d];
    if (E->used_idx[d]) {
      if (dim == 1) cuda_line(E, "const %s i%d = 0;", E->it, d);
      else if (d == outer && div == 1) cuda_line(E, "const %s i%d = %s;", E->it, d, q);
      else if (d == outer) cuda_line(E, "const %s i%d = %s / %lld;", E->it, d, q, (long long)div);
      else if (div == 1) cuda_line(E, "const %s i%d = %s %% %lld;", E->it, d, q, (long long)dim);
      else cuda_line(E, "const %s i%d = %s / %lld %% %lld;", E->it, d, q, (long long)div, (long long)dim);
    }
    div *= dim;
  }
}

/* p<v>: view v's offset plus its terms of the outer axes (every axis but
 * the last and, in column kernels, col_axis). */
static void emit_bases(Em *E, const bool *vused) {
  for (int v = 0; v < E->k->views.n; v++) {
    if (!vused[v]) continue;
    const KView *w = view(E, v);
    char b[512];
    int len = snprintf(b, sizeof b, "%lld", (long long)w->offset);
    bool any = w->offset != 0;
    for (int d = 0; d < E->rank - 1; d++) {
      if (d == E->k->col_axis || w->stride[d] == 0) continue;
      char term[48];
      if (w->stride[d] == 1) snprintf(term, sizeof term, "i%d", d);
      else snprintf(term, sizeof term, "i%d * %lld", d, (long long)w->stride[d]);
      if (!any) len = snprintf(b, sizeof b, "%s", term);
      else len += snprintf(b + len, sizeof b - (size_t)len, " + %s", term);
      any = true;
    }
    (void)len;
    cuda_line(E, "const %s p%d = %s;", E->it, v, b);
  }
}

static void emit_random_setup(Em *E) {
  if (!E->has_random) return;
  int64_t stride[BC_MAX_RANK], per;
  random_key_map(&E->k->domain, &E->k->key_shape, stride, &per);
  cuda_line(E, "const unsigned long long seed = info->seed;");
  cuda_line(E, "const unsigned int step = info->step;");
  cuda_line(E, "const long long exb = info->example_offset * %lldll;  // example offset x elements per example",
            (long long)per);
}

/* ---- elementwise kernels ----------------------------------------------------------------------- */

/* float4 / int4 path: see the file comment. */
bool cuda_can_vectorize(const Em *E) {
  if (E->rank == 0 || E->L % 4 != 0) return false;
  for (int v = 0; v < E->k->views.n; v++) {
    const KView *w = view(E, v);
    int64_t s = lstride(E, v);
    if (s == 0) continue; /* a per-row value: scalar */
    if (s != 1 || w->offset % 4 != 0) return false;
    for (int d = 0; d < E->rank - 1; d++)
      if (w->stride[d] % 4 != 0) return false;
  }
  return true;
}

void cuda_emit_elementwise(Em *E, const bool *vused) {
  const Kernel *k = E->k;
  const bool vec = E->shape == SHAPE_ELEM4;
  const int64_t units = E->rank ? shape_numel(&k->domain) / (vec ? 4 : 1) : 1;
  E->ind = 1;
  cuda_line(E, "const long long t = (long long)blockIdx.x * %d + threadIdx.x;", E->block);
  cuda_line(E, "if (t >= %lld) return;", (long long)units);
  if (E->rank > 0) {
    cuda_line(E, "const %s q = (%s)t;  // %s", E->it, E->it, vec ? "4 consecutive elements of the last axis" : "the element");
    int64_t lu = vec ? E->L / 4 : E->L;
    if (E->rank == 1) cuda_line(E, "const %s j = q%s;", E->it, vec ? " * 4" : "");
    else cuda_line(E, "const %s j = q %% %lld%s;", E->it, (long long)lu, vec ? " * 4" : "");
    emit_indices(E, "q", 0, E->rank - 1, -1, lu);
  }
  emit_bases(E, vused);
  emit_random_setup(E);
  E->jx = E->rank ? "j" : "0";
  E->lin = E->rank ? "q" : "0";
  if (!vec) {
    for (int i = 0; i < E->n && E->ok; i++) {
      const KInst *in = inst(E, i);
      if (!E->live[i]) continue;
      if (in->kind != KI_STORE) {
        cuda_emit_value(E, i);
        continue;
      }
      /* a per-row value stored once per row (kernel_eval's eval_rows) */
      if (E->L > 1 && lstride(E, in->view) == 0 && inst(E, in->a)->row) {
        cuda_line(E, "if (j == 0) {");
        E->ind++;
        cuda_emit_store(E, i);
        E->ind--;
        cuda_line(E, "}");
      } else {
        cuda_emit_store(E, i);
      }
    }
    E->ind = 0;
    cuda_line(E, "}");
    return;
  }
  /* loads first (a store at a point comes after the loads at it): 16 bytes,
   * or one per-row value for the 4 lanes */
  for (int i = 0; i < E->n; i++) {
    const KInst *in = inst(E, i);
    if (!E->live[i] || in->kind != KI_LOAD) continue;
    if (lstride(E, in->view) == 1)
      cuda_line(E, "const %s q%d = *(const %s *)(v%d + p%d + j);", vtype4(in->dtype), i, vtype4(in->dtype), in->view, in->view);
    else
      cuda_emit_value(E, i);
  }
  for (int i = 0; i < E->n; i++) {
    const KInst *in = inst(E, i);
    if (E->live[i] && in->kind == KI_STORE && lstride(E, in->view) == 1) cuda_line(E, "%s w%d;", vtype4(in->dtype), i);
  }
  cuda_line(E, "#pragma unroll");
  cuda_line(E, "for (int e = 0; e < 4; e++) {");
  E->ind++;
  E->jx = "(j + e)";
  E->lin = "q * 4 + e";
  E->lanes = true;
  for (int i = 0; i < E->n && E->ok; i++) {
    const KInst *in = inst(E, i);
    if (!E->live[i] || (in->kind == KI_LOAD && lstride(E, in->view) != 1)) continue;
    if (in->kind != KI_STORE) {
      cuda_emit_value(E, i);
    } else if (lstride(E, in->view) == 1) {
      cuda_line(E, "bc_set_lane(w%d, e, x%d);", i, in->a);
    } else { /* last stride 0: a per-row value, stored once per row */
      cuda_line(E, "if (j + e == 0) {");
      E->ind++;
      cuda_emit_store(E, i);
      E->ind--;
      cuda_line(E, "}");
    }
  }
  E->lanes = false;
  E->ind--;
  cuda_line(E, "}");
  for (int i = 0; i < E->n; i++) {
    const KInst *in = inst(E, i);
    if (!E->live[i] || in->kind != KI_STORE || lstride(E, in->view) != 1) continue;
    const char *nm = cuda_node_value_name(E, in->node);
    cuda_line(E, "*(%s *)(v%d + p%d + j) = w%d;%s%s", vtype4(in->dtype), in->view, in->view, i, nm ? "  // " : "",
              nm ? nm : "");
  }
  E->ind = 0;
  cuda_line(E, "}");
}

/* ---- row kernels --------------------------------------------------------------------------------- */

static const char *red_fn(const KInst *in) { return in->op == OP_REDUCE_MAX ? "max" : "sum"; }

static void red_identity(DType t, Op op, char *b, size_t n) {
  if (op == OP_REDUCE_MAX) snprintf(b, n, t == DTYPE_I32 ? "(-2147483647 - 1)" : "__int_as_float(0xff800000)");
  else snprintf(b, n, t == DTYPE_I32 ? "0" : "-0.0f"); /* -0 + x == x exactly */
}

/* One loop over the row: full values need[] in instruction order, then the
 * accumulation of reductions red[] (phase loops) or the stores st[] (the
 * final loop). */
static void emit_row_loop(Em *E, const bool *need, const int *red, int n_red, const int *st, int n_st) {
  bool warp = E->shape == SHAPE_ROW_WARP;
  char idb[64];
  for (int r = 0; r < n_red; r++) {
    const KInst *in = inst(E, red[r]);
    red_identity(in->dtype, in->op, idb, sizeof idb);
    cuda_line(E, "%s acc%d = %s;", ctype(in->dtype), red[r], idb);
  }
  cuda_line(E, "for (%s j = %s; j < %lld; j += %d) {", E->it, warp ? "lane" : "threadIdx.x", (long long)E->L,
            warp ? 32 : E->block);
  E->ind++;
  for (int i = 0; i < E->n && E->ok; i++)
    if (need[i]) cuda_emit_value(E, i);
  for (int r = 0; r < n_red; r++) {
    const KInst *in = inst(E, red[r]);
    cuda_line(E, "acc%d = bc_acc_%s(acc%d, x%d);", red[r], red_fn(in), red[r], in->a);
  }
  for (int s = 0; s < n_st; s++) cuda_emit_store(E, st[s]);
  E->ind--;
  cuda_line(E, "}");
  for (int r = 0; r < n_red; r++) {
    const KInst *in = inst(E, red[r]);
    const char *nm = cuda_node_value_name(E, in->node);
    char t[96] = "";
    if (nm) snprintf(t, sizeof t, "  // %s", nm);
    if (warp) cuda_line(E, "const %s x%d = bc_warp_%s(acc%d);%s", ctype(in->dtype), red[r], red_fn(in), red[r], t);
    else
      cuda_line(E, "const %s x%d = bc_block_%s<%d>(acc%d, sm_%s);%s", ctype(in->dtype), red[r], red_fn(in),
                E->block / 32, red[r], ctype(in->dtype), t);
  }
}

void cuda_emit_row_kernel(Em *E, const bool *vused) {
  const Kernel *k = E->k;
  const int n = E->n;
  const bool warp = E->shape == SHAPE_ROW_WARP;
  const int64_t rows = shape_numel(&k->domain) / E->L;
  int *rd = bc_calloc((size_t)n + 1, sizeof(int));
  int *red = bc_calloc((size_t)n + 1, sizeof(int)), *st = bc_calloc((size_t)n + 1, sizeof(int));
  bool *need = bc_calloc((size_t)n + 1, 1), *done = bc_calloc((size_t)n + 1, 1);
  /* rd[i]: reductions on the longest path into i (i included) */
  int P = -1;
  for (int i = 0; i < n; i++) {
    const KInst *in = inst(E, i);
    for (int s = 0; s < kinst_n_operands(in->kind); s++)
      if (rd[kinst_operand(in, s)] > rd[i]) rd[i] = rd[kinst_operand(in, s)];
    if (in->kind == KI_REDUCE) {
      rd[i]++;
      if (E->live[i] && rd[i] - 1 > P) P = rd[i] - 1;
    }
  }
  E->ind = 1;
  if (warp) {
    cuda_line(E, "const int lane = threadIdx.x & 31;");
    cuda_line(E, "const %s row = (%s)blockIdx.x * %d + (threadIdx.x >> 5);  // one warp per row", E->it, E->it, E->block / 32);
    cuda_line(E, "if (row >= %lld) return;  // the whole warp", (long long)rows);
  } else {
    bool row_used = E->has_random;
    for (int d = 0; d < E->rank - 1; d++) row_used = row_used || (E->used_idx[d] && k->domain.dim[d] > 1);
    if (row_used) cuda_line(E, "const %s row = blockIdx.x;  // one block per row", E->it);
    bool has_f = false, has_i = false;
    for (int i = 0; i < n; i++)
      if (E->live[i] && inst(E, i)->kind == KI_REDUCE) {
        if (inst(E, i)->dtype == DTYPE_I32) has_i = true;
        else has_f = true;
      }
    if (has_f) cuda_line(E, "__shared__ float sm_float[32];");
    if (has_i) cuda_line(E, "__shared__ int sm_int[32];");
  }
  emit_indices(E, "row", 0, E->rank - 1, -1, 1);
  emit_bases(E, vused);
  emit_random_setup(E);
  char lin_j[64], lin_0[64];
  snprintf(lin_j, sizeof lin_j, "row * %lld + j", (long long)E->L);
  snprintf(lin_0, sizeof lin_0, "row * %lld", (long long)E->L);
  for (int q = 0; q <= P + 1 && E->ok; q++) {
    /* row values computable now: once per row, at last index 0 */
    E->jx = "0";
    E->lin = lin_0;
    for (int i = 0; i < n && E->ok; i++)
      if (E->live[i] && E->rowv[i] && rd[i] == q) cuda_emit_value(E, i);
    if (q > P) break;
    /* phase q: every live reduction whose operand depends on q reductions */
    int n_red = 0;
    for (int i = 0; i < n; i++) need[i] = false;
    for (int i = 0; i < n; i++)
      if (E->live[i] && inst(E, i)->kind == KI_REDUCE && rd[i] - 1 == q) {
        red[n_red++] = i;
        need[inst(E, i)->a] = true;
      }
    if (!n_red) continue;
    close_cone(E, need, E->rowv);
    for (int i = 0; i < n; i++) need[i] = need[i] && !E->rowv[i] && inst(E, i)->kind != KI_REDUCE;
    cuda_line(E, "// phase %d: %d reduction%s", q, n_red, n_red > 1 ? "s" : "");
    E->jx = "j";
    E->lin = lin_j;
    emit_row_loop(E, need, red, n_red, NULL, 0);
  }
  /* the final loop: every store of a full value (and of a row value into a
   * full view), values recomputed; then the row values, once per row */
  int n_st = 0, n_once = 0;
  for (int i = 0; i < n; i++) need[i] = false;
  for (int i = 0; i < n; i++) {
    const KInst *in = inst(E, i);
    if (!E->live[i] || in->kind != KI_STORE) continue;
    bool rowval = E->rowv[in->a] || inst(E, in->a)->kind == KI_REDUCE;
    if (rowval && (lstride(E, in->view) == 0 || E->L <= 1)) {
      done[i] = true;
      n_once++;
      continue;
    }
    st[n_st++] = i;
    need[in->a] = true;
  }
  if (n_st && E->ok) {
    close_cone(E, need, E->rowv);
    for (int i = 0; i < n; i++) need[i] = need[i] && !E->rowv[i] && inst(E, i)->kind != KI_REDUCE;
    cuda_line(E, "// stores");
    E->jx = "j";
    E->lin = lin_j;
    emit_row_loop(E, need, NULL, 0, st, n_st);
  }
  if (n_once && E->ok) {
    cuda_line(E, warp ? "__syncwarp();  // the row is read before its row values are stored (in place)"
                      : "__syncthreads();  // the row is read before its row values are stored (in place)");
    cuda_line(E, "if (%s == 0) {", warp ? "lane" : "threadIdx.x");
    E->ind++;
    E->jx = "0";
    for (int i = 0; i < n; i++)
      if (done[i]) cuda_emit_store(E, i);
    E->ind--;
    cuda_line(E, "}");
  }
  E->ind = 0;
  cuda_line(E, "}");
  free(rd);
  free(red);
  free(st);
  free(need);
  free(done);
}

/* ---- column kernels -------------------------------------------------------------------------------- */

void cuda_emit_col_kernel(Em *E, const bool *vused) {
  const Kernel *k = E->k;
  const int n = E->n, c = k->col_axis, r = E->rank;
  const int64_t C = k->domain.dim[c], JB = (E->L + E->tj - 1) / E->tj;
  int log_tj = 0;
  while ((1 << log_tj) < E->tj) log_tj++;
  bool *post = bc_calloc((size_t)n + 1, 1), *need_pre = bc_calloc((size_t)n + 1, 1);
  bool *need_post = bc_calloc((size_t)n + 1, 1), *isred = bc_calloc((size_t)n + 1, 1);
  int n_red = 0;
  for (int i = 0; i < n; i++) { /* as kernel_eval.c's mark_post */
    const KInst *in = inst(E, i);
    post[i] = in->kind == KI_REDUCE;
    for (int s = 0; s < kinst_n_operands(in->kind); s++) post[i] = post[i] || post[kinst_operand(in, s)];
    if (!E->live[i]) continue;
    if (in->kind == KI_REDUCE) {
      isred[i] = true;
      need_pre[in->a] = true;
      n_red++;
    } else if (in->kind == KI_STORE) {
      (post[in->a] ? need_post : need_pre)[in->a] = true;
    }
  }
  close_cone(E, need_pre, NULL);
  close_cone(E, need_post, isred); /* stops at the reductions */
  for (int i = 0; i < n; i++) {
    need_pre[i] = need_pre[i] && inst(E, i)->kind != KI_REDUCE;
    need_post[i] = need_post[i] && inst(E, i)->kind != KI_REDUCE;
  }
  E->ind = 1;
  for (int i = 0; i < n; i++)
    if (isred[i]) cuda_line(E, "__shared__ %s part%d[%d][%d];", ctype(inst(E, i)->dtype), i, E->kt, E->tj);
  cuda_line(E, "const int tj = threadIdx.x & %d, tk = threadIdx.x >> %d;  // output, slice of axis %d", E->tj - 1, log_tj, c);
  bool any_item = false;
  for (int d = 0; d < r - 1; d++) any_item = any_item || (E->used_idx[d] && d != c && k->domain.dim[d] > 1);
  if (any_item) {
    if (JB == 1) cuda_line(E, "const %s item = blockIdx.x;", E->it);
    else cuda_line(E, "const %s item = blockIdx.x / %lld;", E->it, (long long)JB);
  }
  if (JB == 1) cuda_line(E, "const %s j = tj;", E->it);
  else cuda_line(E, "const %s j = (%s)(blockIdx.x %% %lld) * %d + tj;", E->it, E->it, (long long)JB, E->tj);
  emit_indices(E, "item", 0, r - 1, c, 1);
  emit_bases(E, vused);
  emit_random_setup(E);
  /* the linear index of the point, for KI_RANDOM */
  char lin[512];
  int len = 0;
  int64_t rm = E->L;
  lin[0] = 0;
  len += snprintf(lin + len, sizeof lin - (size_t)len, "j");
  for (int d = r - 2; d >= 0; d--) {
    len += snprintf(lin + len, sizeof lin - (size_t)len, " + i%d * %lld", d, (long long)rm);
    rm *= k->domain.dim[d];
  }
  E->lin = lin;
  E->jx = "j";
  char idb[64];
  for (int i = 0; i < n; i++)
    if (isred[i]) {
      red_identity(inst(E, i)->dtype, inst(E, i)->op, idb, sizeof idb);
      cuda_line(E, "%s acc%d = %s;", ctype(inst(E, i)->dtype), i, idb);
    }
  cuda_line(E, "if (j < %lld) {", (long long)E->L);
  E->ind++;
  cuda_line(E, "for (%s i%d = tk; i%d < %lld; i%d += %d) {", E->it, c, c, (long long)C, c, E->kt);
  E->ind++;
  for (int i = 0; i < n && E->ok; i++) {
    const KInst *in = inst(E, i);
    if (need_pre[i]) cuda_emit_value(E, i);
    else if (isred[i]) cuda_line(E, "acc%d = bc_acc_%s(acc%d, x%d);", i, red_fn(in), i, in->a);
    else if (E->live[i] && in->kind == KI_STORE && !post[in->a]) cuda_emit_store(E, i);
  }
  E->ind--;
  cuda_line(E, "}");
  E->ind--;
  cuda_line(E, "}");
  if (n_red) {
    for (int i = 0; i < n; i++)
      if (isred[i]) cuda_line(E, "part%d[tk][tj] = acc%d;", i, i);
    cuda_line(E, "__syncthreads();");
  }
  bool any_post = false;
  for (int i = 0; i < n; i++) any_post = any_post || (E->live[i] && inst(E, i)->kind == KI_STORE && post[inst(E, i)->a]);
  if (any_post && E->ok) {
    cuda_line(E, "if (tk == 0 && j < %lld) {  // slices combined in order; then what follows the reduction", (long long)E->L);
    E->ind++;
    for (int i = 0; i < n; i++)
      if (isred[i]) {
        const char *nm = cuda_node_value_name(E, inst(E, i)->node);
        cuda_line(E, "%s x%d = part%d[0][tj];%s%s", ctype(inst(E, i)->dtype), i, i, nm ? "  // " : "", nm ? nm : "");
        cuda_line(E, "for (int s = 1; s < %d; s++) x%d = bc_acc_%s(x%d, part%d[s][tj]);", E->kt, i,
                  red_fn(inst(E, i)), i, i);
      }
    bool reads_c = false; /* does the code below use the col index (at 0)? */
    for (int i = 0; i < n; i++) {
      const KInst *in = inst(E, i);
      bool here = need_post[i] || (E->live[i] && in->kind == KI_STORE && post[in->a]);
      if (!here) continue;
      if ((in->kind == KI_LOAD || in->kind == KI_STORE) && view(E, in->view)->stride[c] != 0) reads_c = true;
      if ((in->kind == KI_IOTA && in->axis == c) || in->kind == KI_RANDOM) reads_c = true;
    }
    if (reads_c) cuda_line(E, "const %s i%d = 0;", E->it, c);
    for (int i = 0; i < n && E->ok; i++) {
      const KInst *in = inst(E, i);
      if (need_post[i]) cuda_emit_value(E, i);
      else if (E->live[i] && in->kind == KI_STORE && post[in->a]) cuda_emit_store(E, i);
    }
    E->ind--;
    cuda_line(E, "}");
  }
  E->ind = 0;
  cuda_line(E, "}");
  free(post);
  free(need_pre);
  free(need_post);
  free(isred);
}
