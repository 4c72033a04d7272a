/* wikitext.c — WikiText-2 to BERT pretraining examples, d2l's rules (see
 * wikitext.h and shared/D2L.md). Reads the whole file at once, tokenizes
 * into one flat id array, then builds the examples straight into the
 * dataset's columns.
 *
 * Not here: Python's random bit stream; the draws (shuffle, NSP coin,
 * random paragraph, random sentence, per example the candidate shuffle and
 * the 80/10/10 coins) come from one DataRng in d2l's order. */
#include "tasks/wikitext.h"

#include <math.h>
#include <string.h>

WikiOptions wiki_options_default(void) {
  return (WikiOptions){.max_len = 128, .min_freq = 5, .seed = 0};
}

/* Python's round(x) for x = n * 0.15 computed in double, as d2l does:
 * rint rounds half to even in the default rounding mode. */
static int round_15(int n) { return (int)rint((double)n * 0.15); }

int mlm_num_preds(int n_tokens) {
  int r = round_15(n_tokens);
  return r < 1 ? 1 : r;
}

int mlm_num_slots(int max_len) { return round_15(max_len); }

/* Next " . " in s[from..n) (Python's str.split(' . ') scans left to right,
 * matches do not overlap); n when there is none. */
static size_t find_sep(const char *s, size_t n, size_t from) {
  for (size_t i = from; i + 3 <= n; i++)
    if (s[i] == ' ' && s[i + 1] == '.' && s[i + 2] == ' ') return i;
  return n;
}

void wiki_corpus_free(WikiCorpus *c) {
  free(c->para_start);
  free(c->sent_start);
  free(c->tok);
  memset(c, 0, sizeof(*c));
}

bool wiki_read(WikiCorpus *c, Vocab *v, const char *path, int min_freq, Diag *d) {
  memset(c, 0, sizeof(*c));
  const char *file = bc_intern(path);
  size_t n_bytes;
  char *buf = bc_read_file(path, &n_bytes, d);
  if (!buf) return false;
  int n_errors = d->n_errors;
  TokenCounter tc;
  token_counter_init(&tc);
  VEC(int32_t) toks = {0};  /* type ids of tc, later vocabulary ids */
  VEC(int32_t) sents = {0}; /* first token of each sentence */
  VEC(int32_t) paras = {0}; /* first sentence of each paragraph */
  VEC(char) low = {0};
  if (n_bytes == 0) diag_error(d, (SrcLoc){file, 1, 1}, "empty file: expected WikiText-2 lines");
  int line = 0;
  for (size_t pos = 0; pos < n_bytes;) {
    line++;
    const char *nl = memchr(buf + pos, '\n', n_bytes - pos);
    size_t end = nl ? (size_t)(nl - buf) : n_bytes;
    const char *s = buf + pos;
    size_t len = end - pos;
    pos = end + 1;
    if (len > 0 && s[len - 1] == '\r') len--;
    long bad = text_utf8_check(s, len);
    if (bad >= 0) {
      if (s[bad] == '\0')
        diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "NUL byte in text");
      else
        diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "invalid UTF-8 (byte 0x%02x)",
                   (unsigned char)s[bad]);
      continue;
    }
    /* len(line.split(' . ')) >= 2 on the raw line; the '\n' cannot be part
     * of a separator, so the line without it gives the same answer. */
    if (find_sep(s, len, 0) == len) continue;
    if (toks.n > (1 << 30)) {
      diag_error(d, (SrcLoc){file, line, 1}, "file too large (over 2^30 tokens)");
      break;
    }
    size_t a, b;
    text_strip(s, len, &a, &b);
    vec_reserve(&low, (int)(2 * (b - a) + 1));
    size_t m = text_lower(s + a, b - a, low.data);
    vec_push(&paras, sents.n);
    for (size_t p = 0;;) {
      size_t hit = find_sep(low.data, m, p);
      vec_push(&sents, toks.n);
      size_t q = p, t0, tl;
      while (text_next_token(low.data, hit, &q, &t0, &tl))
        vec_push(&toks, token_counter_add(&tc, low.data + t0, tl));
      if (hit == m) break;
      p = hit + 3;
    }
  }
  c->n_lines = line;
  if (d->n_errors == n_errors && paras.n == 0)
    diag_error(d, (SrcLoc){file, 0, 0},
               "no paragraph: no line contains the sentence separator ' . '");
  if (d->n_errors == n_errors) {
    vocab_build(v, &tc, min_freq);
    int32_t *map = bc_malloc((size_t)(tc.n ? tc.n : 1) * sizeof(int32_t));
    for (int t = 0; t < tc.n; t++) map[t] = vocab_id(v, tc.types[t], strlen(tc.types[t]));
    for (int i = 0; i < toks.n; i++) toks.data[i] = map[toks.data[i]];
    free(map);
    vec_push(&paras, sents.n);
    vec_push(&sents, toks.n);
    c->n_paragraphs = paras.n - 1;
    c->n_sentences = sents.n - 1;
    c->n_tokens = toks.n;
    c->para_start = paras.data;
    c->sent_start = sents.data;
    c->tok = toks.data ? toks.data : bc_malloc(sizeof(int32_t));
  } else {
    vec_free(&paras);
    vec_free(&sents);
    vec_free(&toks);
    c->n_lines = 0;
  }
  vec_free(&low);
  token_counter_free(&tc);
  free(buf);
  return d->n_errors == n_errors;
}

