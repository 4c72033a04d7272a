/* cpu_attention.h — the cpu backend's fused attention and its backward
 * (graph/ops.def: attention, attention_grad; the arithmetic in
 * attention.h). */
#ifndef BC_CPU_ATTENTION_H
#define BC_CPU_ATTENTION_H

#include "attention.h"
#include "cpu_ops.h"

/* dout NULL: the forward, out [B, Tq, F]. Else the backward from dout
 * [B, Tq, F]: out [B, Tq + 2 Tk, F] = d q, d k, d v. p may be NULL. */
void cpu_attention(Pool *p, GemmLib lib, const AttnDims *a, const float *q, const float *k, const float *v,
                   const int32_t *valid_len, const float *dout, float *out);

#endif
