/* encode.c — `bertrun encode`: the hidden states of texts under a Hugging
 * Face BERT (a checkpoint of `bertc import`, or fine-tuned from one), as
 * transformers' BertModel gives them: what sentence embeddings and the
 * parity checks against transformers (bench/minilm.sh) read.
 *
 * Input: one text per line, or two separated by a TAB (a pair: [CLS] a
 * [SEP] b [SEP] with token types 0 and 1); tokenized with the checkpoint's
 * WordPiece, truncated to --max-len (default the model's max_len) longest
 * first. The graph `encode` runs in batches of --batch texts in order of
 * length, each padded to its longest rounded up to 16 (one plan per such
 * length, made when it first comes; the last batch filled with copies of
 * its first text, dropped after); the output keeps the input's order.
 *
 * Output (--out FILE, a safetensors file; tensors in input order):
 *   input_ids, token_type_ids  i32 [N, T]   (T the longest; padding: [PAD], 0)
 *   lengths                    i32 [N]
 *   pooler_output              f32 [N, hidden]   BertModel's pooled output
 *   mean_pooled                f32 [N, hidden]   mean of the last hidden states
 *                                                over each text's tokens
 *                                                (sentence-transformers' pooling)
 *   last_hidden_state          f32 [K, T, hidden]  of the first K texts
 *                                                (--hidden-rows K, default 0)
 * and on stderr the examples/s of the encoding steps alone. */
#include <string.h>
#include <time.h>

#include "../graph/strbuf.h"
#include "../runtime/checkpoint.h"
#include "train.h"
#include "train_util.h"
#include "wordpiece.h"

typedef VEC(char *) LineVec;

/* The input's non-empty lines (heap strings), "\r\n" accepted. */
static bool read_lines(const char *input, LineVec *out, Diag *d) {
  size_t n;
  char *text = NULL;
  if (strcmp(input, "-") == 0) {
    StrBuf b = {0};
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, stdin)) > 0) strbuf_add(&b, chunk, k);
    n = b.n;
    text = b.data ? strbuf_take(&b) : bc_strdup("");
  } else if (!(text = bc_read_file(input, &n, d))) {
    return false;
  }
  const char *file = bc_intern(strcmp(input, "-") ? input : "<stdin>");
  int line = 0;
  bool ok = true;
  for (char *s = text; s < text + n;) {
    line++;
    char *nl = memchr(s, '\n', (size_t)(text + n - s));
    size_t len = nl ? (size_t)(nl - s) : (size_t)(text + n - s);
    if (len && s[len - 1] == '\r') len--;
    long bad = text_utf8_check(s, len);
    if (bad >= 0) {
      diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "invalid UTF-8");
      ok = false;
    } else if (len > 0) {
      vec_push(out, strndup(s, len));
    }
    s += (nl ? (size_t)(nl - s) + 1 : len);
  }
  free(text);
  if (ok && out->n == 0) {
    diag_error(d, (SrcLoc){file, 0, 0}, "no text to encode");
    ok = false;
  }
  return ok;
}

