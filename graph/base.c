/* base.c — assertions, checked allocation, arena, interning, diagnostics.
 * Diagnostics read the offending source line from disk when formatting, so
 * callers only pass a SrcLoc. */
#include "base.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bc_assert_fail(const char *file, int line, const char *cond) {
  fflush(stdout);
  fprintf(stderr, "%s:%d: internal error: assertion failed: %s\n", file, line, cond);
  abort();
}

void *bc_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  BC_ASSERT(p && "out of memory");
  return p;
}
void *bc_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  BC_ASSERT(p && "out of memory");
  return p;
}
void *bc_realloc(void *q, size_t n) {
  void *p = realloc(q, n ? n : 1);
  BC_ASSERT(p && "out of memory");
  return p;
}
char *bc_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(bc_malloc(n), s, n);
}
char *bc_asprintf(const char *fmt, ...) {
  va_list ap, aq;
  va_start(ap, fmt);
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = bc_malloc((size_t)n + 1);
  vsnprintf(s, (size_t)n + 1, fmt, aq);
  va_end(aq);
  return s;
}

/* ---- arena ---- */
struct ArenaBlock {
  ArenaBlock *next;
  size_t used, cap;
  _Alignas(16) unsigned char mem[];
};

void arena_init(Arena *a) { a->head = NULL; }

void *arena_alloc(Arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ArenaBlock *b = a->head;
  if (!b || b->used + n > b->cap) {
    size_t cap = n > 65536 ? n : 65536;
    b = bc_malloc(sizeof(ArenaBlock) + cap);
    b->used = 0;
    b->cap = cap;
    b->next = a->head;
    a->head = b;
  }
  void *p = b->mem + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

char *arena_strdup(Arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(arena_alloc(a, n), s, n);
}

char *arena_printf(Arena *a, const char *fmt, ...) {
  va_list ap, aq;
  va_start(ap, fmt);
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = arena_alloc(a, (size_t)n + 1);
  vsnprintf(s, (size_t)n + 1, fmt, aq);
  va_end(aq);
  return s;
}

void arena_free(Arena *a) {
  ArenaBlock *b = a->head;
  while (b) {
    ArenaBlock *n = b->next;
    free(b);
    b = n;
  }
  a->head = NULL;
}

uint32_t bc_hash32(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* ---- interning: open-addressing hash set, never freed ---- */
static struct {
  const char **slots;
  size_t cap, n;
  Arena arena;
} interned;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

const char *bc_intern(const char *s) {
  if (!s) return NULL;
  if (interned.n * 2 >= interned.cap) {
    size_t nc = interned.cap ? interned.cap * 2 : 1024;
    const char **ns = bc_calloc(nc, sizeof(*ns));
    for (size_t i = 0; i < interned.cap; i++) {
      const char *t = interned.slots[i];
      if (!t) continue;
      size_t j = hash_str(t) & (nc - 1);
      while (ns[j]) j = (j + 1) & (nc - 1);
      ns[j] = t;
    }
    free(interned.slots);
    interned.slots = ns;
    interned.cap = nc;
  }
  size_t j = hash_str(s) & (interned.cap - 1);
  while (interned.slots[j]) {
    if (strcmp(interned.slots[j], s) == 0) return interned.slots[j];
    j = (j + 1) & (interned.cap - 1);
  }
  const char *t = arena_strdup(&interned.arena, s);
  interned.slots[j] = t;
  interned.n++;
  return t;
}

/* ---- diagnostics ---- */
void diag_init(Diag *d) {
  memset(d, 0, sizeof(*d));
  d->max_errors = 20;
}

void diag_free(Diag *d) {
  for (int i = 0; i < d->msgs.n; i++) free(d->msgs.data[i]);
  vec_free(&d->msgs);
  d->n_errors = 0;
  d->n_unlisted = 0;
}

/* Line `line` (1-based) of `file`, without its newline, or NULL. */
static char *source_line(const char *file, int line) {
  if (!file || line <= 0) return NULL;
  FILE *f = fopen(file, "rb");
  if (!f) return NULL;
  int cur = 1, c;
  VEC(char) buf = {0};
  while (cur < line && (c = fgetc(f)) != EOF)
    if (c == '\n') cur++;
  if (cur == line) {
    while ((c = fgetc(f)) != EOF && c != '\n' && c != '\r') vec_push(&buf, (char)c);
  }
  fclose(f);
  if (cur != line) {
    free(buf.data);
    return NULL;
  }
  vec_push(&buf, '\0');
  return buf.data;
}

/* Whether a formatted message's heading line is an error (not a note). */
static bool is_error_msg(const char *m) {
  const char *nl = strchr(m, '\n');
  size_t n = nl ? (size_t)(nl - m) : strlen(m);
  if (strncmp(m, "error: ", 7) == 0) return true;
  const char *p = strstr(m, ": error: ");
  return p && (size_t)(p - m) < n;
}

/* Appends `msg` (owned) unless the same text is listed already or the list
 * is full; then frees it. */
static void list_message(Diag *d, char *msg) {
  for (int i = 0; i < d->msgs.n; i++)
    if (strcmp(d->msgs.data[i], msg) == 0) {
      free(msg);
      return;
    }
  if (d->msgs.n >= d->max_errors) {
    if (is_error_msg(msg)) d->n_unlisted++;
    free(msg);
    return;
  }
  vec_push(&d->msgs, msg);
}

static void add_message(Diag *d, SrcLoc loc, const char *kind, const char *fmt, va_list ap) {
  if (d->msgs.n >= d->max_errors) {
    if (strcmp(kind, "error") == 0) d->n_unlisted++;
    return;
  }
  char *msg;
  {
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    msg = bc_malloc((size_t)n + 1);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
  }
  char *head;
  if (loc.file && loc.line > 0)
    head = bc_asprintf("%s:%d:%d: %s: %s", loc.file, loc.line, loc.col > 0 ? loc.col : 1, kind, msg);
  else if (loc.file)
    head = bc_asprintf("%s: %s: %s", loc.file, kind, msg);
  else
    head = bc_asprintf("%s: %s", kind, msg);
  free(msg);
  char *src = source_line(loc.file, loc.line);
  char *full = head;
  if (src) {
    int col = loc.col > 0 ? loc.col : 1;
    int len = (int)strlen(src);
    char *caret = bc_malloc((size_t)col + 2);
    /* keep tabs so the caret lines up under the same column */
    for (int i = 0; i < col - 1; i++) caret[i] = (i < len && src[i] == '\t') ? '\t' : ' ';
    caret[col - 1] = '^';
    caret[col] = '\0';
    full = bc_asprintf("%s\n  %s\n  %s", head, src, caret);
    free(caret);
    free(head);
    free(src);
  }
  list_message(d, full);
}

void diag_verror(Diag *d, SrcLoc loc, const char *fmt, va_list ap) {
  d->n_errors++;
  add_message(d, loc, "error", fmt, ap);
}

void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, loc, fmt, ap);
  va_end(ap);
}

