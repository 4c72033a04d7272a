/* nvrtc.c — NVRTC through dlopen (nvrtc.h): CUDA C to a CUBIN for one
 * architecture, with an on-disk cache keyed by a 64-bit FNV-1a hash of the
 * source, the options (architecture included) and the NVRTC version; an
 * entry is written atomically (graph/fileio.h), and a failed write is not a
 * failed compile.
 *
 * The few NVRTC entry points are declared here by hand (nvrtcResult is an
 * int enum, 0 = success; nvrtcProgram an opaque pointer), so nothing depends
 * on CUDA headers. Options: --gpu-architecture=sm_<arch> -default-device
 * --std=c++17 -lineinfo --fmad=false; no fast math (IEEE division and
 * square root, NVRTC's defaults) and no contraction of a * b + c into an
 * FMA, so + - * / round as in codegen/kernel_eval.c.
 *
 * Not here: loading modules or anything else of the driver (runtime/cuda.c).
 * Invariant: the library is loaded once per process (pthread_once); a
 * compile touches only its own program, so calls may run on any thread. */
#include "nvrtc.h"

#include "../graph/fileio.h"
#include "../graph/strbuf.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int RtcResult;    /* nvrtcResult; 0 is NVRTC_SUCCESS */
typedef void *RtcProgram; /* nvrtcProgram */
typedef RtcResult (*RtcCreateFn)(RtcProgram *prog, const char *src, const char *name, int n_headers,
                                 const char *const *headers, const char *const *include_names);
typedef RtcResult (*RtcCompileFn)(RtcProgram prog, int n_options, const char *const *options);
typedef RtcResult (*RtcSizeFn)(RtcProgram prog, size_t *n_bytes);
typedef RtcResult (*RtcGetFn)(RtcProgram prog, char *out);
typedef RtcResult (*RtcDestroyFn)(RtcProgram *prog);
typedef const char *(*RtcErrorStringFn)(RtcResult r);
typedef RtcResult (*RtcVersionFn)(int *major, int *minor);

static struct {
  void *lib;
  char why[512];     /* why loading failed */
  char version[32];  /* "13.0" */
  RtcCreateFn create;
  RtcCompileFn compile;
  RtcSizeFn cubin_size, log_size;
  RtcGetFn cubin, log;
  RtcDestroyFn destroy;
  RtcErrorStringFn error_string;
  RtcVersionFn version_fn;
} R;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void) {
  /* The toolkit's own folders last: a CUDA install need not be on the
   * loader's path. */
  static const char *const names[] = {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                                      "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.13"};
  for (size_t i = 0; i < sizeof names / sizeof *names && !R.lib; i++) {
    R.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!R.lib && i == 0) {
      const char *e = dlerror();
      snprintf(R.why, sizeof R.why, "dlopen(%s) failed: %s", names[i], e ? e : "unknown error");
    }
  }
  if (!R.lib) return;
  struct {
    const char *sym;
    void **slot;
  } syms[] = {
      {"nvrtcCreateProgram", (void **)&R.create},       {"nvrtcCompileProgram", (void **)&R.compile},
      {"nvrtcGetCUBINSize", (void **)&R.cubin_size},    {"nvrtcGetCUBIN", (void **)&R.cubin},
      {"nvrtcGetProgramLogSize", (void **)&R.log_size}, {"nvrtcGetProgramLog", (void **)&R.log},
      {"nvrtcDestroyProgram", (void **)&R.destroy},     {"nvrtcGetErrorString", (void **)&R.error_string},
      {"nvrtcVersion", (void **)&R.version_fn},
  };
  for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
    *syms[i].slot = dlsym(R.lib, syms[i].sym);
    if (!*syms[i].slot) {
      snprintf(R.why, sizeof R.why, "dlsym(%s) failed: libnvrtc has no such symbol (too old?)", syms[i].sym);
      dlclose(R.lib);
      R.lib = NULL;
      return;
    }
  }
  int major = 0, minor = 0;
  if (R.version_fn(&major, &minor) != 0) {
    snprintf(R.why, sizeof R.why, "nvrtcVersion failed");
    dlclose(R.lib);
    R.lib = NULL;
    return;
  }
  snprintf(R.version, sizeof R.version, "%d.%d", major, minor);
}

