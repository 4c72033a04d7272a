/* vocab.c — d2l 1.0's Vocab and its token counter; the text helpers
 * (UTF-8 checking, Python's str.lower/strip/split); and the dataset
 * containers, PRNG and batcher of dataset.h. It is the base every other
 * data module (wikitext.c, snli.c) builds on.
 *
 * Not here: file formats of corpora. Hash tables are open addressing with
 * linear probing over FNV-1a 64; they hold ids into a token array, so
 * lookups take (pointer, length) slices without copying. */
#include "tasks/vocab.h"

#include <string.h>

#include "graph/fileio.h"
#include "graph/strbuf.h"
#include "tasks/dataset.h"
#include "tasks/wordpiece.h"

/* ---- hash index over a token array ---------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* The NUL-terminated key equals s[0..n)? Reads neither past the key nor
 * past s[n - 1], whatever bytes s holds. */
static bool key_equals(const char *key, const char *s, size_t n) {
  return strnlen(key, n + 1) == n && memcmp(key, s, n) == 0;
}

/* The slot holding s[0..n) or the empty slot where it would go. */
static uint32_t index_slot(const int32_t *slots, uint32_t n_slots, char *const *keys, const char *s,
                           size_t n) {
  uint32_t mask = n_slots - 1, j = (uint32_t)hash_bytes(s, n) & mask;
  while (slots[j] >= 0 && !key_equals(keys[slots[j]], s, n)) j = (j + 1) & mask;
  return j;
}

/* An empty table (all -1) with room for n_keys keys: a power of two at
 * least 2 * n_keys + 2, so probes stay short and always end. */
static void index_alloc(int32_t **slots, uint32_t *n_slots, int n_keys) {
  uint32_t cap = 64;
  while (cap < 2u * (uint32_t)n_keys + 2) cap *= 2;
  free(*slots);
  *slots = bc_malloc(cap * sizeof(int32_t));
  memset(*slots, 0xff, cap * sizeof(int32_t));
  *n_slots = cap;
}

/* A fresh table indexing keys[0..n_keys), which must be distinct. */
static void index_rebuild(int32_t **slots, uint32_t *n_slots, char *const *keys, int n_keys) {
  index_alloc(slots, n_slots, n_keys);
  for (int i = 0; i < n_keys; i++) {
    uint32_t j = index_slot(*slots, *n_slots, keys, keys[i], strlen(keys[i]));
    (*slots)[j] = i;
  }
}

/* ---- token counter ------------------------------------------------------ */

void token_counter_init(TokenCounter *c) {
  memset(c, 0, sizeof(*c));
  arena_init(&c->arena_);
  index_rebuild(&c->slots_, &c->n_slots_, NULL, 0);
}

int32_t token_counter_add(TokenCounter *c, const char *tok, size_t len) {
  uint32_t j = index_slot(c->slots_, c->n_slots_, c->types, tok, len);
  if (c->slots_[j] >= 0) {
    c->counts[c->slots_[j]]++;
    return c->slots_[j];
  }
  if (c->n == c->cap_) {
    c->cap_ = c->cap_ ? 2 * c->cap_ : 1024;
    c->types = bc_realloc(c->types, (size_t)c->cap_ * sizeof(char *));
    c->counts = bc_realloc(c->counts, (size_t)c->cap_ * sizeof(int64_t));
  }
  int32_t id = c->n++;
  char *key = arena_alloc(&c->arena_, len + 1);
  memcpy(key, tok, len);
  c->types[id] = key;
  c->counts[id] = 1;
  c->slots_[j] = id;
  if (2u * (uint32_t)c->n + 2 > c->n_slots_)
    index_rebuild(&c->slots_, &c->n_slots_, c->types, c->n);
  return id;
}

void token_counter_free(TokenCounter *c) {
  free(c->types);
  free(c->counts);
  free(c->slots_);
  arena_free(&c->arena_);
  memset(c, 0, sizeof(*c));
}

/* ---- vocabulary ------------------------------------------------------------ */

static const char *const reserved_tokens[] = {VOCAB_UNK, VOCAB_PAD, VOCAB_MASK, VOCAB_CLS,
                                              VOCAB_SEP};