int mlm_mask_row(int32_t *tokens, int n_tokens, const Vocab *v, DataRng *rng, int32_t *positions,
                 int32_t *labels) {
  int32_t *cand = bc_malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof(int32_t));
  int n_cand = 0;
  for (int i = 0; i < n_tokens; i++)
    if (tokens[i] != v->cls && tokens[i] != v->sep) cand[n_cand++] = i;
  int want = mlm_num_preds(n_tokens);
  data_rng_shuffle(rng, cand, n_cand);
  int k = 0;
  for (int j = 0; j < n_cand && k < want; j++) {
    int32_t p = cand[j], orig = tokens[p];
    if (data_rng_uniform(rng) < 0.8)
      tokens[p] = v->mask;
    else if (data_rng_uniform(rng) < 0.5)
      tokens[p] = orig;
    else
      tokens[p] = (int32_t)data_rng_below(rng, (uint32_t)v->n);
    /* insertion sort by position as we go (d2l sorts the pairs at the end) */
    int at = k++;
    while (at > 0 && positions[at - 1] > p) {
      positions[at] = positions[at - 1];
      labels[at] = labels[at - 1];
      at--;
    }
    positions[at] = p;
    labels[at] = orig;
  }
  free(cand);
  return k;
}

void wiki_free(WikiData *w) {
  vocab_free(&w->vocab);
  wiki_corpus_free(&w->corpus);
  dataset_free(&w->data);
  free(w->pair_a);
  free(w->pair_b);
  memset(w, 0, sizeof(*w));
  vocab_init(&w->vocab);
}

static int sent_len(const WikiCorpus *c, int s) { return c->sent_start[s + 1] - c->sent_start[s]; }

