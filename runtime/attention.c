/* attention.c — the fused attention op's dimensions, dropout stream and
 * double-precision reference (attention.h). */
#include "attention.h"

#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attn_dims(AttnDims *a, const Graph *g, const Node *n, const RunContext *ctx) {
  const Shape *q = &g->values.data[n->in[0]].shape, *k = &g->values.data[n->in[1]].shape;
  memset(a, 0, sizeof *a);
  a->B = q->dim[0];
  a->Tq = q->dim[1];
  a->Tk = k->dim[1];
  a->F = q->dim[2];
  a->H = n->a.heads;
  a->d = a->F / a->H;
  a->inv_sqrt_d = 1.0 / sqrt((double)a->d);
  a->p = n->a.dropout;
  a->keep_scale = 1.0 / (1.0 - a->p);
  a->seed = ctx->seed;
  a->step = ctx->step;
  a->key = n->a.key;
  a->example_offset = ctx->example_offset;
  random_key_map(&n->a.shape, &n->a.key_shape, a->stride, &a->per_example);
}

uint32_t attn_threshold(const AttnDims *a) { return (uint32_t)ceil(a->p * 16777216.0); }

uint64_t attn_index(const AttnDims *a, int64_t b, int64_t h, int64_t i, int64_t j) {
  int64_t ix = b * a->stride[0] + h * a->stride[1] + i * a->stride[2] + j * a->stride[3];
  return (uint64_t)(ix + a->example_offset * a->per_example);
}

void attn_bits(const AttnDims *a, uint64_t ix0, int64_t n, uint32_t *bits) {
  uint32_t key[2] = {(uint32_t)a->seed, (uint32_t)(a->seed >> 32)}, w[4];
  uint64_t have = UINT64_MAX;
  for (int64_t j = 0; j < n; j++) {
    uint64_t ix = ix0 + (uint64_t)j;
    if (ix >> 2 != have) {
      have = ix >> 2;
      uint32_t ctr[4] = {(uint32_t)have, (uint32_t)(have >> 32), a->key, a->step};
      philox4x32_10(ctr, key, w);
    }
    bits[j] = w[ix & 3] >> 8;
  }
}

double attn_keep(const AttnDims *a, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (a->p <= 0) return 1.0;
  uint32_t bits;
  attn_bits(a, attn_index(a, b, h, i, j), 1, &bits);
  return bits < attn_threshold(a) ? 0.0 : a->keep_scale;
}

/* W (Tq x Tk) for example b, head h: the masked softmax of the scores. */
static void ref_weights(const AttnDims *a, const double *q, const double *k, const double *valid_len, int64_t b,
                        int64_t h, double *w) {
  int64_t vl = (int64_t)valid_len[b];
  for (int64_t i = 0; i < a->Tq; i++) {
    double *row = w + i * a->Tk, m = -INFINITY, sum = 0;
    const double *qi = q + (b * a->Tq + i) * a->F + h * a->d;
    for (int64_t j = 0; j < a->Tk; j++) {
      const double *kj = k + (b * a->Tk + j) * a->F + h * a->d;
      double s = 0;
      for (int64_t c = 0; c < a->d; c++) s += qi[c] * kj[c];
      row[j] = j < vl ? s * a->inv_sqrt_d : -1e6;
      if (row[j] > m) m = row[j];
    }
    for (int64_t j = 0; j < a->Tk; j++) sum += row[j] = exp(row[j] - m);
    for (int64_t j = 0; j < a->Tk; j++) row[j] /= sum;
  }
}

void attn_ref_forward(const AttnDims *a, const double *q, const double *k, const double *v, const double *valid_len,
                      double *out) {
  double *w = malloc(sizeof(double) * (size_t)(a->Tq * a->Tk));
  for (int64_t b = 0; b < a->B; b++)
    for (int64_t h = 0; h < a->H; h++) {
      ref_weights(a, q, k, valid_len, b, h, w);
      for (int64_t i = 0; i < a->Tq; i++) {
        double *oi = out + (b * a->Tq + i) * a->F + h * a->d;
        for (int64_t c = 0; c < a->d; c++) oi[c] = 0;
        for (int64_t j = 0; j < a->Tk; j++) {
          double aij = w[i * a->Tk + j] * attn_keep(a, b, h, i, j);
          const double *vj = v + (b * a->Tk + j) * a->F + h * a->d;
          for (int64_t c = 0; c < a->d; c++) oi[c] += aij * vj[c];
        }
      }
    }
  free(w);
}

void attn_ref_backward(const AttnDims *a, const double *q, const double *k, const double *v, const double *valid_len,
                       const double *dout, double *grad) {
  memset(grad, 0, sizeof(double) * (size_t)(a->B * (a->Tq + 2 * a->Tk) * a->F));
  double *w = malloc(sizeof(double) * (size_t)(a->Tq * a->Tk));
  double *ds = malloc(sizeof(double) * (size_t)(a->Tq * a->Tk));
  for (int64_t b = 0; b < a->B; b++)
    for (int64_t h = 0; h < a->H; h++) {
      int64_t vl = (int64_t)valid_len[b];
      ref_weights(a, q, k, valid_len, b, h, w);
      double *dq = grad + b * a->Tq * a->F + h * a->d;
      double *dk = grad + (a->B * a->Tq + b * a->Tk) * a->F + h * a->d, *dv = dk + a->B * a->Tk * a->F;
      for (int64_t i = 0; i < a->Tq; i++) {
        const double *doi = dout + (b * a->Tq + i) * a->F + h * a->d;
        double dot = 0;
        for (int64_t j = 0; j < a->Tk; j++) {
          const double *vj = v + (b * a->Tk + j) * a->F + h * a->d;
          double keep = attn_keep(a, b, h, i, j), da = 0;
          for (int64_t c = 0; c < a->d; c++) {
            da += doi[c] * vj[c];
            dv[j * a->F + c] += w[i * a->Tk + j] * keep * doi[c];
          }
          ds[i * a->Tk + j] = da * keep; /* d W */
          dot += w[i * a->Tk + j] * ds[i * a->Tk + j];
        }
        for (int64_t j = 0; j < a->Tk; j++) {
          double wij = w[i * a->Tk + j];
          ds[i * a->Tk + j] = j < vl ? wij * (ds[i * a->Tk + j] - dot) * a->inv_sqrt_d : 0;
        }
      }
      for (int64_t i = 0; i < a->Tq; i++) {
        const double *qi = q + (b * a->Tq + i) * a->F + h * a->d;
        for (int64_t j = 0; j < a->Tk; j++) {
          const double *kj = k + (b * a->Tk + j) * a->F + h * a->d;
          double g = ds[i * a->Tk + j];
          for (int64_t c = 0; c < a->d; c++) {
            dq[i * a->F + c] += g * kj[c];
            dk[j * a->F + c] += g * qi[c];
          }
        }
      }
    }
  free(w);
  free(ds);
}
