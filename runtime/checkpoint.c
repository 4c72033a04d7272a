/* checkpoint.c — safetensors checkpoints (checkpoint.h): the header built
 * with graph/json.h's writer and read back with its strict reader, header
 * validation against the file and the graph, the data section, and the
 * save through graph/fileio.h's atomic write.
 *
 * Not here: JSON itself, the atomic write, memory mapping (tensors are read
 * one at a time into a host buffer of the largest tensor's size), other
 * dtypes, data checksums.
 *
 * Invariants: nothing trusts a length, offset or count from the file before
 * checking it against the file size; the JSON reader refuses duplicate
 * keys, nesting deeper than JSON_MAX_DEPTH and arrays longer than
 * JSON_MAX_ARRAY (the header's only arrays are shapes and offset pairs), so
 * a hostile header costs memory proportional to its length, itself capped
 * at HEADER_MAX_BYTES. */
#include "checkpoint.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "../graph/fileio.h"
#include "../graph/json.h"

#define FORMAT_NAME "bertc-checkpoint"
#define HEADER_MAX_BYTES ((uint64_t)16 << 20) /* ~100x a BERT-large header */
#define JSON_MAX_DEPTH 16
#define JSON_MAX_ARRAY 1024

static const JsonOptions header_json = {.max_depth = JSON_MAX_DEPTH, .max_array = JSON_MAX_ARRAY};

static const char *const reserved_keys[] = {"format", "format_version", "step",    "seed",
                                            "vocab_hash", "model",        "graph", "hparams", "model_files"};

/* An error located at the file, "path: error: ...". */
static void ck_error(Diag *d, const char *path, const char *fmt, ...) BC_PRINTF(3, 4);
static void ck_error(Diag *d, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, (SrcLoc){bc_intern(path), 0, 0}, fmt, ap);
  va_end(ap);
}

/* ---- metadata ----------------------------------------------------------- */

void checkpoint_meta_init(CheckpointMeta *m) { memset(m, 0, sizeof(*m)); }

void checkpoint_meta_free(CheckpointMeta *m) {
  free(m->vocab_hash);
  free(m->model_path);
  free(m->graph_name);
  free(m->hparams_json);
  for (int i = 0; i < m->model_files.n; i++) {
    free((char *)m->model_files.data[i].path);
    free((char *)m->model_files.data[i].text);
  }
  vec_free(&m->model_files);
  for (int i = 0; i < m->extra.n; i++) {
    free(m->extra.data[i].key);
    free(m->extra.data[i].value);
  }
  vec_free(&m->extra);
  checkpoint_meta_init(m);
}

void checkpoint_meta_set(CheckpointMeta *m, const char *key, const char *value) {
  for (int i = 0; i < m->extra.n; i++)
    if (strcmp(m->extra.data[i].key, key) == 0) {
      free(m->extra.data[i].value);
      m->extra.data[i].value = bc_strdup(value);
      return;
    }
  vec_push(&m->extra, ((CheckpointKV){bc_strdup(key), bc_strdup(value)}));
}

const char *checkpoint_meta_get(const CheckpointMeta *m, const char *key) {
  for (int i = 0; i < m->extra.n; i++)
    if (strcmp(m->extra.data[i].key, key) == 0) return m->extra.data[i].value;
  return NULL;
}

static bool is_reserved(const char *key) {
  for (size_t i = 0; i < sizeof(reserved_keys) / sizeof(reserved_keys[0]); i++)
    if (strcmp(reserved_keys[i], key) == 0) return true;
  return false;
}

void checkpoint_info_free(CheckpointInfo *info) {
  checkpoint_meta_free(&info->meta);
  for (int i = 0; i < info->tensors.n; i++) free(info->tensors.data[i].name);
  vec_free(&info->tensors);
  memset(info, 0, sizeof(*info));
}

/* ---- numbers --------------------------------------------------------------- */

/* Strict decimal: digits only (parse_i64: a leading '-' too), no spaces, no
 * '+', no overflow. */
static bool parse_u64(const char *s, uint64_t *out) {
  if (!*s) return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    unsigned dg = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - dg) / 10) return false;
    v = v * 10 + dg;
  }
  *out = v;
  return true;
}

static bool parse_i64(const char *s, int64_t *out) {
  bool neg = *s == '-';
  uint64_t u;
  if (!parse_u64(s + neg, &u)) return false;
  if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX) return false;
  *out = neg ? (int64_t)(0 - u) : (int64_t)u;
  return true;
}

/* ---- header -> CheckpointInfo ----------------------------------------------- */

static const char *st_dtype_name(DType t) { return t == DTYPE_I32 ? "I32" : "F32"; }

/* Writes the error for `v` in tensor `name`: "corrupt header: tensor 'x': ...". */
static bool tensor_fail(Diag *d, const char *path, const char *name, const JsonValue *v,
                        const char *what) {
  ck_error(d, path, "corrupt checkpoint header: tensor \"%.200s\": %s (at byte %zu of the header)",
           name, what, v->pos);
  return false;
}

