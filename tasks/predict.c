/* predict.c — `bertrun predict`: labels and probabilities of premise /
 * hypothesis pairs under a fine-tuned checkpoint (eval_load_nli), one pair
 * from the command line or many from a file or standard input, run in
 * batches of the evaluation batch size.
 *
 * Input (a file, or "-" for standard input): JSON lines
 * {"premise": "...", "hypothesis": "..."}, or TAB-separated lines
 * "premise<TAB>hypothesis" (an optional first line "premise<TAB>hypothesis"
 * is a header); the first non-blank line decides which; blank lines are
 * skipped. Every line is checked before anything is predicted, so a bad
 * line (errors at file:line) leaves no partial output.
 *
 * Output: for the command-line pair the label, then each probability; for
 * a file one JSON line per pair, in input order:
 *   {"line": 3, "label": "neutral", "probabilities": {"entailment": 0.1,
 *    "contradiction": 0.2, "neutral": 0.7}, "truncated": false}
 * "truncated" says the pair was cut to the model's max_len (also noted on
 * stderr). */
#include <math.h>
#include <string.h>

#include "../graph/json.h"
#include "eval.h"
#include "train_util.h"

typedef struct {
  char *premise, *hypothesis; /* owned */
  int line;
} Pair;

typedef VEC(Pair) PairVec;

static bool blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
  return true;
}

/* Empty or only whitespace (after SNLI's cleaning nothing is left). */
static bool empty_text(const char *s) {
  size_t a, b;
  text_strip(s, strlen(s), &a, &b);
  for (size_t i = a; i < b; i++)
    if (s[i] != '(' && s[i] != ')') return false;
  return true;
}

/* Adds one pair; an error points at column 1, or at `h_col` (the
   hypothesis's column in a TSV line) when only the hypothesis is at fault. */
static bool add_pair(PairVec *v, const char *file, int line, const char *p, size_t np, const char *h, size_t nh,
                     int h_col, Diag *d) {
  Pair x = {strndup(p, np), strndup(h, nh), line};
  const char *bad = text_utf8_check(x.premise, np) >= 0 || text_utf8_check(x.hypothesis, nh) >= 0 ? "invalid UTF-8"
                    : empty_text(x.premise)                                                      ? "empty premise"
                    : empty_text(x.hypothesis)                                                   ? "empty hypothesis"
                                                                                                 : NULL;
  if (bad) {
    int col = strcmp(bad, "empty hypothesis") == 0 ? h_col : 1;
    diag_error(d, (SrcLoc){file, line, col}, "%s: every pair needs a premise and a hypothesis of text", bad);
    free(x.premise);
    free(x.hypothesis);
    return false;
  }
  vec_push(v, x);
  return true;
}

static bool parse_json_line(PairVec *v, const char *file, int line, const char *s, size_t n, Diag *d) {
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  const char *p = NULL, *h = NULL;
  bool ok = json_parse(s, n, NULL, &arena, &root, &err);
  if (!ok) {
    diag_error(d, (SrcLoc){file, line, 1}, "not a JSON line: %s", err.msg);
  } else {
    for (int i = 0; root.kind == JSON_OBJECT && i < root.n; i++) {
      if (root.items[i].kind != JSON_STRING) continue;
      if (strcmp(root.keys[i], "premise") == 0) p = root.items[i].str;
      if (strcmp(root.keys[i], "hypothesis") == 0) h = root.items[i].str;
    }
    ok = p && h;
    if (!ok) diag_error(d, (SrcLoc){file, line, 1}, "expected {\"premise\": \"...\", \"hypothesis\": \"...\"}");
  }
  ok = ok && add_pair(v, file, line, p, strlen(p), h, strlen(h), 1, d);
  arena_free(&arena);
  return ok;
}

/* All pairs of `path` ("-": standard input); false with errors at file:line. */
static bool read_pairs(const char *path, PairVec *v, Diag *d) {
  bool from_stdin = strcmp(path, "-") == 0;
  const char *file = bc_intern(from_stdin ? "<stdin>" : path);
  size_t n = 0;
  char *buf;
  if (from_stdin) {
    StrBuf b = {0};
    char chunk[65536];
    size_t k;
    strbuf_puts(&b, "");
    while ((k = fread(chunk, 1, sizeof chunk, stdin)) > 0) strbuf_add(&b, chunk, k);
    n = b.n;
    buf = strbuf_take(&b);
  } else if (!(buf = bc_read_file(path, &n, d))) {
    return false;
  }
  int err0 = d->n_errors, json = -1;
  int line = 0;
  for (size_t pos = 0; pos < n;) {
    line++;
    const char *s = buf + pos, *nl = memchr(s, '\n', n - pos);
    size_t len = nl ? (size_t)(nl - s) : n - pos;
    pos += len + 1;
    if (len > 0 && s[len - 1] == '\r') len--;
    if (blank(s, len)) continue;
    if (json < 0) {
      json = s[0] == '{';
      if (!json && len == strlen("premise\thypothesis") && memcmp(s, "premise\thypothesis", len) == 0) continue;
    }
    if (json) {
      parse_json_line(v, file, line, s, len, d);
      continue;
    }
    const char *tab = memchr(s, '\t', len);
    if (!tab || memchr(tab + 1, '\t', len - (size_t)(tab + 1 - s))) {
      diag_error(d, (SrcLoc){file, line, 1}, "expected premise<TAB>hypothesis (one TAB), or a JSON line");
      continue;
    }
    add_pair(v, file, line, s, (size_t)(tab - s), tab + 1, len - (size_t)(tab + 1 - s), (int)(tab - s) + 2, d);
  }
  free(buf);
  if (d->n_errors == err0 && v->n == 0) diag_error(d, (SrcLoc){file, 0, 0}, "no pairs to predict");
  return d->n_errors == err0;
}

