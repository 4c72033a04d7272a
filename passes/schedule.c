/* schedule.c — the execution order: the node array is rewritten into the
 * order kernels will run in.
 *
 * Requires: a verified graph. Produces: the same nodes, reordered, still
 * topological. The one rule today: cheap index computations that depend
 * only on graph inputs, parameters and generators (attention masks from
 * valid_len, flat gather indices, position slices) move to the front, so
 * that the kernels consuming them can fuse with their other producers
 * instead of waiting for them. Everything else keeps the order autodiff and
 * the optimizer produced (forward, backward, updates), which already keeps
 * activations short-lived. BC_NO_SCHEDULE=1 keeps the original order.
 *
 * Also here: the gradient buckets of data-parallel training
 * (grad_buckets_build, passes.h): where, in a backend's run order, each
 * group of parameter gradients is complete and can be all-reduced while the
 * backward pass goes on, and where the optimizer must wait for it. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

static bool cheap(Op op) {
  unsigned f = op_info[op].flags;
  return (f & (OPF_ELEMENTWISE | OPF_LAYOUT)) || op == OP_SELECT || op == OP_CAST ||
         op == OP_IOTA || op == OP_CONSTANT || op == OP_RANDOM;
}

bool schedule_run(Graph *g, Diag *d) {
  (void)d;
  int nn = g->nodes.n;
  /* early[i]: cheap and computed from inputs/params/generators only;
   * data[i]: early and reading at least one graph input or parameter
   * (directly or through early nodes): only those move, with the
   * generators they read. A node reading only generators (a dropout mask)
   * is better left where it is used. */
  bool *early = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  bool *data = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  for (int i = 0; i < nn; i++) {
    const Node *n = &g->nodes.data[i];
    if (!cheap(n->op)) continue;
    bool ok = true, reads = false;
    for (int j = 0; j < n->n_in && ok; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p >= 0 && !early[p]) ok = false;
      if ((p < 0 && g->values.data[n->in[j]].kind == VALUE_INPUT) || (p >= 0 && data[p])) reads = true;
    }
    early[i] = ok;
    data[i] = ok && reads;
  }
  bool *move = bc_calloc((size_t)(nn ? nn : 1), sizeof(bool));
  for (int i = nn - 1; i >= 0; i--) {
    const Node *n = &g->nodes.data[i];
    if (!data[i] && !move[i]) continue;
    move[i] = true;
    for (int j = 0; j < n->n_in; j++) {
      NodeId p = g->values.data[n->in[j]].node;
      if (p >= 0) move[p] = true; /* early by construction */
    }
  }
  /* stable partition: early nodes first, each part in its old order */
  Node *nodes = bc_malloc(sizeof(Node) * (size_t)(nn ? nn : 1));
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < nn; i++)
      if (move[i] == (pass == 0)) nodes[k++] = g->nodes.data[i];
  memcpy(g->nodes.data, nodes, sizeof(Node) * (size_t)nn);
  for (int i = 0; i < nn; i++) g->values.data[g->nodes.data[i].out].node = i;
  free(nodes);
  free(early);
  free(data);
  free(move);
  return true;
}

/* ---- gradient buckets (data-parallel training) ---- */

int64_t grad_bucket_bytes_default(void) {
  const char *s = getenv("BC_DIST_BUCKET_BYTES");
  if (s && *s) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*end && v > 0) return v;
  }
  return (int64_t)256 << 10;
}

void grad_buckets_free(GradBuckets *b) {
  free(b->start);
  free(b->values);
  free(b->bytes);
  free(b->ready_after);
  free(b->wait_before);
  memset(b, 0, sizeof(*b));
}

static int64_t value_bytes(const Value *v) { return shape_numel(&v->shape) * (int64_t)dtype_size(v->dtype); }

