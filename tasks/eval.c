/* eval.c — evaluation and prediction (eval.h): counting argmax predictions
 * into an accuracy and confusion matrix, evaluating an nli graph over a
 * dataset, and `bertrun eval` / `bertrun predict` from a fine-tuned
 * checkpoint (the nli graph rebuilt from the hparams the checkpoint
 * records, dropout 0, on one device). */
#include "eval.h"

#include <math.h>
#include <string.h>

#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "train_util.h"

int eval_argmax(const float *x, int n) {
  int k = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[k]) k = i;
  return k;
}

void eval_count(EvalResult *r, const float *logits, const int32_t *labels, const int32_t *rows,
                int n_rows) {
  for (int j = 0; j < n_rows; j++) {
    int gold = labels[rows ? rows[j] : j], pred = eval_argmax(logits + j * SNLI_N_LABELS, SNLI_N_LABELS);
    BC_ASSERT(gold >= 0 && gold < SNLI_N_LABELS);
    r->n++;
    r->correct += gold == pred;
    r->confusion[gold][pred]++;
  }
}

double eval_accuracy(const EvalResult *r) { return r->n ? (double)r->correct / (double)r->n : NAN; }

bool eval_run(Exec *e, const Graph *g, const Dataset *ds, Dist *dist, EvalResult *r, Diag *d) {
  memset(r, 0, sizeof(*r));
  int B = (int)graph_hparam(g, "batch", 1);
  ValueId logits = train_output(g, "logits");
  if (logits < 0) {
    diag_error(d, SRCLOC_NONE, "graph '%s' has no output named 'logits'", g->name);
    return false;
  }
  Batcher b;
  batcher_init(&b, ds->n_examples, B, false, false);
  DataBatch db;
  data_batch_init(&db, ds, B);
  float *out = bc_malloc(sizeof(float) * (size_t)B * SNLI_N_LABELS);
  bool ok = true;
  const int32_t *labels = dataset_i32(ds, "label");
  for (int i = dist_rank(dist); ok && i < b.n_batches; i += dist_size(dist)) {
    batcher_fill(&b, ds, i, &db);
    RunContext ctx = {0, 0, 0};
    ok = train_write_batch(e, g, &db, 0, d) && exec_run(e, &ctx, d) && exec_read(e, logits, out, DTYPE_F32, d);
    if (ok) eval_count(r, out, labels, db.rows, db.n_real);
  }
  free(out);
  data_batch_free(&db);
  batcher_free(&b);
  if (ok && dist_size(dist) > 1) {
    double x[2 + SNLI_N_LABELS * SNLI_N_LABELS] = {(double)r->n, (double)r->correct};
    for (int i = 0; i < SNLI_N_LABELS * SNLI_N_LABELS; i++) x[2 + i] = (double)r->confusion[i / SNLI_N_LABELS][i % SNLI_N_LABELS];
    ok = dist_sum(dist, x, 2 + SNLI_N_LABELS * SNLI_N_LABELS, d);
    r->n = (int64_t)x[0];
    r->correct = (int64_t)x[1];
    for (int i = 0; i < SNLI_N_LABELS * SNLI_N_LABELS; i++) r->confusion[i / SNLI_N_LABELS][i % SNLI_N_LABELS] = (int64_t)x[2 + i];
  }
  return ok;
}

/* ---- evaluation and prediction from a checkpoint ---- */

/* The nli graph of `checkpoint` (hparams from its metadata, dropout 0, the
 * given batch) on `device`, with every parameter loaded. */
static bool load_nli(const char *checkpoint, const char *device, int batch, Vocab *vocab, Graph *g, Exec **e,
                     Diag *d) {
  CheckpointMeta m;
  if (!checkpoint_read_meta(checkpoint, &m, d)) {
    checkpoint_meta_free(&m);
    return false;
  }
  bool ok = false;
  TrainSets s;
  train_sets_init(&s, NULL, 0);
  if (!m.graph_name || strcmp(m.graph_name, "nli") != 0) {
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0},
               "a checkpoint of graph '%s', not of a fine-tuned 'nli' model (fine-tune with "
               "`bertrun train --task snli --init ...` first)",
               m.graph_name ? m.graph_name : "?");
    goto done;
  }
  if (!train_sets_add_hparams(&s, m.hparams_json, checkpoint, d)) goto done;
  train_sets_add(&s, "batch", batch);
  train_sets_add(&s, "dropout", 0);
  if (!train_vocab_beside(vocab, checkpoint, d)) goto done;
  if (!train_compile(g, m.model_path ? m.model_path : "models/bert.yaml", "nli", &s, false, d)) goto done;
  *e = exec_create_spec(device, g, d); /* evaluation, prediction: one device */
  if (!*e) {
    graph_free(g);
    goto done;
  }
  char hash[32];
  train_vocab_hash(vocab, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, hash};
  int n = checkpoint_load(checkpoint, *e, &lo, NULL, d);
  if (n >= 0 && n != g->params.n)
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0}, "the checkpoint has %d of the %d parameters of the nli model", n,
               g->params.n);
  if (n != g->params.n) {
    exec_destroy(*e);
    *e = NULL;
    graph_free(g);
    goto done;
  }
  ok = true;