static bool parse_tensor(const char *path, const char *name, const JsonValue *v, CheckpointTensor *t,
                         Diag *d) {
  if (v->kind != JSON_OBJECT) return tensor_fail(d, path, name, v, "not an object");
  const JsonValue *dt = json_get(v, "dtype"), *sh = json_get(v, "shape"), *off = json_get(v, "data_offsets");
  for (int i = 0; i < v->n; i++)
    if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") &&
        strcmp(v->keys[i], "data_offsets")) {
      char what[160];
      snprintf(what, sizeof what, "unknown field \"%.80s\"", v->keys[i]);
      return tensor_fail(d, path, name, &v->items[i], what);
    }
  if (!dt || !sh || !off)
    return tensor_fail(d, path, name, v,
                       !dt   ? "no \"dtype\""
                       : !sh ? "no \"shape\""
                             : "no \"data_offsets\"");
  if (dt->kind != JSON_STRING) return tensor_fail(d, path, name, dt, "\"dtype\" is not a string");
  uint64_t elem = 4;
  t->other_dtype = NULL;
  if (strcmp(dt->str, "F32") == 0) t->dtype = DTYPE_F32;
  else if (strcmp(dt->str, "I32") == 0) t->dtype = DTYPE_I32;
  else {
    /* safetensors' other dtypes and their sizes: such a tensor is listed
     * (an importer may convert it) but never loaded into a graph */
    static const struct { const char *name; uint64_t size; } other[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
        {"F16", 2},  {"BF16", 2}, {"U32", 4}, {"I64", 8},     {"U64", 8},     {"F64", 8}};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]) && !t->other_dtype; i++)
      if (strcmp(dt->str, other[i].name) == 0) t->other_dtype = other[i].name, elem = other[i].size;
    if (!t->other_dtype) {
      ck_error(d, path, "tensor \"%.200s\": unknown dtype \"%.40s\"", name, dt->str);
      return false;
    }
    t->dtype = DTYPE_F32; /* unused while other_dtype is set */
  }
  t->elem_bytes = (int)elem;
  if (sh->kind != JSON_ARRAY) return tensor_fail(d, path, name, sh, "\"shape\" is not an array");
  if (sh->n > BC_MAX_RANK) {
    char what[96];
    snprintf(what, sizeof what, "rank %d exceeds the maximum %d", sh->n, BC_MAX_RANK);
    return tensor_fail(d, path, name, sh, what);
  }
  /* numel * 4 must fit an int64 (a real tensor's does, as it fits the file). */
  uint64_t numel = 1;
  bool huge = false;
  t->shape.rank = sh->n;
  for (int i = 0; i < sh->n; i++) {
    const JsonValue *x = &sh->items[i];
    if (x->kind != JSON_NUMBER || !x->is_uint || x->u > (uint64_t)INT64_MAX)
      return tensor_fail(d, path, name, x, "a dimension is not a non-negative integer");
    t->shape.dim[i] = (int64_t)x->u;
    if (x->u && numel > ((uint64_t)INT64_MAX / 8) / x->u) huge = true;
    else numel *= x->u;
  }
  if (off->kind != JSON_ARRAY || off->n != 2)
    return tensor_fail(d, path, name, off, "\"data_offsets\" is not an array of two numbers");
  for (int i = 0; i < 2; i++)
    if (off->items[i].kind != JSON_NUMBER || !off->items[i].is_uint)
      return tensor_fail(d, path, name, &off->items[i], "an offset is not a non-negative integer");
  t->begin = off->items[0].u;
  t->end = off->items[1].u;
  if (t->end < t->begin) return tensor_fail(d, path, name, off, "data_offsets end before begin");
  /* A shape with a zero dimension has no elements whatever the others say. */
  bool empty = false;
  for (int i = 0; i < sh->n; i++) empty |= t->shape.dim[i] == 0;
  if (huge && !empty) return tensor_fail(d, path, name, sh, "shape too large");
  uint64_t want = empty ? 0 : numel * elem;
  if (t->end - t->begin != want) {
    char what[160], sb[192];
    snprintf(what, sizeof what,
             "shape %s of %s needs %llu bytes but data_offsets [%llu, %llu) span %llu",
             shape_str(&t->shape, sb), dt->str, (unsigned long long)want,
             (unsigned long long)t->begin, (unsigned long long)t->end,
             (unsigned long long)(t->end - t->begin));
    return tensor_fail(d, path, name, off, what);
  }
  return true;
}

/* Appends a pair without looking for an equal key: the parser has refused
 * duplicate keys, and a linear search per key would make a header of many
 * keys quadratic. */
static void push_kv(CheckpointMeta *m, const char *key, const char *value) {
  vec_push(&m->extra, ((CheckpointKV){bc_strdup(key), bc_strdup(value)}));
}

/* "model_files": [{"path": ..., "text": ...}, ...] into out->model_files. */
static bool parse_model_files(const char *path, const char *s, CheckpointMeta *out, Diag *d) {
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  bool ok = json_parse(s, strlen(s), NULL, &arena, &root, &err) && root.kind == JSON_ARRAY && root.n > 0;
  for (int i = 0; ok && i < root.n; i++) {
    const JsonValue *f = &root.items[i];
    const JsonValue *p = NULL, *t = NULL;
    for (int k = 0; f->kind == JSON_OBJECT && k < f->n; k++) {
      if (strcmp(f->keys[k], "path") == 0) p = &f->items[k];
      if (strcmp(f->keys[k], "text") == 0) t = &f->items[k];
    }
    ok = p && t && p->kind == JSON_STRING && t->kind == JSON_STRING && *p->str;
    if (ok) vec_push(&out->model_files, ((SourceFile){bc_strdup(p->str), bc_strdup(t->str)}));
  }
  arena_free(&arena);
  if (!ok) ck_error(d, path, "corrupt checkpoint metadata: \"model_files\" is not a list of {path, text}");
  return ok;
}

