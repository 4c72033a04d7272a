/* test_report.c — the training run's output (tasks/report.h): exact
 * progress lines under an injected clock, h:mm:ss and ETA, terminal mode
 * ('\r', clear to end of line, throttling, truncation, detection on a pty),
 * metrics.jsonl round trip and resume truncation, curves.svg checked by a
 * small XML well-formedness checker, no temporary file left behind (the
 * atomic write itself: test_fileio.c). */
#include "graph/fileio.h"
#include "tasks/report.h"
#include "test.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------- */

static double fake_now(void *ctx) { return *(double *)ctx; }

/* Captures what a Progress writes. */
typedef struct {
  char *text;
  size_t n;
  FILE *f;
} Capture;

static void cap_open(Capture *c) {
  c->text = NULL;
  c->n = 0;
  c->f = open_memstream(&c->text, &c->n);
}
static const char *cap_text(Capture *c) {
  fflush(c->f);
  return c->text;
}
static void cap_close(Capture *c) {
  fclose(c->f);
  free(c->text);
}

static int count_char(const char *s, char ch) {
  int n = 0;
  for (; *s; s++) n += *s == ch;
  return n;
}

static char *make_tmpdir(void) {
  char *t = bc_strdup("/tmp/bc_test_report_XXXXXX");
  BC_ASSERT(mkdtemp(t));
  return t;
}

