/* test_eval.c — evaluation's counting (tasks/eval.h) on logits whose
 * answers are known: the argmax of a row (ties to the lowest index, NaN
 * never taking over), every cell of the confusion matrix filled a distinct
 * number of times so a transposed or shifted matrix shows, gold labels
 * reached through the batch's row indices, and the accuracy. */
#include "tasks/eval.h"
#include "test.h"

#include <math.h>
#include <string.h>

TEST(argmax) {
  struct {
    float x[SNLI_N_LABELS];
    int want;
  } cases[] = {
      {{3, 1, 2}, 0},
      {{1, 3, 2}, 1},
      {{1, 2, 3}, 2},
      {{-1, -3, -2}, 0},
      {{1, 1, 1}, 0},  /* ties go to the lowest index */
      {{0, 2, 2}, 1},
      {{2, 0, 2}, 0},
      {{-0.0f, 0.0f, -1}, 0}, /* -0 == 0: a tie */
      {{1e-30f, 0, 0}, 0},
      {{0, 1, 1.0000001f}, 2}, /* one ulp decides */
      {{1, NAN, 2}, 2},        /* a NaN is skipped */
      {{NAN, 5, 9}, 0},        /* ... but one in front is never replaced */
      {{-INFINITY, -1e38f, -INFINITY}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_MSG(eval_argmax(cases[i].x, SNLI_N_LABELS) == cases[i].want, "case %zu: got %d, want %d", i,
              eval_argmax(cases[i].x, SNLI_N_LABELS), cases[i].want);
  float one[1] = {-5};
  CHECK_EQ_INT(eval_argmax(one, 1), 0);
  float five[5] = {0, 1, 4, 4, 3};
  CHECK_EQ_INT(eval_argmax(five, 5), 2);
}

/* Cell (gold g, predicted p) gets 1 + 3g + p rows: 45 rows, each cell a
 * different count. */
TEST(confusion_matrix) {
  enum { N = 45 };
  float logits[N * SNLI_N_LABELS];
  int32_t labels[N], rows[N];
  int n = 0;
  for (int g = 0; g < SNLI_N_LABELS; g++)
    for (int p = 0; p < SNLI_N_LABELS; p++)
      for (int k = 0; k < 1 + 3 * g + p; k++, n++) {
        float *x = logits + n * SNLI_N_LABELS;
        for (int c = 0; c < SNLI_N_LABELS; c++) x[c] = (float)(c * 7 % 3) - 0.5f * (float)k; /* noise */
        x[p] = 10.0f + (float)k;                                                               /* the winner */
        rows[n] = (int32_t)(N - 1 - n); /* the batch's row n is example N-1-n */
        labels[N - 1 - n] = g;
      }
  CHECK_EQ_INT(n, N);
  EvalResult r;
  memset(&r, 0, sizeof r);
  eval_count(&r, logits, labels, rows, 20); /* two calls add up */
  eval_count(&r, logits + 20 * SNLI_N_LABELS, labels, rows + 20, N - 20);
  CHECK_EQ_INT(r.n, N);
  for (int g = 0; g < SNLI_N_LABELS; g++)
    for (int p = 0; p < SNLI_N_LABELS; p++)
      CHECK_MSG(r.confusion[g][p] == 1 + 3 * g + p, "confusion[gold %d][predicted %d] = %lld, want %d", g, p,
                (long long)r.confusion[g][p], 1 + 3 * g + p);
  CHECK_EQ_INT(r.correct, 1 + 5 + 9); /* the diagonal */
  CHECK(eval_accuracy(&r) == 15.0 / 45.0);

  /* rows NULL: labels in batch order */
  EvalResult s;
  memset(&s, 0, sizeof s);
  float two[2 * SNLI_N_LABELS] = {0, 0, 1, 5, 5, 0};
  int32_t gold[2] = {2, 1};
  eval_count(&s, two, gold, NULL, 2);
  CHECK_EQ_INT(s.n, 2);
  CHECK_EQ_INT(s.correct, 1);
  CHECK_EQ_INT(s.confusion[2][2], 1);
  CHECK_EQ_INT(s.confusion[1][0], 1);
  CHECK(eval_accuracy(&s) == 0.5);

  EvalResult none;
  memset(&none, 0, sizeof none);
  CHECK(isnan(eval_accuracy(&none)));
}

TEST_MAIN()
