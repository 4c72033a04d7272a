/* attention.h — the fused attention op (graph/ops.def: attention,
 * attention_grad) as every backend runs it: its dimensions and dropout
 * stream, and the double-precision reference the interpreter runs.
 *
 * Per example b and head h (features [h*d, (h+1)*d) of q, k, v):
 *   S = q_h k_h^T / sqrt(d), keys j >= valid_len[b] scored -1e6 (d2l)
 *   W = softmax(S) over keys (row maximum subtracted, no gradient through it)
 *   A = W * keep / (1 - p), keep = (u >= p) where u is the top 24 bits of
 *       word (ix mod 4) of Philox(counter (ix / 4, key, step), key seed)
 *       times 2^-24, ix the index of (b, h, i, j) in the op's key map:
 *       `random`'s stream (runtime/philox.h), one Philox call drawing four
 *       weights' uniforms
 *   out_h = A v_h
 * and the backward, from d out:
 *   d v_h = A^T d out_h;  d A = d out_h v_h^T;  d W = d A * keep / (1 - p)
 *   d S = W (d W - rowsum(W d W)), 0 at masked keys;  d S /= sqrt(d)
 *   d q_h = d S k_h;  d k_h = d S^T q_h
 * attention_grad's output holds the rows of d q, then d k, then d v. */
#ifndef BC_ATTENTION_H
#define BC_ATTENTION_H

#include "backend.h"

typedef struct {
  int64_t B, Tq, Tk, F, H, d; /* d = F / H */
  double inv_sqrt_d;          /* 1 / sqrt(d) */
  double p, keep_scale;       /* dropout rate; 1 / (1 - p) */
  /* the dropout stream: index of (b, h, i, j) = b*stride[0] + ... +
   * example_offset * per_example (random_key_map over the op's shape) */
  uint64_t seed;
  uint32_t step, key;
  int64_t stride[4], per_example, example_offset;
} AttnDims;

/* n: an attention or attention_grad node of g. */
void attn_dims(AttnDims *a, const Graph *g, const Node *n, const RunContext *ctx);
/* keep / (1 - p) for weight (b, h, i, j): 0 for a dropped one. */
double attn_keep(const AttnDims *a, int64_t b, int64_t h, int64_t i, int64_t j);
/* A weight is dropped when its 24-bit uniform is below this: ceil(p 2^24). */
uint32_t attn_threshold(const AttnDims *a);
/* The dropout stream's index of weight (b, h, i, j). */
uint64_t attn_index(const AttnDims *a, int64_t b, int64_t h, int64_t i, int64_t j);
/* The 24-bit uniforms of stream indices ix0 + j, j in [0, n) (four per
 * Philox call). */
void attn_bits(const AttnDims *a, uint64_t ix0, int64_t n, uint32_t *bits);

/* The reference, in double: out [B, Tq, F]; grad: [B*Tq + 2*B*Tk, F]. */
void attn_ref_forward(const AttnDims *a, const double *q, const double *k, const double *v, const double *valid_len,
                      double *out);
void attn_ref_backward(const AttnDims *a, const double *q, const double *k, const double *v, const double *valid_len,
                       const double *dout, double *grad);

#endif
