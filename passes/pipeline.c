/* pipeline.c — the whole middle end as one ordered table of named stages,
 * all working on one Plan (passes.h):
 *
 *   expand  narrow  autodiff  optim  simplify  schedule | remat  row_blocks  chunk  fuse  lower  memplan
 *   ------------------- graph stages ------------------ | ---------- plan stages ----------
 *
 * The graph stages end in the Graph an Exec keeps (every backend); compiled
 * backends run the plan stages over a copy of it. `lower` is codegen's (the
 * kernel IR lives there and passes/ may not include codegen/): its functions
 * come in Plan.lowering. After every stage its check runs when
 * CompileOptions.verify is set (BC_VERIFY=1; debug builds unless
 * BC_VERIFY=0), and `--dump-after STAGE|all` (BC_DUMP) prints what it made.
 * A stage with a switch (options.h) can be turned off: simplify and
 * schedule are then skipped, fuse makes a kernel per node, memplan a buffer
 * per value. expand and lower cannot (nothing runs without them); autodiff
 * and optim run exactly when training is asked for. This file and nothing
 * else reads the environment variables of the middle end. */
#include "passes.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PHASE_GRAPH, PHASE_PLAN } Phase;

typedef struct {
  const char *name;
  Phase phase;
  bool train_only;
  int off;   /* offsetof(OptSwitches, the switch turning it off), or -1 for none */
  bool skip; /* switched off, the stage does not run (else it runs in its plainest form) */
  bool (*run)(Plan *p, const CompileOptions *o, Diag *d);
  bool (*check)(const Plan *p, Diag *d); /* NULL: the lowering's */
  void (*dump)(const Plan *p, FILE *f);  /* NULL: the lowering's */
} Stage;

/* ---- graph stages ---- */

static bool expand_with(Graph *g, const CompileOptions *o, const Setting *sets, int n_sets, Diag *d) {
  return o->n_model_sources > 0
             ? model_expand_sources(g, o->model_sources, o->n_model_sources, o->graph_name, sets, n_sets, d)
             : model_expand(g, o->model_path, o->graph_name, sets, n_sets, d);
}

/* Gives every random op of g, and every attention op (its dropout stream),
 * the shape its namesake (same op and key) has in the graph expanded with
 * the key sets appended (CompileOptions.key_sets). */
static bool key_randoms(Graph *g, const CompileOptions *o, Diag *d) {
  int n = o->n_sets + o->n_key_sets;
  Setting *all = bc_malloc(sizeof(Setting) * (size_t)n);
  for (int i = 0; i < o->n_sets; i++) all[i] = o->sets[i];
  for (int i = 0; i < o->n_key_sets; i++) all[o->n_sets + i] = o->key_sets[i];
  Graph keyed;
  bool ok = expand_with(&keyed, o, all, n, d);
  free(all);
  if (!ok) return false;
  for (int i = 0; ok && i < g->nodes.n; i++) {
    Node *r = &g->nodes.data[i];
    if (r->op != OP_RANDOM && r->op != OP_ATTENTION) continue;
    const Node *k = NULL;
    for (int j = 0; !k && j < keyed.nodes.n; j++)
      if (keyed.nodes.data[j].op == r->op && keyed.nodes.data[j].a.key == r->a.key) k = &keyed.nodes.data[j];
    /* a random op's stream is keyed by its own shape, an attention's by its weights' */
    const Shape *ks = !k ? NULL : r->op == OP_RANDOM ? &keyed.values.data[k->out].shape : &k->a.shape;
    bool fits = ks && ks->rank == r->a.shape.rank;
    for (int d2 = 0; fits && d2 < ks->rank; d2++) fits = ks->dim[d2] >= r->a.shape.dim[d2];
    if (!fits) {
      diag_error(d, r->loc, "%s '%s' has no counterpart of the same rank and no smaller dims in the graph its "
                 "streams are keyed by", op_info[r->op].name, g->values.data[r->out].name);
      ok = false;
    } else if (!shape_eq(ks, &r->a.shape)) {
      r->a.key_shape = *ks;
    }
  }
  graph_free(&keyed);
  return ok;
}

