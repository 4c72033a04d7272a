/* exec.c — the backend-independent half of execution: choosing a backend by
 * name, the Exec handle's life cycle, argument checks, and drawing initial
 * values of parameters and optimizer state.
 *
 * Also the backend-independent half of the data-parallel hooks
 * (grad_sync_*: which buckets to issue after and wait for before each step).
 *
 * Not here: any computation (each backend's run) or host buffers beyond the
 * temporary one used by exec_init_params; collectives (dist.c).
 *
 * Invariant: initial values depend only on (seed, value name, shape, init),
 * never on the backend or the graph, so a parameter shared by name between
 * the pretraining and NLI graphs starts equal in both, on every device. */
#include "backend.h"
#include "philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Backends by name. */
static const Backend *const backends[] = {
    &backend_interp,
    &backend_cpu,
    &backend_cuda,
};

const Backend *backend_by_name(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
    if (strcmp(backends[i]->name, name) == 0) return backends[i];
  return NULL;
}

/* A spec naming several devices: "B:I,J,..." or "B:all". */
static bool is_list_spec(const char *spec) {
  const char *c = spec ? strchr(spec, ':') : NULL;
  return c && (strchr(c, ',') || strcmp(c + 1, "all") == 0);
}

/* "interp, cpu, cuda or cuda:N": every backend, and "B:N" for those with
 * devices, into buf. */
static const char *device_choices(char *buf, size_t cap) {
  const char *names[2 * sizeof(backends) / sizeof(backends[0])];
  char with_n[sizeof(backends) / sizeof(backends[0])][24];
  int n = 0;
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) names[n++] = backends[i]->name;
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
    if (backends[i]->device_count) {
      snprintf(with_n[i], sizeof with_n[i], "%s:N", backends[i]->name);
      names[n++] = with_n[i];
    }
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < n && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
  return buf;
}

/* "B:rest": the backend named B, rest after the colon; NULL when spec has
 * no colon or B names no backend. */
static const Backend *by_prefix(const char *spec, const char **rest) {
  const char *colon = spec ? strchr(spec, ':') : NULL;
  char name[16] = "";
  if (!colon || (size_t)(colon - spec) >= sizeof name) return NULL;
  memcpy(name, spec, (size_t)(colon - spec));
  *rest = colon + 1;
  return backend_by_name(name);
}

const Backend *backend_parse(const char *spec, int *device, Diag *d) {
  *device = 0;
  if (is_list_spec(spec)) {
    diag_error(d, SRCLOC_NONE,
               "device '%s' names several devices: only `bertrun train` runs replicas on several devices; "
               "name one here (%s)",
               spec, device_choices((char[128]){0}, 128));
    return NULL;
  }
  const char *rest;
  const Backend *b = by_prefix(spec, &rest);
  if (b && b->device_count) { /* B:N */
    char *end;
    long n = strtol(rest, &end, 10);
    if (rest[0] && !*end && n >= 0 && n < 1024) {
      *device = (int)n;
      return b;
    }
  } else if (!b) {
    b = backend_by_name(spec);
    if (b) return b;
  }
  diag_error(d, SRCLOC_NONE, "unknown device '%s' (choose %s)", spec ? spec : "", device_choices((char[128]){0}, 128));
  return NULL;
}

