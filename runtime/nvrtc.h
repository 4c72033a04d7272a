/* nvrtc.h — NVRTC loaded at run time (dlopen of libnvrtc.so.13; nothing
 * from CUDA is linked), compiling CUDA C to a CUBIN for one architecture,
 * with an on-disk cache. NVRTC needs no GPU, so code generation is tested on
 * every machine that has the library.
 *
 * Cache: $BC_CACHE_DIR (default $XDG_CACHE_HOME/bertc, else ~/.cache/bertc),
 * one file per CUBIN named by a 64-bit hash of source, architecture, options
 * and the NVRTC version; written atomically (temporary file, rename).
 * BC_CACHE_DIR=off disables it. A cache that cannot be written is skipped
 * silently (compiling still works); a file that is not an ELF image is
 * ignored. Nothing is ever evicted. */
#ifndef BC_NVRTC_H
#define BC_NVRTC_H

#include "../graph/base.h"

#include <stddef.h>

/* True when libnvrtc.so.13 can be loaded (once per process); otherwise adds
 * an error saying why (the dlopen message) when d is not NULL. */
bool rtc_available(Diag *d);

/* "13.0", or "" when NVRTC is not available. */
const char *rtc_version_string(void);

/* Compiles src (name: for messages and files, e.g. "nli_train") for
 * sm_<arch> (90 for H100) with NVRTC's optimizing defaults, no fast math and
 * --fmad=false (a * b + c is not fused, so results match the C oracle),
 * -default-device, --std=c++17, -lineinfo.
 * On success *cubin is a malloc'd image the caller frees (with *n_bytes)
 * and *from_cache says whether it came from the disk cache (may be NULL).
 * On failure writes NAME.cu (the source with line numbers) and NAME.log
 * (NVRTC's log) into the current directory, or $BC_DUMP_DIR when set, and
 * adds an error naming both files and quoting the log's first error. */
bool rtc_compile(const char *src, const char *name, int arch, void **cubin, size_t *n_bytes,
                   bool *from_cache, Diag *d);

#endif