/* Files in dir whose name contains ".tmp." (leftovers of atomic writes). */
static int count_temp_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (strstr(e->d_name, ".tmp.")) n++;
  if (d) closedir(d);
  return n;
}

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *p = bc_asprintf("%s/%s", dir, e->d_name);
    remove(p);
    free(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

static char *slurp(const char *path) {
  Diag d;
  diag_init(&d);
  char *s = bc_read_file(path, NULL, &d);
  diag_free(&d);
  return s;
}

/* ---- h:mm:ss --------------------------------------------------------- */

TEST(hms) {
  char b[24];
  struct {
    double s;
    const char *want;
  } cases[] = {
      {0, "0:00:00"},    {59.99, "0:00:59"},   {61, "0:01:01"},           {3599, "0:59:59"},
      {3600, "1:00:00"}, {100000, "27:46:40"}, {360000 + 7, "100:00:07"}, {-1, "-:--:--"},
      {NAN, "-:--:--"},  {INFINITY, "-:--:--"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    progress_format_hms(cases[i].s, b);
    CHECK_STR(b, cases[i].want);
  }
}

/* ---- plain mode: exact lines ----------------------------------------- */

/* Six steps of 32 examples (the last 16), two epochs of three batches, a
 * window every two steps. Step k ends at t = k + 1 s (the first step took
 * 2 s: warm-up, which the ETA leaves out); one window is flushed early. */
TEST(plain_lines_exact) {
  double t = 0;
  Capture cap;
  cap_open(&cap);
  ProgressConfig c = {.task = "snli",
                      .total_steps = 6,
                      .steps_per_epoch = 3,
                      .has_acc = true,
                      .every_steps = 2,
                      .every_s = -1,
                      .mode = PROGRESS_PLAIN,
                      .clock = fake_now,
                      .clock_ctx = &t};
  Progress *p = progress_start(cap.f, &c);
  CHECK(!progress_is_terminal(p));
  const double loss[] = {1.0, 0.8, 0.6, 0.4, 0.3, 0.2}, acc[] = {0.5, 0.75, 0.5, 1, 1, 1};
  const MetricsRecord *r;

  t = 2;
  CHECK(!progress_update(p, 1, &(Metrics){.loss = loss[0], .acc = acc[0], .n_examples = 32}));
  t = 3;
  r = progress_update(p, 2, &(Metrics){.loss = loss[1], .acc = acc[1], .n_examples = 32});
  CHECK(r);
  if (r) {
    CHECK_EQ_INT(r->step, 2);
    CHECK_NEAR(r->epoch, 2.0 / 3.0, 1e-12, 0);
    CHECK_NEAR(r->time_s, 3, 1e-12, 0);
    CHECK_NEAR(metrics_record_get(r, "loss"), 0.9, 1e-12, 0);
    CHECK_NEAR(metrics_record_get(r, "train_acc"), 0.625, 1e-12, 0);
    CHECK_NEAR(metrics_record_get(r, "examples_per_s"), 64.0 / 3.0, 1e-12, 0);
    CHECK_STR(r->m[0].name, "loss"); /* field order: loss, extras, train_acc, examples_per_s */
    CHECK_STR(r->m[1].name, "train_acc");
    CHECK_STR(r->m[2].name, "examples_per_s");
  }
  t = 4;
  CHECK(!progress_update(p, 3, &(Metrics){.loss = loss[2], .acc = acc[2], .n_examples = 32}));
  t = 5;
  CHECK(progress_update(p, 4, &(Metrics){.loss = loss[3], .acc = acc[3], .n_examples = 32}));
  t = 6;
  CHECK(!progress_update(p, 5, &(Metrics){.loss = loss[4], .acc = acc[4], .n_examples = 32}));
  r = progress_flush(p);
  CHECK(r && r->step == 5);
  CHECK(!progress_flush(p)); /* empty window */
  t = 7.5;
  r = progress_update(p, 6, &(Metrics){.loss = loss[5], .acc = acc[5], .n_examples = 16});
  CHECK(r && r->step == 6); /* the last step closes its window */
  progress_log(p, "epoch 2: test acc %.3f", 0.8);
  t = 8;
  progress_finish(p, "test acc 0.800");
  CHECK_STR(
      cap_text(&cap),
      "snli epoch 1/2 batch 2/3 loss 0.9000 train acc 0.625 ex/s 21.3 elapsed 0:00:03 eta 0:00:04\n"
      "snli epoch 2/2 batch 1/3 loss 0.5000 train acc 0.750 ex/s 32.0 elapsed 0:00:05 eta 0:00:02\n"
      "snli epoch 2/2 batch 2/3 loss 0.3000 train acc 1.000 ex/s 32.0 elapsed 0:00:06 eta 0:00:01\n"
      "snli epoch 2/2 batch 3/3 loss 0.2000 train acc 1.000 ex/s 10.7 elapsed 0:00:07 eta 0:00:00\n"
      "epoch 2: test acc 0.800\n"
      "snli done: 6 steps in 0:00:08; test acc 0.800\n");
  for (const char *s = cap_text(&cap); *s; s++) CHECK(*s == '\n' || (*s >= 0x20 && *s < 0x7f));
  cap_close(&cap);
}

/* No epochs, unknown total (no ETA), named extras, a window every 2.5 s of
 * the clock, resumed at step 100; the mean is weighted by examples and a
 * NaN loss shows as nan. finish prints the last partial window. */
TEST(plain_extras_time_window_resume) {
  double t = 0;
  Capture cap;
  cap_open(&cap);
  ProgressConfig c = {.task = "pretrain",
                      .start_step = 100,
                      .time_offset_s = 50,
                      .every_s = 2.5,
                      .mode = PROGRESS_PLAIN,
                      .clock = fake_now,
                      .clock_ctx = &t};
  Progress *p = progress_start(cap.f, &c);
  const MetricsRecord *r = NULL;
  for (int s = 101; s <= 105; s++) {
    t = s - 100;
    Metrics m = {.loss = s == 105 ? NAN : 2.0 * (s - 100),
                 .n_examples = s == 102 ? 30 : 10,
                 .n_extra = 2,
                 .extra = {{"mlm_loss", 1.5}, {"nsp_loss", 0.5}}};
    const MetricsRecord *got = progress_update(p, s, &m);
    if (s == 103) {
      r = got;
    } else {
      CHECK(!got);
    }
  }
  CHECK(r);
  if (r) { /* steps 101..103 with weights 10, 30, 10: (2*10 + 4*30 + 6*10) / 50 = 4 */
    CHECK_NEAR(metrics_record_get(r, "loss"), 4.0, 1e-12, 0);
    CHECK_NEAR(metrics_record_get(r, "mlm_loss"), 1.5, 1e-12, 0);
    CHECK(isnan(r->epoch));
    CHECK_NEAR(r->time_s, 53, 1e-12, 0);
    CHECK(!metrics_record_has(r, "train_acc"));
  }
  t = 6;
  progress_finish(p, NULL);
  CHECK_STR(
      cap_text(&cap),
      "pretrain step 103 loss 4.0000 mlm_loss 1.5000 nsp_loss 0.5000 ex/s 16.7 elapsed 0:00:03\n"
      "pretrain step 105 loss nan mlm_loss 1.5000 nsp_loss 0.5000 ex/s 6.7 elapsed 0:00:06\n"
      "pretrain done: 5 steps in 0:00:06\n");
  cap_close(&cap);
}

/* An evaluation between windows: progress_event's record sits at the last
 * step with the epoch and time a window's would have, and after
 * progress_restart_window the next window's ex/s leaves the evaluation's
 * seconds out (3 steps of 10 examples in 3 s, not 3 + 7 s). */
TEST(evaluation_between_windows) {
  double t = 0;
  ProgressConfig c = {.task = "snli", .steps_per_epoch = 4, .time_offset_s = 100, .every_steps = 100,
                      .every_s = -1, .clock = fake_now, .clock_ctx = &t};
  Progress *p = progress_start(NULL, &c);
  for (int s = 1; s <= 2; s++) {
    t = s;
    CHECK(!progress_update(p, s, &(Metrics){.loss = 1, .n_examples = 10}));
  }
  CHECK(progress_flush(p));
  t = 9; /* an evaluation of 7 s */
  MetricsRecord e = progress_event(p);
  CHECK_EQ_INT(e.step, 2);
  CHECK_NEAR(e.epoch, 0.5, 1e-12, 0);
  CHECK_NEAR(e.time_s, 109, 1e-12, 0);
  CHECK(e.n == 0);
  progress_restart_window(p);
  for (int s = 3; s <= 5; s++) {
    t = 9 + (s - 2);
    CHECK(!progress_update(p, s, &(Metrics){.loss = 1, .n_examples = 10}));
  }
  t = 13; /* a window holding steps is not restarted */
  progress_restart_window(p);
  const MetricsRecord *r = progress_flush(p);
  CHECK(r);
  if (r) CHECK_NEAR(metrics_record_get(r, "examples_per_s"), 30.0 / 4.0, 1e-12, 0);
  progress_finish(p, NULL);
}

/* A NULL stream prints nothing yet still closes windows. */
TEST(silent_progress) {
  double t = 0;
  ProgressConfig c = {.task = "x", .every_steps = 1, .clock = fake_now, .clock_ctx = &t};
  Progress *p = progress_start(NULL, &c);
  t = 1;
  CHECK(progress_update(p, 1, &(Metrics){.loss = 1, .n_examples = 1}));
  progress_log(p, "ignored");
  progress_finish(p, "ignored");
  progress_finish(NULL, NULL);
}

/* ---- terminal mode --------------------------------------------------- */

TEST(terminal_rewrites_in_place) {
  double t = 0;
  Capture cap;
  cap_open(&cap);
  ProgressConfig c = {.task = "snli",
                      .total_steps = 1000,
                      .has_acc = true,
                      .every_steps = 100,
                      .mode = PROGRESS_TERMINAL,
                      .columns = 200,
                      .clock = fake_now,
                      .clock_ctx = &t};
  Progress *p = progress_start(cap.f, &c);
  CHECK(progress_is_terminal(p));
  /* 200 steps of 10 ms: redraws at most every 0.1 s, plus the two windows */
  for (int s = 1; s <= 200; s++) {
    t = s / 100.0;
    progress_update(p, s, &(Metrics){.loss = 1, .acc = 0.5, .n_examples = 8});
  }
  const char *out = cap_text(&cap);
  int n_draw = count_char(out, '\r');
  CHECK_MSG(n_draw >= 15 && n_draw <= 25, "%d redraws", n_draw);
  CHECK(count_char(out, '\n') == 0);
  CHECK(strncmp(out, "\rsnli step 1/1000 loss 1.0000 train acc 0.500 ex/s ", 51) == 0);
  /* ETA = 800 steps * 1.99 s / 199 steps, 8 s up to rounding */
  CHECK(strstr(
      out, "\rsnli step 200/1000 loss 1.0000 train acc 0.500 ex/s 800.0 elapsed 0:00:02 eta 0:00:0"));
  /* a message goes on its own line and the progress line comes back */
  progress_log(p, "saved checkpoint");
  CHECK(strstr(cap_text(&cap), "\r\033[Ksaved checkpoint\nsnli step 200/1000"));
  progress_finish(p, "ok");
  out = cap_text(&cap);
  const char *tail = "\033[K\nsnli done: 200 steps in 0:00:02; ok\n";
  CHECK(strlen(out) > strlen(tail) && strcmp(out + strlen(out) - strlen(tail), tail) == 0);
  cap_close(&cap);
}

/* Lines are cut to columns-1 characters so they never wrap. */
/* The last epoch's summary is the last line before "done": the progress
 * line is not drawn again after it. */
TEST(terminal_last_summary_ends_the_progress) {
  double t = 0;
  Capture cap;
  cap_open(&cap);
  ProgressConfig c = {.task = "snli", .total_steps = 4, .steps_per_epoch = 2, .has_acc = true,
                      .mode = PROGRESS_TERMINAL, .columns = 200, .clock = fake_now, .clock_ctx = &t};
  Progress *p = progress_start(cap.f, &c);
  for (int s = 1; s <= 4; s++) {
    t = s;
    progress_update(p, s, &(Metrics){.loss = 1, .acc = 0.5, .n_examples = 8});
    if (s % 2 == 0) {
      progress_flush(p);
      progress_log(p, "snli epoch %d: test acc 0.500", s / 2);
    }
  }
  progress_finish(p, NULL);
  const char *out = cap_text(&cap);
  /* epoch 1's summary brings the line back; epoch 2's does not */
  CHECK(strstr(out, "snli epoch 1: test acc 0.500\nsnli epoch 1/2 batch 2/2"));
  const char *tail = "\r\033[Ksnli epoch 2: test acc 0.500\nsnli done: 4 steps in 0:00:04\n";
  CHECK_MSG(strlen(out) > strlen(tail) && strcmp(out + strlen(out) - strlen(tail), tail) == 0, "ends: %s",
            out + (strlen(out) > 120 ? strlen(out) - 120 : 0));
  cap_close(&cap);
}

TEST(terminal_truncates) {
  double t = 0;
  Capture cap;
  cap_open(&cap);
  ProgressConfig c = {
      .task = "snli", .mode = PROGRESS_TERMINAL, .columns = 30, .clock = fake_now, .clock_ctx = &t};
  Progress *p = progress_start(cap.f, &c);
  t = 1;
  progress_update(p, 1, &(Metrics){.loss = 1, .n_examples = 8});
  CHECK_STR(cap_text(&cap), "\rsnli step 1 loss 1.0000 ex/s \033[K");
  char line[256];
  progress_format_line(p, line, sizeof line);
  CHECK_STR(line, "snli step 1 loss 1.0000 ex/s 8.0 elapsed 0:00:01");
  progress_finish(p, NULL);
  cap_close(&cap);
}

/* Auto mode: a pseudo-terminal is a terminal unless TERM=dumb; a pipe or
 * file is not. */
TEST(auto_detects_terminal) {
  ProgressConfig c = {.task = "x"};
  FILE *tmp = tmpfile();
  Progress *p = progress_start(tmp, &c);
  CHECK(!progress_is_terminal(p));
  progress_finish(p, NULL);
  fclose(tmp);

  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
    if (master >= 0) close(master);
    TEST_SKIP("no pseudo-terminals here");
  }
  FILE *slave = fopen(ptsname(master), "w");
  if (!slave) {
    close(master);
    TEST_SKIP("cannot open the pty's slave");
  }
  const char *old = getenv("TERM");
  char *saved = old ? bc_strdup(old) : NULL;
  setenv("TERM", "xterm", 1);
  p = progress_start(slave, &c);
  CHECK(progress_is_terminal(p));
  progress_finish(p, NULL); /* a line into the pty's buffer */
  setenv("TERM", "dumb", 1);
  p = progress_start(slave, &c);
  CHECK(!progress_is_terminal(p));
  progress_finish(p, NULL);
  if (saved)
    setenv("TERM", saved, 1);
  else
    unsetenv("TERM");
  free(saved);
  fclose(slave);
  close(master);
}

/* ---- metrics.jsonl --------------------------------------------------- */

static MetricsRecord sample_record(int64_t step) {
  MetricsRecord r = metrics_record(step);
  r.epoch = step / 4.0;
  r.time_s = 1.5 * step;
  metrics_record_set(&r, "loss", 1.0 / (double)(step + 1));
  metrics_record_set(&r, "mlm_loss", 0.1f * (float)step);
  metrics_record_set(&r, "train_acc", 0.25);
  return r;
}

TEST(json_exact_and_round_trip) {
  MetricsRecord r = metrics_record(50);
  r.epoch = 0.5;
  r.time_s = 12.3456;
  metrics_record_set(&r, "loss", 1.0986123);
  metrics_record_set(&r, "nsp_loss", NAN);
  metrics_record_set(&r, "test_acc", INFINITY);
  metrics_record_set(&r, "train_acc", 0.334);
  metrics_record_set(&r, "loss", 1.5); /* replaces, keeps its place */
  char *j = metrics_record_json(&r);
  CHECK_STR(j,
            "{\"step\":50,\"epoch\":0.5,\"loss\":1.5,\"nsp_loss\":null,\"test_acc\":null,"
            "\"train_acc\":0.334,\"time_s\":12.346}");
  Diag d;
  diag_init(&d);
  MetricsRecord back;
  CHECK(metrics_parse_line(j, &back, SRCLOC_NONE, &d));
  CHECK_EQ_INT(back.step, 50);
  CHECK(back.epoch == 0.5);
  CHECK_EQ_INT(back.n, 4);
  CHECK(isnan(metrics_record_get(&back, "nsp_loss")));
  CHECK(metrics_record_get(&back, "train_acc") == 0.334);
  char *j2 = metrics_record_json(&back);
  CHECK_STR(j2, j);
  free(j);
  free(j2);

  /* no epoch: omitted; float32 values survive %.9g exactly */
  r = metrics_record(7);
  metrics_record_set(&r, "loss", (double)0.1f);
  j = metrics_record_json(&r);
  CHECK_STR(j, "{\"step\":7,\"loss\":0.100000001,\"time_s\":0.000}");
  CHECK(metrics_parse_line(j, &back, SRCLOC_NONE, &d));
  CHECK(isnan(back.epoch));
  CHECK((float)metrics_record_get(&back, "loss") == 0.1f);
  free(j);

  /* what other writers produce: spaces, NaN tokens, strings and booleans */
  CHECK(
      metrics_parse_line(" { \"phase\" : \"tr\\\"ain\" , \"step\" : 3 , \"ok\" : true ,"
                         " \"loss\" : NaN, \"x_acc\": -Infinity, \"y\": 1e-3 } \r",
                         &back, SRCLOC_NONE, &d));
  CHECK_EQ_INT(back.step, 3);
  CHECK_EQ_INT(back.n, 3);
  CHECK(isnan(metrics_record_get(&back, "loss")));
  CHECK(metrics_record_get(&back, "x_acc") == -INFINITY);
  CHECK(metrics_record_get(&back, "y") == 1e-3);
  CHECK(metrics_parse_line("{\"step\":1,\"\\u006coss\":2,\"a\\tb\":3}", &back, SRCLOC_NONE, &d));
  CHECK(metrics_record_get(&back, "loss") == 2 && metrics_record_get(&back, "a\tb") == 3);
  j = metrics_record_json(&back); /* control characters are escaped */
  CHECK_STR(j, "{\"step\":1,\"loss\":2,\"a\\tb\":3,\"time_s\":0.000}");
  free(j);
  CHECK_EQ_INT(d.n_errors, 0);
  diag_free(&d);
}

TEST(json_errors) {
  struct {
    const char *line, *want;
  } cases[] = {
      {"{\"step\":1,\"loss\":[1]}",
       "t.jsonl:4:18: error: metrics: nested values are not supported"},
      {"{\"loss\":1}", "t.jsonl:4:1: error: metrics: record has no \"step\""},
      {"{\"step\":1.5}", "t.jsonl:4:9: error: metrics: \"step\" must be a whole number >= 0"},
      {"{\"step\":1} x", "t.jsonl:4:12: error: metrics: unexpected 'x' after the JSON value"},
      {"{\"step\":1,}", "t.jsonl:4:11: error: metrics: expected a key string, found '}'"},
      {"{\"step\" 1}", "t.jsonl:4:9: error: metrics: expected ':' after a key, found '1'"},
      {"[1]", "t.jsonl:4:1: error: metrics: expected '{'"},
      {"{\"step\":1,\"a_name_that_is_far_too_long\":2}",
       "t.jsonl:4:11: error: metrics: metric name too long"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Diag d;
    diag_init(&d);
    MetricsRecord r;
    CHECK(!metrics_parse_line(cases[i].line, &r, (SrcLoc){"t.jsonl", 4, 0}, &d));
    CHECK_STR(diag_first(&d), cases[i].want);
    diag_free(&d);
  }
}

/* A run logs steps 1..5 and is killed while writing step 6; it resumes from
 * a checkpoint at step 3: steps 4, 5 and the torn line go, the new run's
 * step 4 is not a duplicate; a fresh run starts empty. */
TEST(log_resume_truncates) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/metrics.jsonl", dir);
  Diag d;
  diag_init(&d);
  MetricsLog log;
  CHECK(metrics_log_open(&log, dir, METRICS_FRESH, &d));
  for (int s = 1; s <= 5; s++) {
    MetricsRecord r = sample_record(s);
    CHECK(metrics_log_append(&log, &r, &d));
    /* flushed per line: the file has every record so far */
    char *text = slurp(path);
    CHECK_EQ_INT(count_char(text, '\n'), s);
    free(text);
  }
  CHECK_EQ_INT(log.records.n, 5);
  metrics_log_close(&log);
  metrics_log_close(&log); /* twice is fine */
  FILE *f = fopen(path, "a");
  fputs("{\"step\":6,\"loss\":0.1", f);
  fclose(f);

  MetricsRecords all = {0};
  CHECK(metrics_load(path, &all, &d)); /* the torn last line is dropped */
  CHECK_EQ_INT(all.n, 5);
  for (int i = 0; i < all.n; i++) {
    MetricsRecord want = sample_record(i + 1);
    char *a = metrics_record_json(&all.data[i]), *b = metrics_record_json(&want);
    CHECK_STR(a, b);
    free(a);
    free(b);
  }
  vec_free(&all);

  CHECK(metrics_log_open(&log, dir, 3, &d));
  CHECK_EQ_INT(log.records.n, 3);
  MetricsRecord r = sample_record(4);
  metrics_record_set(&r, "test_acc", 0.5);
  CHECK(metrics_log_append(&log, &r, &d));
  metrics_log_close(&log);
  char *text = slurp(path);
  char *l4 = metrics_record_json(&r);
  CHECK(text && count_char(text, '\n') == 4);
  /* the new step 4 is the only one */
  CHECK_MSG(text && strstr(text, l4) && strstr(text, "\"step\":4,") == strstr(text, l4) + 1, "%s",
            text);
  free(l4);
  free(text);
  CHECK(metrics_load(path, &all, &d));
  CHECK_EQ_INT(all.n, 4);
  for (int i = 0; i < all.n; i++) CHECK_EQ_INT(all.data[i].step, i + 1);
  vec_free(&all);

  CHECK(metrics_log_open(&log, dir, METRICS_FRESH, &d));
  CHECK_EQ_INT(log.records.n, 0);
  metrics_log_close(&log);
  text = slurp(path);
  CHECK_STR(text, "");
  free(text);
  CHECK_EQ_INT(count_temp_files(dir), 0);
  CHECK_EQ_INT(d.n_errors, 0);
  diag_free(&d);
  rm_tree(dir);
  free(dir);
  free(path);
}

/* A malformed line in the middle is a user error naming file:line:col, and
 * the file is left as it was. A missing file is an empty log. */
TEST(log_bad_line) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/metrics.jsonl", dir);
  Diag d;
  diag_init(&d);
  MetricsRecords recs = {0};
  CHECK(metrics_load(path, &recs, &d));
  CHECK_EQ_INT(recs.n, 0);
  const char *bad = "{\"step\":1,\"loss\":1}\n\n{\"step\":2,\"loss\":}\n{\"step\":3}\n";
  Diag d2;
  diag_init(&d2);
  CHECK(file_write_atomic(path, bad, strlen(bad), &d2));
  MetricsLog log;
  CHECK(!metrics_log_open(&log, dir, 10, &d));
  char *want = bc_asprintf(
      "%s:3:18: error: metrics: expected a value, found '}'\n"
      "  {\"step\":2,\"loss\":}\n"
      "                   ^",
      path);
  CHECK_STR(diag_first(&d), want);
  free(want);
  char *text = slurp(path);
  CHECK_STR(text, bad);
  free(text);
  diag_free(&d);
  diag_free(&d2);
  rm_tree(dir);
  free(dir);
  free(path);
}

