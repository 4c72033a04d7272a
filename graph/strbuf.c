/* strbuf.c — the growable byte string of strbuf.h. Growth doubles, so n
 * appends cost O(n) amortized; out of memory is a bug (bc_realloc). */
#include "strbuf.h"

#include <string.h>

static void reserve(StrBuf *b, size_t extra) {
  size_t want = b->n + extra + 1;
  if (want <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < want) cap *= 2;
  b->data = bc_realloc(b->data, cap);
  b->cap = cap;
}

void strbuf_add(StrBuf *b, const char *s, size_t n) {
  reserve(b, n);
  if (n) memcpy(b->data + b->n, s, n);
  b->n += n;
  b->data[b->n] = '\0';
}

void strbuf_puts(StrBuf *b, const char *s) { strbuf_add(b, s, strlen(s)); }

void strbuf_putc(StrBuf *b, char c) { strbuf_add(b, &c, 1); }

void strbuf_vprintf(StrBuf *b, const char *fmt, va_list ap) {
  va_list aq;
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, aq);
  va_end(aq);
  BC_ASSERT(n >= 0);
  reserve(b, (size_t)n);
  vsnprintf(b->data + b->n, (size_t)n + 1, fmt, ap);
  b->n += (size_t)n;
}

void strbuf_printf(StrBuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  strbuf_vprintf(b, fmt, ap);
  va_end(ap);
}

char *strbuf_take(StrBuf *b) {
  char *s = b->data ? b->data : bc_strdup("");
  b->data = NULL;
  b->n = b->cap = 0;
  return s;
}

void strbuf_free(StrBuf *b) {
  free(b->data);
  b->data = NULL;
  b->n = b->cap = 0;
}
