/* metrics.c — metrics records and the metrics log of a training run
 * (report.h, metrics_*): one JSON object per line in <out>/metrics.jsonl,
 * written with graph/json.h, appended and flushed line by line while
 * training, read back and rewritten atomically (graph/fileio.h) when a run
 * resumes.
 *
 * Reading accepts what other writers of such logs produce too: spaces,
 * string and boolean fields (skipped), NaN/Infinity tokens. Numbers are
 * printed and parsed in the C locale (nothing here calls setlocale). Not
 * here: the progress line (progress.c), the plot (curves.c). */
#include "tasks/report.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "graph/fileio.h"
#include "graph/json.h"

static SrcLoc file_loc(const char *path) { return (SrcLoc){bc_intern(path), 0, 0}; }

/* ---- records --------------------------------------------------------- */

MetricsRecord metrics_record(int64_t step) {
  MetricsRecord r;
  memset(&r, 0, sizeof r);
  r.step = step;
  r.epoch = NAN;
  return r;
}

static int record_find(const MetricsRecord *r, const char *name) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->m[i].name, name) == 0) return i;
  return -1;
}

void metrics_record_set(MetricsRecord *r, const char *name, double v) {
  BC_ASSERT(strlen(name) < REPORT_NAME_MAX);
  int i = record_find(r, name);
  if (i < 0) {
    BC_ASSERT(r->n < REPORT_MAX_METRICS);
    i = r->n++;
    strcpy(r->m[i].name, name);
  }
  r->m[i].value = v;
}

double metrics_record_get(const MetricsRecord *r, const char *name) {
  int i = record_find(r, name);
  return i < 0 ? NAN : r->m[i].value;
}

bool metrics_record_has(const MetricsRecord *r, const char *name) {
  return record_find(r, name) >= 0;
}

/* ---- metrics.jsonl: writing ------------------------------------------ */

char *metrics_record_json(const MetricsRecord *r) {
  StrBuf b = {0};
  strbuf_puts(&b, "{");
  json_write_key(&b, "step");
  json_write_int(&b, r->step);
  if (!isnan(r->epoch)) {
    strbuf_puts(&b, ",");
    json_write_key(&b, "epoch");
    json_write_double_fmt(&b, "%.9g", r->epoch);
  }
  for (int i = 0; i < r->n; i++) {
    strbuf_puts(&b, ",");
    json_write_key(&b, r->m[i].name);
    json_write_double_fmt(&b, "%.9g", r->m[i].value); /* float32 values round-trip */
  }
  strbuf_puts(&b, ",");
  json_write_key(&b, "time_s");
  json_write_double_fmt(&b, "%.3f", r->time_s);
  strbuf_puts(&b, "}");
  return strbuf_take(&b);
}

bool metrics_rewrite(const char *path, const MetricsRecord *recs, int n, int64_t max_step,
                     Diag *d) {
  StrBuf b = {0};
  strbuf_puts(&b, "");
  for (int i = 0; i < n; i++) {
    if (recs[i].step > max_step) continue;
    char *line = metrics_record_json(&recs[i]);
    strbuf_printf(&b, "%s\n", line);
    free(line);
  }
  bool ok = file_write_atomic(path, b.data, b.n, d);
  strbuf_free(&b);
  return ok;
}

/* ---- metrics.jsonl: reading ------------------------------------------ */

/* An error at byte `pos` of the line (column pos + 1). */
static bool line_error(Diag *d, SrcLoc loc, size_t pos, const char *msg) {
  loc.col = (int)pos + 1;
  diag_error(d, loc, "metrics: %s", msg);
  return false;
}

/* One member of a record: step, epoch and time_s go to their fields, other
 * numbers (null = NaN) become metrics, strings and booleans are skipped. */
static bool take_member(MetricsRecord *r, const char *key, size_t key_pos, const JsonValue *v,
                        bool *have_step, SrcLoc loc, Diag *d) {
  if (v->kind == JSON_ARRAY || v->kind == JSON_OBJECT)
    return line_error(d, loc, v->pos, "nested values are not supported");
  if (v->kind != JSON_NUMBER && v->kind != JSON_NULL) return true;
  double x = v->kind == JSON_NULL ? NAN : v->num;
  if (strcmp(key, "step") == 0) {
    if (!(x >= 0 && x < 9e18 && x == floor(x)))
      return line_error(d, loc, v->pos, "\"step\" must be a whole number >= 0");
    r->step = (int64_t)x;
    *have_step = true;
  } else if (strcmp(key, "epoch") == 0) {
    r->epoch = x;
  } else if (strcmp(key, "time_s") == 0) {
    r->time_s = x;
  } else if (strlen(key) >= REPORT_NAME_MAX) {
    return line_error(d, loc, key_pos, "metric name too long");
  } else if (record_find(r, key) < 0 && r->n == REPORT_MAX_METRICS) {
    return line_error(d, loc, key_pos, "too many metrics in one record");
  } else {
    metrics_record_set(r, key, x);
  }
  return true;
}

