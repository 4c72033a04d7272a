/* kernel_ir.c — lowers fusion groups (passes/fuse.h) into the kernel IR
 * (kernel.h): for each LOOP or COLREDUCE group, the scalar instructions of its
 * nodes, loads through composed views for everything read from memory, and
 * stores of every materialized value it computes. Library groups become
 * kernels that name their one node.
 *
 * Not here: deciding groups (fuse.c), code generation (llvm_emit.c,
 * cuda_emit.c). Invariant: the same Fusion always yields the same kernels. */
#include "kernel.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const Graph *g;
  const Fusion *f;
  Kernel *k;
  int *inst_of; /* per value: instruction in the current kernel, or -1 */
  VEC(ValueId) touched;
} Lower;

static void contiguous_strides(const Shape *s, int64_t *st) {
  int64_t acc = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = s->dim[i] == 1 ? 0 : acc;
    acc *= s->dim[i];
  }
}

/* The memory view of value v in v's own shape: base value, offset and
 * strides, composing the folded views that produce it. */
static void view_of(const Lower *L, ValueId v, KView *out) {
  const Graph *g = L->g;
  NodeId p = g->values.data[v].node;
  const Shape *s = &g->values.data[v].shape;
  bool folded_view = p >= 0 && !L->f->materialized[v] && L->f->group_of[p] < 0 &&
                     (g->nodes.data[p].op == OP_BROADCAST || g->nodes.data[p].op == OP_PERMUTE ||
                      g->nodes.data[p].op == OP_SLICE);
  if (!folded_view) {
    memset(out, 0, sizeof *out);
    out->value = v;
    contiguous_strides(s, out->stride);
    return;
  }
  const Node *n = &g->nodes.data[p];
  KView in;
  view_of(L, n->in[0], &in);
  const Shape *is = &g->values.data[n->in[0]].shape;
  KView o = in;
  memset(o.stride, 0, sizeof o.stride);
  switch (n->op) {
  case OP_BROADCAST:
    for (int i = 0; i < s->rank; i++) {
      int j = i - (s->rank - is->rank);
      o.stride[i] = (j >= 0 && is->dim[j] == s->dim[i]) ? in.stride[j] : 0;
    }
    break;
  case OP_PERMUTE:
    for (int i = 0; i < s->rank; i++) o.stride[i] = in.stride[n->a.perm[i]];
    break;
  case OP_SLICE:
    for (int i = 0; i < s->rank; i++) o.stride[i] = in.stride[i];
    o.offset += n->a.start * in.stride[n->a.axis];
    break;
  default: BC_ASSERT(!"not a view");
  }
  for (int i = 0; i < s->rank; i++)
    if (s->dim[i] == 1) o.stride[i] = 0;
  *out = o;
}

static int push_inst(Lower *L, KInst in) {
  vec_push(&L->k->insts, in);
  return L->k->insts.n - 1;
}

static int add_view(Lower *L, const KView *v) {
  for (int i = 0; i < L->k->views.n; i++)
    if (memcmp(&L->k->views.data[i], v, sizeof *v) == 0) return i;
  vec_push(&L->k->views, *v);
  return L->k->views.n - 1;
}

/* A view of v (its own shape) mapped onto the kernel domain: equal shapes
 * map axis to axis; a per-row value gets stride 0 on the last axis. */
static KView onto_domain(const Lower *L, ValueId v) {
  KView kv;
  view_of(L, v, &kv);
  const Shape *s = &L->g->values.data[v].shape, *d = &L->k->domain;
  BC_ASSERT(s->rank == d->rank);
  for (int i = 0; i < d->rank; i++)
    if (s->dim[i] != d->dim[i]) {
      BC_ASSERT(s->dim[i] == 1);
      kv.stride[i] = 0;
    }
  return kv;
}

static bool row_shaped(const Lower *L, ValueId v) {
  const Shape *s = &L->g->values.data[v].shape, *d = &L->k->domain;
  return d->rank > 0 && d->dim[d->rank - 1] > 1 && s->dim[d->rank - 1] == 1;
}

