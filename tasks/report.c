/* report.c — progress lines, metrics.jsonl and curves.svg of a training run
 * (report.h says what each part promises).
 *
 * Three prefixes in one file, because they share MetricsRecord and exist to
 * serve one loop: progress_ (windows and lines), metrics_ (JSON lines),
 * curves_ (SVG). Invariants: a terminal line is the only place a control
 * character is written, and only when the Progress is in terminal mode;
 * every file is either appended line by line and flushed (metrics.jsonl
 * while training) or replaced whole by report_write_atomic. Numbers are
 * printed and parsed in the C locale (nothing here calls setlocale). */
#include "tasks/report.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers --------------------------------------------------- */

typedef VEC(char) Buf;

static void bputs(Buf *b, const char *s) {
  int n = (int)strlen(s);
  vec_reserve(b, b->n + n + 1);
  memcpy(b->data + b->n, s, (size_t)n + 1);
  b->n += n;
}

static void bputf(Buf *b, const char *fmt, ...) BC_PRINTF(2, 3);
static void bputf(Buf *b, const char *fmt, ...) {
  va_list ap, aq;
  va_start(ap, fmt);
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  vec_reserve(b, b->n + n + 1);
  vsnprintf(b->data + b->n, (size_t)n + 1, fmt, aq);
  va_end(aq);
  b->n += n;
}

/* A fixed-point number, or "nan"/"inf"/"-inf" (printf may write "-nan"). */
static void fmt_fixed(char *buf, size_t cap, double v, int decimals) {
  if (isnan(v))
    snprintf(buf, cap, "nan");
  else if (isinf(v))
    snprintf(buf, cap, v > 0 ? "inf" : "-inf");
  else
    snprintf(buf, cap, "%.*f", decimals, v);
}

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

/* ---- progress -------------------------------------------------------- */

struct Progress {
  FILE *f;
  ProgressConfig c;
  char *task;
  bool tty;
  double t_start;
  int64_t step;           /* last step seen */
  int64_t total_examples; /* this run */
  bool have_first;        /* ETA is measured from the first update, so */
  int64_t first_step;     /* a slow first step (warm-up, lazy loading) */
  double t_first;         /* does not inflate it */
  /* the current window: sums weighted by examples */
  double t_window, w_weight, w_loss, w_acc;
  int64_t w_steps, w_examples;
  int n_extra;
  char extra_name[PROGRESS_MAX_EXTRA][REPORT_NAME_MAX];
  double w_extra[PROGRESS_MAX_EXTRA], w_extra_weight[PROGRESS_MAX_EXTRA];
  MetricsRecord rec; /* the last closed window */
  bool have_rec;
  double t_drawn; /* terminal: when the line was last drawn */
  bool drawn;     /* terminal: a progress line is on screen */
  char line[512]; /* terminal: what is on screen (for progress_log) */
};

