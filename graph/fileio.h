/* fileio.h — the one atomic file write of bertc: checkpoints, metrics.jsonl
 * rewrites, curves.svg, vocab.txt, the plan files of `bertc compile -o` and
 * `--dot`, the BC_TRACE trace, the NVRTC cache and benchmark results.
 *
 * A write goes to "<path>.tmp.<pid>" (created exclusively, never through a
 * link), is flushed and fsynced, renamed over `path`, and the directory is
 * fsynced so the rename itself survives a crash: readers and a crash at any
 * moment see the old file or the new one, never a part. Temporary files of
 * the same path left by processes that no longer exist are removed first.
 * One write of a given path at a time per process (the pid names the
 * temporary file). Errors name `path` and the system's message.
 *
 * Not here: appending (metrics.jsonl grows by plain appends), locking. */
#ifndef BC_FILEIO_H
#define BC_FILEIO_H

#include "base.h"

/* A replacement of `path` in progress: write to `f`, then commit or abort. */
typedef struct {
  char *path, *tmp; /* owned */
  FILE *f;          /* the temporary file, open for writing */
  bool failed;      /* a file_atomic_write failed (its error is recorded) */
} AtomicFile;

/* Creates the temporary file. False with an error (af is then empty and
 * needs neither commit nor abort). */
bool file_atomic_begin(AtomicFile *af, const char *path, Diag *d);

/* fwrite that records an error naming the temporary file at once (with the
 * errno of the failing call); later writes after a failure do nothing. */
bool file_atomic_write(AtomicFile *af, const void *data, size_t n, Diag *d);

/* Flushes, fsyncs and closes the temporary file, renames it over path and
 * fsyncs the directory. Frees af whatever happens. On failure the temporary
 * file is removed and path is untouched, except when only the directory
 * fsync failed: the new file is then in place but its durability is not
 * confirmed (the error says so). A stream error on af->f (a printer that
 * wrote to it directly) fails the commit. */
bool file_atomic_commit(AtomicFile *af, Diag *d);

/* Gives up: closes and removes the temporary file, frees af. Safe on an
 * empty af. */
void file_atomic_abort(AtomicFile *af);

/* data[0, n) as the whole new content of path: begin, write, commit. */
bool file_write_atomic(const char *path, const void *data, size_t n, Diag *d);

/* The directory part of path ("." when it has none, "/" for "/x"); the
 * caller frees it. */
char *file_dir_of(const char *path);

#endif
