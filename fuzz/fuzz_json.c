/* fuzz_json.c — libFuzzer harness of graph/json.h's reader (safetensors
 * headers, config.json, metrics.jsonl, hparams): every input is parsed
 * strictly and with the NaN/Infinity extension under tight depth and array
 * limits; what parses is written back with the writer, and that text must
 * parse and write back to itself (a writer/reader disagreement aborts).
 * The input also goes through metrics_load as a metrics.jsonl file. */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "graph/json.h"
#include "tasks/report.h"

/* v as JSON text (numbers by their source text, which the reader keeps). */
static void write_value(StrBuf *b, const JsonValue *v) {
  switch (v->kind) {
  case JSON_NULL: strbuf_puts(b, "null"); break;
  case JSON_BOOL: strbuf_puts(b, v->u ? "true" : "false"); break;
  case JSON_NUMBER: strbuf_puts(b, v->str); break;
  case JSON_STRING: json_write_string(b, v->str); break;
  case JSON_ARRAY:
    strbuf_putc(b, '[');
    for (int i = 0; i < v->n; i++) {
      if (i) strbuf_putc(b, ',');
      write_value(b, &v->items[i]);
    }
    strbuf_putc(b, ']');
    break;
  case JSON_OBJECT:
    strbuf_putc(b, '{');
    for (int i = 0; i < v->n; i++) {
      if (i) strbuf_putc(b, ',');
      json_write_key(b, v->keys[i]);
      write_value(b, &v->items[i]);
    }
    strbuf_putc(b, '}');
    break;
  }
}

static void round_trip(const char *s, size_t n, const JsonOptions *opt) {
  Arena a;
  arena_init(&a);
  JsonValue root;
  JsonError err;
  if (json_parse(s, n, opt, &a, &root, &err)) {
    if (root.kind == JSON_OBJECT) (void)json_get(&root, "model_type");
    StrBuf b1 = {0};
    write_value(&b1, &root);
    Arena a2;
    arena_init(&a2);
    JsonValue again;
    if (!json_parse(b1.data, b1.n, opt, &a2, &again, &err)) {
      fprintf(stderr, "written JSON does not parse: %s at %zu\n%s\n", err.msg, err.pos, b1.data);
      abort();
    }
    StrBuf b2 = {0};
    write_value(&b2, &again);
    if (b1.n != b2.n || memcmp(b1.data, b2.data, b1.n) != 0) {
      fprintf(stderr, "JSON round trip differs:\n%s\n%s\n", b1.data, b2.data);
      abort();
    }
    strbuf_free(&b1);
    strbuf_free(&b2);
    arena_free(&a2);
  } else if (err.pos > n) {
    fprintf(stderr, "error offset %zu past the input (%zu bytes)\n", err.pos, n);
    abort();
  }
  arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  round_trip(s, size, NULL);
  round_trip(s, size, &(JsonOptions){.allow_nonfinite = true, .max_depth = 8, .max_array = 16});

  MetricsRecords recs = {0};
  Diag d;
  diag_init(&d);
  (void)metrics_load(fuzz_as_file(data, size), &recs, &d);
  vec_free(&recs);
  fuzz_diag_done(&d);
  return 0;
}