#define N_RESERVED 5

void vocab_init(Vocab *v) {
  memset(v, 0, sizeof(*v));
  arena_init(&v->arena_);
  v->pad = v->mask = v->cls = v->sep = v->unk = -1;
}

void vocab_free(Vocab *v) {
  if (v->wordpiece) wordpiece_free(v->wordpiece);
  free(v->wordpiece);
  free(v->tokens);
  free(v->slots_);
  arena_free(&v->arena_);
  vocab_init(v);
}

int32_t vocab_find(const Vocab *v, const char *tok, size_t len) {
  if (!v->slots_) return -1;
  return v->slots_[index_slot(v->slots_, v->n_slots_, v->tokens, tok, len)];
}

int32_t vocab_id(const Vocab *v, const char *tok, size_t len) {
  int32_t id = vocab_find(v, tok, len);
  return id >= 0 ? id : v->unk;
}

const char *vocab_token(const Vocab *v, int32_t id) {
  BC_ASSERT(id >= 0 && id < v->n);
  return v->tokens[id];
}

static void find_reserved(Vocab *v) {
  v->pad = vocab_find(v, VOCAB_PAD, strlen(VOCAB_PAD));
  v->mask = vocab_find(v, VOCAB_MASK, strlen(VOCAB_MASK));
  v->cls = vocab_find(v, VOCAB_CLS, strlen(VOCAB_CLS));
  v->sep = vocab_find(v, VOCAB_SEP, strlen(VOCAB_SEP));
  v->unk = vocab_find(v, VOCAB_UNK, strlen(VOCAB_UNK));
}

/* Python compares str by code point; for valid UTF-8 that is the order of
 * the bytes as unsigned char, which is what strcmp compares. */
static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

void vocab_build(Vocab *v, const TokenCounter *c, int min_freq) {
  BC_ASSERT(v->n == 0 && !v->tokens);
  const char **all = bc_malloc((size_t)(c->n + N_RESERVED) * sizeof(char *));
  int n = 0;
  for (int i = 0; i < N_RESERVED; i++) all[n++] = reserved_tokens[i];
  for (int i = 0; i < c->n; i++)
    if (c->counts[i] >= min_freq) all[n++] = c->types[i];
  qsort(all, (size_t)n, sizeof(char *), cmp_str);
  v->tokens = bc_malloc((size_t)n * sizeof(char *));
  for (int i = 0; i < n; i++) {
    if (v->n > 0 && strcmp(v->tokens[v->n - 1], all[i]) == 0) continue; /* set(): dedupe */
    v->tokens[v->n++] = arena_strdup(&v->arena_, all[i]);
  }
  free(all);
  index_rebuild(&v->slots_, &v->n_slots_, v->tokens, v->n);
  find_reserved(v);
}

char *vocab_text(const Vocab *v, size_t *n_bytes) {
  StrBuf b = {0};
  strbuf_puts(&b, "");
  for (int i = 0; i < v->n; i++) {
    strbuf_puts(&b, v->tokens[i]);
    strbuf_putc(&b, '\n');
  }
  if (n_bytes) *n_bytes = b.n;
  return strbuf_take(&b);
}

bool vocab_save(const Vocab *v, const char *path, Diag *d) {
  /* whole, or not at all: a run folder's vocab.txt is what its checkpoints'
   * hash refers to */
  size_t n;
  char *text = vocab_text(v, &n);
  bool ok = file_write_atomic(path, text, n, d);
  free(text);
  return ok;
}

static long first_space(const char *s, size_t n);

bool vocab_load(Vocab *v, const char *path, Diag *d) {
  size_t n_bytes;
  char *buf = bc_read_file(path, &n_bytes, d);
  if (!buf) return false;
  bool ok = vocab_parse(v, path, buf, n_bytes, d);
  free(buf);
  return ok;
}