bool rtc_available(Diag *d) {
  pthread_once(&load_once, load);
  if (!R.lib && d) diag_error(d, SRCLOC_NONE, "nvrtc.c: cannot load NVRTC: %s", R.why);
  return R.lib != NULL;
}

const char *rtc_version_string(void) {
  pthread_once(&load_once, load);
  return R.lib ? R.version : "";
}

/* ---- the cache ------------------------------------------------------------------ */

static uint64_t fnv1a64(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* The cache directory (malloc'd), or NULL when off or unknown. */
static char *cache_dir(void) {
  const char *e = getenv("BC_CACHE_DIR");
  if (e && strcmp(e, "off") == 0) return NULL;
  if (e && *e) return bc_strdup(e);
  e = getenv("XDG_CACHE_HOME");
  if (e && *e) return bc_asprintf("%s/bertc", e);
  e = getenv("HOME");
  if (e && *e) return bc_asprintf("%s/.cache/bertc", e);
  return NULL;
}

/* mkdir -p; false when some part cannot be made. */
static bool make_dirs(const char *path) {
  char *p = bc_strdup(path);
  bool ok = true;
  for (char *s = p + 1; ok; s++) {
    if (*s != '/' && *s != 0) continue;
    char c = *s;
    *s = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) ok = false;
    *s = c;
    if (!c) break;
  }
  free(p);
  return ok;
}

/* The whole file if it looks like a CUBIN (an ELF image), else NULL. */
static void *read_cubin(const char *path, size_t *n_bytes) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  void *buf = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
  if (n >= 16 && n < (1L << 30) && fseek(f, 0, SEEK_SET) == 0) {
    buf = bc_malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n || memcmp(buf, "\x7f" "ELF", 4) != 0) {
      free(buf);
      buf = NULL;
    }
  }
  fclose(f);
  if (buf) *n_bytes = (size_t)n;
  return buf;
}

/* Best effort, through the one atomic write (graph/fileio.h), so a reader
 * finds a whole CUBIN or none. A failed write costs only a compile next
 * time, never this one: its error is dropped. fileio.h allows one write of
 * a path at a time per process, and compiles may run on several threads. */
static void write_cubin(const char *dir, const char *path, const void *data, size_t n) {
  static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;
  if (!make_dirs(dir)) return;
  Diag dropped;
  diag_init(&dropped);
  pthread_mutex_lock(&write_mu);
  file_write_atomic(path, data, n, &dropped);
  pthread_mutex_unlock(&write_mu);
  diag_free(&dropped);
}

/* ---- failures --------------------------------------------------------------------- */

/* The first line of the log that reports an error (else its first line). */
static void first_error(const char *log, char *b, size_t n) {
  const char *pick = NULL, *first = NULL;
  for (const char *s = log; s && *s;) {
    const char *e = strchr(s, '\n');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (len && !first) first = s;
    for (size_t i = 0; !pick && i + 5 <= len; i++)
      if (memcmp(s + i, "error", 5) == 0) pick = s;
    if (pick) break;
    s = e ? e + 1 : NULL;
  }
  if (!pick) pick = first;
  if (!pick) {
    snprintf(b, n, "(empty log)");
    return;
  }
  const char *e = strchr(pick, '\n');
  int len = e ? (int)(e - pick) : (int)strlen(pick);
  snprintf(b, n, "%.*s", len, pick);
}

/* NAME.cu (numbered lines) and NAME.log beside each other, each written
 * atomically; their paths in *cu and *lg (malloc'd) when written, NULL when
 * not (the compile's own error says so). */
static void dump_failure(const char *src, const char *name, const char *log, char **cu, char **lg) {
  const char *dir = getenv("BC_DUMP_DIR");
  if (!dir || !*dir) dir = ".";
  else make_dirs(dir);
  *cu = bc_asprintf("%s/%s.cu", dir, name);
  *lg = bc_asprintf("%s/%s.log", dir, name);
  StrBuf b = {0};
  int no = 1;
  for (const char *s = src; *s;) {
    const char *e = strchr(s, '\n');
    int len = e ? (int)(e - s) : (int)strlen(s);
    strbuf_printf(&b, "%5d  %.*s\n", no++, len, s);
    s = e ? e + 1 : s + len;
  }
  Diag dropped;
  diag_init(&dropped);
  if (!file_write_atomic(*cu, b.data ? b.data : "", b.n, &dropped)) {
    free(*cu);
    *cu = NULL;
  }
  if (!log) log = "";
  if (!file_write_atomic(*lg, log, strlen(log), &dropped)) {
    free(*lg);
    *lg = NULL;
  }
  diag_free(&dropped);
  strbuf_free(&b);
}

