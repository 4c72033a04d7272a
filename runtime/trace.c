/* trace.c — the BC_TRACE Chrome trace (trace.h): events kept in memory per
 * lane, written once at the end as complete events ("ph": "X") in
 * microseconds, pid = rank, tid = lane, through the one atomic write
 * (graph/fileio.h): a reader never sees half a trace. */
#include "trace.h"

#include "../graph/fileio.h"
#include "../graph/json.h"
#include "../graph/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRACE_MAX_EVENTS 1000000

struct Trace {
  char *path;
  int pid;
  VEC(TraceEvent) events[TRACE_N_LANES];
};

double trace_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

Trace *trace_open(const char *path, int pid) {
  Trace *t = bc_calloc(1, sizeof(*t));
  t->path = bc_strdup(path);
  t->pid = pid;
  return t;
}

void trace_add(Trace *t, int lane, TraceEvent ev) {
  if (!t || t->events[lane].n >= TRACE_MAX_EVENTS) return;
  vec_push(&t->events[lane], ev);
}

/* The whole trace as JSON into b; names go through the one JSON writer, so
 * a kernel or bucket name is escaped whatever it holds. */
static void format_trace(const Trace *T, StrBuf *b) {
  strbuf_puts(b, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
  static const char *const lane_names[TRACE_N_LANES] = {"training", "communication"};
  for (int t = 0; t < TRACE_N_LANES; t++) {
    strbuf_printf(b, "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": %d, \"args\": {\"name\": ",
                  T->pid, t);
    json_write_string(b, lane_names[t]);
    strbuf_puts(b, "}},\n");
  }
  strbuf_printf(b, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, \"args\": {\"name\": \"rank %d\"}}",
                T->pid, T->pid);
  for (int t = 0; t < TRACE_N_LANES; t++)
    for (int i = 0; i < T->events[t].n; i++) {
      const TraceEvent *e = &T->events[t].data[i];
      strbuf_puts(b, ",\n{\"name\": ");
      json_write_string(b, e->name);
      strbuf_puts(b, ", \"cat\": ");
      json_write_string(b, e->cat);
      strbuf_printf(b, ", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f, \"pid\": %d, \"tid\": %d, \"args\": {\"step\": %lld",
                    e->t0 / 1e3, (e->t1 - e->t0) / 1e3, T->pid, t, (long long)e->step);
      if (e->index >= 0)
        strbuf_printf(b, ", \"%s\": %d", strcmp(e->cat, "kernel") == 0 ? "kernel" : "bucket", e->index);
      if (e->bytes) strbuf_printf(b, ", \"bytes\": %lld", (long long)e->bytes);
      if (e->last_grad) strbuf_puts(b, ", \"last_grad\": 1");
      strbuf_puts(b, "}}");
    }
  strbuf_puts(b, "\n]}\n");
}

/* A trace that cannot be written is reported, not fatal: the run it
 * describes has finished. */
static void write_file(const Trace *T) {
  StrBuf b = {0};
  format_trace(T, &b);
  Diag d;
  diag_init(&d);
  if (!file_write_atomic(T->path, b.data ? b.data : "", b.n, &d)) {
    fprintf(stderr, "rank %d: BC_TRACE: ", T->pid);
    diag_print(&d, stderr);
  }
  diag_free(&d);
  strbuf_free(&b);
}

void trace_close(Trace *t) {
  if (!t) return;
  write_file(t);
  for (int i = 0; i < TRACE_N_LANES; i++) vec_free(&t->events[i]);
  free(t->path);
  free(t);
}