const Backend *backend_parse_list(const char *spec, int devices[BC_MAX_REPLICAS], int *n, Diag *d) {
  *n = 0;
  if (!is_list_spec(spec)) {
    const Backend *b = backend_parse(spec, &devices[0], d);
    if (b) *n = 1;
    return b;
  }
  const char *rest = NULL;
  const Backend *b = by_prefix(spec, &rest);
  if (!b) {
    diag_error(d, SRCLOC_NONE, "unknown device list '%s' (choose cuda:I,J,..., cuda:all, cpu:0,1,... or interp:0,1,...)",
               spec);
    return NULL;
  }
  if (strcmp(rest, "all") == 0) {
    if (!b->device_count) {
      diag_error(d, SRCLOC_NONE, "device list '%s': 'all' counts GPUs, so it is for cuda only (cpu:0,1 gives two host replicas)",
                 spec);
      return NULL;
    }
    int count;
    if (!b->device_count(&count, d)) return NULL;
    if (count > BC_MAX_REPLICAS) count = BC_MAX_REPLICAS;
    for (int i = 0; i < count; i++) devices[i] = i;
    *n = count;
    return b;
  }
  for (const char *p = rest;;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || (*end && *end != ',') || v < 0 || v >= 1024) {
      diag_error(d, SRCLOC_NONE, "device list '%s': '%.*s' is not a device number", spec, (int)strcspn(p, ","), p);
      return NULL;
    }
    for (int i = 0; i < *n; i++)
      if (devices[i] == (int)v) {
        diag_error(d, SRCLOC_NONE, "device list '%s' names device %ld twice", spec, v);
        return NULL;
      }
    if (*n == BC_MAX_REPLICAS) {
      diag_error(d, SRCLOC_NONE, "device list '%s' names more than %d devices", spec, BC_MAX_REPLICAS);
      return NULL;
    }
    devices[(*n)++] = (int)v;
    if (!*end) break;
    p = end + 1;
  }
  return b;
}

Exec *exec_create_spec(const char *spec, const Graph *g, Diag *d) {
  int device;
  const Backend *b = backend_parse(spec, &device, d);
  return b ? exec_create_on(b, device, g, d) : NULL;
}

Exec *exec_create(const Backend *b, const Graph *g, Diag *d) { return exec_create_on(b, 0, g, d); }

void exec_convert(const void *src, DType src_t, void *dst, DType dst_t, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double x = src_t == DTYPE_F32 ? ((const float *)src)[i]
               : src_t == DTYPE_I32 ? ((const int32_t *)src)[i]
                                    : ((const double *)src)[i];
    if (dst_t == DTYPE_F32) ((float *)dst)[i] = (float)x;
    else if (dst_t == DTYPE_I32) ((int32_t *)dst)[i] = (int32_t)x;
    else ((double *)dst)[i] = x;
  }
}

void exec_error_fused_away(Diag *d, const Exec *e, ValueId v) {
  const Value *val = &e->graph->values.data[v];
  diag_error(d, val->loc,
             "%s: value '%s' lives only inside a fused kernel; read outputs, the loss, "
             "parameters, state or gradients (or run with BC_NO_FUSE=1)",
             e->backend->name, val->name);
}

static Exec *create(const Backend *b, int device, const Graph *g, Exec *owner, Diag *d) {
  BC_ASSERT(b && g);
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = &g->nodes.data[i];
    if (!b->supports_op(n->op)) {
      diag_error(d, n->loc, "backend '%s' does not support op '%s'", b->name, op_info[n->op].name);
      return NULL;
    }
  }
  Exec *e = bc_calloc(1, sizeof(*e));
  e->backend = b;
  e->graph = g;
  e->device = device;
  e->owner = owner;
  if (!b->prepare(e, d)) {
    free(e);
    return NULL;
  }
  return e;
}

Exec *exec_create_on(const Backend *b, int device, const Graph *g, Diag *d) { return create(b, device, g, NULL, d); }

/* The owner's value sharing v's name, or -1 (v is not a parameter or state). */
static ValueId owner_value(const Exec *e, const Graph *g, ValueId v) {
  const Value *val = &g->values.data[v];
  if (!e->owner || (val->kind != VALUE_PARAM && val->kind != VALUE_STATE)) return -1;
  return graph_find(e->owner->graph, val->name);
}

void *exec_shared_ptr(const Exec *e, const Graph *g, ValueId v) {
  ValueId o = owner_value(e, g, v);
  DType t;
  return o < 0 ? NULL : exec_value_ptr(e->owner, o, &t);
}

Exec *exec_create_sharing(Exec *owner, const Graph *g, Diag *d) {
  BC_ASSERT(owner && owner->backend->value_ptr);
  for (int v = 0; v < g->values.n; v++) {
    const Value *val = &g->values.data[v];
    if (val->kind != VALUE_PARAM && val->kind != VALUE_STATE) continue;
    ValueId o = graph_find(owner->graph, val->name);
    const Value *ov = o >= 0 ? &owner->graph->values.data[o] : NULL;
    if (!ov || ov->kind != val->kind || ov->dtype != val->dtype || !shape_eq(&ov->shape, &val->shape)) {
      diag_error(d, val->loc, "'%s' cannot share its buffer: graph '%s' %s", val->name, owner->graph->name,
                 ov ? "holds it with another type or shape" : "has no value of that name");
      return NULL;
    }
  }
  return create(owner->backend, owner->device, g, owner, d);
}