/* vocab_parse, requiring d2l's reserved tokens or not. */
static bool parse(Vocab *v, const char *name, char *buf, size_t n_bytes, bool d2l_reserved, Diag *d) {
  BC_ASSERT(v->n == 0 && !v->tokens);
  const char *file = bc_intern(name);
  int n_errors = d->n_errors;
  if (n_bytes == 0) diag_error(d, (SrcLoc){file, 1, 1}, "empty vocabulary file");
  VEC(char *) toks = {0}; /* strings in v->arena_; the array becomes v->tokens */
  VEC(int) lines = {0};   /* line of each token */
  int line = 0;
  for (size_t pos = 0; pos < n_bytes;) {
    line++;
    char *nl = memchr(buf + pos, '\n', n_bytes - pos);
    size_t end = nl ? (size_t)(nl - buf) : n_bytes;
    size_t len = end - pos;
    if (len > 0 && buf[end - 1] == '\r') len--;
    char *s = buf + pos;
    pos = end + 1;
    long bad = text_utf8_check(s, len), sp = first_space(s, len);
    if (len == 0) {
      diag_error(d, (SrcLoc){file, line, 1}, "empty line: every line holds one token");
    } else if (bad >= 0) {
      diag_error(d, (SrcLoc){file, line, (int)bad + 1}, "invalid UTF-8");
    } else if (sp >= 0) {
      diag_error(d, (SrcLoc){file, line, (int)sp + 1}, "whitespace inside a token");
    } else {
      s[len] = '\0'; /* over the '\n' or '\r' (or the buffer's final NUL) */
      vec_push(&toks, arena_strdup(&v->arena_, s));
      vec_push(&lines, line);
    }
  }
  v->n = toks.n;
  v->tokens = toks.data;
  index_alloc(&v->slots_, &v->n_slots_, v->n);
  for (int i = 0; i < v->n; i++) {
    uint32_t j = index_slot(v->slots_, v->n_slots_, v->tokens, v->tokens[i], strlen(v->tokens[i]));
    if (v->slots_[j] >= 0)
      diag_error(d, (SrcLoc){file, lines.data[i], 1}, "token '%s' repeats line %d", v->tokens[i],
                 lines.data[v->slots_[j]]);
    else
      v->slots_[j] = i;
  }
  find_reserved(v);
  for (int i = 0; d2l_reserved && i < N_RESERVED && d->n_errors == n_errors; i++)
    if (vocab_find(v, reserved_tokens[i], strlen(reserved_tokens[i])) < 0)
      diag_error(d, (SrcLoc){file, 0, 0}, "the vocabulary lacks the reserved token %s",
                 reserved_tokens[i]);
  vec_free(&lines);
  if (d->n_errors != n_errors) {
    vocab_free(v); /* frees toks.data too */
    return false;
  }
  return true;
}

bool vocab_parse(Vocab *v, const char *name, char *buf, size_t n_bytes, Diag *d) {
  return parse(v, name, buf, n_bytes, true, d);
}

bool vocab_parse_wordpiece(Vocab *v, const char *name, const char *s, size_t n, bool lower_case, Diag *d) {
  WordPiece *wp = bc_malloc(sizeof *wp);
  if (!wordpiece_load_text(wp, s, n, name, lower_case, d)) {
    free(wp);
    return false;
  }
  /* AutoTokenizer's choice, in transformers 4 and 5 alike */
  wp->rules = WORDPIECE_RUST;
  char *buf = bc_malloc(n + 1);
  memcpy(buf, s, n);
  buf[n] = '\0';
  bool ok = parse(v, name, buf, n, false, d);
  free(buf);
  if (!ok) {
    wordpiece_free(wp);
    free(wp);
    return false;
  }
  BC_ASSERT(v->n == wp->n); /* the same lines, the same checks */
  v->pad = wp->pad, v->mask = wp->mask, v->cls = wp->cls, v->sep = wp->sep, v->unk = wp->unk;
  v->wordpiece = wp;
  return true;
}

uint64_t vocab_hash(const Vocab *v) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < v->n; i++) {
    for (const char *s = v->tokens[i]; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ (unsigned char)'\n') * 1099511628211ull;
  }
  return h;
}

/* ---- text helpers ---------------------------------------------------------- */