static void softmax3(const float *logits, double *p) {
  double mx = logits[0], z = 0;
  for (int i = 1; i < SNLI_N_LABELS; i++) mx = logits[i] > mx ? logits[i] : mx;
  for (int i = 0; i < SNLI_N_LABELS; i++) z += p[i] = exp(logits[i] - mx);
  for (int i = 0; i < SNLI_N_LABELS; i++) p[i] /= z;
}

/* eval_logits' callback: each row's logits at its index */
static void keep_rows(void *ctx, const float *logits, const int32_t *rows, int n) {
  float *all = ctx;
  for (int r = 0; r < n; r++)
    memcpy(all + (size_t)rows[r] * SNLI_N_LABELS, logits + (size_t)r * SNLI_N_LABELS, sizeof(float) * SNLI_N_LABELS);
}

bool train_predict(const char *checkpoint, const TrainOptions *o, const char *premise, const char *hypothesis,
                   const char *input, Diag *d) {
  PairVec pairs = {0};
  bool ok = input ? read_pairs(input, &pairs, d)
                  : add_pair(&pairs, "<command line>", 0, premise, strlen(premise), hypothesis, strlen(hypothesis), 0, d);
  NliModel m;
  int B = input ? o->eval_batch : 1;
  if (ok && !eval_load_nli(checkpoint, o->model, o->device, B, o->pad_to_max, &m, d)) ok = false;
  if (!ok) goto done;
  int T = (int)graph_hparam(&m.g, "max_len", 128);
  Dataset ds;
  dataset_init(&ds, pairs.n);
  dataset_add_field(&ds, "tokens", DATA_I32, T);
  dataset_add_field(&ds, "segments", DATA_I32, T);
  dataset_add_field(&ds, "valid_len", DATA_I32, 1);
  int32_t *tok = dataset_i32(&ds, "tokens"), *seg = dataset_i32(&ds, "segments"), *vl = dataset_i32(&ds, "valid_len");
  bool *cut = bc_calloc((size_t)pairs.n, sizeof(bool));
  for (int i = 0; ok && i < pairs.n; i++) {
    Pair *p = &pairs.data[i];
    vl[i] = snli_encode_pair(&m.vocab, p->premise, p->hypothesis, T, tok + (size_t)i * T, seg + (size_t)i * T, &cut[i], d);
    ok = vl[i] >= 0;
    if (cut[i]) {
      if (input) fprintf(stderr, "%s:%d: note: pair truncated to max_len %d tokens\n", input, p->line, T);
      else fprintf(stderr, "note: pair truncated to max_len %d tokens\n", T);
    }
  }
  /* the logits of every pair (in buckets of length), then one line per pair in input order */
  float *logits = bc_malloc(sizeof(float) * (size_t)pairs.n * SNLI_N_LABELS);
  ok = ok && eval_logits(&m.steps, &ds, 0, 1, keep_rows, logits, d);
  for (int k = 0; ok && k < pairs.n; k++) {
    const Pair *p = &pairs.data[k];
    const float *x = logits + (size_t)k * SNLI_N_LABELS;
    double prob[SNLI_N_LABELS];
    softmax3(x, prob);
    int label = eval_argmax(x, SNLI_N_LABELS);
    if (!input) {
      printf("%s\n", snli_label_name(label));
      for (int i = 0; i < SNLI_N_LABELS; i++) printf("  %-13s %.4f\n", snli_label_name(i), prob[i]);
      continue;
    }
    StrBuf j = {0};
    strbuf_puts(&j, "{");
    json_write_key(&j, "line");
    json_write_int(&j, p->line);
    strbuf_puts(&j, ",");
    json_write_key(&j, "label");
    json_write_string(&j, snli_label_name(label));
    strbuf_puts(&j, ",");
    json_write_key(&j, "probabilities");
    strbuf_puts(&j, "{");
    for (int i = 0; i < SNLI_N_LABELS; i++) {
      if (i) strbuf_puts(&j, ",");
      json_write_key(&j, snli_label_name(i));
      json_write_double_fmt(&j, "%.6f", prob[i]);
    }
    strbuf_puts(&j, "},");
    json_write_key(&j, "truncated");
    strbuf_puts(&j, cut[k] ? "true}" : "false}");
    printf("%s\n", j.data);
    strbuf_free(&j);
  }
  fflush(stdout);
  free(logits);
  free(cut);
  dataset_free(&ds);
  nli_model_free(&m);
done:
  for (int i = 0; i < pairs.n; i++) {
    free(pairs.data[i].premise);
    free(pairs.data[i].hypothesis);
  }
  vec_free(&pairs);
  return ok;
}