bool wiki_load(WikiData *w, const char *path, const WikiOptions *o, Diag *d) {
  memset(w, 0, sizeof(*w));
  vocab_init(&w->vocab);
  if (o->max_len < 4 || o->min_freq < 0) {
    diag_error(d, SRCLOC_NONE, "WikiText options: need max_len >= 4 and min_freq >= 0 (got %d, %d)",
               o->max_len, o->min_freq);
    return false;
  }
  if (!wiki_read(&w->corpus, &w->vocab, path, o->min_freq, d)) return false;
  const WikiCorpus *c = &w->corpus;
  const int L = o->max_len, P = mlm_num_slots(o->max_len);
  w->max_len = L;
  w->n_pred = P;
  DataRng rng;
  data_rng_seed(&rng, o->seed, DATA_STREAM_WIKI);

  /* random.shuffle(paragraphs) */
  int n_par = c->n_paragraphs;
  int32_t *order = bc_malloc((size_t)n_par * sizeof(int32_t));
  for (int p = 0; p < n_par; p++) order[p] = p;
  data_rng_shuffle(&rng, order, n_par);

  /* NSP: _get_nsp_data_from_paragraph over the shuffled paragraphs */
  VEC(int32_t) pa = {0};
  VEC(int32_t) pb = {0};
  VEC(uint8_t) next = {0};
  for (int k = 0; k < n_par; k++) {
    int p = order[k];
    for (int s = c->para_start[p]; s + 1 < c->para_start[p + 1]; s++) {
      int b = s + 1, is_next = 1;
      w->n_pairs++;
      if (!(data_rng_uniform(&rng) < 0.5)) {
        int q = order[data_rng_below(&rng, (uint32_t)n_par)];
        int n_sent = c->para_start[q + 1] - c->para_start[q];
        b = c->para_start[q] + (int)data_rng_below(&rng, (uint32_t)n_sent);
        is_next = 0;
      }
      if (sent_len(c, s) + sent_len(c, b) + 3 > L) { /* skipped, not truncated */
        w->n_skipped++;
        continue;
      }
      vec_push(&pa, s);
      vec_push(&pb, b);
      vec_push(&next, (uint8_t)is_next);
    }
  }
  free(order);
  int N = pa.n;
  if (N == 0) {
    diag_error(d, (SrcLoc){bc_intern(path), 0, 0},
               "no sentence pair fits max_len %d (%d pairs, all longer)", L, w->n_pairs);
    vec_free(&pa);
    vec_free(&pb);
    vec_free(&next);
    wiki_free(w);
    return false;
  }

  Dataset *ds = &w->data;
  dataset_init(ds, N);
  int32_t *tokens = dataset_add_field(ds, "tokens", DATA_I32, L);            /* (N, L) */
  int32_t *segments = dataset_add_field(ds, "segments", DATA_I32, L);        /* (N, L) */
  int32_t *valid_len = dataset_add_field(ds, "valid_len", DATA_I32, 1);      /* (N) */
  int32_t *positions = dataset_add_field(ds, "pred_positions", DATA_I32, P); /* (N, P) */
  float *weights = dataset_add_field(ds, "pred_weights", DATA_F32, P);       /* (N, P) */
  int32_t *labels = dataset_add_field(ds, "mlm_labels", DATA_I32, P);        /* (N, P) */
  int32_t *nsp = dataset_add_field(ds, "nsp_labels", DATA_I32, 1);           /* (N) */
  const Vocab *v = &w->vocab;
  for (int i = 0; i < N; i++) {
    int32_t *t = tokens + (size_t)i * L, *g = segments + (size_t)i * L;
    int la = sent_len(c, pa.data[i]), lb = sent_len(c, pb.data[i]), n = 0;
    t[n++] = v->cls;
    memcpy(t + n, c->tok + c->sent_start[pa.data[i]], (size_t)la * sizeof(int32_t));
    n += la;
    t[n++] = v->sep;
    memcpy(t + n, c->tok + c->sent_start[pb.data[i]], (size_t)lb * sizeof(int32_t));
    n += lb;
    t[n++] = v->sep;
    for (int j = la + 2; j < n; j++) g[j] = 1; /* b <sep>; the rest stays 0 */
    for (int j = n; j < L; j++) t[j] = v->pad;
    valid_len[i] = n;
    nsp[i] = next.data[i];
    w->n_next += next.data[i];
  }
  /* MLM after all NSP examples, as d2l; padding slots stay 0/0/0.0 */
  for (int i = 0; i < N; i++) {
    int k = mlm_mask_row(tokens + (size_t)i * L, valid_len[i], v, &rng, positions + (size_t)i * P,
                         labels + (size_t)i * P);
    BC_ASSERT(k <= P);
    for (int j = 0; j < k; j++) weights[(size_t)i * P + j] = 1.0f;
    w->n_preds += k;
  }
  w->pair_a = pa.data;
  w->pair_b = pb.data;
  vec_free(&next);
  return true;
}