static bool parse_meta(const char *path, const JsonValue *m, CheckpointMeta *out, Diag *d) {
  if (m->kind != JSON_OBJECT) {
    ck_error(d, path, "corrupt checkpoint header: \"__metadata__\" is not an object");
    return false;
  }
  bool ours = false;
  const char *version = NULL;
  for (int i = 0; i < m->n; i++) {
    const char *k = m->keys[i];
    const JsonValue *v = &m->items[i];
    if (v->kind != JSON_STRING) {
      ck_error(d, path, "corrupt checkpoint header: metadata \"%.80s\" is not a string", k);
      return false;
    }
    const char *s = v->str;
    bool bad = false;
    if (strcmp(k, "format") == 0) {
      ours = strcmp(s, FORMAT_NAME) == 0;
      if (!ours) push_kv(out, k, s);
    } else if (strcmp(k, "format_version") == 0) version = s;
    else if (strcmp(k, "step") == 0) bad = !parse_i64(s, &out->step);
    else if (strcmp(k, "seed") == 0) bad = !parse_u64(s, &out->seed);
    else if (strcmp(k, "vocab_hash") == 0) free(out->vocab_hash), out->vocab_hash = bc_strdup(s);
    else if (strcmp(k, "model") == 0) free(out->model_path), out->model_path = bc_strdup(s);
    else if (strcmp(k, "graph") == 0) free(out->graph_name), out->graph_name = bc_strdup(s);
    else if (strcmp(k, "hparams") == 0) free(out->hparams_json), out->hparams_json = bc_strdup(s);
    else if (strcmp(k, "model_files") == 0) {
      if (!parse_model_files(path, s, out, d)) return false;
    }
    else push_kv(out, k, s);
    if (bad) {
      ck_error(d, path, "corrupt checkpoint metadata: \"%s\" is \"%.40s\", not an integer", k, s);
      return false;
    }
  }
  if (ours) {
    uint64_t ver;
    if (!version || !parse_u64(version, &ver) || ver == 0 || ver > INT32_MAX) {
      ck_error(d, path, "corrupt checkpoint metadata: missing or invalid \"format_version\"");
      return false;
    }
    if (ver > BC_CHECKPOINT_VERSION) {
      ck_error(d, path,
               "checkpoint format version %llu is newer than this build reads (%d); "
               "use a newer bertc",
               (unsigned long long)ver, BC_CHECKPOINT_VERSION);
      return false;
    }
    out->format_version = (int)ver;
  } else if (version) {
    push_kv(out, "format_version", version);
  }
  return true;
}

