/* dot.c — Graphviz DOT pictures of a graph, at two levels.
 *
 * DOT_NODES: every node, labelled with its value name, op, type and YAML
 * line; each block instance (Graph.blocks: a call of a YAML block, one
 * round of a `repeat`, a backward instance, the optimizer) is a cluster,
 * nested as the instances are; inputs, parameters and states are drawn
 * where they are first read.
 * DOT_BLOCKS: one node per block instance holding nodes of its own
 * (instances that hold others are clusters around them), one per
 * graph-level node and per graph input and output; an edge per pair that
 * values cross, labelled with their types. Parameters and states are
 * counted in the label of the instance that reads them; constants are
 * left out. A training step of BERT is a few hundred nodes here, which
 * `dot` lays out in seconds (the node level is thousands).
 *
 * Deterministic: ids and orders follow the graph's. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

/* A quoted DOT string; names may hold any character. */
static void dot_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '\n') {
      fputs("\\n", f);
      continue;
    }
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* "models/lib/nn.yaml:28", "<optimizer adam>", or "" into buf (>= 256). */
static const char *loc_str(SrcLoc l, char *buf) {
  if (l.file && l.line > 0) snprintf(buf, 256, "%s:%d", l.file, l.line);
  else snprintf(buf, 256, "%s", l.file ? l.file : "");
  return buf;
}

static void type_str(const Value *v, char *buf) {
  char b[96];
  snprintf(buf, 128, "%s%s", dtype_name(v->dtype), shape_str(&v->shape, b));
}

/* The label of instance b's cluster or node: its path below its parent's,
 * the block it instantiates, where it is called. */
static char *block_label(const Graph *g, BlockId b) {
  const BlockInst *bi = &g->blocks.data[b];
  const char *rel = bi->path;
  if (bi->parent >= 0) {
    const char *pp = g->blocks.data[bi->parent].path;
    size_t n = strlen(pp);
    if (n && strncmp(rel, pp, n) == 0 && rel[n] == '.') rel += n + 1;
  }
  char loc[256], rep[32] = "";
  if (bi->repeat) snprintf(rep, sizeof rep, " x%d", bi->repeat);
  return bc_asprintf("%s: %s%s%s\n%s", rel, bi->type, rep, bi->forward >= 0 ? " (backward)" : "",
                     loc_str(bi->loc, loc));
}

typedef struct {
  const Graph *g;
  FILE *f;
  DotLevel level;
  int *n_nodes;       /* per block: nodes directly in it */
  int *n_total;       /* per block: nodes in it and its descendants */
  bool *has_children; /* per block: a descendant instance holds nodes */
  BlockId *home;      /* per value: inputs, params, states: the block of the first reader (-2 none) */
} Dot;

static bool is_const_node(const Graph *g, ValueId v) {
  NodeId n = g->values.data[v].node;
  return n >= 0 && g->nodes.data[n].op == OP_CONSTANT;
}

static bool is_root(const Graph *g, const Node *n) {
  return n->out == g->loss || (op_info[n->op].flags & OPF_SIDE_EFFECT);
}

static void open_cluster(const Dot *D, BlockId c) {
  char *label = block_label(D->g, c);
  fprintf(D->f, "subgraph cluster_b%d {\n  label=", c);
  dot_str(D->f, label);
  fprintf(D->f, ";\n  style=rounded;\n  color=%s;\n", D->g->blocks.data[c].forward >= 0 ? "firebrick" : "steelblue");
  free(label);
}

/* ---- node level ------------------------------------------------------------------- */

static void leaf_value(const Dot *D, ValueId i) {
  const Value *v = &D->g->values.data[i];
  const char *shape = v->kind == VALUE_INPUT ? "box" : v->kind == VALUE_PARAM ? "ellipse" : "diamond";
  const char *color = v->kind == VALUE_INPUT ? "lightblue" : v->kind == VALUE_PARAM ? "lightyellow" : "lightgrey";
  char t[128], loc[256];
  type_str(v, t);
  fprintf(D->f, "  v%d [shape=%s, style=filled, fillcolor=%s, label=", i, shape, color);
  char *label = bc_asprintf("%s\n%s\n%s", v->name, t, loc_str(v->loc, loc));
  dot_str(D->f, label);
  free(label);
  fprintf(D->f, "];\n");
}

static void op_node(const Dot *D, const Node *n) {
  const Value *o = &D->g->values.data[n->out];
  bool root = is_root(D->g, n);
  char t[128], loc[256];
  type_str(o, t);
  fprintf(D->f, "  v%d [shape=box, style=\"rounded%s\", %slabel=", n->out, root ? ",filled" : "",
          root ? "fillcolor=salmon, " : "");
  char *label = bc_asprintf("%s\n%s %s\n%s", o->name, op_info[n->op].name, t, loc_str(n->loc, loc));
  dot_str(D->f, label);
  free(label);
  fprintf(D->f, "];\n");
}

