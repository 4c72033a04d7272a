/* checkpoint.c — safetensors checkpoints (checkpoint.h): a small JSON writer
 * for the header, a strict bounds-checked JSON parser for reading it back,
 * header validation against the file and the graph, and the atomic save.
 *
 * Not here: memory mapping (tensors are read one at a time into a host
 * buffer of the largest tensor's size), other dtypes, data checksums.
 *
 * Invariants: the parser reads only header[0, n) and never trusts a length,
 * offset or count from the file before checking it against the file size;
 * it refuses what strict JSON refuses (trailing commas, comments, bad
 * escapes, invalid UTF-8, leading zeros), duplicate keys, nesting deeper
 * than JSON_MAX_DEPTH and arrays longer than JSON_MAX_ARRAY (the header's
 * only arrays are shapes and offset pairs), so a hostile header costs
 * memory proportional to its length, itself capped at HEADER_MAX_BYTES. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMAT_NAME "bertc-checkpoint"
#define HEADER_MAX_BYTES ((uint64_t)16 << 20) /* ~100x a BERT-large header */
#define JSON_MAX_DEPTH 16
#define JSON_MAX_ARRAY 1024

static const char *const reserved_keys[] = {"format", "format_version", "step",    "seed",
                                            "vocab_hash", "model",        "graph", "hparams"};

/* An error located at the file, "path: error: ...". */
static void ck_error(Diag *d, const char *path, const char *fmt, ...) BC_PRINTF(3, 4);
static void ck_error(Diag *d, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, (SrcLoc){bc_intern(path), 0, 0}, fmt, ap);
  va_end(ap);
}

/* ---- metadata ----------------------------------------------------------- */

void checkpoint_meta_init(CheckpointMeta *m) { memset(m, 0, sizeof(*m)); }

void checkpoint_meta_free(CheckpointMeta *m) {
  free(m->vocab_hash);
  free(m->model_path);
  free(m->graph_name);
  free(m->hparams_json);
  for (int i = 0; i < m->extra.n; i++) {
    free(m->extra.data[i].key);
    free(m->extra.data[i].value);
  }
  vec_free(&m->extra);
  checkpoint_meta_init(m);
}

void checkpoint_meta_set(CheckpointMeta *m, const char *key, const char *value) {
  for (int i = 0; i < m->extra.n; i++)
    if (strcmp(m->extra.data[i].key, key) == 0) {
      free(m->extra.data[i].value);
      m->extra.data[i].value = bc_strdup(value);
      return;
    }
  vec_push(&m->extra, ((CheckpointKV){bc_strdup(key), bc_strdup(value)}));
}

const char *checkpoint_meta_get(const CheckpointMeta *m, const char *key) {
  for (int i = 0; i < m->extra.n; i++)
    if (strcmp(m->extra.data[i].key, key) == 0) return m->extra.data[i].value;
  return NULL;
}

static bool is_reserved(const char *key) {
  for (size_t i = 0; i < sizeof(reserved_keys) / sizeof(reserved_keys[0]); i++)
    if (strcmp(reserved_keys[i], key) == 0) return true;
  return false;
}

void checkpoint_info_free(CheckpointInfo *info) {
  checkpoint_meta_free(&info->meta);
  for (int i = 0; i < info->tensors.n; i++) free(info->tensors.data[i].name);
  vec_free(&info->tensors);
  memset(info, 0, sizeof(*info));
}

/* ---- UTF-8 and numbers ---------------------------------------------------- */

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

static bool utf8_valid(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq((const unsigned char *)s + i, n - i);
    if (!k) return false;
    i += k;
  }
  return true;
}

/* Strict decimal: digits only (parse_i64: a leading '-' too), no spaces, no
 * '+', no overflow. */
static bool parse_u64(const char *s, uint64_t *out) {
  if (!*s) return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    unsigned dg = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - dg) / 10) return false;
    v = v * 10 + dg;
  }
  *out = v;
  return true;
}

static bool parse_i64(const char *s, int64_t *out) {
  bool neg = *s == '-';
  uint64_t u;
  if (!parse_u64(s + neg, &u)) return false;
  if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX) return false;
  *out = neg ? (int64_t)(0 - u) : (int64_t)u;
  return true;
}

/* The shortest %.*g form of a finite x that reads back as x. */
static void fmt_double(char *buf, size_t n, double x) {
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) return;
  }
}

/* ---- JSON writer ---------------------------------------------------------- */

typedef VEC(char) Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
  vec_reserve(b, b->n + (int)n + 1);
  memcpy(b->data + b->n, s, n);
  b->n += (int)n;
  b->data[b->n] = '\0';
}

static void buf_puts(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(Buf *b, const char *fmt, ...) BC_PRINTF(2, 3);
static void buf_printf(Buf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  BC_ASSERT(n >= 0 && (size_t)n < sizeof tmp); /* only short numbers go through here */
  buf_add(b, tmp, (size_t)n);
}

/* s (valid UTF-8) as a quoted JSON string. */
static void buf_json_str(Buf *b, const char *s) {
  buf_puts(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"') buf_puts(b, "\\\"");
    else if (c == '\\') buf_puts(b, "\\\\");
    else if (c == '\n') buf_puts(b, "\\n");
    else if (c == '\t') buf_puts(b, "\\t");
    else if (c == '\r') buf_puts(b, "\\r");
    else if (c < 0x20) buf_printf(b, "\\u%04x", c);
    else buf_add(b, (const char *)&c, 1);
  }
  buf_puts(b, "\"");
}

/* ---- JSON parser ----------------------------------------------------------- */

typedef enum { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_ARR, JV_OBJ } JKind;