static int cmp_by_offset(const void *a, const void *b) {
  const CheckpointTensor *x = *(const CheckpointTensor *const *)a;
  const CheckpointTensor *y = *(const CheckpointTensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* The header JSON hdr[0, n) into `out`; `data_avail` is the number of bytes
 * the file has after the header. Checks that the tensors tile the data
 * section exactly: sorted by offset they start at 0, each begins where the
 * previous ends, and the last ends at the end of the file. */
static bool parse_header(const char *path, const char *hdr, size_t n, uint64_t data_avail,
                         CheckpointInfo *out, Diag *d) {
  Arena arena;
  arena_init(&arena);
  JsonError err;
  JsonValue root;
  bool ok = false;
  const CheckpointTensor **order = NULL;
  if (!json_parse(hdr, n, &header_json, &arena, &root, &err)) {
    ck_error(d, path, "corrupt checkpoint header: %s (at byte %zu of the header)", err.msg,
             err.pos);
    goto done;
  }
  if (root.kind != JSON_OBJECT) {
    ck_error(d, path, "corrupt checkpoint header: not a JSON object");
    goto done;
  }
  for (int i = 0; i < root.n; i++) {
    if (strcmp(root.keys[i], "__metadata__") == 0) {
      if (!parse_meta(path, &root.items[i], &out->meta, d)) goto done;
      continue;
    }
    CheckpointTensor t = {0};
    if (!parse_tensor(path, root.keys[i], &root.items[i], &t, d)) goto done;
    t.name = bc_strdup(root.keys[i]);
    vec_push(&out->tensors, t);
  }
  int nt = out->tensors.n;
  order = bc_malloc((size_t)(nt ? nt : 1) * sizeof(*order));
  for (int i = 0; i < nt; i++) order[i] = &out->tensors.data[i];
  qsort(order, (size_t)nt, sizeof(*order), cmp_by_offset);
  uint64_t at = 0;
  for (int i = 0; i < nt; i++) {
    const CheckpointTensor *t = order[i];
    if (t->begin < at) {
      ck_error(d, path,
               "corrupt checkpoint header: tensors \"%.200s\" and \"%.200s\" overlap "
               "(bytes [%llu, %llu) and [%llu, %llu))",
               order[i - 1]->name, t->name, (unsigned long long)order[i - 1]->begin,
               (unsigned long long)order[i - 1]->end, (unsigned long long)t->begin,
               (unsigned long long)t->end);
      goto done;
    }
    if (t->begin > at) {
      ck_error(d, path,
               "corrupt checkpoint header: bytes [%llu, %llu) of the data belong to no tensor "
               "(before \"%.200s\")",
               (unsigned long long)at, (unsigned long long)t->begin, t->name);
      goto done;
    }
    at = t->end;
  }
  out->data_bytes = at;
  if (at > data_avail) {
    ck_error(d, path,
             "truncated checkpoint: the header describes %llu bytes of tensor data but only %llu "
             "follow it",
             (unsigned long long)at, (unsigned long long)data_avail);
    goto done;
  }
  if (at < data_avail) {
    ck_error(d, path,
             "corrupt checkpoint: %llu bytes follow the last tensor (the header describes %llu "
             "bytes of data, the file has %llu)",
             (unsigned long long)(data_avail - at), (unsigned long long)at,
             (unsigned long long)data_avail);
    goto done;
  }
  ok = true;
done:
  free(order);
  arena_free(&arena);
  return ok;
}

/* ---- reading files --------------------------------------------------------- */

static uint64_t get_le64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}

static bool host_is_le(void) {
  const uint16_t one = 1;
  return *(const unsigned char *)&one == 1;
}

/* Swaps every 4-byte word of buf[0, n) (n a multiple of 4): little-endian
 * file data <-> big-endian host. */
static void swap32(unsigned char *buf, size_t n) {
  for (size_t i = 0; i + 4 <= n; i += 4) {
    unsigned char t0 = buf[i], t1 = buf[i + 1];
    buf[i] = buf[i + 3], buf[i + 1] = buf[i + 2], buf[i + 2] = t1, buf[i + 3] = t0;
  }
}

/* Opens `path`, reads and validates its header into `info` (initialized
 * here). On success *f_out (may be NULL: closed) stays open for the data. */
static bool open_checkpoint(const char *path, CheckpointInfo *info, FILE **f_out, Diag *d) {
  memset(info, 0, sizeof(*info));
  if (f_out) *f_out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    ck_error(d, path, "cannot open checkpoint: %s", strerror(errno));
    return false;
  }
  bool ok = false;
  char *hdr = NULL;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    ck_error(d, path, "cannot stat checkpoint: %s", strerror(errno));
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    ck_error(d, path, "checkpoint is not a regular file");
    goto done;
  }
  uint64_t size = (uint64_t)st.st_size;
  unsigned char lenb[8];
  if (size < 8) {
    ck_error(d, path, "truncated checkpoint: the file has %llu bytes, fewer than the 8 of the "
             "header length", (unsigned long long)size);
    goto done;
  }
  if (fread(lenb, 1, 8, f) != 8) {
    ck_error(d, path, "cannot read checkpoint: %s", ferror(f) ? strerror(errno) : "short read");
    goto done;
  }
  uint64_t n = get_le64(lenb);
  info->header_bytes = n;
  if (n > size - 8) {
    ck_error(d, path,
             "truncated or corrupt checkpoint: header length %llu exceeds the %llu bytes that "
             "follow it",
             (unsigned long long)n, (unsigned long long)(size - 8));
    goto done;
  }
  if (n > HEADER_MAX_BYTES) {
    ck_error(d, path, "corrupt checkpoint: header length %llu exceeds the %llu-byte limit",
             (unsigned long long)n, (unsigned long long)HEADER_MAX_BYTES);
    goto done;
  }
  hdr = bc_malloc((size_t)n + 1);
  if (fread(hdr, 1, (size_t)n, f) != (size_t)n) {
    ck_error(d, path, "cannot read checkpoint header: %s",
             ferror(f) ? strerror(errno) : "short read");
    goto done;
  }
  hdr[n] = '\0';
  if (!parse_header(path, hdr, (size_t)n, size - 8 - n, info, d)) goto done;
  ok = true;
done:
  free(hdr);
  if (ok && f_out) *f_out = f;
  else fclose(f);
  return ok;
}

bool checkpoint_read_info(const char *path, CheckpointInfo *out, Diag *d) {
  return open_checkpoint(path, out, NULL, d);
}

bool checkpoint_read_meta(const char *path, CheckpointMeta *out, Diag *d) {
  CheckpointInfo info;
  bool ok = open_checkpoint(path, &info, NULL, d);
  *out = info.meta;
  memset(&info.meta, 0, sizeof(info.meta));
  checkpoint_info_free(&info);
  return ok;
}

/* ---- hyperparameters --------------------------------------------------------- */

/* g->hparams as a JSON object, {"d_model":64,...}; non-finite values as null. */
static char *hparams_json(const Graph *g) {
  StrBuf b = {0};
  strbuf_puts(&b, "{");
  for (int i = 0; i < g->hparams.n; i++) {
    const HParam *h = &g->hparams.data[i];
    if (i) strbuf_puts(&b, ",");
    json_write_key(&b, h->name);
    json_write_double(&b, h->value);
  }
  strbuf_puts(&b, "}");
  return strbuf_take(&b);
}

/* A note listing how the file's hparams differ from the graph's: the likely
 * reason for wrong shapes and missing or unexpected tensors. Silent when the file's hparams are absent or
 * not a JSON object of numbers. */
