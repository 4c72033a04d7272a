/* wikitext.h — d2l's BERT pretraining data from WikiText-2
 * (d2l's _read_wiki, _WikiTextDataset; rules in shared/D2L.md):
 *
 *   paragraphs  a line of wiki.train.tokens is kept if
 *               len(line.split(' . ')) >= 2; its sentences are
 *               line.strip().lower().split(' . '), each whitespace-split;
 *               the vocabulary (min_freq 5) is built from these tokens;
 *               the paragraphs are shuffled
 *   NSP         per adjacent pair (a, b) of a paragraph: keep b with p 0.5,
 *               else a random sentence of a random paragraph (label 0);
 *               pairs with len(a) + len(b) + 3 > max_len are skipped
 *   MLM         once per example at build time (mlm_mask_row)
 *   padding     <pad> tokens, segment 0, round(max_len * 0.15) prediction
 *               slots, padded with position 0, label 0, weight 0
 *
 * Not here: the training loop, BERT itself, Python's Mersenne Twister (the
 * draws follow d2l's order from a DataRng). Lines end at '\n' ("\r\n" is
 * one line end; a lone '\r' is whitespace, where Python would end the line).
 * Invariants: every example has valid_len <= max_len, tokens
 * <cls> a <sep> b <sep> then <pad>, segments 0 for <cls> a <sep> and 1 for
 * b <sep>; prediction positions are increasing and never hit <cls>/<sep>. */
#ifndef BC_WIKITEXT_H
#define BC_WIKITEXT_H

#include "tasks/dataset.h"
#include "tasks/vocab.h"

/* Tokenized paragraphs: paragraph p holds sentences para_start[p] ..
 * para_start[p+1]-1; sentence s holds tok[sent_start[s] .. sent_start[s+1]). */
typedef struct {
  int n_lines;      /* lines of the file */
  int n_paragraphs; /* kept lines, in file order */
  int n_sentences;
  int64_t n_tokens;
  int32_t *para_start; /* [n_paragraphs + 1]; owned */
  int32_t *sent_start; /* [n_sentences + 1]; owned */
  int32_t *tok;        /* [n_tokens] vocabulary ids; owned */
} WikiCorpus;

typedef struct {
  int max_len;   /* tokens per example with <cls> and two <sep> (d2l 2020: 128) */
  int min_freq;  /* vocabulary threshold (5) */
  uint64_t seed; /* paragraph shuffle, NSP and MLM draws */
} WikiOptions;

/* max_len 128, min_freq 5, seed 0. */
WikiOptions wiki_options_default(void);

typedef struct {
  Vocab vocab;
  WikiCorpus corpus;
  int max_len;
  int n_pred; /* prediction slots per example: round(max_len * 0.15) */
  /* Graph inputs, one row per example (models/bert.yaml, graph pretrain):
   *   tokens          i32 [N, max_len]
   *   segments        i32 [N, max_len]
   *   valid_len       i32 [N, 1]
   *   pred_positions  i32 [N, n_pred]
   *   pred_weights    f32 [N, n_pred]   1 real slot, 0 padding
   *   mlm_labels      i32 [N, n_pred]   original token ids
   *   nsp_labels      i32 [N, 1]        1 if b is a's true next sentence */
  Dataset data;
  int32_t *pair_a, *pair_b; /* [N] corpus sentence ids of a and b; owned */
  int n_pairs;              /* adjacent sentence pairs considered */
  int n_skipped;            /* of those, skipped for len(a) + len(b) + 3 > max_len */
  int n_next;               /* examples with nsp label 1 */
  int64_t n_preds;          /* real prediction slots over all examples */
} WikiData;

/* Reads and tokenizes `path`, builds the vocabulary into the empty `v` (d2l
 * 1.0 Vocab, min_freq) and maps the corpus through it. On failure (missing
 * or empty file, invalid UTF-8 or NUL at file:line:col, no kept paragraph)
 * returns false having added errors; `c` and `v` are then empty. */
bool wiki_read(WikiCorpus *c, Vocab *v, const char *path, int min_freq, Diag *d);
void wiki_corpus_free(WikiCorpus *c);

/* The whole pipeline: wiki_read, shuffle, NSP, MLM, padding. On success `w`
 * owns everything (wiki_free); on failure returns false with errors added
 * and nothing left to free. Errors also for max_len < 4 or min_freq < 0, and
 * when no pair fits max_len. */
bool wiki_load(WikiData *w, const char *path, const WikiOptions *o, Diag *d);
void wiki_free(WikiData *w);

/* MLM predictions for an example of n tokens: max(1, round(n * 0.15)),
 * rounding half to even like Python's round (30 -> 4, 70 -> 10, 110 -> 16). */
int mlm_num_preds(int n_tokens);
/* Prediction slots per example: round(max_len * 0.15) (128 -> 19, 64 -> 10). */
int mlm_num_slots(int max_len);

/* d2l's _get_mlm_data_from_tokens on one example, in place: candidates are
 * the positions whose token is not <cls>/<sep>; they are shuffled and the
 * first mlm_num_preds(n_tokens) are predicted; each is replaced by <mask>
 * with p 0.8, kept with p 0.1, or replaced by a uniform random id of the
 * whole vocabulary (reserved tokens included, as d2l's
 * random.choice(vocab.idx_to_token)) with p 0.1. Writes the positions in
 * increasing order and the original ids (labels) to positions[]/labels[],
 * which hold mlm_num_preds(n_tokens) entries; returns how many. */
int mlm_mask_row(int32_t *tokens, int n_tokens, const Vocab *v, DataRng *rng, int32_t *positions,
                 int32_t *labels);

#endif
