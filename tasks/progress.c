/* progress.c — the progress line of a training run (report.h, progress_*):
 * per-step numbers summed into report windows, a window's record, and its
 * line: plain lines, or one terminal line rewritten in place.
 *
 * Invariant: a terminal line is the only place a control character is
 * written, and only when the Progress is in terminal mode. Numbers are
 * printed in the C locale (nothing here calls setlocale). Not here: files
 * (metrics.c, curves.c). */
#include "tasks/report.h"

#include <math.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "graph/strbuf.h"

/* A fixed-point number, or "nan"/"inf"/"-inf" (printf may write "-nan"). */
static void fmt_fixed(char *buf, size_t cap, double v, int decimals) {
  if (isnan(v))
    snprintf(buf, cap, "nan");
  else if (isinf(v))
    snprintf(buf, cap, v > 0 ? "inf" : "-inf");
  else
    snprintf(buf, cap, "%.*f", decimals, v);
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
  StrBuf b = {0};
  char num[64], hms[24];
  const ProgressConfig *c = &p->c;
  int64_t s = p->step;
  strbuf_puts(&b, p->task);
  if (c->steps_per_epoch > 0) {
    int64_t e = s > 0 ? (s - 1) / c->steps_per_epoch + 1 : 1;
    int64_t bt = s > 0 ? (s - 1) % c->steps_per_epoch + 1 : 0;
    strbuf_printf(&b, " epoch %lld", (long long)e);
    if (c->total_steps > 0)
      strbuf_printf(&b, "/%lld",
            (long long)((c->total_steps + c->steps_per_epoch - 1) / c->steps_per_epoch));
    strbuf_printf(&b, " batch %lld/%lld", (long long)bt, (long long)c->steps_per_epoch);
  } else {
    strbuf_printf(&b, " step %lld", (long long)s);
    if (c->total_steps > 0) strbuf_printf(&b, "/%lld", (long long)c->total_steps);
  }
  for (int i = 0; i < r->n; i++) {
    const Metric *m = &r->m[i];
    if (strcmp(m->name, "train_acc") == 0) {
      fmt_fixed(num, sizeof num, m->value, 3); /* a fraction, as every accuracy bertrun prints */
      strbuf_printf(&b, " train acc %s", num);
    } else if (strcmp(m->name, "examples_per_s") == 0) {
      fmt_fixed(num, sizeof num, m->value, 1);
      strbuf_printf(&b, " ex/s %s", num);
    } else {
      fmt_fixed(num, sizeof num, m->value, 4);
      strbuf_printf(&b, " %s %s", m->name, num);
    }
  }
  progress_format_hms(now - p->t_start, hms);
  strbuf_printf(&b, " elapsed %s", hms);
  if (c->total_steps > 0) {
    double eta = NAN;
    if (s >= c->total_steps)
      eta = 0;
    else if (p->have_first && s > p->first_step && now > p->t_first)
      eta = (double)(c->total_steps - s) * (now - p->t_first) / (double)(s - p->first_step);
    progress_format_hms(eta, hms);
    strbuf_printf(&b, " eta %s", hms);
  }
  snprintf(buf, cap, "%s", b.data);
  strbuf_free(&b);
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

MetricsRecord progress_event(const Progress *p) {
  MetricsRecord r = metrics_record(p->step);
  if (p->c.steps_per_epoch > 0) r.epoch = (double)p->step / (double)p->c.steps_per_epoch;
  r.time_s = p->c.time_offset_s + (now_s(p) - p->t_start);
  return r;
}

void progress_restart_window(Progress *p) {
  if (p->w_steps == 0) p->t_window = now_s(p);
}

void progress_log(Progress *p, const char *fmt, ...) {
  if (!p->f) return;
  if (p->tty && p->drawn) fputs("\r\033[K", p->f);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->f, fmt, ap);
  va_end(ap);
  fputc('\n', p->f);
  /* the progress line comes back, unless the run is over (the summary
   * of the last epoch is then the last word before "done") */
  bool over = p->c.total_steps > 0 && p->step >= p->c.total_steps;
  if (p->tty && p->drawn && !over) fprintf(p->f, "%s\033[K", p->line);
  p->drawn = p->drawn && !over;
  fflush(p->f);
}

void progress_finish(Progress *p, const char *summary) {
  if (!p) return;
  double now = now_s(p);
  close_window(p, now);
  if (p->f) {
    if (p->tty && p->drawn) fputc('\n', p->f);
    char hms[24];
    double dt = now - p->t_start;
    progress_format_hms(dt, hms);
    fprintf(p->f, "%s done: %lld steps in %s", p->task, (long long)(p->step - p->c.start_step),
            hms);
    if (summary && *summary) fprintf(p->f, "; %s", summary);
    fputc('\n', p->f);
    fflush(p->f);
  }
  free(p->task);
  free(p);
}
