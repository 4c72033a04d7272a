/* test_pipeline.c — the middle end as one table (passes/pipeline.c): every
 * stage can be dumped by name, an unknown name lists the stages, the checks
 * run after every stage catch a broken plan, and each switch of options.h
 * changes what it says it changes (kernel counts, duplicate nodes, in-place
 * writes, emitted CUDA text), always on a tiny training step of the BERT
 * model. Numerics are not checked here: switches change only the plan, and
 * test_cpu and test_gpu compare plans with the interpreter. */
#include "codegen/cuda_emit.h"
#include "codegen/kernel.h"
#include "passes/passes.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"

static const Setting tiny[] = {
    {"vocab", "40"}, {"hidden", "8"}, {"ffn", "16"}, {"heads", "2"}, {"layers", "2"},
    {"max_len", "12"}, {"batch", "4"}, {"n_pred", "2"}, {"dropout", "0.2"},
};

/* Options for the tiny nli training step: everything on, checks on, no
 * dump, whatever the environment says. */
static CompileOptions tiny_options(void) {
  CompileOptions o;
  compile_options_default(&o);
  memset(&o.off, 0, sizeof o.off);
  o.verify = true;
  o.dump_after = NULL;
  o.model_path = MODEL;
  o.graph_name = "nli";
  o.sets = tiny;
  o.n_sets = (int)(sizeof tiny / sizeof tiny[0]);
  o.train = true;
  return o;
}

typedef struct {
  bool ok;
  Graph g;  /* after the graph stages */
  Graph eg; /* after the plan stages */
  KernelPlan plan;
  MemPlan mem;
} Compiled;

static Compiled compile(const CompileOptions *o) {
  Compiled c;
  memset(&c, 0, sizeof c);
  Diag d;
  diag_init(&d);
  c.ok = pipeline_run(&c.g, o, &d);
  if (c.ok && !kernel_plan_compile(&c.g, o, &c.eg, &c.plan, &c.mem, &d)) {
    graph_free(&c.g);
    c.ok = false;
  }
  if (!c.ok) diag_print(&d, stderr);
  diag_free(&d);
  CHECK(c.ok);
  return c;
}

static void compiled_free(Compiled *c) {
  if (!c->ok) return;
  memplan_free(&c->mem);
  kernel_plan_free(&c->plan);
  graph_free(&c->eg);
  graph_free(&c->g);
}

/* The CUDA C of c's plan (NVRTC is not needed to emit it). */
static char *cuda_text(const Compiled *c) {
  CudaLaunch *launches = calloc((size_t)c->plan.kernels.n + 1, sizeof(CudaLaunch));
  Diag d;
  diag_init(&d);
  char *src = cuda_emit_plan(&c->eg, &c->plan, launches, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  free(launches);
  CHECK(src != NULL);
  return src;
}

static int count_substr(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what)) n++;
  return n;
}

/* Every stage of the table, dumped alone, prints its header and something
 * after it; `all` prints one header per stage. */
TEST(every_stage_dumps) {
  int n_stages = 0;
  for (const char *const *name = pipeline_pass_names(); *name; name++, n_stages++) {
    CompileOptions o = tiny_options();
    o.dump_after = *name;
    char *text = NULL;
    size_t len = 0;
    o.dump = open_memstream(&text, &len);
    Compiled c = compile(&o);
    fclose(o.dump);
    char header[64];
    snprintf(header, sizeof header, "# after %s\n", *name);
    CHECK_MSG(strncmp(text, header, strlen(header)) == 0, "stage %s: dump starts '%.40s'", *name, text);
    CHECK_MSG(len > strlen(header) + 40, "stage %s dumps %zu bytes", *name, len);
    CHECK_EQ_INT(count_substr(text, "# after "), 1);
    free(text);
    compiled_free(&c);
  }
  CHECK_EQ_INT(n_stages, 13);
  CompileOptions o = tiny_options();
  o.dump_after = "all";
  char *text = NULL;
  size_t len = 0;
  o.dump = open_memstream(&text, &len);
  Compiled c = compile(&o);
  fclose(o.dump);
  CHECK_EQ_INT(count_substr(text, "# after "), n_stages);
  /* what each plan stage prints */
  CHECK(strstr(text, "# after fuse\ngroup 0 [") != NULL);
  CHECK(strstr(text, "\ngroups: ") != NULL);
  CHECK(strstr(text, "# after lower\nkernel k0_") != NULL);
  CHECK(strstr(text, "\nbucket 0: ") != NULL); /* training: the gradient buckets */
  CHECK(strstr(text, "# after memplan\n") != NULL && strstr(text, "\nmemplan: memory reduced from") != NULL);
  free(text);
  compiled_free(&c);
}