typedef struct JVal {
  JKind kind;
  size_t pos;         /* byte offset of its first character */
  const char *str;    /* JV_STR: decoded, no NUL inside; JV_NUM: its text */
  bool is_uint;       /* JV_NUM: a plain non-negative integer below 2^64 */
  uint64_t u;         /* JV_NUM with is_uint; JV_BOOL: 0 or 1 */
  int n;              /* JV_ARR, JV_OBJ: item count */
  struct JVal *items; /* n items */
  const char **keys;  /* JV_OBJ: n keys, unique */
} JVal;

typedef struct {
  const char *s;
  size_t n, i;
  Arena *arena; /* owns every JVal and string */
  int depth;
  char err[192];
  size_t err_pos;
} JParser;

static bool jfail(JParser *p, size_t pos, const char *fmt, ...) BC_PRINTF(3, 4);
static bool jfail(JParser *p, size_t pos, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err, sizeof p->err, fmt, ap);
  va_end(ap);
  p->err_pos = pos;
  return false;
}

static void jskip_ws(JParser *p) {
  while (p->i < p->n &&
         (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
    p->i++;
}

/* A printable description of the byte at p->i, for messages. */
static const char *jdescribe(const JParser *p, char *buf) {
  if (p->i >= p->n) return "the end of the header";
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
static long hex4(const JParser *p, size_t i) {
  if (p->n - i < 4) return -1;
  long v = 0;
  for (int k = 0; k < 4; k++) {
    int h = hexval(p->s[i + (size_t)k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

static void put_utf8(Buf *b, unsigned long cp) {
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
  buf_add(b, u, n);
}

/* A string at p->i (the opening quote) into an arena copy. */
static bool jparse_string(JParser *p, const char **out) {
  size_t start = p->i++;
  Buf b = {0};
  bool ok = false;
  buf_add(&b, "", 0);
  for (;;) {
    if (p->i >= p->n) {
      jfail(p, start, "unterminated string");
      goto done;
    }
    unsigned char c = (unsigned char)p->s[p->i];
    if (c == '"') {
      p->i++;
      break;
    }
    if (c < 0x20) {
      jfail(p, p->i, "control byte 0x%02x inside a string", c);
      goto done;
    }
    if (c != '\\') {
      size_t k = utf8_seq((const unsigned char *)p->s + p->i, p->n - p->i);
      if (!k) {
        jfail(p, p->i, "invalid UTF-8 inside a string");
        goto done;
      }
      buf_add(&b, p->s + p->i, k);
      p->i += k;
      continue;
    }
    size_t esc = p->i++;
    if (p->i >= p->n) {
      jfail(p, start, "unterminated string");
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
      jfail(p, esc, "invalid escape in a string");
      goto done;
    }
    if (simple) {
      buf_add(&b, simple, 1);
      continue;
    }
    long cp = hex4(p, p->i);
    if (cp < 0) {
      jfail(p, esc, "invalid \\u escape in a string");
      goto done;
    }
    p->i += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      jfail(p, esc, "lone low surrogate \\u%04lx in a string", cp);
      goto done;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      long lo = (p->n - p->i >= 2 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u')
                    ? hex4(p, p->i + 2)
                    : -1;
      if (lo < 0xDC00 || lo > 0xDFFF) {
        jfail(p, esc, "unpaired high surrogate \\u%04lx in a string", cp);
        goto done;
      }
      p->i += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0) {
      jfail(p, esc, "\\u0000 inside a string is not supported");
      goto done;
    }
    put_utf8(&b, (unsigned long)cp);
  }
  *out = arena_strdup(p->arena, b.data);
  ok = true;
done:
  free(b.data);
  return ok;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool jparse_number(JParser *p, JVal *v) {
  size_t start = p->i;
  bool neg = false, plain = true;
  if (p->s[p->i] == '-') neg = true, p->i++;
  if (p->i >= p->n || !is_digit(p->s[p->i])) return jfail(p, start, "invalid number");
  if (p->s[p->i] == '0') {
    p->i++;
    if (p->i < p->n && is_digit(p->s[p->i]))
      return jfail(p, start, "invalid number (leading zero)");
  } else {
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  size_t int_end = p->i;
  if (p->i < p->n && p->s[p->i] == '.') {
    plain = false;
    p->i++;
    if (p->i >= p->n || !is_digit(p->s[p->i])) return jfail(p, start, "invalid number");
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    plain = false;
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (p->i >= p->n || !is_digit(p->s[p->i])) return jfail(p, start, "invalid number");
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  }
  v->kind = JV_NUM;
  size_t len = p->i - start;
  char *text = arena_alloc(p->arena, len + 1);
  memcpy(text, p->s + start, len);
  v->str = text;
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

static bool jparse_value(JParser *p, JVal *v);

/* An array or object at p->i ('[' or '{'). */
static bool jparse_container(JParser *p, JVal *v, bool is_obj) {
  size_t start = p->i++;
  char close = is_obj ? '}' : ']';
  if (++p->depth > JSON_MAX_DEPTH)
    return jfail(p, start, "nesting deeper than %d levels", JSON_MAX_DEPTH);
  VEC(JVal) items = {0};
  VEC(const char *) keys = {0};
  bool ok = false;
  char dbuf[16];
  jskip_ws(p);
  if (p->i < p->n && p->s[p->i] == close) {
    p->i++;
  } else {
    for (;;) {
      if (!is_obj && items.n >= JSON_MAX_ARRAY) {
        jfail(p, start, "array longer than %d items", JSON_MAX_ARRAY);
        goto done;
      }
      if (is_obj) {
        const char *key;
        if (p->i >= p->n || p->s[p->i] != '"') {
          jfail(p, p->i, "expected a key string, found %s", jdescribe(p, dbuf));
          goto done;
        }
        if (!jparse_string(p, &key)) goto done;
        jskip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') {
          jfail(p, p->i, "expected ':' after a key, found %s", jdescribe(p, dbuf));
          goto done;
        }
        p->i++;
        jskip_ws(p);
        vec_push(&keys, key);
      }
      JVal item;
      if (!jparse_value(p, &item)) goto done;
      vec_push(&items, item);
      jskip_ws(p);
      if (p->i < p->n && p->s[p->i] == ',') {
        p->i++;
        jskip_ws(p);
        continue;
      }
      if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        break;
      }
      jfail(p, p->i, "expected ',' or '%c', found %s", close, jdescribe(p, dbuf));
      goto done;
    }
  }
  v->kind = is_obj ? JV_OBJ : JV_ARR;
  v->n = items.n;
  v->items = arena_alloc(p->arena, (size_t)items.n * sizeof(JVal));
  if (items.n) memcpy(v->items, items.data, (size_t)items.n * sizeof(JVal));
  if (is_obj) {
    v->keys = arena_alloc(p->arena, (size_t)keys.n * sizeof(char *));
    if (keys.n) memcpy(v->keys, keys.data, (size_t)keys.n * sizeof(char *));
    /* Duplicates by sorting a copy: O(n log n) however many keys. */
    if (keys.n > 1) {
      qsort(keys.data, (size_t)keys.n, sizeof(char *), cmp_key);
      for (int k = 1; k < keys.n; k++)
        if (strcmp(keys.data[k - 1], keys.data[k]) == 0) {
          jfail(p, start, "duplicate key \"%.80s\" in an object", keys.data[k]);
          goto done;
        }
    }
  }
  p->depth--;
  ok = true;
done:
  vec_free(&items);
  vec_free(&keys);
  return ok;
}

static bool jliteral(JParser *p, const char *word) {
  size_t n = strlen(word);
  return p->n - p->i >= n && memcmp(p->s + p->i, word, n) == 0;
}

static bool jparse_value(JParser *p, JVal *v) {
  memset(v, 0, sizeof(*v));
  v->pos = p->i;
  char dbuf[16];
  if (p->i >= p->n) return jfail(p, p->i, "unexpected end of the header");
  char c = p->s[p->i];
  if (c == '{' || c == '[') return jparse_container(p, v, c == '{');
  if (c == '"') {
    v->kind = JV_STR;
    return jparse_string(p, &v->str);
  }
  if (c == '-' || is_digit(c)) return jparse_number(p, v);
  if (jliteral(p, "true") || jliteral(p, "false")) {
    v->kind = JV_BOOL;
    v->u = c == 't';
    p->i += c == 't' ? 4 : 5;
    return true;
  }
  if (jliteral(p, "null")) {
    v->kind = JV_NULL;
    p->i += 4;
    return true;
  }
  return jfail(p, p->i, "expected a value, found %s", jdescribe(p, dbuf));
}

/* Parses s[0, n) as one JSON value with optional surrounding whitespace.
 * On failure p->err and p->err_pos say why and where. */
static bool json_parse(JParser *p, const char *s, size_t n, Arena *arena, JVal *out) {
  memset(p, 0, sizeof(*p));
  p->s = s;
  p->n = n;
  p->arena = arena;
  jskip_ws(p);
  if (!jparse_value(p, out)) return false;
  jskip_ws(p);
  char dbuf[16];
  if (p->i != p->n) return jfail(p, p->i, "unexpected %s after the JSON value", jdescribe(p, dbuf));
  return true;
}

static const JVal *jget(const JVal *obj, const char *key) {
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}

/* ---- header -> CheckpointInfo ----------------------------------------------- */

static const char *st_dtype_name(DType t) { return t == DTYPE_I32 ? "I32" : "F32"; }

/* Writes the error for `v` in tensor `name`: "corrupt header: tensor 'x': ...". */
static bool tensor_fail(Diag *d, const char *path, const char *name, const JVal *v,
                        const char *what) {
  ck_error(d, path, "corrupt checkpoint header: tensor \"%.200s\": %s (at byte %zu of the header)",
           name, what, v->pos);
  return false;
}

static bool parse_tensor(const char *path, const char *name, const JVal *v, CheckpointTensor *t,
                         Diag *d) {
  if (v->kind != JV_OBJ) return tensor_fail(d, path, name, v, "not an object");
  const JVal *dt = jget(v, "dtype"), *sh = jget(v, "shape"), *off = jget(v, "data_offsets");
  for (int i = 0; i < v->n; i++)
    if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") &&
        strcmp(v->keys[i], "data_offsets")) {
      char what[160];
      snprintf(what, sizeof what, "unknown field \"%.80s\"", v->keys[i]);
      return tensor_fail(d, path, name, &v->items[i], what);
    }
  if (!dt || !sh || !off)
    return tensor_fail(d, path, name, v,
                       !dt   ? "no \"dtype\""
                       : !sh ? "no \"shape\""
                             : "no \"data_offsets\"");
  if (dt->kind != JV_STR) return tensor_fail(d, path, name, dt, "\"dtype\" is not a string");
  if (strcmp(dt->str, "F32") == 0) t->dtype = DTYPE_F32;
  else if (strcmp(dt->str, "I32") == 0) t->dtype = DTYPE_I32;
  else {
    static const char *const other[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16",
                                        "F16",  "BF16", "U32", "I64",     "U64",     "F64"};
    bool known = false;
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
      known |= strcmp(dt->str, other[i]) == 0;
    ck_error(d, path, "tensor \"%.200s\": %s dtype \"%.40s\" (bertc stores F32 and I32)", name,
             known ? "unsupported" : "unknown", dt->str);
    return false;
  }
  if (sh->kind != JV_ARR) return tensor_fail(d, path, name, sh, "\"shape\" is not an array");
  if (sh->n > BC_MAX_RANK) {
    char what[96];
    snprintf(what, sizeof what, "rank %d exceeds the maximum %d", sh->n, BC_MAX_RANK);
    return tensor_fail(d, path, name, sh, what);
  }
  /* numel * 4 must fit an int64 (a real tensor's does, as it fits the file). */
  uint64_t numel = 1;
  bool huge = false;
  t->shape.rank = sh->n;
  for (int i = 0; i < sh->n; i++) {
    const JVal *x = &sh->items[i];
    if (x->kind != JV_NUM || !x->is_uint || x->u > (uint64_t)INT64_MAX)
      return tensor_fail(d, path, name, x, "a dimension is not a non-negative integer");
    t->shape.dim[i] = (int64_t)x->u;
    if (x->u && numel > ((uint64_t)INT64_MAX / 4) / x->u) huge = true;
    else numel *= x->u;
  }
  if (off->kind != JV_ARR || off->n != 2)
    return tensor_fail(d, path, name, off, "\"data_offsets\" is not an array of two numbers");
  for (int i = 0; i < 2; i++)
    if (off->items[i].kind != JV_NUM || !off->items[i].is_uint)
      return tensor_fail(d, path, name, &off->items[i], "an offset is not a non-negative integer");
  t->begin = off->items[0].u;
  t->end = off->items[1].u;
  if (t->end < t->begin) return tensor_fail(d, path, name, off, "data_offsets end before begin");
  /* A shape with a zero dimension has no elements whatever the others say. */
  bool empty = false;
  for (int i = 0; i < sh->n; i++) empty |= t->shape.dim[i] == 0;
  if (huge && !empty) return tensor_fail(d, path, name, sh, "shape too large");
  uint64_t want = empty ? 0 : numel * dtype_size(t->dtype);
  if (t->end - t->begin != want) {
    char what[160], sb[192];
    snprintf(what, sizeof what,
             "shape %s of %s needs %llu bytes but data_offsets [%llu, %llu) span %llu",
             shape_str(&t->shape, sb), dt->str, (unsigned long long)want,
             (unsigned long long)t->begin, (unsigned long long)t->end,
             (unsigned long long)(t->end - t->begin));
    return tensor_fail(d, path, name, off, what);
  }
  return true;
}

/* Appends a pair without looking for an equal key: the parser has refused
 * duplicate keys, and a linear search per key would make a header of many
 * keys quadratic. */
static void push_kv(CheckpointMeta *m, const char *key, const char *value) {
  vec_push(&m->extra, ((CheckpointKV){bc_strdup(key), bc_strdup(value)}));
}

static bool parse_meta(const char *path, const JVal *m, CheckpointMeta *out, Diag *d) {
  if (m->kind != JV_OBJ) {
    ck_error(d, path, "corrupt checkpoint header: \"__metadata__\" is not an object");
    return false;
  }
  bool ours = false;
  const char *version = NULL;
  for (int i = 0; i < m->n; i++) {
    const char *k = m->keys[i];
    const JVal *v = &m->items[i];
    if (v->kind != JV_STR) {
      ck_error(d, path, "corrupt checkpoint header: metadata \"%.80s\" is not a string", k);
      return false;
    }
    const char *s = v->str;
    bool bad = false;
    if (strcmp(k, "format") == 0) {
      ours = strcmp(s, FORMAT_NAME) == 0;
      if (!ours) push_kv(out, k, s);
    } else if (strcmp(k, "format_version") == 0) version = s;
    else if (strcmp(k, "step") == 0) bad = !parse_i64(s, &out->step);
    else if (strcmp(k, "seed") == 0) bad = !parse_u64(s, &out->seed);
    else if (strcmp(k, "vocab_hash") == 0) free(out->vocab_hash), out->vocab_hash = bc_strdup(s);
    else if (strcmp(k, "model") == 0) free(out->model_path), out->model_path = bc_strdup(s);
    else if (strcmp(k, "graph") == 0) free(out->graph_name), out->graph_name = bc_strdup(s);
    else if (strcmp(k, "hparams") == 0) free(out->hparams_json), out->hparams_json = bc_strdup(s);
    else push_kv(out, k, s);
    if (bad) {
      ck_error(d, path, "corrupt checkpoint metadata: \"%s\" is \"%.40s\", not an integer", k, s);
      return false;
    }
  }
  if (ours) {
    uint64_t ver;
    if (!version || !parse_u64(version, &ver) || ver == 0 || ver > INT32_MAX) {
      ck_error(d, path, "corrupt checkpoint metadata: missing or invalid \"format_version\"");
      return false;
    }
    if (ver > BC_CHECKPOINT_VERSION) {
      ck_error(d, path,
               "checkpoint format version %llu is newer than this build reads (%d); "
               "use a newer bertc",
               (unsigned long long)ver, BC_CHECKPOINT_VERSION);
      return false;
    }
    out->format_version = (int)ver;
  } else if (version) {
    push_kv(out, "format_version", version);
  }
  return true;
}

static int cmp_by_offset(const void *a, const void *b) {
  const CheckpointTensor *x = *(const CheckpointTensor *const *)a;
  const CheckpointTensor *y = *(const CheckpointTensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* The header JSON hdr[0, n) into `out`; `data_avail` is the number of bytes
 * the file has after the header. Checks that the tensors tile the data
 * section exactly: sorted by offset they start at 0, each begins where the
 * previous ends, and the last ends at the end of the file. */
static bool parse_header(const char *path, const char *hdr, size_t n, uint64_t data_avail,
                         CheckpointInfo *out, Diag *d) {
  Arena arena;
  arena_init(&arena);
  JParser p;
  JVal root;
  bool ok = false;
  const CheckpointTensor **order = NULL;
  if (!json_parse(&p, hdr, n, &arena, &root)) {
    ck_error(d, path, "corrupt checkpoint header: %s (at byte %zu of the header)", p.err,
             p.err_pos);
    goto done;
  }
  if (root.kind != JV_OBJ) {
    ck_error(d, path, "corrupt checkpoint header: not a JSON object");
    goto done;
  }
  for (int i = 0; i < root.n; i++) {
    if (strcmp(root.keys[i], "__metadata__") == 0) {
      if (!parse_meta(path, &root.items[i], &out->meta, d)) goto done;
      continue;
    }
    CheckpointTensor t = {0};
    if (!parse_tensor(path, root.keys[i], &root.items[i], &t, d)) goto done;
    t.name = bc_strdup(root.keys[i]);
    vec_push(&out->tensors, t);
  }
  int nt = out->tensors.n;
  order = bc_malloc((size_t)(nt ? nt : 1) * sizeof(*order));
  for (int i = 0; i < nt; i++) order[i] = &out->tensors.data[i];
  qsort(order, (size_t)nt, sizeof(*order), cmp_by_offset);
  uint64_t at = 0;
  for (int i = 0; i < nt; i++) {
    const CheckpointTensor *t = order[i];
    if (t->begin < at) {
      ck_error(d, path,
               "corrupt checkpoint header: tensors \"%.200s\" and \"%.200s\" overlap "
               "(bytes [%llu, %llu) and [%llu, %llu))",
               order[i - 1]->name, t->name, (unsigned long long)order[i - 1]->begin,
               (unsigned long long)order[i - 1]->end, (unsigned long long)t->begin,
               (unsigned long long)t->end);
      goto done;
    }
    if (t->begin > at) {
      ck_error(d, path,
               "corrupt checkpoint header: bytes [%llu, %llu) of the data belong to no tensor "
               "(before \"%.200s\")",
               (unsigned long long)at, (unsigned long long)t->begin, t->name);
      goto done;
    }
    at = t->end;
  }
  out->data_bytes = at;
  if (at > data_avail) {
    ck_error(d, path,
             "truncated checkpoint: the header describes %llu bytes of tensor data but only %llu "
             "follow it",
             (unsigned long long)at, (unsigned long long)data_avail);
    goto done;
  }
  if (at < data_avail) {
    ck_error(d, path,
             "corrupt checkpoint: %llu bytes follow the last tensor (the header describes %llu "
             "bytes of data, the file has %llu)",
             (unsigned long long)(data_avail - at), (unsigned long long)at,
             (unsigned long long)data_avail);
    goto done;
  }
  ok = true;
done:
  free(order);
  arena_free(&arena);
  return ok;
}

/* ---- reading files --------------------------------------------------------- */

static uint64_t get_le64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}

static bool host_is_le(void) {
  const uint16_t one = 1;
  return *(const unsigned char *)&one == 1;
}

/* Swaps every 4-byte word of buf[0, n) (n a multiple of 4): little-endian
 * file data <-> big-endian host. */
static void swap32(unsigned char *buf, size_t n) {
  for (size_t i = 0; i + 4 <= n; i += 4) {
    unsigned char t0 = buf[i], t1 = buf[i + 1];
    buf[i] = buf[i + 3], buf[i + 1] = buf[i + 2], buf[i + 2] = t1, buf[i + 3] = t0;
  }
}

/* Opens `path`, reads and validates its header into `info` (initialized
 * here). On success *f_out (may be NULL: closed) stays open for the data. */
static bool open_checkpoint(const char *path, CheckpointInfo *info, FILE **f_out, Diag *d) {
  memset(info, 0, sizeof(*info));
  if (f_out) *f_out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    ck_error(d, path, "cannot open checkpoint: %s", strerror(errno));
    return false;
  }
  bool ok = false;
  char *hdr = NULL;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    ck_error(d, path, "cannot stat checkpoint: %s", strerror(errno));
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    ck_error(d, path, "checkpoint is not a regular file");
    goto done;
  }
  uint64_t size = (uint64_t)st.st_size;
  unsigned char lenb[8];
  if (size < 8) {
    ck_error(d, path, "truncated checkpoint: the file has %llu bytes, fewer than the 8 of the "
             "header length", (unsigned long long)size);
    goto done;
  }
  if (fread(lenb, 1, 8, f) != 8) {
    ck_error(d, path, "cannot read checkpoint: %s", ferror(f) ? strerror(errno) : "short read");
    goto done;
  }
  uint64_t n = get_le64(lenb);
  info->header_bytes = n;
  if (n > size - 8) {
    ck_error(d, path,
             "truncated or corrupt checkpoint: header length %llu exceeds the %llu bytes that "
             "follow it",
             (unsigned long long)n, (unsigned long long)(size - 8));
    goto done;
  }
  if (n > HEADER_MAX_BYTES) {
    ck_error(d, path, "corrupt checkpoint: header length %llu exceeds the %llu-byte limit",
             (unsigned long long)n, (unsigned long long)HEADER_MAX_BYTES);
    goto done;
  }
  hdr = bc_malloc((size_t)n + 1);
  if (fread(hdr, 1, (size_t)n, f) != (size_t)n) {
    ck_error(d, path, "cannot read checkpoint header: %s",
             ferror(f) ? strerror(errno) : "short read");
    goto done;
  }
  hdr[n] = '\0';
  if (!parse_header(path, hdr, (size_t)n, size - 8 - n, info, d)) goto done;
  ok = true;
done:
  free(hdr);
  if (ok && f_out) *f_out = f;
  else fclose(f);
  return ok;
}

bool checkpoint_read_info(const char *path, CheckpointInfo *out, Diag *d) {
  return open_checkpoint(path, out, NULL, d);
}

bool checkpoint_read_meta(const char *path, CheckpointMeta *out, Diag *d) {
  CheckpointInfo info;
  bool ok = open_checkpoint(path, &info, NULL, d);
  *out = info.meta;
  memset(&info.meta, 0, sizeof(info.meta));
  checkpoint_info_free(&info);
  return ok;
}

/* ---- hyperparameters --------------------------------------------------------- */

/* g->hparams as a JSON object, {"d_model":64,...}; non-finite values as null. */
static char *hparams_json(const Graph *g) {
  Buf b = {0};
  buf_puts(&b, "{");
  for (int i = 0; i < g->hparams.n; i++) {
    const HParam *h = &g->hparams.data[i];
    if (i) buf_puts(&b, ",");
    buf_json_str(&b, h->name);
    buf_puts(&b, ":");
    if (isfinite(h->value)) {
      char num[40];
      fmt_double(num, sizeof num, h->value);
      buf_puts(&b, num);
    } else {
      buf_puts(&b, "null");
    }
  }
  buf_puts(&b, "}");
  return b.data;
}

/* A note listing how the file's hparams differ from the graph's: the likely
 * reason for wrong shapes and missing or unexpected tensors. Silent when the file's hparams are absent or
 * not a JSON object of numbers. */
static void note_hparams(const char *path, const char *file_json, const Graph *g, Diag *d) {
  if (!file_json) return;
  Arena arena;
  arena_init(&arena);
  JParser p;
  JVal root;
  Buf msg = {0};
  int n_diff = 0;
  if (!json_parse(&p, file_json, strlen(file_json), &arena, &root) || root.kind != JV_OBJ)
    goto done;
  for (int i = 0; i < g->hparams.n; i++) {
    const HParam *h = &g->hparams.data[i];
    const JVal *v = jget(&root, h->name);
    char mine[40];
    fmt_double(mine, sizeof mine, h->value);
    if (!v) {
      buf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", h->name);
      buf_printf(&msg, " is %s here, absent in the file", mine);
    } else if (v->kind == JV_NUM && strtod(v->str, NULL) != h->value) {
      buf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", h->name);
      buf_printf(&msg, " is %.40s in the file, %s here", v->str, mine);
    }
  }
  for (int i = 0; i < root.n; i++) {
    bool found = false;
    for (int k = 0; k < g->hparams.n && !found; k++)
      found = strcmp(g->hparams.data[k].name, root.keys[i]) == 0;
    if (!found) {
      buf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", root.keys[i]);
      buf_puts(&msg, " is in the file only");
    }
  }
  if (n_diff)
    diag_note(d, (SrcLoc){bc_intern(path), 0, 0},
              "the checkpoint was written for a different model: %s", msg.data);
done:
  free(msg.data);
  arena_free(&arena);
}

/* ---- save -------------------------------------------------------------------- */

/* The directory part of path ("." when none). */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return bc_strdup(".");
  if (slash == path) return bc_strdup("/");
  char *dir = bc_strdup(path);
  dir[slash - path] = '\0';
  return dir;
}

/* Removes `<base>.tmp.<pid>` files in the directory of `path` whose process
 * no longer exists (left by a crash during a save). Best effort: any error
 * leaves the file, which nothing ever reads. A file of a live process with a
 * reused pid stays too. */
static void remove_stale_tmps(const char *path) {
  char *dir = dir_of(path);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t nb = strlen(base);
  DIR *dp = opendir(dir);
  if (dp) {
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
      const char *nm = de->d_name;
      if (strncmp(nm, base, nb) != 0 || strncmp(nm + nb, ".tmp.", 5) != 0) continue;
      uint64_t pid;
      if (strlen(nm + nb + 5) > 10 || !parse_u64(nm + nb + 5, &pid)) continue;
      if (pid == 0 || pid > INT32_MAX || (pid_t)pid == getpid()) continue;
      if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
      char *full = bc_asprintf("%s/%s", dir, nm);
      unlink(full);
      free(full);
    }
    closedir(dp);
  }
  free(dir);
}

/* The whole header: JSON padded with spaces so that its length is a
 * multiple of 8. */
static char *build_header(const Graph *g, const ValueId *ids, int n_ids, const CheckpointMeta *m,
                          size_t *n_out) {
  Buf b = {0};
  buf_puts(&b, "{\"__metadata__\":{");
  buf_printf(&b, "\"format\":\"%s\",\"format_version\":\"%d\"", FORMAT_NAME,
             BC_CHECKPOINT_VERSION);
  buf_printf(&b, ",\"step\":\"%lld\",\"seed\":\"%llu\"", (long long)m->step,
             (unsigned long long)m->seed);
  buf_puts(&b, ",\"graph\":");
  buf_json_str(&b, g->name ? g->name : "");
  char *hp = hparams_json(g);
  buf_puts(&b, ",\"hparams\":");
  buf_json_str(&b, hp);
  free(hp);
  if (m->vocab_hash && *m->vocab_hash) {
    buf_puts(&b, ",\"vocab_hash\":");
    buf_json_str(&b, m->vocab_hash);
  }
  if (m->model_path && *m->model_path) {
    buf_puts(&b, ",\"model\":");
    buf_json_str(&b, m->model_path);
  }
  for (int i = 0; i < m->extra.n; i++) {
    buf_puts(&b, ",");
    buf_json_str(&b, m->extra.data[i].key);
    buf_puts(&b, ":");
    buf_json_str(&b, m->extra.data[i].value);
  }
  buf_puts(&b, "}");
  uint64_t at = 0;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    uint64_t nbytes = (uint64_t)shape_numel(&v->shape) * dtype_size(v->dtype);
    buf_puts(&b, ",");
    buf_json_str(&b, v->name);
    buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(v->dtype));
    for (int k = 0; k < v->shape.rank; k++)
      buf_printf(&b, "%s%lld", k ? "," : "", (long long)v->shape.dim[k]);
    buf_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
               (unsigned long long)(at + nbytes));
    at += nbytes;
  }
  buf_puts(&b, "}");
  while (b.n % 8) buf_puts(&b, " ");
  *n_out = (size_t)b.n;
  return b.data;
}

/* Checks what the header will hold, so a save never writes a file its own
 * loader refuses. */
static bool check_savable(const char *path, const Graph *g, const ValueId *ids, int n_ids,
                          const CheckpointMeta *m, Diag *d) {
  bool ok = true;
  const char *fields[][2] = {{"graph name", g->name},
                             {"vocab_hash", m->vocab_hash},
                             {"model path", m->model_path}};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    if (fields[i][1] && !utf8_valid(fields[i][1])) {
      ck_error(d, path, "cannot save checkpoint: the %s is not valid UTF-8", fields[i][0]);
      ok = false;
    }
  for (int i = 0; i < g->hparams.n; i++)
    if (!utf8_valid(g->hparams.data[i].name)) {
      ck_error(d, path, "cannot save checkpoint: an hparam name is not valid UTF-8");
      ok = false;
    }
  for (int i = 0; i < m->extra.n; i++) {
    const CheckpointKV *kv = &m->extra.data[i];
    if (is_reserved(kv->key)) {
      ck_error(d, path, "cannot save checkpoint: extra metadata key \"%s\" is reserved", kv->key);
      ok = false;
    }
    if (!utf8_valid(kv->key) || !utf8_valid(kv->value)) {
      ck_error(d, path, "cannot save checkpoint: extra metadata \"%.80s\" is not valid UTF-8",
               kv->key);
      ok = false;
    }
    for (int k = 0; k < i; k++)
      if (strcmp(m->extra.data[k].key, kv->key) == 0) {
        ck_error(d, path, "cannot save checkpoint: extra metadata key \"%s\" appears twice",
                 kv->key);
        ok = false;
      }
  }
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    if (!v->name || !*v->name || !utf8_valid(v->name) || strcmp(v->name, "__metadata__") == 0) {
      ck_error(d, path, "cannot save checkpoint: value %d has no usable tensor name", (int)ids[i]);
      ok = false;
    }
    BC_ASSERT(v->dtype == DTYPE_F32 || v->dtype == DTYPE_I32); /* graph values are f32 / i32 */
  }
  return ok;
}