/* Decodes the UTF-8 sequence at s[0..n): its length (1-4) and code point,
 * or 0 when it is not valid (strict, as Python's decoder). */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int len;
  uint32_t min;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, min = 0x80, *cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, min = 0x800, *cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, min = 0x10000, *cp = c & 0x07;
  else
    return 0;
  if ((size_t)len > n) return 0;
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (s[i] & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return len;
}

static int utf8_encode(uint32_t cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

long text_utf8_check(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] >= 0x01 && u[i] < 0x80) {
      i++;
      continue;
    }
    uint32_t cp;
    int len = u[i] ? utf8_decode(u + i, n - i, &cp) : 0;
    if (!len) return (long)i;
    i += (size_t)len;
  }
  return -1;
}

/* Unicode 14's simple lowercase mapping (Python 3.11's str.lower() without
 * U+0130, handled apart), generated from Python's unicodedata: code points
 * lo, lo + stride, ... <= hi map to cp + delta. Sorted, disjoint. */
static const struct {
  uint32_t lo, hi;
  int32_t stride, delta;
} lower_runs[] = {
    {0x0041, 0x005A, 1, 32},     {0x00C0, 0x00D6, 1, 32},     {0x00D8, 0x00DE, 1, 32},
    {0x0100, 0x012E, 2, 1},      {0x0132, 0x0136, 2, 1},      {0x0139, 0x0147, 2, 1},
    {0x014A, 0x0176, 2, 1},      {0x0178, 0x0178, 1, -121},   {0x0179, 0x017D, 2, 1},
    {0x0181, 0x0181, 1, 210},    {0x0182, 0x0184, 2, 1},      {0x0186, 0x0186, 1, 206},
    {0x0187, 0x0187, 1, 1},      {0x0189, 0x018A, 1, 205},    {0x018B, 0x018B, 1, 1},
    {0x018E, 0x018E, 1, 79},     {0x018F, 0x018F, 1, 202},    {0x0190, 0x0190, 1, 203},
    {0x0191, 0x0191, 1, 1},      {0x0193, 0x0193, 1, 205},    {0x0194, 0x0194, 1, 207},
    {0x0196, 0x0196, 1, 211},    {0x0197, 0x0197, 1, 209},    {0x0198, 0x0198, 1, 1},
    {0x019C, 0x019C, 1, 211},    {0x019D, 0x019D, 1, 213},    {0x019F, 0x019F, 1, 214},
    {0x01A0, 0x01A4, 2, 1},      {0x01A6, 0x01A6, 1, 218},    {0x01A7, 0x01A7, 1, 1},
    {0x01A9, 0x01A9, 1, 218},    {0x01AC, 0x01AC, 1, 1},      {0x01AE, 0x01AE, 1, 218},
    {0x01AF, 0x01AF, 1, 1},      {0x01B1, 0x01B2, 1, 217},    {0x01B3, 0x01B5, 2, 1},
    {0x01B7, 0x01B7, 1, 219},    {0x01B8, 0x01B8, 1, 1},      {0x01BC, 0x01BC, 1, 1},
    {0x01C4, 0x01C4, 1, 2},      {0x01C5, 0x01C5, 1, 1},      {0x01C7, 0x01C7, 1, 2},
    {0x01C8, 0x01C8, 1, 1},      {0x01CA, 0x01CA, 1, 2},      {0x01CB, 0x01DB, 2, 1},
    {0x01DE, 0x01EE, 2, 1},      {0x01F1, 0x01F1, 1, 2},      {0x01F2, 0x01F4, 2, 1},
    {0x01F6, 0x01F6, 1, -97},    {0x01F7, 0x01F7, 1, -56},    {0x01F8, 0x021E, 2, 1},
    {0x0220, 0x0220, 1, -130},   {0x0222, 0x0232, 2, 1},      {0x023A, 0x023A, 1, 10795},
    {0x023B, 0x023B, 1, 1},      {0x023D, 0x023D, 1, -163},   {0x023E, 0x023E, 1, 10792},
    {0x0241, 0x0241, 1, 1},      {0x0243, 0x0243, 1, -195},   {0x0244, 0x0244, 1, 69},
    {0x0245, 0x0245, 1, 71},     {0x0246, 0x024E, 2, 1},      {0x0370, 0x0372, 2, 1},
    {0x0376, 0x0376, 1, 1},      {0x037F, 0x037F, 1, 116},    {0x0386, 0x0386, 1, 38},
    {0x0388, 0x038A, 1, 37},     {0x038C, 0x038C, 1, 64},     {0x038E, 0x038F, 1, 63},
    {0x0391, 0x03A1, 1, 32},     {0x03A3, 0x03AB, 1, 32},     {0x03CF, 0x03CF, 1, 8},
    {0x03D8, 0x03EE, 2, 1},      {0x03F4, 0x03F4, 1, -60},    {0x03F7, 0x03F7, 1, 1},
    {0x03F9, 0x03F9, 1, -7},     {0x03FA, 0x03FA, 1, 1},      {0x03FD, 0x03FF, 1, -130},
    {0x0400, 0x040F, 1, 80},     {0x0410, 0x042F, 1, 32},     {0x0460, 0x0480, 2, 1},
    {0x048A, 0x04BE, 2, 1},      {0x04C0, 0x04C0, 1, 15},     {0x04C1, 0x04CD, 2, 1},
    {0x04D0, 0x052E, 2, 1},      {0x0531, 0x0556, 1, 48},     {0x10A0, 0x10C5, 1, 7264},
    {0x10C7, 0x10C7, 1, 7264},   {0x10CD, 0x10CD, 1, 7264},   {0x13A0, 0x13EF, 1, 38864},
    {0x13F0, 0x13F5, 1, 8},      {0x1C90, 0x1CBA, 1, -3008},  {0x1CBD, 0x1CBF, 1, -3008},
    {0x1E00, 0x1E94, 2, 1},      {0x1E9E, 0x1E9E, 1, -7615},  {0x1EA0, 0x1EFE, 2, 1},
    {0x1F08, 0x1F0F, 1, -8},     {0x1F18, 0x1F1D, 1, -8},     {0x1F28, 0x1F2F, 1, -8},
    {0x1F38, 0x1F3F, 1, -8},     {0x1F48, 0x1F4D, 1, -8},     {0x1F59, 0x1F5F, 2, -8},
    {0x1F68, 0x1F6F, 1, -8},     {0x1F88, 0x1F8F, 1, -8},     {0x1F98, 0x1F9F, 1, -8},
    {0x1FA8, 0x1FAF, 1, -8},     {0x1FB8, 0x1FB9, 1, -8},     {0x1FBA, 0x1FBB, 1, -74},
    {0x1FBC, 0x1FBC, 1, -9},     {0x1FC8, 0x1FCB, 1, -86},    {0x1FCC, 0x1FCC, 1, -9},
    {0x1FD8, 0x1FD9, 1, -8},     {0x1FDA, 0x1FDB, 1, -100},   {0x1FE8, 0x1FE9, 1, -8},
    {0x1FEA, 0x1FEB, 1, -112},   {0x1FEC, 0x1FEC, 1, -7},     {0x1FF8, 0x1FF9, 1, -128},
    {0x1FFA, 0x1FFB, 1, -126},   {0x1FFC, 0x1FFC, 1, -9},     {0x2126, 0x2126, 1, -7517},
    {0x212A, 0x212A, 1, -8383},  {0x212B, 0x212B, 1, -8262},  {0x2132, 0x2132, 1, 28},
    {0x2160, 0x216F, 1, 16},     {0x2183, 0x2183, 1, 1},      {0x24B6, 0x24CF, 1, 26},
    {0x2C00, 0x2C2F, 1, 48},     {0x2C60, 0x2C60, 1, 1},      {0x2C62, 0x2C62, 1, -10743},
    {0x2C63, 0x2C63, 1, -3814},  {0x2C64, 0x2C64, 1, -10727}, {0x2C67, 0x2C6B, 2, 1},
    {0x2C6D, 0x2C6D, 1, -10780}, {0x2C6E, 0x2C6E, 1, -10749}, {0x2C6F, 0x2C6F, 1, -10783},
    {0x2C70, 0x2C70, 1, -10782}, {0x2C72, 0x2C72, 1, 1},      {0x2C75, 0x2C75, 1, 1},
    {0x2C7E, 0x2C7F, 1, -10815}, {0x2C80, 0x2CE2, 2, 1},      {0x2CEB, 0x2CED, 2, 1},
    {0x2CF2, 0x2CF2, 1, 1},      {0xA640, 0xA66C, 2, 1},      {0xA680, 0xA69A, 2, 1},
    {0xA722, 0xA72E, 2, 1},      {0xA732, 0xA76E, 2, 1},      {0xA779, 0xA77B, 2, 1},
    {0xA77D, 0xA77D, 1, -35332}, {0xA77E, 0xA786, 2, 1},      {0xA78B, 0xA78B, 1, 1},
    {0xA78D, 0xA78D, 1, -42280}, {0xA790, 0xA792, 2, 1},      {0xA796, 0xA7A8, 2, 1},
    {0xA7AA, 0xA7AA, 1, -42308}, {0xA7AB, 0xA7AB, 1, -42319}, {0xA7AC, 0xA7AC, 1, -42315},
    {0xA7AD, 0xA7AD, 1, -42305}, {0xA7AE, 0xA7AE, 1, -42308}, {0xA7B0, 0xA7B0, 1, -42258},
    {0xA7B1, 0xA7B1, 1, -42282}, {0xA7B2, 0xA7B2, 1, -42261}, {0xA7B3, 0xA7B3, 1, 928},
    {0xA7B4, 0xA7C2, 2, 1},      {0xA7C4, 0xA7C4, 1, -48},    {0xA7C5, 0xA7C5, 1, -42307},
    {0xA7C6, 0xA7C6, 1, -35384}, {0xA7C7, 0xA7C9, 2, 1},      {0xA7D0, 0xA7D0, 1, 1},
    {0xA7D6, 0xA7D8, 2, 1},      {0xA7F5, 0xA7F5, 1, 1},      {0xFF21, 0xFF3A, 1, 32},
    {0x10400, 0x10427, 1, 40},   {0x104B0, 0x104D3, 1, 40},   {0x10570, 0x1057A, 1, 39},
    {0x1057C, 0x1058A, 1, 39},   {0x1058C, 0x10592, 1, 39},   {0x10594, 0x10595, 1, 39},
    {0x10C80, 0x10CB2, 1, 64},   {0x118A0, 0x118BF, 1, 32},   {0x16E40, 0x16E5F, 1, 32},
    {0x1E900, 0x1E921, 1, 34}};

