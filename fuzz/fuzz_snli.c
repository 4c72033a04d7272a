/* fuzz_snli.c — libFuzzer harness of tasks/snli.h: the input as an
 * snli_1.0_*.txt file through snli_build_vocab (min_freq 1) and snli_load
 * with that vocabulary (max_len 16, so truncation runs), and, split at its
 * first TAB, as a raw (premise, hypothesis) pair through snli_encode_pair. */
#include <string.h>

#include "fuzz.h"
#include "tasks/snli.h"

enum { MAX_LEN = 16 };

static void encode_pair(const Vocab *v, const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  char *tab = memchr(text, '\t', size);
  const char *hyp = "";
  if (tab) {
    *tab = '\0';
    hyp = tab + 1;
  }
  int32_t tokens[MAX_LEN], segments[MAX_LEN];
  bool truncated;
  Diag d;
  diag_init(&d);
  int n = snli_encode_pair(v, text, hyp, MAX_LEN, tokens, segments, &truncated, &d);
  if (n > MAX_LEN || n < -1 || (n >= 0 && n < 3)) abort();
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= v->n || (segments[i] != 0 && segments[i] != 1)) abort();
  fuzz_diag_done(&d);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_as_file(data, size);
  const char *paths[1] = {path};
  Vocab v;
  vocab_init(&v);
  Diag d;
  diag_init(&d);
  if (snli_build_vocab(&v, paths, 1, 1, &d)) {
    SnliData s;
    if (snli_load(&s, paths, 1, &v, MAX_LEN, &d)) {
      if (s.data.n_examples < 1) abort();
      snli_free(&s);
    }
  } else {
    TokenCounter c; /* the reserved tokens alone */
    token_counter_init(&c);
    vocab_build(&v, &c, 1);
    token_counter_free(&c);
  }
  fuzz_diag_done(&d);
  encode_pair(&v, data, size);
  vocab_free(&v);
  return 0;
}
