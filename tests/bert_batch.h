/* bert_batch.h — a plausible random batch for every input of a BERT graph
 * of models/bert.yaml (pretrain or nli), sized from the graph's hparams:
 * <cls> first, valid lengths in [4, max_len], segments 0 then 1, prediction
 * positions inside the valid part and distinct within an example (as d2l
 * draws them), labels in range, mlm_norm = sum(pred_weights) (one process,
 * as tasks/train.c feeds it). Shared by the tests
 * that run whole training steps; include after tests/test.h. */
#ifndef BC_TEST_BERT_BATCH_H
#define BC_TEST_BERT_BATCH_H

#include "runtime/backend.h"

static uint32_t bert_batch_rnd(uint32_t *s, uint32_t n) {
  *s = *s * 1664525u + 1013904223u;
  return (*s >> 8) % n;
}

/* Writes the same batch (from `seed`) into each of es[0..n_es), with the
 * learning-rate input set to lr. */
static void bert_batch_fill(Exec **es, int n_es, const Graph *g, uint32_t seed, double lr) {
  Diag d;
  diag_init(&d);
  uint32_t s = seed;
  int vocab = (int)graph_hparam(g, "vocab", 40), T = (int)graph_hparam(g, "max_len", 12);
  int B = (int)graph_hparam(g, "batch", 4);
  /* Valid lengths leave room for n_pred distinct prediction positions, as
   * real data do (d2l predicts ~15% of a sentence pair's tokens), so the
   * MLM gradient's scatter-add never adds two rows into one. */
  int P = (int)graph_hparam(g, "n_pred", 0), lo = P + 2 > 4 ? P + 2 : 4;
  if (lo > T) lo = T;
  int *vl = malloc(sizeof(int) * (size_t)B);
  double weight_sum = 0; /* of pred_weights, for mlm_norm (declared after it) */
  for (int b = 0; b < B; b++) vl[b] = lo + (int)bert_batch_rnd(&s, (uint32_t)(T - lo + 1));
  for (int i = 0; i < g->inputs.n; i++) {
    ValueId id = g->inputs.data[i];
    const Value *v = &g->values.data[id];
    int64_t n = shape_numel(&v->shape);
    double *buf = calloc((size_t)n, sizeof(double));
    int64_t per = v->shape.rank ? n / v->shape.dim[0] : 1;
    const char *nm = v->name;
    for (int64_t j = 0; j < n; j++) {
      int b = (int)(j / per), t = (int)(j % per);
      if (!strcmp(nm, "tokens")) buf[j] = t < vl[b] ? (t == 0 ? 2 : 5 + bert_batch_rnd(&s, (uint32_t)vocab - 5)) : 0;
      else if (!strcmp(nm, "segments")) buf[j] = t < vl[b] && t > vl[b] / 2 ? 1 : 0;
      else if (!strcmp(nm, "valid_len")) buf[j] = vl[b];
      else if (!strcmp(nm, "pred_positions")) {
        /* distinct: slot t takes a position no earlier slot of b took
         * (positions repeat only when there are more slots than positions) */
        int p = 1 + (int)bert_batch_rnd(&s, (uint32_t)vl[b] - 1);
        for (int tries = 0; tries < vl[b]; tries++) {
          bool taken = false;
          for (int u = 0; u < t && !taken; u++) taken = (int)buf[j - t + u] == p;
          if (!taken) break;
          p = p % (vl[b] - 1) + 1;
        }
        buf[j] = p;
      }
      else if (!strcmp(nm, "pred_weights")) weight_sum += buf[j] = t == 0 || bert_batch_rnd(&s, 2) ? 1.0 : 0.0;
      else if (!strcmp(nm, "mlm_norm")) {
        CHECK_MSG(weight_sum > 0, "input mlm_norm comes before pred_weights"); /* slot 0 is always real */
        buf[j] = weight_sum; /* one process: the batch's weight total */
      }
      else if (!strcmp(nm, "mlm_labels")) buf[j] = 5 + bert_batch_rnd(&s, (uint32_t)vocab - 5);
      else if (!strcmp(nm, "nsp_labels")) buf[j] = bert_batch_rnd(&s, 2);
      else if (!strcmp(nm, "label")) buf[j] = bert_batch_rnd(&s, 3);
      else if (!strcmp(nm, "lr")) buf[j] = lr;
      else CHECK_MSG(0, "unexpected input '%s'", nm);
    }
    for (int k = 0; k < n_es; k++) CHECK(exec_write(es[k], id, buf, DTYPE_F64, &d));
    free(buf);
  }
  free(vl);
  diag_print(&d, stderr);
  diag_free(&d);
}

#endif
