/* test_hf.c — Hugging Face BERT import and export (tasks/hf_bert.h) on the
 * tiny BERT of tests/data/hf_tiny (made by make_model.py with transformers):
 * the imported model's last hidden states and pooled output against
 * transformers' on a padded batch, on the interpreter and the cpu backend;
 * import then export giving every tensor back bit for bit; and the
 * refusals (another model_type, relative positions, a missing or misshapen
 * tensor, a pickled checkpoint), each naming its file and key. */
#include "graph/json.h"
#include "graph/strbuf.h"
#include "runtime/checkpoint.h"
#include "tasks/hf_bert.h"
#include "tasks/train_util.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE BC_SOURCE_DIR "/tests/data/hf_tiny"

static char tmp_dir[512];

static const char *tmp_path(const char *name) {
  static char buf[4][1024];
  static int k;
  if (!tmp_dir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/bc_hf_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) abort();
  }
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir, name);
  return buf[k];
}

static char *slurp(const char *path, size_t *n) {
  Diag d;
  diag_init(&d);
  char *s = bc_read_file(path, n, &d);
  diag_free(&d);
  return s;
}

/* Runs `bertc import FIXTURE-like DIR` into OUT; false on failure, with the
 * diagnostics' text in msg. */
static bool import_into(const char *dir, const char *out, char *msg, size_t n_msg) {
  Diag d;
  diag_init(&d);
  FILE *null = fopen("/dev/null", "w"), *saved = stdout;
  stdout = null; /* hf_import's report */
  bool ok = hf_import(dir, out, BC_SOURCE_DIR "/models/hf_bert.yaml", &d);
  stdout = saved;
  fclose(null);
  msg[0] = '\0';
  FILE *m = fmemopen(msg, n_msg, "w");
  diag_print(&d, m);
  fclose(m);
  diag_free(&d);
  return ok;
}

/* The references of make_model.py: inputs and transformers' outputs. */
typedef struct {
  int b, t, h;
  int32_t *ids, *types, *lens;
  double *hidden, *pooled;
} Refs;

static void flatten(const JsonValue *v, double *out, int *n) {
  if (v->kind == JSON_ARRAY)
    for (int i = 0; i < v->n; i++) flatten(&v->items[i], out, n);
  else out[(*n)++] = v->num;
}

static bool refs_load(Refs *r) {
  size_t n;
  char *text = slurp(FIXTURE "/model_refs.json", &n);
  if (!text) return false;
  Arena a;
  arena_init(&a);
  JsonValue root;
  JsonError err;
  bool ok = json_parse(text, n, NULL, &a, &root, &err);
  if (ok) {
    const JsonValue *ids = json_get(&root, "input_ids"), *hs = json_get(&root, "last_hidden_state");
    r->b = ids->n, r->t = ids->items[0].n, r->h = hs->items[0].items[0].n;
    int k = r->b * r->t;
    double *tmp = malloc(sizeof(double) * (size_t)k);
    r->ids = malloc(sizeof(int32_t) * (size_t)k), r->types = malloc(sizeof(int32_t) * (size_t)k);
    r->lens = malloc(sizeof(int32_t) * (size_t)r->b);
    int m = 0;
    flatten(ids, tmp, &m);
    for (int i = 0; i < k; i++) r->ids[i] = (int32_t)tmp[i];
    m = 0;
    flatten(json_get(&root, "token_type_ids"), tmp, &m);
    for (int i = 0; i < k; i++) r->types[i] = (int32_t)tmp[i];
    m = 0;
    flatten(json_get(&root, "lengths"), tmp, &m);
    for (int i = 0; i < r->b; i++) r->lens[i] = (int32_t)tmp[i];
    free(tmp);
    r->hidden = malloc(sizeof(double) * (size_t)(k * r->h));
    r->pooled = malloc(sizeof(double) * (size_t)(r->b * r->h));
    m = 0;
    flatten(hs, r->hidden, &m);
    m = 0;
    flatten(json_get(&root, "pooler_output"), r->pooled, &m);
  }
  arena_free(&a);
  free(text);
  return ok;
}