static double monotonic_s(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(const Progress *p) { return p->c.clock(p->c.clock_ctx); }

static bool detect_tty(FILE *f) {
  if (!f) return false;
  int fd = fileno(f);
  if (fd < 0 || !isatty(fd)) return false;
  const char *term = getenv("TERM");
  return !(term && strcmp(term, "dumb") == 0);
}

Progress *progress_start(FILE *f, const ProgressConfig *c) {
  Progress *p = bc_calloc(1, sizeof *p);
  p->f = f;
  p->c = *c;
  p->task = bc_strdup(c->task ? c->task : "train");
  p->c.task = p->task;
  if (!p->c.clock) p->c.clock = monotonic_s;
  if (p->c.every_s == 0) p->c.every_s = 10;
  if (p->c.redraw_s <= 0) p->c.redraw_s = 0.1;
  p->tty = f && (c->mode == PROGRESS_TERMINAL || (c->mode == PROGRESS_AUTO && detect_tty(f)));
  p->t_start = now_s(p);
  p->t_window = p->t_start;
  p->step = c->start_step;
  return p;
}

bool progress_is_terminal(const Progress *p) { return p->tty; }

/* The record of the current window (not closed) at time `now`. */
static MetricsRecord window_record(const Progress *p, double now) {
  MetricsRecord r = metrics_record(p->step);
  if (p->c.steps_per_epoch > 0) r.epoch = (double)p->step / (double)p->c.steps_per_epoch;
  r.time_s = p->c.time_offset_s + (now - p->t_start);
  if (p->w_steps == 0) return r;
  metrics_record_set(&r, "loss", p->w_loss / p->w_weight);
  for (int i = 0; i < p->n_extra; i++)
    if (p->w_extra_weight[i] > 0)
      metrics_record_set(&r, p->extra_name[i], p->w_extra[i] / p->w_extra_weight[i]);
  if (p->c.has_acc) metrics_record_set(&r, "train_acc", p->w_acc / p->w_weight);
  double dt = now - p->t_window;
  metrics_record_set(&r, "examples_per_s", dt > 0 ? (double)p->w_examples / dt : NAN);
  return r;
}

void progress_format_hms(double seconds, char buf[24]) {
  if (!isfinite(seconds) || seconds < 0 || seconds > 1e15) {
    snprintf(buf, 24, "-:--:--");
    return;
  }
  unsigned long long s = (unsigned long long)seconds;
  snprintf(buf, 24, "%llu:%02u:%02u", s / 3600, (unsigned)(s / 60 % 60), (unsigned)(s % 60));
}

/* "<task> <position> loss .. <extras> acc ..% ex/s .. elapsed .. eta ..":
 * the numbers from `r` (a window), the times from `now`. */
static void format_line(const Progress *p, const MetricsRecord *r, double now, char *buf,
                        size_t cap) {
  Buf b = {0};
  char num[64], hms[24];
  const ProgressConfig *c = &p->c;
  int64_t s = p->step;
  bputs(&b, p->task);
  if (c->steps_per_epoch > 0) {
    int64_t e = s > 0 ? (s - 1) / c->steps_per_epoch + 1 : 1;
    int64_t bt = s > 0 ? (s - 1) % c->steps_per_epoch + 1 : 0;
    bputf(&b, " epoch %lld", (long long)e);
    if (c->total_steps > 0)
      bputf(&b, "/%lld",
            (long long)((c->total_steps + c->steps_per_epoch - 1) / c->steps_per_epoch));
    bputf(&b, " batch %lld/%lld", (long long)bt, (long long)c->steps_per_epoch);
  } else {
    bputf(&b, " step %lld", (long long)s);
    if (c->total_steps > 0) bputf(&b, "/%lld", (long long)c->total_steps);
  }
  for (int i = 0; i < r->n; i++) {
    const Metric *m = &r->m[i];
    if (strcmp(m->name, "train_acc") == 0) {
      fmt_fixed(num, sizeof num, 100 * m->value, 2);
      bputf(&b, " acc %s%%", num);
    } else if (strcmp(m->name, "examples_per_s") == 0) {
      fmt_fixed(num, sizeof num, m->value, 1);
      bputf(&b, " ex/s %s", num);
    } else {
      fmt_fixed(num, sizeof num, m->value, 4);
      bputf(&b, " %s %s", m->name, num);
    }
  }
  progress_format_hms(now - p->t_start, hms);
  bputf(&b, " elapsed %s", hms);
  if (c->total_steps > 0) {
    double eta = NAN;
    if (s >= c->total_steps)
      eta = 0;
    else if (p->have_first && s > p->first_step && now > p->t_first)
      eta = (double)(c->total_steps - s) * (now - p->t_first) / (double)(s - p->first_step);
    progress_format_hms(eta, hms);
    bputf(&b, " eta %s", hms);
  }
  snprintf(buf, cap, "%s", b.data);
  vec_free(&b);
}

/* What the terminal line shows: the current window, or right after one
 * closed, the closed one, so the numbers never blank out. */
static MetricsRecord shown_record(const Progress *p, double now) {
  if (p->w_steps == 0 && p->have_rec) return p->rec;
  return window_record(p, now);
}

void progress_format_line(const Progress *p, char *buf, size_t cap) {
  double now = now_s(p);
  MetricsRecord r = shown_record(p, now);
  format_line(p, &r, now, buf, cap);
}

static int terminal_columns(const Progress *p) {
  if (p->c.columns > 0) return p->c.columns;
  struct winsize ws;
  int fd = fileno(p->f);
  if (fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  const char *env = getenv("COLUMNS");
  return env ? atoi(env) : 0;
}

/* Terminal: rewrite the line in place. Cut to columns-1 so it never wraps
 * (a wrapped line cannot be rewritten with '\r'). */
static void draw(Progress *p, const MetricsRecord *r, double now) {
  format_line(p, r, now, p->line, sizeof p->line);
  int cols = terminal_columns(p);
  if (cols > 1 && strlen(p->line) > (size_t)(cols - 1)) p->line[cols - 1] = '\0';
  fprintf(p->f, "\r%s\033[K", p->line);
  fflush(p->f);
  p->drawn = true;
  p->t_drawn = now;
}

static const MetricsRecord *close_window(Progress *p, double now) {
  if (p->w_steps == 0) return NULL;
  p->rec = window_record(p, now);
  p->have_rec = true;
  if (p->f) {
    if (p->tty) {
      draw(p, &p->rec, now);
    } else {
      char line[512];
      format_line(p, &p->rec, now, line, sizeof line);
      fprintf(p->f, "%s\n", line);
      fflush(p->f);
    }
  }
  p->t_window = now;
  p->w_weight = p->w_loss = p->w_acc = 0;
  p->w_steps = p->w_examples = 0;
  for (int i = 0; i < p->n_extra; i++) p->w_extra[i] = p->w_extra_weight[i] = 0;
  return &p->rec;
}

const MetricsRecord *progress_update(Progress *p, int64_t step, const Metrics *m) {
  BC_ASSERT(step > p->step);
  BC_ASSERT(m->n_extra >= 0 && m->n_extra <= PROGRESS_MAX_EXTRA);
  double now = now_s(p);
  if (!p->have_first) {
    p->have_first = true;
    p->first_step = step;
    p->t_first = now;
  }
  p->step = step;
  double w = m->n_examples > 0 ? (double)m->n_examples : 1.0;
  p->w_weight += w;
  p->w_loss += w * m->loss;
  if (p->c.has_acc) p->w_acc += w * m->acc;
  for (int j = 0; j < m->n_extra; j++) {
    const char *name = m->extra[j].name;
    int i = 0;
    while (i < p->n_extra && strcmp(p->extra_name[i], name) != 0) i++;
    if (i == p->n_extra) {
      BC_ASSERT(p->n_extra < PROGRESS_MAX_EXTRA && strlen(name) < REPORT_NAME_MAX);
      strcpy(p->extra_name[p->n_extra++], name);
    }
    p->w_extra[i] += w * m->extra[j].value;
    p->w_extra_weight[i] += w;
  }
  p->w_steps++;
  if (m->n_examples > 0) {
    p->w_examples += m->n_examples;
    p->total_examples += m->n_examples;
  }
  const ProgressConfig *c = &p->c;
  bool close = (c->every_steps > 0 && step % c->every_steps == 0) ||
               (c->every_s > 0 && now - p->t_window >= c->every_s) ||
               (c->total_steps > 0 && step >= c->total_steps);
  if (close) return close_window(p, now);
  if (p->tty && (!p->drawn || now - p->t_drawn >= c->redraw_s)) {
    MetricsRecord r = window_record(p, now);
    draw(p, &r, now);
  }
  return NULL;
}

const MetricsRecord *progress_flush(Progress *p) { return close_window(p, now_s(p)); }

void progress_log(Progress *p, const char *fmt, ...) {
  if (!p->f) return;
  if (p->tty && p->drawn) fputs("\r\033[K", p->f);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->f, fmt, ap);
  va_end(ap);
  fputc('\n', p->f);
  if (p->tty && p->drawn) fprintf(p->f, "%s\033[K", p->line);
  fflush(p->f);
}

void progress_finish(Progress *p, const char *summary) {
  if (!p) return;
  double now = now_s(p);
  close_window(p, now);
  if (p->f) {
    if (p->tty && p->drawn) fputc('\n', p->f);
    char hms[24], num[64];
    double dt = now - p->t_start;
    progress_format_hms(dt, hms);
    fprintf(p->f, "%s done: %lld steps in %s", p->task, (long long)(p->step - p->c.start_step),
            hms);
    if (dt > 0) {
      fmt_fixed(num, sizeof num, (double)p->total_examples / dt, 1);
      fprintf(p->f, ", %s ex/s", num);
    }
    if (summary && *summary) fprintf(p->f, "; %s", summary);
    fputc('\n', p->f);
    fflush(p->f);
  }
  free(p->task);
  free(p);
}

/* ---- files ----------------------------------------------------------- */

bool report_write_atomic(const char *path, const char *data, size_t n, Diag *d) {
  char *tmp = bc_asprintf("%s.tmp.%ld", path, (long)getpid());
  bool ok = false;
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    diag_error(d, file_loc(path), "cannot create %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  bool wrote = fwrite(data, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  if (fclose(f) != 0 && wrote) {
    wrote = false;
    err = errno;
  }
  if (!wrote) {
    diag_error(d, file_loc(path), "cannot write %s: %s", tmp, strerror(err));
    remove(tmp);
    goto cleanup;
  }
  if (rename(tmp, path) != 0) {
    diag_error(d, file_loc(path), "cannot rename %s to it: %s", tmp, strerror(errno));
    remove(tmp);
    goto cleanup;
  }
  ok = true;
cleanup:
  free(tmp);
  return ok;
}

/* ---- metrics.jsonl: writing ------------------------------------------ */

static void json_string(Buf *b, const char *s) {
  bputs(b, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\')
      bputf(b, "\\%c", *c);
    else if (*c < 0x20)
      bputf(b, "\\u%04x", *c);
    else
      bputf(b, "%c", *c);
  }
  bputs(b, "\"");
}

static void json_number(Buf *b, double v, const char *fmt) {
  if (!isfinite(v))
    bputs(b, "null");
  else
    bputf(b, fmt, v);
}

char *metrics_record_json(const MetricsRecord *r) {
  Buf b = {0};
  bputf(&b, "{\"step\":%lld", (long long)r->step);
  if (!isnan(r->epoch)) {
    bputs(&b, ",\"epoch\":");
    json_number(&b, r->epoch, "%.9g");
  }
  for (int i = 0; i < r->n; i++) {
    bputs(&b, ",");
    json_string(&b, r->m[i].name);
    bputs(&b, ":");
    json_number(&b, r->m[i].value, "%.9g");
  }
  bputs(&b, ",\"time_s\":");
  json_number(&b, r->time_s, "%.3f");
  bputs(&b, "}");
  return b.data;
}

bool metrics_rewrite(const char *path, const MetricsRecord *recs, int n, int64_t max_step,
                     Diag *d) {
  Buf b = {0};
  bputs(&b, "");
  for (int i = 0; i < n; i++) {
    if (recs[i].step > max_step) continue;
    char *line = metrics_record_json(&recs[i]);
    bputf(&b, "%s\n", line);
    free(line);
  }
  bool ok = report_write_atomic(path, b.data, (size_t)b.n, d);
  vec_free(&b);
  return ok;
}

/* ---- metrics.jsonl: reading ------------------------------------------ */

/* A cursor over one line; errors point at its column. */
typedef struct {
  const char *start, *s;
  SrcLoc loc;
  Diag *d;
} Json;

static void jws(Json *j) {
  while (*j->s == ' ' || *j->s == '\t' || *j->s == '\r') j->s++;
}

static bool jerr(Json *j, const char *msg) {
  SrcLoc at = j->loc;
  at.col = (int)(j->s - j->start) + 1;
  diag_error(j->d, at, "metrics: %s", msg);
  return false;
}

static bool jlit(Json *j, const char *lit) {
  size_t n = strlen(lit);
  if (strncmp(j->s, lit, n) != 0) return false;
  j->s += n;
  return true;
}

/* A string into out (at most cap-1 bytes kept; *too_long set past that).
 * \u escapes outside ASCII become '?': keys we write are ASCII. */
static bool jstring(Json *j, char *out, size_t cap, bool *too_long) {
  size_t n = 0;
  *too_long = false;
  if (*j->s != '"') return jerr(j, "expected a string");
  j->s++;
  while (*j->s != '"') {
    char c = *j->s;
    if (c == '\0') return jerr(j, "unterminated string");
    if ((unsigned char)c < 0x20) return jerr(j, "control character in a string");
    if (c == '\\') {
      j->s++;
      static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
      const char *hit = *j->s ? strchr(from, *j->s) : NULL;
      if (hit) {
        c = to[hit - from];
      } else if (*j->s == 'u') {
        unsigned v = 0;
        for (int k = 1; k <= 4; k++) {
          char h = j->s[k];
          int dig = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
          if (dig < 0) return jerr(j, "bad \\u escape");
          v = v * 16 + (unsigned)dig;
        }
        j->s += 4;
        c = v < 0x80 ? (char)v : '?';
      } else {
        return jerr(j, "bad escape in a string");
      }
    }
    if (n + 1 < cap)
      out[n++] = c;
    else
      *too_long = true;
    j->s++;
  }
  j->s++;
  out[n] = '\0';
  return true;
}

/* A value: *is_num tells a number (or null/NaN/Infinity, as NaN/inf) from a
 * string or boolean, which are skipped. */
static bool jvalue(Json *j, double *v, bool *is_num) {
  *is_num = true;
  char c = *j->s;
  if (c == '"') {
    char skip[8];
    bool long_;
    *is_num = false;
    return jstring(j, skip, sizeof skip, &long_);
  }
  if (jlit(j, "true") || jlit(j, "false")) {
    *is_num = false;
    return true;
  }
  if (jlit(j, "null") || jlit(j, "NaN")) {
    *v = NAN;
    return true;
  }
  if (jlit(j, "Infinity")) {
    *v = INFINITY;
    return true;
  }
  if (jlit(j, "-Infinity")) {
    *v = -INFINITY;
    return true;
  }
  if (c == '{' || c == '[') return jerr(j, "nested values are not supported");
  if (c == '-' || (c >= '0' && c <= '9')) {
    char *end;
    *v = strtod(j->s, &end);
    if (end == j->s) return jerr(j, "bad number");
    j->s = end;
    return true;
  }
  return jerr(j, "expected a value");
}

bool metrics_parse_line(const char *line, MetricsRecord *r, SrcLoc loc, Diag *d) {
  Json j = {line, line, loc, d};
  *r = metrics_record(0);
  bool have_step = false;
  jws(&j);
  if (*j.s != '{') return jerr(&j, "expected '{'");
  j.s++;
  jws(&j);
  if (*j.s == '}') {
    j.s++;
  } else {
    for (;;) {
      char key[64];
      bool too_long, is_num;
      double v = NAN;
      jws(&j);
      const char *key_at = j.s;
      if (!jstring(&j, key, sizeof key, &too_long)) return false;
      jws(&j);
      if (*j.s != ':') return jerr(&j, "expected ':'");
      j.s++;
      jws(&j);
      const char *value_at = j.s;
      if (!jvalue(&j, &v, &is_num)) return false;
      if (is_num) {
        if (strcmp(key, "step") == 0) {
          if (!(v >= 0 && v < 9e18 && v == floor(v))) {
            j.s = value_at;
            return jerr(&j, "\"step\" must be a whole number >= 0");
          }
          r->step = (int64_t)v;
          have_step = true;
        } else if (strcmp(key, "epoch") == 0) {
          r->epoch = v;
        } else if (strcmp(key, "time_s") == 0) {
          r->time_s = v;
        } else if (too_long || strlen(key) >= REPORT_NAME_MAX) {
          j.s = key_at;
          return jerr(&j, "metric name too long");
        } else if (record_find(r, key) < 0 && r->n == REPORT_MAX_METRICS) {
          j.s = key_at;
          return jerr(&j, "too many metrics in one record");
        } else {
          metrics_record_set(r, key, v);
        }
      }
      jws(&j);
      if (*j.s == ',') {
        j.s++;
        continue;
      }
      if (*j.s == '}') {
        j.s++;
        break;
      }
      return jerr(&j, "expected ',' or '}'");
    }
  }
  jws(&j);
  if (*j.s != '\0') return jerr(&j, "text after the record");
  if (!have_step) {
    j.s = line;
    return jerr(&j, "record has no \"step\"");
  }
  return true;
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

/* ---- curves.svg ------------------------------------------------------ */

enum { PANEL_LOSS, PANEL_ACC, N_PANELS };

typedef struct {
  char name[REPORT_NAME_MAX];
  int panel;
  VEC(double) x;
  VEC(double) y; /* NaN/inf = gap */
} Series;

typedef VEC(Series) SeriesList;

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Series longer than this are averaged over consecutive buckets: a browser
 * draws 2,000 points at once, and a plot cannot show more anyway. */
enum { CURVES_MAX_POINTS = 2000, CURVES_BUCKETS = 1000 };

static void decimate(Series *s) {
  if (s->x.n <= CURVES_MAX_POINTS) return;
  int k = (s->x.n + CURVES_BUCKETS - 1) / CURVES_BUCKETS, n = 0;
  for (int i = 0; i < s->x.n; i += k) {
    int e = i + k < s->x.n ? i + k : s->x.n;
    double sx = 0, sy = 0;
    for (int t = i; t < e; t++) sx += s->x.data[t], sy += s->y.data[t];
    s->x.data[n] = sx / (e - i);
    s->y.data[n] = sy / (e - i); /* a non-finite value keeps its gap */
    n++;
  }
  s->x.n = s->y.n = n;
}

typedef struct {
  double lo, hi, step; /* tick multiples from lo to hi */
} Axis;

/* Ticks at 1, 2 or 5 times a power of ten, about five of them, the range
 * widened to whole ticks. A degenerate or non-finite range becomes [v-1, v+1]
 * or [0, 1]. */
static Axis nice_axis(double lo, double hi) {
  if (!isfinite(lo) || !isfinite(hi) || lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-12 * (fabs(lo) + fabs(hi)) || hi == lo) {
    double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
    lo -= pad, hi += pad;
  }
  if (!isfinite(hi - lo)) lo = 0, hi = 1;
  double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  return (Axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

/* Tick intervals of an axis (ticks are lo + k * step, k = 0..n). */
static int n_ticks(const Axis *a) { return (int)lround((a->hi - a->lo) / a->step); }

/* A tick label: decimals from the tick step; "k"/"M" for big numbers;
 * `scale` 100 turns fractions into percent. */
static void tick_label(char *buf, size_t cap, double v, const Axis *a, double scale) {
  double step = a->step * scale, big = fmax(fabs(a->lo), fabs(a->hi)) * scale;
  const char *unit = "";
  v *= scale;
  if (big >= 1e12 || (big > 0 && big < 1e-6)) { /* absurd ranges: short, if not pretty */
    snprintf(buf, cap, "%.3g", v);
    return;
  }
  if (big >= 1e7)
    v /= 1e6, step /= 1e6, unit = "M";
  else if (big >= 1e4)
    v /= 1e3, step /= 1e3, unit = "k";
  int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  if (dec > 9) dec = 9;
  if (fabs(v) < step * 1e-6) v = 0, unit = ""; /* no "-0", no "0k" */
  snprintf(buf, cap, "%.*f%s%s", dec, v, unit, scale == 100 ? "%" : "");
}

static void svg_text(Buf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '&':
        bputs(b, "&amp;");
        break;
      case '<':
        bputs(b, "&lt;");
        break;
      case '>':
        bputs(b, "&gt;");
        break;
      case '"':
        bputs(b, "&quot;");
        break;
      case '\'':
        bputs(b, "&apos;");
        break;
      default:
        /* XML 1.0 forbids most control characters even escaped */
        if ((unsigned char)*s >= 0x20) bputf(b, "%c", *s);
    }
  }
}

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

typedef struct {
  double x0, x1, y0, y1; /* plot area in pixels (y0 top) */
  Axis xa, ya;
} Frame;

static double px(const Frame *f, double x) {
  return f->x0 + (x - f->xa.lo) / (f->xa.hi - f->xa.lo) * (f->x1 - f->x0);
}
static double py(const Frame *f, double y) {
  return f->y1 - (y - f->ya.lo) / (f->ya.hi - f->ya.lo) * (f->y1 - f->y0);
}

static void draw_panel(Buf *b, const SeriesList *sl, int panel, const Frame *f, const char *xlabel,
                       int id) {
  static const char *const ylabels[N_PANELS] = {"loss", "accuracy"};
  double yscale = panel == PANEL_ACC ? 100 : 1;
  char lab[64];
  bputf(b, "<g class=\"panel-%s\">\n", ylabels[panel]);
  bputf(b,
        "<clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"%.1f\"/></clipPath>\n",
        id, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
  /* grid and tick labels */
  for (int k = 0; k <= n_ticks(&f->xa); k++) {
    double t = f->xa.lo + k * f->xa.step, x = px(f, t);
    tick_label(lab, sizeof lab, t, &f->xa, 1);
    bputf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", x,
          f->y0, x, f->y1);
    bputf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x, f->y1,
          x, f->y1 + 5);
    bputf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, f->y1 + 18, lab);
  }
  for (int k = 0; k <= n_ticks(&f->ya); k++) {
    double t = f->ya.lo + k * f->ya.step, y = py(f, t);
    tick_label(lab, sizeof lab, t, &f->ya, yscale);
    bputf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", f->x0,
          y, f->x1, y);
    bputf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", f->x0 - 5,
          y, f->x0, y);
    bputf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", f->x0 - 8, y + 4, lab);
  }
  bputf(b,
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
        "stroke=\"#333\"/>\n",
        f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
  bputf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", (f->x0 + f->x1) / 2,
        f->y1 + 36, xlabel);
  double ly = (f->y0 + f->y1) / 2;
  bputf(b,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f "
        "%.1f)\">%s</text>\n",
        f->x0 - 52, ly, f->x0 - 52, ly, panel == PANEL_ACC ? "accuracy (%)" : "loss");
  /* curves: one polyline per run of finite points; a lone point or a short
   * series gets dots so it shows at all */
  int n_drawn = 0, n_finite = 0;
  for (int i = 0; i < sl->n; i++) {
    const Series *s = &sl->data[i];
    if (s->panel != panel) continue;
    const char *color = palette[n_drawn % 10];
    bool dots = s->x.n <= 60;
    bputf(b, "<g clip-path=\"url(#clip%d)\" stroke=\"%s\" fill=\"%s\">\n", id, color, color);
    for (int k = 0; k < s->x.n;) {
      if (!isfinite(s->y.data[k])) {
        k++;
        continue;
      }
      int e = k;
      while (e < s->x.n && isfinite(s->y.data[e])) e++;
      n_finite += e - k;
      if (e - k > 1) {
        bputs(b,
              "<polyline fill=\"none\" stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"");
        for (int t = k; t < e; t++)
          bputf(b, "%s%.1f,%.1f", t > k ? " " : "", px(f, s->x.data[t]), py(f, s->y.data[t]));
        bputs(b, "\"/>\n");
      }
      if (dots || e - k == 1)
        for (int t = k; t < e; t++)
          bputf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" stroke=\"none\"/>\n",
                px(f, s->x.data[t]), py(f, s->y.data[t]));
      k = e;
    }
    bputs(b, "</g>\n");
    n_drawn++;
  }
  if (n_finite == 0)
    bputf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#888\">%s</text>\n",
          (f->x0 + f->x1) / 2, (f->y0 + f->y1) / 2, n_drawn ? "no finite values" : "no data");
  if (n_drawn > 0) {
    /* legend: one row above the plot, right-aligned, so it never hides a
     * curve; ~7 px per character of a 12 px sans-serif */
    double w = 0;
    for (int i = 0; i < sl->n; i++)
      if (sl->data[i].panel == panel) w += 40 + 7.0 * (double)strlen(sl->data[i].name);
    double lx = fmax(f->x0, f->x1 - w + 14), yy = f->y0 - 7;
    int k = 0;
    for (int i = 0; i < sl->n; i++) {
      const Series *s = &sl->data[i];
      if (s->panel != panel) continue;
      bputf(b,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"/>\n",
            lx, yy - 4, lx + 18, yy - 4, palette[k % 10]);
      bputf(b, "<text x=\"%.1f\" y=\"%.1f\">", lx + 22, yy);
      svg_text(b, s->name);
      bputs(b, "</text>\n");
      lx += 40 + 7.0 * (double)strlen(s->name);
      k++;
    }
  }
  bputs(b, "</g>\n");
}