/* Keeps the outputs of g that o->outputs names; each name must be one. */
static bool keep_outputs(Graph *g, const CompileOptions *o, Diag *d) {
  for (int k = 0; o->outputs[k]; k++) {
    bool found = false;
    for (int i = 0; i < g->outputs.n && !found; i++) found = !strcmp(g->values.data[g->outputs.data[i]].name, o->outputs[k]);
    if (!found) {
      diag_error(d, (SrcLoc){bc_intern(o->model_path), 0, 0}, "graph '%s' has no output '%s'", g->name, o->outputs[k]);
      return false;
    }
  }
  int n = 0;
  for (int i = 0; i < g->outputs.n; i++) {
    bool keep = false;
    for (int k = 0; o->outputs[k] && !keep; k++) keep = !strcmp(g->values.data[g->outputs.data[i]].name, o->outputs[k]);
    if (keep) g->outputs.data[n++] = g->outputs.data[i];
  }
  g->outputs.n = n;
  return true;
}

static bool run_expand(Plan *p, const CompileOptions *o, Diag *d) {
  if (!expand_with(&p->graph, o, o->sets, o->n_sets, d)) return false;
  p->have_graph = true;
  if (o->outputs && !keep_outputs(&p->graph, o, d)) return false;
  return o->n_key_sets == 0 || key_randoms(&p->graph, o, d);
}
static bool run_autodiff(Plan *p, const CompileOptions *o, Diag *d) {
  if (p->graph.loss < 0) {
    diag_error(d, (SrcLoc){bc_intern(o->model_path), 0, 0},
               "graph '%s' declares no `loss:`, so it cannot be trained", p->graph.name);
    return false;
  }
  return autodiff_run(&p->graph, d);
}
static bool run_narrow(Plan *p, const CompileOptions *o, Diag *d) {
  (void)o;
  return narrow_run(&p->graph, d);
}
static bool run_optim(Plan *p, const CompileOptions *o, Diag *d) { return optim_adam_run(&p->graph, &o->adam, d); }
static bool run_simplify(Plan *p, const CompileOptions *o, Diag *d) { return simplify_run(&p->graph, &o->off, d); }
static bool run_schedule(Plan *p, const CompileOptions *o, Diag *d) {
  (void)o;
  return schedule_run(&p->graph, d);
}
static bool check_graph(const Plan *p, Diag *d) { return graph_verify(&p->graph, d); }
static void dump_graph(const Plan *p, FILE *f) { graph_print(&p->graph, f); }

/* The schedule and the gradient buckets data-parallel training all-reduces
 * when each node is a step (interp; `lower` lists them for kernels). */
static void dump_schedule(const Plan *p, FILE *f) {
  graph_print(&p->graph, f);
  bool grads = false;
  for (int i = 0; i < p->graph.params.n && !grads; i++) grads = p->graph.values.data[p->graph.params.data[i]].grad >= 0;
  if (!grads) return;
  GradBuckets gb;
  Diag d;
  diag_init(&d);
  if (grad_buckets_build(&p->graph, NULL, grad_bucket_bytes_default(), &gb, &d)) grad_buckets_print(&p->graph, &gb, NULL, f);
  else diag_print(&d, f);
  grad_buckets_free(&gb);
  diag_free(&d);
}

/* ---- plan stages ---- */
static bool run_remat(Plan *p, const CompileOptions *o, Diag *d) {
  (void)o;
  return remat_run(&p->graph, d);
}

static bool run_row_blocks(Plan *p, const CompileOptions *o, Diag *d) {
  return row_blocks_run(&p->graph, o->row_block_bytes, d);
}

static bool run_chunk(Plan *p, const CompileOptions *o, Diag *d) { return chunk_run(&p->graph, o->chunk_bytes, d); }

