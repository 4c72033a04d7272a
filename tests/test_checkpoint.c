/* test_checkpoint.c — safetensors checkpoints (runtime/checkpoint.h): a
 * bit-exact round trip of parameters and optimizer state (f32 and i32,
 * scalars, special floats), metadata round trip, the file read back by an
 * independent minimal parser here, initialization of a bigger graph from a
 * smaller one's parameters, refusals (truncation at every byte, every
 * header byte corrupted, a fuzz run, hand-made bad headers, wrong shapes,
 * missing tensors, vocabulary mismatch), each a diagnostic naming the file,
 * and atomicity: a child saving a ~24 MB checkpoint in a loop is SIGKILLed
 * at random moments, and the file left is always a whole old or new one.
 *
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed at the end. */
#include "runtime/checkpoint.h"
#include "tasks/train_util.h"
#include "tests/test.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------- */

static char tmp_dir[512];
static void remove_tmp_dir(void);

/* A path in this test's temporary directory (static buffer per slot). */
static const char *tpath(int slot, const char *name) {
  static char bufs[8][700];
  if (!tmp_dir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/bc_ckpt_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
      fprintf(stderr, "mkdtemp(%s): %s\n", tmp_dir, strerror(errno));
      abort();
    }
    atexit(remove_tmp_dir); /* the forked children leave by _exit or SIGKILL */
  }
  snprintf(bufs[slot], sizeof bufs[slot], "%s/%s", tmp_dir, name);
  return bufs[slot];
}

static void remove_tmp_dir(void) {
  if (!tmp_dir[0]) return;
  DIR *dp = opendir(tmp_dir);
  if (dp) {
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
      char full[1024];
      snprintf(full, sizeof full, "%s/%s", tmp_dir, de->d_name);
      if (unlink(full) != 0) rmdir(full);
    }
    closedir(dp);
  }
  rmdir(tmp_dir);
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)sz + 1);
  *n = fread(b, 1, (size_t)sz, f);
  fclose(f);
  return b;
}

static void write_all(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, n, f) == n);
  fclose(f);
}

/* A safetensors file from header text `json` (no padding) and raw data. */
static void write_raw(const char *path, const char *json, const void *data, size_t n_data) {
  size_t nj = strlen(json);
  unsigned char *b = malloc(8 + nj + n_data + 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)nj >> (8 * i));
  memcpy(b + 8, json, nj);
  if (n_data) memcpy(b + 8 + nj, data, n_data);
  write_all(path, b, 8 + nj + n_data);
  free(b);
}

static Exec *make_exec(const Graph *g) {
  Diag d;
  diag_init(&d);
  Exec *e = exec_create(&backend_interp, g, &d);
  if (!e) diag_print(&d, stderr);
  CHECK(e != NULL);
  diag_free(&d);
  return e;
}

static void init_exec(Exec *e, uint64_t seed) {
  Diag d;
  diag_init(&d);
  CHECK(exec_init_params(e, seed, &d));
  diag_free(&d);
}

static bool save_ok(const char *path, Exec *e, const CheckpointMeta *m) {
  Diag d;
  diag_init(&d);
  bool ok = checkpoint_save(path, e, m, &d);
  if (!ok) diag_print(&d, stderr);
  diag_free(&d);
  return ok;
}

/* Raw 4-byte words of value v (f32 or i32 as stored). */
static uint32_t *read_words(Exec *e, ValueId v) {
  const Value *val = &e->graph->values.data[v];
  size_t n = (size_t)shape_numel(&val->shape);
  uint32_t *w = malloc(n * 4 + 4);
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, v, w, val->dtype, &d));
  diag_free(&d);
  return w;
}

/* Values of `names` equal bit for bit in two Execs (by name). */
static bool same_values(Exec *a, Exec *b, const char *name) {
  ValueId va = graph_find(a->graph, name), vb = graph_find(b->graph, name);
  if (va < 0 || vb < 0) return false;
  size_t n = (size_t)shape_numel(&a->graph->values.data[va].shape);
  uint32_t *x = read_words(a, va), *y = read_words(b, vb);
  bool eq = memcmp(x, y, n * 4) == 0;
  free(x);
  free(y);
  return eq;
}

/* Loads with `mode`; returns the count (or -1) and leaves the first message
 * in msg (caller-provided, 4096 bytes). */
static int load(const char *path, Exec *e, CheckpointLoadMode mode, const char *vocab,
                CheckpointMeta *meta, char *msg) {
  Diag d;
  diag_init(&d);
  CheckpointLoadOptions o = {mode, vocab};
  CheckpointMeta local;
  int n = checkpoint_load(path, e, &o, meta ? meta : &local, &d);
  if (!meta) checkpoint_meta_free(&local);
  if (msg) {
    msg[0] = '\0';
    for (int i = 0; i < d.msgs.n; i++) {
      size_t at = strlen(msg);
      snprintf(msg + at, 4096 - at, "%s\n", d.msgs.data[i]);
    }
  }
  if (n < 0) CHECK(d.n_errors > 0);
  else CHECK(d.n_errors == 0);
  diag_free(&d);
  return n;
}

#define CHECK_HAS(msg, sub) CHECK_MSG(strstr((msg), (sub)) != NULL, "no \"%s\" in:\n%s", sub, msg)

/* The small model: params of several shapes, an i32 state, Adam-like states
 * and a scalar. */
static void small_graph(Graph *g, const char *name, int dim) {
  graph_init(g, name);
  Init xav = {INIT_XAVIER, 0}, nrm = {INIT_NORMAL, 0.02}, z = {INIT_ZEROS, 0}, one = {INIT_ONES, 0};
  graph_add_param(g, "encoder.blk.0.attention.W_q.W", DTYPE_F32, shape_of(2, dim, dim), xav,
                  SRCLOC_NONE);
  graph_add_param(g, "encoder.blk.0.attention.W_q.b", DTYPE_F32, shape_of(1, dim), nrm,
                  SRCLOC_NONE);
  graph_add_param(g, "encoder.ln.gamma", DTYPE_F32, shape_of(1, dim), one, SRCLOC_NONE);
  graph_add_state(g, "encoder.blk.0.attention.W_q.W.adam_m", DTYPE_F32, shape_of(2, dim, dim), nrm,
                  SRCLOC_NONE);
  graph_add_state(g, "encoder.blk.0.attention.W_q.W.adam_v", DTYPE_F32, shape_of(2, dim, dim), z,
                  SRCLOC_NONE);
  graph_add_state(g, "counts", DTYPE_I32, shape_of(2, 2, 3), z, SRCLOC_NONE);
  graph_add_state(g, "adam.t", DTYPE_F32, shape_of(0), z, SRCLOC_NONE);
  vec_push(&g->hparams, ((HParam){bc_intern("d_model"), (double)dim}));
  vec_push(&g->hparams, ((HParam){bc_intern("lr"), 1e-4}));
  vec_push(&g->hparams, ((HParam){bc_intern("dropout"), 0.1}));
}

