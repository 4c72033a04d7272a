/* test_data.c — the data side of the d2l pipeline (tasks/vocab, wikitext,
 * snli, dataset.h) on small fixtures in tests/data/, one case per D2L.md
 * rule, plus the bad-data errors with their exact file:line:col.
 *
 * Expected values for wiki_small.tokens and snli_small.txt were derived by
 * running d2l 1.0's own Python (read_wiki, Vocab, read_snli) on the
 * fixtures. With BERT_DATA set (scripts/test.sh and CI: ../shared/data)
 * the last case, real_data, checks the real WikiText-2 and SNLI files;
 * without it that case skips. ctest runs real_data as an entry of its own,
 * test_data_real, which then shows as skipped (exit 77). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/strbuf.h"
#include "tasks/dataset.h"
#include "tasks/snli.h"
#include "tasks/vocab.h"
#include "tasks/wikitext.h"
#include "test.h"

#ifndef BC_BINARY_DIR
#define BC_BINARY_DIR "."
#endif
#define FIX(name) BC_SOURCE_DIR "/tests/data/" name

/* wiki_small.tokens at min_freq 5, in d2l 1.0's order (sorted by code point). */
static const char *const small_vocab[] = {",",      ".",     "1",     "<cls>", "<foo>",
                                          "<mask>", "<pad>", "<sep>", "<unk>", "a",
                                          "apple",  "slept", "the",   "zebra", "élan"};
enum { COMMA, DOT, ONE, CLS, FOO, MASK, PAD, SEP, UNK, A, APPLE, SLEPT, THE, ZEBRA, ELAN, N_SMALL };

static void load_small_vocab(Vocab *v) {
  Diag d;
  diag_init(&d);
  WikiCorpus c;
  vocab_init(v);
  bool ok = wiki_read(&c, v, FIX("wiki_small.tokens"), 5, &d);
  CHECK_MSG(ok, "%s", diag_first(&d));
  wiki_corpus_free(&c);
  diag_free(&d);
}

/* The first message starts with `loc` (file:line:col: error:) and contains `what`. */
static void check_error(const Diag *d, const char *loc, const char *what) {
  const char *m = diag_first(d);
  CHECK_MSG(d->n_errors >= 1, "no error, expected %s", loc);
  CHECK_MSG(strncmp(m, loc, strlen(loc)) == 0, "expected it to start with\n  %s\ngot\n  %s", loc,
            m);
  CHECK_MSG(strstr(m, what) != NULL, "expected '%s' in\n  %s", what, m);
}

/* ---- vocabulary ---------------------------------------------------------- */

TEST(vocab_code_point_order_and_min_freq) {
  Vocab v;
  load_small_vocab(&v);
  CHECK_EQ_INT(v.n, N_SMALL);
  for (int i = 0; i < v.n && i < N_SMALL; i++) CHECK_STR(vocab_token(&v, i), small_vocab[i]);
  /* reserved tokens sit where they sort: <foo> (from the text) lands
   * between <cls> and <mask>; <unk> from the text is the reserved one */
  CHECK_EQ_INT(v.cls, CLS);
  CHECK_EQ_INT(v.mask, MASK);
  CHECK_EQ_INT(v.pad, PAD);
  CHECK_EQ_INT(v.sep, SEP);
  CHECK_EQ_INT(v.unk, UNK);
  /* min_freq 5 counts kept paragraphs only: zebra 5 (+2 in a dropped line)
   * is in; yak 4 (+3 dropped) and ate 4 are out and map to <unk> */
  CHECK_EQ_INT(vocab_find(&v, "zebra", 5), ZEBRA);
  CHECK_EQ_INT(vocab_find(&v, "yak", 3), -1);
  CHECK_EQ_INT(vocab_id(&v, "yak", 3), UNK);
  CHECK_EQ_INT(vocab_id(&v, "ate", 3), UNK);
  /* É and ÉLAN were lowercased before counting (Python's str.lower) */
  CHECK_EQ_INT(vocab_find(&v, "élan", strlen("élan")), ELAN);
  CHECK_EQ_INT(vocab_find(&v, "Élan", strlen("Élan")), -1);
  /* slices need not be NUL-terminated */
  CHECK_EQ_INT(vocab_find(&v, "thexyz", 3), THE);
  vocab_free(&v);

  /* min_freq 6: the (15) , (7) . (7) élan (6) <foo> (6) and the reserved 5 */
  Diag d;
  diag_init(&d);
  WikiCorpus c;
  vocab_init(&v);
  CHECK(wiki_read(&c, &v, FIX("wiki_small.tokens"), 6, &d));
  CHECK_EQ_INT(v.n, 10);
  CHECK_EQ_INT(vocab_find(&v, "zebra", 5), -1);
  wiki_corpus_free(&c);
  vocab_free(&v);
  diag_free(&d);
}

