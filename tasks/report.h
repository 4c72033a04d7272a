/* report.h — what a training run shows and leaves behind: the progress line
 * on stderr, the metrics log <out>/metrics.jsonl, and the plot
 * <out>/curves.svg.
 *
 * Three small parts, one file each, share one record type (MetricsRecord):
 *   progress_*  (progress.c) turns per-step numbers into report windows
 *               (running means) and prints them: one line rewritten in
 *               place on a terminal, plain lines every N steps / S seconds
 *               otherwise;
 *   metrics_*   (metrics.c) writes records as JSON lines (one object per
 *               line, flushed per line) and loads/rewrites them when a run
 *               resumes;
 *   curves_*    (curves.c) draws loss and accuracy curves as an SVG.
 * Not here: the training loop (it calls these), checkpoints, evaluation.
 * Nothing here exits; I/O failures go into a Diag naming the file. Files
 * are replaced whole by graph/fileio.h's atomic write (metrics.jsonl is
 * then appended to line by line).
 *
 * A training loop uses it so (error handling left out):
 *   MetricsLog log;  metrics_log_open(&log, out_dir, resume_step or METRICS_FRESH, &d);
 *   Progress *p = progress_start(stderr, &(ProgressConfig){.task = "snli", ...});
 *   for each step s:  const MetricsRecord *r = progress_update(p, s, &(Metrics){...});
 *                     if (r) metrics_log_append(&log, r, &d);
 *   at an epoch end:  MetricsRecord e = *progress_flush(p) (when non-NULL);
 *                     metrics_record_set(&e, "test_acc", acc);
 *                     metrics_log_append(&log, &e, &d); metrics_log_plot(&log, "snli", &d);
 *   progress_finish(p, "test_acc 81.20%"); metrics_log_close(&log); */
#ifndef BC_TASKS_REPORT_H
#define BC_TASKS_REPORT_H

#include "graph/base.h"

/* ---- one record ------------------------------------------------------ */

#define REPORT_NAME_MAX 24 /* metric names, NUL included */
#define REPORT_MAX_METRICS 12

typedef struct {
  char name[REPORT_NAME_MAX]; /* "loss", "mlm_loss", "train_acc", "test_acc", "examples_per_s" */
  double value;               /* may be NaN/inf: written as null */
} Metric;

/* One line of metrics.jsonl. A value type (no pointers): copy it freely. */
typedef struct {
  int64_t step;  /* training steps completed when the record was made */
  double epoch;  /* epochs completed, fractional (step / steps_per_epoch); NaN = none */
  double time_s; /* training seconds since the first run began (resumes add up) */
  int n;
  Metric m[REPORT_MAX_METRICS]; /* in the order they were set; names unique */
} MetricsRecord;

/* An empty record at `step` (epoch NaN, time 0). */
MetricsRecord metrics_record(int64_t step);
/* Sets `name` to `v`, replacing an earlier value of that name. A name of
 * REPORT_NAME_MAX or more characters, or a 13th metric, is a bug (asserts). */
void metrics_record_set(MetricsRecord *r, const char *name, double v);
/* The value of `name`, or NaN when the record has none. */
double metrics_record_get(const MetricsRecord *r, const char *name);
bool metrics_record_has(const MetricsRecord *r, const char *name);

/* ---- progress -------------------------------------------------------- */

/* Seconds on a monotonic clock; injected by tests. */
typedef double (*ReportClockFn)(void *ctx);

typedef enum {
  PROGRESS_AUTO,     /* terminal when isatty(f) and TERM is not "dumb" */
  PROGRESS_PLAIN,    /* one line per report window, no control characters */
  PROGRESS_TERMINAL, /* one line rewritten in place: '\r' ... ESC[K */
} ProgressMode;