char *curves_svg(const MetricsRecord *recs, int n, const CurvesConfig *c) {
  CurvesConfig cfg = c ? *c : (CurvesConfig){0};
  int W = cfg.width > 0 ? cfg.width : 720, H = cfg.panel_height > 0 ? cfg.panel_height : 260;
  bool by_epoch = cfg.x == CURVES_X_EPOCH;
  if (cfg.x == CURVES_X_AUTO) {
    by_epoch = n > 0 && recs[n - 1].epoch >= 1;
    for (int i = 0; i < n; i++) by_epoch = by_epoch && isfinite(recs[i].epoch);
  }
  /* gather the series */
  SeriesList sl = {0};
  for (int i = 0; i < n; i++) {
    const MetricsRecord *r = &recs[i];
    double x = by_epoch ? r->epoch : (double)r->step;
    if (!isfinite(x)) continue;
    for (int k = 0; k < r->n; k++) {
      const Metric *m = &r->m[k];
      int panel = ends_with(m->name, "loss")  ? PANEL_LOSS
                  : ends_with(m->name, "acc") ? PANEL_ACC
                                              : -1;
      if (panel < 0) continue;
      int si = 0;
      while (si < sl.n && strcmp(sl.data[si].name, m->name) != 0) si++;
      if (si == sl.n) {
        Series s;
        memset(&s, 0, sizeof s);
        strcpy(s.name, m->name);
        s.panel = panel;
        vec_push(&sl, s);
      }
      vec_push(&sl.data[si].x, x);
      vec_push(&sl.data[si].y, m->value);
    }
  }
  /* ranges: x shared by the panels, y per panel, over finite points */
  double xlo = INFINITY, xhi = -INFINITY, ylo[N_PANELS], yhi[N_PANELS];
  bool used[N_PANELS] = {false, false};
  for (int p = 0; p < N_PANELS; p++) ylo[p] = INFINITY, yhi[p] = -INFINITY;
  for (int i = 0; i < sl.n; i++) {
    Series *s = &sl.data[i];
    decimate(s);
    used[s->panel] = true;
    for (int k = 0; k < s->x.n; k++) {
      double x = s->x.data[k], y = s->y.data[k];
      if (!isfinite(y)) continue;
      xlo = fmin(xlo, x), xhi = fmax(xhi, x);
      ylo[s->panel] = fmin(ylo[s->panel], y), yhi[s->panel] = fmax(yhi[s->panel], y);
    }
  }
  if (xlo > xhi) xlo = 0, xhi = by_epoch ? 1 : 100;
  if (xlo > 0 && xlo < 0.25 * xhi) xlo = 0; /* start at 0 unless zoomed far in */
  int panels[N_PANELS], n_panels = 0;
  if (used[PANEL_LOSS] || !used[PANEL_ACC]) panels[n_panels++] = PANEL_LOSS;
  if (used[PANEL_ACC]) panels[n_panels++] = PANEL_ACC;
  int top = cfg.title ? 24 : 0, total_h = top + n_panels * H;

  Buf b = {0};
  bputs(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  bputf(
      &b,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"sans-serif\" font-size=\"12\" fill=\"#222\">\n",
      W, total_h, W, total_h);
  bputf(&b, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, total_h);
  if (cfg.title) {
    bputs(&b, "<title>");
    svg_text(&b, cfg.title);
    bputs(&b, "</title>\n");
    bputf(&b,
          "<text x=\"%.1f\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">",
          W / 2.0);
    svg_text(&b, cfg.title);
    bputs(&b, "</text>\n");
  }
  for (int i = 0; i < n_panels; i++) {
    int p = panels[i];
    Frame f;
    f.x0 = 78, f.x1 = W - 16, f.y0 = top + i * H + 24, f.y1 = top + (i + 1) * H - 46;
    f.xa = nice_axis(xlo, xhi);
    f.ya = nice_axis(used[p] && ylo[p] <= yhi[p] ? ylo[p] : 0,
                     used[p] && ylo[p] <= yhi[p] ? yhi[p] : 1);
    draw_panel(&b, &sl, p, &f, by_epoch ? "epoch" : "step", i);
  }
  bputs(&b, "</svg>\n");
  for (int i = 0; i < sl.n; i++) {
    vec_free(&sl.data[i].x);
    vec_free(&sl.data[i].y);
  }
  vec_free(&sl);
  return b.data;
}

bool curves_write_svg(const char *path, const MetricsRecord *recs, int n, const CurvesConfig *c,
                      Diag *d) {
  char *svg = curves_svg(recs, n, c);
  bool ok = report_write_atomic(path, svg, strlen(svg), d);
  free(svg);
  return ok;
}