static void bind(Lower *L, ValueId v, int inst) {
  if (L->inst_of[v] < 0) vec_push(&L->touched, v);
  L->inst_of[v] = inst;
}

static int value_inst(Lower *L, ValueId v);
static void lower_node(Lower *L, NodeId id);

/* Instruction of generator node n (constant, iota, random) in this kernel. */
static int generator_inst(Lower *L, const Node *n) {
  KInst in = {0};
  in.a = in.b = in.c = in.view = -1;
  in.node = L->g->values.data[n->out].node;
  in.dtype = L->g->values.data[n->out].dtype;
  switch (n->op) {
  case OP_CONSTANT:
    in.kind = KI_CONST;
    in.imm = n->a.scalar;
    in.row = true;
    break;
  case OP_IOTA:
    in.kind = KI_IOTA;
    in.axis = n->a.axis;
    in.row = n->a.axis != L->k->domain.rank - 1 && row_shaped(L, n->out);
    break;
  case OP_RANDOM:
    in.kind = KI_RANDOM;
    in.key = n->a.key;
    /* a random's index is its point in the domain: they have one shape,
     * and every random of a kernel keys its stream alike */
    BC_ASSERT(shape_eq(&n->a.shape, &L->k->domain));
    if (n->a.key_shape.rank > 0) {
      BC_ASSERT(L->k->key_shape.rank == 0 || shape_eq(&L->k->key_shape, &n->a.key_shape));
      L->k->key_shape = n->a.key_shape;
    } else {
      BC_ASSERT(L->k->key_shape.rank == 0);
    }
    break;
  default: BC_ASSERT(!"not a generator");
  }
  return push_inst(L, in);
}

static int load_inst(Lower *L, ValueId v) {
  KView kv = onto_domain(L, v);
  KInst in = {0};
  in.kind = KI_LOAD;
  in.a = in.b = in.c = -1;
  in.view = add_view(L, &kv);
  in.dtype = L->g->values.data[v].dtype;
  in.row = L->k->domain.rank > 0 && kv.stride[L->k->domain.rank - 1] == 0 &&
           L->k->domain.dim[L->k->domain.rank - 1] > 1;
  in.node = -1;
  return push_inst(L, in);
}

/* s is a per-row value of domain d: d's shape with a last axis of 1. */
static bool is_row_of(const Shape *s, const Shape *d) {
  if (s->rank != d->rank || d->rank == 0) return false;
  for (int i = 0; i + 1 < d->rank; i++)
    if (s->dim[i] != d->dim[i]) return false;
  return s->dim[d->rank - 1] == 1;
}

static int value_inst(Lower *L, ValueId v) {
  if (L->inst_of[v] >= 0) return L->inst_of[v];
  NodeId p = L->g->values.data[v].node;
  int r;
  Op pop = p >= 0 ? L->g->nodes.data[p].op : OP_COUNT;
  if (p >= 0 && L->f->group_of[p] < 0 && (pop == OP_CONSTANT || pop == OP_IOTA || pop == OP_RANDOM)) {
    r = generator_inst(L, &L->g->nodes.data[p]);
  } else if (p >= 0 && L->f->group_of[p] < 0 && pop == OP_BROADCAST &&
             L->inst_of[L->g->nodes.data[p].in[0]] >= 0 &&
             shape_eq(&L->g->values.data[v].shape, &L->k->domain) &&
             L->k->insts.data[L->inst_of[L->g->nodes.data[p].in[0]]].row &&
             is_row_of(&L->g->values.data[L->g->nodes.data[p].in[0]].shape, &L->k->domain)) {
    /* a row value this kernel computed, broadcast along its rows: the
     * row's instruction is that already (fuse.c folds such a broadcast when
     * other kernels read it too) */
    r = L->inst_of[L->g->nodes.data[p].in[0]];
  } else if (p >= 0 && L->f->group_of[p] < 0 && pop != OP_BROADCAST && pop != OP_PERMUTE &&
             pop != OP_SLICE && !L->f->materialized[v]) {
    /* folded pointwise index math: recomputed here */
    lower_node(L, p);
    return L->inst_of[v];
  } else {
    r = load_inst(L, v);
  }
  bind(L, v, r);
  return r;
}