static uint32_t lower_cp(uint32_t cp) {
  int lo = 0, hi = (int)(sizeof lower_runs / sizeof lower_runs[0]) - 1, found = -1;
  while (lo <= hi) { /* the last run starting at or before cp */
    int mid = (lo + hi) / 2;
    if (lower_runs[mid].lo <= cp)
      found = mid, lo = mid + 1;
    else
      hi = mid - 1;
  }
  if (found < 0 || cp > lower_runs[found].hi) return cp;
  if ((cp - lower_runs[found].lo) % (uint32_t)lower_runs[found].stride) return cp;
  return (uint32_t)((int32_t)cp + lower_runs[found].delta);
}

size_t text_lower(const char *s, size_t n, char *out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    if (u[i] < 0x80) {
      out[o++] = (char)(u[i] >= 'A' && u[i] <= 'Z' ? u[i] + 32 : u[i]);
      i++;
      continue;
    }
    uint32_t cp;
    int len = utf8_decode(u + i, n - i, &cp);
    BC_ASSERT(len > 0 && "text_lower needs valid UTF-8");
    i += (size_t)len;
    if (cp == 0x130) { /* İ -> i + COMBINING DOT ABOVE (SpecialCasing.txt) */
      out[o++] = 'i';
      o += (size_t)utf8_encode(0x307, out + o);
    } else {
      o += (size_t)utf8_encode(lower_cp(cp), out + o);
    }
  }
  out[o] = '\0';
  return o;
}

