/* fuzz_vocab.c — libFuzzer harness of tasks/vocab.h's vocab.txt reader
 * (vocab_parse, the in-memory form of vocab_load) and the text helpers
 * every data reader shares. A vocabulary that loads must write back
 * (vocab_text) to text that loads to the same tokens. */
#include <string.h>

#include "fuzz.h"
#include "tasks/vocab.h"

static void check_text_helpers(const char *s, size_t n) {
  if (text_utf8_check(s, n) >= 0) return;
  char *low = malloc(2 * n + 1);
  size_t m = text_lower(s, n, low);
  if (m > 2 * n || low[m] != '\0') abort();
  free(low);
  size_t a, b;
  text_strip(s, n, &a, &b);
  if (a > b || b > n) abort();
  size_t pos = 0, tok, len;
  while (text_next_token(s, n, &pos, &tok, &len))
    if (len == 0 || tok + len > n) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1);
  memcpy(buf, data, size);
  buf[size] = '\0';
  check_text_helpers(buf, size);

  Vocab v;
  vocab_init(&v);
  Diag d;
  diag_init(&d);
  if (vocab_parse(&v, "vocab.txt", buf, size, &d)) {
    if (v.unk < 0 || v.pad < 0 || v.cls < 0 || v.sep < 0 || v.mask < 0) abort();
    for (int32_t i = 0; i < v.n; i++) {
      const char *t = vocab_token(&v, i);
      if (vocab_find(&v, t, strlen(t)) != i) abort();
    }
    size_t n_text;
    char *text = vocab_text(&v, &n_text);
    Vocab w;
    vocab_init(&w);
    Diag d2;
    diag_init(&d2);
    if (!vocab_parse(&w, "written", text, n_text, &d2) || w.n != v.n) {
      diag_print(&d2, stderr);
      abort();
    }
    for (int32_t i = 0; i < v.n; i++)
      if (strcmp(vocab_token(&v, i), vocab_token(&w, i)) != 0) abort();
    vocab_free(&w);
    diag_free(&d2);
    free(text);
  }
  vocab_free(&v);
  fuzz_diag_done(&d);
  free(buf);
  return 0;
}