/* qsort's order of texts: by length, then input position (stable). */
static const int32_t *order_lens;
static int by_length(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return order_lens[x] != order_lens[y] ? (order_lens[x] > order_lens[y]) - (order_lens[x] < order_lens[y])
                                        : (x > y) - (x < y);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

bool train_encode(const char *checkpoint, const TrainOptions *o, const char *input, const char *output,
                  int hidden_rows, Diag *d) {
  TrainOrigin origin = {0};
  TrainModel m = {0};
  TrainSets sets;
  train_sets_init(&sets, o->sets, o->n_sets);
  Vocab v;
  vocab_init(&v);
  LineVec lines = {0};
  Graph g;
  bool have_graph = false, ok = false;
  Exec *e = NULL;
  int32_t *ids = NULL, *types = NULL, *lens = NULL, *bt = NULL, *bs = NULL, *bl = NULL;
  int *order = NULL;
  float *pooled = NULL, *mean = NULL, *hidden = NULL, *bh = NULL, *bp = NULL;
  if (!train_origin_read(&origin, checkpoint, d) || !train_origin_vocab(&origin, &v, d)) goto done;
  if (!v.wordpiece) {
    diag_error(d, (SrcLoc){bc_intern(checkpoint), 0, 0},
               "encode takes a Hugging Face BERT (made by `bertc import`, or fine-tuned from one)");
    goto done;
  }
  if (!read_lines(input, &lines, d)) goto done;
  const HParam *ml = train_origin_hparam(&origin, "max_len");
  int L = o->max_len > 0 ? o->max_len : ml ? (int)ml->value : 512;
  int N = lines.n, B = o->eval_batch > 0 ? o->eval_batch : 256;
  ids = bc_malloc(sizeof(int32_t) * (size_t)N * (size_t)L);
  types = bc_malloc(sizeof(int32_t) * (size_t)N * (size_t)L);
  lens = bc_malloc(sizeof(int32_t) * (size_t)N);
  int T = 1, n_cut = 0;
  for (int i = 0; i < N; i++) {
    char *tab = strchr(lines.data[i], '\t');
    int32_t *row = ids + (size_t)i * L, *seg = types + (size_t)i * L;
    int32_t none;
    int want;
    if (tab) {
      *tab = '\0';
      lens[i] = wordpiece_encode_pair(v.wordpiece, lines.data[i], tab + 1, L, row, seg);
      want = wordpiece_tokenize(v.wordpiece, lines.data[i], &none, 0) + wordpiece_tokenize(v.wordpiece, tab + 1, &none, 0) + 3;
    } else {
      lens[i] = wordpiece_encode(v.wordpiece, lines.data[i], L, row);
      for (int k = 0; k < L; k++) seg[k] = 0;
      want = wordpiece_tokenize(v.wordpiece, lines.data[i], &none, 0) + 2;
    }
    if (lens[i] < 0) {
      diag_error(d, SRCLOC_NONE, "--max-len %d is too short for [CLS] and [SEP]", L);
      goto done;
    }
    n_cut += want > L;
    if (lens[i] > T) T = lens[i];
  }
  /* every row padded to T, the longest */
  for (int i = 0; i < N; i++)
    for (int k = 0; k < T; k++) {
      ids[(size_t)i * T + k] = k < lens[i] ? ids[(size_t)i * L + k] : v.pad;
      types[(size_t)i * T + k] = k < lens[i] ? types[(size_t)i * L + k] : 0;
    }
  if (n_cut) fprintf(stderr, "encode: %d of %d texts truncated to %d tokens\n", n_cut, N, L);

  train_sets_add(&sets, "batch", B);
  train_sets_add(&sets, "dropout", 0);
  if (!train_origin_model(&origin, o->model, &m, &sets, (const char *[]){"batch", "seq", "dropout", NULL}, d))
    goto done;
  /* length buckets: texts in order of length, each batch padded to its
   * longest rounded up to 16 (at most L), one plan per length, made when
   * the length first comes (the order makes lengths rise) */
  order = bc_malloc(sizeof(int) * (size_t)N);
  for (int i = 0; i < N; i++) order[i] = i;
  order_lens = lens;
  qsort(order, (size_t)N, sizeof(int), by_length);
  if (hidden_rows > N) hidden_rows = N;
  int H = 0, Tb = 0, n_plans = 0;
  double run_s = 0, compile_s = 0;
  for (int at = 0; at < N; at += B) {
    int want = lens[order[at + B < N ? at + B - 1 : N - 1]];
    want = (want + 15) / 16 * 16;
    if (want > L) want = L;
    if (want != Tb) {
      /* the next bucket's plan replaces the last */
      if (e) exec_destroy(e), e = NULL;
      if (have_graph) graph_free(&g), have_graph = false;
      Tb = want;
      double t0 = now_s();
      TrainSets bs_sets;
      train_sets_init(&bs_sets, NULL, 0);
      train_sets_push(&bs_sets, sets.s, sets.n);
      train_sets_add(&bs_sets, "seq", Tb);
      graph_init(&g, "encode");
      have_graph = true;
      bool made = train_compile(&g, &m, "encode", &bs_sets, NULL, NULL, d);
      train_sets_free(&bs_sets);
      if (!made || !(e = exec_create_spec(o->device ? o->device : "cpu", &g, d))) goto done;
      CheckpointLoadOptions lo = {CHECKPOINT_LOAD_PARAMS_PRESENT, NULL};
      if (checkpoint_load(checkpoint, e, &lo, NULL, d) < 0) goto done;
      compile_s += now_s() - t0;
      n_plans++;
      if (!H) {
        H = (int)graph_hparam(&g, "hidden", 0);
        pooled = bc_malloc(sizeof(float) * (size_t)N * H);
        mean = bc_malloc(sizeof(float) * (size_t)N * H);
        hidden = bc_calloc((size_t)hidden_rows * T * H + 1, sizeof(float));
        bt = bc_malloc(sizeof(int32_t) * (size_t)B * L), bs = bc_malloc(sizeof(int32_t) * (size_t)B * L);
        bl = bc_malloc(sizeof(int32_t) * (size_t)B);
        bh = bc_malloc(sizeof(float) * (size_t)B * L * H), bp = bc_malloc(sizeof(float) * (size_t)B * H);
      }
    }
    for (int b = 0; b < B; b++) {
      int r = order[at + b < N ? at + b : at]; /* the last batch: copies of its first text */
      for (int k = 0; k < Tb; k++) {
        bt[(size_t)b * Tb + k] = k < T ? ids[(size_t)r * T + k] : v.pad;
        bs[(size_t)b * Tb + k] = k < T ? types[(size_t)r * T + k] : 0;
      }
      bl[b] = lens[r];
    }
    ValueId in_t = graph_find(&g, "tokens"), in_s = graph_find(&g, "segments"), in_l = graph_find(&g, "valid_len");
    ValueId out_h = train_output(&g, "hidden_states"), out_p = train_output(&g, "pooled");
    RunContext rc = {0};
    double t0 = now_s();
    if (!exec_write(e, in_t, bt, DTYPE_I32, d) || !exec_write(e, in_s, bs, DTYPE_I32, d) ||
        !exec_write(e, in_l, bl, DTYPE_I32, d) || !exec_run(e, &rc, d) || !exec_read(e, out_h, bh, DTYPE_F32, d) ||
        !exec_read(e, out_p, bp, DTYPE_F32, d))
      goto done;
    run_s += now_s() - t0;
    for (int b = 0; b < B && at + b < N; b++) {
      int r = order[at + b];
      memcpy(pooled + (size_t)r * H, bp + (size_t)b * H, sizeof(float) * (size_t)H);
      for (int h = 0; h < H; h++) {
        double sum = 0;
        for (int k = 0; k < lens[r]; k++) sum += bh[((size_t)b * Tb + k) * H + h];
        mean[(size_t)r * H + h] = (float)(sum / lens[r]);
      }
      /* rows up to T (Tb may pass it when rounded up) */
      for (int k = 0; r < hidden_rows && k < T && k < Tb; k++)
        memcpy(hidden + ((size_t)r * T + k) * H, bh + ((size_t)b * Tb + k) * H, sizeof(float) * (size_t)H);
    }
  }
  fprintf(stderr, "encode: %d plans (length buckets up to %d) made in %.1f s\n", n_plans, Tb, compile_s);
  fprintf(stderr, "encode: %d texts (batch %d, length buckets of 16) on %s in %.3f s: %.1f examples/s\n", N, B,
          o->device ? o->device : "cpu", run_s, run_s > 0 ? N / run_s : 0.0);
  CheckpointBlob blobs[] = {
      {"input_ids", DTYPE_I32, shape_of(2, (int64_t)N, (int64_t)T), ids},
      {"token_type_ids", DTYPE_I32, shape_of(2, (int64_t)N, (int64_t)T), types},
      {"lengths", DTYPE_I32, shape_of(1, (int64_t)N), lens},
      {"pooler_output", DTYPE_F32, shape_of(2, (int64_t)N, (int64_t)H), pooled},
      {"mean_pooled", DTYPE_F32, shape_of(2, (int64_t)N, (int64_t)H), mean},
      {"last_hidden_state", DTYPE_F32, shape_of(3, (int64_t)hidden_rows, (int64_t)T, (int64_t)H), hidden},
  };
  char eps[32];
  snprintf(eps, sizeof eps, "%.1f", run_s > 0 ? N / run_s : 0.0);
  CheckpointKV meta[] = {{"examples_per_s", eps}};
  ok = checkpoint_write_tensors(output, blobs, hidden_rows > 0 ? 6 : 5, meta, 1, d);
done:
  if (e) exec_destroy(e);
  if (have_graph) graph_free(&g);
  for (int i = 0; i < lines.n; i++) free(lines.data[i]);
  vec_free(&lines);
  free(ids), free(types), free(lens), free(bt), free(bs), free(bl), free(order);
  free(pooled), free(mean), free(hidden), free(bh), free(bp);
  vocab_free(&v);
  train_model_free(&m);
  train_sets_free(&sets);
  train_origin_free(&origin);
  return ok;
}