/* Byte length of the whitespace character (str.isspace()) at s[0..n), or 0. */
static int space_len(const char *s, size_t n) {
  unsigned c = (unsigned char)s[0];
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  uint32_t cp;
  int len = utf8_decode((const unsigned char *)s, n, &cp);
  if (!len) return 0;
  bool sp = cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
            cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
  return sp ? len : 0;
}

/* Length of the character at s[0..n) (1 for a byte that is not UTF-8). */
static int char_len(const char *s, size_t n) {
  uint32_t cp;
  int len = utf8_decode((const unsigned char *)s, n, &cp);
  return len ? len : 1;
}

/* Offset of the first whitespace character of the valid UTF-8 s[0..n), or -1. */
static long first_space(const char *s, size_t n) {
  for (size_t i = 0; i < n; i += (size_t)char_len(s + i, n - i))
    if (space_len(s + i, n - i)) return (long)i;
  return -1;
}

void text_strip(const char *s, size_t n, size_t *start, size_t *end) {
  size_t a = 0, b = n;
  int k;
  while (a < b && (k = space_len(s + a, b - a)) > 0) a += (size_t)k;
  /* trailing: step back over the last character while it is whitespace */
  while (b > a) {
    size_t p = b - 1;
    while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
    if (space_len(s + p, b - p) != (int)(b - p)) break;
    b = p;
  }
  *start = a;
  *end = b;
}