/* ---- curves.svg ------------------------------------------------------ */

/* A small XML well-formedness check: one root element, nested tags that
 * match, quoted attributes, no raw '<' or stray '&' in text or values. */
static bool xml_well_formed(const char *s, char *why, size_t cap) {
  const char *names[64];
  int name_len[64], depth = 0, n_roots = 0;
#define FAIL(msg)                                                   \
  do {                                                              \
    snprintf(why, cap, "%s at offset %ld", msg, (long)(s - start)); \
    return false;                                                   \
  } while (0)
  const char *start = s;
  if (strncmp(s, "<?xml ", 6) == 0) {
    s = strstr(s, "?>");
    if (!s) FAIL("unterminated declaration");
    s += 2;
  }
  while (*s) {
    if (*s == '&') {
      static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
      size_t k = 0;
      while (k < 5 && strncmp(s, ents[k], strlen(ents[k])) != 0) k++;
      if (k == 5) FAIL("bad entity");
      s += strlen(ents[k]);
      continue;
    }
    if (*s != '<') {
      if (depth == 0 && !(*s == ' ' || *s == '\n')) FAIL("text outside the root");
      s++;
      continue;
    }
    s++;
    bool closing = *s == '/';
    if (closing) s++;
    const char *nm = s;
    while (*s && (isalnum((unsigned char)*s) || *s == '-' || *s == ':' || *s == '_')) s++;
    int len = (int)(s - nm);
    if (len == 0) FAIL("no tag name");
    if (closing) {
      if (*s != '>') FAIL("bad closing tag");
      s++;
      if (depth == 0 || name_len[depth - 1] != len || strncmp(names[depth - 1], nm, len) != 0)
        FAIL("mismatched closing tag");
      depth--;
      continue;
    }
    /* attributes */
    for (;;) {
      while (*s == ' ' || *s == '\n') s++;
      if (*s == '>' || (*s == '/' && s[1] == '>')) break;
      const char *an = s;
      while (*s && (isalnum((unsigned char)*s) || *s == '-' || *s == ':' || *s == '_')) s++;
      if (s == an) FAIL("bad attribute name");
      if (*s++ != '=') FAIL("attribute without '='");
      if (*s != '"') FAIL("unquoted attribute");
      s++;
      while (*s && *s != '"') {
        if (*s == '<') FAIL("'<' in an attribute");
        if (*s == '&' && !(strncmp(s, "&amp;", 5) == 0 || strncmp(s, "&lt;", 4) == 0 ||
                           strncmp(s, "&gt;", 4) == 0 || strncmp(s, "&quot;", 6) == 0 ||
                           strncmp(s, "&apos;", 6) == 0))
          FAIL("bad entity in an attribute");
        s++;
      }
      if (!*s) FAIL("unterminated attribute");
      s++;
    }
    if (depth == 0) n_roots++;
    if (n_roots > 1) FAIL("two root elements");
    if (*s == '/') {
      s += 2;
      continue;
    }
    s++;
    if (depth == 64) FAIL("too deep");
    names[depth] = nm;
    name_len[depth++] = len;
  }
  if (depth != 0) FAIL("unclosed element");
  if (n_roots != 1) FAIL("no root element");
#undef FAIL
  return true;
}

