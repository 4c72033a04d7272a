/* cuda_emit_internal.h — what the pieces of the CUDA code generator share:
 * the output buffer, the emitter's state for one kernel, and the entry
 * points of the value printer (cuda_expr.c), of the kernel bodies
 * (cuda_kernels.c) and of cuda_emit.c's error report.
 * Private to codegen/cuda_*.c: not part of cuda_emit.h's API.
 * Invariant: an Em emits one kernel; after an error (E->ok false) what it
 * wrote is dropped by cuda_emit.c, so the pieces may stop early. */
#ifndef BC_CUDA_EMIT_INTERNAL_H
#define BC_CUDA_EMIT_INTERNAL_H

#include "cuda_emit.h"

#include <stdarg.h>

#include "../graph/strbuf.h"

/* ---- output (cuda_expr.c) ------------------------------------------------------ */

/* The emitted text grows in a StrBuf (graph/strbuf.h): strbuf_printf. */

/* ---- the emitter's state ------------------------------------------------------- */

typedef enum { SHAPE_ELEM, SHAPE_ELEM4, SHAPE_ROW_WARP, SHAPE_ROW_BLOCK, SHAPE_COL } LaunchShape;

typedef struct {
  StrBuf *o;
  const Graph *g; /* may be NULL (hand-built kernels): no names in comments */
  const Kernel *k;
  Diag *d;
  bool ok;
  int rank, n, ind;
  int64_t L;       /* last domain axis; 1 for a rank-0 domain */
  const char *it;  /* index type: "int", or "long long" for big domains */
  LaunchShape shape;
  int block;       /* threads per block */
  int tj, kt;      /* column kernels: outputs per block (a power of 2) x slices of col_axis */
  DType *vt;       /* per view: dtype of its buffer */
  bool *live;      /* per instruction: a store depends on it */
  bool *rowv;      /* per instruction: computed once per row (row kernels) */
  bool used_idx[BC_MAX_RANK]; /* leading index d appears in the code */
  bool has_random;
  /* the current scope */
  const char *jx;  /* the last-axis index ("j", "(j + e)", "0") */
  const char *lin; /* the linear index of the point, for KI_RANDOM */
  bool lanes;      /* inside the 4-lane loop of a vectorized kernel */
} Em;

static inline const KInst *inst(const Em *E, int i) { return &E->k->insts.data[i]; }
static inline const KView *view(const Em *E, int v) { return &E->k->views.data[v]; }
static inline int64_t lstride(const Em *E, int v) { return E->rank ? view(E, v)->stride[E->rank - 1] : 0; }
static inline const char *ctype(DType t) { return t == DTYPE_I32 ? "int" : "float"; }
static inline const char *vtype4(DType t) { return t == DTYPE_I32 ? "int4" : "float4"; }

/* ---- cuda_expr.c: text of values ------------------------------------------------- */

/* One line of code at E's indentation. */
void BC_PRINTF(2, 3) cuda_line(Em *E, const char *fmt, ...);
/* s when it can go into a comment (printable, no comment end), else NULL. */
const char *cuda_commentable(const char *s);
/* The graph value name a node or view stands for, or NULL without a graph. */
const char *cuda_node_value_name(const Em *E, NodeId id);
const char *cuda_view_value_name(const Em *E, int v);
/* Declares x<i> = the value of instruction i (not a reduce or store) at
 * the current point (E->jx, E->lin, E->lanes). */
void cuda_emit_value(Em *E, int i);
/* Stores instruction i's operand at the current point. */
void cuda_emit_store(Em *E, int i);

/* ---- cuda_kernels.c: the bodies of the launch shapes ----------------------------- */

/* Whether every view allows the float4/int4 path (SHAPE_ELEM4). */
bool cuda_can_vectorize(const Em *E);
/* The body of E's kernel after its signature, up to the closing brace;
 * vused[v]: view v is accessed. */
void cuda_emit_elementwise(Em *E, const bool *vused);
void cuda_emit_row_kernel(Em *E, const bool *vused);
void cuda_emit_col_kernel(Em *E, const bool *vused);

/* ---- cuda_emit.c ----------------------------------------------------------------- */

/* Reports that instruction i of E's kernel cannot be emitted (once) and
 * clears E->ok. */
void cuda_em_error(Em *E, int i, const char *what);

#endif