void exec_destroy(Exec *e) {
  if (!e) return;
  if (e->impl) e->backend->release(e);
  free(e);
}

static bool check_value(const Exec *e, ValueId v, const char *what, Diag *d) {
  if (v >= 0 && v < e->graph->values.n) return true;
  diag_error(d, SRCLOC_NONE, "%s: value id %d out of range (graph '%s' has %d values)", what,
             (int)v, e->graph->name ? e->graph->name : "?", e->graph->values.n);
  return false;
}

bool exec_write(Exec *e, ValueId v, const void *src, DType host_t, Diag *d) {
  if (!check_value(e, v, "exec_write", d)) return false;
  return e->backend->write(e, v, src, host_t, d);
}

bool exec_read(Exec *e, ValueId v, void *dst, DType host_t, Diag *d) {
  if (!check_value(e, v, "exec_read", d)) return false;
  return e->backend->read(e, v, dst, host_t, d);
}

bool exec_stats(Exec *e, ExecStats *s) {
  memset(s, 0, sizeof(*s));
  return e->backend->stats && e->backend->stats(e, s);
}

bool exec_run(Exec *e, const RunContext *ctx, Diag *d) {
  BC_ASSERT(ctx);
  return e->backend->run(e, ctx, d);
}

/* Init draws use this step number, one no training run reaches, so they
 * never coincide with a dropout mask of the same key. */
#define INIT_STEP 0xFFFFFFFFu

/* Uniform in [0, 1) for element i of the value keyed `key`, stream `k`
 * (0 or 1: Box-Muller needs two per element). */
static double init_uniform(uint64_t seed, uint32_t key, int64_t i, int k) {
  return philox_uniform(seed, INIT_STEP, key, (uint64_t)i * 2u + (uint64_t)k);
}

/* The initial value of `v` into x (numel doubles). */
static void draw_init(const Value *v, uint64_t seed, double *x) {
  int64_t numel = shape_numel(&v->shape);
  uint32_t key = bc_hash32(v->name ? v->name : "");
  const Shape *s = &v->shape;
  double scale = v->init.scale != 0 ? v->init.scale : 1.0; /* 0 = unset = 1 */
  switch (v->init.kind) {
  case INIT_ZEROS:
  case INIT_ONES:
    for (int64_t i = 0; i < numel; i++) x[i] = v->init.kind == INIT_ONES ? 1.0 : 0.0;
    break;
  case INIT_XAVIER: {
    /* MXNet Xavier(rnd_type="uniform", factor_type="avg", magnitude=3):
     * bound sqrt(3 / ((fan_in + fan_out) / 2)); fans are the last two dims
     * (which is which does not matter for "avg"). */
    double fan_in = 1, fan_out = 1;
    if (s->rank >= 2) {
      fan_in = (double)s->dim[s->rank - 2];
      fan_out = (double)s->dim[s->rank - 1];
    } else if (s->rank == 1) {
      fan_in = fan_out = (double)s->dim[0];
    }
    double bound = sqrt(6.0 / (fan_in + fan_out));
    for (int64_t i = 0; i < numel; i++) x[i] = (2.0 * init_uniform(seed, key, i, 0) - 1.0) * bound;
    break;
  }
  case INIT_NORMAL:
    /* Box-Muller: u1 in (0, 1] so the log is finite; |z| <= 5.77 with
     * 24-bit uniforms, a tail cut no training notices. */
    for (int64_t i = 0; i < numel; i++) {
      double u1 = 1.0 - init_uniform(seed, key, i, 0), u2 = init_uniform(seed, key, i, 1);
      x[i] = scale * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    }
    break;
  case INIT_UNIFORM:
    for (int64_t i = 0; i < numel; i++) x[i] = (2.0 * init_uniform(seed, key, i, 0) - 1.0) * scale;
    break;
  }
}

