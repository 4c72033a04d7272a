/* wordpiece.c — BERT's WordPiece tokenizer (wordpiece.h): vocab.txt, the
 * basic tokenizer (cleaning, CJK, lower-casing and accents, punctuation),
 * greedy longest-match-first pieces, pairs and their truncation.
 *
 * Text moves through code point arrays (uint32_t) between steps and through
 * UTF-8 only where utf8proc normalizes (NFC, NFD). Unicode properties come
 * from utf8proc; the only code points written here are the rules' own
 * (BERT's CJK ranges and ASCII punctuation, the case-ignorable
 * punctuation of the final-sigma rule). */
#include "tasks/wordpiece.h"

#include "graph/strbuf.h"

#include <string.h>
#include <utf8proc.h>

typedef VEC(uint32_t) Cps;
typedef VEC(int32_t) Ids;

static const char *const special_tokens[] = {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"};
enum { N_SPECIAL = 5 };

/* ---- the vocabulary ------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

/* The slot of tok[0, len): where its id is, or the empty slot it would take. */
static uint32_t find_slot(const WordPiece *wp, const char *tok, size_t len) {
  uint32_t mask = wp->n_slots_ - 1;
  for (uint32_t j = hash_bytes(tok, len) & mask;; j = (j + 1) & mask) {
    int32_t id = wp->slots_[j];
    if (id < 0) return j;
    const char *t = wp->tokens[id];
    if (strncmp(t, tok, len) == 0 && t[len] == '\0') return j;
  }
}

int32_t wordpiece_find(const WordPiece *wp, const char *tok, size_t len) {
  if (wp->n_slots_ == 0) return -1;
  return wp->slots_[find_slot(wp, tok, len)];
}

void wordpiece_free(WordPiece *wp) {
  free(wp->tokens);
  free(wp->slots_);
  arena_free(&wp->arena_);
  memset(wp, 0, sizeof *wp);
  wp->pad = wp->unk = wp->cls = wp->sep = wp->mask = -1;
}

/* Unicode whitespace (what Python's str.split() and Rust's is_whitespace
 * split at), for a token's characters. */
static bool is_space_cp(uint32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85) return true;
  utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

bool wordpiece_load_text(WordPiece *wp, const char *s, size_t n, const char *name,
                         bool lower_case, Diag *d) {
  memset(wp, 0, sizeof *wp);
  arena_init(&wp->arena_);
  wp->lower_case = lower_case;
  wp->rules = WORDPIECE_PYTHON;
  const char *file = bc_intern(name);
  int n_errors = d->n_errors;
  if (n == 0) diag_error(d, (SrcLoc){file, 1, 1}, "empty vocabulary file");
  VEC(char *) toks = {0};
  VEC(int) lines = {0}; /* line of each token */
  int line = 0;
  for (size_t pos = 0; pos < n;) {
    line++;
    const char *nl = memchr(s + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - s) : n;
    size_t len = end - pos;
    if (len > 0 && s[end - 1] == '\r') len--;
    const char *t = s + pos;
    pos = end + 1;
    if (len == 0) {
      diag_error(d, (SrcLoc){file, line, 1}, "empty line: every line holds one token");
      continue;
    }
    int col = 0; /* 1-based column of the first bad byte or space */
    bool bad_utf8 = false;
    for (size_t i = 0; i < len && !col;) {
      utf8proc_int32_t c;
      utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)t + i, (utf8proc_ssize_t)(len - i), &c);
      if (k <= 0 || c == 0) {
        col = (int)i + 1, bad_utf8 = true;
      } else if (is_space_cp((uint32_t)c)) {
        col = (int)i + 1;
      }
      i += k > 0 ? (size_t)k : 1;
    }
    if (col) {
      diag_error(d, (SrcLoc){file, line, col}, bad_utf8 ? "invalid UTF-8" : "whitespace inside a token");
      continue;
    }
    char *tok = arena_alloc(&wp->arena_, len + 1);
    memcpy(tok, t, len);
    vec_push(&toks, tok);
    vec_push(&lines, line);
  }
  wp->n = toks.n;
  wp->tokens = toks.data;
  wp->n_slots_ = 16;
  while (wp->n_slots_ < 2u * (uint32_t)wp->n + 1) wp->n_slots_ *= 2;
  wp->slots_ = bc_malloc(wp->n_slots_ * sizeof *wp->slots_);
  for (uint32_t j = 0; j < wp->n_slots_; j++) wp->slots_[j] = -1;
  for (int i = 0; i < wp->n; i++) {
    uint32_t j = find_slot(wp, wp->tokens[i], strlen(wp->tokens[i]));
    if (wp->slots_[j] >= 0)
      diag_error(d, (SrcLoc){file, lines.data[i], 1}, "token '%s' repeats line %d", wp->tokens[i],
                 lines.data[wp->slots_[j]]);
    else
      wp->slots_[j] = i;
  }
  vec_free(&lines);
  int32_t *ids[N_SPECIAL] = {&wp->cls, &wp->sep, &wp->pad, &wp->unk, &wp->mask};
  for (int i = 0; i < N_SPECIAL; i++) {
    *ids[i] = wordpiece_find(wp, special_tokens[i], strlen(special_tokens[i]));
    if (*ids[i] < 0 && ids[i] != &wp->mask && d->n_errors == n_errors)
      diag_error(d, (SrcLoc){file, 0, 0}, "the vocabulary lacks the special token %s",
                 special_tokens[i]);
  }
  if (d->n_errors != n_errors) {
    wordpiece_free(wp);
    return false;
  }
  return true;
}

