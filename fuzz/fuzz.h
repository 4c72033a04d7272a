/* fuzz.h — what the libFuzzer harnesses of fuzz/ share: the input as a file
 * for readers that take a path (a memfd named /proc/self/fd/N, rewritten per
 * input; nothing touches the disk), and a sink for diagnostics so their
 * formatting runs too. Header-only; each harness is one program. */
#ifndef BC_FUZZ_H
#define BC_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "graph/base.h"

/* A path whose file holds data[0..n) until the next call. */
static inline const char *fuzz_as_file(const uint8_t *data, size_t n) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("bc_fuzz_input", 0);
    if (fd < 0) {
      perror("memfd_create");
      abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0) abort();
  size_t done = 0;
  while (done < n) {
    ssize_t w = pwrite(fd, data + done, n - done, (off_t)done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  return path;
}

/* Prints d's messages (to stderr with BC_FUZZ_VERBOSE=1, else where nobody
 * reads them, so that their formatting runs) and frees d. */
static inline void fuzz_diag_done(Diag *d) {
  static FILE *sink;
  if (!sink) sink = getenv("BC_FUZZ_VERBOSE") ? stderr : fopen("/dev/null", "w");
  if (sink) diag_print(d, sink);
  diag_free(d);
}

#endif