/* Puts special values into the small graph: signed zero, subnormal,
 * infinity, NaN, extremes, and i32 values incl. INT32_MIN. */
static void put_specials(Exec *e) {
  const Graph *g = e->graph;
  Diag d;
  diag_init(&d);
  ValueId b = graph_find(g, "encoder.blk.0.attention.W_q.b");
  float fb[64] = {-0.0f, 1e-45f, INFINITY, NAN, -FLT_MAX, FLT_MIN, -INFINITY, 3.0f};
  CHECK(shape_numel(&g->values.data[b].shape) <= 64);
  CHECK(exec_write(e, b, fb, DTYPE_F32, &d));
  ValueId c = graph_find(g, "counts");
  int32_t ic[6] = {INT32_MIN, -1, 0, 1, 123456789, INT32_MAX};
  CHECK(exec_write(e, c, ic, DTYPE_I32, &d));
  ValueId t = graph_find(g, "adam.t");
  float ft = 17.0f;
  CHECK(exec_write(e, t, &ft, DTYPE_F32, &d));
  diag_free(&d);
}

static void all_names(const Graph *g, void (*fn)(const char *, void *), void *ctx) {
  for (int i = 0; i < g->params.n; i++) fn(g->values.data[g->params.data[i]].name, ctx);
  for (int i = 0; i < g->states.n; i++) fn(g->values.data[g->states.data[i]].name, ctx);
}

typedef struct {
  Exec *a, *b;
  int n_diff;
} PairCtx;
static void cmp_one(const char *name, void *p) {
  PairCtx *c = p;
  if (!same_values(c->a, c->b, name)) {
    fprintf(stderr, "  value %s differs\n", name);
    c->n_diff++;
  }
}

/* A saved small checkpoint at `path` (dim 4: the file is ~1 KB). */
static void save_small(const char *path, int dim, const char *vocab) {
  Graph g;
  small_graph(&g, "pretrain", dim);
  Exec *e = make_exec(&g);
  init_exec(e, 7);
  put_specials(e);
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  m.step = 42;
  m.seed = 7;
  if (vocab) m.vocab_hash = strdup(vocab);
  CHECK(save_ok(path, e, &m));
  checkpoint_meta_free(&m);
  exec_destroy(e);
  graph_free(&g);
}

/* ---- an independent reader of the file format ------------------------------ */

/* Just enough JSON for a safetensors header written by anyone: objects,
 * arrays, strings with simple escapes, integers. */
typedef struct {
  const char *s;
  size_t n, i;
  bool bad;
} Mini;

static void mini_ws(Mini *m) {
  while (m->i < m->n && strchr(" \t\r\n", m->s[m->i]) && m->s[m->i]) m->i++;
}
static bool mini_eat(Mini *m, char c) {
  mini_ws(m);
  if (m->i < m->n && m->s[m->i] == c) {
    m->i++;
    return true;
  }
  return false;
}
/* A string into out (truncated to cap), handling \" \\ \n \t \uXXXX (ASCII). */
static void mini_str(Mini *m, char *out, size_t cap) {
  size_t k = 0;
  if (!mini_eat(m, '"')) {
    m->bad = true;
    return;
  }
  while (m->i < m->n && m->s[m->i] != '"') {
    char c = m->s[m->i++];
    if (c == '\\' && m->i < m->n) {
      char e = m->s[m->i++];
      if (e == 'n') c = '\n';
      else if (e == 't') c = '\t';
      else if (e == 'u' && m->i + 4 <= m->n) {
        unsigned v = 0;
        sscanf(m->s + m->i, "%4x", &v);
        m->i += 4;
        c = (char)v;
      } else c = e;
    }
    if (k + 1 < cap) out[k++] = c;
  }
  out[k] = '\0';
  if (!mini_eat(m, '"')) m->bad = true;
}
static long long mini_int(Mini *m) {
  mini_ws(m);
  char *end;
  long long v = strtoll(m->s + m->i, &end, 10);
  if (end == m->s + m->i) m->bad = true;
  m->i = (size_t)(end - m->s);
  return v;
}

typedef struct {
  char name[128], dtype[8];
  int rank;
  long long shape[8], begin, end;
} MiniTensor;

typedef struct {
  MiniTensor t[32];
  int n;
  char meta_keys[16][32], meta_vals[16][256];
  int n_meta;
} MiniHeader;

static bool mini_parse(const char *s, size_t n, MiniHeader *h) {
  Mini m = {s, n, 0, false};
  memset(h, 0, sizeof(*h));
  if (!mini_eat(&m, '{')) return false;
  do {
    char key[128];
    mini_str(&m, key, sizeof key);
    if (!mini_eat(&m, ':') || !mini_eat(&m, '{')) return false;
    if (strcmp(key, "__metadata__") == 0) {
      do {
        if (h->n_meta >= 16) return false;
        mini_str(&m, h->meta_keys[h->n_meta], 32);
        if (!mini_eat(&m, ':')) return false;
        mini_str(&m, h->meta_vals[h->n_meta], 256);
        h->n_meta++;
      } while (mini_eat(&m, ','));
    } else {
      if (h->n >= 32) return false;
      MiniTensor *t = &h->t[h->n++];
      snprintf(t->name, sizeof t->name, "%s", key);
      do {
        char f[32];
        mini_str(&m, f, sizeof f);
        if (!mini_eat(&m, ':')) return false;
        if (strcmp(f, "dtype") == 0) mini_str(&m, t->dtype, sizeof t->dtype);
        else if (strcmp(f, "shape") == 0) {
          if (!mini_eat(&m, '[')) return false;
          if (!mini_eat(&m, ']')) {
            do t->shape[t->rank++] = mini_int(&m);
            while (t->rank < 8 && mini_eat(&m, ','));
            if (!mini_eat(&m, ']')) return false;
          }
        } else if (strcmp(f, "data_offsets") == 0) {
          if (!mini_eat(&m, '[')) return false;
          t->begin = mini_int(&m);
          if (!mini_eat(&m, ',')) return false;
          t->end = mini_int(&m);
          if (!mini_eat(&m, ']')) return false;
        } else return false;
      } while (mini_eat(&m, ','));
    }
    if (!mini_eat(&m, '}')) return false;
  } while (mini_eat(&m, ','));
  if (!mini_eat(&m, '}')) return false;
  mini_ws(&m);
  return !m.bad && m.i == m.n;
}

