/* bench_batch.c — random batches shaped like d2l's for bench_step (see
 * bench_batch.h): token ids are arbitrary, lengths, segments, MLM slots and
 * labels follow d2l's rules, so a step does the work a real batch makes.
 * Not here: real data (tasks/), timing (bench_step.c). */
#include "bench_batch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static int rng_int(uint64_t *s, int lo, int hi) { /* uniform in [lo, hi] */
  return hi <= lo ? lo : lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Token ids are arbitrary to speed; only pad and the specials are fixed. */
enum { TOK_PAD = 0, TOK_CLS = 2, TOK_SEP = 3, TOK_MASK = 4, TOK_FIRST_WORD = 5 };

void batch_free(Batch *b) {
  for (int i = 0; i < b->n; i++) free(b->bufs[i]);
  free(b->bufs);
  free(b->ids);
  memset(b, 0, sizeof *b);
}

/* Python's round() for x >= 0: half to even (d2l's MLM count). */
static int round_half_even(double x) {
  double f = floor(x), r = x - f;
  if (r > 0.5 || (r == 0.5 && fmod(f, 2.0) != 0.0)) f += 1.0;
  return (int)f;
}

bool batch_make(Batch *out, const Graph *g, double lr, uint64_t *rng, char *err) {
  const ValueId tok_id = graph_find(g, "tokens");
  if (tok_id < 0 || g->values.data[tok_id].shape.rank != 2) {
    snprintf(err, BATCH_ERR_LEN, "graph '%s' has no input tokens [batch, T]", g->name);
    return false;
  }
  const Shape *ts = &g->values.data[tok_id].shape;
  const int B = (int)ts->dim[0], T = (int)ts->dim[1];
  const int V = (int)graph_hparam(g, "vocab", 100);
  const int words = V > TOK_FIRST_WORD ? V - TOK_FIRST_WORD : 1;
  int *tok = bc_calloc((size_t)B * T, sizeof(int)), *seg = bc_calloc((size_t)B * T, sizeof(int));
  int *vl = bc_calloc((size_t)B, sizeof(int));
  for (int b = 0; b < B; b++) {
    int lo = T / 4 < 5 ? (T < 5 ? T : 5) : T / 4;
    int n = vl[b] = rng_int(rng, lo, T);
    int *t = tok + (size_t)b * T, *s = seg + (size_t)b * T;
    for (int i = 0; i < n; i++) t[i] = TOK_FIRST_WORD + rng_int(rng, 0, words - 1);
    t[0] = TOK_CLS;
    if (n >= 5) { /* <cls> a <sep> b <sep>, both sentences non-empty */
      int la = rng_int(rng, 1, n - 4);
      t[la + 1] = TOK_SEP;
      t[n - 1] = TOK_SEP;
      for (int i = la + 2; i < n; i++) s[i] = 1;
    } else if (n >= 2) {
      t[n - 1] = TOK_SEP;
    }
  }
  out->n = g->inputs.n;
  out->ids = bc_calloc((size_t)out->n, sizeof(ValueId));
  out->bufs = bc_calloc((size_t)out->n, sizeof(void *));
  /* MLM slots are drawn once per example and shared by the three slot inputs */
  int P = 0;
  int *pp = NULL, *pl = NULL;
  float *pw = NULL;
  ValueId pos_id = graph_find(g, "pred_positions");
  if (pos_id >= 0) {
    P = (int)g->values.data[pos_id].shape.dim[1];
    pp = bc_calloc((size_t)B * P, sizeof(int));
    pl = bc_calloc((size_t)B * P, sizeof(int));
    pw = bc_calloc((size_t)B * P, sizeof(float));
    int *cand = bc_calloc((size_t)T, sizeof(int));
    for (int b = 0; b < B; b++) {
      int *t = tok + (size_t)b * T, nc = 0;
      for (int i = 0; i < vl[b]; i++)
        if (t[i] != TOK_CLS && t[i] != TOK_SEP) cand[nc++] = i;
      int k = round_half_even(vl[b] * 0.15);
      if (k < 1) k = 1;
      if (k > P) k = P;
      if (k > nc) k = nc;
      for (int i = 0; i < k; i++) { /* partial Fisher-Yates, then sort */
        int j = rng_int(rng, i, nc - 1), x = cand[i];
        cand[i] = cand[j], cand[j] = x;
      }
      for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && cand[j - 1] > cand[j]; j--) {
          int x = cand[j];
          cand[j] = cand[j - 1], cand[j - 1] = x;
        }
      for (int i = 0; i < k; i++) {
        int pos = cand[i];
        pp[b * P + i] = pos;
        pl[b * P + i] = t[pos];
        pw[b * P + i] = 1.0f;
        int r = rng_int(rng, 0, 9);
        if (r < 8) t[pos] = TOK_MASK;
        else if (r == 8) t[pos] = TOK_FIRST_WORD + rng_int(rng, 0, words - 1);
      }
    }
    free(cand);
  }
  bool ok = true;
  for (int i = 0; i < g->inputs.n && ok; i++) {
    ValueId id = g->inputs.data[i];
    const Value *v = &g->values.data[id];
    int64_t n = shape_numel(&v->shape);
    out->ids[i] = id;
    void *buf = out->bufs[i] = bc_calloc((size_t)n, 4);
    int *bi = buf;
    float *bf = buf;
    const char *nm = v->name;
    bool is_f = v->dtype == DTYPE_F32;
    bool want_f = !strcmp(nm, "pred_weights") || !strcmp(nm, "lr") || !strcmp(nm, "mlm_norm");
    if (is_f != want_f && strcmp(nm, "valid_len") != 0) {
      snprintf(err, BATCH_ERR_LEN, "graph '%s': input '%s' has unexpected dtype %s", g->name, nm,
               dtype_name(v->dtype));
      ok = false;
      break;
    }
    /* (size_t)n ints or floats; the per-input shapes were checked by the
     * model: [B, T], [B, P] or [B] */
    if (!strcmp(nm, "tokens")) memcpy(buf, tok, (size_t)n * 4);
    else if (!strcmp(nm, "segments")) memcpy(buf, seg, (size_t)n * 4);
    else if (!strcmp(nm, "valid_len"))
      for (int64_t j = 0; j < n; j++) {
        if (is_f) bf[j] = (float)vl[j];
        else bi[j] = vl[j];
      }
    else if (!strcmp(nm, "pred_positions")) memcpy(buf, pp, (size_t)n * 4);
    else if (!strcmp(nm, "mlm_labels")) memcpy(buf, pl, (size_t)n * 4);
    else if (!strcmp(nm, "pred_weights")) memcpy(buf, pw, (size_t)n * 4);
    else if (!strcmp(nm, "mlm_norm")) { /* one process: sum(pred_weights), as tasks/train.c */
      double sum = 0;
      for (int64_t j = 0; pw && j < (int64_t)B * P; j++) sum += pw[j];
      for (int64_t j = 0; j < n; j++) bf[j] = (float)sum;
    }
    else if (!strcmp(nm, "nsp_labels") || !strcmp(nm, "label")) {
      int classes = !strcmp(nm, "label") ? 3 : 2;
      for (int64_t j = 0; j < n; j++) bi[j] = rng_int(rng, 0, classes - 1);
    } else if (!strcmp(nm, "lr")) {
      for (int64_t j = 0; j < n; j++) bf[j] = (float)lr;
    } else {
      snprintf(err, BATCH_ERR_LEN, "graph '%s': don't know how to fill input '%s'", g->name, nm);
      ok = false;
    }
  }
  free(tok), free(seg), free(vl), free(pp), free(pl), free(pw);
  if (!ok) batch_free(out);
  return ok;
}

