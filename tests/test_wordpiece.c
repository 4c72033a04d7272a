/* test_wordpiece.c — tasks/wordpiece.h against transformers: every line of
 * tests/data/hf_tiny/tokenizer_refs.jsonl (made by make_tokenizer_refs.py
 * beside it: word pieces of single texts, [CLS] a [SEP] and pairs at
 * several max lengths, lower-cased or not) under the Python rules against
 * the Python tokenizer's ids and under the Rust rules against the
 * tokenizers library's; then the errors of bad vocab files and the edges of
 * the API (sizes, max_len too small, special tokens written in the text). */
#include "graph/json.h"
#include "tasks/wordpiece.h"
#include "test.h"

#define HF_DIR BC_SOURCE_DIR "/tests/data/hf_tiny"

static bool load(WordPiece *wp) {
  Diag d;
  diag_init(&d);
  bool ok = wordpiece_load(wp, HF_DIR "/vocab.txt", true, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* Whether the array v holds exactly got[0, n). */
static bool same_ids(const JsonValue *v, const int32_t *got, int n) {
  if (!v || v->kind != JSON_ARRAY || v->n != n) return false;
  for (int i = 0; i < n; i++)
    if (!v->items[i].is_uint || (int64_t)v->items[i].u != got[i]) return false;
  return true;
}

static void print_ids(const char *what, const int32_t *ids, int n) {
  fprintf(stderr, "  %s:", what);
  for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
  fputc('\n', stderr);
}

/* The reference under `key` for `rules`: the Rust tokenizer's "fast_"
 * value where the fixture has one, else the shared one. */
static const JsonValue *ref(const JsonValue *obj, const char *key, WordPieceRules rules) {
  char fast[64];
  snprintf(fast, sizeof fast, "fast_%s", key);
  const JsonValue *v = rules == WORDPIECE_RUST ? json_get(obj, fast) : NULL;
  return v ? v : json_get(obj, key);
}

/* The max_len of a result (null: no truncation, cap). */
static int ref_max_len(const JsonValue *e, int cap) {
  const JsonValue *m = json_get(e, "max_len");
  return m && m->kind == JSON_NUMBER ? (int)m->u : cap;
}

typedef struct {
  int n_lines, n_bad, n_skipped, n_single, n_encode, n_pair;
} RefCounts;

/* Compares one line of the fixture (parsed into v) under wp's rules. */
static void check_line(const WordPiece *wp, const JsonValue *v, int line, RefCounts *c) {
  enum { CAP = 1024 };
  int32_t ids[CAP], segs[CAP];
  const char *kind = json_get(v, "kind")->str;
  bool is_pair = strcmp(kind, "pair") == 0;
  const JsonValue *runs = json_get(v, is_pair ? "truncations" : "encodings");
  for (int r = -1; r < (runs ? runs->n : 0); r++) {
    const JsonValue *e = r < 0 ? v : &runs->items[r];
    int n;
    bool ok;
    if (r < 0 && is_pair) continue; /* a pair has only its truncations */
    if (r < 0) {
      c->n_single++;
      n = wordpiece_tokenize(wp, json_get(v, "text")->str, ids, CAP);
      ok = n <= CAP && same_ids(ref(e, "ids", wp->rules), ids, n);
    } else if (!is_pair) {
      c->n_encode++;
      n = wordpiece_encode(wp, json_get(v, "text")->str, ref_max_len(e, CAP), ids);
      ok = same_ids(ref(e, "input_ids", wp->rules), ids, n);
    } else {
      if (wp->rules == WORDPIECE_RUST && !*json_get(v, "b")->str) {
        /* transformers 5 calls the Rust tokenizer without a pair when b
         * is "" (a falsy text_pair) and gives [CLS] a [SEP]: the
         * wrapper's choice, not a tokenizer rule; wordpiece_encode_pair
         * keeps the pair's form. */
        c->n_skipped++;
        continue;
      }
      c->n_pair++;
      n = wordpiece_encode_pair(wp, json_get(v, "a")->str, json_get(v, "b")->str,
                                ref_max_len(e, CAP), ids, segs);
      ok = same_ids(ref(e, "input_ids", wp->rules), ids, n) &&
           same_ids(ref(e, "token_type_ids", wp->rules), segs, n);
    }
    if (!ok && c->n_bad++ < 5) {
      fprintf(stderr, "tokenizer_refs.jsonl:%d: %s rules differ (%s, max_len %d)\n", line,
              wp->rules == WORDPIECE_PYTHON ? "Python" : "Rust", kind,
              r < 0 ? -1 : ref_max_len(e, CAP));
      print_ids("got", ids, n > 0 && n < CAP ? n : 0);
    }
  }
}

/* Checks every line of the fixture under `rules`. */
static void check_refs(WordPieceRules rules) {
  WordPiece wp;
  if (!load(&wp)) {
    CHECK(!"vocab.txt loads");
    return;
  }
  wp.rules = rules;
  Diag d;
  diag_init(&d);
  size_t n_bytes;
  char *text = bc_read_file(HF_DIR "/tokenizer_refs.jsonl", &n_bytes, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  CHECK(text);
  RefCounts c = {0};
  for (size_t pos = 0; text && pos < n_bytes;) {
    char *nl = memchr(text + pos, '\n', n_bytes - pos);
    size_t end = nl ? (size_t)(nl - text) : n_bytes;
    Arena arena;
    arena_init(&arena);
    JsonValue v;
    JsonError err;
    c.n_lines++;
    bool parsed = json_parse(text + pos, end - pos, NULL, &arena, &v, &err);
    CHECK_MSG(parsed, "tokenizer_refs.jsonl:%d: %s at byte %zu", c.n_lines, err.msg, err.pos);
    if (parsed) {
      const JsonValue *lower = json_get(&v, "lower");
      wp.lower_case = lower && lower->kind == JSON_BOOL && lower->u;
      check_line(&wp, &v, c.n_lines, &c);
    }
    arena_free(&arena);
    pos = end + 1;
  }
  fprintf(stderr, "%d lines: %d texts, %d [CLS] a [SEP], %d pairs compared; %d skipped\n",
          c.n_lines, c.n_single, c.n_encode, c.n_pair, c.n_skipped);
  CHECK_EQ_INT(c.n_bad, 0);
  /* the fixture holds each kind (make_tokenizer_refs.py writes them all) */
  CHECK(c.n_single >= 400 && c.n_encode >= 400 && c.n_pair >= 600);
  CHECK(c.n_skipped <= 16); /* the ("", "") pair at 8 max lengths, twice */
  free(text);
  wordpiece_free(&wp);
}

TEST(hf_refs_python_rules) { check_refs(WORDPIECE_PYTHON); }
TEST(hf_refs_rust_rules) { check_refs(WORDPIECE_RUST); }

/* ---- the API on its own ---------------------------------------------------------- */

static const char *tok(const WordPiece *wp, int32_t id) {
  return id >= 0 && id < wp->n ? wp->tokens[id] : "(bad id)";
}

TEST(special_ids_and_sizes) {
  WordPiece wp;
  if (!load(&wp)) {
    CHECK(!"vocab.txt loads");
    return;
  }
  /* BERT's layout, which make_tokenizer_refs.py keeps */
  CHECK_EQ_INT(wp.pad, 0);
  CHECK_EQ_INT(wp.unk, 100);
  CHECK_EQ_INT(wp.cls, 101);
  CHECK_EQ_INT(wp.sep, 102);
  CHECK_EQ_INT(wp.mask, 103);
  int32_t ids[8];
  /* sizing call, then a cut copy: the count is the whole count */
  int n = wordpiece_tokenize(&wp, "Hello, hello! Hello, hello!", NULL, 0);
  CHECK_EQ_INT(n, 8);
  CHECK_EQ_INT(wordpiece_tokenize(&wp, "Hello, hello! Hello, hello!", ids, 3), 8);
  CHECK_STR(tok(&wp, ids[0]), "hello");
  CHECK_STR(tok(&wp, ids[1]), ",");
  CHECK_STR(tok(&wp, ids[2]), "hello");
  CHECK_EQ_INT(wordpiece_tokenize(&wp, "", ids, 8), 0);
  CHECK_EQ_INT(wordpiece_tokenize(&wp, " \t\x01 ", ids, 8), 0);
  /* a word of 100 code points is looked up, of 101 is [UNK] */
  char word[104];
  memset(word, 'a', 101);
  word[101] = '\0';
  CHECK_EQ_INT(wordpiece_tokenize(&wp, word, ids, 8), 1);
  CHECK_EQ_INT(ids[0], wp.unk);
  word[100] = '\0';
  CHECK(wordpiece_tokenize(&wp, word, ids, 8) > 1);
  /* the smallest max lengths */
  int32_t segs[8];
  CHECK_EQ_INT(wordpiece_encode(&wp, "hello", 1, ids), -1);
  CHECK_EQ_INT(wordpiece_encode(&wp, "hello", 2, ids), 2);
  CHECK_EQ_INT(wordpiece_encode_pair(&wp, "a", "b", 2, ids, segs), -1);
  CHECK_EQ_INT(wordpiece_encode_pair(&wp, "a", "b", 3, ids, segs), 3);
  CHECK(ids[0] == wp.cls && ids[1] == wp.sep && ids[2] == wp.sep);
  CHECK(segs[0] == 0 && segs[1] == 0 && segs[2] == 1);
  /* invalid UTF-8 reads as U+FFFD, which cleaning drops */
  CHECK_EQ_INT(wordpiece_tokenize(&wp, "\xff\xc3", ids, 8), 0);
  wordpiece_free(&wp);
  wordpiece_free(&wp); /* twice is harmless */
}

/* ---- bad vocab files ---------------------------------------------------------- */

/* Loads the vocab text s (named "v.txt"); the first error, or "" when it
 * loaded. */
static char *load_err(const char *s) {
  static char msg[512];
  WordPiece wp;
  Diag d;
  diag_init(&d);
  bool ok = wordpiece_load_text(&wp, s, strlen(s), "v.txt", true, &d);
  snprintf(msg, sizeof msg, "%s", ok ? "" : diag_first(&d));
  CHECK(ok == (d.n_errors == 0));
  if (!ok) CHECK(wp.n == 0 && wp.tokens == NULL);
  wordpiece_free(&wp);
  diag_free(&d);
  return msg;
}

#define SPECIALS "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"

TEST(vocab_errors) {
  CHECK_STR(load_err(SPECIALS "[MASK]\nhello\n##lo\n"), "");
  CHECK_STR(load_err(SPECIALS "hello"), ""); /* no final newline; no [MASK] */
  CHECK_STR(load_err(SPECIALS "hello\r\nworld\r\n"), "");
  CHECK(strstr(load_err(""), "v.txt:1:1: error: empty vocabulary file"));
  CHECK(strstr(load_err(SPECIALS "a\n\nb\n"), "v.txt:6:1: error: empty line"));
  CHECK(strstr(load_err(SPECIALS "ok\nb\xc3(\n"), "v.txt:6:2: error: invalid UTF-8"));
  CHECK(strstr(load_err(SPECIALS "\xed\xa0\x80\n"), "v.txt:5:1: error: invalid UTF-8"));
  CHECK(strstr(load_err(SPECIALS "two words\n"), "v.txt:5:4: error: whitespace inside a token"));
  CHECK(strstr(load_err(SPECIALS "nb\xc2\xa0sp\n"), "v.txt:5:3: error: whitespace inside a token"));
  CHECK(strstr(load_err(SPECIALS "x\ny\nx\n"), "v.txt:7:1: error: token 'x' repeats line 5"));
  CHECK(strstr(load_err("[PAD]\n[CLS]\n[SEP]\n"), "v.txt: error: the vocabulary lacks the special token [UNK]"));
  CHECK(strstr(load_err("[PAD]\n[UNK]\n[SEP]\n"), "lacks the special token [CLS]"));
  /* a file that does not exist: an error naming it */
  WordPiece wp;
  Diag d;
  diag_init(&d);
  CHECK(!wordpiece_load(&wp, "/nonexistent/vocab.txt", true, &d));
  CHECK(strstr(diag_first(&d), "/nonexistent/vocab.txt"));
  wordpiece_free(&wp);
  diag_free(&d);
}

TEST(special_tokens_in_text) {
  WordPiece wp;
  Diag d;
  diag_init(&d);
  const char *v = SPECIALS "[MASK]\nhello\nworld\n[\n]\nsep\n";
  CHECK(wordpiece_load_text(&wp, v, strlen(v), "v.txt", true, &d));
  int32_t ids[16];
  /* written specials are kept whole, glued or not; lower-case ones are text */
  int n = wordpiece_tokenize(&wp, "hello[SEP]world [MASK] [sep]", ids, 16);
  CHECK_EQ_INT(n, 7);
  int32_t want[] = {5, 3, 6, 4, 7, 9, 8};
  for (int i = 0; i < n && i < 7; i++) CHECK_EQ_INT(ids[i], want[i]);
  wordpiece_free(&wp);
  diag_free(&d);
}

TEST_MAIN()