static void refs_free(Refs *r) {
  free(r->ids), free(r->types), free(r->lens), free(r->hidden), free(r->pooled);
}

/* The imported checkpoint's `encode` graph on `device`, run on the refs'
 * batch: the largest absolute differences from transformers. */
static bool run_encode(const char *ckpt, const char *device, const Refs *r, double *err_hidden, double *err_pooled) {
  Diag d;
  diag_init(&d);
  TrainOrigin o = {0};
  TrainModel m = {0};
  TrainSets sets;
  train_sets_init(&sets, NULL, 0);
  Graph g;
  graph_init(&g, "encode");
  Exec *e = NULL;
  bool ok = false;
  float *hs = malloc(sizeof(float) * (size_t)(r->b * r->t * r->h)), *pooled = malloc(sizeof(float) * (size_t)(r->b * r->h));
  train_sets_add(&sets, "batch", r->b);
  train_sets_add(&sets, "seq", r->t);
  train_sets_add(&sets, "dropout", 0); /* inference, as transformers' eval mode */
  if (!train_origin_read(&o, ckpt, &d) ||
      !train_origin_model(&o, NULL, &m, &sets, (const char *[]){"batch", "seq", "dropout", NULL}, &d) ||
      !train_compile(&g, &m, "encode", &sets, NULL, NULL, &d))
    goto done;
  if (!(e = exec_create_spec(device, &g, &d))) {
    ok = strcmp(device, "interp") != 0; /* a build without the cpu JIT skips it */
    *err_hidden = *err_pooled = -1;
    goto done;
  }
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_ALL, NULL};
  RunContext rc = {0};
  if (checkpoint_load(ckpt, e, &lo, NULL, &d) < 0 || !exec_write(e, graph_find(&g, "tokens"), r->ids, DTYPE_I32, &d) ||
      !exec_write(e, graph_find(&g, "segments"), r->types, DTYPE_I32, &d) ||
      !exec_write(e, graph_find(&g, "valid_len"), r->lens, DTYPE_I32, &d) || !exec_run(e, &rc, &d) ||
      !exec_read(e, train_output(&g, "hidden_states"), hs, DTYPE_F32, &d) ||
      !exec_read(e, train_output(&g, "pooled"), pooled, DTYPE_F32, &d))
    goto done;
  *err_hidden = *err_pooled = 0;
  for (int i = 0; i < r->b * r->t * r->h; i++)
    if (fabs(hs[i] - r->hidden[i]) > *err_hidden) *err_hidden = fabs(hs[i] - r->hidden[i]);
  for (int i = 0; i < r->b * r->h; i++)
    if (fabs(pooled[i] - r->pooled[i]) > *err_pooled) *err_pooled = fabs(pooled[i] - r->pooled[i]);
  ok = true;
done:
  if (!ok) diag_print(&d, stderr);
  if (e) exec_destroy(e);
  graph_free(&g);
  train_model_free(&m);
  train_sets_free(&sets);
  train_origin_free(&o);
  diag_free(&d);
  free(hs), free(pooled);
  return ok;
}

TEST(import_matches_transformers) {
  char msg[4096];
  const char *out = tmp_path("imported");
  CHECK_MSG(import_into(FIXTURE, out, msg, sizeof msg), "import failed: %s", msg);
  Refs r = {0};
  CHECK(refs_load(&r));
  char ckpt[1100];
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
  /* transformers computes in f32; the interpreter in f64, the cpu backend
   * in f32 with another summation order. Outputs are O(1) after the
   * LayerNorms; measured 9e-7 (interp) and 1.4e-6 (cpu): a few f32
   * roundings through 2 layers. A wrong weight, transpose or epsilon moves
   * them by 1e-2 to 1. */
  const struct {
    const char *device;
    double tol;
  } runs[] = {{"interp", 5e-6}, {"cpu", 1e-5}};
  for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
    double eh = -1, ep = -1;
    CHECK_MSG(run_encode(ckpt, runs[i].device, &r, &eh, &ep), "%s: encode failed", runs[i].device);
    if (eh < 0) {
      fprintf(stderr, "  %s: no such backend in this build\n", runs[i].device);
      continue;
    }
    fprintf(stderr, "  %s: hidden states within %.2g, pooled output within %.2g of transformers'\n", runs[i].device,
            eh, ep);
    CHECK_MSG(eh < runs[i].tol && ep < runs[i].tol, "%s: %g, %g", runs[i].device, eh, ep);
  }
  refs_free(&r);
}

