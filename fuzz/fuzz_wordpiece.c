/* fuzz_wordpiece.c — libFuzzer harness of tasks/wordpiece.h and the
 * WordPiece vocabularies of imported models (vocab_parse_wordpiece).
 * An input whose first byte is 'V' is the rest as a vocab.txt: what loads
 * must find each of its tokens at its line. Any other input is text for
 * the tokenizer over tests/data/hf_tiny/vocab.txt, lower-casing or not by
 * the first byte's low bit, under both rule sets: one text, and the text
 * split at its first TAB as a pair, each at a max_len from the second
 * byte; every id must be in the vocabulary and every length within
 * max_len, the pair's token types 0 then 1. */
#include <string.h>

#include "fuzz.h"
#include "tasks/vocab.h"
#include "tasks/wordpiece.h"

#ifndef BC_SOURCE_DIR
#define BC_SOURCE_DIR "."
#endif

static void check_vocab(const uint8_t *data, size_t size) {
  Vocab v;
  vocab_init(&v);
  Diag d;
  diag_init(&d);
  if (vocab_parse_wordpiece(&v, "vocab.txt", (const char *)data, size, true, &d)) {
    if (!v.wordpiece || v.cls < 0 || v.sep < 0 || v.pad < 0 || v.unk < 0) abort();
    for (int32_t i = 0; i < v.n; i++) {
      const char *t = vocab_token(&v, i);
      if (vocab_find(&v, t, strlen(t)) != i || wordpiece_find(v.wordpiece, t, strlen(t)) != i) abort();
    }
  }
  vocab_free(&v);
  fuzz_diag_done(&d);
}

static void check_ids(const WordPiece *wp, const int32_t *ids, int n) {
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= wp->n) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 0 && data[0] == 'V') {
    check_vocab(data + 1, size - 1);
    return 0;
  }
  static WordPiece wp[2];
  static bool loaded;
  if (!loaded) {
    Diag d;
    diag_init(&d);
    for (int k = 0; k < 2; k++)
      if (!wordpiece_load(&wp[k], BC_SOURCE_DIR "/tests/data/hf_tiny/vocab.txt", k == 1, &d)) {
        diag_print(&d, stderr);
        abort();
      }
    diag_free(&d);
    loaded = true;
  }
  if (size < 2) return 0;
  WordPiece *w = &wp[data[0] & 1];
  int max_len = 3 + data[1] % 40;
  char *text = malloc(size - 1);
  memcpy(text, data + 2, size - 2);
  text[size - 2] = '\0'; /* the tokenizer reads NUL-terminated text */
  int32_t tok[64], seg[64];
  for (int rules = 0; rules < 2; rules++) {
    w->rules = rules ? WORDPIECE_RUST : WORDPIECE_PYTHON;
    int n = wordpiece_tokenize(w, text, tok, 64);
    if (n < 0) abort();
    check_ids(w, tok, n < 64 ? n : 64);
    n = wordpiece_encode(w, text, max_len, tok);
    if (n < 2 || n > max_len || tok[0] != w->cls || tok[n - 1] != w->sep) abort();
    char *tab = strchr(text, '\t');
    if (tab) {
      *tab = '\0';
      n = wordpiece_encode_pair(w, text, tab + 1, max_len, tok, seg);
      *tab = '\t';
      if (n < 3 || n > max_len || tok[0] != w->cls || tok[n - 1] != w->sep) abort();
      check_ids(w, tok, n);
      for (int i = 1; i < n; i++)
        if (seg[i] < seg[i - 1] || seg[i] > 1) abort();
    }
  }
  free(text);
  return 0;
}