TEST(vocab_save_load_hash) {
  Vocab v, w;
  load_small_vocab(&v);
  Diag d;
  diag_init(&d);
  const char *path = BC_BINARY_DIR "/test_data_vocab.txt";
  CHECK(vocab_save(&v, path, &d));
  vocab_init(&w);
  CHECK_MSG(vocab_load(&w, path, &d), "%s", diag_first(&d));
  CHECK_EQ_INT(w.n, v.n);
  for (int i = 0; i < v.n && i < w.n; i++) CHECK_STR(vocab_token(&w, i), vocab_token(&v, i));
  CHECK_EQ_INT(w.unk, v.unk);
  CHECK_EQ_INT(w.pad, v.pad);
  CHECK(vocab_hash(&w) == vocab_hash(&v));
  /* FNV-1a 64 of the vocab.txt bytes: pinned, it goes into checkpoints */
  size_t n;
  char *bytes = bc_read_file(path, &n, &d);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; bytes && i < n; i++) h = (h ^ (unsigned char)bytes[i]) * 1099511628211ull;
  free(bytes);
  CHECK(vocab_hash(&v) == h);
  CHECK_MSG(vocab_hash(&v) == 0xe7bf406df6bc1028ull, "hash %016llx",
            (unsigned long long)vocab_hash(&v));
  vocab_free(&w);
  /* a different vocabulary (min_freq 6), a different hash */
  WikiCorpus c;
  vocab_init(&w);
  CHECK(wiki_read(&c, &w, FIX("wiki_small.tokens"), 6, &d));
  CHECK(vocab_hash(&w) != vocab_hash(&v));
  wiki_corpus_free(&c);
  vocab_free(&w);
  vocab_free(&v);
  diag_free(&d);
}

/* vocab.txt is replaced, never written in place: a file linked to the old
 * one keeps the old bytes, the new one holds exactly the tokens, no
 * temporary file is left, and a failed save leaves nothing behind. */
TEST(vocab_save_atomic) {
  Vocab v;
  load_small_vocab(&v);
  Diag d;
  diag_init(&d);
  char dir[] = BC_BINARY_DIR "/test_data_atomic.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char *path = bc_asprintf("%s/vocab.txt", dir), *old = bc_asprintf("%s/old.txt", dir);
  FILE *f = fopen(path, "wb");
  CHECK(f && fputs("stale\n", f) >= 0 && fclose(f) == 0);
  CHECK(link(path, old) == 0);
  CHECK_MSG(vocab_save(&v, path, &d), "%s", diag_first(&d));
  size_t n = 0;
  char *bytes = bc_read_file(old, &n, &d);
  CHECK(bytes && n == 6 && memcmp(bytes, "stale\n", 6) == 0);
  free(bytes);
  StrBuf want = {0};
  for (int i = 0; i < N_SMALL; i++) strbuf_printf(&want, "%s\n", small_vocab[i]);
  bytes = bc_read_file(path, &n, &d);
  CHECK(bytes && n == want.n && memcmp(bytes, want.data, n) == 0);
  free(bytes);
  strbuf_free(&want);
  DIR *dp = opendir(dir);
  int entries = 0;
  for (struct dirent *de; dp && (de = readdir(dp)) != NULL;)
    if (de->d_name[0] != '.') {
      CHECK_MSG(!strcmp(de->d_name, "vocab.txt") || !strcmp(de->d_name, "old.txt"), "left: %s",
                de->d_name);
      entries++;
    }
  if (dp) closedir(dp);
  CHECK_EQ_INT(entries, 2);
  /* a directory that does not exist: false, an error naming the file */
  char *missing = bc_asprintf("%s/no/vocab.txt", dir);
  CHECK(!vocab_save(&v, missing, &d));
  CHECK(d.n_errors == 1 && strstr(diag_first(&d), missing));
  unlink(path), unlink(old), rmdir(dir);
  free(missing), free(path), free(old);
  vocab_free(&v);
  diag_free(&d);
}

TEST(vocab_load_errors) {
  Diag d;
  Vocab v;
  diag_init(&d);
  vocab_init(&v);
  CHECK(!vocab_load(&v, FIX("vocab_bad.txt"), &d));
  check_error(&d, FIX("vocab_bad.txt") ":4:1: error:", "token '<mask>' repeats line 2");
  CHECK_EQ_INT(v.n, 0);
  diag_free(&d);

  diag_init(&d);
  CHECK(!vocab_load(&v, FIX("vocab_no_unk.txt"), &d));
  check_error(&d, FIX("vocab_no_unk.txt") ": error:", "lacks the reserved token <unk>");
  diag_free(&d);

  diag_init(&d);
  CHECK(!vocab_load(&v, FIX("no_such_vocab.txt"), &d));
  check_error(&d, FIX("no_such_vocab.txt") ": error:", "cannot open file");
  diag_free(&d);

  diag_init(&d);
  CHECK(!vocab_load(&v, FIX("snli_empty.txt"), &d));
  check_error(&d, FIX("snli_empty.txt") ":1:1: error:", "empty vocabulary file");
  diag_free(&d);

  diag_init(&d); /* a line with two tokens */
  CHECK(!vocab_load(&v, FIX("snli_bad_header.txt"), &d));
  check_error(&d, FIX("snli_bad_header.txt") ":1:6: error:", "whitespace inside a token");
  diag_free(&d);
  vocab_free(&v);
}

/* ---- text helpers ----------------------------------------------------------- */