/* The values a checkpoint holds: every parameter, then every state. */
static ValueId *saved_values(const Graph *g, int *n) {
  *n = g->params.n + g->states.n;
  ValueId *ids = bc_malloc((size_t)(*n ? *n : 1) * sizeof(ValueId));
  for (int i = 0; i < g->params.n; i++) ids[i] = g->params.data[i];
  for (int i = 0; i < g->states.n; i++) ids[g->params.n + i] = g->states.data[i];
  return ids;
}

bool checkpoint_save(const char *path, Exec *e, const CheckpointMeta *meta, Diag *d) {
  BC_ASSERT(path && e);
  const Graph *g = e->graph;
  CheckpointMeta none;
  checkpoint_meta_init(&none);
  if (!meta) meta = &none;
  int n_ids;
  ValueId *ids = saved_values(g, &n_ids);
  char *tmp = bc_asprintf("%s.tmp.%ld", path, (long)getpid());
  char *hdr = NULL;
  unsigned char *host = NULL;
  FILE *f = NULL;
  bool ok = false, renamed = false;
  if (!check_savable(path, g, ids, n_ids, meta, d)) goto done;
  remove_stale_tmps(path);

  size_t n_hdr;
  hdr = build_header(g, ids, n_ids, meta, &n_hdr);
  size_t max_bytes = 4;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    size_t nb = (size_t)shape_numel(&v->shape) * dtype_size(v->dtype);
    if (nb > max_bytes) max_bytes = nb;
  }
  host = bc_malloc(max_bytes);

  /* A file of our own pid can only be left by a dead process of the same
   * pid: remove it, then create exclusively, never through a link. */
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    ck_error(d, path, "cannot create %s: %s", tmp, strerror(errno));
    goto done;
  }
  f = fdopen(fd, "wb");
  if (!f) {
    ck_error(d, path, "cannot open %s: %s", tmp, strerror(errno));
    close(fd);
    goto done;
  }
  errno = 0; /* so a short write that sets none is not blamed on an old errno */
  unsigned char lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)n_hdr >> (8 * i));
  if (fwrite(lenb, 1, 8, f) != 8 || fwrite(hdr, 1, n_hdr, f) != n_hdr) goto write_error;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    size_t nb = (size_t)shape_numel(&v->shape) * dtype_size(v->dtype);
    if (!exec_read(e, ids[i], host, v->dtype, d)) {
      ck_error(d, path, "cannot save checkpoint: reading \"%s\" from the backend failed", v->name);
      goto done;
    }
    if (!host_is_le()) swap32(host, nb);
    if (fwrite(host, 1, nb, f) != nb) goto write_error;
  }
  if (fflush(f) != 0 || fsync(fileno(f)) != 0) goto write_error;
  FILE *fc = f;
  f = NULL;
  if (fclose(fc) != 0) goto write_error;
  if (rename(tmp, path) != 0) {
    ck_error(d, path, "cannot rename %s over the checkpoint: %s", tmp, strerror(errno));
    goto done;
  }
  renamed = true;
  /* The rename is durable only once the directory is synced. Some file
   * systems refuse fsync on a directory (EINVAL): nothing more can be done. */
  {
    char *dir = dir_of(path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool synced = dfd >= 0 && (fsync(dfd) == 0 || errno == EINVAL);
    int err = errno;
    if (dfd >= 0) close(dfd);
    if (!synced)
      ck_error(d, path, "checkpoint written, but syncing directory %s failed: %s", dir,
               strerror(err));
    free(dir);
    if (!synced) goto done;
  }
  ok = true;
  goto done;
write_error:
  ck_error(d, path, "cannot write %s: %s", tmp, errno ? strerror(errno) : "I/O error");
done:
  if (f) fclose(f);
  if (!renamed) unlink(tmp);
  free(host);
  free(hdr);
  free(tmp);
  free(ids);
  return ok;
}