/* An unknown stage name fails before any work and names every stage. */
TEST(unknown_stage_lists_stages) {
  CompileOptions o = tiny_options();
  o.dump_after = "fusion";
  Diag d;
  diag_init(&d);
  Graph g;
  CHECK(!pipeline_run(&g, &o, &d));
  CHECK_EQ_INT(d.n_errors, 1);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  diag_print(&d, f);
  fclose(f);
  CHECK(strstr(text, "unknown pass 'fusion'") != NULL);
  for (const char *const *name = pipeline_pass_names(); *name; name++) {
    char item[64];
    snprintf(item, sizeof item, " %s,", *name);
    CHECK_MSG(strstr(text, item) != NULL, "stage %s missing from: %s", *name, text);
  }
  free(text);
  diag_free(&d);
}

/* The checks after the plan stages see a broken fusion and a broken kernel. */
TEST(checks_catch_broken_plans) {
  CompileOptions o = tiny_options();
  Compiled c = compile(&o);
  if (!c.ok) return;
  Diag d;
  diag_init(&d);
  CHECK(kernel_plan_check(&c.eg, &c.plan, &d));
  CHECK_EQ_INT(d.n_errors, 0);
  /* a kernel reading an instruction that comes after it */
  Kernel *k = NULL;
  for (int i = 0; i < c.plan.kernels.n && !k; i++)
    if (c.plan.kernels.data[i].kind == KERNEL_LOOP && c.plan.kernels.data[i].insts.n > 2) k = &c.plan.kernels.data[i];
  CHECK(k != NULL);
  if (k) {
    KInst *last = &k->insts.data[k->insts.n - 1];
    int saved = last->a;
    last->a = k->insts.n - 1;
    CHECK(!kernel_plan_check(&c.eg, &c.plan, &d));
    last->a = saved;
  }
  /* a kernel storing into a value the plan keeps in registers */
  bool *mat = c.plan.materialized;
  ValueId v = k ? k->views.data[0].value : 0;
  mat[v] = false;
  int before = d.n_errors;
  CHECK(!kernel_plan_check(&c.eg, &c.plan, &d));
  CHECK(d.n_errors > before);
  mat[v] = true;
  diag_free(&d);

  /* a fusion whose groups run out of order, or that keeps a value read by
   * another group in registers */
  Fusion f;
  diag_init(&d);
  CHECK(fuse_run(&c.eg, NULL, &f, &d));
  CHECK(fusion_check(&c.eg, &f, &d));
  int a = -1, b = -1;
  for (int i = 0; i < c.eg.nodes.n; i++)
    if (f.group_of[i] >= 0) {
      if (a < 0) a = i;
      else if (f.group_of[i] != f.group_of[a]) {
        b = i;
        break;
      }
    }
  CHECK(a >= 0 && b >= 0);
  if (a >= 0 && b >= 0) {
    int t = f.group_of[a];
    f.group_of[a] = f.group_of[b];
    f.group_of[b] = t;
    CHECK(!fusion_check(&c.eg, &f, &d));
    f.group_of[b] = f.group_of[a];
    f.group_of[a] = t;
  }
  diag_free(&d);
  diag_init(&d);
  CHECK(fusion_check(&c.eg, &f, &d));
  CHECK(c.eg.loss >= 0);
  f.materialized[c.eg.loss] = false;
  CHECK(!fusion_check(&c.eg, &f, &d));
  fusion_free(&f);
  diag_free(&d);
  compiled_free(&c);
}