bool wordpiece_load(WordPiece *wp, const char *vocab_path, bool lower_case, Diag *d) {
  size_t n;
  char *buf = bc_read_file(vocab_path, &n, d);
  if (!buf) {
    memset(wp, 0, sizeof *wp);
    wp->pad = wp->unk = wp->cls = wp->sep = wp->mask = -1;
    return false;
  }
  bool ok = wordpiece_load_text(wp, buf, n, vocab_path, lower_case, d);
  free(buf);
  return ok;
}

/* ---- character classes (transformers' tokenization_bert) ------------------ */

static bool is_control(uint32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (utf8proc_category((utf8proc_int32_t)c)) {
  case UTF8PROC_CATEGORY_CC:
  case UTF8PROC_CATEGORY_CF:
  case UTF8PROC_CATEGORY_CS:
  case UTF8PROC_CATEGORY_CO:
  case UTF8PROC_CATEGORY_CN: return true;
  default: return false;
  }
}

/* _is_whitespace: what cleaning turns into a space. */
static bool is_clean_space(uint32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
         utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ZS;
}

/* _is_punctuation: all non-alphanumeric ASCII (so $ + < = > ^ ` | ~ too),
 * and Unicode category P*. */
static bool is_punct(uint32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
    return true;
  switch (utf8proc_category((utf8proc_int32_t)c)) {
  case UTF8PROC_CATEGORY_PC:
  case UTF8PROC_CATEGORY_PD:
  case UTF8PROC_CATEGORY_PS:
  case UTF8PROC_CATEGORY_PE:
  case UTF8PROC_CATEGORY_PI:
  case UTF8PROC_CATEGORY_PF:
  case UTF8PROC_CATEGORY_PO: return true;
  default: return false;
  }
}

/* _is_chinese_char: the CJK Unified Ideographs blocks as BERT lists them
 * (not Hangul, Hiragana or Katakana). */
static bool is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Python's "cased" (Unicode's Cased property), approximated (wordpiece.h). */
static bool is_cased(uint32_t c) {
  utf8proc_int32_t x = (utf8proc_int32_t)c;
  utf8proc_category_t cat = utf8proc_category(x);
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
         cat == UTF8PROC_CATEGORY_LT || utf8proc_islower(x) || utf8proc_isupper(x);
}

/* Unicode's Case_Ignorable: categories Mn Me Cf Lm Sk, and the characters
 * of Word_Break MidLetter, MidNumLet and Single_Quote, which utf8proc does
 * not expose (so they are listed here, from WordBreakProperty.txt). */
static bool is_case_ignorable(uint32_t c) {
  static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                 0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
    if (c == mid[i]) return true;
  switch (utf8proc_category((utf8proc_int32_t)c)) {
  case UTF8PROC_CATEGORY_MN:
  case UTF8PROC_CATEGORY_ME:
  case UTF8PROC_CATEGORY_CF:
  case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_SK: return true;
  default: return false;
  }
}