static void note_hparams(const char *path, const char *file_json, const Graph *g, Diag *d) {
  if (!file_json) return;
  Arena arena;
  arena_init(&arena);
  JsonError err;
  JsonValue root;
  StrBuf msg = {0};
  int n_diff = 0;
  if (!json_parse(file_json, strlen(file_json), &header_json, &arena, &root, &err) ||
      root.kind != JSON_OBJECT)
    goto done;
  for (int i = 0; i < g->hparams.n; i++) {
    const HParam *h = &g->hparams.data[i];
    const JsonValue *v = json_get(&root, h->name);
    StrBuf mine = {0};
    json_write_double(&mine, h->value);
    if (!v) {
      strbuf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", h->name);
      strbuf_printf(&msg, " is %s here, absent in the file", mine.data);
    } else if (v->kind == JSON_NUMBER && v->num != h->value) {
      strbuf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", h->name);
      strbuf_printf(&msg, " is %.40s in the file, %s here", v->str, mine.data);
    }
    strbuf_free(&mine);
  }
  for (int i = 0; i < root.n; i++) {
    bool found = false;
    for (int k = 0; k < g->hparams.n && !found; k++)
      found = strcmp(g->hparams.data[k].name, root.keys[i]) == 0;
    if (!found) {
      strbuf_printf(&msg, "%s%.40s", n_diff++ ? "; " : "", root.keys[i]);
      strbuf_puts(&msg, " is in the file only");
    }
  }
  if (n_diff)
    diag_note(d, (SrcLoc){bc_intern(path), 0, 0},
              "the checkpoint was written for a different model: %s", msg.data);
done:
  free(msg.data);
  arena_free(&arena);
}

/* ---- save -------------------------------------------------------------------- */

/* One tensor's header entry, "name":{"dtype":..,"shape":[..],"data_offsets":[at, at + bytes]};
 * advances *at past its data. */
static void header_tensor(StrBuf *b, const char *name, DType t, const Shape *shape, uint64_t *at) {
  uint64_t nbytes = (uint64_t)shape_numel(shape) * dtype_size(t);
  json_write_key(b, name);
  strbuf_puts(b, "{");
  json_write_key(b, "dtype");
  json_write_string(b, st_dtype_name(t));
  strbuf_puts(b, ",");
  json_write_key(b, "shape");
  strbuf_puts(b, "[");
  for (int k = 0; k < shape->rank; k++) {
    if (k) strbuf_puts(b, ",");
    json_write_int(b, shape->dim[k]);
  }
  strbuf_puts(b, "],");
  json_write_key(b, "data_offsets");
  strbuf_puts(b, "[");
  json_write_uint(b, *at);
  strbuf_puts(b, ",");
  json_write_uint(b, *at + nbytes);
  strbuf_puts(b, "]}");
  *at += nbytes;
}

/* Closes the header object and pads it with spaces to a multiple of 8. */
static char *header_end(StrBuf *b, size_t *n_out) {
  strbuf_puts(b, "}");
  while (b->n % 8) strbuf_puts(b, " ");
  *n_out = b->n;
  return strbuf_take(b);
}

/* The whole header: JSON padded with spaces so that its length is a
 * multiple of 8. */
static char *build_header(const Graph *g, const ValueId *ids, int n_ids, const CheckpointMeta *m,
                          size_t *n_out) {
  StrBuf b = {0};
  char num[32];
  strbuf_puts(&b, "{");
  json_write_key(&b, "__metadata__");
  strbuf_puts(&b, "{");
  json_write_key(&b, "format");
  json_write_string(&b, FORMAT_NAME);
  snprintf(num, sizeof num, "%d", BC_CHECKPOINT_VERSION);
  strbuf_puts(&b, ",");
  json_write_key(&b, "format_version");
  json_write_string(&b, num);
  /* safetensors metadata values are strings, numbers included */
  snprintf(num, sizeof num, "%lld", (long long)m->step);
  strbuf_puts(&b, ",");
  json_write_key(&b, "step");
  json_write_string(&b, num);
  snprintf(num, sizeof num, "%llu", (unsigned long long)m->seed);
  strbuf_puts(&b, ",");
  json_write_key(&b, "seed");
  json_write_string(&b, num);
  strbuf_puts(&b, ",");
  json_write_key(&b, "graph");
  json_write_string(&b, g->name ? g->name : "");
  char *hp = hparams_json(g);
  strbuf_puts(&b, ",");
  json_write_key(&b, "hparams");
  json_write_string(&b, hp);
  free(hp);
  if (m->vocab_hash && *m->vocab_hash) {
    strbuf_puts(&b, ",");
    json_write_key(&b, "vocab_hash");
    json_write_string(&b, m->vocab_hash);
  }
  if (m->model_path && *m->model_path) {
    strbuf_puts(&b, ",");
    json_write_key(&b, "model");
    json_write_string(&b, m->model_path);
  }
  if (g->sources.n > 0) {
    StrBuf f = {0};
    strbuf_puts(&f, "[");
    for (int i = 0; i < g->sources.n; i++) {
      strbuf_puts(&f, i ? ",{" : "{");
      json_write_key(&f, "path");
      json_write_string(&f, g->sources.data[i].path);
      strbuf_puts(&f, ",");
      json_write_key(&f, "text");
      json_write_string(&f, g->sources.data[i].text);
      strbuf_puts(&f, "}");
    }
    strbuf_puts(&f, "]");
    char *files = strbuf_take(&f);
    strbuf_puts(&b, ",");
    json_write_key(&b, "model_files");
    json_write_string(&b, files);
    free(files);
  }
  for (int i = 0; i < m->extra.n; i++) {
    strbuf_puts(&b, ",");
    json_write_key(&b, m->extra.data[i].key);
    json_write_string(&b, m->extra.data[i].value);
  }
  strbuf_puts(&b, "}");
  uint64_t at = 0;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    strbuf_puts(&b, ",");
    header_tensor(&b, v->name, v->dtype, &v->shape, &at);
  }
  return header_end(&b, n_out);
}

