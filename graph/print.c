/* print.c — the canonical text form of a graph (deterministic: ids, names,
 * dtypes, shapes, attributes, YAML locations, then counts); the Graphviz
 * pictures are dot.c's. Golden tests compare the text form, so change it
 * knowingly. */
#include "ir.h"

#include <string.h>

static void print_loc(FILE *f, SrcLoc l) {
  if (l.file && l.line > 0) fprintf(f, "  @ %s:%d:%d", l.file, l.line, l.col);
  else if (l.file) fprintf(f, "  @ %s", l.file);
}

static void print_type(FILE *f, const Value *v) {
  char b[96];
  fprintf(f, "%s%s", dtype_name(v->dtype), shape_str(&v->shape, b));
}

/* Attributes of node n as "k=v" pairs, only those its op reads. */
static void print_attrs(FILE *f, const Graph *g, const Node *n) {
  char b[96];
  const Value *o = &g->values.data[n->out];
  switch (n->op) {
  case OP_CAST: fprintf(f, " dtype=%s", dtype_name(n->a.dtype)); break;
  case OP_PERMUTE:
    fprintf(f, " perm=[");
    for (int i = 0; i < o->shape.rank; i++) fprintf(f, "%s%d", i ? "," : "", n->a.perm[i]);
    fprintf(f, "]");
    break;
  case OP_SLICE:
    fprintf(f, " axis=%d start=%lld end=%lld", n->a.axis, (long long)n->a.start, (long long)n->a.end);
    break;
  case OP_CONCAT:
  case OP_REDUCE_SUM:
  case OP_REDUCE_MAX: fprintf(f, " axis=%d", n->a.axis); break;
  case OP_MATMUL:
    if (n->a.trans_a) fprintf(f, " transpose_a");
    if (n->a.trans_b) fprintf(f, " transpose_b");
    break;
  case OP_IOTA: fprintf(f, " axis=%d", n->a.axis); break;
  case OP_RANDOM:
    fprintf(f, " key=%08x", n->a.key);
    if (n->a.key_shape.rank > 0) fprintf(f, " key_shape=%s", shape_str(&n->a.key_shape, b));
    break;
  case OP_CONSTANT: fprintf(f, " value=%.9g", n->a.scalar); break;
  case OP_ATTENTION:
  case OP_ATTENTION_GRAD:
    fprintf(f, " heads=%d dropout=%g key=%08x", n->a.heads, n->a.dropout, n->a.key);
    if (n->a.key_shape.rank > 0) fprintf(f, " key_shape=%s", shape_str(&n->a.key_shape, b));
    break;
  case OP_SCATTER_ADD: fprintf(f, " shape=%s", shape_str(&n->a.shape, b)); break;
  default: break;
  }
  if (n->stop_gradient) fprintf(f, " stop_gradient");
}

static void print_values(FILE *f, const Graph *g, const char *title, const ValueId *ids, int n) {
  fprintf(f, "%s: %d\n", title, n);
  for (int i = 0; i < n; i++) {
    const Value *v = &g->values.data[ids[i]];
    fprintf(f, "  %%%d %s : ", ids[i], v->name);
    print_type(f, v);
    if (v->kind == VALUE_PARAM || v->kind == VALUE_STATE) {
      fprintf(f, " init=%s", init_name(v->init.kind));
      if (v->init.scale != 0) fprintf(f, "(%g)", v->init.scale);
    }
    if (v->grad >= 0) fprintf(f, " grad=%%%d", v->grad);
    print_loc(f, v->loc);
    fputc('\n', f);
  }
}

void graph_print_summary(const Graph *g, FILE *f) {
  fprintf(f, "counts: %d nodes, %d parameter tensors, %lld parameter elements\n", g->nodes.n,
          g->params.n, (long long)graph_param_elements(g));
}

void graph_print(const Graph *g, FILE *f) {
  fprintf(f, "graph %s\n", g->name);
  if (g->hparams.n) {
    fprintf(f, "hparams:");
    for (int i = 0; i < g->hparams.n; i++) fprintf(f, " %s=%.9g", g->hparams.data[i].name, g->hparams.data[i].value);
    fputc('\n', f);
  }
  print_values(f, g, "inputs", g->inputs.data, g->inputs.n);
  print_values(f, g, "params", g->params.data, g->params.n);
  print_values(f, g, "states", g->states.data, g->states.n);
  fprintf(f, "nodes: %d\n", g->nodes.n);
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    const Value *o = &g->values.data[n->out];
    fprintf(f, "  %%%d %s : ", n->out, o->name);
    print_type(f, o);
    fprintf(f, " = %s(", op_info[n->op].name);
    for (int j = 0; j < n->n_in; j++) fprintf(f, "%s%%%d", j ? ", " : "", n->in[j]);
    fputc(')', f);
    print_attrs(f, g, n);
    print_loc(f, n->loc);
    fputc('\n', f);
  }
  fprintf(f, "outputs:");
  for (int i = 0; i < g->outputs.n; i++)
    fprintf(f, " %s=%%%d", g->values.data[g->outputs.data[i]].name, g->outputs.data[i]);
  fputc('\n', f);
  if (g->loss >= 0) fprintf(f, "loss: %%%d\n", g->loss);
  graph_print_summary(g, f);
}
