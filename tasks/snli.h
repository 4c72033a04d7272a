/* snli.h — SNLI fine-tuning data as d2l reads it (read_snli,
 * SNLIBERTDataset; rules in shared/D2L.md):
 *
 *   file      snli_1.0_*.txt: a header line, then TAB-separated rows;
 *             column 0 gold label, columns 1 and 2 the binary parses of
 *             premise and hypothesis
 *   labels    entailment 0, contradiction 1, neutral 2; "-" (no gold
 *             label) is skipped and counted
 *   text      remove "(" and ")", lowercase, whitespace-split (d2l also
 *             collapses whitespace runs and strips, which the split makes
 *             moot), map through the pretraining vocabulary
 *   truncate  while len(p) + len(h) > max_len - 3: pop the last token of the
 *             longer side; on a tie pop the hypothesis
 *   encode    <cls> p <sep> h <sep>, segments 0 / 1, <pad> to max_len
 *
 * A vocabulary with a WordPiece tokenizer (a Hugging Face model's,
 * vocab_parse_wordpiece) reads the raw sentences instead (the header's
 * sentence1 and sentence2 columns) and encodes them as transformers does:
 * [CLS] p [SEP] h [SEP], truncated longest first, [PAD] to max_len.
 *
 * Not here: the vocabulary (built from WikiText-2, wikitext.h, or loaded
 * from vocab.txt). Stricter than d2l, which drops any row whose label is not
 * one of the three: a row with another label, a column count other than the
 * header's, invalid UTF-8 or a NUL byte is an error at file:line:col, so a
 * damaged file is never read as a shorter one.
 * Invariants: valid_len <= max_len; labels in 0..2. */
#ifndef BC_SNLI_H
#define BC_SNLI_H

#include "tasks/dataset.h"
#include "tasks/vocab.h"

typedef enum { SNLI_ENTAILMENT = 0, SNLI_CONTRADICTION = 1, SNLI_NEUTRAL = 2 } SnliLabel;
#define SNLI_N_LABELS 3
#define SNLI_LABEL_SKIP (-2) /* gold label "-": annotators did not agree */

/* The label of s[0..n): 0..2, SNLI_LABEL_SKIP for "-", -1 otherwise. */
int snli_label_parse(const char *s, size_t n);
/* "entailment", "contradiction", "neutral" for 0..2. */
const char *snli_label_name(int label);

typedef struct {
  int max_len;
  int n_rows;       /* data rows read, all files */
  int n_skipped;    /* rows with gold label "-" (d2l drops them) */
  int n_truncated;  /* examples shortened to fit max_len */
  int64_t n_tokens; /* premise + hypothesis tokens before truncation */
  int64_t n_unk;    /* of those, tokens not in the vocabulary */
  int label_count[SNLI_N_LABELS];
  /* Graph inputs, one row per labeled example in file order
   * (models/bert.yaml, graph nli):
   *   tokens     i32 [N, max_len]
   *   segments   i32 [N, max_len]
   *   valid_len  i32 [N, 1]
   *   label      i32 [N, 1] */
  Dataset data;
} SnliData;

/* Reads the files in order and concatenates their examples (e.g. the 1%
 * train sample and snli_1.0_train_extra.txt). `v` must stay alive only
 * during the call. On failure (missing or empty file, bad header, a bad
 * row, max_len < 3, no labeled row at all) returns false having added
 * errors, with `s` empty. */
bool snli_load(SnliData *s, const char *const *paths, int n_paths, const Vocab *v, int max_len,
               Diag *d);
void snli_free(SnliData *s);
/* A vocabulary of the files' premises and hypotheses (the same cleaning),
 * tokens seen at least min_freq times plus the reserved tokens, built as
 * vocab_build does; `v` must be empty. For models trained without a
 * pretrained encoder (d2l's SNLI chapters use min_freq 5). */
bool snli_build_vocab(Vocab *v, const char *const *paths, int n_paths, int min_freq, Diag *d);

/* One (premise, hypothesis) pair of raw text, for prediction: the same
 * cleaning, truncation and layout as snli_load. Writes tokens[max_len] and
 * segments[max_len] and (when not NULL) whether tokens were cut to fit;
 * returns valid_len, or -1 (with an error) when a text is not valid UTF-8
 * or max_len < 3. */
int snli_encode_pair(const Vocab *v, const char *premise, const char *hypothesis, int max_len,
                     int32_t *tokens, int32_t *segments, bool *truncated, Diag *d);

#endif
