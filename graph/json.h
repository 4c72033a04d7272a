/* json.h — the one JSON reader and writer of bertc: safetensors headers
 * (runtime/checkpoint.c), metrics.jsonl (tasks/metrics.c), the hparams a
 * checkpoint records, the BC_TRACE Chrome trace (runtime/trace.c) and the
 * benchmark results (bench/bench_step.c).
 *
 * The reader is strict and bounds-checked: it reads only s[0, n), refuses
 * what RFC 8259 refuses (trailing commas, comments, bad escapes, invalid
 * UTF-8, leading zeros, lone surrogates), duplicate keys, \u0000, nesting
 * deeper than max_depth and (when set) arrays longer than max_array, so a
 * hostile input costs memory proportional to its length. One extension, off
 * by default: NaN, Infinity and -Infinity as numbers (what Python's json
 * module writes). Every refusal names a byte offset.
 *
 * The writer appends to a StrBuf; the caller places commas and braces.
 * Not here: a DOM that can be edited, pretty printing, streaming. */
#ifndef BC_JSON_H
#define BC_JSON_H

#include "strbuf.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonKind;

/* A parsed value; every pointer is into the Arena given to json_parse. */
typedef struct JsonValue {
  JsonKind kind;
  size_t pos;      /* byte offset of its first character */
  const char *str; /* JSON_STRING: decoded UTF-8, no NUL inside; JSON_NUMBER: its text */
  double num;      /* JSON_NUMBER: strtod of the text (NaN/inf for the extension); JSON_BOOL: 0/1 */
  bool is_uint;    /* JSON_NUMBER: a plain non-negative integer below 2^64 ... */
  uint64_t u;      /* ... and its exact value; JSON_BOOL: 0 or 1 */
  int n;           /* JSON_ARRAY, JSON_OBJECT: item count */
  struct JsonValue *items; /* n items */
  const char **keys;       /* JSON_OBJECT: n keys, unique, in input order */
  size_t *key_pos;         /* JSON_OBJECT: byte offset of each key's opening quote */
} JsonValue;

typedef struct {
  bool allow_nonfinite; /* accept NaN, Infinity, -Infinity as numbers */
  int max_depth;        /* 0 = 64 */
  int max_array;        /* 0 = no limit */
} JsonOptions;

typedef struct {
  char msg[192]; /* "expected ':' after a key, found '}'" */
  size_t pos;    /* byte offset the message is about */
} JsonError;

/* Parses s[0, n) as one JSON value with optional surrounding whitespace
 * (space, tab, CR, LF). `opt` may be NULL (strict, defaults). The tree lives
 * in `arena` (the caller frees it). False with `err` filled on bad input. */
bool json_parse(const char *s, size_t n, const JsonOptions *opt, Arena *arena, JsonValue *out,
                JsonError *err);

/* The member `key` of an object, or NULL (also when v is not an object). */
const JsonValue *json_get(const JsonValue *v, const char *key);

/* Whether s is valid UTF-8 (overlong forms, surrogates and code points past
 * U+10FFFF are not): what json_write_string needs for its output to parse. */
bool json_utf8_valid(const char *s);

/* s (valid UTF-8) as a quoted string: '"' and '\\' escaped, \n \r \t
 * short, other bytes below 0x20 as \u00XX, everything else as is. */
void json_write_string(StrBuf *b, const char *s);
/* "key": */
void json_write_key(StrBuf *b, const char *key);
/* The shortest of %.15g, %.16g, %.17g that reads back as x exactly; null
 * when x is not finite. */
void json_write_double(StrBuf *b, double x);
/* x formatted by `fmt` (one double conversion, e.g. "%.9g" for float32
 * values, "%.3f" for seconds); null when x is not finite. */
void json_write_double_fmt(StrBuf *b, const char *fmt, double x);
void json_write_int(StrBuf *b, int64_t x);
void json_write_uint(StrBuf *b, uint64_t x);

#endif
