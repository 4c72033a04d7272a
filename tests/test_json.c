/* test_json.c — graph/json.h, the one JSON reader and writer: a written
 * document parses back to the same values and rewrites to the same bytes;
 * every escape and \u form decodes to the right UTF-8 (surrogate pairs
 * included); doubles written by json_write_double read back bit for bit;
 * integers up to 2^64-1 stay exact; bad input is refused with the message
 * and byte offset of the first bad byte; limits, duplicate keys and the
 * NaN/Infinity extension. */
#include "graph/json.h"
#include "test.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Parses s; on failure err says why. The tree lives in *arena. */
static bool parse(const char *s, const JsonOptions *opt, Arena *arena, JsonValue *v, JsonError *err) {
  return json_parse(s, strlen(s), opt, arena, v, err);
}

/* ---- round trip -------------------------------------------------------- */

TEST(round_trip) {
  StrBuf b = {0};
  strbuf_puts(&b, "{");
  json_write_key(&b, "name");
  json_write_string(&b, "tab\there \"q\" back\\slash\nnew\rret \x01 caf\xc3\xa9 \xf0\x9f\x98\x80");
  strbuf_puts(&b, ",");
  json_write_key(&b, "ints");
  strbuf_puts(&b, "[");
  json_write_int(&b, -9223372036854775807LL - 1);
  strbuf_puts(&b, ",");
  json_write_uint(&b, UINT64_MAX);
  strbuf_puts(&b, ",");
  json_write_int(&b, 0);
  strbuf_puts(&b, "],");
  json_write_key(&b, "x");
  json_write_double(&b, 0.1);
  strbuf_puts(&b, ",");
  json_write_key(&b, "f32");
  json_write_double_fmt(&b, "%.9g", (double)0.1f);
  strbuf_puts(&b, ",");
  json_write_key(&b, "gone");
  json_write_double(&b, NAN);
  strbuf_puts(&b, ",");
  json_write_key(&b, "e");
  strbuf_puts(&b, "{}}");
  CHECK_STR(b.data,
            "{\"name\":\"tab\\there \\\"q\\\" back\\\\slash\\nnew\\rret \\u0001 caf\xc3\xa9 "
            "\xf0\x9f\x98\x80\",\"ints\":[-9223372036854775808,18446744073709551615,0],"
            "\"x\":0.1,\"f32\":0.100000001,\"gone\":null,\"e\":{}}");

  Arena arena;
  arena_init(&arena);
  JsonValue v;
  JsonError err;
  CHECK_MSG(parse(b.data, NULL, &arena, &v, &err), "%s at %zu", err.msg, err.pos);
  CHECK(v.kind == JSON_OBJECT && v.n == 6);
  CHECK_STR(json_get(&v, "name")->str,
            "tab\there \"q\" back\\slash\nnew\rret \x01 caf\xc3\xa9 \xf0\x9f\x98\x80");
  const JsonValue *ints = json_get(&v, "ints");
  CHECK(ints && ints->kind == JSON_ARRAY && ints->n == 3);
  CHECK(!ints->items[0].is_uint);
  CHECK_STR(ints->items[0].str, "-9223372036854775808");
  CHECK(ints->items[1].is_uint && ints->items[1].u == UINT64_MAX);
  CHECK(ints->items[2].is_uint && ints->items[2].u == 0);
  CHECK(json_get(&v, "x")->num == 0.1);
  CHECK((float)json_get(&v, "f32")->num == 0.1f);
  CHECK(json_get(&v, "gone")->kind == JSON_NULL);
  CHECK(json_get(&v, "e")->kind == JSON_OBJECT && json_get(&v, "e")->n == 0);
  CHECK(json_get(&v, "missing") == NULL);
  CHECK(json_get(ints, "name") == NULL); /* not an object */
  /* keys in input order, each with the offset of its opening quote */
  CHECK_STR(v.keys[1], "ints");
  CHECK(b.data[v.key_pos[1]] == '"' && strncmp(b.data + v.key_pos[1], "\"ints\"", 6) == 0);
  CHECK(b.data[json_get(&v, "ints")->pos] == '[');

  /* written again from what was read: the same bytes */
  StrBuf c = {0};
  strbuf_puts(&c, "{");
  json_write_key(&c, v.keys[0]);
  json_write_string(&c, v.items[0].str);
  strbuf_puts(&c, ",");
  json_write_key(&c, v.keys[1]);
  strbuf_printf(&c, "[%s,", ints->items[0].str);
  json_write_uint(&c, ints->items[1].u);
  strbuf_puts(&c, ",");
  json_write_uint(&c, ints->items[2].u);
  strbuf_puts(&c, "],");
  json_write_key(&c, "x");
  json_write_double(&c, json_get(&v, "x")->num);
  strbuf_puts(&c, ",");
  json_write_key(&c, "f32");
  json_write_double_fmt(&c, "%.9g", json_get(&v, "f32")->num);
  strbuf_puts(&c, ",\"gone\":null,\"e\":{}}");
  CHECK_STR(c.data, b.data);
  strbuf_free(&b);
  strbuf_free(&c);
  arena_free(&arena);
}