/* ---- text transforms ---------------------------------------------------------- */

/* s[0, n) as code points (invalid bytes as U+FFFD, one per byte). */
static void decode(const char *s, size_t n, Cps *out) {
  out->n = 0;
  for (size_t i = 0; i < n;) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k <= 0) c = 0xFFFD, k = 1;
    vec_push(out, (uint32_t)c);
    i += (size_t)k;
  }
}

static void encode(const uint32_t *c, int n, StrBuf *out) {
  out->n = 0;
  strbuf_add(out, "", 0);
  for (int i = 0; i < n; i++) {
    utf8proc_uint8_t b[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)c[i], b);
    strbuf_add(out, (const char *)b, (size_t)k);
  }
}

/* c[0, *n) normalized by `norm` (utf8proc_NFC or utf8proc_NFD), in place
 * in `cps` (whose data may move). The code points hold no NUL (cleaned). */
static void normalize(Cps *cps, utf8proc_uint8_t *(*norm)(const utf8proc_uint8_t *), StrBuf *tmp) {
  encode(cps->data, cps->n, tmp);
  utf8proc_uint8_t *r = norm((const utf8proc_uint8_t *)tmp->data);
  BC_ASSERT(r); /* only fails on invalid UTF-8 or out of memory */
  decode((const char *)r, strlen((const char *)r), cps);
  free(r);
}

/* Python's str.lower() of w[0, n) in place: the simple mapping, and Σ ->
 * ς in the final-sigma context (cased, case-ignorables, Σ, and no
 * case-ignorables-then-cased after it). */
static void lower_python(uint32_t *w, int n) {
  uint32_t *orig = bc_malloc((size_t)n * sizeof *orig + 1);
  memcpy(orig, w, (size_t)n * sizeof *orig);
  for (int i = 0; i < n; i++) {
    if (orig[i] != 0x3A3) {
      w[i] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)orig[i]);
      continue;
    }
    int j = i - 1;
    while (j >= 0 && is_case_ignorable(orig[j])) j--;
    bool final = j >= 0 && is_cased(orig[j]);
    if (final) {
      j = i + 1;
      while (j < n && is_case_ignorable(orig[j])) j++;
      final = j == n || !is_cased(orig[j]);
    }
    w[i] = final ? 0x3C2 : 0x3C3;
  }
  free(orig);
}

static void strip_marks(Cps *w) {
  int k = 0;
  for (int i = 0; i < w->n; i++)
    if (utf8proc_category((utf8proc_int32_t)w->data[i]) != UTF8PROC_CATEGORY_MN) w->data[k++] = w->data[i];
  w->n = k;
}

/* ---- word pieces ------------------------------------------------------------- */

typedef struct {
  const WordPiece *wp;
  Ids *out;
  StrBuf utf8, piece; /* scratch */
  Cps word;           /* scratch */
} Run;

/* WordpieceTokenizer on the word c[0, n) (no spaces, no punctuation
 * inside unless it is one punctuation character). */
static void add_pieces(Run *r, const uint32_t *c, int n) {
  const WordPiece *wp = r->wp;
  if (n == 0) return;
  if (n > WORDPIECE_MAX_WORD_CHARS) {
    vec_push(r->out, wp->unk);
    return;
  }
  encode(c, n, &r->utf8);
  /* byte offset of each code point, and the end */
  int *off = bc_malloc((size_t)(n + 1) * sizeof *off);
  for (int i = 0, b = 0; i <= n; i++) {
    off[i] = b;
    if (i < n) b += c[i] < 0x80 ? 1 : c[i] < 0x800 ? 2 : c[i] < 0x10000 ? 3 : 4;
  }
  int mark = r->out->n;
  for (int start = 0; start < n;) {
    int end = n;
    int32_t id = -1;
    for (; end > start; end--) {
      r->piece.n = 0;
      if (start > 0) strbuf_add(&r->piece, "##", 2);
      strbuf_add(&r->piece, r->utf8.data + off[start], (size_t)(off[end] - off[start]));
      id = wordpiece_find(wp, r->piece.data, r->piece.n);
      if (id >= 0) break;
    }
    if (id < 0) { /* no piece matches here: the whole word is [UNK] */
      r->out->n = mark;
      vec_push(r->out, wp->unk);
      break;
    }
    vec_push(r->out, id);
    start = end;
  }
  free(off);
}