static bool run_gemm_layout(Plan *p, const CompileOptions *o, Diag *d) {
  (void)o;
  return gemm_layout_run(&p->graph, d);
}

static bool run_fuse(Plan *p, const CompileOptions *o, Diag *d) {
  Graph *g = &p->graph;
  if (!fuse_run(g, &o->off, &p->fusion, d)) return false;
  p->have_fusion = true;
  NodeId *order = bc_malloc(sizeof(NodeId) * (size_t)(g->nodes.n ? g->nodes.n : 1));
  fusion_execution_order(g, &p->fusion, order);
  fusion_apply_order(g, &p->fusion, order);
  free(order);
  p->kernel_of = bc_malloc(sizeof(int) * (size_t)(g->nodes.n ? g->nodes.n : 1));
  fusion_kernel_of(g, &p->fusion, p->kernel_of);
  return true;
}
static bool check_fuse(const Plan *p, Diag *d) {
  return graph_verify(&p->graph, d) && fusion_check(&p->graph, &p->fusion, d);
}
static void dump_fuse(const Plan *p, FILE *f) { fusion_print(&p->graph, &p->fusion, f); }

static bool run_lower(Plan *p, const CompileOptions *o, Diag *d) { return p->lowering->run(p, o, d); }

static bool run_memplan(Plan *p, const CompileOptions *o, Diag *d) {
  if (!memplan_run_kernels(&p->graph, p->fusion.materialized, p->kernel_of, &o->off, &p->mem, d)) return false;
  p->have_mem = true;
  return true;
}
static bool check_memplan(const Plan *p, Diag *d) { return memplan_check(&p->graph, &p->mem, d); }
static void dump_memplan(const Plan *p, FILE *f) { memplan_print(&p->graph, &p->mem, f); }

#define OFF(field) (int)offsetof(OptSwitches, field)
static const Stage stages[] = {
    {"expand", PHASE_GRAPH, false, -1, false, run_expand, check_graph, dump_graph},
    {"narrow", PHASE_GRAPH, false, OFF(narrow), true, run_narrow, check_graph, dump_graph},
    {"autodiff", PHASE_GRAPH, true, -1, false, run_autodiff, check_graph, dump_graph},
    {"optim", PHASE_GRAPH, true, -1, false, run_optim, check_graph, dump_graph},
    {"simplify", PHASE_GRAPH, false, OFF(simplify), true, run_simplify, check_graph, dump_graph},
    {"schedule", PHASE_GRAPH, false, OFF(schedule), true, run_schedule, check_graph, dump_schedule},
    {"remat", PHASE_PLAN, false, OFF(remat), true, run_remat, check_graph, dump_graph},
    {"row_blocks", PHASE_PLAN, false, OFF(row_blocks), true, run_row_blocks, check_graph, dump_graph},
    {"chunk", PHASE_PLAN, false, OFF(chunk), true, run_chunk, check_graph, dump_graph},
    {"gemm_layout", PHASE_PLAN, false, OFF(gemm_layout), true, run_gemm_layout, check_graph, dump_graph},
    {"fuse", PHASE_PLAN, false, OFF(fuse), false, run_fuse, check_fuse, dump_fuse},
    {"lower", PHASE_PLAN, false, -1, false, run_lower, NULL, NULL},
    {"memplan", PHASE_PLAN, false, OFF(memplan), false, run_memplan, check_memplan, dump_memplan},
};
#undef OFF
enum { N_STAGES = sizeof stages / sizeof stages[0] };

const char *const *pipeline_pass_names(void) {
  static const char *names[N_STAGES + 1];
  for (int i = 0; i < N_STAGES; i++) names[i] = stages[i].name;
  names[N_STAGES] = NULL;
  return names;
}

bool pipeline_is_graph_stage(const char *name) {
  for (int i = 0; i < N_STAGES; i++)
    if (strcmp(stages[i].name, name) == 0) return stages[i].phase == PHASE_GRAPH;
  return false;
}