/* ---- load -------------------------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp((*(const CheckpointTensor *const *)a)->name,
                (*(const CheckpointTensor *const *)b)->name);
}

/* The tensor named `name` in `by_name` (sorted by name), or NULL. */
static const CheckpointTensor *find_tensor(const CheckpointTensor **by_name, int n,
                                           const char *name) {
  CheckpointTensor key = {.name = (char *)name};
  const CheckpointTensor *kp = &key;
  const CheckpointTensor **hit =
      bsearch(&kp, by_name, (size_t)n, sizeof(*by_name), cmp_tensor_name);
  return hit ? *hit : NULL;
}

typedef struct {
  ValueId v;
  const CheckpointTensor *t;
} LoadItem;

int checkpoint_load(const char *path, Exec *e, const CheckpointLoadOptions *opt,
                    CheckpointMeta *meta_out, Diag *d) {
  BC_ASSERT(path && e && opt);
  const Graph *g = e->graph;
  if (meta_out) checkpoint_meta_init(meta_out);
  CheckpointInfo info;
  FILE *f = NULL;
  int result = -1;
  const CheckpointTensor **by_name = NULL;
  bool *used = NULL;
  unsigned char *host = NULL;
  VEC(LoadItem) plan = {0};
  if (!open_checkpoint(path, &info, &f, d)) goto done;
  const CheckpointMeta *m = &info.meta;
  BC_ASSERT(opt->mode == CHECKPOINT_LOAD_ALL || opt->mode == CHECKPOINT_LOAD_PARAMS_PRESENT);
  /* model_bad: the tensors do not fit the graph (names, shapes, dtypes). */
  bool all = opt->mode == CHECKPOINT_LOAD_ALL, bad = false, model_bad = false;

  if (opt->expect_vocab_hash && *opt->expect_vocab_hash) {
    if (!m->vocab_hash || !*m->vocab_hash) {
      ck_error(d, path,
               "vocabulary mismatch: the checkpoint records no vocabulary hash, the current "
               "vocabulary's is \"%s\"",
               opt->expect_vocab_hash);
      bad = true;
    } else if (strcmp(m->vocab_hash, opt->expect_vocab_hash) != 0) {
      ck_error(d, path,
               "vocabulary mismatch: the checkpoint was trained with vocabulary hash \"%.80s\", "
               "the current vocabulary's is \"%s\"",
               m->vocab_hash, opt->expect_vocab_hash);
      bad = true;
    }
  }

  int nt = info.tensors.n;
  by_name = bc_malloc((size_t)(nt ? nt : 1) * sizeof(*by_name));
  for (int i = 0; i < nt; i++) by_name[i] = &info.tensors.data[i];
  qsort(by_name, (size_t)nt, sizeof(*by_name), cmp_tensor_name); /* names unique (parser) */
  used = bc_calloc((size_t)(nt ? nt : 1), sizeof(bool));

  int n_ids;
  ValueId *ids = saved_values(g, &n_ids);
  if (!all) n_ids = g->params.n; /* params come first */
  size_t max_bytes = 4;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    const CheckpointTensor *t = find_tensor(by_name, nt, v->name);
    if (!t) {
      if (all) {
        char sb[192];
        ck_error(d, path, "checkpoint has no tensor \"%s\" (%s %s %s of graph '%s')", v->name,
                 v->kind == VALUE_PARAM ? "parameter" : "state", dtype_name(v->dtype),
                 shape_str(&v->shape, sb), g->name ? g->name : "?");
        bad = model_bad = true;
      }
      continue;
    }
    used[t - info.tensors.data] = true;
    if (t->dtype != v->dtype || !shape_eq(&t->shape, &v->shape)) {
      char sf[192], sg[192];
      ck_error(d, path,
               "tensor \"%s\" is %s %s in the checkpoint but %s %s in graph '%s'", v->name,
               st_dtype_name(t->dtype), shape_str(&t->shape, sf), st_dtype_name(v->dtype),
               shape_str(&v->shape, sg), g->name ? g->name : "?");
      bad = model_bad = true;
      continue;
    }
    vec_push(&plan, ((LoadItem){ids[i], t}));
    size_t nb = (size_t)(t->end - t->begin);
    if (nb > max_bytes) max_bytes = nb;
  }
  free(ids);
  if (all) {
    for (int i = 0; i < nt; i++)
      if (!used[i]) {
        ck_error(d, path,
                 "checkpoint tensor \"%s\" is not a parameter or state of graph '%s' "
                 "(a different model?)",
                 info.tensors.data[i].name, g->name ? g->name : "?");
        bad = model_bad = true;
      }
  } else if (!bad && plan.n == 0) {
    ck_error(d, path,
             "none of the %d parameters of graph '%s' is in the checkpoint (%d tensors, graph "
             "'%s')",
             g->params.n, g->name ? g->name : "?", nt, m->graph_name ? m->graph_name : "?");
    bad = true;
  }
  if (model_bad) note_hparams(path, m->hparams_json, g, d);
  if (bad) goto done;

  /* Everything checked: now the data. The header fixed the file size, so a
   * short read here is an I/O error or a file changed under us. */
  host = bc_malloc(max_bytes);
  uint64_t data_start = 8 + info.header_bytes;
  for (int i = 0; i < plan.n; i++) {
    const CheckpointTensor *t = plan.data[i].t;
    size_t nb = (size_t)(t->end - t->begin);
    if (fseeko(f, (off_t)(data_start + t->begin), SEEK_SET) != 0 ||
        fread(host, 1, nb, f) != nb) {
      ck_error(d, path, "cannot read tensor \"%s\": %s", t->name,
               ferror(f) ? strerror(errno) : "file shorter than when its header was read");
      goto done;
    }
    if (!host_is_le()) swap32(host, nb);
    if (!exec_write(e, plan.data[i].v, host, t->dtype, d)) {
      ck_error(d, path, "cannot load tensor \"%s\" into the backend", t->name);
      goto done;
    }
  }
  result = plan.n;
done:
  if (meta_out) {
    *meta_out = info.meta;
    memset(&info.meta, 0, sizeof(info.meta));
  }
  if (f) fclose(f);
  checkpoint_info_free(&info);
  vec_free(&plan);
  free(host);
  free(used);
  free(by_name);
  return result;
}
