/* test_fileio.c — graph/fileio.h, the one atomic file write: content
 * replaced whole, no temporary file left after success or failure, errors
 * naming the file, stale temporary files of dead processes removed (of live
 * ones kept), the streaming form (begin, write, commit or abort), and the
 * order of the durable steps: the file is fsynced before the rename and its
 * directory after it. The last is seen through an fsync of our own that
 * this test binary defines: it records what each call synced and forwards
 * to the system call. */
#include "graph/fileio.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- fsync, recorded --------------------------------------------------- */

enum { MAX_SYNCS = 16 };
static struct {
  bool is_dir;
  dev_t dev;
  ino_t ino;
  bool target_exists; /* the file being written was at its final path */
} syncs[MAX_SYNCS];
static int n_syncs;
static const char *watch_path; /* the final path of the write under test */

/* Interposes libc's fsync for this executable (the library calls it). */
int fsync(int fd) {
  struct stat st;
  if (n_syncs < MAX_SYNCS && fstat(fd, &st) == 0) {
    syncs[n_syncs].is_dir = S_ISDIR(st.st_mode);
    syncs[n_syncs].dev = st.st_dev;
    syncs[n_syncs].ino = st.st_ino;
    struct stat t;
    syncs[n_syncs].target_exists = watch_path && stat(watch_path, &t) == 0 && t.st_size > 0;
    n_syncs++;
  }
  return (int)syscall(SYS_fsync, fd);
}

/* ---- helpers ----------------------------------------------------------- */

static char *make_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  char *dir = bc_asprintf("%s/bc_fileio_XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) abort();
  return dir;
}

