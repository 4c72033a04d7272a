/* trace.c — the BC_TRACE Chrome trace (trace.h): events kept in memory per
 * lane, written once at the end as complete events ("ph": "X") in
 * microseconds, pid = rank, tid = lane. */
#include "trace.h"

#include <errno.h>
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

static void write_file(const Trace *T) {
  char *tmp = bc_asprintf("%s.tmp", T->path);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "rank %d: BC_TRACE: cannot write %s: %s\n", T->pid, tmp, strerror(errno));
    free(tmp);
    return;
  }
  fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
  static const char *const lane_names[TRACE_N_LANES] = {"training", "communication"};
  for (int t = 0; t < TRACE_N_LANES; t++)
    fprintf(f, "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": %d, \"args\": {\"name\": \"%s\"}},\n",
            T->pid, t, lane_names[t]);
  fprintf(f, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, \"args\": {\"name\": \"rank %d\"}}",
          T->pid, T->pid);
  for (int t = 0; t < TRACE_N_LANES; t++)
    for (int i = 0; i < T->events[t].n; i++) {
      const TraceEvent *e = &T->events[t].data[i];
      fprintf(f, ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f, \"pid\": %d, "
                 "\"tid\": %d, \"args\": {\"step\": %lld",
              e->name, e->cat, e->t0 / 1e3, (e->t1 - e->t0) / 1e3, T->pid, t, (long long)e->step);
      if (e->index >= 0)
        fprintf(f, ", \"%s\": %d", strcmp(e->cat, "kernel") == 0 ? "kernel" : "bucket", e->index);
      if (e->bytes) fprintf(f, ", \"bytes\": %lld", (long long)e->bytes);
      if (e->last_grad) fprintf(f, ", \"last_grad\": 1");
      fprintf(f, "}}");
    }
  fprintf(f, "\n]}\n");
  bool ok = fflush(f) == 0 && !ferror(f);
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, T->path) != 0)
    fprintf(stderr, "rank %d: BC_TRACE: cannot write %s: %s\n", T->pid, T->path, strerror(errno));
  free(tmp);
}

void trace_close(Trace *t) {
  if (!t) return;
  write_file(t);
  for (int i = 0; i < TRACE_N_LANES; i++) vec_free(&t->events[i]);
  free(t->path);
  free(t);
}