static void store(Lower *L, ValueId v, int inst) {
  KView kv = onto_domain(L, v);
  KInst st = {0};
  st.kind = KI_STORE;
  st.a = inst;
  st.b = st.c = -1;
  st.view = add_view(L, &kv);
  st.dtype = L->g->values.data[v].dtype;
  st.row = L->k->insts.data[inst].row;
  st.node = L->g->values.data[v].node;
  push_inst(L, st);
}

/* Appends node n's instructions to the current LOOP kernel. */
static void lower_node(Lower *L, NodeId id) {
  const Graph *g = L->g;
  const Node *n = &g->nodes.data[id];
  KInst in = {0};
  in.a = in.b = in.c = in.view = -1;
  in.node = id;
  in.dtype = g->values.data[n->out].dtype;
  int r = -1;
  unsigned fl = op_info[n->op].flags;
  if (fl & (OPF_UNARY | OPF_BINARY)) {
    in.kind = fl & OPF_UNARY ? KI_UNARY : KI_BINARY;
    in.op = n->op;
    in.a = value_inst(L, n->in[0]);
    in.row = L->k->insts.data[in.a].row;
    if (fl & OPF_BINARY) {
      in.b = value_inst(L, n->in[1]);
      in.row = in.row && L->k->insts.data[in.b].row;
    }
    r = push_inst(L, in);
  } else {
    switch (n->op) {
    case OP_SELECT:
      in.kind = KI_SELECT;
      in.a = value_inst(L, n->in[0]);
      in.b = value_inst(L, n->in[1]);
      in.c = value_inst(L, n->in[2]);
      in.row = L->k->insts.data[in.a].row && L->k->insts.data[in.b].row && L->k->insts.data[in.c].row;
      r = push_inst(L, in);
      break;
    case OP_CAST:
      in.kind = KI_CAST;
      in.a = value_inst(L, n->in[0]);
      in.row = L->k->insts.data[in.a].row;
      r = push_inst(L, in);
      break;
    case OP_REDUCE_SUM:
    case OP_REDUCE_MAX: {
      const Shape *is = &g->values.data[n->in[0]].shape;
      int a = value_inst(L, n->in[0]);
      if (is->dim[n->a.axis] == 1) { /* reducing one element: identity */
        r = a;
        break;
      }
      in.kind = KI_REDUCE;
      in.op = n->op;
      in.a = a;
      in.axis = n->a.axis;
      in.row = L->k->col_axis < 0;
      r = push_inst(L, in);
      break;
    }
    case OP_BROADCAST: /* a per-row value joined its group: already broadcast */
    case OP_PERMUTE:
    case OP_SLICE:
      if (L->f->group_of[id] >= 0 && n->op == OP_BROADCAST && L->inst_of[n->in[0]] >= 0) {
        r = L->inst_of[n->in[0]];
      } else {
        /* a view in a kernel of its own: a copy through the composed view */
        KView kv;
        const Lower *cl = L;
        /* view_of treats this node as a view because it is not materialized
         * as far as its own input is concerned: compose explicitly */
        KView base;
        view_of(cl, n->in[0], &base);
        const Shape *s = &g->values.data[n->out].shape, *is = &g->values.data[n->in[0]].shape;
        kv = base;
        memset(kv.stride, 0, sizeof kv.stride);
        if (n->op == OP_BROADCAST) {
          for (int i = 0; i < s->rank; i++) {
            int j = i - (s->rank - is->rank);
            kv.stride[i] = (j >= 0 && is->dim[j] == s->dim[i]) ? base.stride[j] : 0;
          }
        } else if (n->op == OP_PERMUTE) {
          for (int i = 0; i < s->rank; i++) kv.stride[i] = base.stride[n->a.perm[i]];
        } else {
          for (int i = 0; i < s->rank; i++) kv.stride[i] = base.stride[i];
          kv.offset += n->a.start * base.stride[n->a.axis];
        }
        const Shape *d = &L->k->domain;
        for (int i = 0; i < d->rank; i++)
          if (s->dim[i] != d->dim[i] || s->dim[i] == 1) kv.stride[i] = 0;
        KInst ld = {0};
        ld.kind = KI_LOAD;
        ld.a = ld.b = ld.c = -1;
        ld.view = add_view(L, &kv);
        ld.dtype = in.dtype;
        ld.row = d->rank > 0 && d->dim[d->rank - 1] > 1 && kv.stride[d->rank - 1] == 0;
        ld.node = id;
        r = push_inst(L, ld);
      }
      break;
    case OP_CONSTANT:
    case OP_IOTA:
    case OP_RANDOM: r = generator_inst(L, n); break;
    case OP_ASSIGN: {
      int v = value_inst(L, n->in[1]);
      KView kv = onto_domain(L, n->in[0]);
      KInst st = {0};
      st.kind = KI_STORE;
      st.a = v;
      st.b = st.c = -1;
      st.view = add_view(L, &kv);
      st.dtype = in.dtype;
      st.row = L->k->insts.data[v].row;
      st.node = id;
      push_inst(L, st);
      r = v;
      break;
    }
    default: BC_ASSERT(!"node kind cannot be in a LOOP kernel");
    }
  }
  bind(L, n->out, r);
  if (L->f->materialized[n->out]) store(L, n->out, r);
}

