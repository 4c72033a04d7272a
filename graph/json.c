/* json.c — the strict JSON reader and the writer of json.h.
 *
 * The reader is recursive descent over s[0, n) with an explicit depth
 * limit; strings are decoded into a scratch StrBuf and copied into the
 * arena; duplicate keys are found by sorting a copy of an object's keys
 * (O(k log k), whatever a hostile input holds). Numbers keep their text, so
 * a caller can tell 2 from 2.0 and read integers above 2^53 exactly. */
#include "json.h"

#include <math.h>
#include <string.h>

#define JSON_DEFAULT_DEPTH 64

/* ---- UTF-8 ------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s[0, n), or 0 when it is invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) len = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) len = 3;
  else if (c == 0xED) len = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF) len = 3;
  else if (c == 0xF0) len = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) len = 4, hi = 0x8F;
  else return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

bool json_utf8_valid(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq((const unsigned char *)s + i, n - i);
    if (!k) return false;
    i += k;
  }
  return true;
}

static void put_utf8(StrBuf *b, unsigned long cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) u[0] = (char)cp, n = 1;
  else if (cp < 0x800) u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
  else if (cp < 0x10000)
    u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
    u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
  else
    u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
  strbuf_add(b, u, n);
}

/* ---- reader ----------------------------------------------------------- */

typedef struct {
  const char *s;
  size_t n, i;
  Arena *arena; /* owns every JsonValue and string */
  int depth, max_depth, max_array;
  bool nonfinite;
  JsonError *err;
} Parser;

static bool fail(Parser *p, size_t pos, const char *fmt, ...) BC_PRINTF(3, 4);
static bool fail(Parser *p, size_t pos, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
  va_end(ap);
  p->err->pos = pos;
  return false;
}