bool text_next_token(const char *s, size_t n, size_t *pos, size_t *tok, size_t *len) {
  size_t i = *pos;
  int k;
  while (i < n && (k = space_len(s + i, n - i)) > 0) i += (size_t)k;
  if (i >= n) {
    *pos = n;
    return false;
  }
  size_t j = i;
  while (j < n && space_len(s + j, n - j) == 0) j += (size_t)char_len(s + j, n - j);
  *tok = i;
  *len = j - i;
  *pos = j;
  return true;
}

/* ---- datasets (dataset.h) ---------------------------------------------------- */

void dataset_init(Dataset *ds, int n_examples) {
  BC_ASSERT(n_examples >= 0);
  memset(ds, 0, sizeof(*ds));
  ds->n_examples = n_examples;
}

int data_field_row_bytes(const DataField *f) { return f->width * 4; /* int32_t or float */ }

void *dataset_add_field(Dataset *ds, const char *name, DataDType dtype, int width) {
  BC_ASSERT(ds->n_fields < DATASET_MAX_FIELDS && width >= 1 && !dataset_field(ds, name));
  _Static_assert(sizeof(int32_t) == 4 && sizeof(float) == 4, "fields hold 4-byte elements");
  DataField *f = &ds->fields[ds->n_fields++];
  f->name = name;
  f->dtype = dtype;
  f->width = width;
  f->data = bc_calloc((size_t)ds->n_examples * (size_t)width, 4);
  return f->data;
}

void dataset_resize(Dataset *ds, int n_examples) {
  BC_ASSERT(n_examples >= 0);
  for (int i = 0; i < ds->n_fields; i++) {
    DataField *f = &ds->fields[i];
    size_t row = (size_t)data_field_row_bytes(f);
    f->data = bc_realloc(f->data, row * (size_t)n_examples);
    if (n_examples > ds->n_examples)
      memset((char *)f->data + row * (size_t)ds->n_examples, 0,
             row * (size_t)(n_examples - ds->n_examples));
  }
  ds->n_examples = n_examples;
}

const DataField *dataset_field(const Dataset *ds, const char *name) {
  for (int i = 0; i < ds->n_fields; i++)
    if (strcmp(ds->fields[i].name, name) == 0) return &ds->fields[i];
  return NULL;
}

int32_t *dataset_i32(const Dataset *ds, const char *name) {
  const DataField *f = dataset_field(ds, name);
  BC_ASSERT(f && f->dtype == DATA_I32);
  return f->data;
}

float *dataset_f32(const Dataset *ds, const char *name) {
  const DataField *f = dataset_field(ds, name);
  BC_ASSERT(f && f->dtype == DATA_F32);
  return f->data;
}

void dataset_free(Dataset *ds) {
  for (int i = 0; i < ds->n_fields; i++) free(ds->fields[i].data);
  memset(ds, 0, sizeof(*ds));
}