/* Every switch is read from its BC_NO_<NAME> variable. */
TEST(switches_come_from_the_environment) {
  static const char *const envs[] = {
#define ENV_NAME(field, env, doc) "BC_NO_" env,
      BC_OPT_SWITCHES(ENV_NAME)
#undef ENV_NAME
  };
  enum { N = sizeof envs / sizeof envs[0] };
  CHECK_EQ_INT(N, (int)sizeof(OptSwitches));
  for (int i = 0; i < N; i++) {
    char *saved = getenv(envs[i]) ? strdup(getenv(envs[i])) : NULL;
    setenv(envs[i], "1", 1);
    CompileOptions o;
    compile_options_default(&o);
    const bool *on = (const bool *)&o.off;
    for (int j = 0; j < N; j++) CHECK_MSG(on[j] == (i == j) || getenv(envs[j]), "%s sets switch %d", envs[i], j);
    setenv(envs[i], "0", 1);
    compile_options_default(&o);
    CHECK_MSG(!on[i], "%s=0 switches it off", envs[i]);
    if (saved) setenv(envs[i], saved, 1);
    else unsetenv(envs[i]);
    free(saved);
  }
}

/* fuse and view_fold change the number of kernels; the plan stays valid
 * (compile() runs every check). */
TEST(fusion_switches_change_kernel_counts) {
  CompileOptions o = tiny_options();
  Compiled on = compile(&o);
  o.off.fuse = true;
  Compiled nofuse = compile(&o);
  o.off.fuse = false;
  o.off.view_fold = true;
  Compiled noview = compile(&o);
  if (on.ok && nofuse.ok && noview.ok) {
    int k_on = on.plan.kernels.n, k_nofuse = nofuse.plan.kernels.n, k_noview = noview.plan.kernels.n;
    CHECK_MSG(k_nofuse > 2 * k_on, "kernels: fused %d, BC_NO_FUSE %d", k_on, k_nofuse);
    CHECK_MSG(k_noview > k_on, "kernels: fused %d, BC_NO_VIEW_FOLD %d", k_on, k_noview);
    /* without view folding every permute and slice runs in a kernel */
    int folded_views = 0;
    for (int i = 0; i < noview.plan.kernels.n; i++)
      for (int j = 0; j < noview.plan.kernels.data[i].nodes.n; j++) {
        Op op = noview.eg.nodes.data[noview.plan.kernels.data[i].nodes.data[j]].op;
        folded_views += op == OP_PERMUTE || op == OP_SLICE;
      }
    int views = 0;
    for (int i = 0; i < noview.eg.nodes.n; i++)
      views += noview.eg.nodes.data[i].op == OP_PERMUTE || noview.eg.nodes.data[i].op == OP_SLICE;
    CHECK(views > 0);
    CHECK_EQ_INT(folded_views, views);
  }
  compiled_free(&on);
  compiled_free(&nofuse);
  compiled_free(&noview);
}

/* memplan and inplace change the arena and the in-place writes. */
TEST(memory_switches) {
  CompileOptions o = tiny_options();
  Compiled on = compile(&o);
  o.off.inplace = true;
  Compiled noinplace = compile(&o);
  o.off.inplace = false;
  o.off.memplan = true;
  Compiled off = compile(&o);
  if (on.ok && noinplace.ok && off.ok) {
    CHECK(on.mem.n_inplace > 0);
    CHECK_EQ_INT(noinplace.mem.n_inplace, 0);
    CHECK(noinplace.mem.arena_bytes < noinplace.mem.sum_intermediate_bytes); /* still reused */
    CHECK(off.mem.disabled);
    CHECK(off.mem.arena_bytes == off.mem.sum_intermediate_bytes);
    CHECK(on.mem.arena_bytes < off.mem.arena_bytes);
    CHECK_EQ_INT(on.plan.kernels.n, noinplace.plan.kernels.n);
  }
  compiled_free(&on);
  compiled_free(&noinplace);
  compiled_free(&off);
}