void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  add_message(d, loc, "note", fmt, ap);
  va_end(ap);
}

void diag_print(const Diag *d, FILE *f) {
  for (int i = 0; i < d->msgs.n; i++) fprintf(f, "%s\n", d->msgs.data[i]);
  if (d->n_unlisted > 0) fprintf(f, "(%d more errors not shown)\n", d->n_unlisted);
}

const char *diag_first(const Diag *d) { return d->msgs.n ? d->msgs.data[0] : ""; }

void diag_merge(Diag *d, Diag *from) {
  for (int i = 0; i < from->msgs.n; i++) list_message(d, from->msgs.data[i]);
  d->n_errors += from->n_errors;
  d->n_unlisted += from->n_unlisted;
  from->msgs.n = 0;
  from->n_errors = 0;
  from->n_unlisted = 0;
}

char *bc_read_file(const char *path, size_t *n_bytes, Diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    diag_error(d, (SrcLoc){bc_intern(path), 0, 0}, "cannot open file: %s", strerror(errno));
    return NULL;
  }
  VEC(char) buf = {0};
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    vec_reserve(&buf, buf.n + (int)got + 1);
    memcpy(buf.data + buf.n, chunk, got);
    buf.n += (int)got;
  }
  bool err = ferror(f);
  fclose(f);
  if (err) {
    free(buf.data);
    diag_error(d, (SrcLoc){bc_intern(path), 0, 0}, "read error");
    return NULL;
  }
  vec_reserve(&buf, buf.n + 1);
  buf.data[buf.n] = '\0';
  if (n_bytes) *n_bytes = (size_t)buf.n;
  return buf.data;
}