bool metrics_parse_line(const char *line, MetricsRecord *r, SrcLoc loc, Diag *d) {
  static const JsonOptions opt = {.allow_nonfinite = true};
  *r = metrics_record(0);
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  bool ok = false, have_step = false;
  if (!json_parse(line, strlen(line), &opt, &arena, &root, &err)) {
    line_error(d, loc, err.pos, err.msg);
    goto done;
  }
  if (root.kind != JSON_OBJECT) {
    line_error(d, loc, root.pos, "expected '{'");
    goto done;
  }
  for (int i = 0; i < root.n; i++)
    if (!take_member(r, root.keys[i], root.key_pos[i], &root.items[i], &have_step, loc, d))
      goto done;
  if (!have_step) {
    line_error(d, loc, 0, "record has no \"step\"");
    goto done;
  }
  ok = true;
done:
  arena_free(&arena);
  return ok;
}

bool metrics_load(const char *path, MetricsRecords *out, Diag *d) {
  FILE *probe = fopen(path, "rb");
  if (!probe) {
    if (errno == ENOENT) return true;
    diag_error(d, file_loc(path), "cannot open file: %s", strerror(errno));
    return false;
  }
  fclose(probe);
  size_t n_bytes;
  char *text = bc_read_file(path, &n_bytes, d);
  if (!text) return false;
  bool ok = true;
  int line_no = 0;
  for (char *s = text; s < text + n_bytes && ok;) {
    char *nl = memchr(s, '\n', (size_t)(text + n_bytes - s));
    bool terminated = nl != NULL;
    char *end = nl ? nl : text + n_bytes;
    *end = '\0';
    line_no++;
    const char *t = s;
    while (*t == ' ' || *t == '\t' || *t == '\r') t++;
    if (*t) {
      MetricsRecord r;
      SrcLoc loc = {bc_intern(path), line_no, 0};
      if (terminated) {
        ok = metrics_parse_line(s, &r, loc, d);
        if (ok) vec_push(out, r);
      } else {
        /* the last line of a run killed while writing it: keep it only
         * when it is whole */
        Diag scratch;
        diag_init(&scratch);
        if (metrics_parse_line(s, &r, loc, &scratch)) vec_push(out, r);
        diag_free(&scratch);
      }
    }
    s = end + 1;
  }
  free(text);
  return ok;
}

/* ---- the log of a run ------------------------------------------------ */

bool metrics_log_open(MetricsLog *log, const char *dir, int64_t keep_through_step, Diag *d) {
  memset(log, 0, sizeof *log);
  char *path = bc_asprintf("%s/metrics.jsonl", dir);
  MetricsRecords recs = {0};
  if (keep_through_step >= 0 && !metrics_load(path, &recs, d)) goto fail;
  int kept = 0;
  for (int i = 0; i < recs.n; i++)
    if (recs.data[i].step <= keep_through_step) recs.data[kept++] = recs.data[i];
  recs.n = kept;
  if (!metrics_rewrite(path, recs.data, recs.n, INT64_MAX, d)) goto fail;
  log->f = fopen(path, "ab");
  if (!log->f) {
    diag_error(d, file_loc(path), "cannot open file for appending: %s", strerror(errno));
    goto fail;
  }
  log->path = path;
  log->dir = bc_strdup(dir);
  log->records = recs;
  return true;
fail:
  free(path);
  vec_free(&recs);
  return false;
}

bool metrics_log_append(MetricsLog *log, const MetricsRecord *r, Diag *d) {
  BC_ASSERT(log->f);
  char *line = metrics_record_json(r);
  errno = 0;
  bool ok = fprintf(log->f, "%s\n", line) >= 0 && fflush(log->f) == 0;
  free(line);
  if (!ok) {
    diag_error(d, file_loc(log->path), "cannot write: %s", strerror(errno ? errno : EIO));
    return false;
  }
  vec_push(&log->records, *r);
  return true;
}

bool metrics_log_plot(const MetricsLog *log, const char *title, Diag *d) {
  char *path = bc_asprintf("%s/curves.svg", log->dir);
  CurvesConfig c = {.title = title};
  bool ok = curves_write_svg(path, log->records.data, log->records.n, &c, d);
  free(path);
  return ok;
}

void metrics_log_close(MetricsLog *log) {
  if (log->f) fclose(log->f);
  free(log->path);
  free(log->dir);
  vec_free(&log->records);
  memset(log, 0, sizeof *log);
}