static void rm_tree(const char *dir) {
  DIR *dp = opendir(dir);
  struct dirent *de;
  while (dp && (de = readdir(dp)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char *p = bc_asprintf("%s/%s", dir, de->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
    else unlink(p);
    free(p);
  }
  if (dp) closedir(dp);
  rmdir(dir);
}

static int count_temp_files(const char *dir) {
  int n = 0;
  DIR *dp = opendir(dir);
  struct dirent *de;
  while (dp && (de = readdir(dp)) != NULL) n += strstr(de->d_name, ".tmp.") != NULL;
  if (dp) closedir(dp);
  return n;
}

static char *slurp(const char *path) {
  Diag d;
  diag_init(&d);
  size_t n;
  char *s = bc_read_file(path, &n, &d);
  diag_free(&d);
  return s;
}

static void touch(const char *path) {
  FILE *f = fopen(path, "w");
  if (f) fclose(f);
}

/* ---- cases ------------------------------------------------------------- */

TEST(replace_whole) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/out.txt", dir);
  Diag d;
  diag_init(&d);
  CHECK(file_write_atomic(path, "first\n", 6, &d));
  CHECK(file_write_atomic(path, "second\n", 7, &d));
  char *text = slurp(path);
  CHECK_STR(text, "second\n");
  free(text);
  CHECK(file_write_atomic(path, "", 0, &d)); /* empty is a content too */
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

/* The file is synced, renamed, then its directory synced. */
TEST(syncs_file_then_directory) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/durable.txt", dir);
  Diag d;
  diag_init(&d);
  n_syncs = 0;
  watch_path = path;
  CHECK(file_write_atomic(path, "data\n", 5, &d));
  watch_path = NULL;
  struct stat sd, sf;
  CHECK(stat(dir, &sd) == 0 && stat(path, &sf) == 0);
  CHECK_EQ_INT(n_syncs, 2);
  if (n_syncs == 2) {
    CHECK(!syncs[0].is_dir && syncs[0].ino == sf.st_ino && syncs[0].dev == sf.st_dev);
    CHECK(!syncs[0].target_exists); /* the file is synced before the rename */
    CHECK(syncs[1].is_dir && syncs[1].ino == sd.st_ino && syncs[1].dev == sd.st_dev);
    CHECK(syncs[1].target_exists); /* the directory after it */
  }
  diag_free(&d);
  rm_tree(dir);
  free(dir);
  free(path);
}

TEST(failures_leave_nothing) {
  char *dir = make_tmpdir();
  Diag d;
  diag_init(&d);
  /* into a missing folder: an error naming the file */
  char *bad = bc_asprintf("%s/missing/out.txt", dir);
  CHECK(!file_write_atomic(bad, "x", 1, &d));
  CHECK(strstr(diag_first(&d), bad) == diag_first(&d));
  CHECK(strstr(diag_first(&d), "cannot create"));
  CHECK(strstr(diag_first(&d), "No such file or directory"));
  free(bad);
  /* over a folder: the rename fails after the temporary file was written;
   * it goes, and the folder stays */
  char *sub = bc_asprintf("%s/sub", dir);
  mkdir(sub, 0700);
  char *inner = bc_asprintf("%s/f", sub);
  touch(inner);
  Diag d2;
  diag_init(&d2);
  CHECK(!file_write_atomic(sub, "x", 1, &d2));
  CHECK(strstr(diag_first(&d2), "cannot rename"));
  CHECK_EQ_INT(count_temp_files(dir), 0);
  struct stat st;
  CHECK(stat(inner, &st) == 0);
  diag_free(&d2);
  free(inner);
  free(sub);
  diag_free(&d);
  rm_tree(dir);
  free(dir);
}

/* begin, write through af.f, then commit or abort. */
TEST(streaming_commit_and_abort) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/plan.txt", dir);
  Diag d;
  diag_init(&d);
  AtomicFile af;
  CHECK(file_atomic_begin(&af, path, &d));
  fprintf(af.f, "kernels: %d\n", 3);
  CHECK(file_atomic_write(&af, "end\n", 4, &d));
  CHECK_EQ_INT(count_temp_files(dir), 1);
  CHECK(access(path, F_OK) != 0); /* nothing at the path before the commit */
  CHECK(file_atomic_commit(&af, &d));
  CHECK(af.f == NULL && af.path == NULL && af.tmp == NULL);
  char *text = slurp(path);
  CHECK_STR(text, "kernels: 3\nend\n");
  free(text);
  CHECK(file_atomic_begin(&af, path, &d));
  fputs("half", af.f);
  file_atomic_abort(&af);
  text = slurp(path);
  CHECK_STR(text, "kernels: 3\nend\n"); /* the old content */
  free(text);
  CHECK_EQ_INT(count_temp_files(dir), 0);
  CHECK_EQ_INT(d.n_errors, 0);
  diag_free(&d);
  rm_tree(dir);
  free(dir);
  free(path);
}

/* Temporary files of the path left by a dead process go; those of a live
 * process, of another path or with a suffix that is no pid stay. */
TEST(stale_temporary_files) {
  char *dir = make_tmpdir();
  char *path = bc_asprintf("%s/m.jsonl", dir);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, NULL, 0); /* a pid that no longer exists */
  char *dead = bc_asprintf("%s.tmp.%ld", path, (long)child);
  char *live = bc_asprintf("%s.tmp.%ld", path, (long)getppid());
  char *odd = bc_asprintf("%s.tmp.12ab", path);
  char *other = bc_asprintf("%s/other.tmp.%ld", dir, (long)child);
  touch(dead), touch(live), touch(odd), touch(other);
  Diag d;
  diag_init(&d);
  CHECK(file_write_atomic(path, "{}\n", 3, &d));
  CHECK(access(dead, F_OK) != 0);
  CHECK(access(live, F_OK) == 0);
  CHECK(access(odd, F_OK) == 0);
  CHECK(access(other, F_OK) == 0);
  diag_free(&d);
  free(dead), free(live), free(odd), free(other);
  rm_tree(dir);
  free(dir);
  free(path);
}

TEST(dir_of) {
  struct {
    const char *path, *dir;
  } cases[] = {{"a/b/c.txt", "a/b"}, {"c.txt", "."}, {"/c.txt", "/"}, {"/x/y", "/x"}, {"a/", "a"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *dir = file_dir_of(cases[i].path);
    CHECK_STR(dir, cases[i].dir);
    free(dir);
  }
}

TEST_MAIN()
