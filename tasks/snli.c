/* snli.c — SNLI TSV files to BERT fine-tuning examples, d2l's rules (see
 * snli.h and shared/D2L.md). Each file is read whole; rows go straight
 * into the dataset's columns.
 *
 * Not here: the parse trees (only their leaves, the tokens, are used) and
 * the columns past 2, which are only counted. */
#include "tasks/snli.h"
#include "tasks/wordpiece.h"

#include <string.h>

static const char *const label_names[SNLI_N_LABELS] = {"entailment", "contradiction", "neutral"};

int snli_label_parse(const char *s, size_t n) {
  for (int i = 0; i < SNLI_N_LABELS; i++)
    if (strlen(label_names[i]) == n && memcmp(s, label_names[i], n) == 0) return i;
  if (n == 1 && s[0] == '-') return SNLI_LABEL_SKIP;
  return -1;
}

const char *snli_label_name(int label) {
  BC_ASSERT(label >= 0 && label < SNLI_N_LABELS);
  return label_names[label];
}

typedef VEC(char) CharVec;
typedef VEC(int32_t) IdVec;

/* d2l's extract_text, lower() and split() on the valid UTF-8 s[0..n), then
 * vocab[...]: appends the ids to `out` (cleared first); counts unknowns.
 * With `count`, counts the tokens there instead (v unused).
 * Dropping the parentheses before splitting is what d2l does too ("a(b"
 * becomes the token "ab"). */
static void text_ids(const Vocab *v, const char *s, size_t n, CharVec *clean, CharVec *low,
                     IdVec *out, int64_t *n_unk, TokenCounter *count) {
  clean->n = 0;
  out->n = 0;
  vec_reserve(clean, (int)n + 1);
  for (size_t i = 0; i < n; i++)
    if (s[i] != '(' && s[i] != ')') clean->data[clean->n++] = s[i];
  vec_reserve(low, 2 * clean->n + 1);
  size_t m = text_lower(clean->data, (size_t)clean->n, low->data);
  size_t pos = 0, t0, tl;
  while (text_next_token(low->data, m, &pos, &t0, &tl)) {
    if (count) {
      vec_push(out, token_counter_add(count, low->data + t0, tl));
      continue;
    }
    int32_t id = vocab_find(v, low->data + t0, tl);
    if (id < 0) {
      id = v->unk;
      if (n_unk) (*n_unk)++;
    }
    vec_push(out, id);
  }
}

/* <cls> p <sep> h <sep> <pad>... after d2l's _truncate_pair_of_tokens;
 * returns valid_len and whether anything was cut. */
static int encode(const Vocab *v, const IdVec *p, const IdVec *h, int max_len, int32_t *tokens,
                  int32_t *segments, bool *truncated) {
  int np = p->n, nh = h->n;
  while (np + nh > max_len - 3) {
    if (np > nh)
      np--;
    else
      nh--; /* tie: the hypothesis */
  }
  *truncated = np != p->n || nh != h->n;
  int n = 0;
  tokens[n] = v->cls;
  segments[n++] = 0;
  for (int i = 0; i < np; i++) tokens[n] = p->data[i], segments[n++] = 0;
  tokens[n] = v->sep;
  segments[n++] = 0;
  for (int i = 0; i < nh; i++) tokens[n] = h->data[i], segments[n++] = 1;
  tokens[n] = v->sep;
  segments[n++] = 1;
  for (int i = n; i < max_len; i++) tokens[i] = v->pad, segments[i] = 0;
  return n;
}

/* A Hugging Face model's encoding of the raw sentences (v->wordpiece):
 * [CLS] p [SEP] h [SEP] truncated longest first as transformers does, then
 * [PAD] to max_len; returns valid_len, adds to the counts (may be NULL). */