static const char *kernel_name(const Graph *g, const Kernel *k, int index, Arena *a) {
  char buf[96];
  int len = snprintf(buf, sizeof buf, "k%d", index);
  const char *last = NULL;
  for (int i = 0; i < k->nodes.n && len < 80; i++) {
    const char *nm = op_info[g->nodes.data[k->nodes.data[i]].op].name;
    if (nm == last) continue; /* exp_exp_exp reads worse than exp */
    last = nm;
    len += snprintf(buf + len, sizeof buf - (size_t)len, "_%s", nm);
  }
  (void)a;
  return bc_intern(buf);
}

bool kernel_plan_build(const Graph *g, const Fusion *f, KernelPlan *out, Diag *d) {
  (void)d;
  memset(out, 0, sizeof(*out));
  out->n_values = g->values.n;
  out->materialized = bc_malloc(sizeof(bool) * (size_t)(g->values.n ? g->values.n : 1));
  memcpy(out->materialized, f->materialized, sizeof(bool) * (size_t)g->values.n);
  Lower L = {0};
  L.g = g;
  L.f = f;
  L.inst_of = bc_malloc(sizeof(int) * (size_t)(g->values.n ? g->values.n : 1));
  for (int i = 0; i < g->values.n; i++) L.inst_of[i] = -1;
  /* nodes of each group, in node order */
  int *count = bc_calloc((size_t)f->n_groups + 1, sizeof(int));
  for (int i = 0; i < g->nodes.n; i++)
    if (f->group_of[i] >= 0) count[f->group_of[i] + 1]++;
  for (int G = 0; G < f->n_groups; G++) count[G + 1] += count[G];
  NodeId *order = bc_malloc(sizeof(NodeId) * (size_t)(g->nodes.n ? g->nodes.n : 1));
  int *fill = bc_calloc((size_t)f->n_groups + 1, sizeof(int));
  for (int i = 0; i < g->nodes.n; i++)
    if (f->group_of[i] >= 0) order[count[f->group_of[i]] + fill[f->group_of[i]]++] = i;
  Arena scratch;
  arena_init(&scratch);
  for (int G = 0; G < f->n_groups; G++) {
    Kernel k = {0};
    k.col_axis = -1;
    k.first_node = order[count[G]];
    k.domain = f->domain[G];
    for (int i = count[G]; i < count[G + 1]; i++) vec_push(&k.nodes, order[i]);
    switch (f->kind[G]) {
    case GROUP_LOOP:
    case GROUP_COLREDUCE:
    case GROUP_ASSIGN:
      k.kind = KERNEL_LOOP;
      k.col_axis = f->kind[G] == GROUP_COLREDUCE ? f->col_axis[G] : -1;
      if (f->kind[G] == GROUP_ASSIGN) k.domain = g->values.data[g->nodes.data[k.first_node].in[0]].shape;
      L.k = &k;
      for (int i = 0; i < k.nodes.n; i++) lower_node(&L, k.nodes.data[i]);
      for (int i = 0; i < L.touched.n; i++) L.inst_of[L.touched.data[i]] = -1;
      L.touched.n = 0;
      break;
    case GROUP_GEMM: k.kind = KERNEL_GEMM; break;
    case GROUP_GATHER: k.kind = KERNEL_GATHER; break;
    case GROUP_SCATTER_ADD: k.kind = KERNEL_SCATTER_ADD; break;
    case GROUP_CONCAT: k.kind = KERNEL_CONCAT; break;
    case GROUP_ALIAS: k.kind = KERNEL_ALIAS; break;
    case GROUP_ATTENTION: k.kind = KERNEL_ATTENTION; break;
    }
    k.name = kernel_name(g, &k, G, &scratch);
    k.guard = -1;
    k.dead_unread = k.compact_out = false;
    k.zero_rows_guard = -1;
    vec_push(&out->kernels, k);
  }
  kernel_plan_guards(g, out);
  arena_free(&scratch);
  free(count);
  free(fill);
  free(order);
  free(L.inst_of);
  vec_free(&L.touched);
  return true;
}

