/* pipeline.c — the whole middle end as one ordered table of named passes.
 * The IR is verified after every pass in debug builds and when BC_VERIFY=1;
 * `--dump-after PASS|all` prints the canonical text form after a pass. Each
 * pass but expand can be switched off for bisecting with BC_NO_<PASS>=1
 * (BC_NO_SIMPLIFY=1, ...). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name;
  bool train_only;
  bool (*run)(Graph *g, const CompileOptions *o, Diag *d);
} Pass;

static bool run_autodiff(Graph *g, const CompileOptions *o, Diag *d) {
  (void)o;
  if (g->loss < 0) {
    diag_error(d, (SrcLoc){bc_intern(o->model_path), 0, 0},
               "graph '%s' declares no `loss:`, so it cannot be trained", g->name);
    return false;
  }
  return autodiff_run(g, d);
}
static bool run_optim(Graph *g, const CompileOptions *o, Diag *d) { return optim_adam_run(g, &o->adam, d); }
static bool run_simplify(Graph *g, const CompileOptions *o, Diag *d) {
  (void)o;
  return simplify_run(g, d);
}

static bool run_schedule(Graph *g, const CompileOptions *o, Diag *d) {
  (void)o;
  return schedule_run(g, d);
}

static const Pass passes[] = {
    {"autodiff", true, run_autodiff},
    {"optim", true, run_optim},
    {"simplify", false, run_simplify},
    {"schedule", false, run_schedule},
};
enum { N_PASSES = sizeof passes / sizeof passes[0] };

const char *const *pipeline_pass_names(void) {
  static const char *names[N_PASSES + 2];
  names[0] = "expand";
  for (int i = 0; i < N_PASSES; i++) names[i + 1] = passes[i].name;
  names[N_PASSES + 1] = NULL;
  return names;
}

void compile_options_default(CompileOptions *o) {
  memset(o, 0, sizeof(*o));
  adam_options_default(&o->adam);
}

static bool env_on(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

static bool verify_on(void) {
#ifdef BC_DEBUG
  return !getenv("BC_VERIFY") || env_on("BC_VERIFY");
#else
  return env_on("BC_VERIFY");
#endif
}

static bool after(Graph *g, const CompileOptions *o, const char *pass, Diag *d) {
  if (verify_on() && !graph_verify(g, d)) {
    diag_error(d, SRCLOC_NONE, "internal: the IR is invalid after pass '%s'", pass);
    return false;
  }
  const char *want = o->dump_after;
  if (!want && getenv("BC_DUMP")) want = getenv("BC_DUMP");
  if (want && (strcmp(want, "all") == 0 || strcmp(want, pass) == 0)) {
    FILE *f = o->dump ? o->dump : stdout;
    fprintf(f, "# after %s\n", pass);
    graph_print(g, f);
  }
  return true;
}

bool pipeline_run(Graph *out, const CompileOptions *o, Diag *d) {
  if (o->dump_after && strcmp(o->dump_after, "all") != 0) {
    bool known = false;
    for (const char *const *p = pipeline_pass_names(); *p; p++)
      if (strcmp(*p, o->dump_after) == 0) known = true;
    if (!known) {
      diag_error(d, SRCLOC_NONE, "unknown pass '%s' for --dump-after (passes: expand, autodiff, optim, simplify, schedule, fuse, memplan, all)",
                 o->dump_after);
      return false;
    }
  }
  if (!model_expand(out, o->model_path, o->graph_name, o->sets, o->n_sets, d)) return false;
  if (!after(out, o, "expand", d)) goto fail;
  for (int i = 0; i < N_PASSES; i++) {
    const Pass *p = &passes[i];
    if (p->train_only && !o->train) continue;
    char env[64];
    snprintf(env, sizeof env, "BC_NO_%s", p->name);
    for (char *c = env; *c; c++)
      if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
    /* autodiff and the optimizer are what --train means; only optional
     * passes can be switched off */
    if (!p->train_only && env_on(env)) continue;
    if (!p->run(out, o, d)) goto fail;
    if (!after(out, o, p->name, d)) goto fail;
  }
  return true;
fail:
  graph_free(out);
  return false;
}
