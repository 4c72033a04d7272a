/* trace.h — the BC_TRACE Chrome trace of one process: timed spans (kernels,
 * training steps, gradient all-reduces and waits) on a few lanes, one per
 * thread that records, written as Chrome's trace format (chrome://tracing,
 * Perfetto) when the trace is closed. One-process runs write one; each rank
 * of a data-parallel run writes its own (runtime/dist.c opens it).
 *
 * Not here: deciding what to record (dist.c's hooks, the training loop).
 * A lane is appended to by one thread only; nothing here locks. */
#ifndef BC_TRACE_H
#define BC_TRACE_H

#include "../graph/base.h"

enum { TRACE_TRAINING, TRACE_COMMUNICATION, TRACE_N_LANES };

typedef struct {
  const char *name, *cat; /* must outlive the trace (literals, interned) */
  double t0, t1;          /* ns, CLOCK_MONOTONIC (trace_now_ns) */
  int64_t step;
  int index;     /* kernel or bucket; -1 */
  int64_t bytes; /* all-reduce */
  bool last_grad;
} TraceEvent;

typedef struct Trace Trace;

/* A trace to be written to `path`, its process named "rank <pid>". */
Trace *trace_open(const char *path, int pid);
/* Adds ev to lane `lane` (TRACE_*); nothing for t == NULL; past a million
 * events a lane drops the rest. */
void trace_add(Trace *t, int lane, TraceEvent ev);
/* Writes the trace (to a temporary file, renamed) and frees t; a failure to
 * write is reported on stderr, not to the caller: the run itself went
 * well. NULL: nothing. */
void trace_close(Trace *t);
double trace_now_ns(void);

#endif