static const char *mini_meta(const MiniHeader *h, const char *key) {
  for (int i = 0; i < h->n_meta; i++)
    if (strcmp(h->meta_keys[i], key) == 0) return h->meta_vals[i];
  return NULL;
}

/* ---- cases ----------------------------------------------------------------- */

TEST(round_trip_bit_exact) {
  Graph g;
  small_graph(&g, "pretrain", 8);
  Exec *a = make_exec(&g), *b = make_exec(&g);
  init_exec(a, 1234);
  put_specials(a);
  init_exec(b, 99); /* different values everywhere */
  const char *path = tpath(0, "rt.safetensors");
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  m.step = 123456789012LL;
  m.seed = UINT64_MAX - 5;
  m.vocab_hash = strdup("fnv64:0123456789abcdef");
  m.model_path = strdup("models/tiny/bert \"tiny\".yaml");
  checkpoint_meta_set(&m, "note", "quote \" backslash \\ newline \n tab \t ctl \x01 é ✓ 😀");
  checkpoint_meta_set(&m, "data", "wikitext-2");
  checkpoint_meta_set(&m, "data", "wikitext-2-raw"); /* replaces */
  CHECK(save_ok(path, a, &m));

  CheckpointMeta got;
  char msg[4096];
  int n = load(path, b, CHECKPOINT_LOAD_ALL, "fnv64:0123456789abcdef", &got, msg);
  CHECK_EQ_INT(n, g.params.n + g.states.n);
  PairCtx pc = {a, b, 0};
  all_names(&g, cmp_one, &pc);
  CHECK_EQ_INT(pc.n_diff, 0);

  CHECK_EQ_INT(got.step, m.step);
  CHECK(got.seed == m.seed);
  CHECK_STR(got.vocab_hash, m.vocab_hash);
  CHECK_STR(got.model_path, m.model_path);
  CHECK_STR(got.graph_name, "pretrain");
  CHECK_STR(got.hparams_json, "{\"d_model\":8,\"lr\":0.0001,\"dropout\":0.1}");
  CHECK_EQ_INT(got.format_version, BC_CHECKPOINT_VERSION);
  CHECK_EQ_INT(got.extra.n, 2);
  CHECK_STR(checkpoint_meta_get(&got, "note"), checkpoint_meta_get(&m, "note"));
  CHECK_STR(checkpoint_meta_get(&got, "data"), "wikitext-2-raw");
  CHECK(checkpoint_meta_get(&got, "nope") == NULL);
  checkpoint_meta_free(&got);

  /* read_meta and read_info see the same header. */
  Diag d;
  diag_init(&d);
  CheckpointMeta rm;
  CHECK(checkpoint_read_meta(path, &rm, &d));
  CHECK_EQ_INT(rm.step, m.step);
  checkpoint_meta_free(&rm);
  CheckpointInfo info;
  CHECK(checkpoint_read_info(path, &info, &d));
  CHECK_EQ_INT(info.tensors.n, g.params.n + g.states.n);
  CHECK_STR(info.tensors.data[0].name, "encoder.blk.0.attention.W_q.W");
  CHECK_EQ_INT(info.tensors.data[0].shape.rank, 2);
  CHECK_EQ_INT(info.header_bytes % 8, 0);
  uint64_t want_data = 0;
  for (int i = 0; i < info.tensors.n; i++)
    want_data += (uint64_t)shape_numel(&info.tensors.data[i].shape) * 4;
  CHECK(info.data_bytes == want_data);
  checkpoint_info_free(&info);
  CHECK_EQ_INT(d.n_errors, 0);
  diag_free(&d);

  /* Saving again over the file works (rename over an existing file), and no
   * temporary file stays. */
  m.step = 5;
  CHECK(save_ok(path, b, &m));
  char tmpname[700];
  snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
  CHECK(access(tmpname, F_OK) != 0);
  checkpoint_meta_free(&m);
  exec_destroy(a);
  exec_destroy(b);
  graph_free(&g);
}

