/* plan_check.h — a compiled plan of the d2l BERT under test: its kernels,
 * their groups and its memory plan, as static functions shared by the
 * tests of the plan stages (test_fuse.c, test_chunk.c, test_row_blocks.c).
 * Include after tests/test.h. */
#ifndef BC_TEST_PLAN_CHECK_H
#define BC_TEST_PLAN_CHECK_H

#include <stdlib.h>

#include "codegen/kernel.h"
#include "passes/passes.h"
#include "tests/test.h"

/* Each test file uses some of these; unused ones are not a warning. */
#define PLAN_FN static __attribute__((unused))

/* The plan of o's graph (what a cpu backend would run: kernels and memory
 * plan); false, with the diagnostics printed, when it does not compile. */
PLAN_FN bool plan_build(const CompileOptions *o, Graph *eg, KernelPlan *plan, MemPlan *mem) {
  Diag d;
  diag_init(&d);
  Graph g;
  bool ok = pipeline_run(&g, o, &d) && kernel_plan_compile(&g, o, eg, plan, mem, &d);
  if (!ok) diag_print(&d, stderr);
  else graph_free(&g);
  diag_free(&d);
  return ok;
}

PLAN_FN void plan_release(Graph *g, KernelPlan *p, MemPlan *m) {
  memplan_free(m);
  kernel_plan_free(p);
  graph_free(g);
}

/* The largest buffer of the arena. */
PLAN_FN int64_t plan_largest_arena_buffer(const Graph *g, const MemPlan *m) {
  int64_t big = 0;
  for (int v = 0; v < g->values.n; v++)
    if (m->slots[v].kind == MEM_ARENA && m->slots[v].alias_of < 0 && m->slots[v].bytes > big) big = m->slots[v].bytes;
  return big;
}

/* Nodes a kernel computes whose value nothing reads and nothing keeps (a
 * pass's originals left unread must be dead: fuse.c), each printed. */
PLAN_FN int plan_computed_unread(const Graph *g, const KernelPlan *p) {
  int *readers = calloc((size_t)g->values.n, sizeof(int));
  for (int i = 0; i < g->nodes.n; i++)
    for (int k = 0; k < g->nodes.data[i].n_in; k++) readers[g->nodes.data[i].in[k]]++;
  int n = 0;
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = &p->kernels.data[i];
    for (int j = 0; j < k->nodes.n; j++) {
      const Node *nd = &g->nodes.data[k->nodes.data[j]];
      if (readers[nd->out] == 0 && !p->materialized[nd->out] && nd->op != OP_ASSIGN) {
        fprintf(stderr, "  %s computes '%s', which nothing reads\n", k->name, g->values.data[nd->out].name);
        n++;
      }
    }
  }
  free(readers);
  return n;
}

#endif