static int count_str(const char *s, const char *sub) {
  int n = 0;
  for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
  return n;
}

/* The SVG is well formed and has no non-finite coordinates. */
static void check_svg(const char *svg) {
  char why[128];
  CHECK_MSG(xml_well_formed(svg, why, sizeof why), "%s", why);
  CHECK(!strstr(svg, "nan") && !strstr(svg, "inf") && !strstr(svg, "NaN"));
}

TEST(svg_checker_catches_errors) {
  char why[128];
  CHECK(xml_well_formed("<a x=\"1\"><b/>t &amp; u</a>", why, sizeof why));
  CHECK(!xml_well_formed("<a><b></a></b>", why, sizeof why));
  CHECK(!xml_well_formed("<a x=1/>", why, sizeof why));
  CHECK(!xml_well_formed("<a>&</a>", why, sizeof why));
  CHECK(!xml_well_formed("<a/><b/>", why, sizeof why));
  CHECK(!xml_well_formed("<a>", why, sizeof why));
}

/* Pretraining-like and fine-tuning-like records, gaps from NaN/inf, sparse
 * test accuracy, a name that needs escaping. */
TEST(svg_curves) {
  MetricsRecords recs = {0};
  for (int s = 10; s <= 400; s += 10) {
    MetricsRecord r = metrics_record(s);
    r.epoch = s / 100.0;
    metrics_record_set(&r, "loss", s == 200 ? NAN : s == 210 ? INFINITY : 5.0 / sqrt(s));
    metrics_record_set(&r, "mlm_loss", 4.0 / sqrt(s));
    metrics_record_set(&r, "nsp_loss", 0.7);
    metrics_record_set(&r, "train_acc", 1.0 - 1.0 / sqrt(s));
    metrics_record_set(&r, "examples_per_s", 1000);
    if (s % 100 == 0) metrics_record_set(&r, "test_acc", s == 300 ? NAN : 0.8);
    if (s == 400) metrics_record_set(&r, "a<b>&\"c_acc", 0.5);
    vec_push(&recs, r);
  }
  CurvesConfig c = {.title = "snli <run 1> & co"};
  char *svg = curves_svg(recs.data, recs.n, &c);
  check_svg(svg);
  CHECK(strstr(svg, "<title>snli &lt;run 1&gt; &amp; co</title>"));
  CHECK(strstr(svg, "a&lt;b&gt;&amp;&quot;c_acc"));
  CHECK_EQ_INT(count_str(svg, "<g class=\"panel-"), 2);
  /* loss: two runs around the gap; mlm, nsp: one each; train_acc: one;
   * test_acc: 100, 200 | 400 (dots only on the lone point) */
  CHECK_EQ_INT(count_str(svg, "<polyline"), 2 + 1 + 1 + 1 + 1);
  CHECK(strstr(svg, ">epoch</text>")); /* auto: every record has an epoch >= 1 at the end */
  CHECK(!strstr(svg, "examples_per_s"));
  CHECK(strstr(svg, ">100%</text>") || strstr(svg, ">90%</text>"));
  free(svg);

  c.x = CURVES_X_STEP;
  svg = curves_svg(recs.data, recs.n, &c);
  check_svg(svg);
  CHECK(strstr(svg, ">step</text>"));
  CHECK(strstr(svg, ">400</text>"));
  free(svg);

  /* written atomically next to the metrics */
  char *dir = make_tmpdir();
  MetricsLog log;
  Diag d;
  diag_init(&d);
  CHECK(metrics_log_open(&log, dir, METRICS_FRESH, &d));
  for (int i = 0; i < recs.n; i++) CHECK(metrics_log_append(&log, &recs.data[i], &d));
  CHECK(metrics_log_plot(&log, "run", &d));
  CHECK(metrics_log_plot(&log, "run", &d));
  char *path = bc_asprintf("%s/curves.svg", dir);
  char *text = slurp(path);
  CHECK(text);
  if (text) check_svg(text);
  free(text);
  free(path);
  CHECK_EQ_INT(count_temp_files(dir), 0);
  CHECK_EQ_INT(d.n_errors, 0);
  diag_free(&d);
  metrics_log_close(&log);
  rm_tree(dir);
  free(dir);
  vec_free(&recs);
}