TEST(file_is_valid_safetensors) {
  Graph g;
  small_graph(&g, "pretrain", 4);
  Exec *e = make_exec(&g);
  init_exec(e, 3);
  put_specials(e);
  const char *path = tpath(0, "fmt.safetensors");
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  m.step = 77;
  m.seed = 3;
  m.vocab_hash = strdup("abc");
  CHECK(save_ok(path, e, &m));
  checkpoint_meta_free(&m);

  size_t size;
  unsigned char *f = read_all(path, &size);
  CHECK(f && size >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | f[i];
  CHECK(n % 8 == 0);
  CHECK(8 + n <= size);
  CHECK(f[8] == '{');
  MiniHeader h;
  CHECK(mini_parse((const char *)f + 8, (size_t)n, &h));
  CHECK_STR(mini_meta(&h, "format"), "bertc-checkpoint");
  CHECK_STR(mini_meta(&h, "format_version"), "1");
  CHECK_STR(mini_meta(&h, "step"), "77");
  CHECK_STR(mini_meta(&h, "seed"), "3");
  CHECK_STR(mini_meta(&h, "vocab_hash"), "abc");
  CHECK_STR(mini_meta(&h, "graph"), "pretrain");
  CHECK_STR(mini_meta(&h, "hparams"), "{\"d_model\":4,\"lr\":0.0001,\"dropout\":0.1}");
  CHECK_EQ_INT(h.n, g.params.n + g.states.n);
  /* Every value, in order, back to back, its bytes little-endian. */
  long long at = 0;
  for (int i = 0; i < h.n; i++) {
    const MiniTensor *t = &h.t[i];
    ValueId v = graph_find(&g, t->name);
    CHECK_MSG(v >= 0, "tensor %s", t->name);
    if (v < 0) continue;
    const Value *val = &g.values.data[v];
    CHECK_STR(t->dtype, val->dtype == DTYPE_I32 ? "I32" : "F32");
    CHECK_EQ_INT(t->rank, val->shape.rank);
    for (int k = 0; k < t->rank; k++) CHECK_EQ_INT(t->shape[k], val->shape.dim[k]);
    CHECK_EQ_INT(t->begin, at);
    CHECK_EQ_INT(t->end - t->begin, shape_numel(&val->shape) * 4);
    at = t->end;
    uint32_t *w = read_words(e, v);
    for (int64_t k = 0; k < shape_numel(&val->shape); k++) {
      const unsigned char *p = f + 8 + n + t->begin + 4 * k;
      uint32_t le = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                    (uint32_t)p[3] << 24;
      CHECK(le == w[k]);
    }
    free(w);
  }
  CHECK_EQ_INT((long long)size, (long long)(8 + n) + at);
  free(f);
  exec_destroy(e);
  graph_free(&g);
}

TEST(load_params_present) {
  /* "Pretraining" graph: encoder + MLM head; "NLI" graph: the same encoder
   * + a classifier, and its own optimizer state. */
  Graph pre, nli;
  graph_init(&pre, "pretrain");
  graph_init(&nli, "nli");
  Init xav = {INIT_XAVIER, 0}, nrm = {INIT_NORMAL, 0.5};
  graph_add_param(&pre, "encoder.W", DTYPE_F32, shape_of(2, 4, 4), xav, SRCLOC_NONE);
  graph_add_param(&pre, "encoder.b", DTYPE_F32, shape_of(1, 4), nrm, SRCLOC_NONE);
  graph_add_param(&pre, "mlm.W", DTYPE_F32, shape_of(2, 4, 7), xav, SRCLOC_NONE);
  graph_add_state(&pre, "encoder.W.adam_m", DTYPE_F32, shape_of(2, 4, 4), nrm, SRCLOC_NONE);
  graph_add_param(&nli, "cls.W", DTYPE_F32, shape_of(2, 4, 3), xav, SRCLOC_NONE);
  graph_add_param(&nli, "encoder.W", DTYPE_F32, shape_of(2, 4, 4), xav, SRCLOC_NONE);
  graph_add_param(&nli, "encoder.b", DTYPE_F32, shape_of(1, 4), nrm, SRCLOC_NONE);
  graph_add_state(&nli, "encoder.W.adam_m", DTYPE_F32, shape_of(2, 4, 4), nrm, SRCLOC_NONE);
  Exec *ep = make_exec(&pre), *en = make_exec(&nli), *fresh = make_exec(&nli);
  init_exec(ep, 1);
  init_exec(en, 2);
  init_exec(fresh, 2);
  const char *path = tpath(0, "pre.safetensors");
  CHECK(save_ok(path, ep, NULL));

  char msg[4096];
  CHECK_EQ_INT(load(path, en, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, NULL, msg), 2);
  CHECK(same_values(en, ep, "encoder.W"));
  CHECK(same_values(en, ep, "encoder.b"));
  CHECK(same_values(en, fresh, "cls.W"));            /* left as initialized */
  CHECK(same_values(en, fresh, "encoder.W.adam_m")); /* states never loaded */
  CHECK(!same_values(en, ep, "encoder.W.adam_m"));

  /* Resuming the NLI graph from the pretraining file is refused: cls.W is
   * missing and mlm.W belongs to another model. Nothing is written. */
  Exec *en2 = make_exec(&nli);
  init_exec(en2, 2);
  CHECK_EQ_INT(load(path, en2, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, path);
  CHECK_HAS(msg, "no tensor \"cls.W\"");
  CHECK_HAS(msg, "\"mlm.W\" is not a parameter or state of graph 'nli'");
  CHECK(same_values(en2, fresh, "encoder.W"));

  /* A graph sharing nothing with the file. */
  Graph other;
  graph_init(&other, "other");
  graph_add_param(&other, "x", DTYPE_F32, shape_of(1, 3), xav, SRCLOC_NONE);
  Exec *eo = make_exec(&other);
  CHECK_EQ_INT(load(path, eo, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, NULL, msg), -1);
  CHECK_HAS(msg, path);
  CHECK_HAS(msg, "none of the 1 parameters of graph 'other'");

  exec_destroy(ep);
  exec_destroy(en);
  exec_destroy(en2);
  exec_destroy(fresh);
  exec_destroy(eo);
  graph_free(&pre);
  graph_free(&nli);
  graph_free(&other);
}

TEST(refuse_shape_missing_vocab) {
  const char *path = tpath(0, "ref.safetensors");
  save_small(path, 4, "vocab-A");
  char msg[4096];

  /* Another d_model: every shape differs; both shapes named, and a note on
   * the hparams that differ. The Exec is untouched. */
  Graph g5;
  small_graph(&g5, "pretrain", 5);
  Exec *e5 = make_exec(&g5), *ref5 = make_exec(&g5);
  init_exec(e5, 11);
  init_exec(ref5, 11);
  CHECK_EQ_INT(load(path, e5, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, path);
  CHECK_HAS(msg, "tensor \"encoder.blk.0.attention.W_q.W\" is F32 [4, 4] in the checkpoint but "
                 "F32 [5, 5] in graph 'pretrain'");
  CHECK_HAS(msg, "d_model is 4 in the file, 5 here");
  CHECK(same_values(e5, ref5, "encoder.blk.0.attention.W_q.W"));
  CHECK(same_values(e5, ref5, "counts"));
  /* The same refusal when only the parameters are wanted. */
  CHECK_EQ_INT(load(path, e5, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, NULL, msg), -1);
  CHECK_HAS(msg, "[5, 5] in graph");

  /* A dtype difference is refused too. */
  Graph gi;
  graph_init(&gi, "pretrain");
  Init z = {INIT_ZEROS, 0};
  graph_add_param(&gi, "encoder.ln.gamma", DTYPE_I32, shape_of(1, 4), z, SRCLOC_NONE);
  Exec *ei = make_exec(&gi);
  CHECK_EQ_INT(load(path, ei, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, NULL, msg), -1);
  CHECK_HAS(msg, "is F32 [4] in the checkpoint but I32 [4]");

  /* A graph with one more state (and an hparam the file lacks): missing
   * (LOAD_ALL), fine for params. */
  Graph g4;
  small_graph(&g4, "pretrain", 4);
  graph_add_state(&g4, "extra.state", DTYPE_F32, shape_of(1, 2), z, SRCLOC_NONE);
  vec_push(&g4.hparams, ((HParam){bc_intern("n_extra"), 1}));
  Exec *e4 = make_exec(&g4);
  CHECK_EQ_INT(load(path, e4, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, path);
  CHECK_HAS(msg, "checkpoint has no tensor \"extra.state\" (state f32 [2] of graph 'pretrain')");
  CHECK_HAS(msg, "note: the checkpoint was written for a different model: n_extra is 1 here, "
                 "absent in the file");
  CHECK_EQ_INT(load(path, e4, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, NULL, msg), 3);

  /* Vocabulary: equal passes, different or absent is refused. */
  Graph g;
  small_graph(&g, "pretrain", 4);
  Exec *e = make_exec(&g);
  CHECK_EQ_INT(load(path, e, CHECKPOINT_LOAD_ALL, "vocab-A", NULL, msg), 7);
  CHECK_EQ_INT(load(path, e, CHECKPOINT_LOAD_ALL, "vocab-B", NULL, msg), -1);
  CHECK_HAS(msg, path);
  CHECK_HAS(msg, "vocabulary mismatch: the checkpoint was trained with vocabulary hash "
                 "\"vocab-A\", the current vocabulary's is \"vocab-B\"");
  const char *path2 = tpath(1, "novocab.safetensors");
  save_small(path2, 4, NULL);
  CHECK_EQ_INT(load(path2, e, CHECKPOINT_LOAD_ALL, "vocab-B", NULL, msg), -1);
  CHECK_HAS(msg, "records no vocabulary hash");
  CHECK_EQ_INT(load(path2, e, CHECKPOINT_LOAD_ALL, "", NULL, msg), 7); /* "" = not checked */

  /* No such file, a directory. */
  CHECK_EQ_INT(load(tpath(2, "missing.safetensors"), e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, "missing.safetensors: error: cannot open checkpoint: No such file");
  CHECK_EQ_INT(load(tmp_dir, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, "not a regular file");

  /* Saving refuses reserved extra keys and non-UTF-8 strings. */
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  checkpoint_meta_set(&m, "step", "3");
  Diag d;
  diag_init(&d);
  CHECK(!checkpoint_save(tpath(3, "bad.safetensors"), e, &m, &d));
  CHECK_HAS(diag_first(&d), "extra metadata key \"step\" is reserved");
  checkpoint_meta_free(&m);
  m.model_path = strdup("bad\xff.yaml");
  diag_free(&d);
  diag_init(&d);
  CHECK(!checkpoint_save(tpath(3, "bad.safetensors"), e, &m, &d));
  CHECK_HAS(diag_first(&d), "model path is not valid UTF-8");
  CHECK(access(tpath(3, "bad.safetensors"), F_OK) != 0);
  checkpoint_meta_free(&m);
  diag_free(&d);
  /* An unwritable place: a file where the directory should be. */
  diag_init(&d);
  char under_file[800];
  snprintf(under_file, sizeof under_file, "%s/x.safetensors", path);
  CHECK(!checkpoint_save(under_file, e, NULL, &d));
  CHECK_HAS(diag_first(&d), "x.safetensors: error: cannot create");
  diag_free(&d);

  exec_destroy(e5);
  exec_destroy(ref5);
  exec_destroy(ei);
  exec_destroy(e4);
  exec_destroy(e);
  graph_free(&g5);
  graph_free(&gi);
  graph_free(&g4);
  graph_free(&g);
}

TEST(stale_tmp_files) {
  const char *path = tpath(0, "st.safetensors");
  /* A pid that just died, our parent's (alive), and names that are no pid. */
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  CHECK(dead > 0 && waitpid(dead, NULL, 0) == dead);
  char f_dead[800], f_live[800], f_odd[800], f_other[800];
  snprintf(f_dead, sizeof f_dead, "%s.tmp.%ld", path, (long)dead);
  snprintf(f_live, sizeof f_live, "%s.tmp.%ld", path, (long)getppid());
  snprintf(f_odd, sizeof f_odd, "%s.tmp.12ab", path);
  snprintf(f_other, sizeof f_other, "%s.tmp.%ld", tpath(1, "other.safetensors"), (long)dead);
  const char junk[] = "torn";
  write_all(f_dead, junk, sizeof junk);
  write_all(f_live, junk, sizeof junk);
  write_all(f_odd, junk, sizeof junk);
  write_all(f_other, junk, sizeof junk);
  save_small(path, 4, NULL);
  CHECK(access(f_dead, F_OK) != 0); /* removed */
  CHECK(access(f_live, F_OK) == 0); /* a live process may be writing it */
  CHECK(access(f_odd, F_OK) == 0);
  CHECK(access(f_other, F_OK) == 0); /* another checkpoint's */
  /* Loading never looks at temporary files. */
  Graph g;
  small_graph(&g, "pretrain", 4);
  Exec *e = make_exec(&g);
  char msg[4096];
  CHECK_EQ_INT(load(path, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), 7);
  exec_destroy(e);
  graph_free(&g);
  unlink(f_live);
  unlink(f_odd);
  unlink(f_other);
}

/* Loads `path` into a fresh small graph: -1 with a message naming the file,
 * or a success. Returns true when it failed. */
static bool load_fails_cleanly(const char *path, Exec *e, char *msg) {
  int n = load(path, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg);
  if (n < 0) {
    CHECK_MSG(strstr(msg, path) != NULL, "message does not name the file:\n%s", msg);
    CheckpointInfo info;
    Diag d;
    diag_init(&d);
    checkpoint_read_info(path, &info, &d); /* must not crash either */
    checkpoint_info_free(&info);
    diag_free(&d);
  }
  return n < 0;
}

TEST(truncated_at_every_byte) {
  const char *full = tpath(0, "full.safetensors"), *cut = tpath(1, "cut.safetensors");
  save_small(full, 4, "v");
  size_t size;
  unsigned char *b = read_all(full, &size);
  Graph g;
  small_graph(&g, "pretrain", 4);
  Exec *e = make_exec(&g);
  char msg[4096];
  int n_truncated_msg = 0;
  /* Every length short of the whole (the brief asks every 7th; all are
   * cheap at this size). */
  for (size_t len = 0; len < size; len++) {
    write_all(cut, b, len);
    CHECK_MSG(load_fails_cleanly(cut, e, msg), "truncated to %zu of %zu bytes loaded", len, size);
    n_truncated_msg += strstr(msg, "truncated") != NULL;
  }
  /* Every cut says "truncated": of the length field, the header or the data. */
  CHECK_EQ_INT(n_truncated_msg, size);
  write_all(cut, b, size);
  CHECK_EQ_INT(load(cut, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), 7);
  free(b);
  exec_destroy(e);
  graph_free(&g);
}

TEST(corrupt_header_bytes) {
  const char *full = tpath(0, "full.safetensors"), *bad = tpath(1, "bad.safetensors");
  save_small(full, 4, "v");
  size_t size;
  unsigned char *b = read_all(full, &size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
  Graph g;
  small_graph(&g, "pretrain", 4);
  Exec *e = make_exec(&g);
  char msg[4096];
  static const unsigned char repl[] = {0x00, '"', '{', '}', '[', ',',
                                       '9',  '-', 'x', '\\', 0xff, 0x80};
  int n_fail = 0, n_ok = 0;
  unsigned char *c = malloc(size);
  for (size_t pos = 0; pos < 8 + n; pos++) {
    for (size_t r = 0; r < sizeof repl; r++) {
      if (b[pos] == repl[r]) continue;
      memcpy(c, b, size);
      c[pos] = repl[r];
      write_all(bad, c, size);
      if (load_fails_cleanly(bad, e, msg)) n_fail++;
      else n_ok++; /* e.g. a digit inside a metadata string */
    }
  }
  fprintf(stderr, "  %d corrupted headers refused, %d still valid\n", n_fail, n_ok);
  CHECK(n_fail > 5 * (int)n);

  /* Random multi-byte damage anywhere (xorshift, fixed seed). */
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int it = 0; it < 3000; it++) {
    memcpy(c, b, size);
    int k = 1 + (int)(x % 4);
    for (int j = 0; j < k; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      size_t pos = (size_t)(x % (it % 2 ? size : 8 + n));
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c[pos] = (unsigned char)x;
    }
    write_all(bad, c, size);
    load_fails_cleanly(bad, e, msg);
  }
  free(c);
  free(b);
  exec_destroy(e);
  graph_free(&g);
}

TEST(bad_headers_by_hand) {
  const char *p = tpath(0, "hand.safetensors");
  Graph g;
  graph_init(&g, "hand");
  Init z = {INIT_ZEROS, 0};
  graph_add_param(&g, "a", DTYPE_F32, shape_of(1, 2), z, SRCLOC_NONE);
  Exec *e = make_exec(&g);
  char msg[4096];
  static const unsigned char data[32] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}; /* 1.0f, 2.0f */
#define A_OK "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
  struct {
    const char *json;
    size_t n_data;
    const char *want;
  } cases[] = {
      {"{" A_OK ",}", 8, "expected a key string, found '}'"},
      {"{" A_OK "," A_OK "}", 8, "duplicate key \"a\""},
      {"{" A_OK ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
      {"{" A_OK ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20,
       "bytes [8, 12) of the data belong to no tensor"},
      {"{" A_OK "}", 12, "4 bytes follow the last tensor"},
      {"{" A_OK "}", 7, "truncated checkpoint: the header describes 8 bytes of tensor data but "
                        "only 7 follow it"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
       "shape [3] of F32 needs 12 bytes but data_offsets [0, 8) span 8"},
      {"{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
       "unknown dtype \"Q7\""},
      {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
       "unsupported dtype \"F16\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
       "a dimension is not a non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
       "a dimension is not a non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999999],\"data_offsets\":[0,8]}}", 8,
       "a dimension is not a non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8,
       "shape too large"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
       "rank 7 exceeds the maximum 6"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "end before begin"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "array of two numbers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"crc\":1}}", 8,
       "unknown field \"crc\""},
      {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "no \"shape\""},
      {"{\"a\":[1]}", 8, "tensor \"a\": not an object"},
      {"[1,2]", 0, "not a JSON object"},
      {"", 0, "unexpected end of the input"},
      {"   ", 0, "unexpected end of the input"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8,
       "unexpected 'x' after the JSON value"},
      {"{\"a\":{\"dtype\":\"F32\" \"shape\":[2]}}", 8, "expected ',' or '}', found '\"'"},
      {"{\"a\xff\":{}}", 8, "invalid UTF-8"},
      {"{\"\xc0\xaf\":{}}", 8, "invalid UTF-8"},     /* overlong '/' */
      {"{\"\xed\xa0\x80\":{}}", 8, "invalid UTF-8"}, /* encoded surrogate */
      {"{\"\\ud800\":{}}", 8, "unpaired high surrogate"},
      {"{\"\\udc00\":{}}", 8, "lone low surrogate"},
      {"{\"\\u0000\":{}}", 8, "\\u0000 inside a string is not supported"},
      {"{\"\\q\":{}}", 8, "invalid escape"},
      {"{\"\\u12\":{}}", 8, "invalid \\u escape"},
      {"{\"a\tb\":{}}", 8, "control byte 0x09 inside a string"},
      {"{\"abc", 8, "unterminated string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.],\"data_offsets\":[0,8]}}", 8, "invalid number"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e],\"data_offsets\":[0,8]}}", 8, "invalid number"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-],\"data_offsets\":[0,8]}}", 8, "invalid number"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[tru],\"data_offsets\":[0,8]}}", 8, "expected a value"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]} /* c */}", 8,
       "expected ',' or '}', found '/'"},
      {"{\"__metadata__\":[],\"a\":{}}", 8, "\"__metadata__\" is not an object"},
      {"{\"__metadata__\":{\"step\":5}}", 0, "metadata \"step\" is not a string"},
      {"{\"__metadata__\":{\"step\":\"12x\"}}", 0, "\"step\" is \"12x\", not an integer"},
      {"{\"__metadata__\":{\"step\":\" 12\"}}", 0, "not an integer"},
      {"{\"__metadata__\":{\"step\":\"9223372036854775808\"}}", 0, "not an integer"},
      {"{\"__metadata__\":{\"seed\":\"-1\"}}", 0, "\"seed\" is \"-1\", not an integer"},
      {"{\"__metadata__\":{\"format\":\"bertc-checkpoint\"}}", 0, "invalid \"format_version\""},
      {"{\"__metadata__\":{\"format\":\"bertc-checkpoint\",\"format_version\":\"2\"}}", 0,
       "checkpoint format version 2 is newer than this build reads (1)"},
      {"{\"__metadata__\":{\"format\":\"bertc-checkpoint\",\"format_version\":\"01x\"}}", 0,
       "invalid \"format_version\""},
      {"{}", 0, "checkpoint has no tensor \"a\""},
      {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
       "checkpoint has no tensor \"a\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_raw(p, cases[i].json, data, cases[i].n_data);
    CHECK_MSG(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg) == -1, "case %zu loaded", i);
    CHECK_MSG(strstr(msg, p) && strstr(msg, cases[i].want), "case %zu: want \"%s\" in:\n%s", i,
              cases[i].want, msg);
  }

  /* Nesting and array length limits. */
  char deep[400] = "{\"__metadata__\":";
  for (int i = 0; i < 100; i++) strcat(deep, "[");
  write_raw(p, deep, NULL, 0);
  CHECK(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg) == -1);
  CHECK_HAS(msg, "nesting deeper than 16 levels");
  size_t cap = 8 + 3000 * 2;
  char *longarr = malloc(cap);
  strcpy(longarr, "{\"a\":[");
  for (int i = 0; i < 2000; i++) strcat(longarr, i ? ",0" : "0");
  strcat(longarr, "]}");
  write_raw(p, longarr, NULL, 0);
  CHECK(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg) == -1);
  CHECK_HAS(msg, "array longer than 1024 items");
  free(longarr);

  /* The 8-byte length: larger than the file, absurdly large. */
  unsigned char hdr[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
  write_all(p, hdr, 10);
  CHECK(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg) == -1);
  CHECK_HAS(msg, "header length 9223372036854775807 exceeds the 2 bytes that follow it");
  unsigned char *huge = calloc(1, (17u << 20) + 16);
  huge[0] = 0x00, huge[1] = 0x00, huge[2] = 0x10, huge[3] = 0x01; /* 17 MiB */
  write_all(p, huge, (17u << 20) + 16);
  CHECK(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg) == -1);
  CHECK_HAS(msg, "exceeds the 16777216-byte limit");
  free(huge);

  /* Valid foreign files: escapes, unicode, whitespace, no metadata, a
   * zero-size tensor, keys in any order. */
  write_raw(p,
            " {\n \"z\\u00e9\\ud83d\\ude00\" : {\"shape\":[0,5],\"dtype\":\"I32\",\"data_offsets\":"
            "[8,8]},\n \"\\u0061\": {\"data_offsets\":[0,8],\"dtype\":\"F32\",\"shape\":[2]} ,"
            "\"__metadata__\":{\"format\":\"pt\",\"k\\\"\":\"v\\/\\b\\f\\n\\r\\t\"}}\t\r\n",
            data, 8);
  CheckpointMeta m;
  CHECK_EQ_INT(load(p, e, CHECKPOINT_LOAD_PARAMS_PRESENT, NULL, &m, msg), 1);
  CHECK_EQ_INT(m.format_version, 0);
  CHECK_STR(checkpoint_meta_get(&m, "format"), "pt");
  CHECK_STR(checkpoint_meta_get(&m, "k\""), "v/\b\f\n\r\t");
  checkpoint_meta_free(&m);
  float got[2];
  Diag d;
  diag_init(&d);
  CHECK(exec_read(e, graph_find(&g, "a"), got, DTYPE_F32, &d));
  CHECK(got[0] == 1.0f && got[1] == 2.0f);
  CheckpointInfo info;
  CHECK(checkpoint_read_info(p, &info, &d));
  CHECK_EQ_INT(info.tensors.n, 2);
  CHECK_STR(info.tensors.data[0].name, "z\xc3\xa9\xf0\x9f\x98\x80");
  CHECK_EQ_INT(info.tensors.data[0].shape.dim[1], 5);
  CHECK(info.tensors.data[0].dtype == DTYPE_I32);
  checkpoint_info_free(&info);
  diag_free(&d);
  /* ...but resuming from it needs the extra tensor to be the graph's. */
  CHECK_EQ_INT(load(p, e, CHECKPOINT_LOAD_ALL, NULL, NULL, msg), -1);
  CHECK_HAS(msg, "is not a parameter or state of graph 'hand'");

  exec_destroy(e);
  graph_free(&g);