TEST(text_python_semantics) {
  char out[128];
  const char *s = "The ÉLAN İ Straße ΣΩ Ж";
  text_lower(s, strlen(s), out);
  CHECK_STR(out, "the élan i\xcc\x87 straße σω ж"); /* İ -> i + U+0307, as Python */
  CHECK_EQ_INT(text_utf8_check("ok é", 5), -1);
  CHECK_EQ_INT(text_utf8_check("ab\xc0\xaf", 4), 2);       /* overlong '/' */
  CHECK_EQ_INT(text_utf8_check("\xed\xa0\x80", 3), 0);     /* surrogate */
  CHECK_EQ_INT(text_utf8_check("a\xc3", 2), 1);            /* cut sequence */
  CHECK_EQ_INT(text_utf8_check("a\0b", 3), 1);             /* NUL */
  CHECK_EQ_INT(text_utf8_check("\xf4\x90\x80\x80", 4), 0); /* > U+10FFFF */
  /* str.split(): runs of any Unicode whitespace (NBSP, tab, U+3000) */
  const char *t =
      "  a\xc2\xa0\tbé \xe3\x80\x80"
      "c ";
  size_t pos = 0, t0, tl;
  const char *want[] = {"a", "bé", "c"};
  int k = 0;
  while (text_next_token(t, strlen(t), &pos, &t0, &tl)) {
    CHECK(k < 3);
    if (k < 3) CHECK(tl == strlen(want[k]) && memcmp(t + t0, want[k], tl) == 0);
    k++;
  }
  CHECK_EQ_INT(k, 3);
  size_t a, b;
  text_strip(t, strlen(t), &a, &b);
  CHECK_EQ_INT(a, 2);
  CHECK_EQ_INT(b, strlen(t) - 1);
  text_strip("   ", 3, &a, &b);
  CHECK_EQ_INT(b - a, 0);
}

/* ---- WikiText ------------------------------------------------------------- */

TEST(wiki_paragraph_rule) {
  Diag d;
  diag_init(&d);
  WikiCorpus c;
  Vocab v;
  vocab_init(&v);
  CHECK(wiki_read(&c, &v, FIX("wiki_small.tokens"), 5, &d));
  /* 14 lines; kept iff len(line.split(' . ')) >= 2 on the raw line: headings,
   * blank lines and "no separator line ..." go; "only one sentence here
   * <foo> . \n" stays (its " . " is before the newline) with one sentence,
   * whose last token is "." because strip() removed the trailing space. */
  CHECK_EQ_INT(c.n_lines, 14);
  CHECK_EQ_INT(c.n_paragraphs, 7);
  CHECK_EQ_INT(c.n_sentences, 19);
  CHECK_EQ_INT(c.n_tokens, 110);
  static const int sent_len[19] = {8, 5, 5, 6, 5, 7, 5, 5, 6, 5, 1, 3, 16, 3, 5, 6, 8, 3, 8};
  static const int para_len[7] = {3, 3, 2, 1, 5, 2, 3};
  for (int s = 0; s < 19; s++) CHECK_EQ_INT(c.sent_start[s + 1] - c.sent_start[s], sent_len[s]);
  for (int p = 0; p < 7; p++) CHECK_EQ_INT(c.para_start[p + 1] - c.para_start[p], para_len[p]);
  /* paragraph 3, the single sentence: only one sentence here <foo> . */
  static const int32_t p3[6] = {UNK, UNK, UNK, UNK, FOO, DOT};
  CHECK(memcmp(c.tok + c.sent_start[c.para_start[3]], p3, sizeof p3) == 0);
  /* "<unk> . . the end": split(' . ') matches do not overlap -> "<unk>", ". the end" */
  static const int32_t s10[1] = {UNK}, s11[3] = {DOT, THE, UNK};
  CHECK(memcmp(c.tok + c.sent_start[10], s10, sizeof s10) == 0);
  CHECK(memcmp(c.tok + c.sent_start[11], s11, sizeof s11) == 0);
  /* "the zebra slept" ends the line without " ." and is a sentence too */
  static const int32_t s13[3] = {THE, ZEBRA, SLEPT};
  CHECK(memcmp(c.tok + c.sent_start[13], s13, sizeof s13) == 0);
  /* sentence 7, "ÉLAN ate 1 apple .", lowercased */
  static const int32_t s7[5] = {ELAN, UNK, ONE, APPLE, DOT};
  CHECK(memcmp(c.tok + c.sent_start[7], s7, sizeof s7) == 0);
  wiki_corpus_free(&c);
  vocab_free(&v);
  diag_free(&d);
}

/* Checks every example of `w` against the corpus: layout, segments,
 * padding, prediction slots and weights, NSP labels. */