TEST(svg_degenerate_inputs) {
  /* nothing at all: one empty panel that says so */
  char *svg = curves_svg(NULL, 0, NULL);
  check_svg(svg);
  CHECK(strstr(svg, ">no data</text>"));
  CHECK_EQ_INT(count_str(svg, "<g class=\"panel-"), 1);
  free(svg);

  /* one record: a dot, ranges widened around it */
  MetricsRecord r = metrics_record(0);
  metrics_record_set(&r, "loss", 2.0);
  svg = curves_svg(&r, 1, NULL);
  check_svg(svg);
  CHECK_EQ_INT(count_str(svg, "<circle"), 1);
  CHECK_EQ_INT(count_str(svg, "<polyline"), 0);
  free(svg);

  /* every value non-finite, and absurd magnitudes */
  MetricsRecord rs[3];
  for (int i = 0; i < 3; i++) {
    rs[i] = metrics_record(i + 1);
    metrics_record_set(&rs[i], "loss", i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY);
  }
  svg = curves_svg(rs, 3, NULL);
  check_svg(svg);
  CHECK_EQ_INT(count_str(svg, "<circle") + count_str(svg, "<polyline"), 0);
  CHECK(strstr(svg, ">no finite values</text>"));
  free(svg);
  metrics_record_set(&rs[0], "loss", 1e300);
  metrics_record_set(&rs[1], "loss", -1e300);
  metrics_record_set(&rs[2], "loss", 1e-300);
  svg = curves_svg(rs, 3, NULL);
  check_svg(svg);
  free(svg);

  /* long series are bucketed: 100,000 points become ~1,000 */
  MetricsRecords many = {0};
  for (int s = 1; s <= 100000; s++) {
    MetricsRecord m = metrics_record(s);
    metrics_record_set(&m, "loss", 1.0 / s);
    vec_push(&many, m);
  }
  svg = curves_svg(many.data, many.n, NULL);
  check_svg(svg);
  CHECK(strlen(svg) < 100000);
  CHECK(strstr(svg, ">100k</text>"));
  free(svg);
  vec_free(&many);
}

TEST_MAIN()