#undef A_OK
}

/* ---- atomicity under SIGKILL ------------------------------------------------ */

enum { BIG_ROWS = 3, BIG_COLS = 1 << 20 }; /* 12 MB param + 12 MB state */

/* The value of element i at `step`: exact in f32 (< 2^24), distinct across
 * steps modulo 4000. */
static float big_value(int64_t step, int64_t i, int which) {
  return (float)(((step + which) % 4000) * 4096 + i % 4096);
}

static void big_fill(Exec *e, ValueId w, ValueId m, int64_t step, float *buf) {
  Diag d;
  diag_init(&d);
  int64_t n = (int64_t)BIG_ROWS * BIG_COLS;
  for (int64_t i = 0; i < n; i++) buf[i] = big_value(step, i, 0);
  bool ok = exec_write(e, w, buf, DTYPE_F32, &d);
  for (int64_t i = 0; i < n; i++) buf[i] = big_value(step, i, 1);
  ok = ok && exec_write(e, m, buf, DTYPE_F32, &d);
  diag_free(&d);
  if (!ok) abort();
}

/* Temporary files of `base` in the test directory. */
static int count_tmps(const char *base) {
  int n = 0;
  DIR *dp = opendir(tmp_dir);
  struct dirent *de;
  while (dp && (de = readdir(dp)) != NULL)
    if (strncmp(de->d_name, base, strlen(base)) == 0 && strstr(de->d_name, ".tmp.")) n++;
  if (dp) closedir(dp);
  return n;
}