/* The members of block b (-1: the graph level), then its child clusters. */
static void node_level_members(const Dot *D, BlockId b) {
  const Graph *g = D->g;
  for (int i = 0; i < g->values.n; i++)
    if (g->values.data[i].kind != VALUE_NODE && D->home[i] == b) leaf_value(D, i);
  for (int i = 0; i < g->nodes.n; i++)
    if (g->nodes.data[i].block == b) op_node(D, &g->nodes.data[i]);
  for (BlockId c = 0; c < g->blocks.n; c++) {
    if (g->blocks.data[c].parent != b || D->n_total[c] == 0) continue;
    open_cluster(D, c);
    node_level_members(D, c);
    fprintf(D->f, "}\n");
  }
}

static void node_level(const Dot *D) {
  node_level_members(D, -1);
  const Graph *g = D->g;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    for (int j = 0; j < n->n_in; j++) fprintf(D->f, "  v%d -> v%d;\n", n->in[j], n->out);
  }
}

/* ---- block level ------------------------------------------------------------------ */

/* The DOT node standing for value v's producer: "b<block>", "v<value>" for a
 * graph-level node or an input; NULL for parameters, states, constants. */
static const char *unit_of(const Dot *D, ValueId v, char *buf) {
  const Graph *g = D->g;
  const Value *x = &g->values.data[v];
  if (x->kind == VALUE_PARAM || x->kind == VALUE_STATE || is_const_node(g, v)) return NULL;
  if (x->kind == VALUE_INPUT) snprintf(buf, 32, "v%d", v);
  else if (g->nodes.data[x->node].block >= 0) snprintf(buf, 32, "b%d", g->nodes.data[x->node].block);
  else snprintf(buf, 32, "v%d", v);
  return buf;
}

static void block_unit(const Dot *D, BlockId b) {
  const Graph *g = D->g;
  int n_params = 0;
  int64_t elems = 0;
  for (int i = 0; i < g->values.n; i++) {
    const Value *v = &g->values.data[i];
    if ((v->kind == VALUE_PARAM || v->kind == VALUE_STATE) && D->home[i] == b) {
      n_params++;
      elems += shape_numel(&v->shape);
    }
  }
  char *full;
  if (D->has_children[b]) { /* inside its own cluster, which says the rest */
    full = bc_asprintf("own ops\n%d op%s", D->n_nodes[b], D->n_nodes[b] == 1 ? "" : "s");
  } else {
    char *label = block_label(g, b);
    full = bc_asprintf("%s\n%d op%s", label, D->n_nodes[b], D->n_nodes[b] == 1 ? "" : "s");
    free(label);
  }
  if (n_params) {
    char *t = bc_asprintf("%s, %d param%s (%lld elements)", full, n_params, n_params == 1 ? "" : "s",
                          (long long)elems);
    free(full);
    full = t;
  }
  fprintf(D->f, "  b%d [shape=box, style=\"rounded,filled\", fillcolor=%s, label=", b,
          g->blocks.data[b].forward >= 0 ? "mistyrose" : "aliceblue");
  dot_str(D->f, full);
  fprintf(D->f, "];\n");
  free(full);
}

static void block_level_members(const Dot *D, BlockId b) {
  const Graph *g = D->g;
  if (b >= 0 && D->n_nodes[b] > 0) block_unit(D, b);
  if (b < 0) {
    for (int i = 0; i < g->inputs.n; i++)
      if (D->home[g->inputs.data[i]] != -2) leaf_value(D, g->inputs.data[i]);
    for (int i = 0; i < g->nodes.n; i++)
      if (g->nodes.data[i].block < 0 && g->nodes.data[i].op != OP_CONSTANT) op_node(D, &g->nodes.data[i]);
  }
  for (BlockId c = 0; c < g->blocks.n; c++) {
    if (g->blocks.data[c].parent != b || D->n_total[c] == 0) continue;
    if (!D->has_children[c]) {
      block_unit(D, c);
      continue;
    }
    open_cluster(D, c);
    block_level_members(D, c);
    fprintf(D->f, "}\n");
  }
}

/* One edge per (producer unit, consumer unit), labelled with the types of
 * the distinct values crossing it (three at most, then a count). */
typedef struct {
  char from[32], to[32];
  ValueId vals[3];
  int n_vals;
} Edge;