/* The special token spelled by c[0, n), or -1. */
static int32_t special_id(const WordPiece *wp, const uint32_t *c, int n) {
  int32_t ids[N_SPECIAL] = {wp->cls, wp->sep, wp->pad, wp->unk, wp->mask};
  for (int k = 0; k < N_SPECIAL; k++) {
    const char *s = special_tokens[k];
    int len = (int)strlen(s), i = 0;
    if (len != n) continue;
    while (i < n && c[i] == (uint32_t)(unsigned char)s[i]) i++;
    if (i == n) return ids[k] >= 0 ? ids[k] : wp->unk;
  }
  return -1;
}

/* One whitespace-separated word: lower-casing and accents, punctuation
 * split, pieces. */
static void add_word(Run *r, const uint32_t *c, int n) {
  const WordPiece *wp = r->wp;
  if (wp->rules == WORDPIECE_PYTHON) { /* BasicTokenizer's never_split */
    int32_t id = special_id(wp, c, n);
    if (id >= 0) {
      vec_push(r->out, id);
      return;
    }
  }
  Cps *w = &r->word;
  w->n = 0;
  for (int i = 0; i < n; i++) vec_push(w, c[i]);
  bool ascii = true;
  for (int i = 0; i < n && ascii; i++) ascii = c[i] < 0x80;
  if (wp->lower_case && ascii) { /* both rules, without utf8proc's round trips */
    for (int i = 0; i < w->n; i++)
      if (w->data[i] >= 'A' && w->data[i] <= 'Z') w->data[i] += 'a' - 'A';
  } else if (wp->lower_case && wp->rules == WORDPIECE_PYTHON) {
    lower_python(w->data, w->n); /* token.lower(), then _run_strip_accents */
    normalize(w, utf8proc_NFD, &r->utf8);
    strip_marks(w);
  } else if (wp->lower_case) { /* BertNormalizer: strip accents, then lowercase */
    normalize(w, utf8proc_NFD, &r->utf8);
    strip_marks(w);
    for (int i = 0; i < w->n; i++) w->data[i] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)w->data[i]);
  }
  /* add_pieces reuses r->word only through r->utf8/r->piece: w stays valid */
  int start = 0;
  for (int i = 0; i < w->n; i++) {
    if (!is_punct(w->data[i])) continue;
    add_pieces(r, w->data + start, i - start);
    add_pieces(r, w->data + i, 1);
    start = i + 1;
  }
  add_pieces(r, w->data + start, w->n - start);
}

/* The basic tokenizer on s[0, n), a stretch of text without special
 * tokens; pieces appended to r->out. */
static void add_text(Run *r, const char *s, size_t n) {
  Cps raw = {0}, t = {0};
  decode(s, n, &raw);
  for (int i = 0; i < raw.n; i++) { /* _clean_text, _tokenize_chinese_chars */
    uint32_t c = raw.data[i];
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_clean_space(c)) {
      vec_push(&t, ' ');
    } else if (is_cjk(c)) {
      vec_push(&t, ' ');
      vec_push(&t, c);
      vec_push(&t, ' ');
    } else {
      vec_push(&t, c);
    }
  }
  bool ascii = true; /* NFC leaves ASCII as it is */
  for (int i = 0; i < t.n && ascii; i++) ascii = t.data[i] < 0x80;
  if (r->wp->rules == WORDPIECE_PYTHON && !ascii) normalize(&t, utf8proc_NFC, &r->utf8);
  for (int i = 0; i < t.n;) {
    while (i < t.n && is_space_cp(t.data[i])) i++;
    int start = i;
    while (i < t.n && !is_space_cp(t.data[i])) i++;
    if (i > start) add_word(r, t.data + start, i - start);
  }
  vec_free(&raw);
  vec_free(&t);
}

/* All the pieces of text, special tokens written in it included (what
 * transformers' added-token split does before the basic tokenizer). */
