/* cpu_attention.h — the cpu backend's fused attention and its backward
 * (graph/ops.def: attention, attention_grad; the arithmetic in
 * attention.h). */
#ifndef BC_CPU_ATTENTION_H
#define BC_CPU_ATTENTION_H

#include "attention.h"
#include "cpu_ops.h"

/* Floats of scratch one thread needs for a (forward or backward) of a. */
int64_t cpu_attention_scratch(const AttnDims *a);

/* dout NULL: the forward, out [B, Tq, F]; with live_q (per query row
 * b * Tq + t; NULL: all), the rows not live are written as zeros
 * instead (a row guard: runtime/cpu.c). Else the
 * backward from dout [B, Tq, F]: out [B*Tq + 2*B*Tk, F] = the rows of
 * d q, d k, d v; it leaves out an (example, head)'s query rows whose
 * d out is zero (their terms are zero) unless all_queries. p may be NULL;
 * scratch: cpu_attention_scratch(a) floats per thread of p. */
void cpu_attention(Pool *p, GemmLib lib, const AttnDims *a, const float *q, const float *k, const float *v,
                   const int32_t *valid_len, const float *dout, float *out, float *scratch, bool all_queries,
                   const uint8_t *live_q);

#endif
