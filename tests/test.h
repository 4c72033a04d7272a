/* test.h — the tiny test harness. A test file defines cases with
 * TEST(name) { ... } and ends with TEST_MAIN(); cases run in order, a
 * command-line argument filters them by substring. CHECK failures print
 * file:line and both values and make the program exit 1; a case that calls
 * TEST_SKIP("why") is skipped, and a program whose every case skipped exits
 * 77 (ctest's SKIP_RETURN_CODE). */
#ifndef BC_TEST_H
#define BC_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*TestFn)(void);
typedef struct {
  const char *name;
  TestFn fn;
} TestCase;

static TestCase test_cases_[512];
static int test_n_cases_;
static int test_failed_;   /* failures in the current case */
static int test_skipped_;  /* current case skipped */

#define TEST(name) \
  static void test_##name(void); \
  __attribute__((constructor)) static void test_reg_##name(void) { \
    test_cases_[test_n_cases_++] = (TestCase){#name, test_##name}; \
  } \
  static void test_##name(void)

#define CHECK(c) \
  do { \
    if (!(c)) { \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
      test_failed_++; \
    } \
  } while (0)

#define CHECK_MSG(c, ...) \
  do { \
    if (!(c)) { \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #c); \
      fprintf(stderr, __VA_ARGS__); \
      fputc('\n', stderr); \
      test_failed_++; \
    } \
  } while (0)

/* |a - b| <= atol + rtol * |b| (b is the reference). */
#define CHECK_NEAR(a, b, atol, rtol) \
  do { \
    double a_ = (double)(a), b_ = (double)(b); \
    if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_))) { \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.10g, %s = %.10g (atol %g, rtol %g)\n", \
              __FILE__, __LINE__, #a, a_, #b, b_, (double)(atol), (double)(rtol)); \
      test_failed_++; \
    } \
  } while (0)

#define CHECK_EQ_INT(a, b) \
  do { \
    long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { \
      fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__, __LINE__, #a, \
              a_, #b, b_); \
      test_failed_++; \
    } \
  } while (0)

#define CHECK_STR(a, b) \
  do { \
    const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { \
      fprintf(stderr, "%s:%d: CHECK_STR failed:\n  %s = \"%s\"\n  %s = \"%s\"\n", __FILE__, \
              __LINE__, #a, a_ ? a_ : "(null)", #b, b_ ? b_ : "(null)"); \
      test_failed_++; \
    } \
  } while (0)

#define TEST_SKIP(why) \
  do { \
    fprintf(stderr, "  skipped: %s\n", why); \
    test_skipped_ = 1; \
    return; \
  } while (0)

/* Where the source tree is (set by CMake), for models and fixtures. */
#ifndef BC_SOURCE_DIR
#define BC_SOURCE_DIR "."
#endif

#define TEST_MAIN() \
  int main(int argc, char **argv) { \
    int n_fail = 0, n_run = 0, n_skip = 0; \
    for (int i = 0; i < test_n_cases_; i++) { \
      if (argc > 1 && !strstr(test_cases_[i].name, argv[1])) continue; \
      test_failed_ = 0; \
      test_skipped_ = 0; \
      fprintf(stderr, "[ RUN  ] %s\n", test_cases_[i].name); \
      test_cases_[i].fn(); \
      n_run++; \
      if (test_failed_) { \
        n_fail++; \
        fprintf(stderr, "[ FAIL ] %s\n", test_cases_[i].name); \
      } else if (test_skipped_) { \
        n_skip++; \
        fprintf(stderr, "[ SKIP ] %s\n", test_cases_[i].name); \
      } else { \
        fprintf(stderr, "[  OK  ] %s\n", test_cases_[i].name); \
      } \
    } \
    fprintf(stderr, "%d cases: %d passed, %d failed, %d skipped\n", n_run, n_run - n_fail - n_skip, \
            n_fail, n_skip); \
    if (n_fail) return 1; \
    if (n_run > 0 && n_skip == n_run) return 77; \
    return 0; \
  }

#endif