static void block_level(const Dot *D) {
  const Graph *g = D->g;
  block_level_members(D, -1);
  VEC(Edge) edges = {0};
  char ub[32], vb[32];
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->op == OP_CONSTANT) continue;
    const char *to = unit_of(D, n->out, vb);
    for (int j = 0; j < n->n_in; j++) {
      const char *from = unit_of(D, n->in[j], ub);
      if (!from || strcmp(from, to) == 0) continue;
      Edge *e = NULL;
      for (int k = edges.n - 1; k >= 0 && !e; k--)
        if (strcmp(edges.data[k].from, from) == 0 && strcmp(edges.data[k].to, to) == 0) e = &edges.data[k];
      if (!e) {
        vec_push(&edges, ((Edge){{0}, {0}, {0}, 0}));
        e = &edges.data[edges.n - 1];
        snprintf(e->from, sizeof e->from, "%s", from);
        snprintf(e->to, sizeof e->to, "%s", to);
      }
      bool seen = false;
      for (int k = 0; k < e->n_vals && k < 3; k++) seen |= e->vals[k] == n->in[j];
      if (seen) continue;
      if (e->n_vals < 3) e->vals[e->n_vals] = n->in[j];
      e->n_vals++;
    }
  }
  for (int k = 0; k < edges.n; k++) {
    const Edge *e = &edges.data[k];
    fprintf(D->f, "  %s -> %s [label=\"", e->from, e->to);
    for (int m = 0; m < e->n_vals && m < 3; m++) {
      char t[128];
      type_str(&g->values.data[e->vals[m]], t);
      fprintf(D->f, "%s%s", m ? "\\n" : "", t);
    }
    if (e->n_vals > 3) fprintf(D->f, "\\n+%d more", e->n_vals - 3);
    fprintf(D->f, "\"];\n");
  }
  vec_free(&edges);
  /* outputs and the loss as sinks */
  for (int i = 0; i < g->outputs.n; i++) {
    ValueId v = g->outputs.data[i];
    const char *from = unit_of(D, v, ub);
    char t[128];
    type_str(&g->values.data[v], t);
    fprintf(D->f, "  out%d [shape=ellipse, style=filled, fillcolor=%s, label=", i,
            v == g->loss ? "salmon" : "palegreen");
    char *label = bc_asprintf("output %s\n%s", g->values.data[v].name, t);
    dot_str(D->f, label);
    free(label);
    fprintf(D->f, "];\n");
    if (from) fprintf(D->f, "  %s -> out%d;\n", from, i);
  }
}

void graph_print_dot(const Graph *g, DotLevel level, FILE *f) {
  Dot D = {g, f, level, NULL, NULL, NULL, NULL};
  size_t nb = (size_t)g->blocks.n + 1;
  D.n_nodes = bc_calloc(nb, sizeof(int));
  D.n_total = bc_calloc(nb, sizeof(int));
  D.has_children = bc_calloc(nb, sizeof(bool));
  D.home = bc_malloc(sizeof(BlockId) * ((size_t)g->values.n + 1));
  for (int i = 0; i < g->values.n; i++) D.home[i] = -2;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (n->block >= 0 && (level == DOT_NODES || n->op != OP_CONSTANT)) D.n_nodes[n->block]++;
    for (int j = 0; j < n->n_in; j++)
      if (g->values.data[n->in[j]].kind != VALUE_NODE && D.home[n->in[j]] == -2)
        D.home[n->in[j]] = g->values.data[n->in[j]].kind == VALUE_INPUT ? -1 : n->block;
  }
  /* a value nothing reads is still drawn at the node level */
  if (level == DOT_NODES)
    for (int i = 0; i < g->values.n; i++)
      if (D.home[i] == -2) D.home[i] = -1;
  for (BlockId b = (BlockId)g->blocks.n - 1; b >= 0; b--) { /* children come after parents */
    int own = D.n_nodes[b];
    for (int i = 0; level == DOT_NODES && i < g->values.n; i++) own += D.home[i] == b;
    D.n_total[b] += own;
    BlockId p = g->blocks.data[b].parent;
    if (p >= 0 && D.n_total[b] > 0) {
      D.n_total[p] += D.n_total[b];
      D.has_children[p] = true;
    }
  }
  fprintf(f, "digraph ");
  dot_str(f, g->name);
  /* newrank: ranks over the whole graph, not per cluster; with edges from
   * inside one nested cluster into another (a backward block reading the
   * forward's values) dot's cluster ranking can fail ("trouble in
   * init_rank") */
  fprintf(f, " {\n  newrank=true;\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n");
  fprintf(f, "  edge [fontname=\"Helvetica\", fontsize=8];\n");
  if (level == DOT_BLOCKS) block_level(&D);
  else node_level(&D);
  fprintf(f, "}\n");
  free(D.n_nodes);
  free(D.n_total);
  free(D.has_children);
  free(D.home);
}