/* The memory kind of the value named `name` in c's plan (-1: no such value). */
static int mem_kind_of(const Compiled *c, const char *name) {
  for (int v = 0; v < c->eg.values.n; v++)
    if (strcmp(c->eg.values.data[v].name, name) == 0) return c->mem.slots[v].kind;
  return -1;
}

/* remat: the softmax numerators of the MLM cross-entropy (exp of the
 * shifted logits, read by its backward) are recomputed there instead of
 * stored, in the backward kernels themselves, and the intermediates
 * shrink; BC_NO_REMAT stores them again. */
TEST(remat_switch) {
  CompileOptions o = tiny_options();
  o.graph_name = "pretrain";
  Compiled on = compile(&o);
  o.off.remat = true;
  Compiled off = compile(&o);
  if (on.ok && off.ok) {
    const char *e = "loss.mlm_loss.ce.e";
    CHECK_EQ_INT(mem_kind_of(&off, e), MEM_ARENA);
    CHECK_EQ_INT(mem_kind_of(&on, e), MEM_NONE);
    /* each copy runs in its reader's kernel: never stored either */
    int copies = 0;
    for (int i = 0; i < on.eg.nodes.n; i++) {
      const Node *n = &on.eg.nodes.data[i];
      if (!n->remat) continue;
      copies++;
      CHECK_MSG(on.mem.slots[n->out].kind == MEM_NONE, "copy %s is stored", on.eg.values.data[n->out].name);
    }
    CHECK(copies > 0);
    for (int i = 0; i < off.eg.nodes.n; i++) CHECK(!off.eg.nodes.data[i].remat);
    CHECK_MSG(on.mem.sum_intermediate_bytes < off.mem.sum_intermediate_bytes, "intermediates %lld, without remat %lld",
              (long long)on.mem.sum_intermediate_bytes, (long long)off.mem.sum_intermediate_bytes);
  }
  compiled_free(&on);
  compiled_free(&off);
}

/* simplify, cse and schedule change the graph the backends get. */
TEST(graph_switches) {
  CompileOptions o = tiny_options();
  Compiled on = compile(&o);
  o.off.cse = true;
  Compiled nocse = compile(&o);
  o.off.cse = false;
  o.off.simplify = true;
  Compiled nosimp = compile(&o);
  if (on.ok && nocse.ok && nosimp.ok) {
    CHECK_MSG(nocse.g.nodes.n > on.g.nodes.n, "nodes: %d, BC_NO_CSE %d", on.g.nodes.n, nocse.g.nodes.n);
    CHECK_MSG(nosimp.g.nodes.n > nocse.g.nodes.n, "nodes: BC_NO_CSE %d, BC_NO_SIMPLIFY %d", nocse.g.nodes.n,
              nosimp.g.nodes.n);
  }
  compiled_free(&on);
  compiled_free(&nocse);
  compiled_free(&nosimp);
}

/* float4 and dedup change the CUDA C, and only it: the kernels are the same. */
TEST(emitter_switches_change_cuda_text) {
  CompileOptions o = tiny_options();
  Compiled on = compile(&o);
  o.off.float4 = true;
  Compiled no4 = compile(&o);
  o.off.float4 = false;
  o.off.dedup = true;
  Compiled nodedup = compile(&o);
  if (on.ok && no4.ok && nodedup.ok) {
    char *a = cuda_text(&on), *b = cuda_text(&no4), *c = cuda_text(&nodedup);
    if (a && b && c) {
      CHECK(count_substr(a, "16-byte accesses") > 0);
      CHECK_EQ_INT(count_substr(b, "16-byte accesses"), 0);
      CHECK(count_substr(a, "the same code as") > 0); /* the two encoder layers */
      CHECK_EQ_INT(count_substr(c, "the same code as"), 0);
      int loops = kernel_plan_count(&on.plan, KERNEL_LOOP);
      CHECK_EQ_INT(count_substr(c, "__global__"), loops);
      CHECK(count_substr(a, "__global__") < loops);
    }
    CHECK_EQ_INT(no4.plan.kernels.n, on.plan.kernels.n);
    free(a);
    free(b);
    free(c);
  }
  compiled_free(&on);
  compiled_free(&no4);
  compiled_free(&nodedup);
}

TEST_MAIN();