/* ---- the `lower` stage of the pipeline ---- */

static bool lower_run(Plan *p, const CompileOptions *o, Diag *d) {
  KernelPlan *kp = bc_calloc(1, sizeof(KernelPlan));
  p->kernels = kp;
  if (!kernel_plan_build(&p->graph, &p->fusion, kp, d)) return false;
  kp->off = o->off;
  return true;
}

static bool lower_check(const Plan *p, Diag *d) {
  const KernelPlan *kp = p->kernels;
  if (kp->kernels.n != p->fusion.n_groups) {
    diag_error(d, SRCLOC_NONE, "internal: %d kernels for %d fusion groups", kp->kernels.n, p->fusion.n_groups);
    return false;
  }
  return kernel_plan_check(&p->graph, kp, d);
}

static void lower_print(const Plan *p, FILE *f) {
  const Graph *g = &p->graph;
  const KernelPlan *kp = p->kernels;
  kernel_plan_print(g, kp, f);
  bool grads = false;
  for (int i = 0; i < g->params.n && !grads; i++) grads = g->values.data[g->params.data[i]].grad >= 0;
  if (!grads) return;
  /* the gradient buckets of data-parallel training, in the order cpu and
   * cuda run: kernels */
  const char **names = bc_malloc(sizeof(char *) * (size_t)(kp->kernels.n + 1));
  for (int i = 0; i < kp->kernels.n; i++) names[i] = kp->kernels.data[i].name;
  names[kp->kernels.n] = "(end)";
  GradBuckets gb;
  Diag d;
  diag_init(&d);
  if (grad_buckets_build(g, p->kernel_of, grad_bucket_bytes_default(), &gb, &d)) grad_buckets_print(g, &gb, names, f);
  else diag_print(&d, f);
  grad_buckets_free(&gb);
  diag_free(&d);
  free(names);
}

static void lower_free(Plan *p) {
  kernel_plan_free(p->kernels);
  free(p->kernels);
  p->kernels = NULL;
}

const PlanLowering kernel_lowering = {lower_run, lower_check, lower_print, lower_free};

bool kernel_plan_compile(const Graph *g, const CompileOptions *o, Graph *exec, KernelPlan *plan, MemPlan *mem,
                         Diag *d) {
  CompileOptions env;
  if (!o) {
    compile_options_default(&env);
    o = &env;
  }
  Plan p = {0};
  p.lowering = &kernel_lowering;
  bool ok = pipeline_run_plan(&p, g, o, d);
  if (ok) { /* hand the results over; plan_free releases the rest */
    *exec = p.graph;
    p.have_graph = false;
    KernelPlan *kp = p.kernels;
    *plan = *kp;
    free(kp);
    p.kernels = NULL;
    *mem = p.mem;
    p.have_mem = false;
  }
  plan_free(&p);
  return ok;
}