/* ---- compiling ----------------------------------------------------------------------- */

bool rtc_compile(const char *src, const char *name, int arch, void **cubin, size_t *n_bytes, bool *from_cache,
                   Diag *d) {
  *cubin = NULL;
  *n_bytes = 0;
  if (from_cache) *from_cache = false;
  if (!rtc_available(d)) return false;
  /* a file name: keep [A-Za-z0-9_.-] */
  char fname[128];
  snprintf(fname, sizeof fname, "%s", name && *name ? name : "kernels");
  for (char *s = fname; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
          *s == '-' || (*s == '.' && s != fname)))
      *s = '_';
  char arch_opt[48];
  snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=sm_%d", arch);
  const char *opts[] = {arch_opt, "-default-device", "--std=c++17", "-lineinfo", "--fmad=false"};
  const int n_opts = (int)(sizeof opts / sizeof *opts);

  uint64_t h = fnv1a64(0xcbf29ce484222325ull, "bertc-nvrtc-1", 14);
  h = fnv1a64(h, src, strlen(src) + 1);
  for (int i = 0; i < n_opts; i++) h = fnv1a64(h, opts[i], strlen(opts[i]) + 1);
  h = fnv1a64(h, R.version, strlen(R.version) + 1);
  char *dir = cache_dir(), *path = NULL;
  if (dir) {
    path = bc_asprintf("%s/%016llx.cubin", dir, (unsigned long long)h);
    void *hit = read_cubin(path, n_bytes);
    if (hit) {
      *cubin = hit;
      if (from_cache) *from_cache = true;
      free(dir);
      free(path);
      return true;
    }
  }

  bool ok = false;
  RtcProgram prog = NULL;
  char *log = NULL, *cu = NULL, *lg = NULL, unit[160];
  snprintf(unit, sizeof unit, "%s.cu", fname);
  RtcResult r = R.create(&prog, src, unit, 0, NULL, NULL);
  if (r != 0) {
    diag_error(d, SRCLOC_NONE, "nvrtc.c: nvrtcCreateProgram(%s) failed: %s", unit, R.error_string(r));
    prog = NULL;
    goto cleanup;
  }
  RtcResult rc = R.compile(prog, n_opts, opts);
  size_t n_log = 0;
  if (R.log_size(prog, &n_log) == 0 && n_log > 0) {
    log = bc_calloc(n_log + 1, 1);
    if (R.log(prog, log) != 0) log[0] = 0;
  }
  if (rc != 0) {
    char first[512];
    first_error(log, first, sizeof first);
    if (!log || !*log) snprintf(first, sizeof first, "%s", R.error_string(rc));
    dump_failure(src, fname, log, &cu, &lg);
    diag_error(d, SRCLOC_NONE, "nvrtc.c: nvrtcCompileProgram(%s, sm_%d) failed: %s\n  source: %s\n  log: %s", unit,
               arch, first, cu ? cu : "(could not be written)", lg ? lg : "(could not be written)");
    goto cleanup;
  }
  size_t n = 0;
  if ((r = R.cubin_size(prog, &n)) != 0 || n == 0) {
    diag_error(d, SRCLOC_NONE, "nvrtc.c: nvrtcGetCUBINSize(%s) failed: %s", unit,
               r ? R.error_string(r) : "empty CUBIN");
    goto cleanup;
  }
  *cubin = bc_malloc(n);
  if ((r = R.cubin(prog, *cubin)) != 0) {
    diag_error(d, SRCLOC_NONE, "nvrtc.c: nvrtcGetCUBIN(%s) failed: %s", unit, R.error_string(r));
    free(*cubin);
    *cubin = NULL;
    goto cleanup;
  }
  *n_bytes = n;
  if (path) write_cubin(dir, path, *cubin, n);
  ok = true;
cleanup:
  if (prog) R.destroy(&prog);
  free(log);
  free(cu);
  free(lg);
  free(dir);
  free(path);
  return ok;
}