static void tokenize(const WordPiece *wp, const char *text, Ids *out) {
  Run r = {.wp = wp, .out = out};
  size_t n = strlen(text), pos = 0;
  while (pos < n) {
    size_t best = n, best_len = 0; /* leftmost special token, the longest there */
    int32_t best_id = -1;
    for (int k = 0; k < N_SPECIAL; k++) {
      const char *hit = strstr(text + pos, special_tokens[k]);
      size_t len = strlen(special_tokens[k]);
      if (hit && ((size_t)(hit - text) < best || ((size_t)(hit - text) == best && len > best_len))) {
        best = (size_t)(hit - text), best_len = len;
        int32_t ids[N_SPECIAL] = {wp->cls, wp->sep, wp->pad, wp->unk, wp->mask};
        best_id = ids[k] >= 0 ? ids[k] : wp->unk;
      }
    }
    add_text(&r, text + pos, best - pos);
    if (best_len) vec_push(out, best_id);
    pos = best + best_len;
  }
  strbuf_free(&r.utf8);
  strbuf_free(&r.piece);
  vec_free(&r.word);
}

int wordpiece_tokenize(const WordPiece *wp, const char *text, int32_t *ids, int cap) {
  Ids out = {0};
  tokenize(wp, text, &out);
  int n = out.n;
  if (n > 0 && cap > 0) memcpy(ids, out.data, (size_t)(n < cap ? n : cap) * sizeof *ids);
  vec_free(&out);
  return n;
}

/* ---- model inputs -------------------------------------------------------- */

int wordpiece_encode(const WordPiece *wp, const char *a, int max_len, int32_t *tokens) {
  if (max_len < 2) return -1;
  Ids ia = {0};
  tokenize(wp, a, &ia);
  int na = ia.n < max_len - 2 ? ia.n : max_len - 2;
  int n = 0;
  tokens[n++] = wp->cls;
  for (int i = 0; i < na; i++) tokens[n++] = ia.data[i];
  tokens[n++] = wp->sep;
  vec_free(&ia);
  return n;
}

/* Lengths *na, *nb after longest-first truncation to a total of t. */
static void truncate_pair(WordPieceRules rules, int *na, int *nb, int t) {
  int a = *na, b = *nb;
  if (a + b <= t) return;
  if (rules == WORDPIECE_PYTHON) {
    /* truncate_sequences: the difference off the longer, then the rest
     * shared, b losing the odd one */
    int remove = a + b - t, diff = a > b ? a - b : b - a;
    int first = diff < remove ? diff : remove, second = remove - first;
    if (a > b) {
      a -= first + second / 2;
      b -= second - second / 2;
    } else {
      a -= second / 2;
      b -= first + second - second / 2;
    }
  } else {
    /* tokenizers' truncate_encodings: the shorter keeps min(its length,
     * t / 2), the longer the rest; b is the longer on a tie */
    bool swap = a > b;
    int n1 = swap ? b : a, n2;
    n2 = n1 > t ? n1 : (n1 > t - n1 ? n1 : t - n1);
    if (n1 + n2 > t) {
      n1 = t / 2;
      n2 = n1 + t % 2;
    }
    int ta = swap ? n2 : n1, tb = swap ? n1 : n2;
    if (ta < a) a = ta;
    if (tb < b) b = tb;
  }
  *na = a, *nb = b;
}

int wordpiece_encode_pair(const WordPiece *wp, const char *a, const char *b, int max_len,
                          int32_t *tokens, int32_t *segments) {
  if (max_len < 3) return -1;
  Ids ia = {0}, ib = {0};
  tokenize(wp, a, &ia);
  tokenize(wp, b, &ib);
  int na = ia.n, nb = ib.n;
  truncate_pair(wp->rules, &na, &nb, max_len - 3);
  int n = 0;
  tokens[n] = wp->cls, segments[n++] = 0;
  for (int i = 0; i < na; i++) tokens[n] = ia.data[i], segments[n++] = 0;
  tokens[n] = wp->sep, segments[n++] = 0;
  for (int i = 0; i < nb; i++) tokens[n] = ib.data[i], segments[n++] = 1;
  tokens[n] = wp->sep, segments[n++] = 1;
  vec_free(&ia);
  vec_free(&ib);
  return n;
}