static bool init_values(Exec *e, const ValueId *ids, int n, uint64_t seed, Diag *d) {
  for (int i = 0; i < n; i++) {
    const Value *v = &e->graph->values.data[ids[i]];
    double *x = bc_malloc((size_t)shape_numel(&v->shape) * sizeof(double));
    draw_init(v, seed, x);
    bool ok = exec_write(e, ids[i], x, DTYPE_F64, d);
    free(x);
    if (!ok) return false;
  }
  return true;
}

bool exec_init_params(Exec *e, uint64_t seed, Diag *d) {
  const Graph *g = e->graph;
  return init_values(e, g->params.data, g->params.n, seed, d) &&
         init_values(e, g->states.data, g->states.n, seed, d);
}

/* ---- data-parallel hooks (runtime/dist.c drives them) ---- */

const GradBuckets *exec_set_grad_sync(Exec *e, int64_t bucket_bytes, const GradSyncHooks *h, Diag *d) {
  if (!e->backend->set_grad_sync) {
    diag_error(d, SRCLOC_NONE,
               "backend '%s' cannot train data-parallel yet (no gradient all-reduce hooks); use --device cpu",
               e->backend->name);
    return NULL;
  }
  return e->backend->set_grad_sync(e, bucket_bytes, h, d);
}

void *exec_value_ptr(Exec *e, ValueId v, DType *t) {
  if (!e->backend->value_ptr || v < 0 || v >= e->graph->values.n) return NULL;
  return e->backend->value_ptr(e, v, t);
}

/* CSR of buckets by step: at[b] is bucket b's step (-1 or >= n_steps: none). */
static void by_step(const int *at, int n_buckets, int n_steps, int **start, int **list) {
  *start = bc_calloc((size_t)n_steps + 2, sizeof(int));
  *list = bc_malloc(sizeof(int) * (size_t)(n_buckets ? n_buckets : 1));
  for (int b = 0; b < n_buckets; b++)
    if (at[b] >= 0 && at[b] < n_steps) (*start)[at[b] + 1]++;
  for (int k = 0; k < n_steps; k++) (*start)[k + 1] += (*start)[k];
  int *fill = bc_calloc((size_t)n_steps + 1, sizeof(int));
  for (int b = 0; b < n_buckets; b++)
    if (at[b] >= 0 && at[b] < n_steps) (*list)[(*start)[at[b]] + fill[at[b]]++] = b;
  free(fill);
}

bool grad_sync_init(GradSync *s, const Graph *run_graph, const int *step_of, int64_t bucket_bytes,
                    const GradSyncHooks *h, Diag *d) {
  memset(s, 0, sizeof(*s));
  if (!grad_buckets_build(run_graph, step_of, bucket_bytes, &s->buckets, d)) return false;
  s->hooks = *h;
  by_step(s->buckets.ready_after, s->buckets.n_buckets, s->buckets.n_steps, &s->ready_start, &s->ready_list);
  by_step(s->buckets.wait_before, s->buckets.n_buckets, s->buckets.n_steps, &s->wait_start, &s->wait_list);
  return true;
}

void grad_sync_free(GradSync *s) {
  grad_buckets_free(&s->buckets);
  free(s->ready_start);
  free(s->ready_list);
  free(s->wait_start);
  free(s->wait_list);
  memset(s, 0, sizeof(*s));
}

void grad_sync_before(const GradSync *s, int k, void *stream) {
  if (k < 0 || k >= s->buckets.n_steps) return;
  for (int i = s->wait_start[k]; i < s->wait_start[k + 1]; i++) s->hooks.wait(s->hooks.ctx, s->wait_list[i], stream);
}

void grad_sync_after(const GradSync *s, int k, const char *name, double t0_ns, double t1_ns, void *stream) {
  if (s->hooks.step) s->hooks.step(s->hooks.ctx, k, name, t0_ns, t1_ns);
  if (k < 0 || k >= s->buckets.n_steps) return;
  for (int i = s->ready_start[k]; i < s->ready_start[k + 1]; i++)
    s->hooks.ready(s->hooks.ctx, s->ready_list[i], stream);
}

void grad_sync_end(const GradSync *s, int n_run, void *stream) {
  for (int b = 0; b < s->buckets.n_buckets; b++)
    if (s->buckets.wait_before[b] >= n_run) s->hooks.wait(s->hooks.ctx, b, stream);
}