/* A checkpoint whose hparams would overflow the run's settings is refused
 * by train_origin_read (found by fuzz/fuzz_checkpoint: 65 hparams hit an
 * assertion in train_sets_add), and one with the most it takes is read. */
TEST(origin_hparams_bounded) {
  const char *path = tpath(0, "many_hparams.safetensors");
  for (int extra = 0; extra < 2; extra++) {
    Graph g;
    small_graph(&g, "pretrain", 4);
    while (g.hparams.n < TRAIN_MAX_SETS / 2 + extra) {
      char name[32];
      snprintf(name, sizeof name, "h%d", g.hparams.n);
      vec_push(&g.hparams, ((HParam){bc_intern(name), 1.0}));
    }
    Exec *e = make_exec(&g);
    init_exec(e, 7);
    CHECK(save_ok(path, e, NULL));
    TrainOrigin o;
    Diag d;
    diag_init(&d);
    bool ok = train_origin_read(&o, path, &d);
    CHECK_MSG(ok == !extra, "%d hparams: %s", g.hparams.n, diag_first(&d));
    if (extra) CHECK_HAS(diag_first(&d), "33 hparams, more than the 32 a run can take");
    if (ok) {
      TrainModel m;
      TrainSets sets;
      train_sets_init(&sets, NULL, 0);
      CHECK(train_origin_model(&o, NULL, &m, &sets, NULL, &d));
      CHECK_EQ_INT(sets.n, TRAIN_MAX_SETS / 2);
      train_model_free(&m);
      train_sets_free(&sets);
    }
    train_origin_free(&o);
    diag_free(&d);
    exec_destroy(e);
    graph_free(&g);
  }
}