/* Checks what the header will hold, so a save never writes a file its own
 * loader refuses. */
static bool check_savable(const char *path, const Graph *g, const ValueId *ids, int n_ids,
                          const CheckpointMeta *m, Diag *d) {
  bool ok = true;
  const char *fields[][2] = {{"graph name", g->name},
                             {"vocab_hash", m->vocab_hash},
                             {"model path", m->model_path}};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    if (fields[i][1] && !json_utf8_valid(fields[i][1])) {
      ck_error(d, path, "cannot save checkpoint: the %s is not valid UTF-8", fields[i][0]);
      ok = false;
    }
  for (int i = 0; i < g->sources.n; i++)
    if (!json_utf8_valid(g->sources.data[i].path) || !json_utf8_valid(g->sources.data[i].text)) {
      ck_error(d, path, "cannot save checkpoint: model file %s is not valid UTF-8", g->sources.data[i].path);
      ok = false;
    }
  for (int i = 0; i < g->hparams.n; i++)
    if (!json_utf8_valid(g->hparams.data[i].name)) {
      ck_error(d, path, "cannot save checkpoint: an hparam name is not valid UTF-8");
      ok = false;
    }
  for (int i = 0; i < m->extra.n; i++) {
    const CheckpointKV *kv = &m->extra.data[i];
    if (is_reserved(kv->key)) {
      ck_error(d, path, "cannot save checkpoint: extra metadata key \"%s\" is reserved", kv->key);
      ok = false;
    }
    if (!json_utf8_valid(kv->key) || !json_utf8_valid(kv->value)) {
      ck_error(d, path, "cannot save checkpoint: extra metadata \"%.80s\" is not valid UTF-8",
               kv->key);
      ok = false;
    }
    for (int k = 0; k < i; k++)
      if (strcmp(m->extra.data[k].key, kv->key) == 0) {
        ck_error(d, path, "cannot save checkpoint: extra metadata key \"%s\" appears twice",
                 kv->key);
        ok = false;
      }
  }
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    if (!v->name || !*v->name || !json_utf8_valid(v->name) || strcmp(v->name, "__metadata__") == 0) {
      ck_error(d, path, "cannot save checkpoint: value %d has no usable tensor name", (int)ids[i]);
      ok = false;
    }
    BC_ASSERT(v->dtype == DTYPE_F32 || v->dtype == DTYPE_I32); /* graph values are f32 / i32 */
  }
  return ok;
}

/* The values a checkpoint holds: every parameter, then every state. */
static ValueId *saved_values(const Graph *g, int *n) {
  *n = g->params.n + g->states.n;
  ValueId *ids = bc_malloc((size_t)(*n ? *n : 1) * sizeof(ValueId));
  for (int i = 0; i < g->params.n; i++) ids[i] = g->params.data[i];
  for (int i = 0; i < g->states.n; i++) ids[g->params.n + i] = g->states.data[i];
  return ids;
}

static bool write_header(AtomicFile *af, const char *hdr, size_t n_hdr, Diag *d);

bool checkpoint_save(const char *path, Exec *e, const CheckpointMeta *meta, Diag *d) {
  BC_ASSERT(path && e);
  const Graph *g = e->graph;
  CheckpointMeta none;
  checkpoint_meta_init(&none);
  if (!meta) meta = &none;
  int n_ids;
  ValueId *ids = saved_values(g, &n_ids);
  char *hdr = NULL;
  unsigned char *host = NULL;
  AtomicFile af = {0};
  bool ok = false;
  if (!check_savable(path, g, ids, n_ids, meta, d)) goto done;

  size_t n_hdr;
  hdr = build_header(g, ids, n_ids, meta, &n_hdr);
  size_t max_bytes = 4;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    size_t nb = (size_t)shape_numel(&v->shape) * dtype_size(v->dtype);
    if (nb > max_bytes) max_bytes = nb;
  }
  host = bc_malloc(max_bytes);

  if (!file_atomic_begin(&af, path, d)) goto done;
  if (!write_header(&af, hdr, n_hdr, d)) goto done;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    size_t nb = (size_t)shape_numel(&v->shape) * dtype_size(v->dtype);
    if (!exec_read(e, ids[i], host, v->dtype, d)) {
      ck_error(d, path, "cannot save checkpoint: reading \"%s\" from the backend failed", v->name);
      goto done;
    }
    if (!host_is_le()) swap32(host, nb);
    if (!file_atomic_write(&af, host, nb, d)) goto done;
  }
  ok = file_atomic_commit(&af, d); /* frees af either way */
done:
  if (af.f) file_atomic_abort(&af);
  free(host);
  free(hdr);
  free(ids);
  return ok;
}