static void skip_ws(Parser *p) {
  while (p->i < p->n &&
         (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
    p->i++;
}

/* A printable description of the byte at p->i, for messages. */
static const char *describe(const Parser *p, char *buf) {
  if (p->i >= p->n) return "the end of the input";
  unsigned char c = (unsigned char)p->s[p->i];
  if (c >= 0x21 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
  else snprintf(buf, 16, "byte 0x%02x", c);
  return buf;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Four hex digits at s[i, i + 4), or -1. */
static long hex4(const Parser *p, size_t i) {
  if (i > p->n || p->n - i < 4) return -1;
  long v = 0;
  for (int k = 0; k < 4; k++) {
    int h = hexval(p->s[i + (size_t)k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

/* A string at p->i (the opening quote) into an arena copy. */
static bool parse_string(Parser *p, const char **out) {
  size_t start = p->i++;
  StrBuf b = {0};
  bool ok = false;
  strbuf_add(&b, "", 0);
  for (;;) {
    if (p->i >= p->n) {
      fail(p, start, "unterminated string");
      goto done;
    }
    unsigned char c = (unsigned char)p->s[p->i];
    if (c == '"') {
      p->i++;
      break;
    }
    if (c < 0x20) {
      fail(p, p->i, "control byte 0x%02x inside a string", c);
      goto done;
    }
    if (c != '\\') {
      size_t k = utf8_seq((const unsigned char *)p->s + p->i, p->n - p->i);
      if (!k) {
        fail(p, p->i, "invalid UTF-8 inside a string");
        goto done;
      }
      strbuf_add(&b, p->s + p->i, k);
      p->i += k;
      continue;
    }
    size_t esc = p->i++;
    if (p->i >= p->n) {
      fail(p, start, "unterminated string");
      goto done;
    }
    char e = p->s[p->i++];
    const char *simple = NULL;
    switch (e) {
    case '"': simple = "\""; break;
    case '\\': simple = "\\"; break;
    case '/': simple = "/"; break;
    case 'b': simple = "\b"; break;
    case 'f': simple = "\f"; break;
    case 'n': simple = "\n"; break;
    case 'r': simple = "\r"; break;
    case 't': simple = "\t"; break;
    case 'u': break;
    default:
      fail(p, esc, "invalid escape in a string");
      goto done;
    }
    if (simple) {
      strbuf_add(&b, simple, 1);
      continue;
    }
    long cp = hex4(p, p->i);
    if (cp < 0) {
      fail(p, esc, "invalid \\u escape in a string");
      goto done;
    }
    p->i += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      fail(p, esc, "lone low surrogate \\u%04lx in a string", cp);
      goto done;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      long lo = (p->n - p->i >= 2 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u')
                    ? hex4(p, p->i + 2)
                    : -1;
      if (lo < 0xDC00 || lo > 0xDFFF) {
        fail(p, esc, "unpaired high surrogate \\u%04lx in a string", cp);
        goto done;
      }
      p->i += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0) {
      fail(p, esc, "\\u0000 inside a string is not supported");
      goto done;
    }
    put_utf8(&b, (unsigned long)cp);
  }
  *out = arena_strdup(p->arena, b.data);
  ok = true;
done:
  strbuf_free(&b);
  return ok;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool parse_number(Parser *p, JsonValue *v) {
  size_t start = p->i;
  bool neg = false, plain = true;
  if (p->s[p->i] == '-') neg = true, p->i++;
  if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, start, "invalid number");
  if (p->s[p->i] == '0') {
    p->i++;
    if (p->i < p->n && is_digit(p->s[p->i])) return fail(p, start, "invalid number (leading zero)");
  } else {
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  size_t int_end = p->i;
  if (p->i < p->n && p->s[p->i] == '.') {
    plain = false;
    p->i++;
    if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, start, "invalid number");
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    plain = false;
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, start, "invalid number");
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  v->kind = JSON_NUMBER;
  size_t len = p->i - start;
  char *text = arena_alloc(p->arena, len + 1); /* zeroed: NUL-terminated */
  memcpy(text, p->s + start, len);
  v->str = text;
  v->num = strtod(text, NULL); /* the text is plain JSON: no locale, no hex */
  if (!neg && plain) {
    uint64_t u = 0;
    bool overflow = false;
    for (size_t k = start; k < int_end; k++) {
      unsigned dg = (unsigned)(p->s[k] - '0');
      if (u > (UINT64_MAX - dg) / 10) overflow = true;
      else u = u * 10 + dg;
    }
    v->is_uint = !overflow;
    v->u = overflow ? 0 : u;
  }
  return true;
}

static int cmp_key(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool parse_value(Parser *p, JsonValue *v);

/* An array or object at p->i ('[' or '{'). */
static bool parse_container(Parser *p, JsonValue *v, bool is_obj) {
  size_t start = p->i++;
  char close = is_obj ? '}' : ']';
  if (++p->depth > p->max_depth) return fail(p, start, "nesting deeper than %d levels", p->max_depth);
  VEC(JsonValue) items = {0};
  VEC(const char *) keys = {0};
  VEC(size_t) key_pos = {0};
  bool ok = false;
  char dbuf[16];
  skip_ws(p);
  if (p->i < p->n && p->s[p->i] == close) {
    p->i++;
  } else {
    for (;;) {
      if (!is_obj && p->max_array > 0 && items.n >= p->max_array) {
        fail(p, start, "array longer than %d items", p->max_array);
        goto done;
      }
      if (is_obj) {
        const char *key;
        if (p->i >= p->n || p->s[p->i] != '"') {
          fail(p, p->i, "expected a key string, found %s", describe(p, dbuf));
          goto done;
        }
        vec_push(&key_pos, p->i);
        if (!parse_string(p, &key)) goto done;
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') {
          fail(p, p->i, "expected ':' after a key, found %s", describe(p, dbuf));
          goto done;
        }
        p->i++;
        skip_ws(p);
        vec_push(&keys, key);
      }
      JsonValue item;
      if (!parse_value(p, &item)) goto done;
      vec_push(&items, item);
      skip_ws(p);
      if (p->i < p->n && p->s[p->i] == ',') {
        p->i++;
        skip_ws(p);
        continue;
      }
      if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        break;
      }
      fail(p, p->i, "expected ',' or '%c', found %s", close, describe(p, dbuf));
      goto done;
    }
  }
  v->kind = is_obj ? JSON_OBJECT : JSON_ARRAY;
  v->n = items.n;
  v->items = arena_alloc(p->arena, (size_t)items.n * sizeof(JsonValue));
  if (items.n) memcpy(v->items, items.data, (size_t)items.n * sizeof(JsonValue));
  if (is_obj) {
    v->keys = arena_alloc(p->arena, (size_t)keys.n * sizeof(char *));
    v->key_pos = arena_alloc(p->arena, (size_t)keys.n * sizeof(size_t));
    if (keys.n) {
      memcpy(v->keys, keys.data, (size_t)keys.n * sizeof(char *));
      memcpy(v->key_pos, key_pos.data, (size_t)keys.n * sizeof(size_t));
    }
    if (keys.n > 1) {
      qsort(keys.data, (size_t)keys.n, sizeof(char *), cmp_key);
      for (int k = 1; k < keys.n; k++)
        if (strcmp(keys.data[k - 1], keys.data[k]) == 0) {
          fail(p, start, "duplicate key \"%.80s\" in an object", keys.data[k]);
          goto done;
        }
    }
  }
  p->depth--;
  ok = true;
done:
  vec_free(&items);
  vec_free(&keys);
  vec_free(&key_pos);
  return ok;
}

static bool literal(Parser *p, const char *word) {
  size_t n = strlen(word);
  return p->n - p->i >= n && memcmp(p->s + p->i, word, n) == 0;
}

/* The extension's words: NaN, Infinity, -Infinity. */
static bool parse_nonfinite(Parser *p, JsonValue *v) {
  static const struct {
    const char *word;
    double value;
  } words[] = {{"NaN", NAN}, {"Infinity", INFINITY}, {"-Infinity", -INFINITY}};
  for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
    if (literal(p, words[k].word)) {
      v->kind = JSON_NUMBER;
      v->str = words[k].word;
      v->num = words[k].value;
      p->i += strlen(words[k].word);
      return true;
    }
  return false;
}

static bool parse_value(Parser *p, JsonValue *v) {
  memset(v, 0, sizeof(*v));
  v->pos = p->i;
  char dbuf[16];
  if (p->i >= p->n) return fail(p, p->i, "unexpected end of the input");
  char c = p->s[p->i];
  if (c == '{' || c == '[') return parse_container(p, v, c == '{');
  if (c == '"') {
    v->kind = JSON_STRING;
    return parse_string(p, &v->str);
  }
  if (p->nonfinite && parse_nonfinite(p, v)) return true;
  if (c == '-' || is_digit(c)) return parse_number(p, v);
  if (literal(p, "true") || literal(p, "false")) {
    v->kind = JSON_BOOL;
    v->u = c == 't';
    v->num = (double)v->u;
    p->i += c == 't' ? 4 : 5;
    return true;
  }
  if (literal(p, "null")) {
    v->kind = JSON_NULL;
    p->i += 4;
    return true;
  }
  return fail(p, p->i, "expected a value, found %s", describe(p, dbuf));
}

bool json_parse(const char *s, size_t n, const JsonOptions *opt, Arena *arena, JsonValue *out,
                JsonError *err) {
  Parser p = {0};
  p.s = s;
  p.n = n;
  p.arena = arena;
  p.err = err;
  p.max_depth = opt && opt->max_depth > 0 ? opt->max_depth : JSON_DEFAULT_DEPTH;
  p.max_array = opt ? opt->max_array : 0;
  p.nonfinite = opt && opt->allow_nonfinite;
  err->msg[0] = '\0';
  err->pos = 0;
  skip_ws(&p);
  if (!parse_value(&p, out)) return false;
  skip_ws(&p);
  char dbuf[16];
  if (p.i != p.n) return fail(&p, p.i, "unexpected %s after the JSON value", describe(&p, dbuf));
  return true;
}

const JsonValue *json_get(const JsonValue *v, const char *key) {
  if (v->kind != JSON_OBJECT) return NULL;
  for (int i = 0; i < v->n; i++)
    if (strcmp(v->keys[i], key) == 0) return &v->items[i];
  return NULL;
}

/* ---- writer ----------------------------------------------------------- */

void json_write_string(StrBuf *b, const char *s) {
  strbuf_putc(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"') strbuf_puts(b, "\\\"");
    else if (c == '\\') strbuf_puts(b, "\\\\");
    else if (c == '\n') strbuf_puts(b, "\\n");
    else if (c == '\t') strbuf_puts(b, "\\t");
    else if (c == '\r') strbuf_puts(b, "\\r");
    else if (c < 0x20) strbuf_printf(b, "\\u%04x", c);
    else strbuf_putc(b, (char)c);
  }
  strbuf_putc(b, '"');
}

void json_write_key(StrBuf *b, const char *key) {
  json_write_string(b, key);
  strbuf_putc(b, ':');
}

void json_write_double(StrBuf *b, double x) {
  if (!isfinite(x)) {
    strbuf_puts(b, "null");
    return;
  }
  char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) break;
  }
  strbuf_puts(b, buf);
}

void json_write_double_fmt(StrBuf *b, const char *fmt, double x) {
  if (!isfinite(x)) {
    strbuf_puts(b, "null");
    return;
  }
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
  strbuf_printf(b, fmt, x);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

void json_write_int(StrBuf *b, int64_t x) { strbuf_printf(b, "%lld", (long long)x); }

void json_write_uint(StrBuf *b, uint64_t x) { strbuf_printf(b, "%llu", (unsigned long long)x); }