static void check_examples(const WikiData *w) {
  const Dataset *ds = &w->data;
  const WikiCorpus *c = &w->corpus;
  const int L = w->max_len, P = w->n_pred;
  BC_ASSERT(L <= 4096);
  const int32_t *tokens = dataset_i32(ds, "tokens"), *segments = dataset_i32(ds, "segments");
  const int32_t *valid_len = dataset_i32(ds, "valid_len"), *pos = dataset_i32(ds, "pred_positions");
  const int32_t *labels = dataset_i32(ds, "mlm_labels"), *nsp = dataset_i32(ds, "nsp_labels");
  const float *weights = dataset_f32(ds, "pred_weights");
  CHECK_EQ_INT(ds->n_fields, 7);
  CHECK_EQ_INT(dataset_field(ds, "tokens")->width, L);
  CHECK_EQ_INT(dataset_field(ds, "pred_weights")->width, P);
  CHECK_EQ_INT(dataset_field(ds, "valid_len")->width, 1);
  int bad = 0;
  for (int i = 0; i < ds->n_examples && bad < 5; i++) {
    int a = w->pair_a[i], b = w->pair_b[i];
    int la = c->sent_start[a + 1] - c->sent_start[a], lb = c->sent_start[b + 1] - c->sent_start[b];
    int n = valid_len[i];
    const int32_t *t = tokens + (size_t)i * L, *g = segments + (size_t)i * L;
    const int32_t *pp = pos + (size_t)i * P, *lab = labels + (size_t)i * P;
    const float *wt = weights + (size_t)i * P;
    int before = test_failed_;
    CHECK_EQ_INT(n, la + lb + 3);
    CHECK(n <= L);
    /* the original example: <cls> a <sep> b <sep> */
    int32_t orig[4096];
    int m = 0;
    orig[m++] = w->vocab.cls;
    for (int k = 0; k < la; k++) orig[m++] = c->tok[c->sent_start[a] + k];
    orig[m++] = w->vocab.sep;
    for (int k = 0; k < lb; k++) orig[m++] = c->tok[c->sent_start[b] + k];
    orig[m++] = w->vocab.sep;
    for (int j = 0; j < L; j++) CHECK_EQ_INT(g[j], j >= la + 2 && j < n ? 1 : 0);
    for (int j = n; j < L; j++) CHECK_EQ_INT(t[j], w->vocab.pad);
    /* NSP: label 1 only for the true next sentence of the same paragraph */
    if (nsp[i] == 1) CHECK_EQ_INT(b, a + 1);
    CHECK(nsp[i] == 0 || nsp[i] == 1);
    /* MLM: n_preds slots in increasing position, never <cls>/<sep>, labels
     * are the original tokens; every other position is unchanged */
    int k = 0;
    while (k < P && wt[k] == 1.0f) k++;
    CHECK_EQ_INT(k, mlm_num_preds(n));
    bool predicted[4096] = {false};
    for (int j = 0; j < P; j++) {
      if (j < k) {
        CHECK(pp[j] > 0 && pp[j] < n && (j == 0 || pp[j] > pp[j - 1]));
        CHECK(orig[pp[j]] != w->vocab.cls && orig[pp[j]] != w->vocab.sep);
        CHECK_EQ_INT(lab[j], orig[pp[j]]);
        predicted[pp[j]] = true;
      } else {
        CHECK_EQ_INT(pp[j], 0); /* padding slot: position 0, label 0, weight 0 */
        CHECK_EQ_INT(lab[j], 0);
        CHECK(wt[j] == 0.0f);
      }
    }
    for (int j = 0; j < n; j++)
      if (!predicted[j]) CHECK_EQ_INT(t[j], orig[j]);
    if (test_failed_ != before) {
      fprintf(stderr, "  (example %d)\n", i);
      bad++;
    }
  }
}

TEST(wiki_nsp_pairs_skip_not_truncate) {
  Diag d;
  diag_init(&d);
  WikiOptions o = wiki_options_default();
  WikiData w;
  /* max_len 128: every one of the 12 adjacent pairs fits */
  CHECK(wiki_load(&w, FIX("wiki_small.tokens"), &o, &d));
  CHECK_EQ_INT(w.n_pairs, 12);
  CHECK_EQ_INT(w.n_skipped, 0);
  CHECK_EQ_INT(w.data.n_examples, 12);
  CHECK_EQ_INT(w.n_pred, 19);
  check_examples(&w);
  wiki_free(&w);
  /* max_len 16: sentence 12 has 16 tokens, so no pair starting with it
   * fits and none is truncated; over many seeds pairs are skipped, both
   * labels occur, and a random next sentence comes from other paragraphs */
  o.max_len = 16;
  int n_next = 0, n_random = 0, n_other_para = 0, n_examples = 0;
  for (uint64_t seed = 0; seed < 50; seed++) {
    o.seed = seed;
    CHECK(wiki_load(&w, FIX("wiki_small.tokens"), &o, &d));
    CHECK_EQ_INT(w.n_pairs, 12);
    CHECK_EQ_INT(w.data.n_examples + w.n_skipped, w.n_pairs);
    CHECK(w.n_skipped >= 1);
    CHECK_EQ_INT(w.n_pred, 2); /* round(16 * 0.15) = round(2.4) */
    for (int i = 0; i < w.data.n_examples; i++) {
      CHECK(w.pair_a[i] != 12);
      int is_next = dataset_i32(&w.data, "nsp_labels")[i];
      n_next += is_next;
      n_random += !is_next;
      if (!is_next && (w.pair_b[i] < 10 || w.pair_b[i] > 14)) n_other_para++;
    }
    n_examples += w.data.n_examples;
    check_examples(&w);
    wiki_free(&w);
  }
  CHECK(n_next > 0 && n_random > 0 && n_other_para > 0);
  fprintf(stderr, "  max_len 16, 50 seeds: %d examples, %d true next\n", n_examples, n_next);
  diag_free(&d);
}