/* Writes the 8-byte header length and the header. */
static bool write_header(AtomicFile *af, const char *hdr, size_t n_hdr, Diag *d) {
  unsigned char lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)n_hdr >> (8 * i));
  return file_atomic_write(af, lenb, 8, d) && file_atomic_write(af, hdr, n_hdr, d);
}

/* Writes n bytes of host data (4-byte words) in little-endian order. */
static bool write_le32(AtomicFile *af, const void *data, size_t n, unsigned char *scratch, Diag *d) {
  if (host_is_le()) return file_atomic_write(af, data, n, d);
  memcpy(scratch, data, n);
  swap32(scratch, n);
  return file_atomic_write(af, scratch, n, d);
}

bool checkpoint_write_tensors(const char *path, const CheckpointBlob *t, int n, const CheckpointKV *meta,
                              int n_meta, Diag *d) {
  for (int i = 0; i < n; i++)
    if (!t[i].name || !*t[i].name || !json_utf8_valid(t[i].name) || strcmp(t[i].name, "__metadata__") == 0) {
      ck_error(d, path, "cannot write tensor %d: no usable tensor name", i);
      return false;
    }
  for (int i = 0; i < n_meta; i++)
    if (!json_utf8_valid(meta[i].key) || !json_utf8_valid(meta[i].value)) {
      ck_error(d, path, "cannot write metadata \"%.80s\": not valid UTF-8", meta[i].key);
      return false;
    }
  StrBuf b = {0};
  strbuf_puts(&b, "{");
  if (n_meta > 0) {
    json_write_key(&b, "__metadata__");
    strbuf_puts(&b, "{");
    for (int i = 0; i < n_meta; i++) {
      if (i) strbuf_puts(&b, ",");
      json_write_key(&b, meta[i].key);
      json_write_string(&b, meta[i].value);
    }
    strbuf_puts(&b, "}");
  }
  uint64_t at = 0;
  size_t max_bytes = 4;
  for (int i = 0; i < n; i++) {
    BC_ASSERT(t[i].dtype == DTYPE_F32 || t[i].dtype == DTYPE_I32);
    if (i || n_meta > 0) strbuf_puts(&b, ",");
    header_tensor(&b, t[i].name, t[i].dtype, &t[i].shape, &at);
    size_t nb = (size_t)shape_numel(&t[i].shape) * dtype_size(t[i].dtype);
    if (nb > max_bytes) max_bytes = nb;
  }
  size_t n_hdr;
  char *hdr = header_end(&b, &n_hdr);
  unsigned char *scratch = host_is_le() ? NULL : bc_malloc(max_bytes);
  AtomicFile af = {0};
  bool ok = file_atomic_begin(&af, path, d) && write_header(&af, hdr, n_hdr, d);
  for (int i = 0; ok && i < n; i++)
    ok = write_le32(&af, t[i].data, (size_t)shape_numel(&t[i].shape) * dtype_size(t[i].dtype), scratch, d);
  if (ok) ok = file_atomic_commit(&af, d); /* frees af either way */
  if (af.f) file_atomic_abort(&af);
  free(scratch);
  free(hdr);
  return ok;
}

bool checkpoint_read_tensor(const char *path, const CheckpointInfo *info, const CheckpointTensor *t, void *dst,
                            Diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    ck_error(d, path, "cannot open checkpoint: %s", strerror(errno));
    return false;
  }
  size_t nb = (size_t)(t->end - t->begin);
  bool ok = fseeko(f, (off_t)(8 + info->header_bytes + t->begin), SEEK_SET) == 0 && fread(dst, 1, nb, f) == nb;
  if (!ok)
    ck_error(d, path, "cannot read tensor \"%.200s\": %s", t->name,
             ferror(f) ? strerror(errno) : "short read (truncated file?)");
  fclose(f);
  if (ok && !host_is_le() && !t->other_dtype) swap32(dst, nb);
  return ok;
}

/* ---- load -------------------------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp((*(const CheckpointTensor *const *)a)->name,
                (*(const CheckpointTensor *const *)b)->name);
}

/* The tensor named `name` in `by_name` (sorted by name), or NULL. */
static const CheckpointTensor *find_tensor(const CheckpointTensor **by_name, int n,
                                           const char *name) {
  CheckpointTensor key = {.name = (char *)name};
  const CheckpointTensor *kp = &key;
  const CheckpointTensor **hit =
      bsearch(&kp, by_name, (size_t)n, sizeof(*by_name), cmp_tensor_name);
  return hit ? *hit : NULL;
}

typedef struct {
  ValueId v;
  const CheckpointTensor *t;
} LoadItem;