bool kernel_plan_check(const Graph *g, const KernelPlan *p, Diag *d) {
  int before = d->n_errors;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    if (k->nodes.n == 0 || k->first_node < 0 || k->first_node >= g->nodes.n) {
      diag_error(d, SRCLOC_NONE, "internal: kernel %s computes no node of the graph", k->name);
      continue;
    }
    for (int j = 0; j < k->views.n; j++) {
      ValueId v = k->views.data[j].value;
      if (v < 0 || v >= g->values.n || !p->materialized[v])
        diag_error(d, SRCLOC_NONE, "internal: kernel %s: view %d names value %d, which has no buffer", k->name, j, v);
    }
    for (int j = 0; j < k->insts.n; j++) {
      const KInst *in = &k->insts.data[j];
      for (int s = 0; s < kinst_n_operands(in->kind); s++) {
        int a = kinst_operand(in, s);
        if (a < 0 || a >= j)
          diag_error(d, SRCLOC_NONE, "internal: kernel %s: instruction %d reads %d, not an earlier one", k->name, j, a);
      }
      if ((in->kind == KI_LOAD || in->kind == KI_STORE) && (in->view < 0 || in->view >= k->views.n))
        diag_error(d, SRCLOC_NONE, "internal: kernel %s: instruction %d uses view %d of %d", k->name, j, in->view,
                   k->views.n);
    }
  }
  return d->n_errors == before;
}

void kernel_plan_free(KernelPlan *p) {
  for (int i = 0; i < p->kernels.n; i++) {
    Kernel *k = &p->kernels.data[i];
    vec_free(&k->views);
    vec_free(&k->insts);
    vec_free(&k->nodes);
  }
  vec_free(&p->kernels);
  free(p->materialized);
  row_guards_free(&p->guards);
  memset(p, 0, sizeof(*p));
}

bool kernel_same_code(const Kernel *a, const Kernel *b) {
  if (a->kind != KERNEL_LOOP || b->kind != KERNEL_LOOP || !shape_eq(&a->domain, &b->domain) ||
      a->col_axis != b->col_axis || !shape_eq(&a->key_shape, &b->key_shape) || a->views.n != b->views.n ||
      a->insts.n != b->insts.n)
    return false;
  for (int v = 0; v < a->views.n; v++)
    for (int d = 0; d < a->domain.rank; d++)
      if (a->views.data[v].stride[d] != b->views.data[v].stride[d]) return false;
  for (int i = 0; i < a->insts.n; i++) {
    const KInst *x = &a->insts.data[i], *y = &b->insts.data[i];
    if (x->kind != y->kind || x->op != y->op || x->a != y->a || x->b != y->b || x->c != y->c ||
        x->view != y->view || memcmp(&x->imm, &y->imm, sizeof x->imm) != 0 || x->axis != y->axis ||
        x->key != y->key || x->dtype != y->dtype || x->row != y->row)
      return false;
  }
  return true;
}

int kernel_plan_count(const KernelPlan *p, KernelKind kind) {
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) n += p->kernels.data[i].kind == kind;
  return n;
}

/* Column kernels with fewer output rows than this cut them into blocks,
 * so that every thread has work (a bias gradient over [B*T, vocab] has one
 * output row). */
enum { COL_ROWS_MIN = 16, COL_BLOCK_MIN = 256 };

int64_t kernel_col_block(const Kernel *k) {
  int r = k->domain.rank;
  int64_t L = r ? k->domain.dim[r - 1] : 1;
  if (k->col_axis < 0 || L <= COL_BLOCK_MIN || shape_numel(&k->domain) == 0) return L;
  int64_t rows = shape_numel(&k->domain) / L / k->domain.dim[k->col_axis];
  if (rows >= COL_ROWS_MIN) return L;
  int64_t per_row = (COL_ROWS_MIN + rows - 1) / rows;
  int64_t blk = ((L + per_row - 1) / per_row + 63) / 64 * 64;
  if (blk < COL_BLOCK_MIN) blk = COL_BLOCK_MIN;
  return blk < L ? blk : L;
}