/* Every tensor of model.safetensors, by name, bytes compared. */
TEST(export_gives_the_tensors_back) {
  char msg[4096];
  const char *out = tmp_path("roundtrip"), *exported = tmp_path("exported");
  CHECK_MSG(import_into(FIXTURE, out, msg, sizeof msg), "import failed: %s", msg);
  char ckpt[1100];
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
  Diag d;
  diag_init(&d);
  FILE *null = fopen("/dev/null", "w"), *saved = stdout;
  stdout = null;
  bool ok = hf_export(ckpt, exported, &d);
  stdout = saved;
  fclose(null);
  diag_print(&d, stderr);
  CHECK(ok);
  char path[1100];
  snprintf(path, sizeof path, "%s/model.safetensors", exported);
  CheckpointInfo a, b;
  CHECK(checkpoint_read_info(FIXTURE "/model.safetensors", &a, &d) && checkpoint_read_info(path, &b, &d));
  CHECK_EQ_INT(a.tensors.n, b.tensors.n);
  int same = 0;
  for (int i = 0; i < a.tensors.n; i++) {
    const CheckpointTensor *ta = &a.tensors.data[i], *tb = NULL;
    for (int k = 0; k < b.tensors.n; k++)
      if (strcmp(b.tensors.data[k].name, ta->name) == 0) tb = &b.tensors.data[k];
    CHECK_MSG(tb != NULL, "exported file lacks %s", ta->name);
    if (!tb) continue;
    CHECK_MSG(shape_eq(&ta->shape, &tb->shape), "%s: shape differs", ta->name);
    size_t n = (size_t)(ta->end - ta->begin);
    char *x = malloc(n ? n : 1), *y = malloc(n ? n : 1);
    CHECK(checkpoint_read_tensor(FIXTURE "/model.safetensors", &a, ta, x, &d) &&
          checkpoint_read_tensor(path, &b, tb, y, &d));
    bool eq = tb->end - tb->begin == n && memcmp(x, y, n) == 0;
    CHECK_MSG(eq, "%s: data differ", ta->name);
    same += eq;
    free(x), free(y);
  }
  fprintf(stderr, "  %d of %d tensors bit-identical after import and export\n", same, a.tensors.n);
  /* the vocabulary comes back as it was */
  size_t n1, n2;
  snprintf(path, sizeof path, "%s/vocab.txt", exported);
  char *v1 = slurp(FIXTURE "/vocab.txt", &n1), *v2 = slurp(path, &n2);
  CHECK(v1 && v2 && n1 == n2 && memcmp(v1, v2, n1) == 0);
  free(v1), free(v2);
  checkpoint_info_free(&a);
  checkpoint_info_free(&b);
  diag_free(&d);
}

/* A copy of the fixture in a temporary folder, with config.json's text
 * `from` replaced by `to` (NULL: unchanged). */