static int encode_wordpiece(const Vocab *v, const char *p, const char *h, int max_len, int32_t *tokens,
                            int32_t *segments, bool *truncated, int64_t *n_tokens, int64_t *n_unk) {
  int32_t none;
  int np = wordpiece_tokenize(v->wordpiece, p, &none, 0), nh = wordpiece_tokenize(v->wordpiece, h, &none, 0);
  int n = wordpiece_encode_pair(v->wordpiece, p, h, max_len, tokens, segments);
  BC_ASSERT(n >= 3); /* max_len >= 3 is checked before */
  for (int i = n; i < max_len; i++) tokens[i] = v->pad, segments[i] = 0;
  *truncated = np + nh + 3 > max_len;
  if (n_tokens) *n_tokens += np + nh;
  for (int i = 0; n_unk && i < n; i++) *n_unk += tokens[i] == v->unk;
  return n;
}

typedef struct {
  CharVec clean, low;
  IdVec p, h;
  TokenCounter *count; /* snli_build_vocab: count the tokens, encode nothing */
} Scratch;

/* The line starting at *pos: [*s, *s + *len) without "\n" or "\r\n". */
static bool next_line(const char *buf, size_t n_bytes, size_t *pos, const char **s, size_t *len) {
  if (*pos >= n_bytes) return false;
  const char *nl = memchr(buf + *pos, '\n', n_bytes - *pos);
  size_t end = nl ? (size_t)(nl - buf) : n_bytes;
  *s = buf + *pos;
  *len = end - *pos;
  if (*len > 0 && (*s)[*len - 1] == '\r') (*len)--;
  *pos = end + 1;
  return true;
}

/* invalid UTF-8 or NUL: an error at its column */
static bool check_text(const char *file, int line, const char *s, size_t len, Diag *d) {
  long bad = text_utf8_check(s, len);
  if (bad < 0) return true;
  if (s[bad] == '\0')
    diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "NUL byte in text");
  else
    diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "invalid UTF-8 (byte 0x%02x)",
               (unsigned char)s[bad]);
  return false;
}

/* Columns of a line: col[k] is the offset where column k starts, for
 * k < min(n, max_cols + 1), then a sentinel len + 1 (so column k ends at
 * col[k + 1] - 1); col holds max_cols + 2 entries. Returns the column
 * count n (TABs + 1), also when it exceeds max_cols. */
static int split_tabs(const char *s, size_t len, size_t *col, int max_cols) {
  int n = 1;
  col[0] = 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '\t') {
      if (n <= max_cols) col[n] = i + 1;
      n++;
    }
  col[n <= max_cols ? n : max_cols + 1] = len + 1;
  return n;
}

#define SNLI_MAX_COLS 64