done:
  train_sets_free(&s);
  checkpoint_meta_free(&m);
  return ok;
}

bool train_eval_snli(const char *checkpoint, const char *data, const char *device, int batch, Diag *d) {
  const char *dir = train_data_dir(data, d);
  if (!dir) return false;
  Vocab vocab;
  vocab_init(&vocab);
  Graph g;
  Exec *e = NULL;
  if (!load_nli(checkpoint, device, batch, &vocab, &g, &e, d)) {
    vocab_free(&vocab);
    return false;
  }
  char *test_path = bc_asprintf("%s/snli/snli_1.0_test.txt", dir);
  const char *tp[1] = {test_path};
  SnliData te;
  bool ok = snli_load(&te, tp, 1, &vocab, (int)graph_hparam(&g, "max_len", 128), d);
  EvalResult r;
  if (ok && (ok = eval_run(e, &g, &te.data, NULL, &r, d))) {
    printf("test accuracy %.4f (%lld of %lld examples of %s)\n", r.n ? (double)r.correct / (double)r.n : 0,
           (long long)r.correct, (long long)r.n, test_path);
    printf("confusion matrix (rows: gold, columns: predicted)\n%14s", "");
    for (int j = 0; j < SNLI_N_LABELS; j++) printf(" %13s", snli_label_name(j));
    printf("\n");
    for (int i = 0; i < SNLI_N_LABELS; i++) {
      printf("%14s", snli_label_name(i));
      for (int j = 0; j < SNLI_N_LABELS; j++) printf(" %13lld", (long long)r.confusion[i][j]);
      printf("\n");
    }
  }
  if (ok || te.data.n_examples) snli_free(&te);
  free(test_path);
  exec_destroy(e);
  graph_free(&g);
  vocab_free(&vocab);
  return ok;
}

bool train_predict(const char *checkpoint, const char *device, const char *premise, const char *hypothesis,
                   Diag *d) {
  Vocab vocab;
  vocab_init(&vocab);
  Graph g;
  Exec *e = NULL;
  if (!load_nli(checkpoint, device, 1, &vocab, &g, &e, d)) {
    vocab_free(&vocab);
    return false;
  }
  int T = (int)graph_hparam(&g, "max_len", 128);
  int32_t *tok = bc_calloc((size_t)T, sizeof(int32_t)), *seg = bc_calloc((size_t)T, sizeof(int32_t));
  int32_t vl = snli_encode_pair(&vocab, premise, hypothesis, T, tok, seg, d);
  bool ok = vl >= 0;
  float logits[SNLI_N_LABELS];
  if (ok) {
    RunContext ctx = {0, 0, 0};
    ok = exec_write(e, graph_find(&g, "tokens"), tok, DTYPE_I32, d) &&
         exec_write(e, graph_find(&g, "segments"), seg, DTYPE_I32, d) &&
         exec_write(e, graph_find(&g, "valid_len"), &vl, DTYPE_I32, d) && exec_run(e, &ctx, d) &&
         exec_read(e, train_output(&g, "logits"), logits, DTYPE_F32, d);
  }
  if (ok) {
    double mx = logits[0], z = 0, p[SNLI_N_LABELS];
    for (int i = 1; i < SNLI_N_LABELS; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < SNLI_N_LABELS; i++) z += p[i] = exp(logits[i] - mx);
    int k = eval_argmax(logits, SNLI_N_LABELS);
    printf("%s\n", snli_label_name(k));
    for (int i = 0; i < SNLI_N_LABELS; i++) printf("  %-13s %.4f\n", snli_label_name(i), p[i] / z);
  }
  free(tok);
  free(seg);
  exec_destroy(e);
  graph_free(&g);
  vocab_free(&vocab);
  return ok;
}