/* ---- PRNG ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void data_rng_seed(DataRng *r, uint64_t seed, uint64_t stream) {
  uint64_t t = stream;
  uint64_t x = seed ^ splitmix64(&t); /* different streams start far apart */
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t data_rng_u64(DataRng *r) {
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

double data_rng_uniform(DataRng *r) { return (double)(data_rng_u64(r) >> 11) * 0x1.0p-53; }

uint32_t data_rng_below(DataRng *r, uint32_t n) {
  BC_ASSERT(n >= 1);
  /* reject the top partial copy of [0, n) so every residue is equally likely */
  uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
  do x = data_rng_u64(r);
  while (x >= limit);
  return (uint32_t)(x % n);
}

void data_rng_shuffle(DataRng *r, int32_t *a, int n) {
  for (int i = n - 1; i >= 1; i--) {
    uint32_t j = data_rng_below(r, (uint32_t)i + 1);
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* ---- batching ---------------------------------------------------------------- */

void batcher_init(Batcher *b, int n_examples, int batch_size, bool shuffle, bool drop_last) {
  BC_ASSERT(n_examples >= 0 && batch_size >= 1);
  memset(b, 0, sizeof(*b));
  b->n_examples = n_examples;
  b->batch_size = batch_size;
  b->shuffle = shuffle;
  b->drop_last = drop_last;
  b->n_batches = drop_last ? n_examples / batch_size : (n_examples + batch_size - 1) / batch_size;
  b->order = bc_malloc((size_t)(n_examples ? n_examples : 1) * sizeof(int32_t));
  for (int i = 0; i < n_examples; i++) b->order[i] = i;
}

void batcher_set_epoch(Batcher *b, uint64_t seed, int epoch) {
  BC_ASSERT(epoch >= 0);
  for (int i = 0; i < b->n_examples; i++) b->order[i] = i;
  if (!b->shuffle) return;
  DataRng r;
  data_rng_seed(&r, seed, DATA_STREAM_BATCH + (uint64_t)epoch);
  data_rng_shuffle(&r, b->order, b->n_examples);
  if (b->lengths) bucket_epoch(b, &r);
}

void batcher_fill(const Batcher *b, const Dataset *src, int index, DataBatch *out) {
  BC_ASSERT(index >= 0 && index < b->n_batches && src->n_examples == b->n_examples);
  BC_ASSERT(out->batch_size == b->batch_size && out->data.n_fields == src->n_fields);
  int first = index * b->batch_size;
  int n_real = b->n_examples - first < b->batch_size ? b->n_examples - first : b->batch_size;
  out->n_real = n_real;
  for (int r = 0; r < b->batch_size; r++)
    out->rows[r] = b->order[first + (r < n_real ? r : n_real - 1)];
  for (int k = 0; k < src->n_fields; k++) {
    const DataField *f = &src->fields[k];
    DataField *g = &out->data.fields[k];
    BC_ASSERT(strcmp(f->name, g->name) == 0 && f->width == g->width && f->dtype == g->dtype);
    size_t row = (size_t)data_field_row_bytes(f);
    for (int r = 0; r < b->batch_size; r++)
      memcpy((char *)g->data + row * (size_t)r, (const char *)f->data + row * (size_t)out->rows[r],
             row);
  }
}

void batcher_free(Batcher *b) {
  free(b->order);
  free(b->batch_len);
  memset(b, 0, sizeof(*b));
}

void data_batch_init(DataBatch *out, const Dataset *like, int batch_size) {
  BC_ASSERT(batch_size >= 1);
  memset(out, 0, sizeof(*out));
  out->batch_size = batch_size;
  out->rows = bc_calloc((size_t)batch_size, sizeof(int32_t));
  dataset_init(&out->data, batch_size);
  for (int k = 0; k < like->n_fields; k++)
    dataset_add_field(&out->data, like->fields[k].name, like->fields[k].dtype,
                      like->fields[k].width);
}

void data_batch_free(DataBatch *out) {
  free(out->rows);
  dataset_free(&out->data);
  memset(out, 0, sizeof(*out));
}