static void load_file(SnliData *sd, const char *path, const Vocab *v, Scratch *sc, Diag *d) {
  const char *file = bc_intern(path);
  size_t n_bytes;
  char *buf = bc_read_file(path, &n_bytes, d);
  if (!buf) return;
  size_t pos = 0, len;
  const char *s;
  size_t col[SNLI_MAX_COLS + 2];
  if (!next_line(buf, n_bytes, &pos, &s, &len)) {
    diag_error(d, (SrcLoc){file, 1, 1}, "empty file: expected the SNLI header line");
    free(buf);
    return;
  }
  /* header: gold_label, sentence1_binary_parse, sentence2_binary_parse, ... */
  static const char *const want[3] = {"gold_label", "sentence1_binary_parse",
                                      "sentence2_binary_parse"};
  if (!check_text(file, 1, s, len, d)) {
    free(buf);
    return;
  }
  int n_cols = split_tabs(s, len, col, SNLI_MAX_COLS);
  if (n_cols < 3 || n_cols > SNLI_MAX_COLS) {
    diag_error(d, (SrcLoc){file, 1, 1},
               "not an SNLI header: %d TAB-separated columns (need 3 to %d)", n_cols,
               SNLI_MAX_COLS);
    free(buf);
    return;
  }
  for (int k = 0; k < 3; k++) {
    size_t a = col[k], b = col[k + 1] - 1;
    if (b - a != strlen(want[k]) || memcmp(s + a, want[k], b - a) != 0) {
      diag_error(d, (SrcLoc){file, 1, (int)a + 1},
                 "not an SNLI header: column %d must be '%s' (columns: gold_label, "
                 "sentence1_binary_parse, sentence2_binary_parse, ...)",
                 k + 1, want[k]);
      free(buf);
      return;
    }
  }
  /* a WordPiece vocabulary reads the raw sentences, not d2l's parses */
  int raw[2] = {-1, -1};
  for (int k = 0; v && v->wordpiece && k < n_cols; k++)
    for (int j = 0; j < 2; j++) {
      const char *name = j ? "sentence2" : "sentence1";
      if (col[k + 1] - 1 - col[k] == strlen(name) && memcmp(s + col[k], name, strlen(name)) == 0) raw[j] = k;
    }
  if (v && v->wordpiece && (raw[0] < 0 || raw[1] < 0)) {
    diag_error(d, (SrcLoc){file, 1, 1},
               "no sentence1 and sentence2 columns: a WordPiece model reads the raw sentences");
    free(buf);
    return;
  }
  /* room for every remaining line; trimmed by snli_load */
  int n_lines = 0;
  for (size_t i = pos; i < n_bytes; i++) n_lines += buf[i] == '\n';
  int first = sd->data.n_examples, n = first;
  dataset_resize(&sd->data, first + n_lines + 1);
  const int L = sd->max_len;
  int32_t *tokens = dataset_i32(&sd->data, "tokens"),
          *segments = dataset_i32(&sd->data, "segments");
  int32_t *valid_len = dataset_i32(&sd->data, "valid_len"),
          *label = dataset_i32(&sd->data, "label");
  for (int line = 2; next_line(buf, n_bytes, &pos, &s, &len); line++) {
    sd->n_rows++;
    if (!check_text(file, line, s, len, d)) continue;
    int nc = split_tabs(s, len, col, SNLI_MAX_COLS);
    if (nc != n_cols) {
      diag_error(d, (SrcLoc){file, line, nc < n_cols ? (int)len + 1 : (int)col[n_cols]},
                 "expected %d TAB-separated columns (as the header), found %d%s", n_cols, nc,
                 nc < n_cols ? " (truncated line?)" : "");
      continue;
    }
    int lab = snli_label_parse(s, col[1] - 1);
    if (lab == -1) {
      diag_error(d, (SrcLoc){file, line, 1},
                 "unknown gold label '%.*s' (expected entailment, contradiction, neutral or -)",
                 (int)(col[1] - 1), s);
      continue;
    }
    if (lab == SNLI_LABEL_SKIP) {
      sd->n_skipped++;
      continue;
    }
    if (raw[0] >= 0) {
      /* NUL-terminated copies of the two sentences */
      size_t lp = col[raw[0] + 1] - 1 - col[raw[0]], lh = col[raw[1] + 1] - 1 - col[raw[1]];
      vec_reserve(&sc->clean, (int)lp + 1);
      vec_reserve(&sc->low, (int)lh + 1);
      memcpy(sc->clean.data, s + col[raw[0]], lp), sc->clean.data[lp] = '\0';
      memcpy(sc->low.data, s + col[raw[1]], lh), sc->low.data[lh] = '\0';
      bool cut;
      valid_len[n] = encode_wordpiece(v, sc->clean.data, sc->low.data, L, tokens + (size_t)n * L,
                                      segments + (size_t)n * L, &cut, &sd->n_tokens, &sd->n_unk);
      sd->n_truncated += cut;
      label[n] = lab;
      sd->label_count[lab]++;
      n++;
      continue;
    }
    text_ids(v, s + col[1], col[2] - 1 - col[1], &sc->clean, &sc->low, &sc->p, &sd->n_unk, sc->count);
    text_ids(v, s + col[2], col[3] - 1 - col[2], &sc->clean, &sc->low, &sc->h, &sd->n_unk, sc->count);
    sd->n_tokens += sc->p.n + sc->h.n;
    if (sc->count) continue;
    bool cut;
    valid_len[n] =
        encode(v, &sc->p, &sc->h, L, tokens + (size_t)n * L, segments + (size_t)n * L, &cut);
    sd->n_truncated += cut;
    label[n] = lab;
    sd->label_count[lab]++;
    n++;
  }
  dataset_resize(&sd->data, n);
  free(buf);
}

