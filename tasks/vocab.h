/* vocab.h — d2l 1.0's Vocab (token <-> id), the token counter it is built
 * from, and the text helpers every data reader shares: UTF-8 checking and
 * Python's str.lower(), str.strip() and str.split() on UTF-8 bytes.
 *
 * d2l 1.0 builds `idx_to_token = sorted(set(['<unk>'] + reserved +
 * [t for t, f in counts if f >= min_freq]))`: one list sorted by code point
 * (UTF-8 byte order is code point order), so `<unk>` and the reserved
 * tokens sit where they sort (after digits and most punctuation), not at 0.
 * Unknown tokens map to `<unk>`.
 *
 * Not here: reading corpora (wikitext.h, snli.h). Deviations from Python:
 * str.lower() is Unicode 14's simple lowercase mapping plus U+0130 -> "i̇";
 * Python's Final_Sigma rule (Σ -> ς at a word end) is not applied (no Σ in
 * WikiText-2 or SNLI).
 *
 * Invariants: tokens are non-empty valid UTF-8 without whitespace; ids are
 * 0..n-1 without gaps; each token appears once. */
#ifndef BC_VOCAB_H
#define BC_VOCAB_H

#include "graph/base.h"

/* The reserved tokens of d2l's BERT vocabulary, besides <unk>. */
#define VOCAB_PAD "<pad>"
#define VOCAB_MASK "<mask>"
#define VOCAB_CLS "<cls>"
#define VOCAB_SEP "<sep>"
#define VOCAB_UNK "<unk>"

/* Distinct tokens and their counts (collections.Counter). */
typedef struct {
  int n;           /* distinct tokens */
  char **types;    /* [n] in first-seen order, NUL-terminated; owned */
  int64_t *counts; /* [n] */
  int cap_;        /* private below: capacity of types/counts */
  int32_t *slots_; /* open addressing: type id or -1 */
  uint32_t n_slots_;
  Arena arena_;
} TokenCounter;

void token_counter_init(TokenCounter *c);
/* Counts one occurrence of tok[0..len) (no NUL inside); returns its type id. */
int32_t token_counter_add(TokenCounter *c, const char *tok, size_t len);
void token_counter_free(TokenCounter *c);

struct WordPiece; /* wordpiece.h */

typedef struct {
  int n;                            /* len(vocab) */
  char **tokens;                    /* [n] id -> token; owned */
  int32_t pad, mask, cls, sep, unk; /* ids of the reserved tokens */
  /* BERT's WordPiece tokenizer over these same tokens (the vocabulary of a
   * Hugging Face model: vocab_parse_wordpiece), which then turns text into
   * ids instead of d2l's cleaning and word split; NULL for d2l's
   * vocabularies. Owned. */
  struct WordPiece *wordpiece;
  int32_t *slots_;                  /* private: open addressing, id or -1 */
  uint32_t n_slots_;
  Arena arena_;
} Vocab;

/* An empty vocabulary (n == 0, reserved ids -1); vocab_free releases it. */
void vocab_init(Vocab *v);
void vocab_free(Vocab *v);
/* d2l 1.0's construction: the tokens of `c` with count >= min_freq, plus
 * <unk> <pad> <mask> <cls> <sep>, deduplicated and sorted by code point.
 * `v` must be empty (vocab_init). */
void vocab_build(Vocab *v, const TokenCounter *c, int min_freq);
/* The id of tok[0..len), or -1 when absent. */
int32_t vocab_find(const Vocab *v, const char *tok, size_t len);
/* The id of tok[0..len), or v->unk when absent (d2l's vocab[token]). */
int32_t vocab_id(const Vocab *v, const char *tok, size_t len);
/* The token of id (0 <= id < n). */
const char *vocab_token(const Vocab *v, int32_t id);

/* vocab.txt: token of id i on line i + 1, each line ended by '\n'; written
 * atomically (graph/fileio.h: the old file or the new one, never a part).
 * On failure returns false with an error naming the file. */
bool vocab_save(const Vocab *v, const char *path, Diag *d);
/* Reads vocab.txt into the empty `v`; ids follow the file's lines (any
 * order). Errors `file:line:col` for an empty file, an empty line, invalid
 * UTF-8, whitespace inside a token, a repeated token, a missing reserved
 * token; returns false with `v` left empty. */
bool vocab_load(Vocab *v, const char *path, Diag *d);
/* vocab_load of the vocab.txt text buf[0..n_bytes) (modified: lines are cut
 * in place; buf[n_bytes] must exist), errors naming `name`. */
bool vocab_parse(Vocab *v, const char *name, char *buf, size_t n_bytes, Diag *d);
/* A Hugging Face model's vocab.txt text s[0..n) with its WordPiece
 * tokenizer (do_lower_case `lower_case`, the rules of transformers' fast
 * tokenizer): ids follow the lines, the reserved ids are [PAD] [MASK] [CLS]
 * [SEP] [UNK]'s. Errors naming `name` as wordpiece_load_text gives them;
 * `v` must be empty and is left empty on failure. */
bool vocab_parse_wordpiece(Vocab *v, const char *name, const char *s, size_t n, bool lower_case, Diag *d);
/* The vocab.txt text of v (heap; NUL-terminated), its length in *n_bytes. */
char *vocab_text(const Vocab *v, size_t *n_bytes);
/* FNV-1a 64 of the vocab.txt bytes (each token followed by '\n'): a stable
 * fingerprint for checkpoint metadata. Print it as %016llx. */
uint64_t vocab_hash(const Vocab *v);

/* ---- text helpers (Python's str semantics on UTF-8) ---------------------- */

/* Byte offset of the first byte of s[0..n) that is not part of valid UTF-8
 * (overlong forms, surrogates, > U+10FFFF and NUL bytes count as invalid),
 * or -1 when all of it is valid. */
long text_utf8_check(const char *s, size_t n);
/* Python's str.lower() of the valid UTF-8 s[0..n) into out, which must hold
 * 2 * n + 1 bytes; NUL-terminates and returns the bytes written. */
size_t text_lower(const char *s, size_t n, char *out);
/* Python's str.strip(): [*start, *end) is s[0..n) without leading and
 * trailing Unicode whitespace (str.isspace()). */
void text_strip(const char *s, size_t n, size_t *start, size_t *end);
/* Python's str.split() with no argument, one token per call: from *pos,
 * skips whitespace and returns the next token as s[*tok, *tok + *len);
 * false at the end. Start with *pos = 0. */
bool text_next_token(const char *s, size_t n, size_t *pos, size_t *tok, size_t *len);

#endif
