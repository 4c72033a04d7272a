/* options.h — the optimizations of the middle end and the emitters that can
 * be switched off one at a time, to bisect a miscompile or measure what one
 * is worth. One X-macro row per switch: the field of OptSwitches, the
 * environment variable BC_NO_<NAME>=1 that turns it off (read once, by
 * compile_options_default in pipeline.c), and what turning it off does.
 * Every switch keeps results correct; turning one off changes only the
 * kernels, buffers or code produced (simplify and cse can change which
 * equal values are computed twice, never their bits). */
#ifndef BC_OPTIONS_H
#define BC_OPTIONS_H

#include <stdbool.h>

#define BC_OPT_SWITCHES(X) \
  X(narrow, "NARROW", "compute every row of a value read only through slices of it (passes/narrow.c)") \
  X(simplify, "SIMPLIFY", "skip the simplify pass (folding, identities, CSE, dead code)") \
  X(cse, "CSE", "simplify without common-subexpression elimination (duplicate nodes stay)") \
  X(schedule, "SCHEDULE", "skip the schedule pass (keep the expanded node order)") \
  X(remat, "REMAT", "the backward reads stored forward values instead of recomputing cheap ones (passes/remat.c)") \
  X(row_blocks, "ROW_BLOCKS", "a large GEMM output and its row-wise readers (the MLM logits, their cross-entropy and its gradient) are stored whole, not made by blocks of rows (passes/row_blocks.c)") \
  X(chunk, "CHUNK", "a large value read only by GEMMs and column sums is stored whole, not made by blocks of columns (passes/chunk.c)") \
  X(gemm_layout, "GEMM_LAYOUT", "a GEMM reads its second operand transposed (C = A B^T) instead of a copy of it made transposed (passes/gemm_layout.c)") \
  X(fuse, "FUSE", "one kernel per node (views still fold into their readers)") \
  X(epilogue, "EPILOGUE", "a GEMM's bias add, activation and residual add run as loop kernels after it, not in the GEMM") \
  X(view_fold, "VIEW_FOLD", "broadcasts, permutes and slices become copy kernels instead of strided loads") \
  X(memplan, "MEMPLAN", "a buffer of its own for every value (no reuse, no in place)") \
  X(inplace, "INPLACE", "plan memory without elementwise in-place writes (buffers are still reused)") \
  X(attention_in_place, "ATTENTION_IN_PLACE", "the attention backward writes d q, d k and d v to a buffer of their own, not over q, k and v as they die (passes/memplan.c; cuda: always)") \
  X(float4, "FLOAT4", "cuda: elementwise kernels load and store one element at a time, not float4/int4") \
  X(dedup, "DEDUP", "cuda: emit every kernel's code, also when it repeats an earlier kernel's; cpu: JIT-compile every kernel, also one with the same code as an earlier one up to view offsets") \
  X(jit, "JIT", "cpu: run the kernels through the C kernel evaluator instead of LLVM") \
  X(pick, "PICK", "cpu: a row sum of a one-hot product (cross-entropy's picked logit) is a pass over the row, not the product at the label (codegen/llvm_emit.c)") \
  X(zero_rows, "ZERO_ROWS", "cpu: GEMMs and the attention backward compute every row, also those an operand's zero rows leave zero (runtime/cpu_gemm_rows.c)") \
  X(flush_denormals, "FLUSH_DENORMALS", "cpu: compute with denormal floats instead of flushing them to zero (FTZ and DAZ in the backend's threads during a step; runtime/cpu.c)") \
  X(row_guards, "ROW_GUARDS", "cpu: kernels compute every row, also those a loss weight of 0 or the padding leaves unread or zero (passes/row_guard.c)")

/* true = switched off. All false (every optimization on) when zeroed. */
typedef struct {
#define BC_OPT_FIELD(field, env, doc) bool field;
  BC_OPT_SWITCHES(BC_OPT_FIELD)
#undef BC_OPT_FIELD
} OptSwitches;

#endif