static const char *fixture_copy(const char *name, const char *from, const char *to) {
  const char *dir = tmp_path(name);
  static char keep[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(keep[k], sizeof keep[k], "%s", dir);
  mkdir(keep[k], 0755);
  static const char *const files[] = {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char src[1100], dst[1100];
    snprintf(src, sizeof src, "%s/%s", FIXTURE, files[i]);
    snprintf(dst, sizeof dst, "%s/%s", keep[k], files[i]);
    size_t n;
    char *s = slurp(src, &n);
    if (!s) abort();
    FILE *f = fopen(dst, "wb");
    if (i == 0 && from) {
      char *at = strstr(s, from);
      if (!at) abort(); /* the fixture changed: update the case */
      fwrite(s, 1, (size_t)(at - s), f);
      fputs(to, f);
      fputs(at + strlen(from), f);
    } else {
      fwrite(s, 1, n, f);
    }
    fclose(f);
    free(s);
  }
  return keep[k];
}

TEST(import_refusals) {
  char msg[4096];
  struct {
    const char *from, *to, *want;
  } cases[] = {
      {"\"model_type\": \"bert\"", "\"model_type\": \"roberta\"",
       "config.json:"},
      {"\"model_type\": \"bert\"", "\"model_type\": \"roberta\"",
       "\"model_type\" is \"roberta\": bertc imports BERT models (model_type \"bert\") only"},
      {"\"model_type\": \"bert\"", "\"model_type\": \"bert\", \"position_embedding_type\": \"relative_key\"",
       "\"position_embedding_type\" is \"relative_key\""},
      {"\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\"", "\"hidden_act\" is \"relu\""},
      {"\"intermediate_size\": 37", "\"intermediate_size\": 36",
       "tensor \"encoder.layer.0.intermediate.dense.weight\" is [37, 32], but config.json makes it [36, 32]"},
      {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3",
       "no tensor \"encoder.layer.2.attention.self.query.weight\""},
      {"\"hidden_size\": 32", "\"hidden_size\": \"32\"", "\"hidden_size\" must be a positive integer"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char name[32];
    snprintf(name, sizeof name, "bad%zu", i);
    const char *dir = fixture_copy(name, cases[i].from, cases[i].to);
    bool ok = import_into(dir, tmp_path("bad_out"), msg, sizeof msg);
    CHECK_MSG(!ok && strstr(msg, cases[i].want), "case %zu: want \"%s\" in: %s", i, cases[i].want, msg);
  }
  /* a pickled checkpoint instead of safetensors */
  const char *dir = fixture_copy("pickle", NULL, NULL);
  char p[1100], q[1100];
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  snprintf(q, sizeof q, "%s/pytorch_model.bin", dir);
  CHECK(rename(p, q) == 0);
  CHECK(!import_into(dir, tmp_path("bad_out"), msg, sizeof msg) && strstr(msg, "pytorch_model.bin") &&
        strstr(msg, "convert it to model.safetensors"));
}

/* f to IEEE half (round to nearest even; the fixture's weights are normal
 * and small) or to bfloat16 (the high half, rounded to nearest even). */
static uint16_t to_half(float f, bool bf16) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if (bf16) return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
  uint32_t sign = (u >> 16) & 0x8000, e = (u >> 23) & 0xff, m = u & 0x7fffff;
  int he = (int)e - 127 + 15;
  if (he <= 0) /* a subnormal half (truncated): m 2^-24 */
    return (uint16_t)(sign | (he < -10 ? 0 : (m | 0x800000) >> (14 - he)));
  uint32_t hm = m >> 13, rest = m & 0x1fff;
  uint32_t h = sign | (uint32_t)he << 10 | hm;
  if (rest > 0x1000 || (rest == 0x1000 && (hm & 1))) h++;
  return (uint16_t)h;
}

/* The fixture with model.safetensors rewritten as F16 or BF16 (a
 * safetensors file written here by hand: header, then 2-byte elements). */
static const char *half_fixture(bool bf16) {
  const char *dir = fixture_copy(bf16 ? "bf16" : "f16", NULL, NULL);
  char src[1100], dst[1100];
  snprintf(src, sizeof src, "%s/model.safetensors", FIXTURE);
  snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
  Diag d;
  diag_init(&d);
  CheckpointInfo info;
  if (!checkpoint_read_info(src, &info, &d)) abort();
  StrBuf h = {0};
  strbuf_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
  uint64_t at = 0;
  for (int i = 0; i < info.tensors.n; i++) {
    const CheckpointTensor *t = &info.tensors.data[i];
    uint64_t nb = (uint64_t)shape_numel(&t->shape) * 2;
    strbuf_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, bf16 ? "BF16" : "F16");
    for (int k = 0; k < t->shape.rank; k++) strbuf_printf(&h, "%s%lld", k ? "," : "", (long long)t->shape.dim[k]);
    strbuf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)(at + nb));
    at += nb;
  }
  strbuf_puts(&h, "}");
  while (h.n % 8) strbuf_puts(&h, " ");
  FILE *f = fopen(dst, "wb");
  uint64_t n = h.n;
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
  fwrite(len, 1, 8, f);
  fwrite(h.data, 1, h.n, f);
  for (int i = 0; i < info.tensors.n; i++) {
    const CheckpointTensor *t = &info.tensors.data[i];
    int64_t m = shape_numel(&t->shape);
    float *x = malloc(sizeof(float) * (size_t)(m ? m : 1));
    if (!checkpoint_read_tensor(src, &info, t, x, &d)) abort();
    for (int64_t k = 0; k < m; k++) {
      uint16_t v = to_half(x[k], bf16);
      unsigned char b[2] = {(unsigned char)(v & 0xff), (unsigned char)(v >> 8)};
      fwrite(b, 1, 2, f);
    }
    free(x);
  }
  fclose(f);
  free(h.data);
  checkpoint_info_free(&info);
  diag_free(&d);
  return dir;
}