typedef struct {
  const char *task;        /* first word of every line ("snli", "pretrain"); copied */
  int64_t total_steps;     /* steps of the whole run; 0 = unknown (no ETA) */
  int64_t steps_per_epoch; /* > 0: show "epoch e/E batch b/B" instead of "step s/S" */
  int64_t start_step;      /* steps already done before this run (resume); 0 = fresh */
  double time_offset_s;    /* time_s of the run being resumed; added to records' time_s */
  bool has_acc;            /* the task has an accuracy: show it, record it as train_acc */
  int64_t every_steps;     /* close a report window when step % every_steps == 0; 0 = off */
  double every_s;          /* ... or when this many seconds passed; 0 = 10 s; < 0 = off */
  double redraw_s;         /* terminal: redraw at most this often; 0 = 0.1 s */
  ProgressMode mode;
  int columns;         /* terminal: truncate lines to columns-1; 0 = ask the terminal */
  ReportClockFn clock; /* NULL = CLOCK_MONOTONIC */
  void *clock_ctx;
} ProgressConfig;

#define PROGRESS_MAX_EXTRA 8

/* The numbers of one training step. Every value is averaged over the report
 * window, weighted by n_examples (weight 1 when n_examples is 0). NaN or inf
 * propagates into the window's mean: a diverged loss shows as "nan". */
typedef struct {
  double loss;        /* the step's mean loss */
  double acc;         /* the step's accuracy in [0, 1]; read only when has_acc */
  int64_t n_examples; /* examples in the step's batch (for examples/s) */
  int n_extra;
  struct {
    const char *name; /* borrowed; < REPORT_NAME_MAX characters */
    double value;
  } extra[PROGRESS_MAX_EXTRA]; /* more per-step means: mlm_loss, nsp_loss */
} Metrics;

typedef struct Progress Progress;

/* A line reads "<task> step s/S" or "<task> epoch e/E batch b/B", then
 * "loss x", each extra "name x", "train acc x" (a fraction), "ex/s x", "elapsed h:mm:ss" and,
 * when total_steps is known, "eta h:mm:ss": the window's means, examples/s
 * over the window, and the ETA from the rate since the first update (so a
 * slow first step, warm-up, does not inflate it). A zeroed config means:
 * auto mode, a window every 10 s, redraws every 0.1 s.
 *
 * Starts the clock and returns a handle the caller passes to
 * progress_finish. `f` is borrowed (stderr usually); NULL prints nothing but
 * still computes windows (non-zero ranks). `c` is copied; c->task too. */
Progress *progress_start(FILE *f, const ProgressConfig *c);

/* Adds step `step` (steps completed, start_step < step, increasing) to the
 * current window. When the window closes (every_steps, every_s, or the last
 * step), prints a line in plain mode and returns the window's record: step,
 * epoch, time_s, loss, the extras, train_acc (has_acc) and examples_per_s.
 * The pointer stays valid until the next progress_* call; NULL otherwise.
 * On a terminal the line is redrawn whether or not a window closed. */
const MetricsRecord *progress_update(Progress *p, int64_t step, const Metrics *m);

/* Closes the current window early (an epoch ends, an evaluation follows) and
 * returns its record as progress_update does; NULL when it has no steps. */
const MetricsRecord *progress_flush(Progress *p);

/* An empty record at the last step, with the epoch and time_s a window's
 * record would have: for an evaluation when no window is open. */
MetricsRecord progress_event(const Progress *p);

/* After an evaluation that followed progress_flush: the next window starts
 * now, so its examples/s counts training steps, not the evaluation. No-op
 * when a window holds steps. */
void progress_restart_window(Progress *p);

/* Prints a message on a line of its own (epoch summaries, "saved ...")
 * without breaking the terminal's progress line. A trailing newline is added. */
void progress_log(Progress *p, const char *fmt, ...) BC_PRINTF(2, 3);

/* Flushes the last window (its record is dropped: call progress_flush first
 * to keep it), prints the summary line
 *   "<task> done: <n> steps in h:mm:ss[; <summary>]"
 * (the run's throughput is the caller's to print, once)
 * and frees p. NULL p does nothing; summary may be NULL. */
void progress_finish(Progress *p, const char *summary);

/* Whether p rewrites one line in place (terminal mode). */
bool progress_is_terminal(const Progress *p);

/* The line progress_update would print now (no '\r', no newline); for tests
 * and for callers that print elsewhere. Writes at most cap bytes. */