int64_t kernel_work_items(const Kernel *k) {
  int64_t n = shape_numel(&k->domain);
  int r = k->domain.rank;
  if (r == 0) return 1;
  int64_t L = k->domain.dim[r - 1];
  n /= L;
  if (k->col_axis >= 0) {
    n /= k->domain.dim[k->col_axis];
    int64_t blk = kernel_col_block(k);
    n *= blk > 0 ? (L + blk - 1) / blk : 1;
  }
  return n;
}

static const char *const kind_names[] = {"loop", "gemm", "gather", "scatter_add", "concat", "alias", "attention"};

void kernel_plan_print(const Graph *g, const KernelPlan *p, FILE *f) {
  char b[96];
  int counts[sizeof kind_names / sizeof kind_names[0]] = {0};
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    counts[k->kind]++;
    fprintf(f, "kernel %s [%s]", k->name, kind_names[k->kind]);
    if (k->kind == KERNEL_LOOP) {
      fprintf(f, " domain %s", shape_str(&k->domain, b));
      if (k->col_axis >= 0) fprintf(f, " column-reduce axis %d", k->col_axis);
      int nred = 0;
      for (int j = 0; j < k->insts.n; j++) nred += k->insts.data[j].kind == KI_REDUCE;
      if (nred && k->col_axis < 0) fprintf(f, " row-reductions %d", nred);
      int nl = 0, ns = 0;
      for (int j = 0; j < k->insts.n; j++) {
        nl += k->insts.data[j].kind == KI_LOAD;
        ns += k->insts.data[j].kind == KI_STORE;
      }
      fprintf(f, " loads %d stores %d", nl, ns);
    }
    if (k->guard >= 0) {
      const RowGuard *rg = &p->guards.list.data[k->guard];
      fprintf(f, " rows guarded by %s%s", rg->parent >= 0 ? "the rows read of " : "", g->values.data[rg->input].name);
      if (rg->seq > 0) fprintf(f, " (positions of %lld)", (long long)rg->seq);
      if (rg->n_rows > 0) fprintf(f, " (rows %lld to %lld)", (long long)rg->row0, (long long)(rg->row0 + rg->n_rows));
      if (k->dead_unread) fprintf(f, ", dead rows unread");
      if (k->compact_out) fprintf(f, ", written compacted");
    }
    if (k->zero_rows_guard >= 0) {
      const RowGuard *rg = &p->guards.list.data[k->zero_rows_guard];
      fprintf(f, "%s zero rows by %s%s", k->guard >= 0 ? ";" : "", rg->parent >= 0 ? "the rows read of " : "",
              g->values.data[rg->input].name);
    }
    fputc('\n', f);
    for (int j = 0; j < k->nodes.n; j++) {
      const Node *n = &g->nodes.data[k->nodes.data[j]];
      const Value *o = &g->values.data[n->out];
      fprintf(f, "    %%%d %s = %s", n->out, o->name, op_info[n->op].name);
      if (n->loc.file && n->loc.line > 0) fprintf(f, "  @ %s:%d", n->loc.file, n->loc.line);
      else if (n->loc.file) fprintf(f, "  @ %s", n->loc.file);
      fputc('\n', f);
    }
    /* nodes recomputed inside (generators, index math folded into readers) */
    for (int j = 0; j < k->insts.n; j++) {
      NodeId id = k->insts.data[j].node;
      if (id < 0 || k->insts.data[j].kind == KI_STORE) continue;
      bool listed = false;
      for (int m = 0; m < k->nodes.n && !listed; m++) listed = k->nodes.data[m] == id;
      for (int m = 0; m < j && !listed; m++) listed = k->insts.data[m].node == id && k->insts.data[m].kind != KI_STORE;
      if (listed) continue;
      const Node *n = &g->nodes.data[id];
      fprintf(f, "    %%%d %s = %s (recomputed)", n->out, g->values.data[n->out].name, op_info[n->op].name);
      if (n->loc.file && n->loc.line > 0) fprintf(f, "  @ %s:%d", n->loc.file, n->loc.line);
      else if (n->loc.file) fprintf(f, "  @ %s", n->loc.file);
      fputc('\n', f);
    }
  }
  fprintf(f, "kernels: %d (loop %d, gemm %d, gather %d, scatter_add %d, concat %d, alias %d, attention %d)\n",
          p->kernels.n, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]);
}
