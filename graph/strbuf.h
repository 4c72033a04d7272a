/* strbuf.h — a growable byte string: what the JSON writer, the checkpoint
 * header, metrics lines and SVG plots are built in.
 *
 * `StrBuf b = {0};` is an empty buffer; every add keeps data NUL-terminated
 * (data is NULL until the first add). Not here: formatting of JSON values
 * (json.h) or files (fileio.h). */
#ifndef BC_STRBUF_H
#define BC_STRBUF_H

#include "base.h"

typedef struct {
  char *data; /* n bytes then a NUL; NULL while nothing was added */
  size_t n, cap;
} StrBuf;

void strbuf_add(StrBuf *b, const char *s, size_t n);
void strbuf_puts(StrBuf *b, const char *s);
void strbuf_putc(StrBuf *b, char c);
/* printf onto the end; any length. */
void strbuf_printf(StrBuf *b, const char *fmt, ...) BC_PRINTF(2, 3);
void strbuf_vprintf(StrBuf *b, const char *fmt, va_list ap);
/* The text, handed to the caller (free it; "" when empty); b is left empty. */
char *strbuf_take(StrBuf *b);
void strbuf_free(StrBuf *b);

#endif