/* F16 and BF16 weights import, converted to f32: each tensor as the F32
 * import's within the format's rounding (half 2^-11 relative, 2^-24
 * absolute among its subnormals; bfloat16 2^-8 relative). */
TEST(half_precision_weights_import) {
  char msg[4096];
  const char *ref = tmp_path("ref32");
  CHECK_MSG(import_into(FIXTURE, ref, msg, sizeof msg), "import failed: %s", msg);
  char ref_ckpt[1100];
  snprintf(ref_ckpt, sizeof ref_ckpt, "%s/checkpoint.safetensors", ref);
  for (int bf16 = 0; bf16 < 2; bf16++) {
    const char *out = tmp_path(bf16 ? "imp_bf16" : "imp_f16");
    CHECK_MSG(import_into(half_fixture(bf16), out, msg, sizeof msg), "%s import failed: %s", bf16 ? "BF16" : "F16",
              msg);
    char ckpt[1100];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    Diag d;
    diag_init(&d);
    CheckpointInfo a, b;
    CHECK(checkpoint_read_info(ref_ckpt, &a, &d) && checkpoint_read_info(ckpt, &b, &d));
    double worst = 0, rel = bf16 ? 1.0 / 256 : 1.0 / 2048;
    int n_checked = 0;
    for (int i = 0; i < a.tensors.n && i < b.tensors.n; i++) {
      const CheckpointTensor *ta = &a.tensors.data[i], *tb = &b.tensors.data[i];
      CHECK(strcmp(ta->name, tb->name) == 0 && shape_eq(&ta->shape, &tb->shape));
      int64_t m = shape_numel(&ta->shape);
      float *x = malloc(sizeof(float) * (size_t)(m ? m : 1)), *y = malloc(sizeof(float) * (size_t)(m ? m : 1));
      CHECK(checkpoint_read_tensor(ref_ckpt, &a, ta, x, &d) && checkpoint_read_tensor(ckpt, &b, tb, y, &d));
      for (int64_t k = 0; k < m; k++) {
        /* relative, but absolute 2^-24 below half's normal range */
        double e = fabs((double)x[k] - y[k]) / (fabs(x[k]) > 0x1p-14 ? fabs(x[k]) : 0x1p-14 * 2048);
        if (e > worst) worst = e;
      }
      free(x), free(y);
      n_checked++;
    }
    fprintf(stderr, "  %s: %d tensors, worst relative difference %.2g from the F32 import\n", bf16 ? "BF16" : "F16",
            n_checked, worst);
    CHECK_MSG(n_checked == 39 && worst <= rel, "%s: %g", bf16 ? "BF16" : "F16", worst);
    checkpoint_info_free(&a);
    checkpoint_info_free(&b);
    diag_free(&d);
  }
}

TEST_MAIN();