TEST(mlm_count_round_half_even) {
  /* n = max(1, round(len * 0.15)), Python's round: 4.5 -> 4, 10.5 -> 10, 16.5 -> 16 */
  CHECK_EQ_INT(mlm_num_preds(30), 4);
  CHECK_EQ_INT(mlm_num_preds(70), 10);
  CHECK_EQ_INT(mlm_num_preds(110), 16);
  CHECK_EQ_INT(mlm_num_preds(10), 2);   /* 1.5 -> 2 (even) */
  CHECK_EQ_INT(mlm_num_preds(31), 5);   /* 4.65 */
  CHECK_EQ_INT(mlm_num_preds(3), 1);    /* round(0.45) = 0 -> max(1, 0) */
  CHECK_EQ_INT(mlm_num_slots(128), 19); /* 19.2 */
  CHECK_EQ_INT(mlm_num_slots(64), 10);  /* 9.6 */
  CHECK_EQ_INT(mlm_num_slots(512), 77); /* 76.8 */
  Vocab v;
  load_small_vocab(&v);
  DataRng r;
  data_rng_seed(&r, 3, 0);
  static const int lens[3] = {30, 70, 110}, want[3] = {4, 10, 16};
  for (int k = 0; k < 3; k++) {
    int32_t row[110], pos[16], lab[16];
    int n = lens[k];
    for (int j = 0; j < n; j++) row[j] = THE;
    row[0] = CLS;
    row[n / 2] = SEP;
    row[n - 1] = SEP;
    CHECK_EQ_INT(mlm_mask_row(row, n, &v, &r, pos, lab), want[k]);
    for (int j = 0; j < want[k]; j++) CHECK(pos[j] != 0 && pos[j] != n / 2 && pos[j] != n - 1);
  }
  /* fewer candidates than n: all of them, no more */
  int32_t row[8] = {CLS, THE, SEP, SEP}, pos[2], lab[2];
  CHECK_EQ_INT(mlm_mask_row(row, 4, &v, &r, pos, lab), 1);
  CHECK_EQ_INT(pos[0], 1);
  vocab_free(&v);
}

TEST(mlm_80_10_10) {
  /* 200,000 predictions. Expected shares with V = 15: <mask> 0.8 + 0.1/V
   * (the random token may be <mask>), unchanged 0.1 + 0.1/V, another token
   * 0.1 (1 - 2/V). Binomial sd <= 0.0009, so 0.005 is more than 5 sd. */
  Vocab v;
  load_small_vocab(&v);
  DataRng r, fill;
  data_rng_seed(&r, 11, 0);
  data_rng_seed(&fill, 12, 0);
  int64_t n = 0, n_mask = 0, n_same = 0, n_other = 0, hits[N_SMALL] = {0};
  const int L = 128;
  while (n < 200000) {
    int32_t row[128], orig[128], pos[19], lab[19];
    for (int j = 0; j < L; j++) {
      int32_t id;
      do id = (int32_t)data_rng_below(&fill, (uint32_t)v.n);
      while (id == CLS || id == SEP || id == MASK);
      row[j] = orig[j] = id;
    }
    row[0] = orig[0] = CLS;
    row[60] = orig[60] = SEP;
    row[L - 1] = orig[L - 1] = SEP;
    int k = mlm_mask_row(row, L, &v, &r, pos, lab);
    CHECK_EQ_INT(k, 19);
    for (int j = 0; j < k; j++) {
      int32_t now = row[pos[j]];
      CHECK_EQ_INT(lab[j], orig[pos[j]]);
      if (now == MASK)
        n_mask++;
      else if (now == orig[pos[j]])
        n_same++;
      else
        n_other++, hits[now]++;
      n++;
    }
  }
  double V = v.n;
  CHECK_NEAR((double)n_mask / n, 0.8 + 0.1 / V, 0.005, 0);
  CHECK_NEAR((double)n_same / n, 0.1 + 0.1 / V, 0.005, 0);
  CHECK_NEAR((double)n_other / n, 0.1 * (1 - 2 / V), 0.005, 0);
  /* random tokens come from the whole vocabulary, reserved ones included */
  for (int i = 0; i < N_SMALL; i++)
    if (i != MASK) CHECK_MSG(hits[i] > 0, "id %d never drawn", i);
  fprintf(stderr, "  %lld predictions: mask %.4f same %.4f other %.4f\n", (long long)n,
          (double)n_mask / n, (double)n_same / n, (double)n_other / n);
  vocab_free(&v);
}

TEST(wiki_determinism) {
  Diag d;
  diag_init(&d);
  WikiOptions o = wiki_options_default();
  o.max_len = 24;
  o.seed = 42;
  WikiData a, b, c;
  CHECK(wiki_load(&a, FIX("wiki_small.tokens"), &o, &d));
  CHECK(wiki_load(&b, FIX("wiki_small.tokens"), &o, &d));
  o.seed = 43;
  CHECK(wiki_load(&c, FIX("wiki_small.tokens"), &o, &d));
  CHECK_EQ_INT(a.data.n_examples, b.data.n_examples);
  for (int k = 0; k < a.data.n_fields; k++) {
    const DataField *f = &a.data.fields[k], *g = &b.data.fields[k];
    CHECK(memcmp(f->data, g->data, (size_t)data_field_row_bytes(f) * a.data.n_examples) == 0);
  }
  bool differ = a.data.n_examples != c.data.n_examples ||
                memcmp(a.pair_a, c.pair_a, sizeof(int32_t) * a.data.n_examples) != 0 ||
                memcmp(a.data.fields[0].data, c.data.fields[0].data,
                       (size_t)data_field_row_bytes(&a.data.fields[0]) * a.data.n_examples) != 0;
  CHECK(differ);
  wiki_free(&a);
  wiki_free(&b);
  wiki_free(&c);
  diag_free(&d);
}