void progress_format_line(const Progress *p, char *buf, size_t cap);

/* h:mm:ss ("0:03:07", "27:46:40"); "-:--:--" for negative or non-finite
 * seconds. Rounds down to whole seconds. buf holds >= 24 bytes. */
void progress_format_hms(double seconds, char buf[24]);

/* ---- metrics.jsonl --------------------------------------------------- */

typedef VEC(MetricsRecord) MetricsRecords;

#define METRICS_FRESH ((int64_t)-1)

typedef struct {
  char *path;             /* <dir>/metrics.jsonl; owned */
  char *dir;              /* owned */
  FILE *f;                /* open for appending; NULL after close */
  MetricsRecords records; /* every record now in the file, in order (for the plot) */
} MetricsLog;

/* Opens <dir>/metrics.jsonl (dir must exist). keep_through_step =
 * METRICS_FRESH starts an empty file; a step s >= 0 (resume from a
 * checkpoint at step s) keeps the existing records with step <= s and drops
 * the later ones of the older run; either way the file is first rewritten
 * atomically. False (with an error) when the file cannot be read, parsed or
 * written; log is then empty and needs no close. */
bool metrics_log_open(MetricsLog *log, const char *dir, int64_t keep_through_step, Diag *d);

/* Appends one line and flushes it; keeps a copy in log->records. */
bool metrics_log_append(MetricsLog *log, const MetricsRecord *r, Diag *d);

/* Rewrites <dir>/curves.svg atomically from log->records. */
bool metrics_log_plot(const MetricsLog *log, const char *title, Diag *d);

/* Closes the file and frees the records. Safe on a zeroed or closed log. */
void metrics_log_close(MetricsLog *log);

/* The JSON object of r, without newline, into a fresh heap string:
 *   {"step":50,"epoch":0.5,"loss":1.0986123,"train_acc":0.334,"time_s":12.345}
 * step first, epoch (omitted when NaN), the metrics in order (null when not
 * finite, %.9g so float32 values round-trip), time_s last. */
char *metrics_record_json(const MetricsRecord *r);

/* Parses one JSON line into r (graph/json.h's reader). Accepts what
 * metrics_record_json writes, plus NaN/Infinity/-Infinity, ignores string
 * and boolean fields, rejects nested values and duplicate keys. False with
 * `file:line:col: error: metrics: ...` when malformed. */
bool metrics_parse_line(const char *line, MetricsRecord *r, SrcLoc loc, Diag *d);

/* Appends the records of a JSONL file to out. A missing file is empty (true);
 * blank lines are skipped; an unterminated last line that does not parse is
 * a write cut short by a crash and is dropped. */
bool metrics_load(const char *path, MetricsRecords *out, Diag *d);

/* Atomically replaces `path` with the records whose step <= max_step
 * (INT64_MAX for all). */
bool metrics_rewrite(const char *path, const MetricsRecord *recs, int n, int64_t max_step, Diag *d);

/* ---- curves.svg ------------------------------------------------------ */

typedef enum {
  CURVES_X_AUTO, /* epoch when every record has one and the last is >= 1, else step */
  CURVES_X_STEP,
  CURVES_X_EPOCH,
} CurvesX;

typedef struct {
  const char *title; /* top line; NULL = none; escaped */
  CurvesX x;
  int width;        /* pixels; 0 = 720 */
  int panel_height; /* pixels per panel; 0 = 260 */
} CurvesConfig;

/* The SVG document (a fresh heap string). Series: every metric whose name
 * ends in "loss" goes into the loss panel, every one ending in "acc" into
 * the accuracy panel (shown only when there is one); others (examples_per_s)
 * are not drawn. Non-finite values leave gaps; no data gives an empty panel
 * saying so. Series longer than 2000 points are averaged in buckets. */
char *curves_svg(const MetricsRecord *recs, int n, const CurvesConfig *c);

/* curves_svg written atomically to `path`. */
bool curves_write_svg(const char *path, const MetricsRecord *recs, int n, const CurvesConfig *c,
                      Diag *d);

#endif
