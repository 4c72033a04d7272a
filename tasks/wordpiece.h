/* wordpiece.h — BERT's WordPiece tokenizer as Hugging Face applies it: a
 * vocab.txt, text to word-piece ids, and the [CLS] a [SEP] b [SEP] inputs
 * of a pair with token types and longest-first truncation.
 *
 * The steps (transformers' BasicTokenizer + WordpieceTokenizer): the
 * special tokens [CLS] [SEP] [PAD] [UNK] [MASK] written in the text are cut
 * out first and kept whole; U+0000, U+FFFD and control characters
 * (category C* but \t \n \r) are dropped and whitespace becomes a space;
 * CJK ideographs (BERT's code point ranges) are set apart by spaces; the
 * text is split at whitespace; when lower-casing, each word is lower-cased
 * and its accents stripped (NFD, then marks of category Mn dropped);
 * punctuation (ASCII 33-47, 58-64, 91-96, 123-126, and category P*) splits
 * words; each word becomes the greedy longest-match-first pieces of the
 * vocabulary, continuations prefixed "##", or one [UNK] when it is longer
 * than 100 code points or some part of it has no match.
 *
 * Two rule sets, which differ in these details (the fixture
 * tests/data/hf_tiny/tokenizer_refs.jsonl holds cases of each):
 *   WORDPIECE_PYTHON: transformers' Python tokenizer (BertTokenizer in
 *     transformers 4, BertTokenizerLegacy in 5): NFC before the split;
 *     str.lower() with its final-sigma rule (Σ -> ς at the end of a word);
 *     a pair truncated to an odd total keeps the extra token in a.
 *   WORDPIECE_RUST: the tokenizers library (BertTokenizerFast in 4,
 *     BertTokenizer in 5): no NFC (a decomposed "e" + U+0301 stays two code
 *     points when not lower-casing); Σ always -> σ; accents stripped before
 *     lower-casing; the extra token of an odd total goes to the longer
 *     sequence, to b on a tie.
 * transformers 5 also encodes tokenizer(a, "") as the single text a
 * ([CLS] a [SEP]: an empty text_pair counts as none); encode_pair keeps
 * the pair's form, [CLS] a [SEP] [SEP].
 *
 * Unicode comes from utf8proc (NFC, NFD, categories, simple lower-case
 * mapping). Known differences from Python, none in the fixture: utf8proc's
 * Unicode version (15 for utf8proc 2.8) may classify code points that
 * Python's (14 for 3.11) leaves unassigned (and so drops as category Cn);
 * str.lower()'s full mapping of U+0130 (i + U+0307) is utf8proc's i, the
 * same once accents are stripped; the final-sigma rule's "cased" is
 * approximated by categories Lu Ll Lt plus utf8proc's islower/isupper.
 * Input text is NUL-terminated UTF-8; invalid bytes are read as U+FFFD,
 * which cleaning drops.
 *
 * Not here: reading tokenizer_config.json (the caller passes lower_case),
 * tokenize_chinese_chars = false, strip_accents other than "as
 * lower-casing", padding, d2l's vocabulary (vocab.h). */
#ifndef BC_WORDPIECE_H
#define BC_WORDPIECE_H

#include "graph/base.h"

typedef enum { WORDPIECE_PYTHON, WORDPIECE_RUST } WordPieceRules;

#define WORDPIECE_MAX_WORD_CHARS 100 /* longer words become [UNK] */

typedef struct WordPiece {
  int n;                            /* vocabulary size */
  char **tokens;                    /* [n] id -> token (line id + 1 of vocab.txt); owned */
  int32_t pad, unk, cls, sep, mask; /* ids of the special tokens; mask may be -1 */
  bool lower_case;                  /* do_lower_case (accents stripped with it) */
  WordPieceRules rules;             /* WORDPIECE_PYTHON after loading; may be set */
  int32_t *slots_;                  /* private: open addressing, id or -1 */
  uint32_t n_slots_;
  Arena arena_;
} WordPiece;

/* Reads a BERT vocab.txt (one token a line, the id of a token is its line
 * number - 1; "\r\n" line ends accepted). Errors `file:line:col` for an
 * empty file, an empty line, invalid UTF-8, whitespace inside a token, a
 * repeated token, a missing [UNK] [CLS] [SEP] or [PAD] ([MASK] may be
 * absent); returns false with `wp` empty (wordpiece_free is then a no-op
 * and harmless). */
bool wordpiece_load(WordPiece *wp, const char *vocab_path, bool lower_case, Diag *d);
/* wordpiece_load of the vocab.txt text s[0, n) (not modified; a
 * checkpoint's copy), errors naming `name`. */
bool wordpiece_load_text(WordPiece *wp, const char *s, size_t n, const char *name,
                         bool lower_case, Diag *d);
void wordpiece_free(WordPiece *wp);

/* The id of tok[0, len), or -1 when absent. */
int32_t wordpiece_find(const WordPiece *wp, const char *tok, size_t len);

/* The word-piece ids of `text` (no [CLS]/[SEP]): writes the first `cap`
 * into ids and returns how many there are (call with cap 0 to size). */
int wordpiece_tokenize(const WordPiece *wp, const char *text, int32_t *ids, int cap);

/* [CLS] a [SEP], cut at the end of a so that it holds at most max_len
 * tokens (max_len >= 2). tokens holds max_len entries. Returns the length,
 * or -1 when max_len < 2. Token types are all 0. */
int wordpiece_encode(const WordPiece *wp, const char *a, int max_len, int32_t *tokens);

/* [CLS] a [SEP] b [SEP] with token types 0 (through the first [SEP]) and 1,
 * truncated longest first (tokens dropped from the end of the longer of a
 * and b until the total fits; how an odd total is shared follows
 * wp->rules) to at most max_len tokens (max_len >= 3). tokens and segments
 * hold max_len entries. Returns the length, or -1 when max_len < 3. */
int wordpiece_encode_pair(const WordPiece *wp, const char *a, const char *b, int max_len,
                          int32_t *tokens, int32_t *segments);

#endif