TEST(wiki_bad_data) {
  Diag d;
  WikiData w;
  WikiOptions o = wiki_options_default();
  struct {
    const char *path, *loc, *what;
  } cases[] = {
      {FIX("no_such_file.tokens"), FIX("no_such_file.tokens") ": error:", "cannot open file"},
      {FIX("wiki_empty.tokens"), FIX("wiki_empty.tokens") ":1:1: error:", "empty file"},
      {FIX("wiki_bad_utf8.tokens"),
       FIX("wiki_bad_utf8.tokens") ":3:12: error:", "invalid UTF-8 (byte 0xff)"},
      {FIX("wiki_truncated.tokens"),
       FIX("wiki_truncated.tokens") ":3:8: error:", "invalid UTF-8 (byte 0xc3)"},
      {FIX("snli_bad_header.txt"), FIX("snli_bad_header.txt") ": error:", "no paragraph"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    diag_init(&d);
    CHECK(!wiki_load(&w, cases[i].path, &o, &d));
    check_error(&d, cases[i].loc, cases[i].what);
    CHECK_EQ_INT(w.data.n_examples, 0);
    diag_free(&d);
  }
  diag_init(&d);
  o.max_len = 3;
  CHECK(!wiki_load(&w, FIX("wiki_small.tokens"), &o, &d));
  check_error(&d, "error:", "max_len >= 4");
  diag_free(&d);
  diag_init(&d);
  o.max_len = 5; /* the shortest pair needs 1 + 3 + 3 */
  CHECK(!wiki_load(&w, FIX("wiki_small.tokens"), &o, &d));
  check_error(&d, FIX("wiki_small.tokens") ": error:", "no sentence pair fits max_len 5");
  diag_free(&d);
}

/* ---- SNLI ----------------------------------------------------------------- */

TEST(snli_rows_labels_truncation_padding) {
  Vocab v;
  load_small_vocab(&v);
  Diag d;
  diag_init(&d);
  SnliData s;
  const char *paths[1] = {FIX("snli_small.txt")};
  CHECK_MSG(snli_load(&s, paths, 1, &v, 16, &d), "%s", diag_first(&d));
  CHECK_EQ_INT(s.n_rows, 5);
  CHECK_EQ_INT(s.n_skipped, 1); /* the "-" row */
  CHECK_EQ_INT(s.data.n_examples, 4);
  CHECK_EQ_INT(s.n_truncated, 1);
  const int32_t *tok = dataset_i32(&s.data, "tokens"), *seg = dataset_i32(&s.data, "segments");
  const int32_t *vl = dataset_i32(&s.data, "valid_len"), *lab = dataset_i32(&s.data, "label");
  /* entailment 0, contradiction 1, neutral 2 */
  static const int32_t want_label[4] = {SNLI_NEUTRAL, SNLI_ENTAILMENT, SNLI_CONTRADICTION,
                                        SNLI_ENTAILMENT};
  static const int32_t want[4][16] = {
      /* ( ( The zebra ) ( ( ate ( the apple ) ) . ) ) / ( ( A zebra ) ( slept . ) ) */
      {CLS, THE, ZEBRA, UNK, THE, APPLE, DOT, SEP, A, ZEBRA, SLEPT, DOT, SEP, PAD, PAD, PAD},
      /* ( Élan ( ( ate ( 1 apple ) ) . ) ) / ( Élan ( ate . ) ) */
      {CLS, ELAN, UNK, ONE, APPLE, DOT, SEP, ELAN, UNK, DOT, SEP, PAD, PAD, PAD, PAD, PAD},
      /* 8 + 6 tokens > 13: the premise (longer) loses its last token "." */
      {CLS, THE, ZEBRA, SLEPT, UNK, THE, UNK, UNK, SEP, THE, ZEBRA, UNK, A, UNK, DOT, SEP},
      /* "The  apple fell(off) ." : parentheses go before the split -> "felloff" */
      {CLS, THE, APPLE, UNK, DOT, SEP, THE, APPLE, DOT, SEP, PAD, PAD, PAD, PAD, PAD, PAD},
  };
  static const int want_vl[4] = {13, 11, 16, 10}, want_p[4] = {6, 5, 7, 4};
  for (int i = 0; i < 4 && i < s.data.n_examples; i++) {
    CHECK_EQ_INT(lab[i], want_label[i]);
    CHECK_EQ_INT(vl[i], want_vl[i]);
    for (int j = 0; j < 16; j++) {
      CHECK_EQ_INT(tok[i * 16 + j], want[i][j]);
      CHECK_EQ_INT(seg[i * 16 + j], j > want_p[i] + 1 && j < want_vl[i] ? 1 : 0);
    }
  }
  CHECK_EQ_INT(s.label_count[SNLI_ENTAILMENT], 2);
  CHECK_EQ_INT(s.n_tokens, 6 + 4 + 5 + 3 + 8 + 6 + 4 + 3);
  CHECK_EQ_INT(snli_label_parse("neutral", 7), SNLI_NEUTRAL);
  CHECK_EQ_INT(snli_label_parse("-", 1), SNLI_LABEL_SKIP);
  CHECK_EQ_INT(snli_label_parse("Neutral", 7), -1);
  CHECK_STR(snli_label_name(SNLI_CONTRADICTION), "contradiction");
  snli_free(&s);

  /* several files concatenate in order */
  const char *two[2] = {FIX("snli_small.txt"), FIX("snli_small.txt")};
  CHECK(snli_load(&s, two, 2, &v, 16, &d));
  CHECK_EQ_INT(s.data.n_examples, 8);
  CHECK_EQ_INT(s.n_skipped, 2);
  CHECK(memcmp(dataset_i32(&s.data, "tokens"), dataset_i32(&s.data, "tokens") + 4 * 16,
               4 * 16 * sizeof(int32_t)) == 0);
  snli_free(&s);
  vocab_free(&v);
  diag_free(&d);
}

TEST(snli_truncation_tie_pops_hypothesis) {
  Vocab v;
  load_small_vocab(&v);
  Diag d;
  diag_init(&d);
  int32_t tok[16], seg[16];
  /* 5 + 5 > 10 - 3: tie -> h 4; p longer -> p 4; tie -> h 3: <cls> 4 <sep> 3 <sep> */
  int n = snli_encode_pair(&v, "the the the the zebra", "a a a a slept", 10, tok, seg, NULL, &d);
  static const int32_t want1[10] = {CLS, THE, THE, THE, THE, SEP, A, A, A, SEP};
  CHECK_EQ_INT(n, 10);
  CHECK(memcmp(tok, want1, sizeof want1) == 0);
  static const int32_t wseg1[10] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
  CHECK(memcmp(seg, wseg1, sizeof wseg1) == 0);
  /* 2 + 6 > 5: only the longer hypothesis shrinks, to 3 */
  n = snli_encode_pair(&v, "The ZEBRA", "(a (a a)) apple slept .", 8, tok, seg, NULL, &d);
  static const int32_t want2[8] = {CLS, THE, ZEBRA, SEP, A, A, A, SEP};
  CHECK_EQ_INT(n, 8);
  CHECK(memcmp(tok, want2, sizeof want2) == 0);
  /* short pair: padded with <pad> and segment 0 */
  n = snli_encode_pair(&v, "zebra", "", 8, tok, seg, NULL, &d);
  static const int32_t want3[8] = {CLS, ZEBRA, SEP, SEP, PAD, PAD, PAD, PAD};
  static const int32_t wseg3[8] = {0, 0, 0, 1, 0, 0, 0, 0};
  CHECK_EQ_INT(n, 4);
  CHECK(memcmp(tok, want3, sizeof want3) == 0);
  CHECK(memcmp(seg, wseg3, sizeof wseg3) == 0);
  CHECK_EQ_INT(snli_encode_pair(&v, "bad \xff", "x", 8, tok, seg, NULL, &d), -1);
  check_error(&d, "error:", "premise: invalid UTF-8 at byte 4");
  vocab_free(&v);
  diag_free(&d);
}

TEST(snli_bad_data) {
  Vocab v;
  load_small_vocab(&v);
  struct {
    const char *path, *loc, *what;
  } cases[] = {
      {FIX("no_such_snli.txt"), FIX("no_such_snli.txt") ": error:", "cannot open file"},
      {FIX("snli_empty.txt"), FIX("snli_empty.txt") ":1:1: error:", "empty file"},
      {FIX("snli_bad_header.txt"), FIX("snli_bad_header.txt") ":1:1: error:",
       "not an SNLI header: column 1 must be 'gold_label'"},
      {FIX("snli_bad_columns.txt"), FIX("snli_bad_columns.txt") ":3:36: error:",
       "expected 14 TAB-separated columns (as the header), found 2"},
      {FIX("snli_bad_label.txt"),
       FIX("snli_bad_label.txt") ":4:1: error:", "unknown gold label 'entails'"},
      {FIX("snli_bad_utf8.txt"),
       FIX("snli_bad_utf8.txt") ":3:17: error:", "invalid UTF-8 (byte 0xc3)"},
      {FIX("snli_truncated.txt"),
       FIX("snli_truncated.txt") ":4:41: error:", "found 2 (truncated line?)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Diag d;
    diag_init(&d);
    SnliData s;
    const char *paths[2] = {FIX("snli_small.txt"), cases[i].path};
    CHECK(!snli_load(&s, paths, 2, &v, 16, &d));
    check_error(&d, cases[i].loc, cases[i].what);
    CHECK_EQ_INT(s.data.n_examples, 0);
    CHECK_EQ_INT(d.n_errors, 1);
    diag_free(&d);
  }
  Diag d;
  diag_init(&d);
  SnliData s;
  const char *paths[1] = {FIX("snli_small.txt")};
  CHECK(!snli_load(&s, paths, 1, &v, 2, &d));
  check_error(&d, "error:", "max_len must be >= 3");
  diag_free(&d);
  vocab_free(&v);
}

/* ---- batching ------------------------------------------------------------------ */

TEST(batcher_epochs_and_padding) {
  Dataset ds;
  dataset_init(&ds, 10);
  int32_t *x = dataset_add_field(&ds, "x", DATA_I32, 3);
  float *y = dataset_add_field(&ds, "y", DATA_F32, 1);
  for (int i = 0; i < 10; i++) {
    for (int j = 0; j < 3; j++) x[i * 3 + j] = 100 * i + j;
    y[i] = (float)i;
  }
  Batcher b;
  DataBatch batch;
  batcher_init(&b, 10, 4, true, false);
  data_batch_init(&batch, &ds, 4);
  CHECK_EQ_INT(b.n_batches, 3);
  int32_t first[2][10];
  for (int epoch = 0; epoch < 2; epoch++) {
    batcher_set_epoch(&b, 7, epoch);
    int seen[10] = {0};
    for (int i = 0; i < b.n_batches; i++) {
      batcher_fill(&b, &ds, i, &batch);
      CHECK_EQ_INT(batch.n_real, i < 2 ? 4 : 2);
      const int32_t *bx = dataset_i32(&batch.data, "x");
      const float *by = dataset_f32(&batch.data, "y");
      for (int r = 0; r < 4; r++) {
        int row = batch.rows[r];
        if (r < batch.n_real)
          seen[row]++;
        else
          CHECK_EQ_INT(row, batch.rows[batch.n_real - 1]); /* padding repeats the last */
        for (int j = 0; j < 3; j++) CHECK_EQ_INT(bx[r * 3 + j], 100 * row + j);
        CHECK(by[r] == (float)row);
      }
    }
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(seen[i], 1);
    memcpy(first[epoch], b.order, sizeof first[epoch]);
  }
  CHECK(memcmp(first[0], first[1], sizeof first[0]) != 0); /* epochs differ */
  batcher_set_epoch(&b, 7, 0);
  CHECK(memcmp(first[0], b.order, sizeof first[0]) == 0); /* (seed, epoch) decides */
  batcher_free(&b);
  /* drop_last, no shuffle: two full batches in dataset order */
  batcher_init(&b, 10, 4, false, true);
  batcher_set_epoch(&b, 7, 3);
  CHECK_EQ_INT(b.n_batches, 2);
  batcher_fill(&b, &ds, 1, &batch);
  CHECK_EQ_INT(batch.n_real, 4);
  CHECK_EQ_INT(batch.rows[0], 4);
  batcher_free(&b);
  data_batch_free(&batch);
  dataset_free(&ds);
}

/* ---- the real files (BERT_DATA) ------------------------------------------------ */

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

TEST(real_data) {
  const char *root = getenv("BERT_DATA");
  if (!root || !*root) TEST_SKIP("BERT_DATA is not set");
  char path[4096];
  Diag d;
  diag_init(&d);
  WikiOptions o = wiki_options_default();
  WikiData w;
  snprintf(path, sizeof path, "%s/wikitext-2/wiki.train.tokens", root);
  double t0 = seconds();
  bool ok = wiki_load(&w, path, &o, &d);
  double t1 = seconds();
  CHECK_MSG(ok, "%s", diag_first(&d));
  if (!ok) return;
  CHECK_EQ_INT(w.vocab.n, 20256);
  CHECK_STR(vocab_token(&w.vocab, 0), "!");
  CHECK_EQ_INT(w.vocab.cls, 942); /* d2l 1.0: sorted(set(...)) */
  CHECK_EQ_INT(w.vocab.mask, 943);
  CHECK_EQ_INT(w.vocab.pad, 944);
  CHECK_EQ_INT(w.vocab.sep, 945);
  CHECK_EQ_INT(w.vocab.unk, 946);
  CHECK_EQ_INT(w.corpus.n_paragraphs, 15496);
  CHECK_EQ_INT(w.corpus.n_sentences, 74631);
  CHECK_EQ_INT(w.n_pairs, 74631 - 15496);
  CHECK_EQ_INT(w.data.n_examples + w.n_skipped, w.n_pairs);
  CHECK(w.n_skipped > 0 && w.n_skipped < w.n_pairs / 100);
  CHECK_NEAR((double)w.n_next / w.data.n_examples, 0.5, 0.01, 0);
  check_examples(&w);
  fprintf(
      stderr,
      "  WikiText-2 train: vocab %d (hash %016llx), %d paragraphs, %d sentences, %lld tokens;\n"
      "  max_len %d: %d pairs, %d skipped, %d examples (%d true next), %lld predictions; %.2f s\n",
      w.vocab.n, (unsigned long long)vocab_hash(&w.vocab), w.corpus.n_paragraphs,
      w.corpus.n_sentences, (long long)w.corpus.n_tokens, w.max_len, w.n_pairs, w.n_skipped,
      w.data.n_examples, w.n_next, (long long)w.n_preds, t1 - t0);

  struct {
    const char *file;
    int n, e, c, nt;
  } splits[] = {{"snli_1.0_test.txt", 9824, 3368, 3237, 3219},
                {"snli_1.0_train_0.01.txt", 5498, 1806, 1906, 1786},
                {"snli_1.0_train_extra.txt", 19804, 6615, 6691, 6498}};
  char paths[3][4096];
  const char *pp[3];
  for (int i = 0; i < 3; i++) {
    snprintf(paths[i], sizeof paths[i], "%s/snli/%s", root, splits[i].file);
    pp[i] = paths[i];
    SnliData s;
    t0 = seconds();
    ok = snli_load(&s, pp + i, 1, &w.vocab, 128, &d);
    CHECK_MSG(ok, "%s", diag_first(&d));
    if (!ok) continue;
    CHECK_EQ_INT(s.data.n_examples, splits[i].n);
    CHECK_EQ_INT(s.label_count[SNLI_ENTAILMENT], splits[i].e);
    CHECK_EQ_INT(s.label_count[SNLI_CONTRADICTION], splits[i].c);
    CHECK_EQ_INT(s.label_count[SNLI_NEUTRAL], splits[i].nt);
    fprintf(stderr, "  %s: %d examples (%d rows, %d '-'), %d truncated, %.1f%% <unk>; %.2f s\n",
            splits[i].file, s.data.n_examples, s.n_rows, s.n_skipped, s.n_truncated,
            100.0 * (double)s.n_unk / (double)s.n_tokens, seconds() - t0);
    snli_free(&s);
  }
  /* fine-tuning train set: the 1% sample plus the extra pairs */
  SnliData s;
  if (snli_load(&s, pp + 1, 2, &w.vocab, 128, &d)) {
    CHECK_EQ_INT(s.data.n_examples, 5498 + 19804);
    snli_free(&s);
  }
  wiki_free(&w);
  diag_free(&d);
}

TEST_MAIN()