/* ---- escapes ----------------------------------------------------------- */

TEST(escapes) {
  struct {
    const char *json, *want;
  } cases[] = {
      {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t"},
      {"\"\\u0041\\u007a\"", "Az"},
      {"\"\\u00e9\"", "\xc3\xa9"},          /* 2-byte UTF-8 */
      {"\"\\u00E9\"", "\xc3\xa9"},          /* upper-case hex */
      {"\"\\u0800\"", "\xe0\xa0\x80"},      /* smallest 3-byte */
      {"\"\\u20ac\"", "\xe2\x82\xac"},      /* euro sign */
      {"\"\\uffff\"", "\xef\xbf\xbf"},      /* largest 3-byte */
      {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80"}, /* surrogate pair: U+1F600 */
      {"\"\\ud800\\udc00\"", "\xf0\x90\x80\x80"}, /* U+10000 */
      {"\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf"}, /* U+10FFFF */
      {"\"\\u0001x\\u001f\"", "\x01x\x1f"},
      {"\"raw \xe2\x82\xac ok\"", "raw \xe2\x82\xac ok"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Arena arena;
    arena_init(&arena);
    JsonValue v;
    JsonError err;
    CHECK_MSG(parse(cases[i].json, NULL, &arena, &v, &err), "case %zu: %s", i, err.msg);
    CHECK_MSG(v.kind == JSON_STRING && strcmp(v.str, cases[i].want) == 0, "case %zu", i);
    arena_free(&arena);
  }
  /* the writer: control bytes, quotes, backslashes; UTF-8 passes as is */
  StrBuf b = {0};
  json_write_string(&b, "\x01\x08\x0c\x1f\"\\/\t\n\r\xc3\xa9");
  CHECK_STR(b.data, "\"\\u0001\\u0008\\u000c\\u001f\\\"\\\\/\\t\\n\\r\xc3\xa9\"");
  strbuf_free(&b);
  CHECK(json_utf8_valid("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  CHECK(!json_utf8_valid("\xc0\xaf"));         /* overlong */
  CHECK(!json_utf8_valid("\xed\xa0\x80"));     /* encoded surrogate */
  CHECK(!json_utf8_valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
  CHECK(!json_utf8_valid("\xe2\x82"));         /* cut short */
}

/* ---- numbers ----------------------------------------------------------- */

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* json_write_double then json_parse gives x back, bit for bit. */
static bool double_round_trips(double x, char *text, size_t cap) {
  StrBuf b = {0};
  json_write_double(&b, x);
  snprintf(text, cap, "%s", b.data);
  Arena arena;
  arena_init(&arena);
  JsonValue v;
  JsonError err;
  bool ok = json_parse(b.data, b.n, NULL, &arena, &v, &err) && v.kind == JSON_NUMBER &&
            same_bits(v.num, x);
  arena_free(&arena);
  strbuf_free(&b);
  return ok;
}

TEST(numbers) {
  static const double fixed[] = {0.0, -0.0, 1.0, -1.5, 0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 1e-300,
                                 4.9406564584124654e-324 /* smallest denormal */, DBL_MIN, DBL_MAX,
                                 -DBL_MAX, 9007199254740993.0, 123456789012345678.0, M_PI, M_E,
                                 0.1f, 1e22, 1e23, 5e-324, 2.2250738585072009e-308};
  char text[64];
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    CHECK_MSG(double_round_trips(fixed[i], text, sizeof text), "%.17g written as %s", fixed[i], text);
  /* 100,000 doubles from random bit patterns (finite ones) */
  uint64_t s = 0x9e3779b97f4a7c15ull;
  int n_bad = 0, n = 0;
  while (n < 100000) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    double x;
    memcpy(&x, &s, sizeof x);
    if (!isfinite(x)) continue;
    n++;
    if (!double_round_trips(x, text, sizeof text) && n_bad++ < 5)
      fprintf(stderr, "  %.17g written as %s\n", x, text);
  }
  CHECK_EQ_INT(n_bad, 0);
  /* the shortest form that round-trips, not always 17 digits */
  StrBuf b = {0};
  json_write_double(&b, 0.1);
  strbuf_puts(&b, " ");
  json_write_double(&b, 1e21);
  strbuf_puts(&b, " ");
  json_write_double(&b, INFINITY);
  strbuf_puts(&b, " ");
  json_write_double_fmt(&b, "%.3f", 12.3456);
  strbuf_puts(&b, " ");
  json_write_double_fmt(&b, "%.3f", -INFINITY);
  CHECK_STR(b.data, "0.1 1e+21 null 12.346 null");
  strbuf_free(&b);

  /* integers: is_uint only for plain non-negative integers below 2^64 */
  struct {
    const char *text;
    bool is_uint;
    uint64_t u;
    double num;
  } ints[] = {
      {"0", true, 0, 0},
      {"18446744073709551615", true, UINT64_MAX, 18446744073709551615.0},
      {"18446744073709551616", false, 0, 18446744073709551616.0},
      {"9007199254740993", true, 9007199254740993ull, 9007199254740992.0},
      {"-1", false, 0, -1},
      {"1.0", false, 0, 1},
      {"1e3", false, 0, 1000},
      {"-0", false, 0, -0.0},
      {"2E-2", false, 0, 0.02},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    Arena arena;
    arena_init(&arena);
    JsonValue v;
    JsonError err;
    CHECK_MSG(parse(ints[i].text, NULL, &arena, &v, &err), "%s: %s", ints[i].text, err.msg);
    CHECK_MSG(v.kind == JSON_NUMBER && v.is_uint == ints[i].is_uint && v.u == ints[i].u &&
                  same_bits(v.num, ints[i].num),
              "%s: is_uint %d u %llu num %.17g", ints[i].text, v.is_uint, (unsigned long long)v.u, v.num);
    CHECK_STR(v.str, ints[i].text);
    arena_free(&arena);
  }
}

/* ---- errors and their positions ---------------------------------------- */

TEST(errors_with_positions) {
  struct {
    const char *json, *msg;
    size_t pos;
  } cases[] = {
      {"", "unexpected end of the input", 0},
      {"  ", "unexpected end of the input", 2},
      {"{\"a\":1,}", "expected a key string, found '}'", 7},
      {"[1,2,]", "expected a value, found ']'", 5},
      {"{\"a\" 1}", "expected ':' after a key, found '1'", 5},
      {"{\"a\":1 \"b\":2}", "expected ',' or '}', found '\"'", 7},
      {"[1 2]", "expected ',' or ']', found '2'", 3},
      {"{\"a\":1} x", "unexpected 'x' after the JSON value", 8},
      {"{\"a\":1}\x01", "unexpected byte 0x01 after the JSON value", 7},
      {"[01]", "invalid number (leading zero)", 1},
      {"[1.]", "invalid number", 1},
      {"[.5]", "expected a value, found '.'", 1},
      {"[1e+]", "invalid number", 1},
      {"[-]", "invalid number", 1},
      {"[+1]", "expected a value, found '+'", 1},
      {"[tru]", "expected a value, found 't'", 1},
      {"[NaN]", "expected a value, found 'N'", 1},
      {"[Infinity]", "expected a value, found 'I'", 1},
      {"\"abc", "unterminated string", 0},
      {"[\"ab\\", "unterminated string", 1},
      {"\"a\tb\"", "control byte 0x09 inside a string", 2},
      {"\"a\\qb\"", "invalid escape in a string", 2},
      {"\"ab\\u12\"", "invalid \\u escape in a string", 3},
      {"\"ab\\u12g4\"", "invalid \\u escape in a string", 3},
      {"\"x\\udc00\"", "lone low surrogate \\udc00 in a string", 2},
      {"\"x\\ud800\"", "unpaired high surrogate \\ud800 in a string", 2},
      {"\"x\\ud800\\u0041\"", "unpaired high surrogate \\ud800 in a string", 2},
      {"\"x\\u0000\"", "\\u0000 inside a string is not supported", 2},
      {"\"ab\xff\"", "invalid UTF-8 inside a string", 3},
      {"\"ab\xc0\xaf\"", "invalid UTF-8 inside a string", 3},
      {"\"ab\xed\xa0\x80\"", "invalid UTF-8 inside a string", 3},
      {"{\"k\":1,\"j\":2,\"k\":3}", "duplicate key \"k\" in an object", 0},
      {"[1,{\"a\":{},\"a\":[]}]", "duplicate key \"a\" in an object", 3},
      {"/* c */ 1", "expected a value, found '/'", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Arena arena;
    arena_init(&arena);
    JsonValue v;
    JsonError err;
    CHECK_MSG(!parse(cases[i].json, NULL, &arena, &v, &err), "case %zu parsed", i);
    CHECK_MSG(strcmp(err.msg, cases[i].msg) == 0 && err.pos == cases[i].pos,
              "case %zu: want \"%s\" at %zu, got \"%s\" at %zu", i, cases[i].msg, cases[i].pos, err.msg,
              err.pos);
    arena_free(&arena);
  }
  /* only s[0, n) is read: a valid prefix followed by garbage, cut off */
  Arena arena;
  arena_init(&arena);
  JsonValue v;
  JsonError err;
  CHECK(json_parse("[1,2]garbage", 5, NULL, &arena, &v, &err) && v.n == 2);
  CHECK(!json_parse("\"ab\"", 3, NULL, &arena, &v, &err) && strcmp(err.msg, "unterminated string") == 0);
  arena_free(&arena);
}

/* ---- limits and the NaN/Infinity extension ------------------------------ */

TEST(limits_and_extension) {
  Arena arena;
  arena_init(&arena);
  JsonValue v;
  JsonError err;
  JsonOptions lim = {.max_depth = 3, .max_array = 4};
  CHECK(parse("[[[1]]]", &lim, &arena, &v, &err));
  CHECK(!parse("[[[[1]]]]", &lim, &arena, &v, &err));
  CHECK_STR(err.msg, "nesting deeper than 3 levels");
  CHECK_EQ_INT(err.pos, 3);
  CHECK(parse("[1,2,3,4]", &lim, &arena, &v, &err));
  CHECK(!parse("[1,2,3,4,5]", &lim, &arena, &v, &err));
  CHECK_STR(err.msg, "array longer than 4 items");
  char deep[200] = "";
  for (int i = 0; i < 65; i++) strcat(deep, "[");
  CHECK(!parse(deep, NULL, &arena, &v, &err)); /* the default depth: 64 */
  CHECK_STR(err.msg, "nesting deeper than 64 levels");

  JsonOptions ext = {.allow_nonfinite = true};
  CHECK(parse("[NaN, Infinity, -Infinity, -1, null]", &ext, &arena, &v, &err));
  CHECK(v.n == 5 && isnan(v.items[0].num) && v.items[1].num == INFINITY &&
        v.items[2].num == -INFINITY && v.items[3].num == -1 && v.items[4].kind == JSON_NULL);
  CHECK(v.items[0].kind == JSON_NUMBER && !v.items[0].is_uint);
  CHECK(!parse("[nan]", &ext, &arena, &v, &err)); /* the words are case-sensitive */
  CHECK(!parse("[-NaN]", &ext, &arena, &v, &err));
  CHECK(parse("{\"t\":true,\"f\":false}", NULL, &arena, &v, &err));
  CHECK(v.items[0].kind == JSON_BOOL && v.items[0].u == 1 && v.items[1].u == 0);
  arena_free(&arena);
}

TEST_MAIN()