static bool env_on(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

void compile_options_default(CompileOptions *o) {
  memset(o, 0, sizeof(*o));
  adam_options_default(&o->adam);
#define READ_SWITCH(field, env, doc) o->off.field = env_on("BC_NO_" env);
  BC_OPT_SWITCHES(READ_SWITCH)
#undef READ_SWITCH
#ifdef BC_DEBUG
  o->verify = !getenv("BC_VERIFY") || env_on("BC_VERIFY");
#else
  o->verify = env_on("BC_VERIFY");
#endif
  const char *row_block = getenv("BC_ROW_BLOCK_BYTES");
  o->row_block_bytes = row_block && *row_block ? strtoll(row_block, NULL, 10) : 0;
  const char *chunk = getenv("BC_CHUNK_BYTES");
  o->chunk_bytes = chunk && *chunk ? strtoll(chunk, NULL, 10) : 0;
  const char *dump = getenv("BC_DUMP");
  o->dump_after = dump && *dump ? dump : NULL;
}

void plan_free(Plan *p) {
  if (p->kernels) p->lowering->free(p);
  if (p->have_mem) memplan_free(&p->mem);
  if (p->have_fusion) fusion_free(&p->fusion);
  free(p->kernel_of);
  if (p->have_graph) graph_free(&p->graph);
  const PlanLowering *lw = p->lowering;
  memset(p, 0, sizeof(*p));
  p->lowering = lw;
}

/* An unknown --dump-after name is an error listing the stages. */
static bool dump_name_ok(const CompileOptions *o, Diag *d) {
  if (!o->dump_after || strcmp(o->dump_after, "all") == 0) return true;
  for (int i = 0; i < N_STAGES; i++)
    if (strcmp(stages[i].name, o->dump_after) == 0) return true;
  char list[256];
  int len = 0;
  for (int i = 0; i < N_STAGES; i++)
    len += snprintf(list + len, sizeof list - (size_t)len, "%s, ", stages[i].name);
  diag_error(d, SRCLOC_NONE, "unknown pass '%s' for --dump-after (stages: %sall)", o->dump_after, list);
  return false;
}

static bool switched_off(const Stage *s, const CompileOptions *o) {
  return s->off >= 0 && *(const bool *)((const char *)&o->off + s->off);
}

/* Runs the stages of `phase` in order, each followed by its check and dump. */
static bool run_phase(Plan *p, Phase phase, const CompileOptions *o, Diag *d) {
  if (!dump_name_ok(o, d)) return false;
  for (int i = 0; i < N_STAGES; i++) {
    const Stage *s = &stages[i];
    if (s->phase != phase || (s->train_only && !o->train)) continue;
    if (s->skip && switched_off(s, o)) continue;
    if (!s->run(p, o, d)) return false;
    bool (*check)(const Plan *, Diag *) = s->check ? s->check : p->lowering->check;
    if (o->verify && check && !check(p, d)) {
      diag_error(d, SRCLOC_NONE, "internal: the plan is invalid after stage '%s'", s->name);
      return false;
    }
    const char *want = o->dump_after;
    if (want && (strcmp(want, "all") == 0 || strcmp(want, s->name) == 0)) {
      FILE *f = o->dump ? o->dump : stdout;
      fprintf(f, "# after %s\n", s->name);
      if (s->dump) s->dump(p, f);
      else p->lowering->print(p, f);
    }
  }
  return true;
}

bool pipeline_run(Graph *out, const CompileOptions *o, Diag *d) {
  Plan p = {0};
  if (!run_phase(&p, PHASE_GRAPH, o, d)) {
    plan_free(&p);
    memset(out, 0, sizeof(*out));
    return false;
  }
  *out = p.graph; /* the Graph moves out; nothing else was made */
  return true;
}

bool pipeline_run_plan(Plan *p, const Graph *g, const CompileOptions *o, Diag *d) {
  BC_ASSERT(p->lowering && !p->have_graph);
  graph_copy(&p->graph, g);
  p->have_graph = true;
  return run_phase(p, PHASE_PLAN, o, d);
}