TEST(atomic_under_sigkill) {
  Graph g;
  graph_init(&g, "big");
  Init z = {INIT_ZEROS, 0};
  ValueId w = graph_add_param(&g, "big.W", DTYPE_F32, shape_of(2, BIG_ROWS, BIG_COLS), z,
                              SRCLOC_NONE);
  ValueId m = graph_add_state(&g, "big.W.adam_m", DTYPE_F32, shape_of(2, BIG_ROWS, BIG_COLS), z,
                              SRCLOC_NONE);
  Exec *e = make_exec(&g);
  float *buf = malloc((size_t)BIG_ROWS * BIG_COLS * sizeof(float));
  const char *path = tpath(0, "big.safetensors");
  CheckpointMeta meta;
  checkpoint_meta_init(&meta);
  big_fill(e, w, m, 0, buf);
  CHECK(save_ok(path, e, &meta));
  int64_t last = 0; /* the newest step known to be complete on disk */
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  int n_iter = 6, n_torn_tmp = 0, n_new = 0;
  for (int it = 1; it <= n_iter; it++) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      /* Child: save steps it*1000+1, +2, ... until killed, reporting each
       * completed save through the pipe. */
      close(fds[0]);
      CheckpointMeta cm;
      checkpoint_meta_init(&cm);
      for (int64_t k = 1;; k++) {
        cm.step = (int64_t)it * 1000 + k;
        big_fill(e, w, m, cm.step, buf);
        Diag d;
        diag_init(&d);
        if (!checkpoint_save(path, e, &cm, &d)) {
          diag_print(&d, stderr);
          _exit(3);
        }
        if (write(fds[1], &cm.step, sizeof cm.step) != (ssize_t)sizeof cm.step) _exit(4);
      }
    }
    CHECK(pid > 0);
    close(fds[1]);
    /* 30-700 ms: from before the first save ends to several saves later. */
    usleep((useconds_t)(30000 + rand() % 670000));
    kill(pid, SIGKILL);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    int64_t s, reported = -1;
    while (read(fds[0], &s, sizeof s) == (ssize_t)sizeof s) reported = s;
    close(fds[0]);
    if (reported > last) last = reported;
    n_torn_tmp += count_tmps("big.safetensors") > 0;

    /* The file is a whole checkpoint: the last reported one, or the one the
     * child had renamed just before the kill. */
    CheckpointMeta got;
    char msg[4096];
    int64_t in_progress = reported >= 0 ? reported + 1 : (int64_t)it * 1000 + 1;
    CHECK_EQ_INT(load(path, e, CHECKPOINT_LOAD_ALL, NULL, &got, msg), 2);
    CHECK_MSG(got.step == last || got.step == in_progress, "step %lld, last %lld",
              (long long)got.step, (long long)last);
    n_new += got.step == in_progress;
    float *x = malloc((size_t)BIG_ROWS * BIG_COLS * sizeof(float));
    Diag d;
    diag_init(&d);
    CHECK(exec_read(e, w, x, DTYPE_F32, &d));
    int64_t n_bad = 0;
    int64_t n_big = (int64_t)BIG_ROWS * BIG_COLS;
    for (int64_t i = 0; i < n_big; i++) n_bad += x[i] != big_value(got.step, i, 0);
    CHECK(exec_read(e, m, x, DTYPE_F32, &d));
    for (int64_t i = 0; i < n_big; i++) n_bad += x[i] != big_value(got.step, i, 1);
    CHECK_EQ_INT(n_bad, 0);
    diag_free(&d);
    free(x);
    last = got.step;
    checkpoint_meta_free(&got);
  }
  fprintf(stderr, "  %d of %d kills left a temporary file; %d loads found the in-flight step\n",
          n_torn_tmp, n_iter, n_new);
  /* The next save removes the temporary files of the dead children. */
  meta.step = 999999;
  CHECK(save_ok(path, e, &meta));
  CHECK_EQ_INT(count_tmps("big.safetensors"), 0);
  checkpoint_meta_free(&meta);
  free(buf);
  exec_destroy(e);
  graph_free(&g);
}

TEST_MAIN()