/* snli_load, or with `count` only the counting of every token. */
static bool load(SnliData *s, const char *const *paths, int n_paths, const Vocab *v, int max_len,
                 TokenCounter *count, Diag *d) {
  memset(s, 0, sizeof(*s));
  s->max_len = max_len;
  if (max_len < 3) {
    diag_error(d, SRCLOC_NONE, "SNLI: max_len must be >= 3 for <cls> <sep> <sep> (got %d)",
               max_len);
    return false;
  }
  BC_ASSERT(count || (v->cls >= 0 && v->sep >= 0 && v->pad >= 0 && v->unk >= 0));
  dataset_init(&s->data, 0);
  dataset_add_field(&s->data, "tokens", DATA_I32, max_len);   /* (N, max_len) */
  dataset_add_field(&s->data, "segments", DATA_I32, max_len); /* (N, max_len) */
  dataset_add_field(&s->data, "valid_len", DATA_I32, 1);      /* (N) */
  dataset_add_field(&s->data, "label", DATA_I32, 1);          /* (N) */
  int n_errors = d->n_errors;
  Scratch sc = {.count = count};
  for (int i = 0; i < n_paths; i++) load_file(s, paths[i], v, &sc, d);
  vec_free(&sc.clean);
  vec_free(&sc.low);
  vec_free(&sc.p);
  vec_free(&sc.h);
  if (d->n_errors == n_errors && s->data.n_examples == 0 && !count)
    diag_error(d, (SrcLoc){n_paths ? bc_intern(paths[n_paths - 1]) : NULL, 0, 0},
               "no labeled example (%d rows, %d without a gold label)", s->n_rows, s->n_skipped);
  if (d->n_errors != n_errors) {
    snli_free(s);
    return false;
  }
  return true;
}

bool snli_load(SnliData *s, const char *const *paths, int n_paths, const Vocab *v, int max_len,
               Diag *d) {
  return load(s, paths, n_paths, v, max_len, NULL, d);
}

bool snli_build_vocab(Vocab *v, const char *const *paths, int n_paths, int min_freq, Diag *d) {
  TokenCounter c;
  token_counter_init(&c);
  SnliData s;
  bool ok = load(&s, paths, n_paths, NULL, 3, &c, d);
  if (ok) {
    snli_free(&s);
    vocab_build(v, &c, min_freq);
  }
  token_counter_free(&c);
  return ok;
}

void snli_free(SnliData *s) {
  dataset_free(&s->data);
  memset(s, 0, sizeof(*s));
}

int snli_encode_pair(const Vocab *v, const char *premise, const char *hypothesis, int max_len,
                     int32_t *tokens, int32_t *segments, bool *truncated, Diag *d) {
  if (max_len < 3) {
    diag_error(d, SRCLOC_NONE, "SNLI: max_len must be >= 3 (got %d)", max_len);
    return -1;
  }
  const char *texts[2] = {premise, hypothesis};
  for (int k = 0; k < 2; k++) {
    long bad = text_utf8_check(texts[k], strlen(texts[k]));
    if (bad >= 0) {
      diag_error(d, SRCLOC_NONE, "%s: invalid UTF-8 at byte %ld", k ? "hypothesis" : "premise",
                 bad);
      return -1;
    }
  }
  if (v->wordpiece) {
    bool cut;
    int n = encode_wordpiece(v, premise, hypothesis, max_len, tokens, segments, &cut, NULL, NULL);
    if (truncated) *truncated = cut;
    return n;
  }
  Scratch sc = {0};
  text_ids(v, premise, strlen(premise), &sc.clean, &sc.low, &sc.p, NULL, NULL);
  text_ids(v, hypothesis, strlen(hypothesis), &sc.clean, &sc.low, &sc.h, NULL, NULL);
  bool cut;
  int n = encode(v, &sc.p, &sc.h, max_len, tokens, segments, &cut);
  if (truncated) *truncated = cut;
  vec_free(&sc.clean);
  vec_free(&sc.low);
  vec_free(&sc.p);
  vec_free(&sc.h);
  return n;
}
