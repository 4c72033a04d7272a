/* base.h — the few things every file of bertc uses: assertions, checked
 * allocation, growable vectors, a bump arena, source locations and the
 * diagnostic list for user errors.
 *
 * Not here: anything about graphs or ops (ir.h). Library code never exits;
 * BC_ASSERT is for bugs only and stays on in release builds. */
#ifndef BC_BASE_H
#define BC_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#define BC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define BC_NORETURN __attribute__((noreturn))
#else
#define BC_PRINTF(f, a)
#define BC_NORETURN
#endif

/* Bugs: prints file:line and the condition, then aborts. */
BC_NORETURN void bc_assert_fail(const char *file, int line, const char *cond);
#define BC_ASSERT(c) \
  do { \
    if (!(c)) bc_assert_fail(__FILE__, __LINE__, #c); \
  } while (0)

/* Checked allocation: out of memory is treated as a bug (BC_ASSERT). */
void *bc_malloc(size_t n_bytes);
void *bc_calloc(size_t n, size_t size);
void *bc_realloc(void *p, size_t n_bytes);
char *bc_strdup(const char *s);
/* printf into a fresh heap string; the caller frees it. */
char *bc_asprintf(const char *fmt, ...) BC_PRINTF(1, 2);

/* Growable vector of T: `VEC(int) v = {0};` then vec_push(&v, 3); free(v.data). */
#define VEC(T) \
  struct { \
    T *data; \
    int n, cap; \
  }
#define vec_reserve(v, want) \
  do { \
    if ((want) > (v)->cap) { \
      int nc_ = (v)->cap ? (v)->cap * 2 : 8; \
      while (nc_ < (want)) nc_ *= 2; \
      (v)->data = bc_realloc((v)->data, (size_t)nc_ * sizeof(*(v)->data)); \
      (v)->cap = nc_; \
    } \
  } while (0)
#define vec_push(v, x) \
  do { \
    vec_reserve((v), (v)->n + 1); \
    (v)->data[(v)->n++] = (x); \
  } while (0)
#define vec_free(v) \
  do { \
    free((v)->data); \
    (v)->data = NULL; \
    (v)->n = (v)->cap = 0; \
  } while (0)

/* Bump arena: many small allocations freed at once by arena_free. */
typedef struct ArenaBlock ArenaBlock;
typedef struct {
  ArenaBlock *head;
} Arena;
void arena_init(Arena *a);
void *arena_alloc(Arena *a, size_t n_bytes); /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_printf(Arena *a, const char *fmt, ...) BC_PRINTF(2, 3);
void arena_free(Arena *a);

/* A place in a source file. `file` points to a string that outlives every
 * SrcLoc made from it (interned by bc_intern). line/col are 1-based; line 0
 * means "no line" (command line, generated code). */
typedef struct {
  const char *file;
  int line, col;
} SrcLoc;
#define SRCLOC_NONE ((SrcLoc){NULL, 0, 0})

/* FNV-1a 32-bit hash: the Philox key of random nodes (of their value's
 * name) and of parameter initialization (of the parameter's name). */
uint32_t bc_hash32(const char *s);

/* Interned strings live until the process ends; equal strings give equal
 * pointers. Used for file names and op/param names compared often. */
const char *bc_intern(const char *s);

/* User errors. Each error is formatted at once as
 *   file:line:col: error: message
 *     <source line>
 *     <caret>
 * (the source line is read from the file named in the location). A function
 * that fails returns false/NULL/-1 and has added at least one error.
 * A message identical to one already listed (same location, same text) is
 * not listed again, but an error still counts in n_errors: callers compare
 * n_errors before and after a call to learn that it failed. */
typedef struct {
  VEC(char *) msgs; /* formatted messages, owned, each listed once */
  int n_errors;     /* every error raised, repeats included */
  int n_unlisted;   /* errors dropped because the list was full */
  int max_errors;   /* stop recording past this many messages (default 20) */
} Diag;
void diag_init(Diag *d);
void diag_free(Diag *d);
void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...) BC_PRINTF(3, 4);
void diag_verror(Diag *d, SrcLoc loc, const char *fmt, va_list ap);
void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...) BC_PRINTF(3, 4);
void diag_print(const Diag *d, FILE *f);
/* The first message, whole (heading line, source line, caret), or "". */
const char *diag_first(const Diag *d);
/* Moves from's messages and error count to the end of d's; from is left
 * empty (threads collect errors in Diags of their own). */
void diag_merge(Diag *d, Diag *from);

/* Whole file into a NUL-terminated heap buffer; NULL (and an error naming
 * the file and errno's text) on failure. */
char *bc_read_file(const char *path, size_t *n_bytes, Diag *d);

#endif