bool grad_buckets_build(const Graph *g, const int *step_of, int64_t cap, GradBuckets *out, Diag *d) {
  memset(out, 0, sizeof(*out));
  if (cap <= 0) cap = grad_bucket_bytes_default();
  int nv = g->values.n, nn = g->nodes.n;
  bool *is_grad = bc_calloc((size_t)nv + 1, sizeof(bool));
  int *bucket_of = bc_malloc(sizeof(int) * ((size_t)nv + 1));
  for (int v = 0; v < nv; v++) bucket_of[v] = -1;
  int n_grads = 0;
  for (int i = 0; i < g->params.n; i++) {
    ValueId gv = g->values.data[g->params.data[i]].grad;
    /* a gradient is always computed by a node (a zero one by a constant) */
    if (gv >= 0 && !is_grad[gv] && g->values.data[gv].node >= 0) {
      is_grad[gv] = true;
      n_grads++;
    }
  }
  int n_steps = 0;
  for (int i = 0; i < nn; i++) {
    int s = step_of ? step_of[i] : i;
    BC_ASSERT(s >= 0 && (i == 0 || s >= (step_of ? step_of[i - 1] : i - 1)) && "steps must be nondecreasing");
    if (s + 1 > n_steps) n_steps = s + 1;
  }
  out->n_steps = n_steps;
  out->start = bc_malloc(sizeof(int) * ((size_t)n_grads + 1));
  out->values = bc_malloc(sizeof(ValueId) * ((size_t)n_grads + 1));
  out->bytes = bc_malloc(sizeof(int64_t) * ((size_t)n_grads + 1));
  out->ready_after = bc_malloc(sizeof(int) * ((size_t)n_grads + 1));
  out->wait_before = bc_malloc(sizeof(int) * ((size_t)n_grads + 1));
  out->start[0] = 0;
  int nb = 0, n_vals = 0, open_ready = -1;
  int64_t open_bytes = 0;
  bool ok = true;
#define STEP(i) (step_of ? step_of[i] : (i))
#define CLOSE(ready) \
  do { \
    out->bytes[nb] = open_bytes; \
    out->ready_after[nb] = (ready); \
    out->wait_before[nb] = n_steps; \
    out->start[++nb] = n_vals; \
    open_bytes = 0; \
    open_ready = -1; \
  } while (0)
  for (int i = 0; ok && i < nn;) {
    int s = STEP(i), end = i;
    while (end < nn && STEP(end) == s) end++;
    /* reads first: a step reading a gradient of the open bucket waits for
     * it, so the bucket must be complete (and issued) before this step */
    for (int k = i; ok && k < end; k++) {
      const Node *n = &g->nodes.data[k];
      for (int j = 0; ok && j < n->n_in; j++) {
        ValueId u = n->in[j];
        if (!is_grad[u]) continue;
        NodeId p = g->values.data[u].node;
        if (p >= 0 && STEP(p) == s) {
          diag_error(d, n->loc,
                     "data-parallel training: gradient '%s' is computed and read in the same step %d; "
                     "its all-reduce needs a step boundary between them (try BC_NO_FUSE=1)",
                     g->values.data[u].name ? g->values.data[u].name : "?", s);
          ok = false;
        } else if (bucket_of[u] == nb && n_vals > out->start[nb]) {
          CLOSE(open_ready);
        }
      }
    }
    /* then the gradients this step produces, in node order; a gradient
     * that would take the bucket past the cap starts the next one */
    for (int k = i; ok && k < end; k++) {
      ValueId v = g->nodes.data[k].out;
      if (!is_grad[v] || bucket_of[v] >= 0) continue;
      int64_t vb = value_bytes(&g->values.data[v]);
      if (n_vals > out->start[nb] && open_bytes + vb > cap) CLOSE(open_ready);
      bucket_of[v] = nb;
      out->values[n_vals++] = v;
      open_bytes += vb;
      open_ready = s;
    }
    if (ok && n_vals > out->start[nb] && open_bytes >= cap) CLOSE(s);
    i = end;
  }
  if (ok && n_vals > out->start[nb]) CLOSE(open_ready);
#undef CLOSE
  out->n_buckets = nb;
  /* the first reader of each bucket */
  for (int i = 0; ok && i < nn; i++) {
    const Node *n = &g->nodes.data[i];
    for (int j = 0; j < n->n_in; j++) {
      int b = bucket_of[n->in[j]];
      if (b >= 0 && STEP(i) < out->wait_before[b]) out->wait_before[b] = STEP(i);
    }
  }
#undef STEP
  for (int b = 0; ok && b < nb; b++) {
    BC_ASSERT(out->wait_before[b] > out->ready_after[b]);
    out->total_bytes += out->bytes[b];
  }
  free(is_grad);
  free(bucket_of);
  if (!ok) grad_buckets_free(out);
  return ok;
}

void grad_buckets_print(const Graph *g, const GradBuckets *b, const char *const *step_names, FILE *f) {
  const char *word = step_names ? "kernel" : "node";
  fprintf(f, "# gradient buckets: %d, %lld bytes in all (all-reduced as soon as ready; BC_DIST_BUCKET_BYTES=%lld)\n",
          b->n_buckets, (long long)b->total_bytes, (long long)grad_bucket_bytes_default());
  for (int k = 0; k < b->n_buckets; k++) {
    char ready[160], wait[160];
    int r = b->ready_after[k], w = b->wait_before[k];
    if (step_names) snprintf(ready, sizeof ready, "%s", step_names[r]);
    else snprintf(ready, sizeof ready, "%d (%s %%%d)", r, op_info[g->nodes.data[r].op].name, g->nodes.data[r].out);
    if (w >= b->n_steps) snprintf(wait, sizeof wait, "the end of the step");
    else if (step_names) snprintf(wait, sizeof wait, "%s %s", word, step_names[w]);
    else snprintf(wait, sizeof wait, "%s %d (%s %%%d)", word, w, op_info[g->nodes.data[w].op].name, g->nodes.data[w].out);
    fprintf(f, "bucket %d: %d gradients, %lld bytes, ready after %s %s, waited for before %s\n", k,
            b->start[k + 1] - b->start[k], (long long)b->bytes[k], word, ready, wait);
    for (int i = b->start[k]; i < b->start[k + 1]; i++) {
      const Value *v = &g->values.data[b->values[i]];
      const char *param = "?";
      for (int p = 0; p < g->params.n; p++)
        if (g->values.data[g->params.data[p]].grad == b->values[i]) {
          param = g->values.data[g->params.data[p]].name;
          break;
        }
      char sh[96];
      fprintf(f, "    %%%d = d/d %s  %s%s\n", b->values[i], param, dtype_name(v->dtype), shape_str(&v->shape, sh));
    }
  }
}