int checkpoint_load(const char *path, Exec *e, const CheckpointLoadOptions *opt,
                    CheckpointMeta *meta_out, Diag *d) {
  BC_ASSERT(path && e && opt);
  const Graph *g = e->graph;
  if (meta_out) checkpoint_meta_init(meta_out);
  CheckpointInfo info;
  FILE *f = NULL;
  int result = -1;
  const CheckpointTensor **by_name = NULL;
  bool *used = NULL;
  unsigned char *host = NULL;
  VEC(LoadItem) plan = {0};
  if (!open_checkpoint(path, &info, &f, d)) goto done;
  const CheckpointMeta *m = &info.meta;
  BC_ASSERT(opt->mode == CHECKPOINT_LOAD_ALL || opt->mode == CHECKPOINT_LOAD_PARAMS_PRESENT);
  /* model_bad: the tensors do not fit the graph (names, shapes, dtypes). */
  bool all = opt->mode == CHECKPOINT_LOAD_ALL, bad = false, model_bad = false;

  if (opt->expect_vocab_hash && *opt->expect_vocab_hash) {
    if (!m->vocab_hash || !*m->vocab_hash) {
      ck_error(d, path,
               "vocabulary mismatch: the checkpoint records no vocabulary hash, the current "
               "vocabulary's is \"%s\"",
               opt->expect_vocab_hash);
      bad = true;
    } else if (strcmp(m->vocab_hash, opt->expect_vocab_hash) != 0) {
      ck_error(d, path,
               "vocabulary mismatch: the checkpoint was trained with vocabulary hash \"%.80s\", "
               "the current vocabulary's is \"%s\"",
               m->vocab_hash, opt->expect_vocab_hash);
      bad = true;
    }
  }

  int nt = info.tensors.n;
  by_name = bc_malloc((size_t)(nt ? nt : 1) * sizeof(*by_name));
  for (int i = 0; i < nt; i++) by_name[i] = &info.tensors.data[i];
  qsort(by_name, (size_t)nt, sizeof(*by_name), cmp_tensor_name); /* names unique (parser) */
  used = bc_calloc((size_t)(nt ? nt : 1), sizeof(bool));

  int n_ids;
  ValueId *ids = saved_values(g, &n_ids);
  if (!all) n_ids = g->params.n; /* params come first */
  size_t max_bytes = 4;
  for (int i = 0; i < n_ids; i++) {
    const Value *v = &g->values.data[ids[i]];
    const CheckpointTensor *t = find_tensor(by_name, nt, v->name);
    if (!t) {
      if (all) {
        char sb[192];
        ck_error(d, path, "checkpoint has no tensor \"%s\" (%s %s %s of graph '%s')", v->name,
                 v->kind == VALUE_PARAM ? "parameter" : "state", dtype_name(v->dtype),
                 shape_str(&v->shape, sb), g->name ? g->name : "?");
        bad = model_bad = true;
      }
      continue;
    }
    used[t - info.tensors.data] = true;
    if (t->other_dtype) {
      ck_error(d, path, "tensor \"%s\": unsupported dtype \"%s\" (bertc stores F32 and I32)", v->name,
               t->other_dtype);
      bad = model_bad = true;
      continue;
    }
    if (t->dtype != v->dtype || !shape_eq(&t->shape, &v->shape)) {
      char sf[192], sg[192];
      ck_error(d, path,
               "tensor \"%s\" is %s %s in the checkpoint but %s %s in graph '%s'", v->name,
               st_dtype_name(t->dtype), shape_str(&t->shape, sf), st_dtype_name(v->dtype),
               shape_str(&v->shape, sg), g->name ? g->name : "?");
      bad = model_bad = true;
      continue;
    }
    vec_push(&plan, ((LoadItem){ids[i], t}));
    size_t nb = (size_t)(t->end - t->begin);
    if (nb > max_bytes) max_bytes = nb;
  }
  free(ids);
  if (all) {
    for (int i = 0; i < nt; i++)
      if (!used[i]) {
        ck_error(d, path,
                 "checkpoint tensor \"%s\" is not a parameter or state of graph '%s' "
                 "(a different model?)",
                 info.tensors.data[i].name, g->name ? g->name : "?");
        bad = model_bad = true;
      }
  } else if (!bad && plan.n == 0) {
    ck_error(d, path,
             "none of the %d parameters of graph '%s' is in the checkpoint (%d tensors, graph "
             "'%s')",
             g->params.n, g->name ? g->name : "?", nt, m->graph_name ? m->graph_name : "?");
    bad = true;
  }
  if (model_bad) note_hparams(path, m->hparams_json, g, d);
  if (bad) goto done;

  /* Everything checked: now the data. The header fixed the file size, so a
   * short read here is an I/O error or a file changed under us. */
  host = bc_malloc(max_bytes);
  uint64_t data_start = 8 + info.header_bytes;
  for (int i = 0; i < plan.n; i++) {
    const CheckpointTensor *t = plan.data[i].t;
    size_t nb = (size_t)(t->end - t->begin);
    if (fseeko(f, (off_t)(data_start + t->begin), SEEK_SET) != 0 ||
        fread(host, 1, nb, f) != nb) {
      ck_error(d, path, "cannot read tensor \"%s\": %s", t->name,
               ferror(f) ? strerror(errno) : "file shorter than when its header was read");
      goto done;
    }
    if (!host_is_le()) swap32(host, nb);
    if (!exec_write(e, plan.data[i].v, host, t->dtype, d)) {
      ck_error(d, path, "cannot load tensor \"%s\" into the backend", t->name);
      goto done;
    }
  }
  result = plan.n;
done:
  if (meta_out) {
    *meta_out = info.meta;
    memset(&info.meta, 0, sizeof(info.meta));
  }
  if (f) fclose(f);
  checkpoint_info_free(&info);
  vec_free(&plan);
  free(host);
  free(used);
  free(by_name);
  return result;
}
