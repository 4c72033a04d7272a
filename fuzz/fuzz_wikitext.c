/* fuzz_wikitext.c — libFuzzer harness of tasks/wikitext.h: the input as
 * wiki.train.tokens through the whole pipeline (wiki_load: tokenizing,
 * vocabulary with min_freq 1, shuffle, NSP, MLM, padding) at a short
 * max_len so that pairs are both kept and skipped, then its invariants. */
#include "fuzz.h"
#include "tasks/wikitext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  WikiOptions o = wiki_options_default();
  o.max_len = 12;
  o.min_freq = 1;
  o.seed = 1;
  WikiData w;
  Diag d;
  diag_init(&d);
  if (wiki_load(&w, fuzz_as_file(data, size), &o, &d)) {
    if (w.corpus.n_paragraphs < 1 || w.n_next < 0 || w.n_skipped > w.n_pairs) abort();
    for (int p = 0; p < w.corpus.n_paragraphs; p++)
      if (w.corpus.para_start[p] > w.corpus.para_start[p + 1]) abort();
    for (int64_t t = 0; t < w.corpus.n_tokens; t++)
      if (w.corpus.tok[t] < 0 || w.corpus.tok[t] >= w.vocab.n) abort();
    wiki_free(&w);
  }
  fuzz_diag_done(&d);
  return 0;
}
