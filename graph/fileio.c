/* fileio.c — the atomic file write of fileio.h: temporary file, fsync,
 * rename, fsync of the directory.
 *
 * Invariant: the temporary file is always "<path>.tmp.<pid>" and is either
 * renamed over path or unlinked before file_atomic_commit/abort return; only
 * a crash leaves one, and the next write of that path removes it once its
 * process is gone. */
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static SrcLoc at_file(const char *path) { return (SrcLoc){bc_intern(path), 0, 0}; }

char *file_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return bc_strdup(".");
  if (slash == path) return bc_strdup("/");
  char *dir = bc_strdup(path);
  dir[slash - path] = '\0';
  return dir;
}

/* A pid as the temporary file's suffix writes it: 1 to 10 digits. */
static bool parse_pid(const char *s, long *out) {
  size_t n = strlen(s);
  if (n == 0 || n > 10) return false;
  long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return true;
}

/* Removes `<base>.tmp.<pid>` files in the directory of `path` whose process
 * no longer exists (left by a crash during a write). Best effort: any error
 * leaves the file, which nothing ever reads. A file of a live process with a
 * reused pid stays too. */
static void remove_stale_tmps(const char *path) {
  char *dir = file_dir_of(path);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t nb = strlen(base);
  DIR *dp = opendir(dir);
  if (dp) {
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
      const char *nm = de->d_name;
      long pid;
      if (strncmp(nm, base, nb) != 0 || strncmp(nm + nb, ".tmp.", 5) != 0) continue;
      if (!parse_pid(nm + nb + 5, &pid)) continue;
      if (pid <= 0 || pid > INT32_MAX || (pid_t)pid == getpid()) continue;
      if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
      char *full = bc_asprintf("%s/%s", dir, nm);
      unlink(full);
      free(full);
    }
    closedir(dp);
  }
  free(dir);
}

static void atomic_clear(AtomicFile *af) {
  free(af->path);
  free(af->tmp);
  memset(af, 0, sizeof(*af));
}

bool file_atomic_begin(AtomicFile *af, const char *path, Diag *d) {
  memset(af, 0, sizeof(*af));
  remove_stale_tmps(path);
  char *tmp = bc_asprintf("%s.tmp.%ld", path, (long)getpid());
  /* A file of our own pid can only be left by a dead process of the same
   * pid: remove it, then create exclusively, never through a link. */
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    diag_error(d, at_file(path), "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    return false;
  }
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    diag_error(d, at_file(path), "cannot open %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    free(tmp);
    return false;
  }
  af->path = bc_strdup(path);
  af->tmp = tmp;
  af->f = f;
  return true;
}

bool file_atomic_write(AtomicFile *af, const void *data, size_t n, Diag *d) {
  BC_ASSERT(af->f);
  if (af->failed) return false;
  errno = 0; /* so a short write that sets none is not blamed on an old errno */
  if (n && fwrite(data, 1, n, af->f) != n) {
    diag_error(d, at_file(af->path), "cannot write %s: %s", af->tmp,
               errno ? strerror(errno) : "I/O error");
    af->failed = true;
    return false;
  }
  return true;
}

void file_atomic_abort(AtomicFile *af) {
  if (af->f) fclose(af->f);
  if (af->tmp) unlink(af->tmp);
  atomic_clear(af);
}

bool file_atomic_commit(AtomicFile *af, Diag *d) {
  BC_ASSERT(af->f);
  if (af->failed) {
    file_atomic_abort(af);
    return false;
  }
  errno = 0;
  bool wrote = !ferror(af->f) && fflush(af->f) == 0 && fsync(fileno(af->f)) == 0;
  int err = errno;
  FILE *f = af->f;
  af->f = NULL;
  if (fclose(f) != 0 && wrote) wrote = false, err = errno;
  if (!wrote) {
    diag_error(d, at_file(af->path), "cannot write %s: %s", af->tmp, err ? strerror(err) : "I/O error");
    file_atomic_abort(af);
    return false;
  }
  if (rename(af->tmp, af->path) != 0) {
    diag_error(d, at_file(af->path), "cannot rename %s over it: %s", af->tmp, strerror(errno));
    file_atomic_abort(af);
    return false;
  }
  /* The rename is durable only once the directory is synced. Some file
   * systems refuse fsync on a directory (EINVAL): nothing more can be done. */
  char *dir = file_dir_of(af->path);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool synced = dfd >= 0 && (fsync(dfd) == 0 || errno == EINVAL);
  err = errno;
  if (dfd >= 0) close(dfd);
  if (!synced)
    diag_error(d, at_file(af->path), "written, but syncing directory %s failed: %s", dir, strerror(err));
  free(dir);
  atomic_clear(af);
  return synced;
}

bool file_write_atomic(const char *path, const void *data, size_t n, Diag *d) {
  AtomicFile af;
  if (!file_atomic_begin(&af, path, d)) return false;
  if (!file_atomic_write(&af, data, n, d)) {
    file_atomic_abort(&af);
    return false;
  }
  return file_atomic_commit(&af, d);
}
